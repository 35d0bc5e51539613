//! The changelog: every change, in revision order, under one lock.
//!
//! A writer holds [`lock_changelog`] from its first change until it commits, draws its revision
//! last ([`record`]) and notifies [`CHANNEL`]; so revisions commit in the order they were drawn
//! and a reader that has seen revision N has seen everything before it. Replicas tail the
//! records ([`records_after`]) and reload from the tables when they fall behind what
//! [`prune`] has removed ([`pruned_through`]).

use std::time::Duration;

use mailroom_types::OrgId;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::Change;
use crate::error::{AccessError, Result};

/// The advisory lock every writer holds until it commits (`1002_roles.sql` takes it too, by
/// its decimal value).
pub const CHANGELOG_LOCK: i64 = 0x6d61_696c_6163_6c01;
/// The channel a writer notifies on commit; replicas listen on it.
pub const CHANNEL: &str = "access_changelog";

/// One changelog record as stored: its revision, organisation and changes (decode them with
/// [`decode`]).
pub type Record = (i64, OrgId, serde_json::Value);

/// Takes the changelog lock in the caller's transaction, until it ends: no other change can
/// commit meanwhile. Taking it again in the same transaction is a no-op.
pub async fn lock_changelog(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHANGELOG_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// A transaction holding the changelog lock, READ COMMITTED whatever the database's default:
/// each read after the lock sees every change committed before it, which a snapshot taken
/// earlier would not.
pub async fn begin_locked(pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut *tx)
        .await?;
    lock_changelog(&mut tx).await?;
    Ok(tx)
}

/// A read-only REPEATABLE READ transaction on `conn`: one consistent snapshot of every table.
pub async fn begin_snapshot(conn: &mut PgConnection) -> Result<Transaction<'_, Postgres>> {
    use sqlx::Connection as _;
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The latest committed revision (0 when nothing was ever written).
pub async fn latest(conn: &mut PgConnection) -> Result<i64> {
    let (latest,): (Option<i64>,) = sqlx::query_as("SELECT max(revision) FROM changelog")
        .fetch_one(conn)
        .await?;
    Ok(latest.unwrap_or(0))
}

/// The latest revision drawn, committed or not: a revision beyond it was never handed out.
pub async fn last_drawn(conn: &mut PgConnection) -> Result<i64> {
    let (latest,): (i64,) = sqlx::query_as("SELECT last_value FROM revisions")
        .fetch_one(conn)
        .await?;
    Ok(latest)
}

/// Records `changes` to `org` under a new revision, notifies the replicas (on commit), and
/// returns the revision. Call holding the lock.
pub async fn record(conn: &mut PgConnection, org: OrgId, changes: &[Change]) -> Result<i64> {
    let (revision,): (i64,) = sqlx::query_as("SELECT nextval('revisions')")
        .fetch_one(&mut *conn)
        .await?;
    let changes =
        serde_json::to_value(changes).map_err(|e| AccessError::Internal(e.to_string()))?;
    sqlx::query("INSERT INTO changelog (revision, org_id, changes) VALUES ($1, $2, $3)")
        .bind(revision)
        .bind(org)
        .bind(changes)
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(revision.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(revision)
}

/// The changes of a record, as [`record`] stored them.
pub fn decode(changes: serde_json::Value) -> serde_json::Result<Vec<Change>> {
    serde_json::from_value(changes)
}

/// The changes of a record that this build can read, entry by entry, and how many entries it
/// could not: a row of the [`LEGACY_KINDS`](super::LEGACY_KINDS) (written by an older pod
/// during a rolling upgrade) is passed over without being counted, and the rest of its record
/// still applies. Fails only when the record is not a list of changes at all.
pub fn decode_entries(changes: &serde_json::Value) -> serde_json::Result<(Vec<Change>, usize)> {
    use serde::Deserialize as _;
    if let Ok(all) = Vec::<Change>::deserialize(changes) {
        return Ok((all, 0));
    }
    let entries = Vec::<serde_json::Value>::deserialize(changes)?;
    let mut decoded = Vec::with_capacity(entries.len());
    let mut unreadable = 0;
    for entry in &entries {
        match Change::deserialize(entry) {
            Ok(change) => decoded.push(change),
            Err(_)
                if entry
                    .get("kind")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|k| super::LEGACY_KINDS.contains(&k)) => {}
            Err(_) => unreadable += 1,
        }
    }
    Ok((decoded, unreadable))
}

/// Up to `limit` records after revision `from`, in order.
pub async fn records_after(conn: &mut PgConnection, from: i64, limit: i64) -> Result<Vec<Record>> {
    Ok(sqlx::query_as(
        "SELECT revision, org_id, changes FROM changelog WHERE revision > $1 ORDER BY revision LIMIT $2",
    )
    .bind(from)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The revision through which records may have been pruned: a reader behind it must reload.
pub async fn pruned_through(conn: &mut PgConnection) -> Result<i64> {
    let (pruned_through,): (i64,) = sqlx::query_as("SELECT pruned_through FROM changelog_horizon")
        .fetch_one(conn)
        .await?;
    Ok(pruned_through)
}

/// Deletes records older than `retention`, always keeping the newest, and moves the horizon
/// past them in the same transaction; returns how many went.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let pruned: Option<(Option<i64>, i64)> = sqlx::query_as(
        "WITH gone AS (DELETE FROM changelog \
            WHERE revision < (SELECT max(revision) FROM changelog) \
              AND recorded_at < now() - make_interval(secs => $1) RETURNING revision) \
         SELECT max(revision), count(*) FROM gone",
    )
    .bind(retention.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    let (through, count) = pruned.unwrap_or((None, 0));
    if let Some(through) = through {
        sqlx::query("UPDATE changelog_horizon SET pruned_through = greatest(pruned_through, $1)")
            .bind(through)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(count as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roles_migration_takes_the_changelog_lock_first() {
        let sql = include_str!("../../migrations/1002_roles.sql");
        let first = sql
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("--"))
            .expect("a statement");
        assert_eq!(
            first,
            format!("SELECT pg_advisory_xact_lock({CHANGELOG_LOCK});")
        );
    }

    #[test]
    fn a_record_with_legacy_rows_keeps_its_other_changes() {
        let changes = serde_json::json!([
            {"op": "write", "kind": "mailbox_manager", "object": uuid::Uuid::nil(), "subject": uuid::Uuid::nil()},
            {"op": "write", "kind": "reader", "object": uuid::Uuid::nil(), "subject": uuid::Uuid::nil()},
            {"op": "frobnicate"},
        ]);
        assert!(decode(changes.clone()).is_err());
        let (decoded, unreadable) = decode_entries(&changes).expect("a list");
        assert_eq!(decoded.len(), 1);
        assert!(
            matches!(&decoded[0], Change::Write(row) if row.kind == super::super::Kind::Reader)
        );
        assert_eq!(unreadable, 1, "the legacy row is not counted");
    }
}
