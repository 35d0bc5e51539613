//! Each IMAP folder of a mailbox and its checkpoint: what the server's STATUS said the last
//! time the index was brought level with it, and the highest UID indexed.
//!
//! Invariant: a checkpoint never claims more than the index holds. `last_uid` moves only in
//! the transaction that writes the messages up to it ([`super::messages::insert_batch`]); the
//! STATUS figures are saved only after the folder's changes are in the index; a new
//! UIDVALIDITY drops the folder's messages and its checkpoint in one transaction, and a folder
//! gone from the server leaves with its messages.
//!
//! Checkpoints only move forward: for one UIDVALIDITY, neither `last_uid`, UIDNEXT nor
//! HIGHESTMODSEQ is ever lowered (a new UIDVALIDITY, [`reset_folder`], is the one way back to
//! zero), and no holder of an older lease generation than the one that last wrote a folder
//! writes it again ([`super::fences`] refuses it for the whole mailbox first).

use mailroom_types::MailboxId;
use sqlx::{PgConnection, PgExecutor};

use super::fences::{Stale, WriteError};

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
    /// The lease generation of the holder that last wrote the checkpoint.
    pub generation: i64,
    /// The first UID that is news for the CRM's feed (UIDNEXT when the folder was first seen
    /// or its UIDVALIDITY changed; below it is the folder's import); 0 when not known.
    pub feed_from_uid: i64,
    /// Syncs since every flag of the folder was last read, whose STATUS showed no change
    /// (counted for servers without CONDSTORE only, see [`count_quiet_syncs`]).
    pub quiet_syncs: i32,
}

impl FolderRow {
    /// The folder's name as people read it (`name` is the server's spelling).
    pub fn display_name(&self) -> String {
        mailroom_mail::imap::names::display_name(&self.name)
    }
}

/// The folder a person means by `asked`, among a mailbox's `folders`: INBOX in any case, the
/// server's spelling, or the name as people read it (as ListMessages shows it).
pub fn named<'a>(folders: &'a [FolderRow], asked: &str) -> Option<&'a FolderRow> {
    let asked = mailroom_mail::imap::names::canonical(asked);
    folders
        .iter()
        .find(|f| f.name == asked)
        .or_else(|| folders.iter().find(|f| f.display_name() == asked))
}

const FOLDER_COLUMNS: &str = "id, name, special_use, uid_validity, uid_next, highest_modseq, \
    messages, unseen, last_uid, generation, feed_from_uid, quiet_syncs";

/// A mailbox's folders, by name.
pub async fn folders<'e>(
    conn: impl PgExecutor<'e>,
    mailbox: MailboxId,
) -> sqlx::Result<Vec<FolderRow>> {
    sqlx::query_as(&format!(
        "SELECT {FOLDER_COLUMNS} FROM folders WHERE mailbox_id = $1 ORDER BY name"
    ))
    .bind(mailbox)
    .fetch_all(conn)
    .await
}

/// The folder a person means by `asked` ([`named`]).
pub async fn folder_named<'e>(
    conn: impl PgExecutor<'e>,
    mailbox: MailboxId,
    asked: &str,
) -> sqlx::Result<Option<FolderRow>> {
    let all = folders(conn, mailbox).await?;
    Ok(named(&all, asked).cloned())
}

/// The folder's row, made when first seen (in the caller's fenced transaction).
pub async fn ensure_folder(
    conn: &mut PgConnection,
    mailbox: MailboxId,
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
    .fetch_one(conn)
    .await
}

