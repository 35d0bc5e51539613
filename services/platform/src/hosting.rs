//! One floor plan for hosting a service: what a service's `start` hands to the process that
//! hosts it, and how that runs.
//!
//! A service's `start` opens its [`database`], builds its own value and its gRPC routes, and
//! returns a [`Started`] with its background work added: [`Started::relay`] (its outbox to
//! Kafka), [`Started::consume`] (an event mirror: exactly-once effects, one record at a time),
//! [`Started::work`] (work taken off a topic, many records in flight) and [`Started::task`]
//! (anything else that runs until shutdown). [`Started::run`] spawns all of it and serves
//! gRPC until shutdown. Whenever serving ends, for whatever reason, the shutdown is cancelled
//! and every background task is waited for, [`crate::shutdown::BACKGROUND_GRACE`] at most: one
//! still running then is named in the log and abandoned (aborted), so a stopped service leaves
//! nothing running and its process exits in bounded time ([`crate::shutdown::limit`]). Each
//! background task counts as running under its name ([`crate::shutdown::track`]) until it ends.
//!
//! Every service also serves the operator's event operations over its own schema (its dead
//! letters and parked outbox events, [`crate::event_ops`]): [`Started::new`] adds them to its
//! routes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenVerifier;
use crate::config::PlatformConfig;
use crate::consumer::concurrent::WorkHandler;
use crate::consumer::EventHandler;
use crate::db::DbError;
use crate::event_ops::EventOps;
use crate::grpc::{Hosted, ServeError};
use crate::kafka::{KafkaSettings, Topic};
use crate::outbox::Relay;

/// Connects to the service's `schema` and applies its migrations (the platform's first); with
/// `MAILROOM_MIGRATE_ON_START=false` it applies none and waits instead until the schema is one
/// this binary can run on ([`crate::schema`]).
pub async fn database(
    platform: &PlatformConfig,
    schema: &str,
    migrations: &Migrator,
) -> Result<PgPool, DbError> {
    let pool = crate::db::connect_with_tls(
        &platform.database_url,
        &platform.database_tls,
        schema,
        platform.db_max_connections,
    )
    .await?;
    if platform.migrate_on_start {
        crate::db::migrate(&pool, schema, migrations).await?;
        // Applied or not, an unknown contract migration means this binary must not run here.
        crate::schema::check(&pool, schema, migrations).await?;
    } else {
        // Only the migrate Job migrates: wait (not ready) until it has applied what this
        // version needs, or refuse a schema contracted past it.
        crate::schema::wait_until_compatible(&pool, schema, migrations).await?;
    }
    Ok(pool)
}

/// Background work, started with the shutdown it watches.
type Task = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// A started service `S`, ready to be hosted: its value, its routes, the token verifier it
/// would use on its own, and its background work (not running until [`Started::run`]).
pub struct Started<S> {
    /// The service's own value, for a host that calls it in process (`mailroom dev`).
    pub service: Arc<S>,
    /// The service's database pool (its own schema).
    pub pool: PgPool,
    /// Verifies tokens as the service does on its own (identity with its own keys, every
    /// other service with identity's, fetched over gRPC). A process hosting identity too may
    /// pass identity's to [`Started::run`] instead.
    pub verifier: TokenVerifier,
    hosted: Hosted,
    kafka: KafkaSettings,
    outbox_max_attempts: u32,
    consumers: crate::consumer::Options,
    /// Each with the name it is known by in logs.
    background: Vec<(String, Task)>,
    /// Whether the service is ready (not until it serves; see [`crate::readiness`]).
    readiness: crate::readiness::ServiceReadiness,
}

impl<S> Started<S> {
    /// A service serving `hosted`, and the operator's event operations over `pool`, with no
    /// background work yet but its pool's gauges ([`crate::pool_metrics`]).
    pub fn new(
        platform: &PlatformConfig,
        service: Arc<S>,
        pool: PgPool,
        mut hosted: Hosted,
        verifier: TokenVerifier,
    ) -> Self {
        verifier.refresh_keys_with(crate::auth::KeyRefresh::from_config(platform));
        // Checked when the configuration was loaded; a file gone since leaves the public roots
        // only, so an https identity with a private CA is refused, not trusted blindly.
        match platform.grpc_tls.client_config() {
            Ok(tls) => verifier.use_grpc_tls(tls),
            Err(err) => tracing::error!(%err, "the gRPC TLS files cannot be read again"),
        }
        let ops = EventOps::new(pool.clone(), hosted.callers.service);
        hosted.routes = hosted.routes.add_service(ops.into_server());
        hosted.service_names.push(crate::event_ops::SERVICE_NAME);
        let pool_metrics = crate::pool_metrics::exporter(pool.clone(), hosted.callers.service);
        // Not ready until it serves and its database has answered once since start (later
        // outages of the database or the broker set mailroom_dependency_up, not readiness).
        let readiness = crate::readiness::register(hosted.callers.service);
        readiness.block(crate::readiness::Condition::Starting, "not serving yet");
        let dependencies: (String, Task) = {
            let (readiness, pool) = (readiness.clone(), pool.clone());
            let kafka = KafkaSettings::from_config(platform);
            let interval = platform.readiness_interval();
            (
                format!("readiness checks of {}", hosted.callers.service),
                Box::new(move |shutdown| {
                    Box::pin(crate::readiness::watch_dependencies(
                        readiness, pool, kafka, interval, shutdown,
                    ))
                }),
            )
        };
        Self {
            service,
            pool,
            verifier,
            hosted,
            kafka: KafkaSettings::from_config(platform),
            outbox_max_attempts: platform.outbox_max_attempts,
            consumers: crate::consumer::Options::from_config(platform),
            background: vec![pool_metrics, dependencies],
            readiness,
        }
    }

