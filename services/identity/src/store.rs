//! Identity's rows and the queries more than one operation needs. Every query names the
//! organisation, so nothing crosses from one organisation to another.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{EmailAddress, UserState};
use crate::error::{IdentityError, Result};

pub const USER_COLUMNS: &str =
    "id, org_id, state, login_email, contact_email, first_name, last_name, \
     position, department_id, is_admin, created_at, updated_at, dismissed_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub state: String,
    pub login_email: String,
    pub contact_email: String,
    pub first_name: String,
    pub last_name: String,
    pub position: String,
    pub department_id: Option<Uuid>,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub dismissed_at: Option<DateTime<Utc>>,
}

impl UserRow {
    pub fn state(&self) -> UserState {
        UserState::from_db(&self.state)
    }

    pub fn display_name(&self) -> String {
        let name = format!("{} {}", self.first_name, self.last_name);
        let name = name.trim();
        if name.is_empty() {
            self.login_email.clone()
        } else {
            name.to_owned()
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrgRow {
    pub id: Uuid,
    pub display_name: String,
    pub seat_limit: i32,
    pub allow_everyone_to_invite: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Seats taken (invited and active users), as of the statement that read the row.
    pub seats_used: i64,
    /// Of those, INVITED users.
    pub invited_users: i64,
}

/// The columns of an [`OrgRow`] without counting seats (`seats_used` reads 0): for the row
/// lock that every seat-taking change takes, which counts only when it needs to.
const ORG_COLUMNS_UNCOUNTED: &str =
    "id, display_name, seat_limit, allow_everyone_to_invite, created_at, updated_at, 0::bigint AS seats_used, 0::bigint AS invited_users";

/// The columns of an [`OrgRow`], usable in SELECT and RETURNING.
pub const ORG_COLUMNS: &str = "id, display_name, seat_limit, allow_everyone_to_invite, created_at, updated_at, \
     (SELECT count(*) FROM users u WHERE u.org_id = organizations.id AND u.state IN ('invited', 'active')) AS seats_used, \
     (SELECT count(*) FROM users u WHERE u.org_id = organizations.id AND u.state = 'invited') AS invited_users";

pub const DEPARTMENT_COLUMNS: &str =
    "id, org_id, name, parent_id, head_user_id, created_at, updated_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DepartmentRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub parent_id: Option<Uuid>,
    pub head_user_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A user of the organisation, or NOT_FOUND.
pub async fn user(conn: &mut PgConnection, org_id: Uuid, id: Uuid) -> Result<UserRow> {
    sqlx::query_as::<_, UserRow>(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE org_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found("user", id))
}

/// The same, locked for the rest of the transaction.
pub async fn user_for_update(conn: &mut PgConnection, org_id: Uuid, id: Uuid) -> Result<UserRow> {
    sqlx::query_as::<_, UserRow>(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE org_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found("user", id))
}

pub async fn department(conn: &mut PgConnection, org_id: Uuid, id: Uuid) -> Result<DepartmentRow> {
    sqlx::query_as::<_, DepartmentRow>(&format!(
        "SELECT {DEPARTMENT_COLUMNS} FROM departments WHERE org_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found("department", id))
}

/// Locks the organisation row: seat counting, the last-admin rule and the department tree
/// change under this lock, so concurrent calls cannot each see room for one more.
pub async fn org_for_update(conn: &mut PgConnection, org_id: Uuid) -> Result<OrgRow> {
    sqlx::query_as::<_, OrgRow>(&format!(
        "SELECT {ORG_COLUMNS_UNCOUNTED} \
         FROM organizations WHERE id = $1 FOR UPDATE",
    ))
    .bind(org_id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found("organisation", org_id))
}

pub fn not_found(what: &'static str, id: impl ToString) -> IdentityError {
    IdentityError::NotFound {
        what,
        id: id.to_string(),
    }
}

/// Claims `address` for `user_id`; ALREADY_EXISTS, naming the holder and the way out, when
/// someone else holds it (dismissed or not).
pub async fn claim(
    conn: &mut PgConnection,
    org_id: Uuid,
    address: &EmailAddress,
    user_id: Uuid,
) -> Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO address_claims (org_id, address, user_id) VALUES ($1, $2, $3) ON CONFLICT (org_id, address) DO NOTHING",
    )
    .bind(org_id)
    .bind(address.as_str())
    .bind(user_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(());
    }
    let holder_id: Uuid =
        sqlx::query_scalar("SELECT user_id FROM address_claims WHERE org_id = $1 AND address = $2")
            .bind(org_id)
            .bind(address.as_str())
            .fetch_one(&mut *conn)
            .await?;
    if holder_id == user_id {
        return Ok(());
    }
    let holder = user(conn, org_id, holder_id).await?;
    let mut uses = Vec::new();
    if holder.login_email == address.as_str() {
        uses.push("login");
    }
    if holder.contact_email == address.as_str() {
        uses.push("contact address");
    }
    let state = holder.state();
    Err(IdentityError::AddressTaken {
        address: address.to_string(),
        uses: if uses.is_empty() { "address".into() } else { uses.join(" and ") },
        holder: holder.display_name(),
        state: state.describe(),
        way_out: match state {
            UserState::Dismissed => {
                "a dismissed user keeps their addresses: an admin can move it with TransferEmailAddress (`mailroom ctl address transfer`)"
            }
            _ => "use another address, or change theirs first",
        },
    })
}

/// Drops `user_id`'s claim on `address` once neither of their fields shows it any more.
pub async fn release_if_unused(
    conn: &mut PgConnection,
    org_id: Uuid,
    address: &str,
    user_id: Uuid,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM address_claims c WHERE c.org_id = $1 AND c.address = $2 AND c.user_id = $3 \
         AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = $3 AND (u.login_email = $2 OR u.contact_email = $2))",
    )
    .bind(org_id)
    .bind(address)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Users of the organisation that count against its seats.
pub async fn seats_in_use(conn: &mut PgConnection, org_id: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE org_id = $1 AND state IN ('invited', 'active')",
    )
    .bind(org_id)
    .fetch_one(conn)
    .await?)
}

/// Refuses when one more seat would exceed the organisation's limit (0 = unlimited).
pub async fn ensure_seat(conn: &mut PgConnection, org: &OrgRow) -> Result<()> {
    if org.seat_limit > 0 && seats_in_use(conn, org.id).await? >= i64::from(org.seat_limit) {
        return Err(IdentityError::SeatLimit {
            limit: org.seat_limit,
        });
    }
    Ok(())
}
