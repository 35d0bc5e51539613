//! The sync's tables: the schedule (every mailbox and when it is next due), each folder's
//! checkpoint, and the message index. Writes that belong together (a batch of messages and
//! the checkpoint that covers it) take the caller's transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::{uid_from_db, uid_to_db};

/// A mailbox as the schedule knows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub mailbox_id: Uuid,
    pub org_id: Uuid,
    pub owner_user_id: Uuid,
    pub in_crm: bool,
    pub next_due: DateTime<Utc>,
    pub last_sync: Option<DateTime<Utc>>,
    pub last_duration_ms: i64,
    pub last_error: String,
    pub last_error_kind: String,
    pub failures: i32,
    pub parked: bool,
    pub tier: i16,
}

const SCHEDULE_COLUMNS: &str = "mailbox_id, org_id, owner_user_id, in_crm, next_due, last_sync, \
    last_duration_ms, last_error, last_error_kind, failures, parked, tier";

/// A mailbox the registry connected (or described again): due at once when new.
pub async fn upsert_mailbox(
    conn: &mut PgConnection,
    mailbox: Uuid,
    org: Uuid,
    owner: Uuid,
    in_crm: bool,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO schedule (mailbox_id, org_id, owner_user_id, in_crm) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (mailbox_id) DO UPDATE SET owner_user_id = EXCLUDED.owner_user_id, in_crm = EXCLUDED.in_crm",
    )
    .bind(mailbox)
    .bind(org)
    .bind(owner)
    .bind(in_crm)
    .execute(conn)
    .await?;
    Ok(())
}

/// Settings that decide the login changed: un-park and sync at once.
pub async fn unpark(conn: &mut PgConnection, mailbox: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE schedule SET parked = false, failures = 0, last_error = '', last_error_kind = '', \
         next_due = now(), settings_changed_at = now() WHERE mailbox_id = $1",
    )
    .bind(mailbox)
    .execute(conn)
    .await?;
    Ok(())
}

/// A disconnected mailbox leaves the schedule and the index.
pub async fn forget_mailbox(conn: &mut PgConnection, mailbox: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM messages WHERE mailbox_id = $1")
        .bind(mailbox)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM folders WHERE mailbox_id = $1")
        .bind(mailbox)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM schedule WHERE mailbox_id = $1")
        .bind(mailbox)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn schedule_row<'e>(
    conn: impl PgExecutor<'e>,
    mailbox: Uuid,
) -> sqlx::Result<Option<ScheduleRow>> {
    sqlx::query_as(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedule WHERE mailbox_id = $1"
    ))
    .bind(mailbox)
    .fetch_optional(conn)
    .await
}

/// Takes up to `limit` due mailboxes and pushes their due time out by `hold` (the time a
/// worker has to report before the work is handed out again). Rows another scheduler
/// replica holds are skipped, so no two replicas hand out the same mailbox.
pub async fn take_due(
    conn: &mut PgConnection,
    limit: i64,
    hold: std::time::Duration,
) -> sqlx::Result<Vec<(Uuid, Uuid, i16)>> {
    sqlx::query_as(
        "WITH due AS ( \
            SELECT mailbox_id FROM schedule WHERE NOT parked AND next_due <= now() \
            ORDER BY next_due LIMIT $1 FOR UPDATE SKIP LOCKED) \
         UPDATE schedule s SET next_due = now() + make_interval(secs => $2) \
         FROM due WHERE s.mailbox_id = due.mailbox_id \
         RETURNING s.mailbox_id, s.org_id, s.tier",
    )
    .bind(limit)
    .bind(hold.as_secs_f64())
    .fetch_all(conn)
    .await
}

