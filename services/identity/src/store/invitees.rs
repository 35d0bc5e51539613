//! The SQL of AdmitInvitees ([`crate::invitees`]), set-based: a whole batch's addresses are
//! claimed in one statement, the holders of those already held are read in two, and its
//! INVITED users are made in one, however many invitees it has.

use std::collections::HashMap;

use mailroom_platform::types::{DepartmentId, OrgId, UserId};
use sqlx::PgConnection;

use super::{UserRow, USER_COLUMNS};
use crate::domain::UserState;
use crate::error::Result;

/// How an invitee's address stood once [`claim_all`] had run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A retried call: the user with this id was made the first time, with this login.
    MadeBefore,
    /// The address is held by the invitee's id (claimed now, or held already).
    Claimed,
    /// Someone else may hold it: see [`holders`].
    Held,
}

/// For each invitee (`ids[k]`, `addresses[k]`) in order: whether the user was made before,
/// else claims the address for them (`ON CONFLICT DO NOTHING`, in the batch's order, so of
/// two invitees asking for one address the first gets it). One statement for the batch.
pub async fn claim_all(
    conn: &mut PgConnection,
    org_id: OrgId,
    ids: &[UserId],
    addresses: &[String],
) -> Result<Vec<Claim>> {
    let rows: Vec<(bool, bool)> = sqlx::query_as(
        "WITH t AS (SELECT * FROM UNNEST($2::uuid[], $3::text[]) WITH ORDINALITY AS t(id, address, ord)), \
         made AS (SELECT t.ord FROM t JOIN users u ON u.org_id = $1 AND u.id = t.id AND u.login_email = t.address), \
         claimed AS (INSERT INTO address_claims (org_id, address, user_id) \
           SELECT $1, t.address, t.id FROM t WHERE NOT EXISTS (SELECT 1 FROM made m WHERE m.ord = t.ord) ORDER BY t.ord \
           ON CONFLICT (org_id, address) DO NOTHING RETURNING address, user_id) \
         SELECT EXISTS (SELECT 1 FROM made m WHERE m.ord = t.ord), \
           EXISTS (SELECT 1 FROM claimed c WHERE c.address = t.address AND c.user_id = t.id) \
         FROM t ORDER BY t.ord",
    )
    .bind(org_id)
    .bind(ids)
    .bind(addresses)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(made, claimed)| match (made, claimed) {
            (true, _) => Claim::MadeBefore,
            (false, true) => Claim::Claimed,
            (false, false) => Claim::Held,
        })
        .collect())
}

/// Who holds each of `addresses` that is held: address → holder.
pub async fn holders(
    conn: &mut PgConnection,
    org_id: OrgId,
    addresses: &[String],
) -> Result<HashMap<String, UserId>> {
    let rows: Vec<(String, UserId)> = sqlx::query_as(
        "SELECT address, user_id FROM address_claims WHERE org_id = $1 AND address = ANY($2)",
    )
    .bind(org_id)
    .bind(addresses)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The users among `ids` in `org_id`, by id.
pub async fn users(
    conn: &mut PgConnection,
    org_id: OrgId,
    ids: &[UserId],
) -> Result<HashMap<UserId, UserRow>> {
    let rows: Vec<UserRow> = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE org_id = $1 AND id = ANY($2)"
    ))
    .bind(org_id)
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|u| (u.id, u)).collect())
}

/// One INVITED user to make: the address is their login and contact address.
pub struct NewInvitee<'a> {
    pub id: UserId,
    pub email: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub position: &'a str,
}

/// Makes `invitees` INVITED users of `org_id` in one statement; returns them in the same order.
pub async fn insert_invited(
    conn: &mut PgConnection,
    org_id: OrgId,
    department_id: Option<DepartmentId>,
    invitees: &[NewInvitee<'_>],
) -> Result<Vec<UserRow>> {
    let ids: Vec<UserId> = invitees.iter().map(|i| i.id).collect();
    let emails: Vec<&str> = invitees.iter().map(|i| i.email).collect();
    let firsts: Vec<&str> = invitees.iter().map(|i| i.first_name).collect();
    let lasts: Vec<&str> = invitees.iter().map(|i| i.last_name).collect();
    let positions: Vec<&str> = invitees.iter().map(|i| i.position).collect();
    let rows: Vec<UserRow> = sqlx::query_as(&format!(
        "INSERT INTO users (id, org_id, state, login_email, contact_email, first_name, last_name, position, department_id, is_admin, password_hash) \
         SELECT t.id, $1, $2, t.email, t.email, t.first, t.last, t.position, $3, false, NULL \
         FROM UNNEST($4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[]) WITH ORDINALITY AS t(id, email, first, last, position, ord) \
         ORDER BY t.ord RETURNING {USER_COLUMNS}"
    ))
    .bind(org_id)
    .bind(UserState::Invited.as_db())
    .bind(department_id)
    .bind(&ids)
    .bind(&emails)
    .bind(&firsts)
    .bind(&lasts)
    .bind(&positions)
    .fetch_all(conn)
    .await?;
    let mut by_id: HashMap<UserId, UserRow> = rows.into_iter().map(|u| (u.id, u)).collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}
