//! The schedule: every mailbox the registry has, and when it is next due.
//!
//! Invariant: a mailbox is handed out only when it is not parked and its `next_due` has
//! passed, by the database's clock (`now()`, one clock for every replica). Every change of
//! `next_due` is one of: due at once (connected, settings changed, news from IDLE), pulled in
//! (an owner became more active; never pushed out that way), pushed out by the hold when the
//! scheduler hands it out, or set by the worker that finished (the owner's tier's interval,
//! or a back-off after a failure). A failure of a sync that read login settings older than
//! the current ones is not held against the mailbox.
//!
//! Checked against a naive in-memory schedule in `tests/schedule_model.rs`.

use chrono::{DateTime, Utc};
use mailroom_types::{MailboxId, OrgId, UserId};
use sqlx::{PgConnection, PgExecutor};

use crate::domain::Tier;
use crate::error::FailureKind;

/// A mailbox as the schedule knows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScheduleRow {
    pub mailbox_id: MailboxId,
    pub org_id: OrgId,
    pub owner_user_id: UserId,
    pub in_crm: bool,
    pub next_due: DateTime<Utc>,
    pub last_sync: Option<DateTime<Utc>>,
    pub last_duration_ms: i64,
    pub last_error: String,
    pub last_error_kind: String,
    pub failures: i32,
    pub parked: bool,
    /// The owner's tier when the next sync was planned, as [`Tier::code`] stores it.
    pub tier: i16,
    /// When the last sync attempt began (requests made before it are answered by it, once
    /// it finished).
    pub last_started_at: Option<DateTime<Utc>>,
    /// When the last sync attempt that recorded its outcome finished.
    pub last_finished_at: Option<DateTime<Utc>>,
}

impl ScheduleRow {
    /// The tier the mailbox was last planned at.
    pub fn tier(&self) -> Tier {
        Tier::from_code(self.tier)
    }
}

const SCHEDULE_COLUMNS: &str = "mailbox_id, org_id, owner_user_id, in_crm, next_due, last_sync, \
    last_duration_ms, last_error, last_error_kind, failures, parked, tier, last_started_at, \
    last_finished_at";

/// A mailbox the registry connected (or described again): due at once when new.
pub async fn upsert_mailbox(
    conn: &mut PgConnection,
    mailbox: MailboxId,
    org: OrgId,
    owner: UserId,
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
pub async fn unpark(conn: &mut PgConnection, mailbox: MailboxId) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE schedule SET parked = false, failures = 0, last_error = '', last_error_kind = '', \
         next_due = now(), settings_changed_at = now() WHERE mailbox_id = $1",
    )
    .bind(mailbox)
    .execute(conn)
    .await?;
    Ok(())
}

/// A disconnected mailbox leaves the schedule and the index (its folders and messages), and
/// its fence moves on, so a sync under way writes nothing of it again.
pub async fn forget_mailbox(conn: &mut PgConnection, mailbox: MailboxId) -> sqlx::Result<()> {
    super::fences::retire(&mut *conn, mailbox).await?;
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
    mailbox: MailboxId,
) -> sqlx::Result<Option<ScheduleRow>> {
    sqlx::query_as(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedule WHERE mailbox_id = $1"
    ))
    .bind(mailbox)
    .fetch_optional(conn)
    .await
}

/// The organisation a mailbox belongs to, if the schedule has it.
pub async fn org_of<'e>(
    conn: impl PgExecutor<'e>,
    mailbox: MailboxId,
) -> sqlx::Result<Option<OrgId>> {
    let row: Option<(OrgId,)> = sqlx::query_as("SELECT org_id FROM schedule WHERE mailbox_id = $1")
        .bind(mailbox)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|(org,)| org))
}

/// Messages indexed for the organisation's other mailboxes, as their folders' checkpoints
/// count them (a checkpoint is saved only when the index holds what it counts): what the
/// organisation's limit is checked against, besides the mailbox's own exact count.
pub async fn org_messages_besides<'e>(
    conn: impl PgExecutor<'e>,
    org: OrgId,
    mailbox: MailboxId,
) -> sqlx::Result<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(sum(f.messages), 0)::bigint FROM folders f \
         JOIN schedule s ON s.mailbox_id = f.mailbox_id \
         WHERE s.org_id = $1 AND s.mailbox_id <> $2",
    )
    .bind(org)
    .bind(mailbox)
    .fetch_one(conn)
    .await?;
    Ok(n)
}

