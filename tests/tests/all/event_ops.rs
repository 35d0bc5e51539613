//! The event path's operator surface (issue 21, items 1 and 2) on the real stack: an outbox row
//! the broker refuses for good is parked after its attempts while the events after it are
//! delivered (read back from the topic by a Kafka consumer), listed and retried through the
//! event operations API, which only the operator may call; and dead letters are listed
//! without their payload and marked for replay.

use std::time::{Duration, Instant};

use mailroom_platform::kafka::Topic;
use mailroom_platform::outbox::{enqueue, EventActor};
use mailroom_platform::types::OrgId;
use mailroom_proto::events::v1::envelope::Payload;
use mailroom_proto::events::v1::{Envelope, OrganizationUpdated};
use mailroom_proto::ops::v1 as opb;
use mailroom_tests::{authed, spawn_app, spawn_app_with_access, TestApp, TEST_CLIENT};
use opb::event_ops_service_client::EventOpsServiceClient;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tonic::transport::Channel;
use tonic::Code;

type Ops = EventOpsServiceClient<Channel>;

/// The event operations as the service at `endpoint` hosts them.
async fn ops(endpoint: &str) -> Ops {
    EventOpsServiceClient::connect(endpoint.to_owned())
        .await
        .expect("connect")
}

/// The operator's token for `service`, from identity (`IssueServiceToken`).
async fn operator(app: &TestApp, service: &str) -> String {
    app.service_token_as(TEST_CLIENT, service)
        .await
        .expect("the operator's token")
}

fn refused<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> tonic::Status {
    result.expect_err("refused")
}

/// librdkafka refuses a message over `message.max.bytes` (1 000 000 by default) for good.
const TOO_LARGE: usize = 1_200_000;
/// How many times the relay tries a row refused for good before parking it (the default).
const ATTEMPTS: i32 = 5;

/// Writes an `OrganizationUpdated` for `key` named `name` into identity's outbox, the way a
/// service does ([`enqueue`], in a transaction), and returns its event id.
async fn enqueue_named(app: &TestApp, key: &str, name: String) -> String {
    let mut tx = app.pool.begin().await.expect("begin");
    let id = enqueue(
        &mut tx,
        Topic::IdentityEvents,
        OrgId::new(),
        key,
        &EventActor::System,
        Payload::OrganizationUpdated(OrganizationUpdated {
            display_name: name,
            seat_limit: 0,
            allow_everyone_to_invite: false,
        }),
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit");
    id.to_string()
}

/// Reads `app`'s identity topic from its start until `done` holds for what was read (or
/// `timeout`), and two seconds more, and returns every envelope read, in the topic's order.
async fn read_until(
    app: &TestApp,
    timeout: Duration,
    done: impl Fn(&[Envelope]) -> bool,
) -> Vec<Envelope> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &app.kafka_brokers)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("test consumer");
    let mut deadline = Instant::now() + timeout;
    // Every partition from its start, assigned rather than subscribed: no group to join, so a
    // broker's busy group coordinator (other tests share it) does not hold the reading up.
    let topic = app.topics.name(Topic::IdentityEvents);
    loop {
        let partitions = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(5))
            .ok()
            .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
            .unwrap_or(0);
        if partitions > 0 {
            let mut assignment = TopicPartitionList::new();
            for partition in 0..partitions as i32 {
                assignment
                    .add_partition_offset(&topic, partition, Offset::Beginning)
                    .expect("partition offset");
            }
            consumer.assign(&assignment).expect("assign");
            break;
        }
        assert!(Instant::now() < deadline, "{topic} was never created");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut lingering = false;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if !lingering && done(&seen) {
            // Read on a little, so that a record sent twice shows up twice.
            lingering = true;
            deadline = Instant::now() + Duration::from_secs(2);
        }
        if let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        {
            if let Some(envelope) = message.payload().and_then(|p| Envelope::decode(p).ok()) {
                seen.push(envelope);
            }
        }
    }
    seen
}

