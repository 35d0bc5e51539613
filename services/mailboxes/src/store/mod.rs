//! The registry's tables: mailboxes (with their sealed password), the owners mirrored from
//! identity, and the list views. Only this module writes SQL for them, and every value is
//! bound:
//!
//! - this file: the rows and every read and write of one mailbox, owner or list view;
//! - [`list_query`]: the mailbox list (filter, scope, sort, keyset pages, the total).

pub mod list_query;

use chrono::{DateTime, Utc};
use mailroom_types::{MailboxId, OrgId, UserId};
use sqlx::{PgConnection, PgExecutor};

use crate::domain::{security_from_stored, Crm, ServerSettings, SyncState};
use crate::error::Result;

/// The columns every read selects (`last_sync_time` as NULL until the first sync).
pub const COLUMNS: &str = "id, org_id, owner_user_id, email, name, sender_name, \
    imap_host, imap_port, imap_security, imap_username, \
    smtp_host, smtp_port, smtp_security, smtp_username, \
    in_crm, crm_queue, sync_state, sync_error, \
    CASE WHEN last_sync_time = '-infinity' THEN NULL ELSE last_sync_time END AS last_sync_time, \
    unread_count, message_count, disk_bytes, owner_first_name, owner_last_name, owner_dismissed, \
    create_time, update_time";

/// One mailbox as stored, without its password.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MailboxRow {
    pub id: MailboxId,
    pub org_id: OrgId,
    pub owner_user_id: UserId,
    pub email: String,
    pub name: String,
    pub sender_name: String,
    pub imap_host: String,
    pub imap_port: i32,
    pub imap_security: String,
    pub imap_username: String,
    pub smtp_host: String,
    pub smtp_port: i32,
    pub smtp_security: String,
    pub smtp_username: String,
    pub in_crm: bool,
    pub crm_queue: Vec<UserId>,
    pub sync_state: String,
    pub sync_error: String,
    pub last_sync_time: Option<DateTime<Utc>>,
    pub unread_count: i64,
    pub message_count: i64,
    pub disk_bytes: i64,
    pub owner_first_name: String,
    pub owner_last_name: String,
    pub owner_dismissed: bool,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

impl MailboxRow {
    pub fn imap(&self) -> ServerSettings {
        ServerSettings {
            host: self.imap_host.clone(),
            port: u16::try_from(self.imap_port).unwrap_or(993),
            security: security_from_stored(&self.imap_security),
            username: self.imap_username.clone(),
        }
    }

    pub fn smtp(&self) -> ServerSettings {
        ServerSettings {
            host: self.smtp_host.clone(),
            port: u16::try_from(self.smtp_port).unwrap_or(465),
            security: security_from_stored(&self.smtp_security),
            username: self.smtp_username.clone(),
        }
    }

    pub fn crm(&self) -> Crm {
        Crm {
            in_crm: self.in_crm,
            queue: self.crm_queue.clone(),
        }
    }

    pub fn state(&self) -> SyncState {
        SyncState::from_stored(&self.sync_state)
    }
}

/// Everything a new mailbox is saved with.
pub struct NewMailbox<'a> {
    pub id: MailboxId,
    pub org_id: OrgId,
    pub owner: &'a Owner,
    pub email: &'a str,
    pub name: &'a str,
    pub sender_name: &'a str,
    pub imap: &'a ServerSettings,
    pub smtp: &'a ServerSettings,
    pub crm: &'a Crm,
    pub sealed_password: &'a [u8],
    pub key_id: &'a str,
}

/// A user as identity last described them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Owner {
    pub user_id: UserId,
    pub org_id: OrgId,
    pub first_name: String,
    pub last_name: String,
    pub dismissed: bool,
    pub active: bool,
}

impl Owner {
    pub fn display_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
            .trim()
            .to_owned()
    }
}

