//! Mailroom's invitations: how people get into the company account — invited by email (mail
//! sent by Mailroom, or composed for the inviter's own mail client), registered directly by an
//! admin, or joining through a quick-registration link — and the status of each until it is
//! accepted, expires, is revoked, fails or is rejected.
//!
//! A tour:
//! - [`domain`]: pasted address lists, names, locales, messages parsed into types that cannot
//!   hold a bad value; what one admission is made of; the states an invitation moves through.
//! - [`admission`]: how every way in becomes invitations — rows written `admitting`, identity
//!   asked once for the whole batch (it claims the addresses and counts the seats under one
//!   lock), then completed or removed.
//! - The use cases, one a file, each an `impl` block on [`Invitations`] (the service value
//!   and its permission and rate-limit checks live in [`service`]): [`invite`] (by email, or a
//!   direct registration), [`links`] (quick-registration links), [`lifecycle`] (preview and
//!   accept — the link's secret is the credential — resend, revoke, approve, reject, delete),
//!   [`list`] (the filtered, paged list), [`seats`], [`wording`] (the organisation's wording
//!   of the mail, and the message for the inviter's own mail client).
//! - [`templates`]: the shipped English and Russian mail, placeholders, `mailto:` (RFC 6068).
//! - [`delivery`]: the mail queue (rows of `invitations`) sent over SMTP through [`mailer`]
//!   (the mail layer's pooled sender), retries; [`expiry`]: expiry applied without anyone
//!   asking, and half-made invitations finished.
//! - [`token`]: link secrets (256-bit, stored as SHA-256, compared in constant time);
//!   [`client_network`]: the network a public call comes from, for the registration limits.
//! - [`identity_events`]: invitees activated, dismissed or removed in identity, applied to
//!   their open invitations.
//! - [`store`]: all of the SQL (the tables, and one module per concern: admission, links, the
//!   list's query, the mail queue, the sweeper, templates).
//! - [`events`]: what is published on `mailroom.invitations.events`; [`api`]: the gRPC
//!   handlers and the wire conversions (ids parsed there, typed from then on: `OrgId`,
//!   `UserId`, `InvitationId`, …); [`error`]: what can go wrong and its gRPC code;
//!   [`config`]: the `invitations` section.
//! - identity and access control are called through `mailroom_clients`, as this service
//!   (reads of the caller's own profile with the caller's token).
//!
//! Seats are identity's to count (they are its user rows); an expired, revoked or rejected
//! invitation's event makes identity remove the INVITED user, which frees the seat. A
//! registration through a link makes no user and holds no seat until its address is
//! confirmed ([`links`]).

pub mod admission;
pub mod api;
pub mod callers;
pub mod client_network;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod events;
pub mod expiry;
pub mod gather;
pub mod identity_events;
pub mod invite;
pub mod lifecycle;
pub mod links;
pub mod list;
pub mod mailer;
pub mod seats;
pub mod service;
pub mod store;
pub mod templates;
pub mod token;
pub mod wording;

use std::sync::Arc;
use std::time::Duration;

use mailroom_clients::{ServicePeers, Settings};
use mailroom_platform::auth::TokenVerifier;
use mailroom_platform::client_address::{InvalidTrustedProxy, TrustedProxies};
use mailroom_platform::config::PlatformConfig;
use mailroom_platform::grpc::Hosted;
use mailroom_platform::hosting;
use mailroom_platform::kafka::Topic;
use mailroom_platform::proto::invitations::v1 as pb;
use mailroom_platform::redis::{RateLimiter, WithoutRedis};
use sqlx::migrate::Migrator;

pub use config::InvitationsConfig;
pub use service::Invitations;

/// The service's PostgreSQL schema.
pub const SCHEMA: &str = "invitations";
/// The service's gRPC port.
pub const DEFAULT_PORT: u16 = 50052;
/// The service's metrics port.
pub const DEFAULT_METRICS_PORT: u16 = 9052;

/// Methods that need no token: the link's secret is the credential.
pub const PUBLIC_METHODS: &[&str] = &[
    "/mailroom.invitations.v1.InvitationService/PreviewInvitation",
    "/mailroom.invitations.v1.InvitationService/AcceptInvitation",
    "/mailroom.invitations.v1.InvitationService/RegisterWithLink",
    "/mailroom.invitations.v1.InvitationService/PreviewRegistrationLink",
];

