//! Mailroom's mail sync: the message index kept up to date from IMAP, more often for people
//! who are active, by workers that scale out.
//!
//! A tour:
//! - [`domain`]: tiers and their intervals, a request's priority, client kinds, back-off, the
//!   index's compact forms; [`envelope`]: a message's envelope as the index keeps it.
//! - [`store`]: all of the sync's SQL — the [`store::schedule`] (every mailbox and when it is
//!   next due), the [`store::folders`]' checkpoints, the [`store::messages`] index and the
//!   [`store::fences`] that keep a lease holder that was overtaken from writing any of them.
//! - [`activity`]: heartbeats in Redis and the tier they put an owner in.
//! - [`mailbox_events`]: the registry's events (the one consumed topic), into the schedule.
//! - [`scheduler`]: hands due mailboxes out, through the outbox; [`events`]: everything the
//!   sync publishes (SyncRequested at normal priority on `mailroom.sync.requests`;
//!   MailboxSynced, MailboxSyncFailed and NewMessages on `mailroom.sync.events`).
//! - [`worker`]: takes the requests (the platform's concurrent consumer), passes over late
//!   normal ones, holds a [`lease`] per mailbox, runs the [`engine`] over an IMAP session
//!   (opened by the `mailroom_mail` crate, the one mail-protocol layer), and records the
//!   outcome; [`connects`]: new connections per mail server, limited across workers.
//! - [`idle`]: active people's INBOXes held in IMAP IDLE, spread over workers by leases;
//!   [`partitions`]: the guard comparing the live workers with the requests topic's real
//!   partitions (work from Kafka stops growing there, IDLE capacity does not).
//! - [`service`]: the [`Sync`] value and who may call what; the operations one use case a
//!   file: [`heartbeats`], [`status`], [`messages`] (reading mail); [`api`]: the gRPC
//!   handlers; [`error`]: what can go wrong and its gRPC code; [`peers`]: the registry
//!   (mailbox logins) and access control, called as this service (`mailroom_clients`).
//! - [`config`]: the `sync` section; [`metrics`]: the scaling signals (overdue mailboxes,
//!   IDLE connections and capacity, request lag); [`demo`]: sample mail
//!   for `mailroom dev`, tests and benchmarks.
//!
//! One process runs as scheduler, worker or both ([`config::Role`]).

pub mod activity;
pub mod api;
pub mod body_reads;
pub mod callers;
pub mod config;
pub mod connects;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod envelope;
pub mod error;
pub mod events;
pub mod heartbeats;
pub mod idle;
pub mod lease;
pub mod mailbox_events;
pub mod messages;
pub mod metrics;
pub mod partitions;
pub mod peers;
pub mod scheduler;
pub mod service;
pub mod status;
pub mod store;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use mailroom_aip::token::PageTokenKey;
use mailroom_clients::{ServicePeers, Settings};
use mailroom_platform::auth::TokenVerifier;
use mailroom_platform::config::PlatformConfig;
use mailroom_platform::grpc::Hosted;
use mailroom_platform::hosting;
use mailroom_platform::kafka::Topic;
use mailroom_platform::proto::sync::v1 as pb;
use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;

pub use config::{Role, SyncConfig};
pub use service::Sync;

/// The sync's PostgreSQL schema.
pub const SCHEMA: &str = "sync";
/// The sync's gRPC port.
pub const DEFAULT_PORT: u16 = 50054;
/// The sync's metrics port.
pub const DEFAULT_METRICS_PORT: u16 = 9054;

