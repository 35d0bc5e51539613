//! New messages and flags, streamed from IMAP into the index.
//!
//! `UID FETCH last+1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)` is read as one stream;
//! rows go through a bounded channel to a writer that inserts them in batches, so reading
//! IMAP and writing PostgreSQL overlap.
//!
//! Invariant: each batch is one transaction with the `last_uid` it reaches
//! ([`messages::insert_batch`]), so a crash anywhere neither loses nor repeats a message; a
//! message is taken only with everything that was asked for (an unsolicited FETCH of a flag
//! change is not a new message) and once per answer, and only while the mailbox's and the
//! organisation's limits allow ([`super::Allowance`]); flag changes are written in batches as
//! they come, so memory does not grow with the folder; every wait on the server is bounded by
//! the I/O timeout, and `stop` ends the read between messages.

use std::collections::HashSet;

use chrono::Utc;
use futures::StreamExt;
use mailroom_mail::imap::ImapSession;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::wire::timestamp;

use mailroom_types::MailboxId;

use super::{Engine, Run};
use crate::domain::flags;
use crate::envelope::StoredEnvelope;
use crate::error::{FailureKind, RunError, SyncFailure};
use crate::store::messages::{self, NewRow};

impl Engine {
    /// Flags of the UIDs in `range` (with `query`'s modifiers, e.g. CHANGEDSINCE), written to
    /// the folder's indexed messages in batches as they come; returns how many changed.
    pub(super) async fn sync_flags(
        &self,
        session: &mut ImapSession,
        mailbox: MailboxId,
        folder: i32,
        range: &str,
        query: &str,
    ) -> Result<i64, RunError> {
        let batch = self.options.batch.max(1);
        let mut changed = 0i64;
        let mut out = Vec::with_capacity(batch);
        let mut stream = self.io(session.uid_fetch(range, query)).await?;
        loop {
            let next = match tokio::time::timeout(self.options.io_timeout, stream.next()).await {
                Ok(n) => n,
                Err(_) => return Err(RunError::Failed(self.timeout())),
            };
            let Some(fetch) = next else { break };
            let fetch = fetch.map_err(SyncFailure::from)?;
            let Some(uid) = fetch.uid else { continue };
            let (bits, keywords) = flag_bits(&fetch);
            out.push((uid, bits, keywords));
            if out.len() >= batch {
                changed += messages::update_flags(&self.pool, mailbox, folder, &out).await? as i64;
                out.clear();
            }
        }
        if !out.is_empty() {
            changed += messages::update_flags(&self.pool, mailbox, folder, &out).await? as i64;
        }
        Ok(changed)
    }

    /// Every UID the folder holds, streamed (`UID FETCH 1:* (UID)`, one short response per
    /// message, where a SEARCH answers in one line as long as the folder): more than the
    /// mailbox's limit fails the folder's reconciliation before it is all read.
    pub(super) async fn server_uids(
        &self,
        session: &mut ImapSession,
    ) -> Result<HashSet<u32>, RunError> {
        let most = self.limits.max_messages_per_mailbox;
        let mut uids = HashSet::new();
        let mut stream = self.io(session.uid_fetch("1:*", "(UID)")).await?;
        loop {
            let next = match tokio::time::timeout(self.options.io_timeout, stream.next()).await {
                Ok(n) => n,
                Err(_) => return Err(RunError::Failed(self.timeout())),
            };
            let Some(fetch) = next else { break };
            let fetch = fetch.map_err(SyncFailure::from)?;
            let Some(uid) = fetch.uid else { continue };
            if uids.insert(uid) && uids.len() as u64 > most {
                return Err(RunError::Failed(SyncFailure::new(
                    FailureKind::Limit,
                    format!(
                        "the server lists more than {most} messages in one folder of this mailbox, the most indexed (limit MAILROOM_SYNC__MAX_MESSAGES_PER_MAILBOX)"
                    ),
                )));
            }
        }
        Ok(uids)
    }

