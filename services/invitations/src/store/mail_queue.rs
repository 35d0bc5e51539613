//! The SQL of the mail queue, which is the `invitations` table itself: a row whose
//! `delivery_state` is `queued` is due at `next_attempt_at`. Every outcome is recorded only
//! while the row still carries the link secret its mail was sent with (`token_hash`), so a
//! resend, an approval or another sender that re-armed it meanwhile wins.

use std::collections::HashSet;
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
/// whose hash is at the same place and is still queued (not sent, revoked, accepted or re-armed
/// by a resend or another sender meanwhile). Returns the ids renewed.
pub async fn renew(
    conn: impl PgExecutor<'_>,
    ids: &[InvitationId],
    hashes: &[Vec<u8>],
    lease: Duration,
) -> Result<HashSet<InvitationId>> {
    let renewed: Vec<InvitationId> = sqlx::query_scalar(
        "UPDATE invitations i SET next_attempt_at = now() + make_interval(secs => $3) \
         FROM UNNEST($1::uuid[], $2::bytea[]) AS t(id, hash) \
         WHERE i.id = t.id AND i.token_hash = t.hash AND i.delivery_state = 'queued' \
           AND i.state IN ('pending', 'failed') RETURNING i.id",
    )
    .bind(ids)
    .bind(hashes)
    .bind(lease.as_secs_f64())
    .fetch_all(conn)
    .await?;
    Ok(renewed.into_iter().collect())
}

/// Tried again after `delay`, with why this attempt failed.
pub async fn defer(
    conn: &mut PgConnection,
    id: InvitationId,
    attempts: i32,
    reason: &str,
    delay: Duration,
    hash: &[u8],
) -> Result<()> {
    sqlx::query(
        "UPDATE invitations SET attempts = $2, failure_reason = $3, \
         next_attempt_at = now() + make_interval(secs => $4), updated_at = now() \
         WHERE id = $1 AND delivery_state = 'queued' AND token_hash = $5",
    )
    .bind(id)
    .bind(attempts)
    .bind(reason)
    .bind(delay.as_secs_f64())
    .bind(hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// The server took the mail: `sent` (a FAILED invitation is PENDING again).
pub async fn record_sent(
    conn: &mut PgConnection,
    id: InvitationId,
    attempts: i32,
    hash: &[u8],
) -> Result<Option<InvitationRow>> {
    record(conn, SENT_SQL, id, attempts, "", hash).await
}

/// A refusal, or the attempts ran out: the invitation is FAILED with `reason` (an accepted or
/// revoked one keeps its state).
pub async fn record_failed(
    conn: &mut PgConnection,
    id: InvitationId,
    attempts: i32,
    reason: &str,
    hash: &[u8],
) -> Result<Option<InvitationRow>> {
    record(conn, FAILED_SQL, id, attempts, reason, hash).await
}

const SENT_SQL: &str =
    "UPDATE invitations SET delivery_state = 'sent', send_count = send_count + 1, attempts = $2, \
     failure_reason = $3, next_attempt_at = NULL, updated_at = now(), \
     state = CASE WHEN state = 'failed' THEN 'pending' ELSE state END \
     WHERE id = $1 AND delivery_state = 'queued' AND token_hash = $4 RETURNING ";

const FAILED_SQL: &str = "UPDATE invitations SET delivery_state = 'failed', attempts = $2, failure_reason = $3, \
     next_attempt_at = NULL, updated_at = now(), state = CASE WHEN state = 'pending' THEN 'failed' ELSE state END \
     WHERE id = $1 AND delivery_state = 'queued' AND token_hash = $4 RETURNING ";

async fn record(
    conn: &mut PgConnection,
    sql: &str,
    id: InvitationId,
    attempts: i32,
    reason: &str,
    hash: &[u8],
) -> Result<Option<InvitationRow>> {
    Ok(sqlx::query_as(&format!("{sql}{INVITATION_COLUMNS}"))
        .bind(id)
        .bind(attempts)
        .bind(reason)
        .bind(hash)
        .fetch_optional(conn)
        .await?)
}
