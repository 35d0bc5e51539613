//! Deletions found by listing: when a folder's count in the index and on the server still
//! disagree after everything else (without QRESYNC, or where its VANISHED did not account
//! for every message), the folder's
//! UIDs (`UID FETCH 1:* (UID)`, streamed and bounded by the mailbox's limit) say which indexed UIDs the server no longer has (they leave the index) and which UIDs at
//! or below the checkpoint the index misses (a fetch cut off earlier: fetched now, so a loss
//! repairs itself).
//!
//! Invariant: a message leaves the index only when a complete answer from the server lacks
//! it. The index is read before the listing, so a row written after it cannot be taken for
//! gone; an answer with fewer UIDs than EXAMINE counted (async-imap ends a FETCH at its tag
//! without reading the status, so a refused or cut-off answer looks like an emptied folder)
//! deletes nothing and fails the folder, to be looked at again.

use std::collections::HashSet;

use mailroom_mail::imap::ImapSession;

use super::{Engine, Run};
use crate::error::{FailureKind, RunError, SyncFailure};
use crate::store::{fences, messages};

/// Most UIDs one repair fetch names.
const REPAIR_CHUNK: usize = 500;

impl Engine {
    /// Brings the folder's UIDs in the index level with the server's; returns how many
    /// messages the index then holds for the folder. `exists` is what EXAMINE counted,
    /// `last_uid` the checkpoint's highest UID.
    pub(super) async fn reconcile(
        &self,
        session: &mut ImapSession,
        run: &mut Run<'_>,
        folder: i32,
        exists: u32,
        last_uid: u32,
    ) -> Result<i64, RunError> {
        let mailbox = run.mailbox;
        let in_index = messages::indexed_uids(&self.pool, mailbox, folder).await?;
        // `1:*` in an empty folder is an error on some servers: there is nothing to list.
        let on_server = match exists {
            0 => HashSet::new(),
            _ => {
                run.report.listings += 1;
                self.server_uids(session).await?
            }
        };
        if on_server.len() < exists as usize {
            return Err(RunError::Failed(SyncFailure::new(
                FailureKind::Refused,
                format!(
                    "UID FETCH (UID) answered {} of the {exists} messages the folder has",
                    on_server.len(),
                ),
            )));
        }
        let indexed_set: HashSet<u32> = in_index.iter().copied().collect();
        let gone: Vec<u32> = in_index
            .into_iter()
            .filter(|uid| !on_server.contains(uid))
            .collect();
        if !gone.is_empty() {
            let mut tx = fences::begin(&self.pool, &run.fence).await?;
            run.report.expunged +=
                messages::delete_uids(&mut tx, mailbox, folder, &gone).await? as i64;
            tx.commit().await?;
        }
        let mut missing: Vec<u32> = on_server
            .iter()
            .copied()
            .filter(|uid| *uid <= last_uid.max(1) && !indexed_set.contains(uid))
            .collect();
        missing.sort_unstable();
        for chunk in missing.chunks(REPAIR_CHUNK) {
            let set = chunk
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let (count, _) = self.fetch_new(session, run, folder, &set, 0, None).await?;
            run.report.new_messages += count;
        }
        Ok(messages::indexed_count(&self.pool, mailbox, folder).await?)
    }
}
