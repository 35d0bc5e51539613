//! Mailroom's mailbox registry: the organisation's connected IMAP/SMTP mailboxes — the
//! "Manage user mailboxes" screen and the API internal services (a CRM) call.
//!
//! A tour:
//! - [`domain`]: a mailbox's inputs parsed into types that cannot hold a bad value (ids are
//!   `mailroom_types`' typed ids, parsed from the wire once).
//! - [`service`]: the [`Mailboxes`] value the operations hang off, the caller, and who may
//!   do what (access control's answer, see [`scope`]); the operations one use case a file:
//!   [`connect`] (one or many, with real login checks), [`edit`] (update, transfer,
//!   disconnect, sync now), [`credentials`] (the sync service's logins, re-sealing after a
//!   key rotation) and [`listing`] (get, the list, saved list views).
//! - [`probe`]: the real IMAP and SMTP logins that check settings before they are saved, and
//!   which destinations the registry may connect to at all (the mail layer's, worded here).
//! - [`scope`]: access control's answer to "where does this caller's permission reach",
//!   applied inside the registry's own SQL.
//! - [`list`]: the list's filter (AIP-160, typed), sort and page cursor as parsed inputs;
//!   [`view`]: the columns a caller chose, filled from a row, and their saved list view.
//! - [`store`]: all of the registry's SQL — the tables in `store`, the list's query (filter,
//!   scope, keyset pages, the total) in [`store::list_query`].
//! - [`api`]: the gRPC handlers; [`error`]: what can go wrong and its gRPC code (the one
//!   mapping).
//! - [`events`]: what the registry publishes (mailbox events, sync requests);
//!   [`sync_events`]: the one consumer, routing the counters and states the sync service
//!   reports and, to [`identity_events`], owners' names and states from identity.
//!
//! Passwords are sealed with `platform::sealed` (AES-256-GCM, key id beside each value,
//! bound to the mailbox's id) and leave the service only towards the mail server during a
//! login check. No response, event or log line carries one.

pub mod api;
pub mod callers;
pub mod config;
pub mod connect;
pub mod credentials;
pub mod domain;
pub mod edit;
pub mod error;
pub mod events;
pub mod identity_events;
pub mod list;
pub mod listing;
pub mod probe;
pub mod scope;
pub mod service;
pub mod store;
pub mod sync_events;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use mailroom_aip::token::PageTokenKey;
use mailroom_clients::{ServicePeers, Settings};
use mailroom_platform::auth::TokenVerifier;
use mailroom_platform::config::PlatformConfig;
use mailroom_platform::grpc::Hosted;
use mailroom_platform::hosting;
use mailroom_platform::kafka::Topic;
use mailroom_platform::proto::mailboxes::v1 as pb;
use mailroom_platform::sealed::SealingKeys;
use sqlx::migrate::Migrator;

pub use config::MailboxesConfig;
pub use service::Mailboxes;

/// The registry's PostgreSQL schema.
pub const SCHEMA: &str = "mailboxes";
/// The registry's gRPC port.
pub const DEFAULT_PORT: u16 = 50053;
/// The registry's metrics port.
pub const DEFAULT_METRICS_PORT: u16 = 9053;