/// Whether an insert hit the one-address-per-organisation rule.
pub fn is_duplicate_address(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

pub async fn insert(
    conn: &mut PgConnection,
    m: &NewMailbox<'_>,
) -> Result<MailboxRow, sqlx::Error> {
    let sql = format!(
        "INSERT INTO mailboxes (id, org_id, owner_user_id, email, name, sender_name, \
            imap_host, imap_port, imap_security, imap_username, \
            smtp_host, smtp_port, smtp_security, smtp_username, \
            password_sealed, password_key, in_crm, crm_queue, \
            owner_first_name, owner_last_name, owner_dismissed) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) \
         RETURNING {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(m.id)
        .bind(m.org_id)
        .bind(m.owner.user_id)
        .bind(m.email)
        .bind(m.name)
        .bind(m.sender_name)
        .bind(&m.imap.host)
        .bind(i32::from(m.imap.port))
        .bind(m.imap.security.as_str())
        .bind(&m.imap.username)
        .bind(&m.smtp.host)
        .bind(i32::from(m.smtp.port))
        .bind(m.smtp.security.as_str())
        .bind(&m.smtp.username)
        .bind(m.sealed_password)
        .bind(m.key_id)
        .bind(m.crm.in_crm)
        .bind(&m.crm.queue)
        .bind(&m.owner.first_name)
        .bind(&m.owner.last_name)
        .bind(m.owner.dismissed)
        .fetch_one(conn)
        .await
}

/// A mailbox of `org` (`FOR UPDATE` when `lock`).
pub async fn get<'e>(
    conn: impl PgExecutor<'e>,
    org: OrgId,
    id: MailboxId,
    lock: bool,
) -> Result<Option<MailboxRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM mailboxes WHERE org_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(sqlx::query_as(&sql)
        .bind(org)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// The advisory lock class of an organisation's mailbox count (the second key is the
/// organisation's hash): connects of one organisation count and insert one at a time.
const ORG_COUNT_LOCK: i32 = 0x6d62_0001;

/// Takes the lock on `org`'s mailbox count until the caller's transaction ends, so a count
/// followed by an insert holds under concurrent connects.
pub async fn lock_org_count(conn: &mut PgConnection, org: OrgId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text))")
        .bind(ORG_COUNT_LOCK)
        .bind(org)
        .execute(conn)
        .await?;
    Ok(())
}

/// How many mailboxes `org` has connected.
pub async fn count_in_org<'e>(conn: impl PgExecutor<'e>, org: OrgId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM mailboxes WHERE org_id = $1")
        .bind(org)
        .fetch_one(conn)
        .await
}

/// What [`insert_within_limit`] came to.
#[derive(Debug)]
pub enum Admitted {
    Inserted(Box<MailboxRow>),
    /// The organisation has `count` mailboxes, its limit or more: nothing was inserted.
    Full {
        count: i64,
    },
}

/// Inserts a mailbox if its organisation has fewer than `limit`, counting under the
/// organisation's lock (held until the caller's transaction ends): of concurrent inserts only
/// as many as the limit leaves room for succeed.
pub async fn insert_within_limit(
    conn: &mut PgConnection,
    m: &NewMailbox<'_>,
    limit: u64,
) -> Result<Admitted, sqlx::Error> {
    lock_org_count(conn, m.org_id).await?;
    let count = count_in_org(&mut *conn, m.org_id).await?;
    if u64::try_from(count).unwrap_or(0) >= limit {
        return Ok(Admitted::Full { count });
    }
    Ok(Admitted::Inserted(Box::new(insert(conn, m).await?)))
}

/// What [`claim_sync_now`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncNowClaim {
    /// No sync was asked for within the interval: this caller asks, at this time (stamped).
    Claimed(DateTime<Utc>),
    /// One was asked for at this time, within the interval: nothing more is asked.
    AlreadyQueued(DateTime<Utc>),
    /// The mailbox is gone (disconnected meanwhile).
    Gone,
}