/// The service's own migrations (the platform's run first).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] mailroom_platform::db::DbError),
    #[error("invitation mail: {0}; check MAILROOM_INVITATIONS__SMTP__*")]
    Mail(#[from] mailer::MailError),
    #[error(transparent)]
    Peers(#[from] mailroom_clients::ChannelError),
    #[error(transparent)]
    PlaintextPeer(#[from] mailroom_clients::settings::PlaintextPeer),
    #[error(transparent)]
    Redis(#[from] mailroom_platform::redis::RedisError),
    #[error("MAILROOM_INVITATIONS__TRUSTED_PROXIES: {0}")]
    TrustedProxies(#[from] InvalidTrustedProxy),
}

/// A started service, for the process hosting it: it verifies tokens with identity's keys,
/// fetched over gRPC, and runs the outbox relay, the mail sender, the sweeper and the consumer
/// of identity's events beside its gRPC server.
pub type Started = hosting::Started<Invitations>;

/// Connects to PostgreSQL (and Redis for rate limits), applies migrations, and builds the
/// service.
pub async fn start(
    platform: &PlatformConfig,
    mut config: InvitationsConfig,
) -> Result<Started, StartError> {
    config.resolve_links(platform.public_base());
    mailroom_platform::metrics::announce(&[delivery::MAIL_SENT], &[], &[]);
    let trusted_proxies = TrustedProxies::parse(&config.trusted_proxies)?;
    trusted_proxies.announce("invitations", "MAILROOM_INVITATIONS__TRUSTED_PROXIES");
    let mailer = mailer::Mailer::new(&config.smtp)?;
    mailroom_clients::settings::refuse_plaintext_peers(
        &platform.grpc_tls,
        &[
            (
                "MAILROOM_INVITATIONS__IDENTITY_ENDPOINT",
                &config.identity_endpoint,
            ),
            (
                "MAILROOM_INVITATIONS__ACCESS_ENDPOINT",
                &config.access_endpoint,
            ),
        ],
    )?;
    let pool = hosting::database(platform, SCHEMA, &MIGRATIONS).await?;
    let peers = ServicePeers::new(
        &config.identity_endpoint,
        config.service_client_id.clone(),
        config.service_client_secret.clone(),
        Settings::for_service(platform),
    )?;
    let identity = peers.identity();
    let access = peers.access(&config.access_endpoint)?;
    let hour = Duration::from_secs(3600);
    // Redis is dialled when first needed and again after an outage. Meanwhile invitations
    // (authenticated) are counted per replica, and registrations through a public link are
    // refused: they never run unlimited.
    let redis =
        mailroom_platform::redis::RedisLink::with_tls(&platform.redis_url, &platform.redis_tls)?;
    let per_hour = |prefix: &'static str, limit: u32, without_redis| {
        RateLimiter::new(redis.clone(), prefix, limit.max(1), hour, without_redis)
    };
    let local = |limit: u32| WithoutRedis::FallBackLocal {
        limit: limit.max(1),
    };
    let limits = Some(service::Limits {
        per_inviter: per_hour(
            "invitations-per-inviter",
            config.invites_per_inviter_per_hour,
            local(config.invites_per_inviter_per_hour),
        ),
        per_org: per_hour(
            "invitations-per-org",
            config.invites_per_org_per_hour,
            local(config.invites_per_org_per_hour),
        ),
        per_link: per_hour(
            "registrations-per-link",
            config.registrations_per_link_per_hour,
            WithoutRedis::FailClosed,
        ),
        per_link_network: per_hour(
            "registrations-per-link-network",
            config.registrations_per_link_per_network_per_hour,
            WithoutRedis::FailClosed,
        ),
        per_network: per_hour(
            "registrations-per-network",
            config.registrations_per_network_per_hour,
            WithoutRedis::FailClosed,
        ),
    });
    let verifier = TokenVerifier::from_identity(config.identity_endpoint.clone());
    let invitations = Arc::new(Invitations {
        pool: pool.clone(),
        identity,
        access,
        config,
        limits,
        trusted_proxies,
        queued: Arc::new(tokio::sync::Notify::new()),
        acceptance_hold: (platform.request_timeout() * 3).max(Duration::from_secs(10)),
    });
    let routes =
        tonic::service::Routes::new(pb::invitation_service_server::InvitationServiceServer::new(
            api::InvitationApi(invitations.clone()),
        ));
    let hosted = Hosted {
        routes,
        service_names: vec!["mailroom.invitations.v1.InvitationService"],
        public_methods: PUBLIC_METHODS.to_vec(),
        callers: callers::CALLERS,
    };
    let sender = delivery::Sender {
        invitations: invitations.clone(),
        mailer,
    };
    let swept = invitations.clone();
    let consumer_group = invitations.config.consumer_group.clone();
    Ok(Started::new(platform, invitations, pool, hosted, verifier)
        .relay(SCHEMA, vec![Topic::InvitationsEvents])
        .task(move |shutdown| sender.run(shutdown))
        .task(move |shutdown| expiry::run(swept, shutdown))
        .consume(
            consumer_group,
            vec![Topic::IdentityEvents],
            Arc::new(identity_events::IdentityEvents),
        ))
}
