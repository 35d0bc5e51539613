//! Pruning by age: a consumer's `processed_events` older than
//! [`super::Options::processed_retention`] (30 days unless configured) and its `dead_letters`
//! replayed or discarded longer ago than [`super::Options::dead_letter_retention`] (90 days)
//! are deleted, in small batches (short statements, short locks), every
//! [`super::Options::prune_every`] (hourly). A dead letter still waiting is never deleted: its
//! effect has not happened, and the alert on it goes on firing until an operator replays or
//! discards it.
//!
//! `processed_events` must outlive any redelivery, so before each round the topics' real
//! retention is read from the brokers (`retention.ms`, whoever created the topic): a topic
//! that keeps records longer than the configured age raises it to that retention plus
//! [`MARGIN`]; one that keeps them for ever (or whose retention cannot be read) stops the
//! pruning of `processed_events` for that round, with a warning.
//!
//! Replicas of a service prune the same rows: each takes only rows no other holds
//! (`FOR UPDATE SKIP LOCKED`), so they share the work instead of waiting on each other.

use std::time::Duration;

use sqlx::PgPool;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Options;
use crate::kafka::{KafkaSettings, Topic};

/// How long after start the first pruning runs (not in the middle of a start-up).
const FIRST_AFTER: Duration = Duration::from_secs(60);

/// Kept beyond a topic's own retention before a `processed_events` row may go.
pub const MARGIN: Duration = Duration::from_secs(24 * 3600);

/// Rows deleted by one [`prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub processed_events: u64,
    pub dead_letters: u64,
}

/// Deletes the `processed_events` of `consumer` older than [`Options::processed_retention`]
/// and its replayed or discarded `dead_letters` older than [`Options::dead_letter_retention`],
/// [`Options::prune_batch`] rows per statement, until none is left.
pub async fn prune(
    pool: &PgPool,
    consumer: &str,
    options: &Options,
) -> Result<Pruned, sqlx::Error> {
    prune_with(pool, consumer, options, Some(options.processed_retention)).await
}

/// As [`prune`], with `processed` the age of `processed_events` to prune (none: keep them).
async fn prune_with(
    pool: &PgPool,
    consumer: &str,
    options: &Options,
    processed: Option<Duration>,
) -> Result<Pruned, sqlx::Error> {
    let batch = options.prune_batch.max(1);
    let mut pruned = Pruned::default();
    while let Some(processed) = processed {
        let deleted = sqlx::query(
            "DELETE FROM processed_events WHERE (consumer, event_id) IN ( \
               SELECT consumer, event_id FROM processed_events \
               WHERE consumer = $1 AND processed_at < now() - make_interval(secs => $2) \
               LIMIT $3 FOR UPDATE SKIP LOCKED)",
        )
        .bind(consumer)
        .bind(processed.as_secs_f64())
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
        let deleted: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM dead_letters WHERE id IN ( \
               SELECT id FROM dead_letters \
               WHERE consumer = $1 AND received_at < now() - make_interval(secs => $2) \
                 AND (replayed_at IS NOT NULL OR discarded_at IS NOT NULL) \
               LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id",
        )
        .bind(consumer)
        .bind(options.dead_letter_retention.as_secs_f64())
        .bind(batch)
        .fetch_all(pool)
        .await?;
        if !deleted.is_empty() {
            tracing::info!(consumer, ids = ?deleted, "replayed or discarded dead letters pruned");
        }
        pruned.dead_letters += deleted.len() as u64;
        if (deleted.len() as u64) < batch as u64 {
            break;
        }
    }
    Ok(pruned)
}

/// The age past which `processed_events` of a consumer of `topics` may go: the configured
/// one, or a topic's retention plus [`MARGIN`] when that is longer; `None` when a topic keeps
/// its records for ever or its retention could not be read.
pub async fn safe_processed_retention(
    kafka: &KafkaSettings,
    topics: &[Topic],
    configured: Duration,
    consumer: &str,
) -> Option<Duration> {
    let retention = match kafka.retention_of(topics).await {
        Ok(retention) => retention,
        Err(err) => {
            tracing::warn!(%err, consumer, "the topics' retention could not be read; processed_events are not pruned this round");
            return None;
        }
    };
    let mut safe = configured;
    for (topic, kept) in retention {
        match kept {
            None => {
                tracing::warn!(consumer, %topic, "the topic keeps its records for ever: processed_events are never pruned (a redelivery could apply an event again); set its retention.ms");
                return None;
            }
            Some(kept) if kept + MARGIN > safe => {
                tracing::warn!(consumer, %topic, retention_ms = kept.as_millis() as u64, configured_s = configured.as_secs(), "the topic keeps records longer than processed_events are kept; pruning waits for its retention plus a day");
                safe = kept + MARGIN;
            }
            Some(_) => {}
        }
    }
    Some(safe)
}

/// Prunes the rows of `consumer` (of `topics`) a minute after start, then every
/// [`Options::prune_every`], until `shutdown`.
pub(crate) async fn run(
    consumer: &str,
    pool: &PgPool,
    options: &Options,
    kafka: &KafkaSettings,
    topics: &[Topic],
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
            pruned = async {
                let processed = safe_processed_retention(kafka, topics, options.processed_retention, consumer).await;
                prune_with(pool, consumer, options, processed).await
            } => pruned,
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