/// Claims "sync now" for a mailbox, in the caller's transaction. The row is locked, so of
/// concurrent callers exactly one claims.
pub async fn claim_sync_now(
    conn: &mut PgConnection,
    id: MailboxId,
    interval: std::time::Duration,
) -> Result<SyncNowClaim> {
    // The database's clock, so replicas agree on the window.
    let pending: Option<(Option<DateTime<Utc>>, bool)> = sqlx::query_as(
        "SELECT CASE WHEN sync_now_time = '-infinity' THEN NULL ELSE sync_now_time END, \
            sync_now_time > now() - make_interval(secs => $2) \
         FROM mailboxes WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .bind(interval.as_secs_f64())
    .fetch_optional(&mut *conn)
    .await?;
    match pending {
        None => return Ok(SyncNowClaim::Gone),
        Some((Some(at), true)) => return Ok(SyncNowClaim::AlreadyQueued(at)),
        Some(_) => {}
    }
    let at = sqlx::query_scalar(
        "UPDATE mailboxes SET sync_now_time = now() WHERE id = $1 RETURNING sync_now_time",
    )
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(SyncNowClaim::Claimed(at))
}

/// The mailbox of `org` connected at `email` (compared case-insensitively), if any.
pub async fn connected_at<'e>(
    conn: impl PgExecutor<'e>,
    org: OrgId,
    email: &str,
) -> Result<Option<MailboxId>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM mailboxes WHERE org_id = $1 AND email_key = lower($2)")
            .bind(org)
            .bind(email)
            .fetch_optional(conn)
            .await?,
    )
}

/// A mailbox by id alone, in any organisation (for services, which act across them).
pub async fn get_any<'e>(conn: impl PgExecutor<'e>, id: MailboxId) -> Result<Option<MailboxRow>> {
    let sql = format!("SELECT {COLUMNS} FROM mailboxes WHERE id = $1");
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(conn).await?)
}

/// The counters and state a sync reported, as of `synced_at`. Each part moves only forward:
/// the counters and "last synced" unless a later sync was recorded, the state unless a later
/// change of state was (a failure, or an edit that un-parked the mailbox).
pub async fn record_synced(
    conn: &mut PgConnection,
    id: MailboxId,
    synced_at: DateTime<Utc>,
    counts: (i64, i64, i64),
) -> Result<()> {
    // Every SET reads the row as it was, so each CASE compares with the stored times. A row
    // not changed since migration 1002 has no state time ('-infinity'): its last sync stands
    // for it, as in `record_failure` (hence GREATEST, not a backfill of the whole table).
    sqlx::query(
        "UPDATE mailboxes SET \
            last_sync_time = CASE WHEN last_sync_time <= $2 THEN $2 ELSE last_sync_time END, \
            message_count = CASE WHEN last_sync_time <= $2 THEN $3 ELSE message_count END, \
            unread_count = CASE WHEN last_sync_time <= $2 THEN $4 ELSE unread_count END, \
            disk_bytes = CASE WHEN last_sync_time <= $2 THEN $5 ELSE disk_bytes END, \
            sync_state = CASE WHEN GREATEST(sync_state_time, last_sync_time) <= $2 THEN 'ok' ELSE sync_state END, \
            sync_error = CASE WHEN GREATEST(sync_state_time, last_sync_time) <= $2 THEN '' ELSE sync_error END, \
            sync_state_time = GREATEST(sync_state_time, $2) \
         WHERE id = $1 AND (last_sync_time <= $2 OR sync_state_time <= $2)",
    )
    .bind(id)
    .bind(synced_at)
    .bind(counts.0)
    .bind(counts.1)
    .bind(counts.2)
    .execute(conn)
    .await?;
    Ok(())
}

/// A mailbox with its sealed password, read together: the password is the one checked with
/// that row's servers.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SealedRow {
    #[sqlx(flatten)]
    pub row: MailboxRow,
    pub password_sealed: Vec<u8>,
}

