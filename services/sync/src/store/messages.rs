//! The message index: one row per message (UID, flags, size, date, a compact envelope),
//! written by the sync and read by ListMessages and GetMessageBody.
//!
//! Invariant: a batch of new messages and the folder's `last_uid` that covers it are written
//! in one transaction (with the batch's events for the feed, by the engine), so a crash
//! neither loses nor repeats a message; [`insert_batch`] says which rows are new to the index,
//! so a message goes to the feed when, and only when, it first enters the index; flag updates
//! touch only rows whose flags changed; a message leaves the index only when the server no
//! longer lists it. Pages are read newest first by keyset (`internal_date, folder, uid`),
//! never by offset.

use chrono::{DateTime, Utc};
use mailroom_types::MailboxId;
use sqlx::{PgConnection, PgPool};

use super::fences::WriteError;

use crate::domain::{uid_from_db, uid_to_db};

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

/// Writes a batch of new messages and moves the folder's `last_uid` past them, in the
/// caller's (fenced) transaction: a crash before the commit loses the batch and its
/// checkpoint together (the next run fetches it again), after it neither is repeated. Returns
/// the UIDs the index did not hold before, ascending (a row already there only has its flags
/// brought up to date).
///
/// A batch with no indexed row within its UIDs' span (an import; one probe of the primary
/// key says so) is a plain INSERT: `ON CONFLICT` costs PostgreSQL a speculative insertion per
/// row, about a third more than the insert itself. No other writer adds rows to the mailbox
/// meanwhile (the fence's share lock holds a newer holder's claim until this transaction
/// ends); were one to, the insert fails on the primary key and nothing of the batch is
/// written. Any other batch (a repair, a repeated batch) is inserted with `ON CONFLICT`.
pub async fn insert_batch(
    conn: &mut PgConnection,
    mailbox: MailboxId,
    folder: i32,
    rows: &[NewRow],
    generation: i64,
) -> Result<Vec<u32>, WriteError> {
    let (Some(min_uid), Some(max_uid)) = (
        rows.iter().map(|r| r.uid).min(),
        rows.iter().map(|r| r.uid).max(),
    ) else {
        return Ok(Vec::new());
    };
    let mut uids = Vec::with_capacity(rows.len());
    let mut flags = Vec::with_capacity(rows.len());
    let mut keywords = Vec::with_capacity(rows.len());
    let mut sizes = Vec::with_capacity(rows.len());
    let mut dates = Vec::with_capacity(rows.len());
    let mut envelopes: Vec<&[u8]> = Vec::with_capacity(rows.len());
    // A UID twice in one batch would fail the plain INSERT: the first is kept (rows usually
    // come in ascending order, and then nothing is looked up).
    let ascending = rows.windows(2).all(|w| w[0].uid < w[1].uid);
    let mut taken = std::collections::HashSet::new();
    for r in rows {
        if !ascending && !taken.insert(r.uid) {
            continue;
        }
        uids.push(uid_to_db(r.uid));
        flags.push(r.flags);
        keywords.push(r.keywords.as_deref());
        sizes.push(i32::try_from(r.size).unwrap_or(i32::MAX));
        dates.push(r.internal_date);
        envelopes.push(r.envelope.as_slice());
    }
    // An import's batch lies above everything indexed: one probe of the primary key says so.
    let (overlaps,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM messages \
                        WHERE mailbox_id = $1 AND folder_id = $2 AND uid BETWEEN $3 AND $4)",
    )
    .bind(mailbox)
    .bind(folder)
    .bind(uid_to_db(min_uid))
    .bind(uid_to_db(max_uid))
    .fetch_one(&mut *conn)
    .await?;
    let statement = if overlaps {
        "INSERT INTO messages (mailbox_id, folder_id, uid, flags, keywords, size, internal_date, envelope) \
         SELECT $1, $2, u.uid, u.flags, u.keywords, u.size, u.internal_date, u.envelope \
         FROM UNNEST($3::int4[], $4::int2[], $5::text[], $6::int4[], $7::timestamptz[], $8::bytea[]) \
           AS u(uid, flags, keywords, size, internal_date, envelope) \
         ON CONFLICT (mailbox_id, folder_id, uid) DO NOTHING \
         RETURNING uid"
    } else {
        "INSERT INTO messages (mailbox_id, folder_id, uid, flags, keywords, size, internal_date, envelope) \
         SELECT $1, $2, u.uid, u.flags, u.keywords, u.size, u.internal_date, u.envelope \
         FROM UNNEST($3::int4[], $4::int2[], $5::text[], $6::int4[], $7::timestamptz[], $8::bytea[]) \
           AS u(uid, flags, keywords, size, internal_date, envelope) \
         RETURNING uid"
    };
    let inserted: Vec<(i32,)> = sqlx::query_as(statement)
        .bind(mailbox)
        .bind(folder)
        .bind(&uids)
        .bind(&flags)
        .bind(&keywords)
        .bind(&sizes)
        .bind(&dates)
        .bind(&envelopes)
        .fetch_all(&mut *conn)
        .await?;
    let mut inserted: Vec<u32> = inserted.into_iter().map(|(u,)| uid_from_db(u)).collect();
    inserted.sort_unstable();
    if inserted.len() < rows.len() {
        // Rows the index had (a repair, a repeated batch): their flags as the server says.
        let known: Vec<(u32, i16, Option<String>)> = rows
            .iter()
            .filter(|r| inserted.binary_search(&r.uid).is_err())
            .map(|r| (r.uid, r.flags, r.keywords.clone()))
            .collect();
        update_flags(&mut *conn, mailbox, folder, &known).await?;
    }
    super::folders::advance_last_uid(conn, mailbox, folder, max_uid, generation).await?;
    Ok(inserted)
}

