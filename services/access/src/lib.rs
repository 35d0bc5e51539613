//! Mailroom's access control: who may see, change and read which mailbox, and who may invite.
//!
//! A tour:
//! - [`model`]: relationships, roles, their grants and scopes (the permissions themselves
//!   are `mailroom_types::Permission`, shared by every service).
//! - [`graph`]: one organisation's relationships held in memory with the indexes that make a
//!   check a few hash lookups and a walk up the department tree, and a lookup a walk down it.
//! - [`store`]: all of access's SQL — the tables, the [`store::Writer`] every change goes
//!   through, and the ordered [`store::changelog`].
//! - [`replica`]: this process's copy of every graph, loaded at start and kept current from
//!   the changelog, with waits for a revision (read-your-writes across replicas).
//! - [`service`]: the [`Access`] value the operations hang off, and who may ask about whom;
//!   the operations one use case a file: [`check`], [`lookup`], [`write`](mod@write),
//!   [`list`] (the stored relationships, for admins), [`roles`] (the organisation's roles and
//!   their assignments) and [`settings`] (deprecated: it points to roles).
//! - [`wire`]: the API's names, parsed into the model once (ids typed there) and written
//!   back; [`api`]: the gRPC handlers; [`error`]: what can go wrong and its gRPC code.
//! - [`events`]: what access publishes, and the one consumer handler that routes
//!   [`identity_events`] (admins, heads, parents, membership and dismissals from identity) and
//!   [`mailbox_events`] (mailbox owners from the registry, the one writer of them).
//!
//! Why a purpose-built graph rather than a library (surveyed 2026-11): `cedar-policy` checks
//! quickly but its reverse queries (`query_resource`, experimental `tpe` feature) evaluate
//! every entity of the type, too slow over 200k mailboxes; `casbin` has role-level lookups
//! only and enforce time grows with the rule count; `oso`/`polar` is deprecated; the young
//! Zanzibar crates (`simple-zanzibar`, `rebacdb`, `oxify-authz`) are unproven at this size or
//! lack lookups; SpiceDB/OpenFGA clients add a network hop per check. This model is small
//! and fixed, so indexes in both directions answer checks in microseconds and lookups in time
//! proportional to their answer.

pub mod api;
pub mod callers;
pub mod check;
pub mod config;
pub mod error;
pub mod events;
pub mod graph;
pub mod identity_events;
pub mod legacy;
pub mod list;
pub mod lookup;
pub mod mailbox_events;
pub mod model;
pub mod pages;
pub mod replica;
pub mod roles;
pub mod service;
pub mod settings;
pub mod store;
pub mod wire;
pub mod write;

use std::sync::Arc;
use std::time::Duration;

use mailroom_platform::auth::TokenVerifier;
use mailroom_platform::config::PlatformConfig;
use mailroom_platform::grpc::Hosted;
use mailroom_platform::hosting;
use mailroom_platform::kafka::Topic;
use mailroom_platform::proto::access::v1 as pb;
use sqlx::migrate::Migrator;

pub use config::AccessConfig;
pub use graph::{Explanation, HeldRole, MailboxScope, OrgGraph, RoleGrant};
pub use model::{Audience, ReadAccessGrants, Relationship, Settings};
pub use replica::Replica;
pub use service::Access;

/// Access control's PostgreSQL schema.
pub const SCHEMA: &str = "access";
/// Access control's gRPC port.
pub const DEFAULT_PORT: u16 = 50055;
/// Access control's metrics port.
pub const DEFAULT_METRICS_PORT: u16 = 9055;

/// Access control's own migrations (the platform's run first).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] mailroom_platform::db::DbError),
    #[error("access could not load its relationships: {0}")]
    Load(#[from] error::AccessError),
}

/// A started access service, for the process hosting it: it verifies tokens with identity's
/// keys, fetched over gRPC (a process hosting identity too may use identity's verifier
/// instead), and runs the changelog tailer, the outbox relay and the consumer of identity's
/// and the registry's events beside its gRPC server.
pub type Started = hosting::Started<Access>;

/// Connects to PostgreSQL, applies migrations, gives every organisation lacking them its
/// default roles ([`store::backfill_default_roles`]), loads every graph, and builds the
/// service.
pub async fn start(platform: &PlatformConfig, config: AccessConfig) -> Result<Started, StartError> {
    let pool = hosting::database(platform, SCHEMA, &MIGRATIONS).await?;
    // At zero from the start, so the alert on skipped changelog records has a series to read.
    mailroom_platform::metrics::announce(
        &["mailroom_access_changelog_records_skipped_total"],
        &[],
        &["mailroom_access_refresh_seconds"],
    );
    // Once at start, before loading: organisations an older pod first wrote to during a
    // rolling upgrade get their default roles. Not fatal: each gets them at its next write.
    match store::backfill_default_roles(&pool).await {
        Ok(0) => {}
        Ok(given) => tracing::info!(
            organisations = given,
            "gave organisations without roles their default roles"
        ),
        Err(err) => tracing::error!(
            %err,
            "could not give organisations without roles their default roles; each gets them at its next write"
        ),
    }
    let replica = Arc::new(
        Replica::load(
            pool.clone(),
            Duration::from_millis(config.consistency_wait_ms),
            Duration::from_secs(config.changelog_retention_secs),
            replica::Tailing {
                poll: Duration::from_millis(config.changelog_poll_ms.max(10)),
                notifications: config.changelog_notifications,
            },
        )
        .await?,
    );
    let verifier = TokenVerifier::from_identity(config.identity_endpoint.clone());
    let access = Arc::new(
        Access::new(pool.clone(), replica.clone()).with_lookup_cache(
            pages::LookupCache::new(
                config.lookup_cache_ids,
                Duration::from_secs(config.lookup_cache_secs),
            )
            .limits(pages::MAX_ENTRIES, config.lookup_cache_min_ids),
        ),
    );
    let routes = tonic::service::Routes::new(pb::access_service_server::AccessServiceServer::new(
        api::AccessApi(access.clone()),
    ));
    let hosted = Hosted {
        routes,
        service_names: vec!["mailroom.access.v1.AccessService"],
        public_methods: Vec::new(),
        callers: callers::CALLERS,
    };
    Ok(Started::new(platform, access, pool, hosted, verifier)
        .task(move |shutdown| replica.run(shutdown))
        .relay(SCHEMA, vec![Topic::AccessEvents])
        // Identity's and the registry's events through one consumer.
        .consume(
            config.consumer_group,
            vec![Topic::IdentityEvents, Topic::MailboxesEvents],
            Arc::new(events::AccessEvents),
        ))
}
