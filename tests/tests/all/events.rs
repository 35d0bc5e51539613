//! Events: the outbox survives a broker outage, and consumers apply each event once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait_free::Applied;
use mailroom_platform::consumer::{self, EventHandler};
use mailroom_platform::kafka::{KafkaSettings, Topic, Topics};
use mailroom_proto::events::v1::envelope::Payload;
use mailroom_proto::events::v1::Envelope;
use mailroom_tests::identity_pb as pb;
use mailroom_tests::{authed, spawn_app, spawn_app_with, AppOptions, Broker};
use prost::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

async fn unpublished(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
        .expect("count outbox")
}

#[tokio::test]
async fn an_event_made_while_the_broker_is_down_is_delayed_but_never_lost() {
    let mut broker = Broker::start();
    let app = spawn_app_with(AppOptions {
        kafka_brokers: Some(broker.brokers()),
        ..Default::default()
    })
    .await;
    let org = app.create_org(0).await;
    let ivy = app.create_user(&org, "ivy", "").await;
    app.wait_for_event(Topic::IdentityEvents, Duration::from_secs(30), |e| {
        e.aggregate_id == ivy.id && matches!(e.payload, Some(Payload::UserCreated(_)))
    })
    .await
    .expect("events flow while the broker is up");

    broker.stop();
    app.identity
        .clone()
        .dismiss_user(authed(
            &org.admin_token,
            pb::DismissUserRequest { id: ivy.id.clone() },
        ))
        .await
        .expect("the change itself succeeds with the broker down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        unpublished(&app.pool).await >= 1,
        "the event waits in the outbox"
    );

    broker.restart();
    let event = app
        .wait_for_event(Topic::IdentityEvents, Duration::from_secs(90), |e| {
            e.aggregate_id == ivy.id && matches!(e.payload, Some(Payload::UserDismissed(_)))
        })
        .await
        .expect("UserDismissed arrives once the broker is back");
    let Some(Payload::UserDismissed(d)) = event.payload else {
        unreachable!()
    };
    assert_eq!(d.user.expect("snapshot").id, ivy.id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while unpublished(&app.pool).await > 0 {
        assert!(
            Instant::now() < deadline,
            "outbox drained after the broker returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_identity_change_is_published_with_its_type_and_trace_headers() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let dept = app.create_department(&org, "Ops", "", "").await;
    let event = app
        .wait_for_event(Topic::IdentityEvents, Duration::from_secs(30), |e| {
            e.aggregate_id == dept.id
        })
        .await
        .expect("DepartmentCreated published");
    assert_eq!(event.r#type, "mailroom.events.v1.DepartmentCreated");
    assert_eq!(event.org_id, org.id);
    assert!(uuid::Uuid::parse_str(&event.id).is_ok_and(|id| id.get_version_num() == 7));
    let Some(Payload::DepartmentCreated(created)) = event.payload else {
        panic!("payload")
    };
    assert_eq!(created.department.expect("snapshot").name, "Ops");
}

mod async_trait_free {
    //! A handler that records what it applied, in the consumer's own transaction.
    use super::*;

    pub struct Applied;

    #[async_trait::async_trait]
    impl EventHandler for Applied {
        async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
            sqlx::query("INSERT INTO applied (event_id) VALUES ($1)")
                .bind(&event.id)
                .execute(tx)
                .await?;
            Ok(())
        }
    }
}

#[tokio::test]
async fn a_consumer_applies_each_event_once_and_keeps_what_it_cannot_read() {
    let app = spawn_app().await;
    sqlx::query("CREATE TABLE applied (event_id TEXT NOT NULL)")
        .execute(&app.pool)
        .await
        .expect("table");
    // A topic of this test's own, which it fills itself (with a record no service would write).
    let kafka = KafkaSettings {
        brokers: app.kafka_brokers.clone(),
        idempotence: false,
        transactions: true,
        partitions: 1,
        replication: 1,
        topics: Topics::new(format!("test.consumer.{}", uuid::Uuid::new_v4().simple())),
        properties: Default::default(),
    };
    kafka
        .ensure_topics(&[Topic::IdentityEvents])
        .await
        .expect("topic");
    let topic = kafka.topics.name(Topic::IdentityEvents);
    let producer: FutureProducer = kafka.producer().expect("producer");
    let envelope = Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        r#type: "mailroom.events.v1.DepartmentDeleted".into(),
        org_id: uuid::Uuid::new_v4().to_string(),
        aggregate_id: "d1".into(),
        ..Default::default()
    }
    .encode_to_vec();
    for payload in [&envelope[..], &envelope[..], b"\xff\xfe not protobuf"] {
        producer
            .send(
                FutureRecord::to(&topic).key("d1").payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("produce");
    }

    async fn consume(
        app: &mailroom_tests::TestApp,
        kafka: &KafkaSettings,
        topic: &str,
        group: &str,
    ) {
        let shutdown = CancellationToken::new();
        let consumer = kafka.consumer(group).expect("consumer");
        let task = tokio::spawn(consumer::run(
            "test-consumer".to_owned(),
            app.pool.clone(),
            consumer,
            vec![topic.to_owned()],
            Arc::new(Applied),
            shutdown.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let handled: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
                .fetch_one(&app.pool)
                .await
                .expect("dl");
            if handled >= 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "consumer did not reach the bad record"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shutdown.cancel();
        let _ = task.await;
    }

    consume(&app, &kafka, &topic, "group-a").await;
    // A replay from the start (a new group reads everything again) changes nothing.
    sqlx::query("DELETE FROM dead_letters")
        .execute(&app.pool)
        .await
        .expect("reset");
    consume(&app, &kafka, &topic, "group-b").await;

    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM applied")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(applied, 1, "a duplicate and a replay apply nothing more");
    let kept: (String, Vec<u8>) = sqlx::query_as("SELECT error, payload FROM dead_letters")
        .fetch_one(&app.pool)
        .await
        .expect("dead letter");
    assert!(kept.0.contains("undecodable"), "{}", kept.0);
    assert_eq!(kept.1, b"\xff\xfe not protobuf");
}
