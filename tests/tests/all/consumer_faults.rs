//! Consumers under real faults (issue 21, item 1), on the real stack: a handler whose first
//! attempts hit a genuine PostgreSQL error (a statement cancelled by `statement_timeout`) is
//! retried past the dead-letter threshold, applied once and in order per key, while another
//! partition goes on; a handler's explicit refusal goes to dead letters at once, and holds the
//! later records of its key behind it until a replay applies them in order (or a discard lets
//! them go on); an unknown failure is retried for its time budget, a hung attempt is abandoned
//! and retried; a replay request (the SQL the event operations API runs) is applied and
//! stamped, one too old for `processed_events` only when forced; in the concurrent mode, a
//! second member joining and the first leaving mid-work lose nothing and redo only what was in
//! flight at the revocation; pruning deletes by age only what was replayed or discarded; a
//! mirror that falls behind exports how far, in records and seconds, and zero once caught up.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailroom_platform::consumer::concurrent::{self, WorkHandler};
use mailroom_platform::consumer::{self, EventHandler};
use mailroom_platform::kafka::{KafkaSettings, Topic, Topics};
use mailroom_proto::events::v1::Envelope;
use mailroom_tests::{metric_sample, scrape_metrics, spawn_app, TestApp};
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// Failures a stuck record sees before it passes: more than the dead-letter threshold.
const FAILURES: u32 = consumer::MAX_ATTEMPTS + 2;

/// Quick retries, so a test sees many attempts in seconds (production: 100 ms to 30 s).
fn quick() -> consumer::Options {
    consumer::Options {
        retry_base: Duration::from_millis(20),
        retry_cap: Duration::from_millis(200),
        replay_every: Duration::from_millis(300),
        ..consumer::Options::default()
    }
}

/// An app (for its database and the stack's broker) and a topic of this test's own.
struct Bench {
    app: TestApp,
    kafka: KafkaSettings,
    topic: String,
    producer: FutureProducer,
}

impl Bench {
    async fn new(partitions: i32) -> Self {
        let app = spawn_app().await;
        sqlx::query(
            "CREATE TABLE effects (seq BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, \
             record_key TEXT NOT NULL)",
        )
        .execute(&app.pool)
        .await
        .expect("effects table");
        sqlx::query("CREATE TABLE executions (event_id TEXT NOT NULL, consumer TEXT NOT NULL)")
            .execute(&app.pool)
            .await
            .expect("executions table");
        let kafka = KafkaSettings {
            brokers: app.kafka_brokers.clone(),
            idempotence: false,
            transactions: true,
            partitions,
            replication: 1,
            topics: Topics::new(format!("test.faults.{}", uuid::Uuid::new_v4().simple())),
            properties: Default::default(),
        };
        kafka
            .ensure_topics(&[Topic::IdentityEvents])
            .await
            .expect("topic");
        let topic = kafka.topics.name(Topic::IdentityEvents);
        let producer = kafka.producer().expect("producer");
        Self {
            app,
            kafka,
            topic,
            producer,
        }
    }

    /// Sends an event keyed `key` to `partition`; returns its id.
    async fn send(&self, key: &str, partition: i32) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        let payload = Envelope {
            id: id.clone(),
            r#type: "mailroom.events.v1.DepartmentUpdated".into(),
            org_id: uuid::Uuid::new_v4().to_string(),
            aggregate_id: key.into(),
            ..Default::default()
        }
        .encode_to_vec();
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(key)
                    .partition(partition)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("produce");
        id
    }

    /// Group `name` of this test's own (the broker outlives test runs).
    fn group(&self, name: &str) -> String {
        format!("{name}.{}", self.topic)
    }

    /// Event ids in the order their effects were made.
    async fn effects(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT event_id FROM effects ORDER BY seq")
            .fetch_all(&self.app.pool)
            .await
            .expect("effects")
    }

    async fn dead_letters(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT error FROM dead_letters ORDER BY id")
            .fetch_all(&self.app.pool)
            .await
            .expect("dead letters")
    }

    /// Runs the sequential consumer `name` in `group` until the returned token is cancelled.
    fn consume(
        &self,
        name: &str,
        group: &str,
        handler: Arc<dyn EventHandler>,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        self.consume_with(name, group, handler, quick())
    }

    /// As [`Bench::consume`], with `options`.
    fn consume_with(
        &self,
        name: &str,
        group: &str,
        handler: Arc<dyn EventHandler>,
        options: consumer::Options,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let shutdown = CancellationToken::new();
        let consumer = self.kafka.consumer(&self.group(group)).expect("consumer");
        let task = tokio::spawn(consumer::run_with(
            name.to_owned(),
            self.app.pool.clone(),
            consumer,
            vec![self.topic.clone()],
            handler,
            options,
            shutdown.clone(),
        ));
        let task = tokio::spawn(async move {
            if let Ok(Err(err)) = task.await {
                panic!("the consumer stopped: {err}");
            }
        });
        (shutdown, task)
    }

    /// Runs the concurrent consumer of group `group` until the returned token is cancelled.
    fn work(
        &self,
        group: &str,
        handler: Arc<dyn WorkHandler>,
        max_in_flight: usize,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let shutdown = CancellationToken::new();
        let group = self.group(group);
        let consumer = self
            .kafka
            .work_consumer(&group, Duration::from_secs(60))
            .expect("consumer");
        let (pool, topic, stop) = (self.app.pool.clone(), self.topic.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            let result = concurrent::run_with(
                &group,
                &pool,
                consumer,
                &[topic.as_str()],
                handler,
                max_in_flight,
                quick(),
                stop,
            )
            .await;
            if let Err(err) = result {
                panic!("the work consumer stopped: {err}");
            }
        });
        (shutdown, task)
    }
}