/// A mailbox with its sealed password, of `org` when one is named (`FOR UPDATE` when `lock`).
pub async fn get_sealed<'e>(
    conn: impl PgExecutor<'e>,
    org: Option<OrgId>,
    id: MailboxId,
    lock: bool,
) -> Result<Option<SealedRow>> {
    let sql = format!(
        "SELECT {COLUMNS}, password_sealed FROM mailboxes \
         WHERE ($1::uuid IS NULL OR org_id = $1) AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(sqlx::query_as(&sql)
        .bind(org)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// What an update changes; `None` leaves a field as it is.
#[derive(Default)]
pub struct Changes {
    pub name: Option<String>,
    pub sender_name: Option<String>,
    pub imap: Option<ServerSettings>,
    pub smtp: Option<ServerSettings>,
    pub crm: Option<Crm>,
    pub sealed_password: Option<(Vec<u8>, String)>,
    /// Un-park an AUTH_FAILED mailbox (its login was just checked); a sync report from before
    /// now no longer changes its state.
    pub reset_state: bool,
}

pub async fn update(conn: &mut PgConnection, id: MailboxId, c: &Changes) -> Result<MailboxRow> {
    let sql = format!(
        "UPDATE mailboxes SET \
            name = COALESCE($2, name), sender_name = COALESCE($3, sender_name), \
            imap_host = COALESCE($4, imap_host), imap_port = COALESCE($5, imap_port), \
            imap_security = COALESCE($6, imap_security), imap_username = COALESCE($7, imap_username), \
            smtp_host = COALESCE($8, smtp_host), smtp_port = COALESCE($9, smtp_port), \
            smtp_security = COALESCE($10, smtp_security), smtp_username = COALESCE($11, smtp_username), \
            in_crm = COALESCE($12, in_crm), crm_queue = COALESCE($13, crm_queue), \
            password_sealed = COALESCE($14, password_sealed), password_key = COALESCE($15, password_key), \
            sync_state = CASE WHEN $16 AND sync_state IN ('auth_failed', 'error') THEN 'pending' ELSE sync_state END, \
            sync_error = CASE WHEN $16 AND sync_state IN ('auth_failed', 'error') THEN '' ELSE sync_error END, \
            sync_state_time = CASE WHEN $16 THEN GREATEST(sync_state_time, now()) ELSE sync_state_time END, \
            update_time = now() \
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(id)
        .bind(c.name.as_deref())
        .bind(c.sender_name.as_deref())
        .bind(c.imap.as_ref().map(|s| s.host.clone()))
        .bind(c.imap.as_ref().map(|s| i32::from(s.port)))
        .bind(c.imap.as_ref().map(|s| s.security.as_str()))
        .bind(c.imap.as_ref().map(|s| s.username.clone()))
        .bind(c.smtp.as_ref().map(|s| s.host.clone()))
        .bind(c.smtp.as_ref().map(|s| i32::from(s.port)))
        .bind(c.smtp.as_ref().map(|s| s.security.as_str()))
        .bind(c.smtp.as_ref().map(|s| s.username.clone()))
        .bind(c.crm.as_ref().map(|c| c.in_crm))
        .bind(c.crm.as_ref().map(|c| c.queue.clone()))
        .bind(c.sealed_password.as_ref().map(|(p, _)| p.clone()))
        .bind(c.sealed_password.as_ref().map(|(_, k)| k.clone()))
        .bind(c.reset_state)
        .fetch_one(conn)
        .await?)
}

pub async fn transfer(conn: &mut PgConnection, id: MailboxId, to: &Owner) -> Result<MailboxRow> {
    let sql = format!(
        "UPDATE mailboxes SET owner_user_id = $2, owner_first_name = $3, owner_last_name = $4, \
            owner_dismissed = $5, update_time = now() WHERE id = $1 RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(id)
        .bind(to.user_id)
        .bind(&to.first_name)
        .bind(&to.last_name)
        .bind(to.dismissed)
        .fetch_one(conn)
        .await?)
}

pub async fn delete(conn: &mut PgConnection, id: MailboxId) -> Result<()> {
    sqlx::query("DELETE FROM mailboxes WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A user of `org` as last mirrored.
pub async fn owner<'e>(
    conn: impl PgExecutor<'e>,
    org: OrgId,
    user: UserId,
) -> Result<Option<Owner>> {
    Ok(sqlx::query_as(
        "SELECT user_id, org_id, first_name, last_name, dismissed, active FROM users \
         WHERE org_id = $1 AND user_id = $2",
    )
    .bind(org)
    .bind(user)
    .fetch_optional(conn)
    .await?)
}

/// Which of `users` are active users of `org`, as last mirrored.
pub async fn active_users<'e>(
    conn: impl PgExecutor<'e>,
    org: OrgId,
    users: &[UserId],
) -> Result<Vec<UserId>> {
    Ok(sqlx::query_scalar(
        "SELECT user_id FROM users WHERE org_id = $1 AND active AND user_id = ANY($2)",
    )
    .bind(org)
    .bind(users)
    .fetch_all(conn)
    .await?)
}

/// Makes a mirrored user match identity's snapshot and copies the name and state into their
/// mailboxes' rows.
pub async fn mirror_user(conn: &mut PgConnection, user: &Owner) -> Result<()> {
    sqlx::query(
        "INSERT INTO users (user_id, org_id, first_name, last_name, dismissed, active) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (user_id) DO UPDATE SET first_name = EXCLUDED.first_name, \
            last_name = EXCLUDED.last_name, dismissed = EXCLUDED.dismissed, active = EXCLUDED.active \
         WHERE users.org_id = EXCLUDED.org_id",
    )
    .bind(user.user_id)
    .bind(user.org_id)
    .bind(&user.first_name)
    .bind(&user.last_name)
    .bind(user.dismissed)
    .bind(user.active)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE mailboxes SET owner_first_name = $3, owner_last_name = $4, owner_dismissed = $5 \
         WHERE org_id = $1 AND owner_user_id = $2 \
           AND (owner_first_name, owner_last_name, owner_dismissed) IS DISTINCT FROM ($3, $4, $5)",
    )
    .bind(user.org_id)
    .bind(user.user_id)
    .bind(&user.first_name)
    .bind(&user.last_name)
    .bind(user.dismissed)
    .execute(conn)
    .await?;
    Ok(())
}

/// A saved list view.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListViewRow {
    pub columns: Vec<String>,
    pub filter: String,
    pub order_by: String,
    pub page_size: i32,
}

