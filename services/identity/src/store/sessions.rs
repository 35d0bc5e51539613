//! Bearer secrets kept as their SHA-256: refresh tokens (rotated in families, one family per
//! sign-in) and password-reset links.

use chrono::{DateTime, Utc};
use mailroom_platform::types::{OrgId, UserId};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::UserState;
use crate::error::Result;

/// Stores a refresh token of the sign-in `family`.
pub async fn insert_refresh_token(
    conn: &mut PgConnection,
    family: Uuid,
    user_id: UserId,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(family)
    .bind(user_id)
    .bind(token_hash)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whose refresh token this is (read without a lock, to lock the user first).
pub async fn refresh_token_owner(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<UserId>> {
    Ok(
        sqlx::query_scalar("SELECT user_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(conn)
            .await?,
    )
}

/// A refresh token, locked, as a refresh reads it.
pub struct RefreshToken {
    pub id: Uuid,
    pub family: Uuid,
    pub user_id: UserId,
    pub expired: bool,
    pub spent: bool,
    pub revoked: bool,
}

pub async fn lock_refresh_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<RefreshToken>> {
    let row: Option<(Uuid, Uuid, UserId, bool, bool, bool)> = sqlx::query_as(
        "SELECT id, family_id, user_id, expires_at < now(), spent_at IS NOT NULL, revoked_at IS NOT NULL \
         FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(
        |(id, family, user_id, expired, spent, revoked)| RefreshToken {
            id,
            family,
            user_id,
            expired,
            spent,
            revoked,
        },
    ))
}

/// Marks a refresh token used (its successor is issued in the same transaction).
pub async fn spend_refresh_token(conn: &mut PgConnection, id: Uuid) -> Result<()> {
    sqlx::query("UPDATE refresh_tokens SET spent_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes every open token of a sign-in.
pub async fn revoke_family(conn: &mut PgConnection, family: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes every open token of the sign-in this token belongs to (nothing if it is unknown).
pub async fn revoke_family_of(conn: &mut PgConnection, token_hash: &[u8]) -> Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = \
         (SELECT family_id FROM refresh_tokens WHERE token_hash = $1) AND revoked_at IS NULL",
    )
    .bind(token_hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes every open refresh token of a user.
pub async fn revoke_refresh_tokens_of(conn: &mut PgConnection, user_id: UserId) -> Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores a password-reset link, usable for `ttl_secs`.
pub async fn insert_reset(
    conn: &mut PgConnection,
    token_hash: &[u8],
    user_id: UserId,
    requested_by: &str,
    ttl_secs: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO password_resets (token_hash, user_id, requested_by, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(requested_by)
    .bind(ttl_secs as f64)
    .execute(conn)
    .await?;
    Ok(())
}

/// Spends every open reset link of a user.
pub async fn spend_resets_of(conn: &mut PgConnection, user_id: UserId) -> Result<()> {
    sqlx::query(
        "UPDATE password_resets SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A reset link as it is now, with its user's organisation and state.
pub struct ResetLink {
    pub user_id: UserId,
    pub org_id: OrgId,
    pub used: bool,
    pub expired: bool,
    pub user_state: UserState,
}

/// The link with this hash, locked when `lock` (for the change that spends it).
pub async fn reset_link(
    conn: &mut PgConnection,
    token_hash: &[u8],
    lock: bool,
) -> Result<Option<ResetLink>> {
    let row: Option<(UserId, OrgId, bool, bool, String)> = sqlx::query_as(&format!(
        "SELECT r.user_id, u.org_id, r.used_at IS NOT NULL, r.expires_at < now(), u.state \
         FROM password_resets r JOIN users u ON u.id = r.user_id WHERE r.token_hash = $1{}",
        if lock { " FOR UPDATE OF r" } else { "" }
    ))
    .bind(token_hash)
    .fetch_optional(conn)
    .await?;
    Ok(
        row.map(|(user_id, org_id, used, expired, state)| ResetLink {
            user_id,
            org_id,
            used,
            expired,
            user_state: UserState::from_db(&state),
        }),
    )
}
