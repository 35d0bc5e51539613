//! The signals the sync workers scale on, on the real stack: overdue mailboxes counted from
//! the database (past their tier's interval; fresh, parked and failing ones not), a count
//! that handing the work out does not lower (the old "due" signal did: the scheduler pushes
//! a due time out as it hands the mailbox out) and only a finished sync does; every tier
//! announced at zero before the first count. A running worker reports its IDLE capacity,
//! the live workers and the real partition count of its requests topic; more workers than
//! partitions are counted and said (work from Kafka stops there, IDLE capacity does not).

use std::time::Duration;

use figment::Figment;
use mailroom_platform::config::PlatformConfig;
use mailroom_platform::kafka::{KafkaSettings, Topic};
use mailroom_platform::types::{MailboxId, OrgId, UserId};
use mailroom_sync::domain::Tier;
use mailroom_sync::partitions::{beyond_partitions, PartitionGuard};
use mailroom_sync::scheduler::{Overdue, Scheduler};
use mailroom_sync::store::schedule;
use mailroom_tests::sync_database;
use mailroom_tests::{metric_sample as sample, scrape_metrics, spawn_app_with_sync, StackEnv};
use rdkafka::consumer::{BaseConsumer, Consumer};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

fn scheduler(pool: &PgPool) -> Scheduler {
    Scheduler {
        pool: pool.clone(),
        activity: None,
        tick: Duration::from_millis(100),
        batch: 1_000,
        hold: Duration::from_secs(300),
        overdue: Overdue::default(),
    }
}

/// A mailbox in the schedule at `tier`, due now, connected `connected_ago` seconds ago and
/// last synced `synced_ago` seconds ago (never, for `None`).
async fn mailbox(
    pool: &PgPool,
    tier: Tier,
    connected_ago: i64,
    synced_ago: Option<i64>,
) -> MailboxId {
    let id = MailboxId::new();
    let mut conn = pool.acquire().await.expect("connection");
    schedule::upsert_mailbox(&mut conn, id, OrgId::new(), UserId::new(), false)
        .await
        .expect("schedule");
    sqlx::query(
        "UPDATE schedule SET tier = $2, next_due = now(), \
         connected_at = now() - make_interval(secs => $3), \
         last_sync = now() - make_interval(secs => $4) WHERE mailbox_id = $1",
    )
    .bind(id)
    .bind(tier.code())
    .bind(connected_ago as f64)
    .bind(synced_ago.map(|s| s as f64))
    .execute(&mut *conn)
    .await
    .expect("age the mailbox");
    id
}

fn count(counts: &[(Tier, i64)], tier: Tier) -> i64 {
    counts
        .iter()
        .find(|(t, _)| *t == tier)
        .map_or(-1, |(_, n)| *n)
}