/// A mailbox the scheduler handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Due {
    pub mailbox_id: MailboxId,
    pub org_id: OrgId,
    /// As [`Tier::code`] stores it.
    pub tier: i16,
}

/// Takes up to `limit` due mailboxes, the longest due first, and pushes their due time out by
/// `hold` (the time a worker has to report before the work is handed out again). Rows another
/// scheduler replica holds are skipped, so no two replicas hand out the same mailbox.
pub async fn take_due(
    conn: &mut PgConnection,
    limit: i64,
    hold: std::time::Duration,
) -> sqlx::Result<Vec<Due>> {
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

/// Whether any mailbox is due now: one look at the front of `schedule_due`, so that a tick
/// with nothing to hand out (every tick at rest) needs no transaction.
pub async fn any_due<'e>(conn: impl PgExecutor<'e>) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM schedule WHERE NOT parked AND next_due <= now())",
    )
    .fetch_one(conn)
    .await
}

/// A mailbox whose lease was held elsewhere (or whose server is being connected to too
/// often) is looked at again after `after`, unless it is due sooner anyway.
pub async fn retry_soon<'e>(
    conn: impl PgExecutor<'e>,
    mailbox: MailboxId,
    after: std::time::Duration,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE schedule SET next_due = LEAST(next_due, now() + make_interval(secs => $2)) \
         WHERE mailbox_id = $1",
    )
    .bind(mailbox)
    .bind(after.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(())
}

/// Mailboxes whose owner is active (tier 1) and that are not parked: the ones held in IDLE.
pub async fn active_mailboxes<'e>(conn: impl PgExecutor<'e>) -> sqlx::Result<Vec<MailboxId>> {
    let rows: Vec<(MailboxId,)> = sqlx::query_as(
        "SELECT mailbox_id FROM schedule WHERE tier = 1 AND NOT parked ORDER BY mailbox_id",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Something changed on the server (IDLE said so): the mailbox is due now.
pub async fn pull_in<'e>(conn: impl PgExecutor<'e>, mailbox: MailboxId) -> sqlx::Result<()> {
    sqlx::query("UPDATE schedule SET next_due = now() WHERE mailbox_id = $1 AND next_due > now()")
        .bind(mailbox)
        .execute(conn)
        .await?;
    Ok(())
}

/// How many mailboxes are overdue, for each `(tier, allowed)` asked: the mailboxes planned at
/// that tier that are not parked, not failing (a failure's back-off is no worker's backlog,
/// and more workers do not mend a mail server), and whose last successful sync — or, never
/// synced, their connection — is older than `allowed` (the tier's interval and a grace).
///
/// This is the workers' backlog: unlike `next_due`, which the scheduler pushes out when it
/// hands a mailbox out, nothing but a finished sync lowers it. One range scan of
/// `schedule_freshness` per tier, so its cost follows the overdue mailboxes.
pub async fn overdue_by_tier<'e>(
    conn: impl PgExecutor<'e>,
    allowed: &[(Tier, std::time::Duration)],
) -> sqlx::Result<Vec<(i16, i64)>> {
    let tiers: Vec<i16> = allowed.iter().map(|(t, _)| t.code()).collect();
    let secs: Vec<f64> = allowed.iter().map(|(_, d)| d.as_secs_f64()).collect();
    sqlx::query_as(
        "SELECT t.tier, (SELECT count(*) FROM schedule s \
            WHERE NOT s.parked AND s.failures = 0 AND s.tier = t.tier \
            AND COALESCE(s.last_sync, s.connected_at) < now() - make_interval(secs => t.secs)) \
         FROM unnest($1::smallint[], $2::float8[]) AS t(tier, secs)",
    )
    .bind(tiers)
    .bind(secs)
    .fetch_all(conn)
    .await
}

