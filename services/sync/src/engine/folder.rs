//! One folder brought level with the server:
//! - **No change**: one STATUS (MESSAGES UIDNEXT UIDVALIDITY UNSEEN, and HIGHESTMODSEQ with
//!   CONDSTORE; sent with the other folders' before the first folder's work) equal to the
//!   checkpoint ends the folder's work there. Without CONDSTORE, a
//!   change of flags other than `\Seen` moves no STATUS figure: every Nth sync of a folder
//!   whose STATUS did not change reads every flag all the same ([`Engine::with_flag_pass_every`]).
//! - **UIDVALIDITY changed**: the folder's rows and checkpoint are dropped in one transaction
//!   and it is fetched again.
//! - **Flag changes** of what the index has: `CHANGEDSINCE` the checkpoint's HIGHESTMODSEQ with
//!   CONDSTORE, else a flags pass over the folder.
//! - **Expunges** with QRESYNC: the same `CHANGEDSINCE` fetch asks for `VANISHED`, and the UIDs
//!   the server names leave the index once its answer ended OK.
//! - **New mail** above `last_uid`, streamed in ([`super::fetch`]); for the CRM's feed only
//!   UIDs from the folder's UIDNEXT when it was first seen (or its UIDVALIDITY changed): what
//!   was there then is its import, never fed, even when a later run finishes it.
//! - **Expunges** otherwise, and anything the index misses, only when the counts still
//!   disagree ([`super::expunge`]: every UID the server has).
//!
//! - **A server that went back** within one UIDVALIDITY (an index rebuild or
//!   `doveadm force-resync` lowers HIGHESTMODSEQ; a restore lowers UIDNEXT): a lower
//!   HIGHESTMODSEQ than saved means a full flags pass, a lower UIDNEXT a reset of the folder
//!   as if UIDVALIDITY had changed (its UIDs above the new UIDNEXT will be given again); either
//!   is logged as a warning, and the checkpoint then follows the server.
//!
//! Invariant: the checkpoint (what STATUS said) is saved last and only when the index holds
//! as many messages as STATUS counted and the flags (and VANISHED) answer ended OK, so a
//! change this run could not account for is looked at again next time; only the current
//! lease holder moves it ([`folders::save_checkpoint`], fenced), and it follows the server
//! even down, so flags and counts keep syncing. A message leaves the index only when the
//! server said so (VANISHED in an answer that ended OK) or a complete listing lacks it. The
//! folder is EXAMINEd, read-only: the sync changes nothing on the server (not even `\Recent`)
//! and wakes no IDLE watcher. Every write is fenced ([`fences::begin`]).

use std::sync::atomic::Ordering;

use mailroom_mail::imap::ImapSession;

use super::fetch::FeedTo;
use super::{Engine, Run};
use crate::error::{FailureKind, RunError, SyncFailure};
use crate::store::fences;
use crate::store::folders::{self, Checkpoint, FolderRow};
use crate::store::messages;