/// The sync's own migrations (the platform's run first).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] mailroom_platform::db::DbError),
    #[error(
        "Redis (activity signals and mailbox leases, which the sync cannot work without): {0}"
    )]
    Redis(#[from] mailroom_platform::redis::RedisError),
    #[error(transparent)]
    Peers(#[from] mailroom_clients::ChannelError),
    #[error("{0}")]
    Config(String),
}

/// A started sync service, for the process hosting it: it verifies tokens with identity's
/// keys, fetched over gRPC, and runs the outbox relay and the consumer of the registry's
/// events beside its gRPC server, plus the scheduler, the IDLE watcher and the worker as its
/// role says.
pub type Started = hosting::Started<Sync>;

/// What a piece of work may take beyond a sync's deadline (the login asked of the registry,
/// the outcome recorded), in the work consumer's `max.poll.interval.ms`.
const WORK_MARGIN: Duration = Duration::from_secs(120);

/// The longest a consumer's `max.poll.interval.ms` may be (the platform's limit).
const MAX_WORK: Duration = Duration::from_secs(3_600);

/// The whole sync's deadline, which must leave the work consumer's limit room.
fn sync_deadline(config: &SyncConfig) -> Result<Duration, StartError> {
    let deadline = Duration::from_secs(config.sync_deadline_secs);
    if deadline.is_zero() {
        return Err(StartError::Config(
            "MAILROOM_SYNC__SYNC_DEADLINE_SECS is 0: every sync would end before it began; give the longest one mailbox's sync may take, in seconds".into(),
        ));
    }
    if deadline + WORK_MARGIN > MAX_WORK {
        return Err(StartError::Config(format!(
            "MAILROOM_SYNC__SYNC_DEADLINE_SECS is {} s; it must be at most {} s (the work consumer's max.poll.interval.ms of at most {} s must exceed it by {} s)",
            deadline.as_secs(),
            (MAX_WORK - WORK_MARGIN).as_secs(),
            MAX_WORK.as_secs(),
            WORK_MARGIN.as_secs()
        )));
    }
    Ok(deadline)
}

/// A name for this process among the workers (its leases carry it).
fn holder_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Connects to PostgreSQL and Redis, applies migrations, and builds the service.
pub async fn start(platform: &PlatformConfig, config: SyncConfig) -> Result<Started, StartError> {
    metrics::announce();
    mailroom_clients::settings::refuse_plaintext_peers(
        &platform.grpc_tls,
        &[
            (
                "MAILROOM_SYNC__IDENTITY_ENDPOINT",
                &config.identity_endpoint,
            ),
            (
                "MAILROOM_SYNC__MAILBOXES_ENDPOINT",
                &config.mailboxes_endpoint,
            ),
            ("MAILROOM_SYNC__ACCESS_ENDPOINT", &config.access_endpoint),
        ],
    )
    .map_err(|e| StartError::Config(e.to_string()))?;
    let pool = hosting::database(platform, SCHEMA, &MIGRATIONS).await?;
    let redis =
        mailroom_platform::redis::connect_with_tls(&platform.redis_url, &platform.redis_tls)
            .await?;
    let peers = ServicePeers::new(
        &config.identity_endpoint,
        config.service_client_id.clone(),
        config.service_client_secret.clone(),
        Settings::for_service(platform),
    )
    .and_then(|p| peers::Peers::new(&p, &config.mailboxes_endpoint, &config.access_endpoint))?;
    let activity = activity::Activity::new(redis.clone(), config.tiers.clone());
    mailroom_mail::dial::PolicySettings::warn_if_legacy_setting("MAILROOM_SYNC__");
    let engine = engine::Engine::new(
        pool.clone(),
        engine::EngineOptions {
            batch: config.batch.max(1),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms.max(100)),
            io_timeout: Duration::from_millis(config.io_timeout_ms.max(100)),
            policy: mailroom_mail::dial::Policy::from_settings(&config.mail_servers).map_err(
                |e| StartError::Config(e.naming_variable("MAILROOM_SYNC__MAIL_SERVERS__")),
            )?,
        },
    )
    .with_limits(engine::SyncLimits::from_config(&config))
    .with_deadline(sync_deadline(&config)?)
    .with_flag_pass_every(config.flag_pass_every);
    // Page tokens are signed with keys every replica derives from configured secrets (its own
    // setting, or else its credential); none is made up when both are missing (one replica's
    // own key would refuse the others' tokens).
    let mut page_keys = config.page_token_secrets.iter().filter_map(|s| {
        PageTokenKey::from_configured(s.expose_secret().as_bytes(), "sync messages")
    });
    let tokens = match page_keys.next() {
        Some(current) => current.accepting(page_keys),
        None => PageTokenKey::from_configured(
            config.service_client_secret.expose_secret().as_bytes(),
            "sync messages",
        )
        .ok_or_else(|| {
            StartError::Config(
                "MAILROOM_SYNC__PAGE_TOKEN_SECRETS and MAILROOM_SYNC__SERVICE_CLIENT_SECRET are empty: the sync signs its page tokens with a key derived from a configured secret (the same on every replica), its own or else its credential at identity (which it needs anyway)".into(),
            )
        })?,
    };
    let sync = Arc::new(Sync {
        pool: pool.clone(),
        activity: activity.clone(),
        peers: peers.clone(),
        engine: engine.clone(),
        tokens,
        max_body_bytes: config.max_body_bytes,
        body_reads: body_reads::BodyReads::new(
            (config.body_reads_per_user_per_minute > 0).then(|| {
                mailroom_platform::redis::RateLimiter::new(
                    redis.clone(),
                    "sync-body-reads-per-user",
                    config.body_reads_per_user_per_minute,
                    Duration::from_secs(60),
                    // Redis away: each replica counts its own.
                    mailroom_platform::redis::WithoutRedis::FallBackLocal {
                        limit: config.body_reads_per_user_per_minute,
                    },
                )
            }),
            config.body_reads_per_user_at_once,
            connects::limiter(&redis, config.connects_per_server_per_sec),
        ),
    });
    let holder = holder_name();
    let connects = connects::limiter(&redis, config.connects_per_server_per_sec);
    let lease_ttl = Duration::from_millis(config.lease_ttl_ms);
    let idle = (config.role.works() && config.idle_enabled).then(|| idle::IdleWatcher {
        pool: pool.clone(),
        peers: peers.clone(),
        engine: engine.clone(),
        leases: lease::Leases::new(redis.clone(), "mailroom:sync:idle", &holder, lease_ttl),
        redis: redis.clone(),
        options: idle::IdleOptions {
            max_connections: config.idle_max_connections,
            scan: Duration::from_millis(config.idle_scan_ms.max(100)),
            reidle: Duration::from_secs(config.idle_reidle_secs.clamp(10, 29 * 60)),
            connects_per_sec: config.idle_connects_per_sec.max(1),
            ..idle::IdleOptions::default()
        },
        connects: connects.clone(),
    });
    let worker = config.role.works().then(|| worker::Worker {
        pool: pool.clone(),
        engine: engine.clone(),
        leases: lease::Leases::new(redis.clone(), "mailroom:sync:lease", &holder, lease_ttl),
        activity: activity.clone(),
        peers: peers.clone(),
        retry_base: Duration::from_secs(config.retry_base_secs.max(1)),
        retry_cap: Duration::from_secs(config.retry_cap_secs.max(1)),
        stale_after: Duration::from_secs(config.request_timeout_secs.max(1)),
        connects,
    });
    let scheduler = config.role.schedules().then(|| scheduler::Scheduler {
        pool: pool.clone(),
        activity: Some(activity.clone()),
        tick: Duration::from_millis(config.tick_ms.max(10)),
        batch: config.tick_batch.max(1),
        hold: Duration::from_secs(config.request_timeout_secs.max(1)),
        overdue: scheduler::Overdue {
            tiers: config.tiers.clone(),
            grace: Duration::from_secs(config.overdue_grace_secs),
        },
    });
    let partition_guard = config.role.works().then(|| {
        partitions::PartitionGuard::new(
            mailroom_platform::kafka::KafkaSettings::from_config(platform),
            redis.clone(),
            holder.clone(),
        )
    });
    let verifier = TokenVerifier::from_identity(config.identity_endpoint.clone());
    let routes = tonic::service::Routes::new(pb::sync_service_server::SyncServiceServer::new(
        api::SyncApi(sync.clone()),
    ));
    let hosted = Hosted {
        routes,
        service_names: vec!["mailroom.sync.v1.SyncService"],
        public_methods: Vec::new(),
        callers: callers::CALLERS,
    };
    let mut started = Started::new(platform, sync, pool, hosted, verifier)
        .relay(SCHEMA, vec![Topic::SyncEvents, Topic::SyncRequests])
        .consume(
            config.consumer_group.clone(),
            vec![Topic::MailboxesEvents],
            Arc::new(mailbox_events::MailboxEvents),
        );
    if let Some(scheduler) = scheduler {
        scheduler::announce_overdue();
        started = started.task(move |shutdown| scheduler.run(shutdown));
    }
    if let Some(watcher) = idle {
        started = started.task(move |shutdown| watcher.run(shutdown));
    }
    if let Some(guard) = partition_guard {
        started = started.task(move |shutdown| guard.run(shutdown));
    }
    if let Some(worker) = worker {
        // A sync may run long; the consumer must not be thrown out of its group meanwhile:
        // its deadline ends it well within the consumer's limit.
        let max_work = engine.deadline() + WORK_MARGIN;
        started = started.work(
            config.worker_group.clone(),
            vec![Topic::SyncRequests],
            worker::handler(worker),
            config.worker_concurrency.max(1),
            max_work,
        );
    }
    Ok(started)
}