/// New flags for indexed messages (in the caller's fenced transaction); rows whose flags are
/// unchanged are left alone. Returns how many changed.
pub async fn update_flags(
    conn: &mut PgConnection,
    mailbox: MailboxId,
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
    .execute(conn)
    .await?
    .rows_affected())
}

/// The UIDs the index holds for a folder, ascending.
pub async fn indexed_uids(
    pool: &PgPool,
    mailbox: MailboxId,
    folder: i32,
) -> sqlx::Result<Vec<u32>> {
    let rows: Vec<(i32,)> = sqlx::query_as(
        "SELECT uid FROM messages WHERE mailbox_id = $1 AND folder_id = $2 ORDER BY uid",
    )
    .bind(mailbox)
    .bind(folder)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(u,)| uid_from_db(u)).collect())
}

pub async fn indexed_count(pool: &PgPool, mailbox: MailboxId, folder: i32) -> sqlx::Result<i64> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM messages WHERE mailbox_id = $1 AND folder_id = $2")
            .bind(mailbox)
            .bind(folder)
            .fetch_one(pool)
            .await?;
    Ok(n)
}

/// Every message the index holds for a mailbox (what its limit counts).
pub async fn mailbox_count(pool: &PgPool, mailbox: MailboxId) -> sqlx::Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages WHERE mailbox_id = $1")
        .bind(mailbox)
        .fetch_one(pool)
        .await?;
    Ok(n)
}

/// Messages expunged on the server leave the index (in the caller's fenced transaction).
pub async fn delete_uids(
    conn: &mut PgConnection,
    mailbox: MailboxId,
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
    .execute(conn)
    .await?
    .rows_affected())
}

/// Messages the server said are gone (QRESYNC's `VANISHED`, as UID ranges, however wide)
/// leave the index, those at or below `up_to` only (what the answer covered), in the
/// caller's fenced transaction. Returns how many left.
pub async fn delete_uid_ranges(
    conn: &mut PgConnection,
    mailbox: MailboxId,
    folder: i32,
    ranges: &[std::ops::RangeInclusive<u32>],
    up_to: u32,
) -> sqlx::Result<u64> {
    let (low, high): (Vec<i32>, Vec<i32>) = ranges
        .iter()
        .filter(|r| *r.start() <= up_to && r.start() <= r.end())
        .map(|r| (uid_to_db(*r.start()), uid_to_db((*r.end()).min(up_to))))
        .unzip();
    if low.is_empty() {
        return Ok(0);
    }
    Ok(sqlx::query(
        "DELETE FROM messages m USING UNNEST($3::int4[], $4::int4[]) AS r(low, high) \
         WHERE m.mailbox_id = $1 AND m.folder_id = $2 AND m.uid BETWEEN r.low AND r.high",
    )
    .bind(mailbox)
    .bind(folder)
    .bind(&low)
    .bind(&high)
    .execute(conn)
    .await?
    .rows_affected())
}

/// The sum of message sizes in the index (the disk figure where the server has no QUOTA).
pub async fn total_size(pool: &PgPool, mailbox: MailboxId) -> sqlx::Result<i64> {
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

/// A page of a mailbox's messages, newest first, optionally in one folder, and only unseen
/// (`unseen: Some(true)`) or only seen (`Some(false)`) ones.
pub async fn list_messages(
    pool: &PgPool,
    mailbox: MailboxId,
    folder: Option<i32>,
    unseen: Option<bool>,
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
               AND ($3::bool IS NULL OR (m.flags & 1 = 0) = $3) \
               AND ($4::timestamptz IS NULL OR (m.internal_date, m.folder_id, m.uid) < ($4, $5, $6)) \
             ORDER BY m.internal_date DESC, m.folder_id DESC, m.uid DESC LIMIT $7",
        )
        .bind(mailbox)
        .bind(folder)
        .bind(unseen)
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

/// The size of an indexed message of the mailbox's `folder`, if the index holds it
/// (GetMessageBody reads only what was indexed).
pub async fn message_size(
    pool: &PgPool,
    mailbox: MailboxId,
    folder: i32,
    uid: u32,
) -> sqlx::Result<Option<i32>> {
    let row: Option<(i32,)> = sqlx::query_as(
        "SELECT m.size FROM messages m JOIN folders f ON f.id = m.folder_id \
         WHERE m.mailbox_id = $1 AND f.mailbox_id = $1 AND f.id = $2 AND m.uid = $3",
    )
    .bind(mailbox)
    .bind(folder)
    .bind(uid_to_db(uid))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(s,)| s))
}