    /// Fetches the UIDs `set` names (above `last_uid`) as one stream, written in batches as
    /// it arrives. With `feed`, the new messages (as many as the run's feed may still take)
    /// are returned for the CRM's feed too. Returns how many were written.
    pub(super) async fn fetch_new(
        &self,
        session: &mut ImapSession,
        run: &mut Run<'_>,
        folder: i32,
        set: &str,
        last_uid: u32,
        feed: bool,
    ) -> Result<(i64, Vec<ev::NewMessage>), RunError> {
        let mailbox = run.mailbox;
        let stop = run.stop;
        let allowance = self.allowance(run).await?;
        let mut feed = feed.then_some(&mut run.feed_left);
        let batch = self.options.batch.max(1);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<NewRow>>(4);
        let pool = self.pool.clone();
        let writer = async move {
            let mut written = 0i64;
            while let Some(rows) = rx.recv().await {
                messages::insert_batch(&pool, mailbox, folder, &rows).await?;
                written += rows.len() as i64;
            }
            Ok::<i64, sqlx::Error>(written)
        };
        let io_timeout = self.options.io_timeout;
        let reader = async move {
            let mut fed = Vec::new();
            let mut taken = 0u64;
            let mut stream = match tokio::time::timeout(
                io_timeout,
                session.uid_fetch(set, "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)"),
            )
            .await
            {
                Ok(s) => s.map_err(SyncFailure::from)?,
                Err(_) => return Err(RunError::Failed(self.timeout())),
            };
            let mut rows = Vec::with_capacity(batch);
            let mut seen = HashSet::new();
            loop {
                let next = tokio::select! {
                    n = tokio::time::timeout(io_timeout, stream.next()) => match n {
                        Ok(n) => n,
                        Err(_) => return Err(RunError::Failed(self.timeout())),
                    },
                    _ = stop.cancelled() => return Err(RunError::Stopped),
                };
                let Some(fetch) = next else { break };
                let fetch = fetch.map_err(SyncFailure::from)?;
                let Some(row) = new_row(&fetch, last_uid) else {
                    continue;
                };
                // A server may repeat a message in one answer.
                if !seen.insert(row.uid) {
                    continue;
                }
                if taken >= allowance.left {
                    if !rows.is_empty() {
                        let _ = tx.send(rows).await;
                    }
                    return Err(RunError::Failed(allowance.exhausted()));
                }
                taken += 1;
                if let Some(left) = feed.as_deref_mut() {
                    if *left > 0 {
                        *left -= 1;
                        fed.push(feed_message(&row, &fetch));
                    }
                }
                rows.push(row);
                if rows.len() >= batch {
                    let full = std::mem::replace(&mut rows, Vec::with_capacity(batch));
                    if tx.send(full).await.is_err() {
                        // The writer stopped (a database error): its error is reported.
                        return Ok((fed, taken));
                    }
                }
            }
            if !rows.is_empty() {
                let _ = tx.send(rows).await;
            }
            Ok((fed, taken))
        };
        let (read, written) = tokio::join!(reader, writer);
        let written = written?;
        let (fed, taken) = read?;
        run.allowance = Some(super::Allowance {
            left: allowance.left.saturating_sub(taken),
            ..allowance
        });
        Ok((written, fed))
    }
}

/// System flags as bits and the other keywords space-separated.
fn flag_bits(fetch: &async_imap::types::Fetch) -> (i16, Option<String>) {
    use async_imap::types::Flag;
    let mut bits = 0i16;
    let mut keywords: Vec<String> = Vec::new();
    for flag in fetch.flags() {
        match flag {
            Flag::Seen => bits |= flags::SEEN,
            Flag::Answered => bits |= flags::ANSWERED,
            Flag::Flagged => bits |= flags::FLAGGED,
            Flag::Deleted => bits |= flags::DELETED,
            Flag::Draft => bits |= flags::DRAFT,
            Flag::Custom(name) if keywords.len() < 32 && !name.starts_with('\\') => {
                keywords.push(name.chars().take(64).collect());
            }
            _ => {}
        }
    }
    keywords.sort();
    keywords.dedup();
    let keywords = (!keywords.is_empty()).then(|| keywords.join(" "));
    (bits, keywords)
}

fn new_row(fetch: &async_imap::types::Fetch, last_uid: u32) -> Option<NewRow> {
    let uid = fetch.uid?;
    // `n:*` always answers with the last message, even when its UID is below n.
    if uid <= last_uid {
        return None;
    }
    // An unsolicited FETCH (a flag change another session made) carries none of what was
    // asked: it is not a new message.
    let internal_date = fetch.internal_date()?.with_timezone(&Utc);
    fetch.envelope()?;
    fetch.size?;
    let (bits, keywords) = flag_bits(fetch);
    Some(NewRow {
        uid,
        flags: bits,
        keywords,
        size: fetch.size.unwrap_or(0),
        internal_date,
        envelope: StoredEnvelope::from_imap(fetch.envelope()).encode(),
    })
}

fn feed_message(row: &NewRow, fetch: &async_imap::types::Fetch) -> ev::NewMessage {
    let env = StoredEnvelope::from_imap(fetch.envelope());
    ev::NewMessage {
        uid: row.uid,
        subject: env.subject,
        from: env.from,
        to: env.to,
        message_id: env.message_id,
        internal_date: Some(timestamp(row.internal_date)),
        size: i64::from(row.size),
    }
}