#[tokio::test]
async fn sync_overdue_mailboxes_are_the_workers_backlog_which_handing_work_out_does_not_lower() {
    let pool = sync_database().await;
    let metrics = mailroom_platform::metrics::serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("metrics port");
    // Default intervals: active 60 s, recent 10 min, idle 1 h, dormant 1 day; grace 30 s.
    let stale_active = mailbox(&pool, Tier::Active, 86_400, Some(300)).await;
    let _fresh_active = mailbox(&pool, Tier::Active, 86_400, Some(10)).await;
    let _never_synced_recent = mailbox(&pool, Tier::Recent, 3_600, None).await;
    let _just_connected_recent = mailbox(&pool, Tier::Recent, 5, None).await;
    let _dormant_synced_today = mailbox(&pool, Tier::Dormant, 86_400 * 30, Some(7_200)).await;
    let _stale_idle = mailbox(&pool, Tier::Idle, 86_400, Some(7_200)).await;
    let parked = mailbox(&pool, Tier::Active, 86_400, Some(3_600)).await;
    let failing = mailbox(&pool, Tier::Active, 86_400, Some(3_600)).await;
    sqlx::query("UPDATE schedule SET parked = true WHERE mailbox_id = $1")
        .bind(parked)
        .execute(&pool)
        .await
        .expect("park");
    sqlx::query("UPDATE schedule SET failures = 3 WHERE mailbox_id = $1")
        .bind(failing)
        .execute(&pool)
        .await
        .expect("fail");

    let scheduler = scheduler(&pool);
    let before = scheduler.refresh_overdue().await.expect("count overdue");
    assert_eq!(
        [Tier::Active, Tier::Recent, Tier::Idle, Tier::Dormant].map(|t| count(&before, t)),
        [1, 1, 1, 0],
        "past their tier's interval: the active one synced 5 min ago, the recent one connected an hour ago and never synced, the idle one synced 2 h ago; not the fresh, just connected, dormant, parked or failing ones: {before:?}"
    );
    let exported = scrape_metrics(metrics).await;
    assert_eq!(
        sample(
            &exported,
            "mailroom_sync_overdue_mailboxes{tier=\"active\"}"
        ),
        Some(1.0),
        "{exported}"
    );
    assert_eq!(
        sample(
            &exported,
            "mailroom_sync_overdue_mailboxes{tier=\"dormant\"}"
        ),
        Some(0.0),
        "a tier with nothing overdue is exported at zero: {exported}"
    );

    // The scheduler hands every due mailbox out (pushing their due times out by its hold):
    // the old signal falls to nothing, the backlog stays until the workers have synced.
    let issued = scheduler.tick_once().await.expect("tick");
    assert_eq!(
        issued, 7,
        "every due mailbox but the parked one is handed out"
    );
    let due = schedule::due_by_tier(&pool).await.expect("due");
    assert!(
        due.iter().all(|(_, n)| *n == 0),
        "handed out, nothing is due any more: {due:?}"
    );
    let handed_out = scheduler.refresh_overdue().await.expect("count overdue");
    assert_eq!(
        handed_out, before,
        "handing the work out leaves the backlog as it was"
    );

    // A finished sync is what lowers it.
    let mut conn = pool.acquire().await.expect("connection");
    let now = chrono::Utc::now();
    assert!(schedule::record_success(
        &mut conn,
        stale_active,
        now,
        1_200,
        now + chrono::Duration::seconds(60),
        Tier::Active,
        "",
    )
    .await
    .expect("record the sync"));
    let synced = scheduler.refresh_overdue().await.expect("count overdue");
    assert_eq!(count(&synced, Tier::Active), 0, "{synced:?}");
    assert_eq!(count(&synced, Tier::Recent), 1, "{synced:?}");
    let exported = scrape_metrics(metrics).await;
    assert_eq!(
        sample(
            &exported,
            "mailroom_sync_overdue_mailboxes{tier=\"active\"}"
        ),
        Some(0.0),
        "{exported}"
    );
}

