//! The database pool's gauges: how many of a service's connections are idle and in use, and
//! the most it may open (`mailroom_db_pool_connections{schema,state}`,
//! `mailroom_db_pool_max_connections{schema}`), refreshed every [`EVERY`] while the service
//! runs. A pool at its maximum with nothing idle makes every query wait for a connection
//! (`MAILROOM_DB_MAX_CONNECTIONS`).

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::{DB_POOL_CONNECTIONS, DB_POOL_MAX_CONNECTIONS};

/// How often the gauges are refreshed.
pub const EVERY: Duration = Duration::from_secs(10);

/// Background work for [`crate::hosting::Started`]: its name in logs, and the task exporting
/// `pool`'s gauges under `schema` until the shutdown it is given.
#[allow(clippy::type_complexity)]
pub fn exporter(
    pool: PgPool,
    schema: &'static str,
) -> (
    String,
    Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>,
) {
    (
        format!("database pool metrics of {schema}"),
        Box::new(move |shutdown| Box::pin(export(pool, schema, shutdown))),
    )
}

/// Sets the gauges of `pool` every [`EVERY`] until `shutdown`.
pub async fn export(pool: PgPool, schema: &'static str, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => record(&pool, schema),
        }
    }
}

/// The pool's connections now, by state.
pub fn record(pool: &PgPool, schema: &'static str) {
    let PoolUse { idle, in_use, max } = PoolUse::of(pool);
    metrics::gauge!(DB_POOL_CONNECTIONS, "schema" => schema, "state" => "idle").set(idle as f64);
    metrics::gauge!(DB_POOL_CONNECTIONS, "schema" => schema, "state" => "in_use")
        .set(in_use as f64);
    metrics::gauge!(DB_POOL_MAX_CONNECTIONS, "schema" => schema).set(max as f64);
}

/// A pool's connections at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    pub idle: u32,
    pub in_use: u32,
    pub max: u32,
}

impl PoolUse {
    pub fn of(pool: &PgPool) -> Self {
        let open = pool.size();
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(open);
        Self {
            idle,
            in_use: open - idle,
            max: pool.options().get_max_connections(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the local stack's PostgreSQL (DATABASE_URL, else the stack's server on 5432).
    #[tokio::test]
    async fn a_held_connection_counts_as_in_use() {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(3)
            .connect(&url)
            .await
            .expect("the local stack's PostgreSQL (DATABASE_URL)");
        let held = pool.acquire().await.expect("a connection");
        let used = PoolUse::of(&pool);
        assert_eq!(used.max, 3);
        assert!(used.in_use >= 1, "{used:?}");
        drop(held);
        // The connection goes back to the pool in the background.
        let mut back = PoolUse::of(&pool);
        for _ in 0..50 {
            if back.in_use == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            back = PoolUse::of(&pool);
        }
        assert_eq!(back.in_use, 0, "{back:?}");
        assert!(back.idle >= 1, "{back:?}");
    }
}
