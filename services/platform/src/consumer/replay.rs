//! Dead letters an operator asked to replay, applied again by their consumer, and the gauge of
//! dead letters not replayed.
//!
//! The event operations API marks a row with `replay_requested_at = now()` (clearing
//! `replay_error`). Every couple of seconds ([`super::Options::replay_every`]) a running
//! consumer looks for its own such rows (through the partial index `dead_letters_to_replay`)
//! and applies each through the path of a live record:
//! - sequential mode: in one transaction that holds the row (`FOR UPDATE SKIP LOCKED`, so two
//!   replicas never take the same one), records the event id in `processed_events`, runs the
//!   handler and stamps `replayed_at`: applied and stamped together, or neither;
//! - concurrent mode: the [`WorkHandler`], then the stamp (the work is idempotent; two
//!   replicas may both run one request, as a redelivery may).
//!
//! A transient failure leaves the request in place for the next poll; any other failure (the
//! record cannot be decoded, the handler refuses it, or fails for an unknown reason) sets
//! `replay_error` and clears the request, for the operator to look at.

use std::sync::Arc;

use futures::FutureExt as _;
use sqlx::{PgConnection, PgPool};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::concurrent::WorkHandler;
use super::{classify, Class, EventHandler, Options};

/// Rows looked at per poll.
const BATCH: i64 = 50;

/// How a consumer applies a replayed record.
pub(crate) enum Replayer {
    Sequential(Arc<dyn EventHandler>),
    Work(Arc<dyn WorkHandler>),
}

/// Stamps dead letter `id` as replayed (inside the transaction that applied it).
pub(crate) async fn stamp(conn: &mut PgConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE dead_letters SET replayed_at = now(), replay_error = NULL WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets the error of a replay that will not work, and clears its request.
async fn refuse(pool: &PgPool, id: i64, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE dead_letters SET replay_error = $2, replay_requested_at = NULL \
         WHERE id = $1 AND replayed_at IS NULL",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Polls for replay requests of consumer `name` and refreshes its dead-letter gauge until
/// `stop`.
pub(crate) async fn run(
    name: &str,
    pool: &PgPool,
    replayer: Replayer,
    options: &Options,
    stop: CancellationToken,
) {
    let mut replays = tokio::time::interval(options.replay_every);
    replays.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut gauge = tokio::time::interval(options.gauge_every);
    gauge.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = replays.tick() => {
                let done = tokio::select! {
                    _ = stop.cancelled() => return,
                    done = replay_requested(name, pool, &replayer, &stop) => done,
                };
                match done {
                    Ok(0) => {}
                    Ok(replayed) => {
                        tracing::info!(consumer = name, replayed, "dead letters replayed");
                        refresh_gauge(name, pool).await;
                    }
                    Err(err) => tracing::warn!(%err, consumer = name, "looking for dead letters to replay failed; trying again"),
                }
            }
            _ = gauge.tick() => refresh_gauge(name, pool).await,
        }
    }
}

/// Sets `mailroom_events_dead_letters{consumer}` to the dead letters of `name` not replayed.
pub(crate) async fn refresh_gauge(name: &str, pool: &PgPool) {
    let waiting: Result<i64, _> = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE consumer = $1 AND replayed_at IS NULL",
    )
    .bind(name)
    .fetch_one(pool)
    .await;
    match waiting {
        Ok(waiting) => metrics::gauge!(crate::metrics::DEAD_LETTERS, "consumer" => name.to_owned())
            .set(waiting as f64),
        Err(err) => tracing::debug!(%err, consumer = name, "dead letters not counted"),
    }
}