impl Engine {
    pub(super) async fn sync_folder(
        &self,
        session: &mut ImapSession,
        run: &mut Run<'_>,
        folder: &FolderRow,
        status: async_imap::error::Result<async_imap::types::Mailbox>,
    ) -> Result<(), RunError> {
        let mailbox = run.mailbox;
        // What STATUS said (sent with the other folders'), or its refusal.
        let status = status.map_err(SyncFailure::from)?;
        let cp = Checkpoint {
            uid_validity: status.uid_validity.unwrap_or(0),
            uid_next: status.uid_next.unwrap_or(0),
            highest_modseq: status.highest_modseq.unwrap_or(0),
            messages: status.exists,
            unseen: status.unseen.unwrap_or(0),
        };
        let unchanged = folder.uid_validity == i64::from(cp.uid_validity)
            && folder.uid_next == i64::from(cp.uid_next)
            && folder.messages == i64::from(cp.messages)
            && folder.unseen == i64::from(cp.unseen)
            && folder.highest_modseq == i64::try_from(cp.highest_modseq).unwrap_or(i64::MAX)
            && cp.uid_validity != 0;
        // Without CONDSTORE a flag other than \Seen changes without a trace in STATUS: every
        // Nth quiet sync reads every flag all the same.
        let flags_due = !run.caps.condstore
            && folder.last_uid > 0
            && self.flag_pass_every > 0
            && i64::from(folder.quiet_syncs) + 1 >= i64::from(self.flag_pass_every);
        if unchanged && !flags_due {
            run.report.unchanged_folders += 1;
            if !run.caps.condstore && folder.last_uid > 0 {
                run.quiet.push(folder.id);
            }
            return Ok(());
        }
        self.enable_qresync(session, run).await?;
        // CHANGEDSINCE below enables CONDSTORE by itself (RFC 7162 3.1).
        let selected = self.io(session.examine(&folder.name)).await?;
        let mut cp = cp;
        if cp.uid_validity == 0 {
            cp.uid_validity = selected.uid_validity.unwrap_or(0);
        }
        if cp.uid_validity == 0 {
            // Without UIDVALIDITY, UIDs cannot be trusted from one session to the next.
            return Err(RunError::Failed(SyncFailure::new(
                FailureKind::Refused,
                "the server gave no UIDVALIDITY for this folder",
            )));
        }
        let mut last_uid = u32::try_from(folder.last_uid).unwrap_or(0);
        let mut since_modseq = u64::try_from(folder.highest_modseq).unwrap_or(0);
        let mut feed_from = u32::try_from(folder.feed_from_uid).unwrap_or(0);
        // What the index holds for the folder, when this run knows it without counting: after
        // a reset in this run, exactly what this run inserted (no other writer holds the
        // mailbox's fence meanwhile).
        let mut known_count: Option<i64> = None;
        // UIDNEXT is optional in a server's answers: without it, ask.
        let server_next = cp.uid_next.max(selected.uid_next.unwrap_or(0));
        let changed = folder.uid_validity != 0 && folder.uid_validity != i64::from(cp.uid_validity);
        // The same UIDVALIDITY with a lower UIDNEXT than saved (a restore): UIDs above it will
        // be given again, to other messages, so what the index has there cannot be trusted.
        let went_back = !changed
            && folder.uid_validity != 0
            && server_next != 0
            && i64::from(server_next) < folder.uid_next;
        if went_back {
            tracing::warn!(folder = %folder.name, saved = folder.uid_next, server = server_next, "the server's UIDNEXT went back with the same UIDVALIDITY; indexing the folder again");
        }
        if changed || went_back || folder.uid_validity == 0 {
            if changed {
                tracing::info!(folder = %folder.name, "UIDVALIDITY changed; indexing the folder again");
            }
            let mut tx = fences::begin(&self.pool, &run.fence).await?;
            folders::reset_folder(
                &mut tx,
                mailbox,
                folder.id,
                cp.uid_validity,
                server_next,
                run.fence.generation,
            )
            .await?;
            tx.commit().await?;
            last_uid = 0;
            since_modseq = 0;
            known_count = Some(0);
            feed_from = server_next;
        }

        // Flags of what the index already has, before new mail (whose flags come with it).
        // HIGHESTMODSEQ from STATUS, else from EXAMINE (0: not known).
        let server_modseq = match cp.highest_modseq {
            0 => selected.highest_modseq.unwrap_or(0),
            m => m,
        };
        if run.caps.condstore && server_modseq > 0 && server_modseq < since_modseq {
            // An index rebuild on the server: changes since the saved value cannot be asked
            // for, so every flag is read again, and the checkpoint follows the server.
            tracing::warn!(folder = %folder.name, saved = since_modseq, server = server_modseq, "the server's HIGHESTMODSEQ went back with the same UIDVALIDITY; reading every flag again");
            since_modseq = 0;
        }
        // Whether every flag (and expunge) this run was told of came in an answer that ended
        // OK: else the checkpoint is not saved, and the next run asks again.
        let mut complete = true;
        if last_uid > 0 {
            let pass = if run.caps.condstore && since_modseq > 0 {
                if cp.highest_modseq > since_modseq {
                    // With QRESYNC the same answer names what was expunged since.
                    let vanished = if run.qresync_on { " VANISHED" } else { "" };
                    let query = format!("(UID FLAGS) (CHANGEDSINCE {since_modseq}{vanished})");
                    Some(
                        self.sync_flags(
                            session,
                            run.progress,
                            &run.fence,
                            folder.id,
                            last_uid,
                            &query,
                        )
                        .await?,
                    )
                } else {
                    None
                }
            } else {
                run.report.flag_passes += 1;
                Some(
                    self.sync_flags(
                        session,
                        run.progress,
                        &run.fence,
                        folder.id,
                        last_uid,
                        "(UID FLAGS)",
                    )
                    .await?,
                )
            };
            if let Some(pass) = pass {
                run.report.flag_changes += pass.changed;
                complete = pass.complete;
                if pass.complete && !pass.vanished.is_empty() {
                    let mut tx = fences::begin(&self.pool, &run.fence).await?;
                    let gone = messages::delete_uid_ranges(
                        &mut tx,
                        mailbox,
                        folder.id,
                        &pass.vanished.to_vec(),
                        last_uid,
                    )
                    .await?;
                    tx.commit().await?;
                    if gone > 0 {
                        run.progress.fetch_add(1, Ordering::SeqCst);
                    }
                    run.report.expunged += gone as i64;
                    run.report.vanished += gone as i64;
                }
            }
        }

        if selected.exists > 0 && (server_next == 0 || server_next.saturating_sub(1) > last_uid) {
            let range = format!("{}:*", last_uid.saturating_add(1));
            // A folder's import is not news for the CRM, even when a later run finishes it:
            // only UIDs from `feed_from` on are fed. Not known (0): a run that starts with
            // none of the folder indexed feeds nothing.
            let from_uid = match feed_from {
                0 if last_uid == 0 => None,
                from => Some(from),
            };
            let feed = match (run.feed_org, from_uid) {
                (Some(org), Some(from_uid)) => Some(FeedTo {
                    org,
                    folder: folder.display_name(),
                    uid_validity: cp.uid_validity,
                    from_uid,
                }),
                _ => None,
            };
            let (count, fed) = self
                .fetch_new(session, run, folder.id, &range, last_uid, feed)
                .await?;
            run.report.new_messages += count;
            run.report.fed += fed;
            known_count = known_count.map(|n| n + count);
        }

        // Expunged messages (and any the index misses): only when the counts disagree.
        let indexed = match known_count {
            Some(n) => n,
            None => messages::indexed_count(&self.pool, mailbox, folder.id).await?,
        };
        let final_count =
            if indexed != i64::from(selected.exists) || indexed != i64::from(cp.messages) {
                self.reconcile(session, run, folder.id, selected.exists, last_uid)
                    .await?
            } else {
                indexed
            };
        if final_count == i64::from(cp.messages) && complete {
            let mut tx = fences::begin(&self.pool, &run.fence).await?;
            let saved =
                folders::save_checkpoint(&mut tx, folder.id, cp, run.fence.generation).await?;
            tx.commit().await?;
            if saved {
                run.progress.fetch_add(1, Ordering::SeqCst);
            } else {
                tracing::info!(folder = %folder.name, "checkpoint not saved: the folder was reset or written by a newer lease holder meanwhile");
            }
        } else {
            tracing::debug!(folder = %folder.name, final_count, status = cp.messages, complete, "counts differ or an answer was cut short; no checkpoint this time");
        }
        Ok(())
    }
}
