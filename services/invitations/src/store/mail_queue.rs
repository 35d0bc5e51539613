//! The SQL of the mail queue, which is the `invitations` table itself: a row whose
//! `delivery_state` is `queued` is due at `next_attempt_at`. Every outcome is recorded only
//! while the row still carries the link secret its mail was sent with (`token_hash`), so a
//! resend, an approval or another sender that re-armed it meanwhile wins.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mailroom_types::InvitationId;
use sqlx::{PgConnection, PgExecutor};

use super::{InvitationRow, INVITATION_COLUMNS};
use crate::error::Result;

/// Claims up to `batch` due rows (`FOR UPDATE SKIP LOCKED`, so replicas share the work),
/// pushing their time out by `lease`.
pub async fn claim_due(
    conn: impl PgExecutor<'_>,
    batch: i64,
    lease: Duration,
) -> Result<Vec<InvitationRow>> {
    Ok(sqlx::query_as(&format!(
        "UPDATE invitations SET next_attempt_at = now() + make_interval(secs => $2) \
         WHERE id IN (SELECT id FROM invitations WHERE delivery_state = 'queued' AND next_attempt_at <= now() \
           AND state IN ('pending', 'failed') ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING {INVITATION_COLUMNS}"
    ))
    .bind(batch)
    .bind(lease.as_secs_f64())
    .fetch_all(conn)
    .await?)
}

/// Gives each of `ids` the link whose secret hashes to the hash at the same place, in one
/// statement, and records when it was mailed; a row revoked, accepted or expired since the claim is not armed. Returns the
/// ids armed.
pub async fn arm(
    conn: impl PgExecutor<'_>,
    ids: &[InvitationId],
    hashes: &[Vec<u8>],
) -> Result<HashSet<InvitationId>> {
    let armed: Vec<InvitationId> = sqlx::query_scalar(
        "UPDATE invitations i SET token_hash = t.hash, mailed_at = now() FROM UNNEST($1::uuid[], $2::bytea[]) AS t(id, hash) \
         WHERE i.id = t.id AND i.delivery_state = 'queued' AND i.state IN ('pending', 'failed') RETURNING i.id",
    )
    .bind(ids)
    .bind(hashes)
    .fetch_all(conn)
    .await?;
    Ok(armed.into_iter().collect())
}

/// Pushes the lease of each of `ids` out to `lease` from now, while it still carries the link
/// whose hash is at the same place, the count of attempts it was claimed with (an outcome
/// recorded meanwhile counts its attempt, so a renewal that lands after a deferral does not
/// undo its delay), and is still queued (not sent, revoked, accepted or re-armed by a resend or
/// another sender meanwhile). Returns the ids renewed.
pub async fn renew(
    conn: impl PgExecutor<'_>,
    ids: &[InvitationId],
    hashes: &[Vec<u8>],
    attempts: &[i32],
    lease: Duration,
) -> Result<HashSet<InvitationId>> {
    let renewed: Vec<InvitationId> = sqlx::query_scalar(
        "UPDATE invitations i SET next_attempt_at = now() + make_interval(secs => $4) \
         FROM UNNEST($1::uuid[], $2::bytea[], $3::int4[]) AS t(id, hash, attempts) \
         WHERE i.id = t.id AND i.token_hash = t.hash AND i.attempts = t.attempts \
           AND i.delivery_state = 'queued' AND i.state IN ('pending', 'failed') RETURNING i.id",
    )
    .bind(ids)
    .bind(hashes)
    .bind(attempts)
    .bind(lease.as_secs_f64())
    .fetch_all(conn)
    .await?;
    Ok(renewed.into_iter().collect())
}

/// One mail's outcome, recorded with others by [`record`].
pub struct Outcome {
    pub id: InvitationId,
    /// Attempts made, this one included.
    pub attempts: i32,
    /// The hash of the link the mail carried: recorded only while the row still has it.
    pub hash: Vec<u8>,
    pub result: Recorded,
}

/// What became of one mail.
pub enum Recorded {
    /// The server took it: `sent` (a FAILED invitation is PENDING again).
    Sent,
    /// Tried again after the delay, with why this attempt failed.
    Deferred { reason: String, delay: Duration },
    /// A refusal, or the attempts ran out: the invitation is FAILED with the reason (an
    /// accepted or revoked one keeps its state).
    Failed { reason: String },
}

