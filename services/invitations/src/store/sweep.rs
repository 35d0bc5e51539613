//! The SQL of the sweeper (see [`crate::expiry`]): open invitations past their expiry, and
//! admissions a process that died left `admitting`.

use sqlx::PgExecutor;

use super::{InvitationRow, INVITATION_COLUMNS};
use crate::error::Result;

/// Marks up to `batch` open invitations past their expiry EXPIRED (`FOR UPDATE SKIP LOCKED`,
/// so replicas may all sweep), returning them; one being accepted right now is left to its
/// acceptance (swept next round if that fails).
pub async fn expire(conn: impl PgExecutor<'_>, batch: i64) -> Result<Vec<InvitationRow>> {
    Ok(sqlx::query_as(&format!(
        "UPDATE invitations SET state = 'expired', next_attempt_at = NULL, updated_at = now(), \
         delivery_state = CASE WHEN delivery_state = 'queued' THEN 'not_sent' ELSE delivery_state END \
         WHERE id IN (SELECT id FROM invitations WHERE state IN ('pending', 'failed', 'awaiting_approval') \
           AND expires_at <= now() AND (accepting_until IS NULL OR accepting_until <= now()) \
           LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING {INVITATION_COLUMNS}"
    ))
    .bind(batch)
    .fetch_all(conn)
    .await?)
}

/// Up to `limit` rows still `admitting` after `older_than_secs`, oldest first.
pub async fn abandoned(
    conn: impl PgExecutor<'_>,
    older_than_secs: f64,
    limit: i64,
) -> Result<Vec<InvitationRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE state = 'admitting' \
         AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2"
    ))
    .bind(older_than_secs)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}