    /// Adds the outbox relay of `schema`, publishing its rows for `topics`.
    pub fn relay(self, schema: &str, topics: Vec<Topic>) -> Self {
        let relay = Relay::new(self.pool.clone(), schema, self.kafka.clone(), topics)
            .max_attempts(self.outbox_max_attempts);
        self.named(format!("outbox relay of {schema}"), move |shutdown| {
            relay.run(shutdown)
        })
    }

    /// Adds a consumer of `topics` in consumer `group`, applying each event with `handler`
    /// in a transaction of the service's database (see [`crate::consumer`]).
    pub fn consume(
        self,
        group: impl Into<String>,
        topics: Vec<Topic>,
        handler: Arc<dyn EventHandler>,
    ) -> Self {
        let (kafka, group, pool) = (self.kafka.clone(), group.into(), self.pool.clone());
        let options = self.consumers.clone();
        self.named(format!("events consumer {group}"), move |shutdown| {
            crate::consumer::run_until_shutdown(
                kafka, group, pool, topics, handler, options, shutdown,
            )
        })
    }

    /// Adds a consumer of work on `topics` in consumer `group`: up to `max_in_flight` records
    /// at once, each allowed `max_work` (see [`crate::consumer::concurrent`]).
    pub fn work(
        self,
        group: impl Into<String>,
        topics: Vec<Topic>,
        handler: Arc<dyn WorkHandler>,
        max_in_flight: usize,
        max_work: Duration,
    ) -> Self {
        let (kafka, group, pool) = (self.kafka.clone(), group.into(), self.pool.clone());
        let options = self.consumers.clone();
        self.named(format!("work consumer {group}"), move |shutdown| {
            crate::consumer::concurrent::run_until_shutdown(
                kafka,
                group,
                pool,
                topics,
                handler,
                max_in_flight,
                max_work,
                options,
                shutdown,
            )
        })
    }

    /// Adds background work that runs until the shutdown it is given. Logs name it by its
    /// future's type (`mailroom_sync::scheduler::Scheduler::run`).
    pub fn task<F, Fut>(self, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = std::any::type_name::<Fut>();
        let name = name
            .strip_suffix("::{{closure}}")
            .unwrap_or(name)
            .to_owned();
        self.named(name, task)
    }

    /// Adds background work known as `name`, that runs until the shutdown it is given.
    pub fn named<F, Fut>(mut self, name: impl Into<String>, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background.push((
            name.into(),
            Box::new(move |shutdown| Box::pin(task(shutdown))),
        ));
        self
    }

    /// Runs the background work and serves gRPC on `listener`, verifying tokens with
    /// `verifier`, until `shutdown` and the drain after it ([`crate::grpc::serve`]); then cancels
    /// the background work and waits for it, [`crate::shutdown::BACKGROUND_GRACE`] at most.
    pub async fn run(
        self,
        listener: TcpListener,
        verifier: TokenVerifier,
        platform: &PlatformConfig,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        // The background work (consumers, relays, tailers) runs until the server has stopped,
        // not merely until a stop is asked for: through the drain the service still answers
        // calls, and answers them from current state.
        let stop_background = CancellationToken::new();
        let mut background = tokio::task::JoinSet::new();
        let mut names = HashMap::new();
        for (name, task) in self.background {
            let running = crate::shutdown::track(name.clone());
            let work = task(stop_background.clone());
            let handle = background.spawn(async move {
                let _running = running;
                work.await
            });
            names.insert(handle.id(), name);
        }
        let service = self.hosted.callers.service;
        let served = {
            let _serving = crate::shutdown::track(format!("{service} gRPC server"));
            crate::grpc::serve(
                self.hosted,
                listener,
                verifier,
                platform,
                self.readiness,
                shutdown.clone(),
            )
            .await
        };
        shutdown.cancel();
        stop_background.cancel();
        stop(service, background, names).await;
        served
    }
}

/// Waits for the background work of `service`, told to stop, [`crate::shutdown::BACKGROUND_GRACE`]
/// at most; then names what still runs and aborts it.
async fn stop(
    service: &str,
    mut background: tokio::task::JoinSet<()>,
    mut names: HashMap<tokio::task::Id, String>,
) {
    let grace = crate::shutdown::BACKGROUND_GRACE;
    let stopping = Instant::now();
    let all_stopped = tokio::time::timeout(grace, async {
        while let Some(joined) = background.join_next_with_id().await {
            let (id, panicked) = match joined {
                Ok((id, ())) => (id, false),
                Err(err) => (err.id(), err.is_panic()),
            };
            let task = names.remove(&id).unwrap_or_default();
            if panicked {
                tracing::error!(service, %task, "background task panicked");
            } else {
                tracing::debug!(service, %task, elapsed_ms = stopping.elapsed().as_millis() as u64, "background task stopped");
            }
        }
    })
    .await;
    if all_stopped.is_err() {
        for task in names.values() {
            tracing::warn!(
                service,
                %task,
                grace_ms = grace.as_millis() as u64,
                "background task still running after its grace once serving stopped; abandoning it"
            );
        }
        // Aborted: each is dropped where it waits, never polled again.
        background.abort_all();
    }
}
