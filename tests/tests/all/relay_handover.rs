//! The outbox relay across a change of leader, on the real stack: a leader that stopped after
//! the broker took a round and before it recorded the round as published (killed, paused past
//! its session) leaves rows that its successor must not send again, and a leader that wakes
//! after its successor started has what it sends refused.
//!
//! The relay runs alone over an outbox of this test's own (a schema and a topic prefix no
//! other test uses); the stalled leader is played by a producer with the relay's id.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use mailroom_platform::kafka::tail::{outbox_header, OUTBOX_HEADER};
use mailroom_platform::kafka::{KafkaSettings, Topic, Topics};
use mailroom_platform::outbox::{enqueue, relay_id, EventActor, Relay};
use mailroom_platform::types::OrgId;
use mailroom_proto::events::v1::envelope::Payload;
use mailroom_proto::events::v1::{Envelope, OrganizationUpdated};
use mailroom_tests::{create_database, StackEnv};
use prost::Message as _;
use rand::Rng as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// An outbox of its own (a database schema), the broker's settings under a prefix of its own.
struct Outbox {
    pool: PgPool,
    schema: String,
    kafka: KafkaSettings,
    topic: String,
}

impl Outbox {
    async fn new() -> Self {
        let env = StackEnv::load();
        let url = SecretString::from(create_database(&env.database_url).await);
        let mut rng = rand::thread_rng();
        let schema: String = (0..12)
            .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
            .collect();
        let schema = format!("handover_{schema}");
        let pool = mailroom_platform::db::connect(&url, &schema, 4)
            .await
            .expect("the test's schema");
        mailroom_platform::db::migrate(&pool, &schema, &mailroom_access::MIGRATIONS)
            .await
            .expect("the outbox's tables");
        let kafka = KafkaSettings {
            brokers: env.kafka_brokers.clone(),
            idempotence: true,
            transactions: true,
            partitions: 2,
            replication: 1,
            topics: Topics::new(format!("test.handover.{}", uuid::Uuid::new_v4().simple())),
            properties: Default::default(),
        };
        kafka
            .ensure_topics(&[Topic::IdentityEvents])
            .await
            .expect("the topic");
        let topic = kafka.topics.name(Topic::IdentityEvents);
        Self {
            pool,
            schema,
            kafka,
            topic,
        }
    }