fn has(seen: &[Envelope], id: &str) -> bool {
    seen.iter().any(|e| e.id == id)
}

#[derive(Debug, sqlx::FromRow)]
struct OutboxState {
    attempts: i32,
    last_error: Option<String>,
    parked: bool,
    published: bool,
}

async fn state(app: &TestApp, event_id: &str) -> OutboxState {
    sqlx::query_as(
        "SELECT attempts, last_error, parked_at IS NOT NULL AS parked, \
         published_at IS NOT NULL AS published FROM outbox WHERE event_id = $1::uuid",
    )
    .bind(event_id)
    .fetch_one(&app.pool)
    .await
    .expect("outbox row")
}

/// Events enqueued after the refused rows: more than one batch of the relay (256), so that a
/// relay stuck on the refused rows cannot deliver them all by sending its window again.
const AFTER: usize = 300;

/// Before the fix the relay always began at the oldest unpublished row, so the first row the
/// broker refused for good blocked the stream for ever: it sent the same window of 256 rows
/// again and again (each a duplicate), stamped none of them, and never reached the rows after
/// the window (this test timed out waiting for them, the refused row's `attempts` climbing).
#[tokio::test]
async fn a_row_refused_for_good_is_parked_and_the_events_after_it_are_delivered_in_order() {
    let app = spawn_app().await;
    let key = format!("org-{}", uuid::Uuid::new_v4().simple());
    let other = format!("org-{}", uuid::Uuid::new_v4().simple());
    let before = enqueue_named(&app, &key, "before".into()).await;
    // Too large for any broker's default, then one whose topic no Kafka accepts.
    let large = enqueue_named(&app, &key, "x".repeat(TOO_LARGE)).await;
    let misnamed = enqueue_named(&app, &key, "misnamed".into()).await;
    sqlx::query("UPDATE outbox SET topic = 'mailroom.identity events!' WHERE event_id = $1::uuid")
        .bind(&misnamed)
        .execute(&app.pool)
        .await
        .expect("misname the topic");
    let mut after = Vec::new();
    let mut tx = app.pool.begin().await.expect("begin");
    for i in 0..AFTER {
        let aggregate = if i % 2 == 0 { &key } else { &other };
        let id = enqueue(
            &mut tx,
            Topic::IdentityEvents,
            OrgId::new(),
            aggregate,
            &EventActor::System,
            Payload::OrganizationUpdated(OrganizationUpdated {
                display_name: format!("after {i}"),
                ..Default::default()
            }),
        )
        .await
        .expect("enqueue");
        after.push(id.to_string());
    }
    tx.commit().await.expect("commit");

    let started = Instant::now();
    let all_after = |seen: &[Envelope]| after.iter().all(|id| has(seen, id));
    let seen = read_until(&app, Duration::from_secs(60), all_after).await;
    let delivered_in = started.elapsed();
    let missing = after.iter().filter(|id| !has(&seen, id)).count();
    assert_eq!(
        missing,
        0,
        "every event after the refused rows is delivered; {} events read, the large row: {:?}",
        seen.len(),
        state(&app, &large).await,
    );
    let mut expected = vec![before.clone()];
    expected.extend(after.iter().step_by(2).cloned());
    let order: Vec<&str> = seen
        .iter()
        .filter(|e| e.aggregate_id == key)
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(
        order, expected,
        "the key's events that were not parked arrive once each, in order"
    );
    let unpublished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE published_at IS NULL AND parked_at IS NULL",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(unpublished, 0, "the rest of the outbox is published");

    for (id, error) in [(&large, "too large"), (&misnamed, "topic")] {
        let row = state(&app, id).await;
        assert!(row.parked && !row.published, "{id}: {row:?}");
        assert_eq!(row.attempts, ATTEMPTS, "{id}: parked after its attempts");
        let last = row.last_error.unwrap_or_default();
        assert!(
            last.to_lowercase().contains(error),
            "{id}: the error is kept: {last}"
        );
    }
    eprintln!(
        "{AFTER} events after two rows refused for good delivered in {delivered_in:?}, {} records read",
        seen.len()
    );
}

