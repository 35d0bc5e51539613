//! User rows: made, read, changed, removed; and what sign-in and admin checks read of them.
//! The directory listing is [`super::directory`].

use mailroom_platform::types::{DepartmentId, OrgId, UserId};
use sqlx::PgConnection;

use super::{not_found, UserRow, USER_COLUMNS};
use crate::domain::{EmailAddress, UserState};
use crate::error::Result;

/// A user of the organisation, or NOT_FOUND.
pub async fn get(conn: &mut PgConnection, org_id: OrgId, id: UserId) -> Result<UserRow> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE org_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found("user", id))
}

/// The same, locked for the rest of the transaction.
pub async fn lock(conn: &mut PgConnection, org_id: OrgId, id: UserId) -> Result<UserRow> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE org_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found("user", id))
}

/// Locks a user's row by id alone: revoking sessions, setting a password and signing in
/// serialise on it.
pub async fn lock_row(conn: &mut PgConnection, id: UserId) -> Result<()> {
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Holds a user's row shared while tokens are issued for them.
pub async fn share_row(conn: &mut PgConnection, id: UserId) -> Result<()> {
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR SHARE")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A user to insert.
pub struct NewUser<'a> {
    pub id: UserId,
    pub org_id: OrgId,
    pub state: UserState,
    pub login: &'a EmailAddress,
    pub contact: &'a EmailAddress,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub position: &'a str,
    pub department_id: Option<DepartmentId>,
    pub admin: bool,
    pub password_hash: Option<String>,
}

/// Inserts a user whose addresses the transaction has claimed.
pub async fn insert(conn: &mut PgConnection, u: NewUser<'_>) -> Result<UserRow> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO users (id, org_id, state, login_email, contact_email, first_name, last_name, position, department_id, is_admin, password_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {USER_COLUMNS}"
    ))
    .bind(u.id)
    .bind(u.org_id)
    .bind(u.state.as_db())
    .bind(u.login.as_str())
    .bind(u.contact.as_str())
    .bind(u.first_name)
    .bind(u.last_name)
    .bind(u.position)
    .bind(u.department_id)
    .bind(u.admin)
    .bind(u.password_hash)
    .fetch_one(conn)
    .await?)
}

