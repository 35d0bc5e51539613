//! New messages and flags, streamed from IMAP into the index.
//!
//! `UID FETCH last+1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)` is read as one stream;
//! rows go through a bounded channel to a writer that inserts them in batches, so reading
//! IMAP and writing PostgreSQL overlap.
//!
//! Invariant: each batch is one fenced transaction with the `last_uid` it reaches
//! ([`messages::insert_batch`]) and, when the run feeds the CRM, the NewMessages of the rows
//! that were new to the index, so a crash anywhere neither loses nor repeats a message in the
//! index or in the feed; a message is taken only with everything that was asked for (an
//! unsolicited FETCH of a flag change is not a new message) and once per answer, and only
//! while the mailbox's and the organisation's limits allow ([`super::Allowance`]); flag
//! changes are written in batches as they come, so memory does not grow with the folder; the
//! server must make progress (a message, a flag, a UID) within the I/O timeout, whatever else
//! it sends meanwhile, and `stop` ends the read between messages.

use std::collections::HashSet;

use chrono::Utc;
use futures::StreamExt;
use mailroom_mail::imap::ImapSession;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::wire::timestamp;
use mailroom_types::OrgId;
use tokio::time::Instant;

use super::{Engine, Run, FEED_CHUNK};
use crate::domain::flags;
use crate::envelope::StoredEnvelope;
use crate::error::{FailureKind, RunError, SyncFailure};
use crate::events;
use crate::store::fences::{self, Fence, WriteError};
use crate::store::messages::{self, NewRow};

/// Where a folder's new messages go in the CRM's feed.
#[derive(Debug, Clone)]
pub(super) struct FeedTo {
    pub org: OrgId,
    /// As people read it.
    pub folder: String,
    pub uid_validity: u32,
    /// The first UID that is news (below it is the folder's import).
    pub from_uid: u32,
}

/// Rows for one transaction, with their feed messages (when the run feeds).
struct Batch {
    rows: Vec<NewRow>,
    feed: Vec<ev::NewMessage>,
}

impl Engine {
    /// When the next progress is due, from now.
    fn progress_due(&self) -> Instant {
        Instant::now() + self.options.io_timeout
    }

    /// Flags of the UIDs in `range` (with `query`'s modifiers, e.g. CHANGEDSINCE), written to
    /// the folder's indexed messages in batches as they come; returns how many changed.
    pub(super) async fn sync_flags(
        &self,
        session: &mut ImapSession,
        fence: &Fence,
        folder: i32,
        range: &str,
        query: &str,
    ) -> Result<i64, RunError> {
        let batch = self.options.batch.max(1);
        let mut changed = 0i64;
        let mut out = Vec::with_capacity(batch);
        let mut stream = self.io(session.uid_fetch(range, query)).await?;
        let mut due = self.progress_due();
        loop {
            let next = match tokio::time::timeout_at(due, stream.next()).await {
                Ok(n) => n,
                Err(_) => return Err(RunError::Failed(self.timeout())),
            };
            let Some(fetch) = next else { break };
            let fetch = fetch.map_err(SyncFailure::from)?;
            let Some(uid) = fetch.uid else { continue };
            let (bits, keywords) = flag_bits(&fetch);
            out.push((uid, bits, keywords));
            if out.len() >= batch {
                changed += self.write_flags(fence, folder, &out).await?;
                out.clear();
            }
            due = self.progress_due();
        }
        if !out.is_empty() {
            changed += self.write_flags(fence, folder, &out).await?;
        }
        Ok(changed)
    }

    async fn write_flags(
        &self,
        fence: &Fence,
        folder: i32,
        changes: &[(u32, i16, Option<String>)],
    ) -> Result<i64, RunError> {
        let mut tx = fences::begin(&self.pool, fence).await?;
        let changed = messages::update_flags(&mut tx, fence.mailbox, folder, changes).await?;
        tx.commit().await?;
        Ok(changed as i64)
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
        let mut due = self.progress_due();
        loop {
            let next = match tokio::time::timeout_at(due, stream.next()).await {
                Ok(n) => n,
                Err(_) => return Err(RunError::Failed(self.timeout())),
            };
            let Some(fetch) = next else { break };
            let fetch = fetch.map_err(SyncFailure::from)?;
            let Some(uid) = fetch.uid else { continue };
            if !uids.insert(uid) {
                continue;
            }
            if uids.len() as u64 > most {
                return Err(RunError::Failed(SyncFailure::new(
                    FailureKind::Limit,
                    format!(
                        "the server lists more than {most} messages in one folder of this mailbox, the most indexed (limit MAILROOM_SYNC__MAX_MESSAGES_PER_MAILBOX)"
                    ),
                )));
            }
            due = self.progress_due();
        }
        Ok(uids)
    }

