//! Mailroom's identity service: organisations, users and their three kinds of address,
//! departments and supervisors, sign-in and tokens.
//!
//! - [`domain`]: parsed inputs (addresses, names, passwords) and user states.
//! - [`store`]: rows and the queries several operations share (address claims, locks).
//! - [`users`], [`departments`], [`addresses`], [`signin`], [`resets`]: the operations.
//! - [`keys`], [`passwords`], [`mailer`]: token signing, Argon2id, SMTP.
//! - [`mailbox_events`]: the addresses of connected mailboxes, from the registry's events.
//! - [`invitees`]: INVITED users made, activated and removed for the invitations service,
//!   and the seats counted for them.
//! - [`api`]: the gRPC handlers; [`error`]: what can go wrong and its gRPC code.
//!
//! [`start`] connects, migrates and returns what the `mailroom` binary hosts: the gRPC routes,
//! the token verifier every co-hosted service shares, and the outbox relay.

pub mod addresses;
pub mod api;
pub mod config;
pub mod departments;
pub mod domain;
pub mod error;
pub mod invitees;
pub mod keys;
pub mod mailbox_events;
pub mod mailer;
pub mod passwords;
pub mod resets;
pub mod service;
pub mod signin;
pub mod store;
pub mod users;

use std::sync::Arc;

use mailroom_platform::auth::TokenVerifier;
use mailroom_platform::config::PlatformConfig;
use mailroom_platform::grpc::Hosted;
use mailroom_platform::kafka::{
    KafkaSettings, IDENTITY_EVENTS, INVITATIONS_EVENTS, MAILBOXES_EVENTS, REVOCATIONS,
};
use mailroom_platform::outbox::Relay;
use mailroom_platform::proto::identity::v1 as pb;
use sqlx::migrate::Migrator;
use sqlx::PgPool;

pub use config::IdentityConfig;
pub use service::Identity;

/// Identity's PostgreSQL schema.
pub const SCHEMA: &str = "identity";
/// Identity's gRPC port.
pub const DEFAULT_PORT: u16 = 50051;
/// Identity's metrics port.
pub const DEFAULT_METRICS_PORT: u16 = 9051;

/// Identity's own migrations (the platform's run first).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Methods callable without a token.
pub const PUBLIC_METHODS: &[&str] = &[
    "/mailroom.identity.v1.AuthService/Login",
    "/mailroom.identity.v1.AuthService/RefreshToken",
    "/mailroom.identity.v1.AuthService/RevokeRefreshToken",
    "/mailroom.identity.v1.AuthService/IssueServiceToken",
    "/mailroom.identity.v1.AuthService/GetJwks",
    "/mailroom.identity.v1.AuthService/RequestPasswordReset",
    "/mailroom.identity.v1.AuthService/ResetPassword",
];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] mailroom_platform::db::DbError),
    #[error(transparent)]
    Redis(#[from] mailroom_platform::redis::RedisError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("identity could not start: {0}")]
    Identity(#[from] error::IdentityError),
    #[error("token verifier could not start: {0}")]
    Verifier(#[from] mailroom_platform::auth::AuthError),
}

/// What a started identity service hands to the process hosting it.
pub struct Started {
    pub identity: Arc<Identity>,
    pub pool: PgPool,
    pub hosted: Hosted,
    /// Verifies tokens with identity's own keys (no network hop when co-hosted).
    pub verifier: TokenVerifier,
    pub relay: Relay,
    kafka: KafkaSettings,
    consumer_group: String,
}

impl Started {
    /// Runs the outbox relay and the mailbox-address mirror in the background and serves
    /// gRPC on `listener` until `shutdown`; the rest stop with it.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        platform: &PlatformConfig,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<(), mailroom_platform::grpc::ServeError> {
        let mut background = tokio::task::JoinSet::new();
        background.spawn(self.relay.run(shutdown.clone()));
        background.spawn(mailroom_platform::consumer::run_until_shutdown(
            self.kafka,
            self.consumer_group,
            self.pool,
            vec![MAILBOXES_EVENTS, INVITATIONS_EVENTS],
            Arc::new(invitees::Followed),
            shutdown.clone(),
        ));
        mailroom_platform::grpc::serve_with_background(
            background,
            self.hosted,
            listener,
            self.verifier,
            platform,
            shutdown,
        )
        .await
    }
}

/// Connects to PostgreSQL and Redis, applies migrations, and builds the service.
pub async fn start(
    platform: &PlatformConfig,
    config: IdentityConfig,
) -> Result<Started, StartError> {
    let pool =
        mailroom_platform::db::connect(&platform.database_url, SCHEMA, platform.db_max_connections)
            .await?;
    mailroom_platform::db::migrate(&pool, SCHEMA, &MIGRATIONS).await?;
    let redis = mailroom_platform::redis::connect(&platform.redis_url).await?;
    let keys = keys::KeyRing::from_seeds(&config.signing_keys)?;
    let verifier = TokenVerifier::from_jwks(&keys.jwks().keys)?;
    let identity = Arc::new(Identity::new(
        pool.clone(),
        redis,
        keys,
        config,
        verifier.revocations().clone(),
    )?);
    let routes = tonic::service::Routes::new(
        pb::identity_service_server::IdentityServiceServer::new(api::IdentityApi(identity.clone())),
    )
    .add_service(pb::auth_service_server::AuthServiceServer::new(
        api::AuthApi(identity.clone()),
    ));
    let hosted = Hosted {
        routes,
        service_names: vec![
            "mailroom.identity.v1.IdentityService",
            "mailroom.identity.v1.AuthService",
        ],
        public_methods: PUBLIC_METHODS.to_vec(),
    };
    let kafka = KafkaSettings::from_config(platform);
    let relay = Relay::new(
        pool.clone(),
        SCHEMA,
        kafka.clone(),
        vec![IDENTITY_EVENTS, REVOCATIONS],
    );
    Ok(Started {
        consumer_group: identity.config.consumer_group.clone(),
        identity,
        pool,
        hosted,
        verifier,
        relay,
        kafka,
    })
}