/// Writes what UpdateUser may change: names, position, department and contact address.
pub async fn update_profile(conn: &mut PgConnection, user: &UserRow) -> Result<()> {
    sqlx::query(
        "UPDATE users SET first_name = $3, last_name = $4, position = $5, department_id = $6, contact_email = $7, updated_at = now() \
         WHERE org_id = $1 AND id = $2",
    )
    .bind(user.org_id)
    .bind(user.id)
    .bind(&user.first_name)
    .bind(&user.last_name)
    .bind(&user.position)
    .bind(user.department_id)
    .bind(&user.contact_email)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn dismiss(conn: &mut PgConnection, id: UserId) -> Result<()> {
    sqlx::query(
        "UPDATE users SET state = 'dismissed', dismissed_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Back from dismissal: ACTIVE with a password, INVITED without.
pub async fn rehire(conn: &mut PgConnection, id: UserId) -> Result<()> {
    sqlx::query(
        "UPDATE users SET state = CASE WHEN password_hash IS NULL THEN 'invited' ELSE 'active' END, \
         dismissed_at = NULL, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_admin(conn: &mut PgConnection, id: UserId, admin: bool) -> Result<()> {
    sqlx::query("UPDATE users SET is_admin = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(admin)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_password(conn: &mut PgConnection, id: UserId, hash: String) -> Result<()> {
    sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_login(conn: &mut PgConnection, id: UserId, login: &EmailAddress) -> Result<()> {
    sqlx::query("UPDATE users SET login_email = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(login.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// An INVITED user made ACTIVE with a password; an empty name keeps the one invited with.
pub async fn activate(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: UserId,
    password_hash: String,
    first_name: &str,
    last_name: &str,
) -> Result<UserRow> {
    Ok(sqlx::query_as(&format!(
        "UPDATE users SET state = 'active', password_hash = $3, \
         first_name = CASE WHEN $4 = '' THEN first_name ELSE $4 END, \
         last_name = CASE WHEN $5 = '' THEN last_name ELSE $5 END, updated_at = now() \
         WHERE org_id = $1 AND id = $2 RETURNING {USER_COLUMNS}"
    ))
    .bind(org_id)
    .bind(id)
    .bind(password_hash)
    .bind(first_name)
    .bind(last_name)
    .fetch_one(conn)
    .await?)
}

/// Active admins of the organisation other than `except`.
pub async fn other_active_admins(
    conn: &mut PgConnection,
    org_id: OrgId,
    except: UserId,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE org_id = $1 AND id <> $2 AND is_admin AND state = 'active'",
    )
    .bind(org_id)
    .bind(except)
    .fetch_one(conn)
    .await?)
}

/// A user's state and admin flag as they are now, if they are of the organisation.
pub async fn standing(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: UserId,
) -> Result<Option<(UserState, bool)>> {
    let row: Option<(String, bool)> =
        sqlx::query_as("SELECT state, is_admin FROM users WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(state, admin)| (UserState::from_db(&state), admin)))
}

/// A user's login, if the user exists in the organisation.
pub async fn login_of(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: UserId,
) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT login_email FROM users WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Removes a user and everything that is theirs alone: the departments they head lose their
/// head, their claims, pending login change and refresh tokens go.
pub async fn remove(conn: &mut PgConnection, org_id: OrgId, id: UserId) -> Result<()> {
    sqlx::query(
        "UPDATE departments SET head_user_id = NULL WHERE org_id = $1 AND head_user_id = $2",
    )
    .bind(org_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM address_claims WHERE org_id = $1 AND user_id = $2")
        .bind(org_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM login_email_changes WHERE user_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM users WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// An active account a login address may sign in to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub id: UserId,
    pub org_id: OrgId,
    pub is_admin: bool,
    pub password_hash: Option<String>,
}

/// The one active account a sign-in with this login tries: the named organisation's, or,
/// when none is named, the one whose organisation's claim on the address is the oldest (so an
/// organisation that claims the address later can never take the place of the one that held it
/// first).
pub async fn sign_in_candidate(
    conn: &mut PgConnection,
    login: &EmailAddress,
    org_id: Option<OrgId>,
) -> Result<Option<Candidate>> {
    Ok(sqlx::query_as(
        "SELECT u.id, u.org_id, u.is_admin, u.password_hash FROM users u \
         JOIN address_claims c ON c.org_id = u.org_id AND c.address = u.login_email AND c.user_id = u.id \
         WHERE u.login_email = $1 AND u.state = 'active' AND ($2::uuid IS NULL OR u.org_id = $2) \
         ORDER BY c.claimed_at, u.org_id LIMIT 1",
    )
    .bind(login.as_str())
    .bind(org_id)
    .fetch_optional(conn)
    .await?)
}

/// What a token is issued on, re-read under a shared lock of the row: state, password hash,
/// admin flag.
pub async fn sign_in_standing(
    conn: &mut PgConnection,
    id: UserId,
) -> Result<Option<(UserState, Option<String>, bool)>> {
    let row: Option<(String, Option<String>, bool)> =
        sqlx::query_as("SELECT state, password_hash, is_admin FROM users WHERE id = $1 FOR SHARE")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(state, hash, admin)| (UserState::from_db(&state), hash, admin)))
}

/// A token holder's organisation, state and admin flag.
pub async fn token_standing(
    conn: &mut PgConnection,
    id: UserId,
) -> Result<Option<(OrgId, UserState, bool)>> {
    let row: Option<(OrgId, String, bool)> =
        sqlx::query_as("SELECT org_id, state, is_admin FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(org, state, admin)| (org, UserState::from_db(&state), admin)))
}

/// An active user's password hash.
pub async fn active_password_hash(conn: &mut PgConnection, id: UserId) -> Result<Option<String>> {
    let hash: Option<Option<String>> =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1 AND state = 'active'")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(hash.flatten())
}

/// Every active account that signs in with `login`, with its organisation's name.
pub async fn active_accounts_with_login(
    conn: &mut PgConnection,
    login: &EmailAddress,
) -> Result<Vec<(UserId, String)>> {
    Ok(sqlx::query_as(
        "SELECT u.id, o.display_name FROM users u JOIN organizations o ON o.id = u.org_id \
         WHERE u.login_email = $1 AND u.state = 'active'",
    )
    .bind(login.as_str())
    .fetch_all(conn)
    .await?)
}