/// How many mailboxes are due now and not yet handed out, by tier code: the scheduler's own
/// lag (the scheduler pushes a mailbox's due time out as it hands it out, so this is no
/// measure of the workers; see [`overdue_by_tier`]).
pub async fn due_by_tier<'e>(conn: impl PgExecutor<'e>) -> sqlx::Result<Vec<(i16, i64)>> {
    sqlx::query_as(
        "SELECT tier, count(*) FROM schedule WHERE NOT parked AND next_due <= now() GROUP BY tier",
    )
    .fetch_all(conn)
    .await
}

/// A sync attempt begins at `at`: requests made before it need no other (`None`, or an
/// earlier time, puts back what an unfinished attempt replaced).
pub async fn mark_started<'e>(
    conn: impl PgExecutor<'e>,
    mailbox: MailboxId,
    at: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE schedule SET last_started_at = $2 WHERE mailbox_id = $1")
        .bind(mailbox)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// A sync attempt finished at `at` (its outcome recorded in the same transaction): the
/// requests made before it began are answered.
pub async fn mark_finished<'e>(
    conn: impl PgExecutor<'e>,
    mailbox: MailboxId,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE schedule SET last_finished_at = $2 WHERE mailbox_id = $1")
        .bind(mailbox)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// What a successful sync leaves in the mailbox's status: its `note` (such as folders it
/// skipped for their names), kept as `last_error` of kind `note`; '' clears it.
pub const NOTE_KIND: &str = "note";

/// A finished sync: when the next is due and at which tier, and its note ('' for none).
/// False when the mailbox has left the schedule meanwhile (disconnected during the sync).
pub async fn record_success(
    conn: &mut PgConnection,
    mailbox: MailboxId,
    synced_at: DateTime<Utc>,
    duration_ms: i64,
    next_due: DateTime<Utc>,
    tier: Tier,
    note: &str,
) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "UPDATE schedule SET last_sync = $2, last_duration_ms = $3, failures = 0, last_error = $6, \
         last_error_kind = CASE WHEN $6 = '' THEN '' ELSE $7 END, parked = false, next_due = $4, tier = $5 \
         WHERE mailbox_id = $1",
    )
    .bind(mailbox)
    .bind(synced_at)
    .bind(duration_ms)
    .bind(next_due)
    .bind(tier.code())
    .bind(note)
    .bind(NOTE_KIND)
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

/// A failed sync, as the mailbox's schedule keeps it.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    pub kind: FailureKind,
    pub message: &'a str,
    /// Parked: no retries until the login settings change.
    pub park: bool,
    /// When to try again (a back-off).
    pub next_due: DateTime<Utc>,
    /// When the failed sync read the login settings it used.
    pub login_read_at: DateTime<Utc>,
}

/// A failed sync: counted, and the mailbox planned again (or parked), unless the mailbox
/// is gone or its settings were replaced after the sync read them.
pub async fn record_failure(
    conn: &mut PgConnection,
    mailbox: MailboxId,
    failure: Failure<'_>,
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
    if changed_at.is_some_and(|at| at > failure.login_read_at) {
        return Ok(FailureRecorded::Stale);
    }
    let (failures,): (i32,) = sqlx::query_as(
        "UPDATE schedule SET failures = failures + 1, last_error = $2, last_error_kind = $3, \
         parked = $4, next_due = $5 WHERE mailbox_id = $1 RETURNING failures",
    )
    .bind(mailbox)
    .bind(failure.message)
    .bind(failure.kind.name())
    .bind(failure.park)
    .bind(failure.next_due)
    .fetch_one(conn)
    .await?;
    Ok(FailureRecorded::Recorded {
        was_parked,
        failures,
    })
}

/// An owner became more active: each of their mailboxes planned for later than `due` is
/// pulled in to `due` at `tier`. Returns how many moved.
pub async fn pull_in_owner<'e>(
    conn: impl PgExecutor<'e>,
    owner: UserId,
    due: DateTime<Utc>,
    tier: Tier,
) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "UPDATE schedule SET next_due = $2, tier = $3 \
         WHERE owner_user_id = $1 AND NOT parked AND next_due > $2",
    )
    .bind(owner)
    .bind(due)
    .bind(tier.code())
    .execute(conn)
    .await?
    .rows_affected())
}
