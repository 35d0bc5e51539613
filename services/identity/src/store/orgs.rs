//! Organisations: their rows, the row lock every seat-taking or tree-changing change takes,
//! and the seats taken.

use std::ops::Deref;

use mailroom_platform::types::OrgId;
use sqlx::PgConnection;

use super::{not_found, OrgRow};
use crate::error::Result;

/// The columns of an [`OrgRow`], usable in SELECT and RETURNING.
const ORG_COLUMNS: &str = "id, display_name, seat_limit, allow_everyone_to_invite, created_at, updated_at, \
     (SELECT count(*) FROM users u WHERE u.org_id = organizations.id AND u.state IN ('invited', 'active')) AS seats_used, \
     (SELECT count(*) FROM users u WHERE u.org_id = organizations.id AND u.state = 'invited') AS invited_users";

/// The columns of an [`OrgRow`] without counting seats (`seats_used` reads 0): for the row
/// lock, which counts only when it needs to.
const ORG_COLUMNS_UNCOUNTED: &str =
    "id, display_name, seat_limit, allow_everyone_to_invite, created_at, updated_at, \
     0::bigint AS seats_used, 0::bigint AS invited_users";

/// An organisation whose row this transaction holds locked until it ends. Seat counting, the
/// last-admin rule and the department tree change only under it, so concurrent calls cannot
/// each see room for one more. Its `seats_used` and `invited_users` are not counted (0).
pub struct LockedOrg(OrgRow);

impl LockedOrg {
    pub fn into_row(self) -> OrgRow {
        self.0
    }
}

impl Deref for LockedOrg {
    type Target = OrgRow;

    fn deref(&self) -> &OrgRow {
        &self.0
    }
}

/// Locks the organisation's row (NOT_FOUND when there is none).
pub async fn lock(conn: &mut PgConnection, org_id: OrgId) -> Result<LockedOrg> {
    sqlx::query_as::<_, OrgRow>(&format!(
        "SELECT {ORG_COLUMNS_UNCOUNTED} FROM organizations WHERE id = $1 FOR UPDATE",
    ))
    .bind(org_id)
    .fetch_optional(conn)
    .await?
    .map(LockedOrg)
    .ok_or_else(|| not_found("organisation", org_id))
}

/// Makes an organisation; its row stays this transaction's alone until the commit. The row
/// returned counts its seats before anyone is added (0).
pub async fn insert(
    conn: &mut PgConnection,
    id: OrgId,
    display_name: &str,
    seat_limit: i32,
    allow_everyone_to_invite: bool,
) -> Result<LockedOrg> {
    let row: OrgRow = sqlx::query_as(&format!(
        "INSERT INTO organizations (id, display_name, seat_limit, allow_everyone_to_invite) VALUES ($1, $2, $3, $4) \
         RETURNING {ORG_COLUMNS}",
    ))
    .bind(id)
    .bind(display_name)
    .bind(seat_limit)
    .bind(allow_everyone_to_invite)
    .fetch_one(conn)
    .await?;
    Ok(LockedOrg(row))
}

/// The organisation with its seats counted now.
pub async fn get(conn: &mut PgConnection, org_id: OrgId) -> Result<OrgRow> {
    sqlx::query_as(&format!(
        "SELECT {ORG_COLUMNS} FROM organizations WHERE id = $1"
    ))
    .bind(org_id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found("organisation", org_id))
}

/// Writes the editable fields of `org` (locked), and returns the row with its seats counted.
pub async fn update(conn: &mut PgConnection, org: &OrgRow) -> Result<OrgRow> {
    Ok(sqlx::query_as(&format!(
        "UPDATE organizations SET display_name = $2, seat_limit = $3, allow_everyone_to_invite = $4, updated_at = now() \
         WHERE id = $1 RETURNING {ORG_COLUMNS}",
    ))
    .bind(org.id)
    .bind(&org.display_name)
    .bind(org.seat_limit)
    .bind(org.allow_everyone_to_invite)
    .fetch_one(conn)
    .await?)
}

/// Users of the organisation that hold a seat (invited and active).
pub async fn seats_in_use(conn: &mut PgConnection, org_id: OrgId) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE org_id = $1 AND state IN ('invited', 'active')",
    )
    .bind(org_id)
    .fetch_one(conn)
    .await?)
}

/// The organisation's name, as a mail to one of its people shows it.
pub async fn display_name(conn: &mut PgConnection, org_id: OrgId) -> Result<String> {
    Ok(
        sqlx::query_scalar("SELECT display_name FROM organizations WHERE id = $1")
            .bind(org_id)
            .fetch_one(conn)
            .await?,
    )
}
