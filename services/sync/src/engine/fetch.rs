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
use std::sync::atomic::{AtomicU64, Ordering};

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
        progress: &AtomicU64,
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
        // A UID answered again is no progress (a server repeating itself is cut off).
        let mut seen = HashSet::new();
        loop {
            let next = match tokio::time::timeout_at(due, stream.next()).await {
                Ok(n) => n,
                Err(_) => return Err(RunError::Failed(self.timeout())),
            };
            let Some(fetch) = next else { break };
            let fetch = fetch.map_err(SyncFailure::from)?;
            let Some(uid) = fetch.uid else { continue };
            if !seen.insert(uid) {
                continue;
            }
            let (bits, keywords) = flag_bits(&fetch);
            out.push((uid, bits, keywords));
            if out.len() >= batch {
                changed += self.write_flags(fence, folder, &out).await?;
                progress.fetch_add(1, Ordering::SeqCst);
                out.clear();
            }
            due = self.progress_due();
        }
        if !out.is_empty() {
            changed += self.write_flags(fence, folder, &out).await?;
            progress.fetch_add(1, Ordering::SeqCst);
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
        let progress = run.progress;
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
                    for chunk in feed_chunks(news) {
                        let event = ev::NewMessages {
                            mailbox_id: mailbox.to_string(),
                            folder: to.folder.clone(),
                            uid_validity: to.uid_validity,
                            messages: chunk,
                        };
                        events::new_messages(&mut tx, to.org, mailbox, event).await?;
                    }
                }
                tx.commit().await?;
                if !inserted.is_empty() {
                    progress.fetch_add(1, Ordering::SeqCst);
                }
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
    news_of(row, StoredEnvelope::from_imap(fetch.envelope()))
}

/// One message as the feed carries it: at most [`FEED_ADDRESSES`] senders and recipients
/// each, and no more than [`FEED_MESSAGE_BYTES`] encoded (a hostile envelope is cut further:
/// fewer addresses, shorter names and subject), so any [`FEED_CHUNK`] of them fit an event.
fn news_of(row: &NewRow, env: StoredEnvelope) -> ev::NewMessage {
    use prost::Message as _;
    let StoredEnvelope {
        subject,
        mut from,
        mut to,
        message_id,
    } = env;
    from.truncate(FEED_ADDRESSES);
    to.truncate(FEED_ADDRESSES);
    let mut message = ev::NewMessage {
        uid: row.uid,
        subject,
        from,
        to,
        message_id,
        internal_date: Some(timestamp(row.internal_date)),
        size: i64::from(row.size),
    };
    if message.encoded_len() > FEED_MESSAGE_BYTES {
        message.from.truncate(2);
        message.to.truncate(2);
        for address in message.from.iter_mut().chain(message.to.iter_mut()) {
            address.name = cut(&address.name, 64);
            address.email = cut(&address.email, 254);
        }
        message.subject = cut(&message.subject, 200);
        message.message_id = cut(&message.message_id, 200);
    }
    message
}

/// The first `max` characters of `text`.
fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Most senders, and most recipients, of one message in the feed (the index keeps more).
const FEED_ADDRESSES: usize = 8;
/// Most bytes one message takes in the feed, encoded (after [`news_of`] cut it).
const FEED_MESSAGE_BYTES: usize = 16 * 1024;
/// Most bytes of messages in one NewMessages event: far below the broker's 1 MB per record,
/// with room for the event's other fields (mailbox, folder name) and the envelope.
pub(super) const FEED_EVENT_BYTES: usize = 256 * 1024 - 16 * 1024;

/// `news` in order, split into events of at most [`FEED_CHUNK`] messages and
/// [`FEED_EVENT_BYTES`] encoded.
fn feed_chunks(news: Vec<ev::NewMessage>) -> Vec<Vec<ev::NewMessage>> {
    use prost::Message as _;
    let mut chunks = Vec::new();
    let mut chunk: Vec<ev::NewMessage> = Vec::new();
    let mut bytes = 0usize;
    for message in news {
        // A repeated field's element: its tag, its length and itself.
        let size = message.encoded_len() + 1 + prost::length_delimiter_len(message.encoded_len());
        if !chunk.is_empty() && (chunk.len() >= FEED_CHUNK || bytes + size > FEED_EVENT_BYTES) {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += size;
        chunk.push(message);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    /// An envelope as large as the index keeps: a 512-character subject and 32 senders and 32
    /// recipients, each with a 256-character name and a 320-character address, in characters
    /// of four bytes.
    fn maximal_envelope() -> StoredEnvelope {
        let wide = |n: usize| "𝔄".repeat(n);
        let address = || ev::MessageAddress {
            name: wide(256),
            email: format!("{}@{}", wide(200), wide(119)),
        };
        StoredEnvelope {
            subject: wide(512),
            from: (0..32).map(|_| address()).collect(),
            to: (0..32).map(|_| address()).collect(),
            message_id: wide(256),
        }
    }

    #[test]
    fn five_hundred_maximal_envelopes_go_to_the_feed_in_events_the_broker_takes() {
        let news: Vec<ev::NewMessage> = (1..=500u32)
            .map(|uid| {
                let row = NewRow {
                    uid,
                    flags: 0,
                    keywords: None,
                    size: 1_000_000,
                    internal_date: Utc::now(),
                    envelope: Vec::new(),
                };
                news_of(&row, maximal_envelope())
            })
            .collect();
        assert!(news.iter().all(|m| m.encoded_len() <= FEED_MESSAGE_BYTES));
        assert!(news
            .iter()
            .all(|m| !m.subject.is_empty() && !m.from.is_empty()));
        let chunks = feed_chunks(news);
        let mut uids = Vec::new();
        for chunk in &chunks {
            let event = ev::NewMessages {
                mailbox_id: mailroom_types::MailboxId::new().to_string(),
                folder: "𝔄".repeat(1000),
                uid_validity: 1,
                messages: chunk.clone(),
            };
            assert!(chunk.len() <= FEED_CHUNK);
            assert!(
                event.encoded_len() <= 256 * 1024,
                "an event of {} bytes",
                event.encoded_len()
            );
            uids.extend(chunk.iter().map(|m| m.uid));
        }
        assert_eq!(uids, (1..=500).collect::<Vec<_>>(), "lost or reordered");
        assert!(chunks.len() > 1);
    }

    #[test]
    fn small_messages_are_chunked_by_count() {
        let row = |uid| NewRow {
            uid,
            flags: 0,
            keywords: None,
            size: 10,
            internal_date: Utc::now(),
            envelope: Vec::new(),
        };
        let news: Vec<_> = (1..=1200u32)
            .map(|uid| news_of(&row(uid), StoredEnvelope::default()))
            .collect();
        let sizes: Vec<usize> = feed_chunks(news).iter().map(Vec::len).collect();
        assert_eq!(sizes, [FEED_CHUNK, FEED_CHUNK, 200]);
    }
}
