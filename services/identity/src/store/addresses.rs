//! Addresses: who holds one (claims), moving one away (transfers and their audit trail), a
//! user's pending login change, and the addresses of connected mailboxes.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use mailroom_platform::types::{MailboxId, OrgId, UserId};
use sqlx::{FromRow, PgConnection, Row};
use uuid::Uuid;

use super::{user_columns_of_u, users, UserRow};
use crate::domain::{EmailAddress, UserState};
use crate::error::{IdentityError, Result};

/// Claims `address` for `user_id`; ALREADY_EXISTS, naming the holder and the way out, when
/// someone else holds it (dismissed or not).
pub async fn claim(
    conn: &mut PgConnection,
    org_id: OrgId,
    address: &EmailAddress,
    user_id: UserId,
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
    let holder_id: UserId =
        sqlx::query_scalar("SELECT user_id FROM address_claims WHERE org_id = $1 AND address = $2")
            .bind(org_id)
            .bind(address.as_str())
            .fetch_one(&mut *conn)
            .await?;
    if holder_id == user_id {
        return Ok(());
    }
    let holder = users::get(conn, org_id, holder_id).await?;
    Err(taken_by(address, &holder))
}

/// The refusal of `address` to anyone but `holder`, who holds it: naming the holder, what
/// they use it as, and the way out.
pub fn taken_by(address: &EmailAddress, holder: &UserRow) -> IdentityError {
    let mut uses = Vec::new();
    if holder.login_email == address.as_str() {
        uses.push("login");
    }
    if holder.contact_email == address.as_str() {
        uses.push("contact address");
    }
    let state = holder.state();
    IdentityError::AddressTaken {
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
    }
}

/// Who holds a claim on `address`, if anyone.
pub async fn holder(
    conn: &mut PgConnection,
    org_id: OrgId,
    address: &EmailAddress,
) -> Result<Option<UserId>> {
    Ok(
        sqlx::query_scalar("SELECT user_id FROM address_claims WHERE org_id = $1 AND address = $2")
            .bind(org_id)
            .bind(address.as_str())
            .fetch_optional(conn)
            .await?,
    )
}

/// Drops `user_id`'s claim on `address` once neither of their fields shows it any more.
pub async fn release_if_unused(
    conn: &mut PgConnection,
    org_id: OrgId,
    address: &str,
    user_id: UserId,
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

/// Who uses `address`, read with the caller's standing in one statement: the users holding
/// a claim on it (at most one) and the owners of connected mailboxes with it (mirrored from
/// the registry). `None` when `caller` is not an active admin of `org_id`; then neither is
/// read (the lookups sit under a one-time filter on the standing, which `OFFSET 0` keeps
/// the planner from inlining into each of them: it is read once).
pub async fn usage_for_admin(
    conn: &mut PgConnection,
    org_id: OrgId,
    caller: UserId,
    address: &EmailAddress,
) -> Result<Option<AddressHolders>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let columns = user_columns_of_u();
        format!(
            "SELECT a.admin, h.* FROM \
             (SELECT coalesce((SELECT state = 'active' AND is_admin FROM users WHERE org_id = $1 AND id = $3), false) AS admin OFFSET 0) a \
             LEFT JOIN LATERAL ( \
               SELECT false AS mailbox, {columns} FROM address_claims c JOIN users u ON u.id = c.user_id \
                WHERE a.admin AND c.org_id = $1 AND c.address = $2 \
               UNION ALL \
               SELECT true, {columns} FROM mailbox_addresses m JOIN users u ON u.id = m.owner_user_id \
                WHERE a.admin AND m.org_id = $1 AND m.address = $2 \
             ) h ON true ORDER BY h.mailbox"
        )
    });
    let rows = sqlx::query(&SQL)
        .bind(org_id)
        .bind(address.as_str())
        .bind(caller)
        .fetch_all(conn)
        .await?;
    let mut holders = AddressHolders::default();
    for row in &rows {
        if !row.try_get::<bool, _>("admin")? {
            return Ok(None);
        }
        match row.try_get::<Option<bool>, _>("mailbox")? {
            None => {}
            Some(false) => holders.claimants.push(UserRow::from_row(row)?),
            Some(true) => holders.mailbox_owners.push(UserRow::from_row(row)?),
        }
    }
    // Not one row: the one-row standing always gives one; said as a refusal all the same.
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(holders))
}

/// Who uses an address ([`usage_for_admin`]).
#[derive(Debug, Default)]
pub struct AddressHolders {
    /// The users who hold a claim on it (at most one).
    pub claimants: Vec<UserRow>,
    /// The owners of connected mailboxes with it.
    pub mailbox_owners: Vec<UserRow>,
}

