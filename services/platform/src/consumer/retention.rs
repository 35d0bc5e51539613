//! Pruning by age: a consumer's `processed_events` older than
//! [`super::Options::processed_retention`] (30 days unless configured: well beyond any
//! redelivery, the topics keeping records [`crate::kafka::EVENT_RETENTION`]) and its
//! `dead_letters` older than [`super::Options::dead_letter_retention`] (90 days) are deleted,
//! in small batches (short statements, short locks), every
//! [`super::Options::prune_every`] (hourly). Each consumer prunes its own rows in its
//! service's schema; replicas doing it at once only find less to delete.

use std::time::Duration;

use sqlx::PgPool;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Options;

/// How long after start the first pruning runs (not in the middle of a start-up).
const FIRST_AFTER: Duration = Duration::from_secs(60);

/// Rows deleted by one [`prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub processed_events: u64,
    pub dead_letters: u64,
}

/// Deletes the `processed_events` and `dead_letters` of `consumer` older than the ages of
/// `options`, [`Options::prune_batch`] rows per statement, until none is left.
pub async fn prune(
    pool: &PgPool,
    consumer: &str,
    options: &Options,
) -> Result<Pruned, sqlx::Error> {
    let batch = options.prune_batch.max(1);
    let mut pruned = Pruned::default();
    loop {
        let deleted = sqlx::query(
            "DELETE FROM processed_events WHERE (consumer, event_id) IN ( \
               SELECT consumer, event_id FROM processed_events \
               WHERE consumer = $1 AND processed_at < now() - make_interval(secs => $2) \
               LIMIT $3)",
        )
        .bind(consumer)
        .bind(options.processed_retention.as_secs_f64())
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected();
        pruned.processed_events += deleted;
        if deleted < batch as u64 {
            break;
        }
    }
    loop {
        let deleted = sqlx::query(
            "DELETE FROM dead_letters WHERE id IN ( \
               SELECT id FROM dead_letters \
               WHERE consumer = $1 AND received_at < now() - make_interval(secs => $2) \
               LIMIT $3)",
        )
        .bind(consumer)
        .bind(options.dead_letter_retention.as_secs_f64())
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected();
        pruned.dead_letters += deleted;
        if deleted < batch as u64 {
            break;
        }
    }
    Ok(pruned)
}

/// Prunes the rows of `consumer` a minute after start, then every [`Options::prune_every`],
/// until `shutdown`.
pub(crate) async fn run(
    consumer: &str,
    pool: &PgPool,
    options: &Options,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval_at(
        tokio::time::Instant::now() + FIRST_AFTER.min(options.prune_every),
        options.prune_every.max(Duration::from_secs(1)),
    );
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let pruned = tokio::select! {
            _ = shutdown.cancelled() => return,
            pruned = prune(pool, consumer, options) => pruned,
        };
        match pruned {
            Ok(pruned) if pruned != Pruned::default() => {
                tracing::info!(
                    consumer,
                    processed_events = pruned.processed_events,
                    dead_letters = pruned.dead_letters,
                    "old rows pruned"
                );
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(%err, consumer, "pruning failed; trying again at the next round")
            }
        }
    }
}