/// Waits until `done` holds, failing with `what` after `timeout`; `fail` is checked too and
/// fails at once (a dead letter where none may be, say).
async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(failure) => panic!("{what}: {failure}"),
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes the current transaction of `conn` fail with a real PostgreSQL error: a statement
/// cancelled by its `statement_timeout` (SQLSTATE 57014).
async fn cancelled_statement(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query("SET LOCAL statement_timeout = '20ms'")
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_sleep(2)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn record_effect(
    conn: &mut PgConnection,
    event: &Envelope,
    consumer: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO effects (event_id, record_key) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.aggregate_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO executions (event_id, consumer) VALUES ($1, $2)")
        .bind(&event.id)
        .bind(consumer)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Applies every event; those keyed `stuck` fail with a cancelled statement until released
/// (and at least [`FAILURES`] times); the first keyed `refused` is refused for good while
/// `refusing`.
#[derive(Default)]
struct Faulty {
    attempts: AtomicU32,
    released: AtomicBool,
    refusing: AtomicBool,
    /// The event refused: the first one keyed `refused`.
    refused: std::sync::Mutex<Option<String>>,
}

impl Faulty {
    async fn apply(&self, conn: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
        if event.aggregate_id == "stuck" {
            let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
            if attempt <= FAILURES || !self.released.load(Ordering::SeqCst) {
                cancelled_statement(conn).await?;
            }
        }
        let refused = event.aggregate_id == "refused" && {
            let mut first = self.refused.lock().expect("lock");
            first.get_or_insert_with(|| event.id.clone()) == &event.id
        };
        if refused && self.refusing.load(Ordering::SeqCst) {
            return Err(consumer::Refusal::new("this department does not exist here").into());
        }
        record_effect(conn, event, "sequential").await
    }
}

#[async_trait::async_trait]
impl EventHandler for Faulty {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
        self.apply(tx, event).await
    }
}

/// The concurrent mode's handler: the same faults, each attempt in a transaction of its own.
struct FaultyWork {
    pool: PgPool,
    faults: Faulty,
}

#[async_trait::async_trait]
impl WorkHandler for FaultyWork {
    async fn handle(&self, event: Envelope, _stop: CancellationToken) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        self.faults.apply(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The common check of the two modes: a stuck record on partition 0 is retried past the
/// dead-letter threshold while partition 1 goes on, then applied once, before what follows it.
async fn stuck_record_is_retried(bench: &Bench, faults: &Faulty) {
    let s1 = bench.send("stuck", 0).await;
    let s2 = bench.send("stuck", 0).await;
    wait_for(
        Duration::from_secs(30),
        "the stuck record is tried",
        || async { Ok(faults.attempts.load(Ordering::SeqCst) >= 1) },
    )
    .await;
    // While it is stuck, another partition goes on.
    let free = [bench.send("free", 1).await, bench.send("free", 1).await];
    wait_for(
        Duration::from_secs(30),
        "the other partition is applied while the stuck record waits",
        || async {
            let effects = bench.effects().await;
            if !bench.dead_letters().await.is_empty() {
                return Err(format!("dead-lettered: {:?}", bench.dead_letters().await));
            }
            Ok(free.iter().all(|id| effects.contains(id)))
        },
    )
    .await;
    assert!(
        !bench.effects().await.contains(&s1),
        "the stuck record is still failing"
    );
    wait_for(
        Duration::from_secs(120),
        "the stuck record is tried past the dead-letter threshold",
        || async {
            let dead = bench.dead_letters().await;
            if !dead.is_empty() {
                return Err(format!(
                    "a transient error was dead-lettered after {} attempts: {dead:?}",
                    faults.attempts.load(Ordering::SeqCst)
                ));
            }
            Ok(faults.attempts.load(Ordering::SeqCst) > FAILURES)
        },
    )
    .await;
    assert!(
        !bench.effects().await.contains(&s2),
        "nothing after the stuck record on its partition is applied before it"
    );
    faults.released.store(true, Ordering::SeqCst);
    wait_for(
        Duration::from_secs(30),
        "the stuck records are applied",
        || async {
            let effects = bench.effects().await;
            Ok(effects.contains(&s1) && effects.contains(&s2))
        },
    )
    .await;
    let effects = bench.effects().await;
    let at = |id: &String| effects.iter().position(|e| e == id);
    assert!(at(&s1) < at(&s2), "per-key order: {effects:?}");
    assert_eq!(effects.len(), 4, "each applied once: {effects:?}");
    assert!(bench.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_cancelled_statement_is_retried_not_dead_lettered() {
    let bench = Bench::new(2).await;
    let faults = Arc::new(Faulty::default());
    let handler = Arc::new(SharedFaulty(faults.clone()));
    let (stop, task) = bench.consume("faults", "g-seq", handler);
    stuck_record_is_retried(&bench, &faults).await;
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE consumer = 'faults'")
            .fetch_one(&bench.app.pool)
            .await
            .expect("processed");
    assert_eq!(processed, 4);
    stop.cancel();
    let _ = task.await;
}

#[tokio::test]
async fn in_the_concurrent_mode_a_cancelled_statement_holds_only_its_key() {
    let bench = Bench::new(2).await;
    let work = Arc::new(FaultyWork {
        pool: bench.app.pool.clone(),
        faults: Faulty::default(),
    });
    let (stop, task) = bench.work("g-work", work.clone(), 4);
    stuck_record_is_retried(&bench, &work.faults).await;
    stop.cancel();
    let _ = task.await;
}

/// Lets a test keep its own handle on a [`Faulty`] it hands to the consumer.
struct SharedFaulty(Arc<Faulty>);

#[async_trait::async_trait]
impl EventHandler for SharedFaulty {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
        self.0.apply(tx, event).await
    }
}

/// A dead letter as the consumer stored it: id, error, the letter it is held behind, and the
/// event id of its payload.
async fn letters(pool: &PgPool, consumer: &str) -> Vec<(i64, String, Option<i64>, String)> {
    let rows: Vec<(i64, String, Option<i64>, Vec<u8>)> = sqlx::query_as(
        "SELECT id, error, held_behind, payload FROM dead_letters WHERE consumer = $1 ORDER BY id",
    )
    .bind(consumer)
    .fetch_all(pool)
    .await
    .expect("dead letters");
    rows.into_iter()
        .map(|(id, error, held, payload)| {
            let kept = Envelope::decode(&payload[..]).expect("the record is kept as it came");
            (id, error, held, kept.id)
        })
        .collect()
}

/// A refused record goes to dead letters at once; the later record of its key is held behind
/// it (never applied before it), while another key goes on. Returns the refused and the held
/// event ids, and the refused one's dead letter.
async fn refusal_holds_its_key(
    bench: &Bench,
    faults: &Faulty,
    started: Instant,
) -> (String, String, i64) {
    let refused = bench.send("refused", 0).await;
    let next = bench.send("refused", 0).await;
    let other = bench.send("other", 0).await;
    wait_for(
        Duration::from_secs(60),
        "the refusal is kept, the next record of its key held, another key applied",
        || async {
            Ok(bench.effects().await.contains(&other)
                && letters(&bench.app.pool, "faults").await.len() == 2)
        },
    )
    .await;
    let taken = started.elapsed();
    assert!(
        taken < Duration::from_secs(10),
        "a refusal is not retried: dead-lettered after {taken:?}"
    );
    let dead = letters(&bench.app.pool, "faults").await;
    assert!(dead[0].1.contains("does not exist here"), "{dead:?}");
    assert_eq!((dead[0].2, &dead[0].3), (None, &refused), "{dead:?}");
    assert!(
        dead[1]
            .1
            .contains(&format!("held behind dead letter {}", dead[0].0)),
        "{dead:?}"
    );
    assert_eq!(
        (dead[1].2, &dead[1].3),
        (Some(dead[0].0), &next),
        "{dead:?}"
    );
    assert_eq!(
        bench.effects().await,
        vec![other],
        "the later record of the refused key is not applied before it"
    );
    assert!(faults.refused.lock().expect("lock").as_deref() == Some(refused.as_str()));
    (refused, next, dead[0].0)
}

#[tokio::test]
async fn a_refusal_holds_its_key_and_a_replay_applies_the_key_in_order() {
    let bench = Bench::new(1).await;
    let faults = Arc::new(Faulty::default());
    faults.refusing.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let (stop, task) = bench.consume(
        "faults",
        "g-refusal",
        Arc::new(SharedFaulty(faults.clone())),
    );
    let (refused, next, first) = refusal_holds_its_key(&bench, &faults, started).await;
    let other = bench.effects().await;
    // The cause is fixed; the operator replays the refused letter only: the held one follows
    // it, and the key's final state is that of applying them in order.
    faults.refusing.store(false, Ordering::SeqCst);
    request_replay(&bench.app.pool, first).await;
    wait_for(
        Duration::from_secs(30),
        "the refused letter and the one held behind it are replayed",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM dead_letters WHERE consumer = 'faults' AND replayed_at IS NULL",
            )
            .fetch_one(&bench.app.pool)
            .await
            .map_err(|e| e.to_string())?;
            Ok(waiting == 0)
        },
    )
    .await;
    let mut expected = other;
    expected.extend([refused, next]);
    assert_eq!(
        bench.effects().await,
        expected,
        "applied in the key's order"
    );
    // The key flows again.
    let after = bench.send("refused", 0).await;
    wait_for(
        Duration::from_secs(30),
        "a new record of the key is applied",
        || async { Ok(bench.effects().await.contains(&after)) },
    )
    .await;
    assert_eq!(letters(&bench.app.pool, "faults").await.len(), 2);
    stop.cancel();
    let _ = task.await;
}

#[tokio::test]
async fn a_discarded_dead_letter_lets_the_records_held_behind_it_go_on() {
    let bench = Bench::new(1).await;
    let faults = Arc::new(Faulty::default());
    faults.refusing.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let (stop, task) = bench.consume(
        "faults",
        "g-discard",
        Arc::new(SharedFaulty(faults.clone())),
    );
    let (refused, next, first) = refusal_holds_its_key(&bench, &faults, started).await;
    // What the event operations API's DiscardDeadLetters does.
    sqlx::query(
        "UPDATE dead_letters SET discarded_at = now(), replay_requested_at = NULL WHERE id = $1",
    )
    .bind(first)
    .execute(&bench.app.pool)
    .await
    .expect("discard");
    wait_for(
        Duration::from_secs(30),
        "the record held behind the discarded one is applied",
        || async { Ok(bench.effects().await.contains(&next)) },
    )
    .await;
    assert!(
        !bench.effects().await.contains(&refused),
        "a discarded letter is never applied"
    );
    stop.cancel();
    let _ = task.await;
}

/// Fails every event keyed `failing` for an unknown reason (a bug, say), hangs on the first
/// event keyed `hangs`; applies the rest.
#[derive(Default)]
struct Odd {
    failures: AtomicU32,
    hung: AtomicBool,
}

#[async_trait::async_trait]
impl EventHandler for Odd {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
        if event.aggregate_id == "failing" {
            self.failures.fetch_add(1, Ordering::SeqCst);
            anyhow::bail!("an unexpected state (a bug)");
        }
        if event.aggregate_id == "hangs" && !self.hung.swap(true, Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        record_effect(tx, event, "odd").await
    }
}

#[tokio::test]
async fn an_unknown_failure_is_retried_for_its_time_budget_not_a_number_of_tries() {
    let bench = Bench::new(1).await;
    let odd = Arc::new(Odd::default());
    let budget = Duration::from_secs(5);
    let started = Instant::now();
    let (stop, task) = bench.consume_with(
        "odd",
        "g-unknown",
        odd.clone(),
        consumer::Options {
            unknown_budget: budget,
            ..quick()
        },
    );
    bench.send("failing", 0).await;
    wait_for(
        Duration::from_secs(60),
        "the failing record goes to dead letters",
        || async { Ok(!bench.dead_letters().await.is_empty()) },
    )
    .await;
    let taken = started.elapsed();
    let tries = odd.failures.load(Ordering::SeqCst);
    assert!(
        taken >= budget,
        "dead-lettered after {taken:?} and {tries} tries, before its budget of {budget:?}"
    );
    assert!(tries > consumer::MAX_ATTEMPTS, "{tries} tries");
    stop.cancel();
    let _ = task.await;
}

#[tokio::test]
async fn a_hung_attempt_is_abandoned_and_retried() {
    let bench = Bench::new(1).await;
    let odd = Arc::new(Odd::default());
    let started = Instant::now();
    let (stop, task) = bench.consume_with(
        "odd",
        "g-hung",
        odd.clone(),
        consumer::Options {
            attempt_timeout: Duration::from_millis(500),
            ..quick()
        },
    );
    let hangs = bench.send("hangs", 0).await;
    let after = bench.send("hangs", 0).await;
    wait_for(
        Duration::from_secs(30),
        "the hung record and the one after it are applied",
        || async {
            let effects = bench.effects().await;
            Ok(effects.contains(&hangs) && effects.contains(&after))
        },
    )
    .await;
    assert_eq!(
        bench.effects().await,
        vec![hangs, after],
        "in order, once each"
    );
    assert!(bench.dead_letters().await.is_empty());
    assert!(started.elapsed() < Duration::from_secs(30));
    stop.cancel();
    let _ = task.await;
}

#[tokio::test]
async fn a_dead_letter_older_than_processed_events_is_replayed_only_when_forced() {
    let bench = Bench::new(1).await;
    let faults = Arc::new(Faulty::default());
    let (stop, task) = bench.consume("faults", "g-old", Arc::new(SharedFaulty(faults.clone())));
    let pool = &bench.app.pool;
    let (id, payload) = envelope("old");
    let row = dead_letter(pool, "faults", &bench.topic, "old", &payload).await;
    sqlx::query("UPDATE dead_letters SET received_at = now() - interval '40 days' WHERE id = $1")
        .bind(row)
        .execute(pool)
        .await
        .expect("age");
    request_replay(pool, row).await;
    wait_for(
        Duration::from_secs(30),
        "the old replay is refused",
        || async { Ok(replay_state(pool, row).await.2.is_some()) },
    )
    .await;
    let (requested, replayed, error) = replay_state(pool, row).await;
    assert!(requested.is_none() && replayed.is_none());
    assert!(error.unwrap_or_default().contains("processed_events"));
    assert!(bench.effects().await.is_empty());
    // What ReplayDeadLetters with force does.
    sqlx::query(
        "UPDATE dead_letters SET replay_requested_at = now(), replay_error = NULL, \
         replay_forced = true WHERE id = $1",
    )
    .bind(row)
    .execute(pool)
    .await
    .expect("force");
    wait_for(
        Duration::from_secs(30),
        "the forced replay is applied",
        || async { Ok(replay_state(pool, row).await.1.is_some()) },
    )
    .await;
    assert_eq!(bench.effects().await, vec![id]);
    stop.cancel();
    let _ = task.await;
}

/// Writes a dead letter of consumer `name` for `payload` keyed `key`, as a consumer would have.
async fn dead_letter(pool: &PgPool, name: &str, topic: &str, key: &str, payload: &[u8]) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO dead_letters (consumer, topic, partition, \"offset\", record_key, payload, error) \
         VALUES ($1, $2, 0, 7, $3, $4, 'refused earlier') RETURNING id",
    )
    .bind(name)
    .bind(topic)
    .bind(key.as_bytes())
    .bind(payload)
    .fetch_one(pool)
    .await
    .expect("dead letter")
}

/// What the event operations API does to ask for a replay.
async fn request_replay(pool: &PgPool, id: i64) {
    sqlx::query(
        "UPDATE dead_letters SET replay_requested_at = now(), replay_error = NULL WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    .expect("request replay");
}

type ReplayState = (
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<String>,
);

async fn replay_state(pool: &PgPool, id: i64) -> ReplayState {
    sqlx::query_as(
        "SELECT replay_requested_at, replayed_at, replay_error FROM dead_letters WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("dead letter")
}

fn envelope(key: &str) -> (String, Vec<u8>) {
    let id = uuid::Uuid::now_v7().to_string();
    let payload = Envelope {
        id: id.clone(),
        r#type: "mailroom.events.v1.DepartmentUpdated".into(),
        aggregate_id: key.into(),
        ..Default::default()
    }
    .encode_to_vec();
    (id, payload)
}

/// A replay request is applied through the consumer's path and stamped; one that fails for a
/// moment (a cancelled statement) stays requested and is applied at a later poll; one that
/// can never work gets its error and is no longer requested; another consumer's is left alone.
async fn replays_are_applied(bench: &Bench, faults: &Faulty, name: &str) {
    let pool = &bench.app.pool;
    let (good, payload) = envelope("k");
    let good_row = dead_letter(pool, name, &bench.topic, "k", &payload).await;
    let (_, stuck_payload) = envelope("stuck");
    let stuck_row = dead_letter(pool, name, &bench.topic, "stuck", &stuck_payload).await;
    let bad_row = dead_letter(pool, name, &bench.topic, "bad", b"\xff\xfe not protobuf").await;
    let (other, other_payload) = envelope("k");
    let other_row = dead_letter(pool, "someone-else", &bench.topic, "k", &other_payload).await;
    for row in [good_row, stuck_row, bad_row, other_row] {
        request_replay(pool, row).await;
    }
    wait_for(
        Duration::from_secs(30),
        "the replay is applied and stamped",
        || async { Ok(replay_state(pool, good_row).await.1.is_some()) },
    )
    .await;
    assert!(bench.effects().await.contains(&good));
    // The stuck one fails (transiently) for a while, and stays requested meanwhile.
    wait_for(
        Duration::from_secs(30),
        "the stuck replay is tried",
        || async { Ok(faults.attempts.load(Ordering::SeqCst) >= 2) },
    )
    .await;
    let (requested, replayed, error) = replay_state(pool, stuck_row).await;
    assert!(
        requested.is_some() && replayed.is_none() && error.is_none(),
        "a transient failure leaves the request in place"
    );
    faults.released.store(true, Ordering::SeqCst);
    wait_for(
        Duration::from_secs(60),
        "the stuck replay is applied",
        || async { Ok(replay_state(pool, stuck_row).await.1.is_some()) },
    )
    .await;
    let (requested, replayed, error) = replay_state(pool, bad_row).await;
    assert!(
        requested.is_none(),
        "an impossible replay is no longer requested"
    );
    assert!(replayed.is_none());
    assert!(error.unwrap_or_default().contains("undecodable"));
    let (requested, replayed, _) = replay_state(pool, other_row).await;
    assert!(
        requested.is_some() && replayed.is_none(),
        "another consumer's"
    );
    assert!(!bench.effects().await.contains(&other));
    let executions: i64 = sqlx::query_scalar("SELECT count(*) FROM executions")
        .fetch_one(pool)
        .await
        .expect("executions");
    assert_eq!(executions, 2, "each replay applied once");
}

#[tokio::test]
async fn a_replay_request_is_applied_and_stamped() {
    let bench = Bench::new(1).await;
    let faults = Arc::new(Faulty::default());
    let (stop, task) = bench.consume("faults", "g-replay", Arc::new(SharedFaulty(faults.clone())));
    replays_are_applied(&bench, &faults, "faults").await;
    // The replayed event is recorded as processed: a redelivery of it changes nothing.
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE consumer = 'faults'")
            .fetch_one(&bench.app.pool)
            .await
            .expect("processed");
    assert_eq!(processed, 2);
    stop.cancel();
    let _ = task.await;
}

#[tokio::test]
async fn in_the_concurrent_mode_a_replay_request_is_applied_and_stamped() {
    let bench = Bench::new(1).await;
    let work = Arc::new(FaultyWork {
        pool: bench.app.pool.clone(),
        faults: Faulty::default(),
    });
    let (stop, task) = bench.work("g-work-replay", work.clone(), 4);
    replays_are_applied(&bench, &work.faults, &bench.group("g-work-replay")).await;
    stop.cancel();
    let _ = task.await;
}

/// Slow work that records each execution (the effect itself is idempotent, as a sync is) and
/// gives up at once when told to stop. While `held` is set, work does not finish (it waits,
/// still giving up when stopped), so a test can keep work in flight and waiting for as long as
/// a rebalance takes.
struct Slow {
    pool: PgPool,
    name: String,
    held: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl WorkHandler for Slow {
    async fn handle(&self, event: Envelope, stop: CancellationToken) -> anyhow::Result<()> {
        let work = async {
            tokio::time::sleep(Duration::from_millis(250)).await;
            while self.held.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            _ = work => {}
            _ = stop.cancelled() => anyhow::bail!("stopped"),
        }
        let mut conn = self.pool.acquire().await?;
        record_effect(&mut conn, &event, &self.name).await
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

#[tokio::test]
async fn a_member_joining_and_leaving_mid_work_loses_and_redoes_nothing_but_what_was_in_flight() {
    const PARTITIONS: i32 = 2;
    const PER_KEY: usize = 24;
    const MAX_IN_FLIGHT: usize = 16;
    let bench = Bench::new(PARTITIONS).await;
    // One key per partition: its records run one at a time, and many wait behind the first.
    let mut sent = HashSet::new();
    for _ in 0..PER_KEY {
        for p in 0..PARTITIONS {
            sent.insert(bench.send(&format!("key-{p}"), p).await);
        }
    }
    let total = sent.len() as i64;
    let pool = bench.app.pool.clone();
    let a_held = Arc::new(AtomicBool::new(false));
    let slow = |name: &str, held: &Arc<AtomicBool>| {
        Arc::new(Slow {
            pool: pool.clone(),
            name: name.into(),
            held: held.clone(),
        })
    };
    let (stop_a, task_a) = bench.work("g-rebalance", slow("a", &a_held), MAX_IN_FLIGHT);
    wait_for(Duration::from_secs(30), "a starts", || async {
        Ok(count(&pool, "SELECT count(*) FROM executions").await >= 2)
    })
    .await;
    // a's work waits, unfinished, until b has worked: however long b's join takes (seconds on
    // tansu, over 30 under the whole suite's load), a has not run out of records by then (it
    // did, in a few seconds, and b was given a partition with nothing left to do).
    a_held.store(true, Ordering::SeqCst);
    let (stop_b, task_b) = bench.work(
        "g-rebalance",
        slow("b", &Arc::new(AtomicBool::new(false))),
        MAX_IN_FLIGHT,
    );
    // The group's rebalance timeout is the work consumers' max.poll.interval.ms (60 s): the
    // coordinator may wait that long for a to rejoin.
    let joining = Instant::now();
    wait_for(Duration::from_secs(75), "b takes a share", || async {
        Ok(count(
            &pool,
            "SELECT count(*) FROM executions WHERE consumer = 'b'",
        )
        .await
            >= 3)
    })
    .await;
    eprintln!("b took a share {:?} after it started", joining.elapsed());
    a_held.store(false, Ordering::SeqCst);
    stop_a.cancel();
    let _ = task_a.await;
    wait_for(
        Duration::from_secs(60),
        "every event has its effect",
        || async { Ok(count(&pool, "SELECT count(*) FROM effects").await >= total) },
    )
    .await;
    // b hands back (committing what it finished); a third member then finds nothing to redo.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_b.cancel();
    let _ = task_b.await;
    let before_c = count(&pool, "SELECT count(*) FROM executions").await;
    let (stop_c, task_c) = bench.work(
        "g-rebalance",
        slow("c", &Arc::new(AtomicBool::new(false))),
        MAX_IN_FLIGHT,
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop_c.cancel();
    let _ = task_c.await;

    let effects: Vec<String> = sqlx::query_scalar("SELECT event_id FROM effects")
        .fetch_all(&pool)
        .await
        .expect("effects");
    let effected: HashSet<String> = effects.into_iter().collect();
    assert_eq!(
        effected,
        sent,
        "lost: {}",
        sent.difference(&effected).count()
    );
    let executions = count(&pool, "SELECT count(*) FROM executions").await;
    let by_c = count(
        &pool,
        "SELECT count(*) FROM executions WHERE consumer = 'c'",
    )
    .await;
    eprintln!(
        "{total} events, {executions} executions ({} redone), {by_c} by the third member",
        executions - total
    );
    let twice: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_id, string_agg(consumer, ',') FROM executions GROUP BY event_id HAVING count(*) > 1",
    )
    .fetch_all(&pool)
    .await
    .expect("redone");
    eprintln!("redone (event, by): {twice:?}");
    assert_eq!(
        by_c, 0,
        "committed offsets cover all that was done ({} executions before c)",
        before_c
    );
    // Redone: only what was in flight in a partition when it was revoked (one record, as each
    // partition has one key): b joining takes one partition from a (cooperative-sticky), a
    // leaving abandons its work unfinished. Before the fix, a went on with the records of the
    // revoked partition that waited behind the running one (5 and 6 redone in two runs).
    let redone = executions - total;
    assert!(
        redone <= i64::from(PARTITIONS),
        "{redone} executions redone ({executions} for {total} events)"
    );
}

#[tokio::test]
async fn old_processed_events_and_dead_letters_are_pruned_by_age() {
    let app = spawn_app().await;
    let pool = &app.pool;
    for (consumer, age_days) in [("mine", 40), ("mine", 1), ("other", 40)] {
        sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, processed_at) \
             VALUES ($1, $2, now() - make_interval(days => $3))",
        )
        .bind(consumer)
        .bind(uuid::Uuid::new_v4())
        .bind(age_days)
        .execute(pool)
        .await
        .expect("processed");
    }
    // Replayed, discarded, or still waiting (never pruned: its effect has not happened).
    for (consumer, age_days, state) in [
        ("mine", 100, "replayed"),
        ("mine", 100, "discarded"),
        ("mine", 100, "waiting"),
        ("mine", 10, "replayed"),
        ("other", 100, "replayed"),
    ] {
        sqlx::query(
            "INSERT INTO dead_letters (consumer, topic, partition, \"offset\", error, received_at, \
             replayed_at, discarded_at) \
             VALUES ($1, 't', 0, 0, 'e', now() - make_interval(days => $2), \
             CASE WHEN $3 = 'replayed' THEN now() END, CASE WHEN $3 = 'discarded' THEN now() END)",
        )
        .bind(consumer)
        .bind(age_days)
        .bind(state)
        .execute(pool)
        .await
        .expect("dead letter");
    }
    let options = consumer::Options {
        prune_batch: 1,
        ..consumer::Options::default()
    };
    let pruned = consumer::retention::prune(pool, "mine", &options)
        .await
        .expect("prune");
    assert_eq!((pruned.processed_events, pruned.dead_letters), (1, 2));
    let left: Vec<(String, i64)> = sqlx::query_as(
        "SELECT consumer, count(*) FROM processed_events GROUP BY consumer ORDER BY consumer",
    )
    .fetch_all(pool)
    .await
    .expect("left");
    assert_eq!(left, vec![("mine".into(), 1), ("other".into(), 1)]);
    let left: Vec<(String, i64)> = sqlx::query_as(
        "SELECT consumer, count(*) FROM dead_letters GROUP BY consumer ORDER BY consumer",
    )
    .fetch_all(pool)
    .await
    .expect("left");
    assert_eq!(left, vec![("mine".into(), 2), ("other".into(), 1)]);
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE consumer = 'mine' \
         AND replayed_at IS NULL AND discarded_at IS NULL",
    )
    .fetch_one(pool)
    .await
    .expect("waiting");
    assert_eq!(waiting, 1, "the waiting letter is kept, however old");
}

/// Applies events only once `open`: until then each attempt waits (a handler slower than the
/// records arriving).
#[derive(Default)]
struct Gate {
    open: AtomicBool,
}

#[async_trait::async_trait]
impl EventHandler for Gate {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
        while !self.open.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        record_effect(tx, event, "sequential").await
    }
}

#[tokio::test]
async fn a_mirror_behind_exports_its_lag_in_records_and_seconds_and_zero_once_caught_up() {
    let metrics = mailroom_platform::metrics::serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("metrics port");
    let bench = Bench::new(1).await;
    let mut sent = Vec::new();
    for _ in 0..20 {
        sent.push(bench.send("lagging", 0).await);
    }
    // The records are 2 s old when the consumer starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gate = Arc::new(Gate::default());
    let (stop, task) = bench.consume("lagging-mirror", "lag", gate.clone());
    let records = "mailroom_events_lag_records{consumer=\"lagging-mirror\"}";
    let seconds = "mailroom_events_lag_seconds{consumer=\"lagging-mirror\"}";
    wait_for(
        Duration::from_secs(30),
        "the lag is exported while the first record is held",
        || async {
            let text = scrape_metrics(metrics).await;
            Ok(metric_sample(&text, records) == Some(20.0))
        },
    )
    .await;
    let text = scrape_metrics(metrics).await;
    let behind = metric_sample(&text, seconds).unwrap_or_default();
    assert!(
        (2.0..60.0).contains(&behind),
        "the oldest record held is 2 s old or more: {behind}"
    );

    gate.open.store(true, Ordering::SeqCst);
    wait_for(
        Duration::from_secs(30),
        "every record applied and the lag back to zero",
        || async {
            let text = scrape_metrics(metrics).await;
            let effects = bench.effects().await;
            Ok(sent.iter().all(|id| effects.contains(id))
                && metric_sample(&text, records) == Some(0.0)
                && metric_sample(&text, seconds) == Some(0.0))
        },
    )
    .await;
    stop.cancel();
    let _ = task.await;
}

#[async_trait::async_trait]
impl WorkHandler for Gate {
    async fn handle(&self, _event: Envelope, stop: CancellationToken) -> anyhow::Result<()> {
        while !self.open.load(Ordering::SeqCst) && !stop.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_work_consumer_exports_the_records_it_has_not_finished() {
    let metrics = mailroom_platform::metrics::serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("metrics port");
    let bench = Bench::new(1).await;
    for n in 0..10 {
        bench.send(&format!("key-{n}"), 0).await;
    }
    let gate = Arc::new(Gate::default());
    let (stop, task) = bench.work("lagging-work", gate.clone(), 2);
    let series = format!(
        "mailroom_events_lag_records{{consumer=\"{}\"}}",
        bench.group("lagging-work")
    );
    // Two run (held at the gate), eight wait: all ten are unfinished.
    wait_for(
        Duration::from_secs(30),
        "the work consumer's backlog is exported",
        || async {
            let text = scrape_metrics(metrics).await;
            Ok(metric_sample(&text, &series) == Some(10.0))
        },
    )
    .await;
    // The full worker has paused its partition, so it fetches nothing: requests arriving
    // now are counted from the end the broker tells it.
    for n in 10..15 {
        bench.send(&format!("key-{n}"), 0).await;
    }
    wait_for(
        Duration::from_secs(30),
        "requests that arrived while the worker was full are counted",
        || async {
            let text = scrape_metrics(metrics).await;
            Ok(metric_sample(&text, &series) == Some(15.0))
        },
    )
    .await;
    gate.open.store(true, Ordering::SeqCst);
    wait_for(
        Duration::from_secs(30),
        "the backlog back to zero once the work is done",
        || async {
            let text = scrape_metrics(metrics).await;
            Ok(metric_sample(&text, &series) == Some(0.0))
        },
    )
    .await;
    stop.cancel();
    let _ = task.await;
}