/// Puts `tombstone` wherever `user_id` shows `address` (login, contact or both).
pub async fn replace_with_tombstone(
    conn: &mut PgConnection,
    user_id: UserId,
    address: &EmailAddress,
    tombstone: &EmailAddress,
) -> Result<()> {
    sqlx::query(
        "UPDATE users SET login_email = CASE WHEN login_email = $2 THEN $3 ELSE login_email END, \
         contact_email = CASE WHEN contact_email = $2 THEN $3 ELSE contact_email END, updated_at = now() WHERE id = $1",
    )
    .bind(user_id)
    .bind(address.as_str())
    .bind(tombstone.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes `address` the login (`as_login`) or the contact address of `user_id`.
pub async fn assign(
    conn: &mut PgConnection,
    user_id: UserId,
    address: &EmailAddress,
    as_login: bool,
) -> Result<()> {
    let column = if as_login {
        "login_email"
    } else {
        "contact_email"
    };
    sqlx::query(&format!(
        "UPDATE users SET {column} = $2, updated_at = now() WHERE id = $1"
    ))
    .bind(user_id)
    .bind(address.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// One TransferEmailAddress, for the audit trail.
pub struct TransferRecord<'a> {
    pub org_id: OrgId,
    pub address: &'a EmailAddress,
    pub from: UserId,
    pub to: Option<UserId>,
    pub as_kind: &'a str,
    pub tombstone: &'a EmailAddress,
    pub actor: &'a str,
}

/// Writes the audit row of a transfer; returns when it happened.
pub async fn record_transfer(
    conn: &mut PgConnection,
    t: TransferRecord<'_>,
) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO address_transfers (id, org_id, address, from_user_id, to_user_id, as_kind, tombstone, actor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING transferred_at",
    )
    .bind(Uuid::now_v7())
    .bind(t.org_id)
    .bind(t.address.as_str())
    .bind(t.from)
    .bind(t.to)
    .bind(t.as_kind)
    .bind(t.tombstone.as_str())
    .bind(t.actor)
    .fetch_one(conn)
    .await?)
}

/// Records (or replaces) `user_id`'s pending login change; returns when its code expires.
pub async fn put_login_change(
    conn: &mut PgConnection,
    user_id: UserId,
    new_login: &EmailAddress,
    code_hash: &[u8],
    ttl_secs: i64,
) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO login_email_changes (user_id, new_address, code_hash, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) \
         ON CONFLICT (user_id) DO UPDATE SET new_address = $2, code_hash = $3, attempts = 0, \
           expires_at = now() + make_interval(secs => $4), created_at = now() \
         RETURNING expires_at",
    )
    .bind(user_id)
    .bind(new_login.as_str())
    .bind(code_hash)
    .bind(ttl_secs as f64)
    .fetch_one(conn)
    .await?)
}

/// A pending login change, locked.
pub struct PendingLoginChange {
    pub new_address: String,
    pub code_hash: Vec<u8>,
    pub attempts: i32,
    pub expired: bool,
}

pub async fn lock_login_change(
    conn: &mut PgConnection,
    user_id: UserId,
) -> Result<Option<PendingLoginChange>> {
    let row: Option<(String, Vec<u8>, i32, bool)> = sqlx::query_as(
        "SELECT new_address, code_hash, attempts, expires_at < now() FROM login_email_changes WHERE user_id = $1 FOR UPDATE",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(
        |(new_address, code_hash, attempts, expired)| PendingLoginChange {
            new_address,
            code_hash,
            attempts,
            expired,
        },
    ))
}

pub async fn count_wrong_code(conn: &mut PgConnection, user_id: UserId) -> Result<()> {
    sqlx::query("UPDATE login_email_changes SET attempts = attempts + 1 WHERE user_id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn drop_login_change(conn: &mut PgConnection, user_id: UserId) -> Result<()> {
    sqlx::query("DELETE FROM login_email_changes WHERE user_id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a connected mailbox's address and owner (the mailbox as it is now).
pub async fn put_mailbox(
    conn: &mut PgConnection,
    id: MailboxId,
    org_id: OrgId,
    address: &str,
    owner: UserId,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO mailbox_addresses (mailbox_id, org_id, address, owner_user_id) VALUES ($1, $2, lower($3), $4) \
         ON CONFLICT (mailbox_id) DO UPDATE SET address = EXCLUDED.address, owner_user_id = EXCLUDED.owner_user_id",
    )
    .bind(id)
    .bind(org_id)
    .bind(address)
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets a disconnected mailbox's address.
pub async fn drop_mailbox(conn: &mut PgConnection, id: MailboxId) -> Result<()> {
    sqlx::query("DELETE FROM mailbox_addresses WHERE mailbox_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