/// Applies the requested replays of consumer `name`, oldest first; returns how many were
/// applied. A row that fails transiently is passed over until the next poll.
pub(crate) async fn replay_requested(
    name: &str,
    pool: &PgPool,
    replayer: &Replayer,
    stop: &CancellationToken,
) -> Result<usize, sqlx::Error> {
    let mut replayed = 0;
    match replayer {
        Replayer::Sequential(handler) => {
            // One row per transaction, each held while it is applied.
            let mut after = 0i64;
            for _ in 0..BATCH {
                match replay_one_sequential(name, pool, handler.as_ref(), after).await? {
                    None => break,
                    Some((id, applied)) => {
                        after = id;
                        replayed += usize::from(applied);
                    }
                }
            }
        }
        Replayer::Work(handler) => {
            let rows: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT id, payload FROM dead_letters \
                 WHERE consumer = $1 AND replay_requested_at IS NOT NULL AND replayed_at IS NULL \
                 ORDER BY id LIMIT $2",
            )
            .bind(name)
            .bind(BATCH)
            .fetch_all(pool)
            .await?;
            for (id, payload) in rows {
                if stop.is_cancelled() {
                    break;
                }
                if replay_one_work(name, pool, handler.as_ref(), id, payload, stop).await? {
                    replayed += 1;
                }
            }
        }
    }
    Ok(replayed)
}

/// Takes the next requested row after `after` and applies it in one transaction. Returns the
/// row's id and whether it was applied (`None`: no row left).
async fn replay_one_sequential(
    name: &str,
    pool: &PgPool,
    handler: &dyn EventHandler,
    after: i64,
) -> Result<Option<(i64, bool)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT id, payload FROM dead_letters \
         WHERE consumer = $1 AND replay_requested_at IS NOT NULL AND replayed_at IS NULL AND id > $2 \
         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(name)
    .bind(after)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, payload)) = row else {
        return Ok(None);
    };
    let (envelope, event_id) = match super::decode(payload.as_deref().unwrap_or_default()) {
        Ok(decoded) => decoded,
        Err(refusal) => {
            drop(tx);
            refuse(pool, id, &refusal.to_string()).await?;
            return Ok(Some((id, false)));
        }
    };
    if !handler.wants(&envelope) {
        // Nothing to apply: done.
        stamp(&mut tx, id).await?;
        tx.commit().await?;
        super::count(name, "replayed");
        return Ok(Some((id, true)));
    }
    // The consumer's path, in the transaction that holds the row: applied and stamped
    // together, or neither.
    let applied = async {
        super::apply_in(&mut tx, name, event_id, &envelope, handler).await?;
        stamp(&mut tx, id)
            .await
            .map_err(super::ApplyFailure::Bookkeeping)?;
        tx.commit()
            .await
            .map_err(|err| super::ApplyFailure::Handler(err.into()))
    };
    match applied.await {
        Ok(()) => {
            super::count(name, "replayed");
            Ok(Some((id, true)))
        }
        Err(failure) => {
            let class = failure.class();
            let err = failure.into_error();
            if class == Class::Transient {
                tracing::warn!(error = %format!("{err:#}"), consumer = name, dead_letter = id, "replay failed for now; it is tried again at the next poll");
            } else {
                tracing::warn!(error = %format!("{err:#}"), consumer = name, dead_letter = id, "replay failed");
                refuse(pool, id, &format!("{err:#}")).await?;
            }
            Ok(Some((id, false)))
        }
    }
}

/// Runs the work of one requested row and stamps it. Returns whether it was applied.
async fn replay_one_work(
    name: &str,
    pool: &PgPool,
    handler: &dyn WorkHandler,
    id: i64,
    payload: Option<Vec<u8>>,
    stop: &CancellationToken,
) -> Result<bool, sqlx::Error> {
    let envelope = match super::decode(payload.as_deref().unwrap_or_default()) {
        Ok((envelope, _)) => envelope,
        Err(refusal) => {
            refuse(pool, id, &refusal.to_string()).await?;
            return Ok(false);
        }
    };
    let result = std::panic::AssertUnwindSafe(handler.handle(envelope, stop.clone()))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the work handler panicked on this record")));
    if stop.is_cancelled() && result.is_err() {
        // Abandoned at shutdown: still requested.
        return Ok(false);
    }
    match result {
        Ok(()) => {
            let mut conn = pool.acquire().await?;
            stamp(&mut conn, id).await?;
            super::count(name, "replayed");
            Ok(true)
        }
        Err(err) if classify(&err) == Class::Transient => {
            tracing::warn!(error = %format!("{err:#}"), consumer = name, dead_letter = id, "replay failed for now; it is tried again at the next poll");
            Ok(false)
        }
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), consumer = name, dead_letter = id, "replay failed");
            refuse(pool, id, &format!("{err:#}")).await?;
            Ok(false)
        }
    }
}
