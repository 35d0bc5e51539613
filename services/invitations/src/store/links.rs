//! The SQL of quick-registration links (`registration_links`); each row's `registrations` and
//! `uses` (registrations confirmed, accepted or admitted) are counted from the invitations made through it.

use chrono::{DateTime, Utc};
use mailroom_types::{DepartmentId, OrgId, RegistrationLinkId, UserId};
use sqlx::{PgConnection, PgExecutor};

use super::{LinkRow, LINK_COLUMNS};
use crate::domain::Names;
use crate::error::Result;

/// A link to store: only its secret's hash is kept.
pub struct NewLink<'a> {
    pub id: RegistrationLinkId,
    pub org_id: OrgId,
    pub token_hash: &'a [u8],
    pub allowed_domains: &'a [String],
    pub requires_approval: bool,
    pub department_id: Option<DepartmentId>,
    /// The organisation's, the creator's and the department's names.
    pub names: &'a Names,
    pub created_by: UserId,
    pub expires_at: Option<DateTime<Utc>>,
    /// People who may join through it; `None`: no limit.
    pub max_uses: Option<i32>,
}

pub async fn insert(conn: impl PgExecutor<'_>, link: &NewLink<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO registration_links (id, org_id, token_hash, allowed_domains, requires_approval, department_id, \
         department_name, organization_name, created_by_user_id, created_by_name, expires_at, max_uses) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(link.id)
    .bind(link.org_id)
    .bind(link.token_hash)
    .bind(link.allowed_domains)
    .bind(link.requires_approval)
    .bind(link.department_id)
    .bind(&link.names.department)
    .bind(&link.names.organization)
    .bind(link.created_by)
    .bind(&link.names.inviter)
    .bind(link.expires_at)
    .bind(link.max_uses)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(
    conn: impl PgExecutor<'_>,
    org_id: OrgId,
    id: RegistrationLinkId,
) -> Result<Option<LinkRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {LINK_COLUMNS} FROM registration_links l WHERE l.org_id = $1 AND l.id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The link `id`, locked for the rest of the transaction (a confirmation counting its uses
/// against its maximum, so two at once cannot both take the last one). The uses are counted
/// by a statement after the lock is held, so they include a confirmation that committed
/// while this one waited for it (a count in the locking statement would use its older
/// snapshot).
pub async fn lock(conn: &mut PgConnection, id: RegistrationLinkId) -> Result<Option<LinkRow>> {
    let org: Option<OrgId> =
        sqlx::query_scalar("SELECT org_id FROM registration_links WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    match org {
        Some(org) => get(conn, org, id).await,
        None => Ok(None),
    }
}

/// Up to `limit` of the organisation's links, newest first, after the key `(at, id)`.
pub async fn page(
    conn: impl PgExecutor<'_>,
    org_id: OrgId,
    after: (DateTime<Utc>, RegistrationLinkId),
    limit: i64,
) -> Result<Vec<LinkRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {LINK_COLUMNS} FROM registration_links l WHERE l.org_id = $1 AND (l.created_at, l.id) < ($2, $3) \
         ORDER BY l.created_at DESC, l.id DESC LIMIT $4"
    ))
    .bind(org_id)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

pub async fn disable(conn: impl PgExecutor<'_>, id: RegistrationLinkId) -> Result<()> {
    sqlx::query("UPDATE registration_links SET disabled = true WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The usable link (not disabled, not expired) whose secret hashes to `hash`: its stored
/// hash, id and organisation.
pub async fn usable_by_token(
    conn: impl PgExecutor<'_>,
    hash: &[u8],
) -> Result<Option<(Vec<u8>, RegistrationLinkId, OrgId)>> {
    Ok(sqlx::query_as(
        "SELECT token_hash, id, org_id FROM registration_links WHERE token_hash = $1 \
         AND NOT disabled AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(hash)
    .fetch_optional(conn)
    .await?)
}

/// Whether the link needs an admin's approval of each registration (false for a link gone).
pub async fn requires_approval(conn: impl PgExecutor<'_>, id: RegistrationLinkId) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT requires_approval FROM registration_links WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?
            .unwrap_or(false),
    )
}