/// A mailbox whose lease was held elsewhere is looked at again after `after` (unless it is
/// due sooner anyway).
pub async fn retry_soon(
    pool: &PgPool,
    mailbox: Uuid,
    after: std::time::Duration,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE schedule SET next_due = LEAST(next_due, now() + make_interval(secs => $2)) \
         WHERE mailbox_id = $1",
    )
    .bind(mailbox)
    .bind(after.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// Mailboxes whose owner is active (tier 1) and that are not parked: the ones held in IDLE.
pub async fn active_mailboxes(pool: &PgPool) -> sqlx::Result<Vec<Uuid>> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT mailbox_id FROM schedule WHERE tier = 1 AND NOT parked ORDER BY mailbox_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Something changed on the server (IDLE said so): the mailbox is due now.
pub async fn pull_in(pool: &PgPool, mailbox: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE schedule SET next_due = now() WHERE mailbox_id = $1 AND next_due > now()")
        .bind(mailbox)
        .execute(pool)
        .await?;
    Ok(())
}

/// How many mailboxes are due now, by tier (a gauge for scaling).
pub async fn due_by_tier(pool: &PgPool) -> sqlx::Result<Vec<(i16, i64)>> {
    sqlx::query_as(
        "SELECT tier, count(*) FROM schedule WHERE NOT parked AND next_due <= now() GROUP BY tier",
    )
    .fetch_all(pool)
    .await
}

/// A finished sync: when the next is due and at which tier. False when the mailbox has left
/// the schedule meanwhile (disconnected during the sync).
pub async fn record_success(
    conn: &mut PgConnection,
    mailbox: Uuid,
    synced_at: DateTime<Utc>,
    duration_ms: i64,
    next_due: DateTime<Utc>,
    tier: i16,
) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "UPDATE schedule SET last_sync = $2, last_duration_ms = $3, failures = 0, last_error = '', \
         last_error_kind = '', parked = false, next_due = $4, tier = $5 \
         WHERE mailbox_id = $1",
    )
    .bind(mailbox)
    .bind(synced_at)
    .bind(duration_ms)
    .bind(next_due)
    .bind(tier)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// What recording a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureRecorded {
    /// The mailbox has left the schedule.
    Gone,
    /// Its login settings changed after the failed sync read them: not held against it.
    Stale,
    /// Recorded; whether it was parked before, and the failures so far.
    Recorded { was_parked: bool, failures: i32 },
}

/// A failed sync whose login settings were read at `login_read_at`.
pub async fn record_failure(
    conn: &mut PgConnection,
    mailbox: Uuid,
    kind: &str,
    message: &str,
    park: bool,
    next_due: DateTime<Utc>,
    login_read_at: DateTime<Utc>,
) -> sqlx::Result<FailureRecorded> {
    let before: Option<(bool, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT parked, settings_changed_at FROM schedule WHERE mailbox_id = $1 FOR UPDATE",
    )
    .bind(mailbox)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((was_parked, changed_at)) = before else {
        return Ok(FailureRecorded::Gone);
    };
    if changed_at.is_some_and(|at| at > login_read_at) {
        return Ok(FailureRecorded::Stale);
    }
    let (failures,): (i32,) = sqlx::query_as(
        "UPDATE schedule SET failures = failures + 1, last_error = $2, last_error_kind = $3, \
         parked = $4, next_due = $5 WHERE mailbox_id = $1 RETURNING failures",
    )
    .bind(mailbox)
    .bind(message)
    .bind(kind)
    .bind(park)
    .bind(next_due)
    .fetch_one(conn)
    .await?;
    Ok(FailureRecorded::Recorded {
        was_parked,
        failures,
    })
}

/// An owner became more active: each of their mailboxes planned for later than `due` is
/// pulled in to `due`. Returns how many moved.
pub async fn pull_in_owner(
    pool: &PgPool,
    owner: Uuid,
    due: DateTime<Utc>,
    tier: i16,
) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "UPDATE schedule SET next_due = $2, tier = $3 \
         WHERE owner_user_id = $1 AND NOT parked AND next_due > $2",
    )
    .bind(owner)
    .bind(due)
    .bind(tier)
    .execute(pool)
    .await?
    .rows_affected())
}

