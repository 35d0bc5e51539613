//! All of identity's SQL, and the rows it reads into. Every query names the organisation (or a
//! user or token that belongs to one), so nothing crosses from one organisation to another.
//!
//! - this module: the rows and their columns, and NOT_FOUND in the caller's words;
//! - [`orgs`]: organisations, their row lock ([`LockedOrg`]) and the seats taken;
//! - [`users`]: user rows, and what sign-in and the admin check read of them;
//! - [`directory`]: the directory listing (its filters, orders and keyset pages);
//! - [`departments`]: the tree, its cycle check, subordinates and supervisors;
//! - [`addresses`]: address claims, transfers, login changes and connected mailboxes;
//! - [`sessions`]: refresh tokens and password-reset links.

pub mod addresses;
pub mod departments;
pub mod directory;
pub mod invitees;
pub mod orgs;
pub mod sessions;
pub mod users;

use std::fmt;

use chrono::{DateTime, Utc};
use mailroom_platform::types::{DepartmentId, OrgId, UserId};

use crate::domain::UserState;
use crate::error::IdentityError;

pub use orgs::LockedOrg;

pub const USER_COLUMNS: &str =
    "id, org_id, state, login_email, contact_email, first_name, last_name, \
     position, department_id, is_admin, created_at, updated_at, dismissed_at";

/// [`USER_COLUMNS`] of the table aliased `u`, for joins.
fn user_columns_of_u() -> String {
    USER_COLUMNS
        .split(", ")
        .map(|c| format!("u.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: UserId,
    pub org_id: OrgId,
    pub state: String,
    pub login_email: String,
    pub contact_email: String,
    pub first_name: String,
    pub last_name: String,
    pub position: String,
    pub department_id: Option<DepartmentId>,
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
    pub id: OrgId,
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

pub const DEPARTMENT_COLUMNS: &str =
    "id, org_id, name, parent_id, head_user_id, created_at, updated_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DepartmentRow {
    pub id: DepartmentId,
    pub org_id: OrgId,
    pub name: String,
    pub parent_id: Option<DepartmentId>,
    pub head_user_id: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// NOT_FOUND for `what` (user, department, organisation) `id`.
pub fn not_found(what: &'static str, id: impl fmt::Display) -> IdentityError {
    IdentityError::NotFound {
        what,
        id: id.to_string(),
    }
}