pub async fn list_view<'e>(conn: impl PgExecutor<'e>, user: UserId) -> Result<Option<ListViewRow>> {
    Ok(sqlx::query_as(
        "SELECT columns, filter, order_by, page_size FROM list_views WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(conn)
    .await?)
}

pub async fn save_list_view<'e>(
    conn: impl PgExecutor<'e>,
    user: UserId,
    org: OrgId,
    view: &ListViewRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO list_views (user_id, org_id, columns, filter, order_by, page_size) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (user_id) DO UPDATE SET columns = EXCLUDED.columns, filter = EXCLUDED.filter, \
            order_by = EXCLUDED.order_by, page_size = EXCLUDED.page_size, update_time = now()",
    )
    .bind(user)
    .bind(org)
    .bind(&view.columns)
    .bind(&view.filter)
    .bind(&view.order_by)
    .bind(view.page_size)
    .execute(conn)
    .await?;
    Ok(())
}

/// Up to `limit` mailboxes whose password is sealed under another key than `key_id`, locked
/// for re-sealing (others re-sealing at once skip them).
pub async fn stale_sealed(
    conn: &mut PgConnection,
    key_id: &str,
    limit: i64,
) -> Result<Vec<(MailboxId, Vec<u8>)>> {
    Ok(sqlx::query_as(
        "SELECT id, password_sealed FROM mailboxes WHERE password_key <> $1 \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(key_id)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

pub async fn reseal(
    conn: &mut PgConnection,
    id: MailboxId,
    sealed: &[u8],
    key_id: &str,
) -> Result<()> {
    sqlx::query("UPDATE mailboxes SET password_sealed = $2, password_key = $3 WHERE id = $1")
        .bind(id)
        .bind(sealed)
        .bind(key_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn count_stale_sealed<'e>(conn: impl PgExecutor<'e>, key_id: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM mailboxes WHERE password_key <> $1")
            .bind(key_id)
            .fetch_one(conn)
            .await?,
    )
}

/// A failed sync's state and message, as of `at` (when the failure was reported), applied only
/// if nothing set the state since the attempt began (`began`, or `at` for a report without
/// it): a newer sync, a newer failure, or an edit that un-parked the mailbox, even one made
/// while the attempt was still waiting for the server's answer.
pub async fn record_failure<'e>(
    conn: impl PgExecutor<'e>,
    id: MailboxId,
    state: SyncState,
    error: &str,
    at: DateTime<Utc>,
    began: Option<DateTime<Utc>>,
) -> Result<()> {
    sqlx::query(
        "UPDATE mailboxes SET sync_state = $2, sync_error = $3, \
         sync_state_time = GREATEST(sync_state_time, $4) \
         WHERE id = $1 AND GREATEST(sync_state_time, last_sync_time) <= LEAST($4, COALESCE($5, $4))",
    )
    .bind(id)
    .bind(state.as_str())
    .bind(error)
    .bind(at)
    .bind(began)
    .execute(conn)
    .await?;
    Ok(())
}