/// A folder's checkpoint.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FolderRow {
    pub id: i32,
    pub name: String,
    pub special_use: String,
    pub uid_validity: i64,
    pub uid_next: i64,
    pub highest_modseq: i64,
    pub messages: i64,
    pub unseen: i64,
    pub last_uid: i64,
}

const FOLDER_COLUMNS: &str =
    "id, name, special_use, uid_validity, uid_next, highest_modseq, messages, unseen, last_uid";

pub async fn folders<'e>(conn: impl PgExecutor<'e>, mailbox: Uuid) -> sqlx::Result<Vec<FolderRow>> {
    sqlx::query_as(&format!(
        "SELECT {FOLDER_COLUMNS} FROM folders WHERE mailbox_id = $1 ORDER BY name"
    ))
    .bind(mailbox)
    .fetch_all(conn)
    .await
}

pub async fn folder_by_name<'e>(
    conn: impl PgExecutor<'e>,
    mailbox: Uuid,
    name: &str,
) -> sqlx::Result<Option<FolderRow>> {
    sqlx::query_as(&format!(
        "SELECT {FOLDER_COLUMNS} FROM folders WHERE mailbox_id = $1 AND name = $2"
    ))
    .bind(mailbox)
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// The folder's row, made when first seen.
pub async fn ensure_folder(
    pool: &PgPool,
    mailbox: Uuid,
    name: &str,
    special_use: &str,
) -> sqlx::Result<FolderRow> {
    sqlx::query_as(&format!(
        "INSERT INTO folders (mailbox_id, name, special_use) VALUES ($1, $2, $3) \
         ON CONFLICT (mailbox_id, name) DO UPDATE SET special_use = EXCLUDED.special_use \
         RETURNING {FOLDER_COLUMNS}"
    ))
    .bind(mailbox)
    .bind(name)
    .bind(special_use)
    .fetch_one(pool)
    .await
}

/// A folder gone from the server leaves the index with its messages.
pub async fn drop_folder(pool: &PgPool, mailbox: Uuid, folder: i32) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM messages WHERE mailbox_id = $1 AND folder_id = $2")
        .bind(mailbox)
        .bind(folder)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM folders WHERE id = $1")
        .bind(folder)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// UIDVALIDITY changed: the folder's UIDs mean nothing any more; it starts again, in one
/// transaction with dropping its rows.
pub async fn reset_folder(
    pool: &PgPool,
    mailbox: Uuid,
    folder: i32,
    uid_validity: u32,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM messages WHERE mailbox_id = $1 AND folder_id = $2")
        .bind(mailbox)
        .bind(folder)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE folders SET uid_validity = $2, uid_next = 0, highest_modseq = 0, messages = 0, \
         unseen = 0, last_uid = 0 WHERE id = $1",
    )
    .bind(folder)
    .bind(i64::from(uid_validity))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// What STATUS said, saved once the folder's changes are in the index.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint {
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    pub messages: u32,
    pub unseen: u32,
}

pub async fn save_checkpoint(pool: &PgPool, folder: i32, cp: Checkpoint) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE folders SET uid_validity = $2, uid_next = $3, highest_modseq = $4, messages = $5, \
         unseen = $6 WHERE id = $1",
    )
    .bind(folder)
    .bind(i64::from(cp.uid_validity))
    .bind(i64::from(cp.uid_next))
    .bind(i64::try_from(cp.highest_modseq).unwrap_or(i64::MAX))
    .bind(i64::from(cp.messages))
    .bind(i64::from(cp.unseen))
    .execute(pool)
    .await?;
    Ok(())
}

/// One message for the index.
#[derive(Debug, Clone)]
pub struct NewRow {
    pub uid: u32,
    pub flags: i16,
    pub keywords: Option<String>,
    pub size: u32,
    pub internal_date: DateTime<Utc>,
    pub envelope: Vec<u8>,
}

