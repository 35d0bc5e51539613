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
//!
//! In sequential mode the letters of one key are applied in id order, never one before an
//! earlier letter of its key still waiting: a record held behind another (`held_behind`)
//! follows it without a request, and a requested one waits for the letters before it. So a
//! replay never applies an old snapshot over a newer state (see [`super`]).
//!
//! A letter received longer ago than [`super::Options::processed_retention`] is refused: the
//! `processed_events` row that would stop a second application may be pruned already.

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
                    done = replay_requested(name, pool, &replayer, options, &stop) => done,
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

/// Sets `mailroom_events_dead_letters{consumer}` to the dead letters of `name` still waiting
/// (neither replayed nor discarded).
pub(crate) async fn refresh_gauge(name: &str, pool: &PgPool) {
    let waiting: Result<i64, _> = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters \
         WHERE consumer = $1 AND replayed_at IS NULL AND discarded_at IS NULL",
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
    options: &Options,
    stop: &CancellationToken,
) -> Result<usize, sqlx::Error> {
    let too_old = options.processed_retention.as_secs_f64();
    let mut replayed = 0;
    match replayer {
        Replayer::Sequential(handler) => {
            // Most polls find nothing: one statement says so, rather than a transaction.
            if !anything_due(name, pool).await? {
                return Ok(0);
            }
            // One row per transaction, each held while it is applied.
            let mut after = 0i64;
            for _ in 0..BATCH {
                match replay_one_sequential(name, pool, handler.as_ref(), after, too_old).await? {
                    None => break,
                    Some((id, applied)) => {
                        after = id;
                        replayed += usize::from(applied);
                    }
                }
            }
        }
        Replayer::Work(handler) => {
            let rows: Vec<(i64, Option<Vec<u8>>, bool)> = sqlx::query_as(
                "SELECT id, payload, received_at < now() - make_interval(secs => $3) AND NOT replay_forced \
                 FROM dead_letters \
                 WHERE consumer = $1 AND replay_requested_at IS NOT NULL AND replayed_at IS NULL \
                   AND discarded_at IS NULL \
                 ORDER BY id LIMIT $2",
            )
            .bind(name)
            .bind(BATCH)
            .bind(too_old)
            .fetch_all(pool)
            .await?;
            for (id, payload, old) in rows {
                if stop.is_cancelled() {
                    break;
                }
                if old {
                    refuse(pool, id, TOO_OLD).await?;
                    continue;
                }
                if replay_one_work(name, pool, handler.as_ref(), id, payload, stop).await? {
                    replayed += 1;
                }
            }
        }
    }
    Ok(replayed)
}

/// Whether consumer `name` has a dead letter due (requested, or held behind one applied
/// since) and first of its key still waiting: the pass's own condition, without its row lock,
/// looked up through `dead_letters_pending_by_key` outside any transaction. So an idle
/// consumer's poll costs one statement instead of a transaction of three, also while letters
/// wait behind one an operator has not decided on yet.
async fn anything_due(name: &str, pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM dead_letters d \
         WHERE d.consumer = $1 AND d.replayed_at IS NULL AND d.discarded_at IS NULL \
           AND (d.replay_requested_at IS NOT NULL \
                OR (d.held_behind IS NOT NULL AND d.replay_error IS NULL)) \
           AND NOT EXISTS (SELECT 1 FROM dead_letters e \
                WHERE e.consumer = d.consumer AND e.record_key = d.record_key AND e.id < d.id \
                  AND e.replayed_at IS NULL AND e.discarded_at IS NULL))",
    )
    .bind(name)
    .fetch_one(pool)
    .await
}

/// Why a letter too old is not replayed.
const TOO_OLD: &str = "received longer ago than processed_events are kept: its event may have \
    been applied already (by a redelivery) without a trace left; discard it, or replay it with \
    --force if it surely was not";

/// Takes the next row after `after` that is due (requested, or held behind a letter applied
/// since) and first of its key still waiting, and applies it in one transaction. Returns the
/// row's id and whether it was applied (`None`: no row left).
async fn replay_one_sequential(
    name: &str,
    pool: &PgPool,
    handler: &dyn EventHandler,
    after: i64,
    too_old: f64,
) -> Result<Option<(i64, bool)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<(i64, Option<Vec<u8>>, bool)> = sqlx::query_as(
        "SELECT d.id, d.payload, \
           d.received_at < now() - make_interval(secs => $3) AND NOT d.replay_forced \
         FROM dead_letters d \
         WHERE d.consumer = $1 AND d.replayed_at IS NULL AND d.discarded_at IS NULL AND d.id > $2 \
           AND (d.replay_requested_at IS NOT NULL \
                OR (d.held_behind IS NOT NULL AND d.replay_error IS NULL)) \
           AND NOT EXISTS (SELECT 1 FROM dead_letters e \
                WHERE e.consumer = d.consumer AND e.record_key = d.record_key AND e.id < d.id \
                  AND e.replayed_at IS NULL AND e.discarded_at IS NULL) \
         ORDER BY d.id LIMIT 1 FOR UPDATE OF d SKIP LOCKED",
    )
    .bind(name)
    .bind(after)
    .bind(too_old)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, payload, old)) = row else {
        return Ok(None);
    };
    if old {
        drop(tx);
        refuse(pool, id, TOO_OLD).await?;
        return Ok(Some((id, false)));
    }
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