/// A folder gone from the server leaves the index with its messages (in the caller's
/// fenced transaction).
pub async fn drop_folder(
    conn: &mut PgConnection,
    mailbox: MailboxId,
    folder: i32,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM messages WHERE mailbox_id = $1 AND folder_id = $2")
        .bind(mailbox)
        .bind(folder)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM folders WHERE id = $1 AND mailbox_id = $2")
        .bind(folder)
        .bind(mailbox)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A folder first seen, or whose UIDVALIDITY changed (its UIDs mean nothing any more):
/// it starts again, with its rows dropped in the caller's fenced transaction, and the UIDs
/// from `feed_from_uid` on (the server's UIDNEXT now; 0 when it gave none) are news for the
/// feed, the rest its import. Refused for a holder of an older generation than the one that
/// last wrote the folder.
pub async fn reset_folder(
    conn: &mut PgConnection,
    mailbox: MailboxId,
    folder: i32,
    uid_validity: u32,
    feed_from_uid: u32,
    generation: i64,
) -> Result<(), WriteError> {
    let reset = sqlx::query(
        "UPDATE folders SET uid_validity = $2, uid_next = 0, highest_modseq = 0, messages = 0, \
         unseen = 0, last_uid = 0, feed_from_uid = $4, generation = $3 \
         WHERE id = $1 AND generation <= $3",
    )
    .bind(folder)
    .bind(i64::from(uid_validity))
    .bind(generation)
    .bind(i64::from(feed_from_uid))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if reset == 0 {
        return Err(stale(conn, mailbox, folder, generation).await);
    }
    sqlx::query("DELETE FROM messages WHERE mailbox_id = $1 AND folder_id = $2")
        .bind(mailbox)
        .bind(folder)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Moves the folder's `last_uid` up to `uid` (never down), in the transaction that writes the
/// messages up to it. Refused for a holder of an older generation than the folder's.
pub async fn advance_last_uid(
    conn: &mut PgConnection,
    mailbox: MailboxId,
    folder: i32,
    uid: u32,
    generation: i64,
) -> Result<(), WriteError> {
    let moved = sqlx::query(
        "UPDATE folders SET last_uid = GREATEST(last_uid, $2), generation = $3 \
         WHERE id = $1 AND generation <= $3",
    )
    .bind(folder)
    .bind(i64::from(uid))
    .bind(generation)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if moved == 0 {
        return Err(stale(conn, mailbox, folder, generation).await);
    }
    Ok(())
}

/// The refusal of a folder write by `generation`: the folder is gone, or a newer generation
/// wrote it.
async fn stale(
    conn: &mut PgConnection,
    mailbox: MailboxId,
    folder: i32,
    generation: i64,
) -> WriteError {
    let current: Option<(i64,)> =
        match sqlx::query_as("SELECT generation FROM folders WHERE id = $1")
            .bind(folder)
            .fetch_optional(&mut *conn)
            .await
        {
            Ok(row) => row,
            Err(err) => return WriteError::Db(err),
        };
    WriteError::Stale(Stale {
        mailbox,
        mine: generation,
        current: current.map(|(g,)| g).unwrap_or(0),
    })
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

/// Saves what STATUS said as the folder's checkpoint, in the caller's fenced transaction;
/// false (nothing written) for another UIDVALIDITY than the folder's (a reset comes first) or
/// a writer of an older lease generation than the one that last wrote the folder (with
/// [`super::fences::begin`], a stale holder never moves it, back or forth).
///
/// Within one UIDVALIDITY the checkpoint follows the server, lower values included: a server
/// may lower HIGHESTMODSEQ or UIDNEXT (an index rebuild, `doveadm force-resync`, a restore),
/// and a checkpoint held above the server's would hide every later flag change; the caller
/// has made the index level with the server first ([`crate::engine`]). The folder's quiet
/// syncs start again from 0: a folder whose STATUS changed has had every flag read (or, with
/// CONDSTORE, every change), so has one whose first import this is.
pub async fn save_checkpoint(
    conn: &mut PgConnection,
    folder: i32,
    cp: Checkpoint,
    generation: i64,
) -> sqlx::Result<bool> {
    let saved = sqlx::query(
        "UPDATE folders SET uid_next = $3, highest_modseq = $4, messages = $5, unseen = $6, \
         generation = $7, quiet_syncs = 0 \
         WHERE id = $1 AND uid_validity = $2 AND generation <= $7",
    )
    .bind(folder)
    .bind(i64::from(cp.uid_validity))
    .bind(i64::from(cp.uid_next))
    .bind(i64::try_from(cp.highest_modseq).unwrap_or(i64::MAX))
    .bind(i64::from(cp.messages))
    .bind(i64::from(cp.unseen))
    .bind(generation)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(saved == 1)
}

/// One more quiet sync (STATUS unchanged, flags not read) for each of `folders`, in the
/// caller's fenced transaction; a folder a newer lease holder wrote is left alone. Without
/// CONDSTORE, this count says when every flag is read again ([`crate::engine`]).
pub async fn count_quiet_syncs(
    conn: &mut PgConnection,
    mailbox: MailboxId,
    folders: &[i32],
    generation: i64,
) -> sqlx::Result<()> {
    if folders.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE folders SET quiet_syncs = LEAST(quiet_syncs, 1000000) + 1 \
         WHERE mailbox_id = $1 AND id = ANY($2) AND generation <= $3",
    )
    .bind(mailbox)
    .bind(folders)
    .bind(generation)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(id: i32, name: &str) -> FolderRow {
        FolderRow {
            id,
            name: name.into(),
            special_use: String::new(),
            uid_validity: 0,
            uid_next: 0,
            highest_modseq: 0,
            messages: 0,
            unseen: 0,
            last_uid: 0,
            generation: 0,
            feed_from_uid: 0,
            quiet_syncs: 0,
        }
    }

    #[test]
    fn a_folder_is_found_by_either_spelling_and_inbox_in_any_case() {
        let all = [
            folder(1, "INBOX"),
            folder(2, "&BCAEMAQxBD4EQgQw-"),
            folder(3, r#"Client "ACME" (2026)"#),
        ];
        let id = |asked: &str| named(&all, asked).map(|f| f.id);
        assert_eq!(id("inbox"), Some(1));
        assert_eq!(id("Inbox"), Some(1));
        assert_eq!(id("Работа"), Some(2));
        assert_eq!(id("&BCAEMAQxBD4EQgQw-"), Some(2));
        assert_eq!(id(r#"Client "ACME" (2026)"#), Some(3));
        assert_eq!(id(r#"Client \"ACME\" (2026)"#), None);
        assert_eq!(id("работа"), None);
    }
}