/// Writes a batch of new messages and moves the folder's `last_uid` past them, in one
/// transaction: a crash before the commit loses the batch and its checkpoint together (the
/// next run fetches it again), after it neither is repeated.
pub async fn insert_batch(
    pool: &PgPool,
    mailbox: Uuid,
    folder: i32,
    rows: &[NewRow],
) -> sqlx::Result<()> {
    let Some(max_uid) = rows.iter().map(|r| r.uid).max() else {
        return Ok(());
    };
    let mut uids = Vec::with_capacity(rows.len());
    let mut flags = Vec::with_capacity(rows.len());
    let mut keywords = Vec::with_capacity(rows.len());
    let mut sizes = Vec::with_capacity(rows.len());
    let mut dates = Vec::with_capacity(rows.len());
    let mut envelopes = Vec::with_capacity(rows.len());
    for r in rows {
        uids.push(uid_to_db(r.uid));
        flags.push(r.flags);
        keywords.push(r.keywords.clone());
        sizes.push(i32::try_from(r.size).unwrap_or(i32::MAX));
        dates.push(r.internal_date);
        envelopes.push(r.envelope.clone());
    }
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO messages (mailbox_id, folder_id, uid, flags, keywords, size, internal_date, envelope) \
         SELECT $1, $2, u.uid, u.flags, u.keywords, u.size, u.internal_date, u.envelope \
         FROM UNNEST($3::int4[], $4::int2[], $5::text[], $6::int4[], $7::timestamptz[], $8::bytea[]) \
           AS u(uid, flags, keywords, size, internal_date, envelope) \
         ON CONFLICT (mailbox_id, folder_id, uid) DO UPDATE SET flags = EXCLUDED.flags, keywords = EXCLUDED.keywords",
    )
    .bind(mailbox)
    .bind(folder)
    .bind(&uids)
    .bind(&flags)
    .bind(&keywords)
    .bind(&sizes)
    .bind(&dates)
    .bind(&envelopes)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE folders SET last_uid = GREATEST(last_uid, $2) WHERE id = $1")
        .bind(folder)
        .bind(i64::from(max_uid))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// New flags for indexed messages; rows whose flags are unchanged are left alone. Returns how
/// many changed.
pub async fn update_flags(
    pool: &PgPool,
    mailbox: Uuid,
    folder: i32,
    changes: &[(u32, i16, Option<String>)],
) -> sqlx::Result<u64> {
    if changes.is_empty() {
        return Ok(0);
    }
    let uids: Vec<i32> = changes.iter().map(|c| uid_to_db(c.0)).collect();
    let flags: Vec<i16> = changes.iter().map(|c| c.1).collect();
    let keywords: Vec<Option<String>> = changes.iter().map(|c| c.2.clone()).collect();
    Ok(sqlx::query(
        "UPDATE messages m SET flags = u.flags, keywords = u.keywords \
         FROM UNNEST($3::int4[], $4::int2[], $5::text[]) AS u(uid, flags, keywords) \
         WHERE m.mailbox_id = $1 AND m.folder_id = $2 AND m.uid = u.uid \
           AND (m.flags, m.keywords) IS DISTINCT FROM (u.flags, u.keywords)",
    )
    .bind(mailbox)
    .bind(folder)
    .bind(&uids)
    .bind(&flags)
    .bind(&keywords)
    .execute(pool)
    .await?
    .rows_affected())
}

/// The UIDs the index holds for a folder, ascending.
pub async fn indexed_uids(pool: &PgPool, mailbox: Uuid, folder: i32) -> sqlx::Result<Vec<u32>> {
    let rows: Vec<(i32,)> = sqlx::query_as(
        "SELECT uid FROM messages WHERE mailbox_id = $1 AND folder_id = $2 ORDER BY uid",
    )
    .bind(mailbox)
    .bind(folder)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(u,)| uid_from_db(u)).collect())
}

pub async fn indexed_count(pool: &PgPool, mailbox: Uuid, folder: i32) -> sqlx::Result<i64> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM messages WHERE mailbox_id = $1 AND folder_id = $2")
            .bind(mailbox)
            .bind(folder)
            .fetch_one(pool)
            .await?;
    Ok(n)
}