/// The registry's own migrations (the platform's run first).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] mailroom_platform::db::DbError),
    #[error("mailbox sealing keys: {0}; set MAILROOM_MAILBOXES__SEALING_KEYS (generate one with `mailroom keygen --sealing <id>`)")]
    Keys(#[from] mailroom_platform::sealed::SealError),
    #[error(transparent)]
    Peers(#[from] mailroom_clients::ChannelError),
    #[error("{0}")]
    Config(String),
}

/// A started registry, for the process hosting it: it verifies tokens with identity's keys,
/// fetched over gRPC (a process hosting identity too may use identity's verifier instead),
/// and runs the outbox relay and the consumer of the sync's and identity's events beside its
/// gRPC server.
pub type Started = hosting::Started<Mailboxes>;

/// Connects to PostgreSQL, applies migrations, and builds the service.
pub async fn start(
    platform: &PlatformConfig,
    config: MailboxesConfig,
) -> Result<Started, StartError> {
    let keys = SealingKeys::from_config(&config.sealing_keys)?;
    let token_secret = keys
        .derive_secret("mailboxes page tokens")
        .ok_or_else(|| StartError::Config("no sealing key configured".into()))?;
    mailroom_clients::settings::refuse_plaintext_peers(
        &platform.grpc_tls,
        &[
            (
                "MAILROOM_MAILBOXES__IDENTITY_ENDPOINT",
                &config.identity_endpoint,
            ),
            (
                "MAILROOM_MAILBOXES__ACCESS_ENDPOINT",
                &config.access_endpoint,
            ),
        ],
    )
    .map_err(|e| StartError::Config(e.to_string()))?;
    let pool = hosting::database(platform, SCHEMA, &MIGRATIONS).await?;
    let access = ServicePeers::new(
        &config.identity_endpoint,
        config.service_client_id.clone(),
        config.service_client_secret.clone(),
        Settings::for_service(platform),
    )
    .and_then(|peers| peers.access(&config.access_endpoint))?;
    // Redis is dialled when first needed and again after an outage; meanwhile each replica
    // counts its own callers (these calls are authenticated).
    let redis =
        mailroom_platform::redis::RedisLink::with_tls(&platform.redis_url, &platform.redis_tls)
            .map_err(|e| StartError::Config(e.to_string()))?;
    let per_minute = |prefix: &'static str, limit: u32| {
        let limit = limit.max(1);
        Some(mailroom_platform::redis::RateLimiter::new(
            redis.clone(),
            prefix,
            limit,
            Duration::from_secs(60),
            mailroom_platform::redis::WithoutRedis::FallBackLocal { limit },
        ))
    };
    let limiter = per_minute("mailbox-login-checks", config.login_checks_per_minute);
    let sync_now_limiter = per_minute("mailbox-sync-now", config.sync_now_per_minute);
    let prober = probe::Prober::new(
        Duration::from_millis(config.login_timeout_ms.max(100)),
        {
            mailroom_mail::dial::PolicySettings::warn_if_legacy_setting("MAILROOM_MAILBOXES__");
            mailroom_mail::dial::Policy::from_settings(&config.mail_servers)
        }
        .map_err(|e| StartError::Config(e.naming_variable("MAILROOM_MAILBOXES__MAIL_SERVERS__")))?,
    );
    let verifier = TokenVerifier::from_identity(config.identity_endpoint.clone());
    let mailboxes = Arc::new(Mailboxes {
        pool: pool.clone(),
        access,
        prober,
        keys,
        tokens: PageTokenKey::new(&token_secret),
        limiter,
        sync_now_limiter,
        login_permits: Arc::new(tokio::sync::Semaphore::new(config.login_concurrency.max(1))),
        // A single check waits for a slot no longer than a few checks take.
        login_queue_wait: Duration::from_millis(config.login_timeout_ms.max(100)) * 3,
        max_mailboxes_per_org: config.max_mailboxes_per_org,
        sync_now_interval: Duration::from_secs(config.sync_now_interval_secs),
    });
    let routes = tonic::service::Routes::new(
        pb::mailbox_service_server::MailboxServiceServer::new(api::MailboxApi(mailboxes.clone())),
    );
    let hosted = Hosted {
        routes,
        service_names: vec!["mailroom.mailboxes.v1.MailboxService"],
        public_methods: Vec::new(),
        callers: callers::CALLERS,
    };
    Ok(Started::new(platform, mailboxes, pool, hosted, verifier)
        .relay(SCHEMA, vec![Topic::MailboxesEvents, Topic::SyncRequests])
        .consume(
            config.consumer_group,
            vec![Topic::IdentityEvents, Topic::SyncEvents],
            Arc::new(sync_events::RegistryEvents),
        ))
}
