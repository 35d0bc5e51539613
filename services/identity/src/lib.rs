//! Mailroom's identity service: organisations, users and their three kinds of address,
//! departments and supervisors, sign-in and tokens.
//!
//! A tour, from the wire inwards:
//! - [`api`]: the gRPC handlers — read the caller, run one use case, convert the answer to the
//!   wire; [`error`]: what can go wrong and its gRPC code (the one mapping).
//! - [`service`]: the service's state ([`Identity`]) and what every use case starts with —
//!   the organisation a call is scoped to, the admin check, ids parsed from the wire once into
//!   `OrgId`, `UserId`, `DepartmentId`.
//! - [`domain`]: parsed inputs (addresses, names, passwords) and user states.
//! - The use cases, one file each: [`orgs`]; [`users`] (create, edit, dismiss and rehire, the
//!   directory listing); [`departments`]; [`addresses`] (usage, transfers, login changes);
//!   [`signin`] (and [`signin_limits`]: who may try how often); [`resets`]; [`invitees`]
//!   (INVITED users admitted and activated for the invitations service).
//! - [`seats`]: the seat rule, taken under the organisation's lock by every path that adds a
//!   person.
//! - [`store`]: all the SQL, by table group ([`store::directory`] is the listing's query);
//!   [`user_cache`]: GetUser's read model, kept current by PostgreSQL's notifications.
//! - [`events`]: what identity emits through the outbox; [`revocation`]: ending a user's
//!   sessions everywhere.
//! - What it consumes, one file per topic: [`mailbox_events`] (`mailroom.mailboxes.events`:
//!   the addresses of connected mailboxes), [`invitation_events`]
//!   (`mailroom.invitations.events`: ended invitations remove their INVITED user).
//! - [`keys`], [`passwords`], [`secrets`], [`mailer`]: token signing, Argon2id (through one
//!   gate that bounds the runs at once), bearer secrets, SMTP; [`config`]: the `identity`
//!   configuration section; `migrations/`: the schema.
//!
//! [`start`] connects, migrates and returns what the `mailroom` binary hosts: the gRPC routes,
//! the token verifier every co-hosted service shares, the outbox relay and the users listener.

pub mod addresses;
pub mod api;
pub mod callers;
pub mod config;
pub mod departments;
pub mod domain;
pub mod error;
pub mod events;
pub mod invitation_events;
pub mod invitees;
pub mod keys;
pub mod mailbox_events;
pub mod mailer;
pub mod orgs;
pub mod passwords;
pub mod resets;
pub mod revocation;
pub mod seats;
pub mod secrets;
pub mod service;
pub mod signin;
pub mod signin_limits;
pub mod store;
pub mod user_cache;
pub mod users;

use std::sync::Arc;

use async_trait::async_trait;
use mailroom_platform::auth::TokenVerifier;
use mailroom_platform::config::PlatformConfig;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::grpc::Hosted;
use mailroom_platform::hosting;
use mailroom_platform::kafka::Topic;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::identity::v1 as pb;
use sqlx::migrate::Migrator;
use sqlx::PgConnection;

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

/// A started identity service, for the process hosting it: it verifies tokens with its own
/// keys (no network hop; services co-hosted with it share this verifier), and runs the outbox
/// relay and the consumer of what identity follows beside its gRPC server.
pub type Started = hosting::Started<Identity>;

/// Everything identity follows, on one consumer: the registry's mailbox addresses and the
/// invitations' ends.
pub struct Followed;

#[async_trait]
impl EventHandler for Followed {
    fn wants(&self, event: &ev::Envelope) -> bool {
        mailbox_events::MailboxEvents.wants(event)
            || invitation_events::InvitationEvents.wants(event)
    }

    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        mailbox_events::MailboxEvents.handle(tx, event).await?;
        invitation_events::InvitationEvents.handle(tx, event).await
    }
}

/// Connects to PostgreSQL and Redis, applies migrations, and builds the service.
pub async fn start(
    platform: &PlatformConfig,
    mut config: IdentityConfig,
) -> Result<Started, StartError> {
    config.resolve_links(platform.public_base());
    let pool = hosting::database(platform, SCHEMA, &MIGRATIONS).await?;
    // Dialled on first use and again after an outage: a start without Redis does not leave
    // sign-in unlimited (it is refused until Redis answers).
    let redis =
        mailroom_platform::redis::RedisLink::with_tls(&platform.redis_url, &platform.redis_tls)?;
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
        callers: callers::CALLERS,
    };
    let consumer_group = identity.config.consumer_group.clone();
    user_cache::announce_metrics();
    let (cache, listener_pool) = (identity.user_cache(), pool.clone());
    Ok(Started::new(platform, identity, pool, hosted, verifier)
        .named("users listener (GetUser's read model)", move |shutdown| {
            user_cache::listen(listener_pool, SCHEMA.to_owned(), cache, shutdown)
        })
        .relay(SCHEMA, vec![Topic::IdentityEvents, Topic::Revocations])
        .consume(
            consumer_group,
            vec![Topic::MailboxesEvents, Topic::InvitationsEvents],
            Arc::new(Followed),
        ))
}