async fn seq_of(app: &TestApp, event_id: &str) -> i64 {
    sqlx::query_scalar("SELECT seq FROM outbox WHERE event_id = $1::uuid")
        .bind(event_id)
        .fetch_one(&app.pool)
        .await
        .expect("seq")
}

/// Waits until the relay has parked the row of `event_id`.
async fn parked(app: &TestApp, event_id: &str) -> OutboxState {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = state(app, event_id).await;
        if row.parked {
            return row;
        }
        assert!(Instant::now() < deadline, "not parked in time: {row:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_operator_lists_parked_events_and_retries_them_once_they_can_pass() {
    let app = spawn_app().await;
    let key = format!("org-{}", uuid::Uuid::new_v4().simple());
    let large = enqueue_named(&app, &key, "x".repeat(TOO_LARGE)).await;
    let misnamed = enqueue_named(&app, &key, "misnamed".into()).await;
    sqlx::query("UPDATE outbox SET topic = 'no such/topic' WHERE event_id = $1::uuid")
        .bind(&misnamed)
        .execute(&app.pool)
        .await
        .expect("misname the topic");
    parked(&app, &large).await;
    parked(&app, &misnamed).await;
    let (large_seq, misnamed_seq) = (seq_of(&app, &large).await, seq_of(&app, &misnamed).await);

    let mut client = ops(&app.endpoint).await;
    let token = operator(&app, "identity").await;

    // Nobody else may look: a person (the organisation's admin), another service, no token.
    let org = app.create_org(0).await;
    let invitations = app
        .service_token_as("invitations", "identity")
        .await
        .expect("invitations' token for identity");
    for other in [&org.admin_token, &invitations] {
        let status = refused(
            client
                .list_parked_events(authed(other, opb::ListParkedEventsRequest::default()))
                .await,
        );
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains("operator"),
            "{}",
            status.message()
        );
        let status = refused(
            client
                .retry_parked_events(authed(
                    other,
                    opb::RetryParkedEventsRequest {
                        all: true,
                        ..Default::default()
                    },
                ))
                .await,
        );
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let status = refused(
        client
            .list_parked_events(opb::ListParkedEventsRequest::default())
            .await,
    );
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        state(&app, &misnamed).await.parked,
        "a refused retry changed nothing"
    );

    // The operator sees both, with the broker's refusal, a page at a time.
    let first = client
        .list_parked_events(authed(
            &token,
            opb::ListParkedEventsRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("list parked")
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let second = client
        .list_parked_events(authed(
            &token,
            opb::ListParkedEventsRequest {
                page_size: 1,
                page_token: first.next_page_token.clone(),
            },
        ))
        .await
        .expect("second page")
        .into_inner();
    let listed: Vec<&opb::ParkedEvent> = first
        .parked_events
        .iter()
        .chain(&second.parked_events)
        .collect();
    assert_eq!(
        listed.iter().map(|p| p.seq).collect::<Vec<_>>(),
        [large_seq, misnamed_seq]
    );
    let big = listed[0];
    assert_eq!(big.event_id, large);
    assert_eq!(big.event_type, "mailroom.events.v1.OrganizationUpdated");
    assert_eq!(big.record_key, key);
    assert_eq!(big.attempts, ATTEMPTS);
    assert!(big.payload_size > TOO_LARGE as i64, "{big:?}");
    assert!(big.last_error.contains("too large"), "{}", big.last_error);
    assert!(big.park_time.is_some() && big.create_time.is_some());
    assert!(
        listed[1].last_error.contains("invalid topic name"),
        "{:?}",
        listed[1]
    );

    // Mistakes are explained.
    for (request, mentions) in [
        (opb::RetryParkedEventsRequest::default(), "seqs"),
        (
            opb::RetryParkedEventsRequest {
                seqs: vec![misnamed_seq],
                all: true,
            },
            "not both",
        ),
    ] {
        let status = refused(client.retry_parked_events(authed(&token, request)).await);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(mentions), "{}", status.message());
    }
    let status = refused(
        client
            .list_parked_events(authed(
                &token,
                opb::ListParkedEventsRequest {
                    page_size: -1,
                    ..Default::default()
                },
            ))
            .await,
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = refused(
        client
            .retry_parked_events(authed(
                &token,
                opb::RetryParkedEventsRequest {
                    seqs: vec![misnamed_seq, i64::MAX],
                    ..Default::default()
                },
            ))
            .await,
    );
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status.message().contains(&i64::MAX.to_string()),
        "{}",
        status.message()
    );

    // Once the cause is fixed (here: the topic), a retry delivers it.
    sqlx::query("UPDATE outbox SET topic = $2 WHERE event_id = $1::uuid")
        .bind(&misnamed)
        .bind(Topic::IdentityEvents.default_name())
        .execute(&app.pool)
        .await
        .expect("fix the topic");
    let retried = client
        .retry_parked_events(authed(
            &token,
            opb::RetryParkedEventsRequest {
                seqs: vec![misnamed_seq],
                ..Default::default()
            },
        ))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried.seqs, [misnamed_seq]);
    let seen = read_until(&app, Duration::from_secs(30), |seen| has(seen, &misnamed)).await;
    assert_eq!(
        seen.iter().filter(|e| e.id == misnamed).count(),
        1,
        "the retried event is delivered once"
    );
    let row = state(&app, &misnamed).await;
    assert!(row.published && !row.parked, "{row:?}");
    let status = refused(
        client
            .retry_parked_events(authed(
                &token,
                opb::RetryParkedEventsRequest {
                    seqs: vec![misnamed_seq],
                    ..Default::default()
                },
            ))
            .await,
    );
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // One still refused is parked again after its attempts.
    let retried = client
        .retry_parked_events(authed(
            &token,
            opb::RetryParkedEventsRequest {
                all: true,
                ..Default::default()
            },
        ))
        .await
        .expect("retry all")
        .into_inner();
    assert_eq!(retried.seqs, [large_seq]);
    let row = state(&app, &large).await;
    assert!(!row.parked && row.attempts < ATTEMPTS, "un-parked: {row:?}");
    let row = parked(&app, &large).await;
    assert_eq!(row.attempts, ATTEMPTS, "{row:?}");
}