    /// Fetches the UIDs `set` names (above `last_uid`) as one stream, written in batches as
    /// it arrives. With `feed`, the messages new to the index (as many as the run's feed may
    /// still take) go to the CRM's feed in their batch's transaction. Returns how many
    /// messages were new to the index, and how many were fed.
    pub(super) async fn fetch_new(
        &self,
        session: &mut ImapSession,
        run: &mut Run<'_>,
        folder: i32,
        set: &str,
        last_uid: u32,
        feed: Option<FeedTo>,
    ) -> Result<(i64, i64), RunError> {
        let mailbox = run.mailbox;
        let stop = run.stop;
        let fence = run.fence;
        let allowance = self.allowance(run).await?;
        let feed_left = if feed.is_some() { run.feed_left } else { 0 };
        let feed_from = feed.as_ref().map(|f| f.from_uid).unwrap_or(u32::MAX);
        let batch = self.options.batch.max(1);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(4);
        let pool = self.pool.clone();
        let writer = async move {
            let mut written = 0i64;
            let mut fed = 0usize;
            while let Some(Batch { rows, feed: news }) = rx.recv().await {
                let mut tx = fences::begin(&pool, &fence).await?;
                let inserted =
                    messages::insert_batch(&mut tx, mailbox, folder, &rows, fence.generation)
                        .await?;
                written += inserted.len() as i64;
                if let Some(to) = &feed {
                    let mut news: Vec<ev::NewMessage> = news
                        .into_iter()
                        .filter(|m| inserted.binary_search(&m.uid).is_ok())
                        .collect();
                    news.truncate(feed_left.saturating_sub(fed));
                    fed += news.len();
                    for chunk in news.chunks(FEED_CHUNK) {
                        let event = ev::NewMessages {
                            mailbox_id: mailbox.to_string(),
                            folder: to.folder.clone(),
                            uid_validity: to.uid_validity,
                            messages: chunk.to_vec(),
                        };
                        events::new_messages(&mut tx, to.org, mailbox, event).await?;
                    }
                }
                tx.commit().await?;
            }
            Ok::<(i64, usize), WriteError>((written, fed))
        };
        let io_timeout = self.options.io_timeout;
        let reader = async move {
            let mut taken = 0u64;
            // Feed messages are made for the first rows only (the writer keeps those new to
            // the index).
            let mut to_feed = feed_left;
            let mut stream = match tokio::time::timeout(
                io_timeout,
                session.uid_fetch(set, "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)"),
            )
            .await
            {
                Ok(s) => s.map_err(SyncFailure::from)?,
                Err(_) => return Err(RunError::Failed(self.timeout())),
            };
            let mut out = Batch {
                rows: Vec::with_capacity(batch),
                feed: Vec::new(),
            };
            let mut seen = HashSet::new();
            let mut due = self.progress_due();
            loop {
                let next = tokio::select! {
                    n = tokio::time::timeout_at(due, stream.next()) => match n {
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
                    if !out.rows.is_empty() {
                        let _ = tx.send(out).await;
                    }
                    return Err(RunError::Failed(allowance.exhausted()));
                }
                taken += 1;
                if to_feed > 0 && row.uid >= feed_from {
                    to_feed -= 1;
                    out.feed.push(feed_message(&row, &fetch));
                }
                out.rows.push(row);
                if out.rows.len() >= batch {
                    let full = std::mem::replace(
                        &mut out,
                        Batch {
                            rows: Vec::with_capacity(batch),
                            feed: Vec::new(),
                        },
                    );
                    if tx.send(full).await.is_err() {
                        // The writer stopped (a database error, a newer lease holder): its
                        // error is reported.
                        return Ok(taken);
                    }
                }
                // Progress (a wait for the writer included).
                due = self.progress_due();
            }
            if !out.rows.is_empty() {
                let _ = tx.send(out).await;
            }
            Ok(taken)
        };
        let (read, written) = tokio::join!(reader, writer);
        let (written, fed) = written?;
        let taken = read?;
        run.allowance = Some(super::Allowance {
            left: allowance.left.saturating_sub(taken),
            ..allowance
        });
        run.feed_left = run.feed_left.saturating_sub(fed);
        Ok((written, fed as i64))
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
