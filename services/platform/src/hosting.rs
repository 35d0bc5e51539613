//! One floor plan for hosting a service: what a service's `start` hands to the process that
//! hosts it, and how that runs.
//!
//! A service's `start` opens its [`database`], builds its own value and its gRPC routes, and
//! returns a [`Started`] with its background work added: [`Started::relay`] (its outbox to
//! Kafka), [`Started::consume`] (an event mirror: exactly-once effects, one record at a time),
//! [`Started::work`] (work taken off a topic, many records in flight) and [`Started::task`]
//! (anything else that runs until shutdown). [`Started::run`] spawns all of it and serves
//! gRPC until shutdown. Whenever serving ends, for whatever reason, the shutdown is cancelled
//! and every background task is waited for, so a stopped service leaves nothing running.
//!
//! Every service also serves the operator's event operations over its own schema (its dead
//! letters and parked outbox events, [`crate::event_ops`]): [`Started::new`] adds them to its
//! routes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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

/// Connects to the service's `schema` and applies its migrations (the platform's first).
pub async fn database(
    platform: &PlatformConfig,
    schema: &str,
    migrations: &Migrator,
) -> Result<PgPool, DbError> {
    let pool =
        crate::db::connect(&platform.database_url, schema, platform.db_max_connections).await?;
    crate::db::migrate(&pool, schema, migrations).await?;
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
    background: Vec<Task>,
}

impl<S> Started<S> {
    /// A service serving `hosted`, and the operator's event operations over `pool`, with no
    /// background work yet.
    pub fn new(
        platform: &PlatformConfig,
        service: Arc<S>,
        pool: PgPool,
        mut hosted: Hosted,
        verifier: TokenVerifier,
    ) -> Self {
        verifier.refresh_keys_with(crate::auth::KeyRefresh::from_config(platform));
        let ops = EventOps::new(pool.clone(), hosted.callers.service);
        hosted.routes = hosted.routes.add_service(ops.into_server());
        hosted.service_names.push(crate::event_ops::SERVICE_NAME);
        Self {
            service,
            pool,
            verifier,
            hosted,
            kafka: KafkaSettings::from_config(platform),
            outbox_max_attempts: platform.outbox_max_attempts,
            consumers: crate::consumer::Options::from_config(platform),
            background: Vec::new(),
        }
    }

    /// Adds the outbox relay of `schema`, publishing its rows for `topics`.
    pub fn relay(self, schema: &str, topics: Vec<Topic>) -> Self {
        let relay = Relay::new(self.pool.clone(), schema, self.kafka.clone(), topics)
            .max_attempts(self.outbox_max_attempts);
        self.task(move |shutdown| relay.run(shutdown))
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
        self.task(move |shutdown| {
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
        self.task(move |shutdown| {
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

    /// Adds background work that runs until the shutdown it is given.
    pub fn task<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background
            .push(Box::new(move |shutdown| Box::pin(task(shutdown))));
        self
    }

    /// Runs the background work and serves gRPC on `listener`, verifying tokens with
    /// `verifier`, until `shutdown` and the drain after it ([`crate::grpc::serve`]); then cancels
    /// and waits for the background work.
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
        for task in self.background {
            background.spawn(task(stop_background.clone()));
        }
        let served =
            crate::grpc::serve(self.hosted, listener, verifier, platform, shutdown.clone()).await;
        shutdown.cancel();
        stop_background.cancel();
        while background.join_next().await.is_some() {}
        served
    }
}