/// The rows changed by [`record`]: those now sent, and those now failed with their reason.
#[derive(Default)]
pub struct RecordedRows {
    pub sent: Vec<InvitationRow>,
    pub failed: Vec<(InvitationRow, String)>,
}

/// Records `outcomes`, one statement per kind of outcome present, each only where the row is
/// still queued with the link its mail carried.
pub async fn record(conn: &mut PgConnection, outcomes: &[Outcome]) -> Result<RecordedRows> {
    let mut done = RecordedRows::default();
    let sent: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o.result, Recorded::Sent))
        .collect();
    if !sent.is_empty() {
        done.sent = sqlx::query_as(&format!(
            "UPDATE invitations i SET delivery_state = 'sent', send_count = i.send_count + 1, attempts = t.attempts, \
             failure_reason = '', next_attempt_at = NULL, updated_at = now(), \
             state = CASE WHEN i.state = 'failed' THEN 'pending' ELSE i.state END \
             FROM UNNEST($1::uuid[], $2::int4[], $3::bytea[]) AS t(id, attempts, hash) \
             WHERE i.id = t.id AND i.delivery_state = 'queued' AND i.token_hash = t.hash RETURNING {}",
            columns_of_i()
        ))
        .bind(sent.iter().map(|o| o.id).collect::<Vec<_>>())
        .bind(sent.iter().map(|o| o.attempts).collect::<Vec<_>>())
        .bind(sent.iter().map(|o| o.hash.clone()).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
    }
    let (mut ids, mut attempts, mut hashes, mut reasons, mut delays) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for o in outcomes {
        if let Recorded::Deferred { reason, delay } = &o.result {
            ids.push(o.id);
            attempts.push(o.attempts);
            hashes.push(o.hash.clone());
            reasons.push(reason.clone());
            delays.push(delay.as_secs_f64());
        }
    }
    if !ids.is_empty() {
        sqlx::query(
            "UPDATE invitations i SET attempts = t.attempts, failure_reason = t.reason, \
             next_attempt_at = now() + make_interval(secs => t.delay), updated_at = now() \
             FROM UNNEST($1::uuid[], $2::int4[], $3::bytea[], $4::text[], $5::float8[]) AS t(id, attempts, hash, reason, delay) \
             WHERE i.id = t.id AND i.delivery_state = 'queued' AND i.token_hash = t.hash",
        )
        .bind(&ids)
        .bind(&attempts)
        .bind(&hashes)
        .bind(&reasons)
        .bind(&delays)
        .execute(&mut *conn)
        .await?;
    }
    let (mut ids, mut attempts, mut hashes, mut reasons) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for o in outcomes {
        if let Recorded::Failed { reason } = &o.result {
            ids.push(o.id);
            attempts.push(o.attempts);
            hashes.push(o.hash.clone());
            reasons.push(reason.clone());
        }
    }
    if !ids.is_empty() {
        let rows: Vec<InvitationRow> = sqlx::query_as(&format!(
            "UPDATE invitations i SET delivery_state = 'failed', attempts = t.attempts, failure_reason = t.reason, \
             next_attempt_at = NULL, updated_at = now(), state = CASE WHEN i.state = 'pending' THEN 'failed' ELSE i.state END \
             FROM UNNEST($1::uuid[], $2::int4[], $3::bytea[], $4::text[]) AS t(id, attempts, hash, reason) \
             WHERE i.id = t.id AND i.delivery_state = 'queued' AND i.token_hash = t.hash RETURNING {}",
            columns_of_i()
        ))
        .bind(&ids)
        .bind(&attempts)
        .bind(&hashes)
        .bind(&reasons)
        .fetch_all(&mut *conn)
        .await?;
        let mut reasons: HashMap<InvitationId, String> = ids.into_iter().zip(reasons).collect();
        done.failed = rows
            .into_iter()
            .map(|row| {
                let reason = reasons.remove(&row.id).unwrap_or_default();
                (row, reason)
            })
            .collect();
    }
    Ok(done)
}

/// [`INVITATION_COLUMNS`] of the table aliased `i`.
fn columns_of_i() -> String {
    INVITATION_COLUMNS
        .split(", ")
        .map(|c| format!("i.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