/// Messages expunged on the server leave the index.
pub async fn delete_uids(
    pool: &PgPool,
    mailbox: Uuid,
    folder: i32,
    uids: &[u32],
) -> sqlx::Result<u64> {
    if uids.is_empty() {
        return Ok(0);
    }
    let stored: Vec<i32> = uids.iter().map(|u| uid_to_db(*u)).collect();
    Ok(sqlx::query(
        "DELETE FROM messages WHERE mailbox_id = $1 AND folder_id = $2 AND uid = ANY($3)",
    )
    .bind(mailbox)
    .bind(folder)
    .bind(&stored)
    .execute(pool)
    .await?
    .rows_affected())
}

/// The sum of message sizes in the index (the disk figure where the server has no QUOTA).
pub async fn total_size(pool: &PgPool, mailbox: Uuid) -> sqlx::Result<i64> {
    let (n,): (Option<i64>,) =
        sqlx::query_as("SELECT sum(size)::int8 FROM messages WHERE mailbox_id = $1")
            .bind(mailbox)
            .fetch_one(pool)
            .await?;
    Ok(n.unwrap_or(0))
}

/// An indexed message as ListMessages shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub folder: String,
    pub uid: i32,
    pub flags: i16,
    pub keywords: Option<String>,
    pub size: i32,
    pub internal_date: DateTime<Utc>,
    pub envelope: Vec<u8>,
}

/// Where a page starts: after this (internal_date, folder, uid), newest first.
#[derive(Debug, Clone, Copy)]
pub struct After {
    pub internal_date: DateTime<Utc>,
    pub folder_id: i32,
    pub uid: i32,
}

/// A page of a mailbox's messages, newest first, optionally in one folder and only unseen.
pub async fn list_messages(
    pool: &PgPool,
    mailbox: Uuid,
    folder: Option<i32>,
    unseen_only: bool,
    after: Option<After>,
    limit: i64,
) -> sqlx::Result<Vec<(i32, MessageRow)>> {
    type Row = (
        i32,
        String,
        i32,
        i16,
        Option<String>,
        i32,
        DateTime<Utc>,
        Vec<u8>,
    );
    let rows: Vec<Row> =
        sqlx::query_as(
            "SELECT m.folder_id, f.name, m.uid, m.flags, m.keywords, m.size, m.internal_date, m.envelope \
             FROM messages m JOIN folders f ON f.id = m.folder_id \
             WHERE m.mailbox_id = $1 AND ($2::int4 IS NULL OR m.folder_id = $2) \
               AND (NOT $3 OR m.flags & 1 = 0) \
               AND ($4::timestamptz IS NULL OR (m.internal_date, m.folder_id, m.uid) < ($4, $5, $6)) \
             ORDER BY m.internal_date DESC, m.folder_id DESC, m.uid DESC LIMIT $7",
        )
        .bind(mailbox)
        .bind(folder)
        .bind(unseen_only)
        .bind(after.map(|a| a.internal_date))
        .bind(after.map(|a| a.folder_id).unwrap_or(0))
        .bind(after.map(|a| a.uid).unwrap_or(0))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.0,
                MessageRow {
                    folder: r.1,
                    uid: r.2,
                    flags: r.3,
                    keywords: r.4,
                    size: r.5,
                    internal_date: r.6,
                    envelope: r.7,
                },
            )
        })
        .collect())
}

/// Whether the index holds this message (GetMessageBody reads only what was indexed).
pub async fn message_size(
    pool: &PgPool,
    mailbox: Uuid,
    folder: &str,
    uid: u32,
) -> sqlx::Result<Option<i32>> {
    let row: Option<(i32,)> = sqlx::query_as(
        "SELECT m.size FROM messages m JOIN folders f ON f.id = m.folder_id \
         WHERE m.mailbox_id = $1 AND f.mailbox_id = $1 AND f.name = $2 AND m.uid = $3",
    )
    .bind(mailbox)
    .bind(folder)
    .bind(uid_to_db(uid))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(s,)| s))
}