#[tokio::test]
async fn sync_scheduler_announces_every_tier_of_overdue_mailboxes_at_zero_then_counts() {
    let pool = sync_database().await;
    let metrics = mailroom_platform::metrics::serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("metrics port");
    mailbox(&pool, Tier::Recent, 86_400, Some(3_600)).await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(scheduler(&pool).run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let exported = loop {
        let exported = scrape_metrics(metrics).await;
        if sample(
            &exported,
            "mailroom_sync_overdue_mailboxes{tier=\"recent\"}",
        ) == Some(1.0)
        {
            break exported;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduler did not count the overdue mailbox within 10 s: {exported}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for tier in ["active", "idle", "dormant"] {
        assert_eq!(
            sample(
                &exported,
                &format!("mailroom_sync_overdue_mailboxes{{tier=\"{tier}\"}}")
            ),
            Some(0.0),
            "{tier}: {exported}"
        );
    }
    shutdown.cancel();
    running.await.expect("the scheduler stops");
}

/// The partitions of `topic` as the brokers' metadata says, asked without Mailroom's code.
async fn real_partitions(brokers: &str, topic: &str) -> usize {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("allow.auto.create.topics", "false")
            .create()
            .expect("metadata client");
        client
            .fetch_metadata(Some(&topic), Duration::from_secs(5))
            .ok()
            .and_then(|m| {
                m.topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map(|t| t.partitions().len())
            })
            .unwrap_or(0)
    })
    .await
    .expect("metadata")
}

#[tokio::test]
async fn sync_worker_reports_its_idle_capacity_the_live_workers_and_the_real_partitions_of_its_topic(
) {
    // The registry first: what the app's services record from their start is exported.
    let metrics = mailroom_platform::metrics::serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("metrics port");
    let app = spawn_app_with_sync().await;
    let topic = app.topics.name(Topic::SyncRequests);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (exported, partitions) = loop {
        let exported = scrape_metrics(metrics).await;
        let partitions = real_partitions(&app.kafka_brokers, &topic).await;
        if partitions > 0
            && sample(&exported, "mailroom_sync_request_partitions") == Some(partitions as f64)
        {
            break (exported, partitions);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker did not report {topic}'s {partitions} partitions within 30 s: {exported}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(partitions >= 1);
    assert_eq!(
        sample(&exported, "mailroom_sync_idle_capacity"),
        Some(mailroom_sync::SyncConfig::default().idle_max_connections as f64),
        "a worker's IDLE capacity is its idle_max_connections: {exported}"
    );
    assert_eq!(
        sample(&exported, "mailroom_sync_live_workers"),
        Some(1.0),
        "this app's one worker, and no other test's (each has its own topic): {exported}"
    );
    assert!(
        exported.contains("mailroom_sync_idle_connections "),
        "IDLE connections exported: {exported}"
    );
}

#[tokio::test]
async fn sync_partition_guard_counts_workers_beyond_the_topics_real_partitions() {
    let env = StackEnv::load();
    let prefix = format!("tests.{}", uuid::Uuid::new_v4().simple());
    // Topics made with 2 partitions; the guard must read the topic, not this setting.
    let platform = PlatformConfig::load(
        &Figment::new()
            .merge(("database_url", env.database_url.clone()))
            .merge(("redis_url", env.redis_url.clone()))
            .merge(("kafka_brokers", env.kafka_brokers.clone()))
            .merge(("kafka_topic_prefix", prefix.clone()))
            .merge(("kafka_partitions", 2)),
    )
    .expect("platform config");
    let kafka = KafkaSettings::from_config(&platform);
    kafka
        .ensure_topics(&[Topic::SyncRequests])
        .await
        .expect("requests topic");
    let topic = kafka.topics.name(Topic::SyncRequests);
    let redis = mailroom_platform::redis::connect(&SecretString::from(env.redis_url.clone()))
        .await
        .expect("redis");
    let mut reading = KafkaSettings::from_config(&platform);
    // A worker configured for 8 partitions still sees the topic's 2.
    reading.partitions = 8;
    let guards: Vec<PartitionGuard> = (0..3)
        .map(|n| PartitionGuard::new(reading.clone(), redis.clone(), format!("worker-{n}")))
        .collect();
    for guard in &guards {
        guard.register().await.expect("register");
    }
    let live = guards[0].register().await.expect("register");
    assert_eq!(live, 3, "three workers registered on {topic}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let partitions = loop {
        if let Some(n) = guards[0].compare(live).await {
            break n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic}'s partitions not read within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        partitions, 2,
        "the topic's real partitions, not the setting"
    );
    let warning = beyond_partitions(live, partitions, &topic).expect("3 workers on 2 partitions");
    assert!(
        warning.contains("does not grow beyond 2 workers") && warning.contains("IDLE capacity"),
        "{warning}"
    );
    // A worker that stopped renewing is no longer counted once it has aged out.
    let mut quick = PartitionGuard::new(reading.clone(), redis.clone(), "worker-quick".into());
    quick.heartbeat = Duration::from_millis(100);
    let only_fresh = {
        tokio::time::sleep(Duration::from_millis(400)).await;
        quick.register().await.expect("register")
    };
    assert_eq!(
        only_fresh, 1,
        "with a 100 ms heartbeat, workers silent for 400 ms are not live"
    );
}