/// A dead letter as a consumer writes it.
async fn dead_letter(
    pool: &sqlx::PgPool,
    table: &str,
    consumer: &str,
    payload: &[u8],
    replayed: bool,
) -> i64 {
    sqlx::query_scalar(&format!(
        "INSERT INTO {table} (consumer, topic, partition, \"offset\", record_key, payload, error, replayed_at) \
         VALUES ($1, 'mailroom.identity.events', 2, 17, 'k', $2, 'unknown payload version', \
         CASE WHEN $3 THEN now() END) RETURNING id"
    ))
    .bind(consumer)
    .bind(payload)
    .bind(replayed)
    .fetch_one(pool)
    .await
    .expect("insert a dead letter")
}

#[derive(Debug, sqlx::FromRow)]
struct ReplayColumns {
    requested: bool,
    replay_error: Option<String>,
}

async fn replay_columns(app: &TestApp, id: i64) -> ReplayColumns {
    sqlx::query_as(
        "SELECT replay_requested_at IS NOT NULL AS requested, replay_error FROM dead_letters WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .expect("dead letter")
}

#[tokio::test]
async fn dead_letters_are_listed_without_their_payload_and_a_replay_marks_them() {
    let app = spawn_app().await;
    // Consumers no service runs, so that nothing applies the replays during the test.
    let (a, b) = ("tests-ops-a", "tests-ops-b");
    let envelope = Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        r#type: "mailroom.events.v1.UserDismissed".into(),
        org_id: uuid::Uuid::now_v7().to_string(),
        aggregate_id: "user-1".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let decodes = dead_letter(&app.pool, "dead_letters", a, &envelope, false).await;
    let garbage = dead_letter(
        &app.pool,
        "dead_letters",
        a,
        b"\xff\xff not protobuf",
        false,
    )
    .await;
    let applied = dead_letter(&app.pool, "dead_letters", a, &envelope, true).await;
    let elsewhere = dead_letter(&app.pool, "dead_letters", b, &envelope, false).await;
    sqlx::query("UPDATE dead_letters SET replay_error = 'failed again' WHERE id = $1")
        .bind(garbage)
        .execute(&app.pool)
        .await
        .expect("an earlier failed replay");

    let mut client = ops(&app.endpoint).await;
    let token = operator(&app, "identity").await;
    let list = |consumer: &str, include_replayed: bool, page_size: i32, page_token: String| {
        authed(
            &token,
            opb::ListDeadLettersRequest {
                consumer: consumer.into(),
                include_replayed,
                page_size,
                page_token,
            },
        )
    };
    let page = client
        .list_dead_letters(list("", false, 0, String::new()))
        .await
        .expect("list")
        .into_inner();
    let ids: Vec<i64> = page.dead_letters.iter().map(|d| d.id).collect();
    assert_eq!(
        ids,
        [decodes, garbage, elsewhere],
        "the unapplied, oldest first"
    );
    let first = &page.dead_letters[0];
    let decoded = Envelope::decode(envelope.as_slice()).expect("envelope");
    assert_eq!(first.event_id, decoded.id);
    assert_eq!(first.event_type, "mailroom.events.v1.UserDismissed");
    assert_eq!(first.aggregate_id, "user-1");
    assert_eq!(
        (first.consumer.as_str(), first.partition, first.offset),
        (a, 2, 17)
    );
    assert_eq!(first.error, "unknown payload version");
    assert_eq!(first.replay_state, opb::ReplayState::NotRequested as i32);
    assert_eq!(first.payload_size, envelope.len() as i64);
    assert!(
        page.dead_letters
            .iter()
            .all(|d| d.payload.is_empty() && d.record_key.is_empty()),
        "a list never carries payloads"
    );
    let broken = &page.dead_letters[1];
    assert!(broken.event_id.is_empty() && broken.event_type.is_empty());
    assert_eq!(broken.replay_state, opb::ReplayState::Failed as i32);
    assert_eq!(broken.replay_error, "failed again");

    // By consumer, with the applied ones, a page at a time.
    let first_page = client
        .list_dead_letters(list(a, true, 2, String::new()))
        .await
        .expect("page 1")
        .into_inner();
    let second_page = client
        .list_dead_letters(list(a, true, 2, first_page.next_page_token.clone()))
        .await
        .expect("page 2")
        .into_inner();
    let ids: Vec<i64> = first_page
        .dead_letters
        .iter()
        .chain(&second_page.dead_letters)
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, [decodes, garbage, applied]);
    assert!(second_page.next_page_token.is_empty());
    assert_eq!(
        second_page.dead_letters[0].replay_state,
        opb::ReplayState::Replayed as i32
    );
    let status = refused(
        client
            .list_dead_letters(list(b, true, 2, first_page.next_page_token.clone()))
            .await,
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("page_token"),
        "{}",
        status.message()
    );

    // The payload, asked for by id.
    let one = client
        .get_dead_letter(authed(&token, opb::GetDeadLetterRequest { id: decodes }))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(one.payload, envelope);
    assert_eq!(one.record_key, b"k");

    // A replay by ids marks them, and clears an earlier replay's error.
    let marked = client
        .replay_dead_letters(authed(
            &token,
            opb::ReplayDeadLettersRequest {
                ids: vec![garbage, decodes, garbage],
                ..Default::default()
            },
        ))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(marked.ids, [decodes, garbage]);
    for id in [decodes, garbage] {
        let columns = replay_columns(&app, id).await;
        assert!(
            columns.requested && columns.replay_error.is_none(),
            "{id}: {columns:?}"
        );
    }
    assert!(
        !replay_columns(&app, elsewhere).await.requested,
        "only those named"
    );
    let page = client
        .list_dead_letters(list(a, false, 0, String::new()))
        .await
        .expect("list")
        .into_inner();
    assert!(page
        .dead_letters
        .iter()
        .all(|d| d.replay_state == opb::ReplayState::Requested as i32
            && d.replay_request_time.is_some()));

    // Mistakes are explained, and change nothing.
    for (request, code, mentions) in [
        (
            opb::ReplayDeadLettersRequest::default(),
            Code::InvalidArgument,
            "consumer",
        ),
        (
            opb::ReplayDeadLettersRequest {
                ids: vec![elsewhere],
                consumer: b.into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "not both",
        ),
        (
            opb::ReplayDeadLettersRequest {
                ids: vec![elsewhere, applied],
                ..Default::default()
            },
            Code::FailedPrecondition,
            "already applied",
        ),
        (
            opb::ReplayDeadLettersRequest {
                ids: vec![elsewhere, 987_654_321],
                ..Default::default()
            },
            Code::NotFound,
            "987654321",
        ),
        (
            opb::ReplayDeadLettersRequest {
                consumer: "tests-ops-nobody".into(),
                ..Default::default()
            },
            Code::NotFound,
            "tests-ops-a, tests-ops-b",
        ),
    ] {
        let status = refused(client.replay_dead_letters(authed(&token, request)).await);
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(mentions), "{}", status.message());
    }
    assert!(!replay_columns(&app, elsewhere).await.requested);

    // Everything of a consumer not applied yet.
    let marked = client
        .replay_dead_letters(authed(
            &token,
            opb::ReplayDeadLettersRequest {
                consumer: b.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("replay a consumer's")
        .into_inner();
    assert_eq!(marked.ids, [elsewhere]);
    assert!(replay_columns(&app, elsewhere).await.requested);

    // Nobody but the operator.
    let org = app.create_org(0).await;
    for call in 0..3 {
        let status = match call {
            0 => refused(
                client
                    .list_dead_letters(authed(
                        &org.admin_token,
                        opb::ListDeadLettersRequest::default(),
                    ))
                    .await,
            ),
            1 => refused(
                client
                    .get_dead_letter(authed(
                        &org.admin_token,
                        opb::GetDeadLetterRequest { id: decodes },
                    ))
                    .await,
            ),
            _ => refused(
                client
                    .replay_dead_letters(authed(
                        &org.admin_token,
                        opb::ReplayDeadLettersRequest {
                            consumer: a.into(),
                            ..Default::default()
                        },
                    ))
                    .await,
            ),
        };
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
}

#[tokio::test]
async fn every_service_hosts_the_operations_over_its_own_schema() {
    let app = spawn_app_with_access().await;
    let in_access = dead_letter(
        &app.pool,
        "access.dead_letters",
        "tests-ops-access",
        b"x",
        false,
    )
    .await;
    let in_identity =
        dead_letter(&app.pool, "dead_letters", "tests-ops-identity", b"x", false).await;
    let listed = |endpoint: String, service: &'static str| {
        let app = &app;
        async move {
            let token = operator(app, service).await;
            ops(&endpoint)
                .await
                .list_dead_letters(authed(
                    &token,
                    opb::ListDeadLettersRequest {
                        consumer: format!("tests-ops-{service}"),
                        ..Default::default()
                    },
                ))
                .await
                .expect("list")
                .into_inner()
                .dead_letters
                .iter()
                .map(|d| d.id)
                .collect::<Vec<_>>()
        }
    };
    let access_endpoint = app.access_endpoint.clone().expect("access runs");
    assert_eq!(listed(access_endpoint.clone(), "access").await, [in_access]);
    assert_eq!(
        listed(app.endpoint.clone(), "identity").await,
        [in_identity]
    );
    // The operator's token for identity is refused by access, as any token for another
    // service is.
    let token = operator(&app, "identity").await;
    let status = refused(
        ops(&access_endpoint)
            .await
            .list_dead_letters(authed(&token, opb::ListDeadLettersRequest::default()))
            .await,
    );
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

/// The CPU time this process has used so far (the test and the services it runs).
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The backends of this app's database listening for the outbox (the relay's listener; not
/// identity's users listener, which listens on `identity_users`).
async fn listeners(app: &TestApp) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND query LIKE 'LISTEN %\\_outbox%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&app.pool)
    .await
    .expect("pg_stat_activity")
}

async fn wait_for_listener(app: &TestApp, within: Duration) -> Vec<i32> {
    let deadline = Instant::now() + within;
    loop {
        let pids = listeners(app).await;
        if !pids.is_empty() {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "no outbox listener within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A listener that fails is dropped, the relay polls without spinning, and the listener is
/// connected again after a back-off. Here its connection is killed while the database
/// refuses new connections, so it cannot come back for a while: every attempt fails at once,
/// which a relay that waited on the failing listener again without sleeping would repeat in a
/// tight loop.
#[tokio::test]
async fn a_listener_that_fails_is_connected_again_after_a_back_off_while_the_relay_polls() {
    let app = spawn_app().await;
    let pids = wait_for_listener(&app, Duration::from_secs(10)).await;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .expect("database name");
    let admin = sqlx::PgPool::connect(&app.env.database_url)
        .await
        .expect("the stack's PostgreSQL");
    let allow = |allowed: bool| format!("ALTER DATABASE {database} ALLOW_CONNECTIONS {allowed}");

    // A quiet baseline, then the same time with the listener failing.
    let window = Duration::from_secs(4);
    let before = cpu_time();
    tokio::time::sleep(window).await;
    let baseline = cpu_time() - before;

    sqlx::query(&allow(false))
        .execute(&admin)
        .await
        .expect("refuse new connections");
    for pid in &pids {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&admin)
            .await
            .expect("kill the listener's connection");
    }
    let before = cpu_time();
    tokio::time::sleep(window).await;
    let failing = cpu_time() - before;
    eprintln!("CPU over {window:?}: {baseline:?} quiet, {failing:?} with the listener failing");
    assert!(
        failing < baseline * 2 + Duration::from_millis(400),
        "the relay does not spin on a failing listener: {failing:?} of CPU in {window:?} (quiet: {baseline:?})"
    );
    assert!(listeners(&app).await.is_empty(), "the listener is gone");

    // The relay polls meanwhile: an event still goes out.
    let key = format!("org-{}", uuid::Uuid::new_v4().simple());
    let id = enqueue_named(&app, &key, "while the listener is down".into()).await;
    let seen = read_until(&app, Duration::from_secs(15), |seen| has(seen, &id)).await;
    assert!(
        has(&seen, &id),
        "delivered by polling: {:?}, {} events read",
        state(&app, &id).await,
        seen.len()
    );

    sqlx::query(&allow(true))
        .execute(&admin)
        .await
        .expect("accept connections again");
    let back = Instant::now();
    let again = wait_for_listener(&app, Duration::from_secs(40)).await;
    assert!(
        again.iter().all(|pid| !pids.contains(pid)),
        "a new connection"
    );
    eprintln!(
        "listener connected again {:?} after connections were allowed",
        back.elapsed()
    );
    let id = enqueue_named(&app, &key, "after".into()).await;
    let seen = read_until(&app, Duration::from_secs(15), |seen| has(seen, &id)).await;
    assert!(has(&seen, &id), "delivered after the listener is back");
}