    /// Writes `count` events, as a service does; their (seq, event id), in order.
    async fn write(&self, count: usize) -> Vec<(i64, String)> {
        let mut tx = self.pool.begin().await.expect("begin");
        let mut ids = Vec::new();
        for i in 0..count {
            let id = enqueue(
                &mut tx,
                Topic::IdentityEvents,
                OrgId::new(),
                &format!("org-{}", i % 3),
                &EventActor::System,
                Payload::OrganizationUpdated(OrganizationUpdated {
                    display_name: format!("event {i}"),
                    ..Default::default()
                }),
            )
            .await
            .expect("enqueue");
            ids.push(id.to_string());
        }
        tx.commit().await.expect("commit");
        let seqs: Vec<i64> = sqlx::query_scalar(
            "SELECT seq FROM outbox WHERE event_id = ANY($1::uuid[]) ORDER BY seq",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .expect("seqs");
        seqs.into_iter().zip(ids).collect()
    }

    fn relay_id(&self) -> String {
        relay_id(&self.pool, self.kafka.topics.prefix(), &self.schema)
    }

    /// Sends rows as the relay would (same id, same header) in one transaction of
    /// `producer`; commits it when `commit`. What the broker answered.
    async fn send_as_relay(
        &self,
        producer: &mailroom_platform::kafka::RelayProducer,
        rows: &[(i64, String)],
        commit: bool,
    ) -> Result<(), String> {
        let stored: Vec<(i64, String, Vec<u8>, uuid::Uuid)> = sqlx::query_as(
            "SELECT seq, record_key, payload, event_id FROM outbox WHERE seq = ANY($1) ORDER BY seq",
        )
        .bind(rows.iter().map(|(seq, _)| *seq).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await
        .expect("rows");
        producer.begin().map_err(|e| e.to_string())?;
        let id = self.relay_id();
        let mut deliveries = Vec::new();
        for (seq, key, payload, event_id) in &stored {
            let header = outbox_header(&id, *seq, &event_id.to_string());
            let headers = OwnedHeaders::new().insert(Header {
                key: OUTBOX_HEADER,
                value: Some(header.as_bytes()),
            });
            deliveries.push(
                producer
                    .send(&self.topic, key, payload, headers)
                    .map_err(|e| e.to_string())?,
            );
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(err.to_string()),
                Err(_) => return Err("the producer went away".into()),
            }
        }
        if commit {
            producer
                .commit(Duration::from_secs(15))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A record whose header names row `seq` of the relay with another event id (what a
    /// database restored to an earlier point, reusing row numbers, or someone who can write to
    /// the topic would leave there), committed.
    async fn send_other_event_as_row(
        &self,
        producer: &mailroom_platform::kafka::RelayProducer,
        seq: i64,
    ) {
        let header = outbox_header(&self.relay_id(), seq, &uuid::Uuid::now_v7().to_string());
        let headers = OwnedHeaders::new().insert(Header {
            key: OUTBOX_HEADER,
            value: Some(header.as_bytes()),
        });
        let payload = Envelope {
            id: "another event".into(),
            ..Default::default()
        }
        .encode_to_vec();
        producer.begin().expect("begin");
        let delivery = producer
            .send(&self.topic, "org-0", &payload, headers)
            .expect("send");
        delivery.await.expect("reported").expect("delivered");
        producer
            .commit(Duration::from_secs(15))
            .await
            .expect("commit");
    }

    async fn unpublished(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// How many times each event id is in the topic (read committed, as consumers do).
    async fn copies(&self) -> BTreeMap<String, usize> {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.brokers)
            .set(
                "group.id",
                format!("test-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .create()
            .expect("a consumer");
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let mut assignment = TopicPartitionList::new();
            for partition in 0..2 {
                assignment
                    .add_partition_offset(&topic, partition, Offset::Beginning)
                    .expect("partition");
            }
            consumer.assign(&assignment).expect("assign");
            let mut copies = BTreeMap::new();
            let mut ended = HashSet::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while ended.len() < 2 && Instant::now() < deadline {
                match consumer.poll(Duration::from_millis(500)) {
                    Some(Ok(message)) => {
                        let envelope = Envelope::decode(message.payload().unwrap_or_default())
                            .expect("an envelope");
                        *copies.entry(envelope.id).or_insert(0) += 1;
                    }
                    Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                        ended.insert(partition);
                    }
                    Some(Err(err)) => panic!("reading the topic: {err}"),
                    None => {}
                }
            }
            assert_eq!(ended.len(), 2, "the whole topic was read");
            copies
        })
        .await
        .expect("the reader")
    }
}

/// Before the read-back, a new leader sent every unpublished row again, the six the stalled
/// leader had published among them: each of those was in the topic twice. A record that
/// names a row by its number alone (another event's) does not count: that row is sent.
#[tokio::test]
async fn a_new_leader_does_not_send_again_what_the_last_one_published_without_recording_it() {
    let outbox = Outbox::new().await;
    let rows = outbox.write(10).await;

    // The stalled leader: the broker took six rows, it recorded none of them.
    let stalled = outbox
        .kafka
        .relay_producer(Some(&outbox.relay_id()))
        .expect("a producer");
    assert!(stalled.transactional());
    stalled
        .init_transactions(Duration::from_secs(15))
        .await
        .expect("init");
    // Before it, a record that names the seventh row's number with another event.
    outbox.send_other_event_as_row(&stalled, rows[6].0).await;
    outbox
        .send_as_relay(&stalled, &rows[..6], true)
        .await
        .expect("the stalled leader's round");
    assert_eq!(outbox.unpublished().await, 10);

    // Its successor is elected and publishes.
    let shutdown = CancellationToken::new();
    let relay = Relay::new(
        outbox.pool.clone(),
        &outbox.schema,
        outbox.kafka.clone(),
        vec![Topic::IdentityEvents],
    );
    let running = tokio::spawn(relay.run(shutdown.clone()));
    let started = Instant::now();
    while outbox.unpublished().await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the relay published the rest within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The stalled leader wakes and sends a row again: fenced off, refused.
    let late = outbox.send_as_relay(&stalled, &rows[6..7], true).await;
    shutdown.cancel();
    let _ = running.await;
    tokio::task::spawn_blocking(move || drop(stalled))
        .await
        .expect("drop");

    let copies = outbox.copies().await;
    assert_eq!(copies.get("another event"), Some(&1));
    let doubled: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<_> = rows
        .iter()
        .filter(|(_, id)| !copies.contains_key(id))
        .collect();
    assert!(
        doubled.is_empty() && missing.is_empty(),
        "each event once: doubled {doubled:?}, missing {missing:?}"
    );
    // (librdkafka reports the fencing, or purges what was queued once it learns of it.)
    let refusal = late.expect_err("the woken leader's send is refused: it was fenced off");
    eprintln!("the woken leader was refused: {refusal}");
}
