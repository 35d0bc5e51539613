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

use std::collections::{BTreeMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_imap::imap_proto::Response;
use mailroom_mail::imap::ImapSession;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::wire::timestamp;
use mailroom_types::OrgId;
use tokio::time::Instant;

use super::answer::{self, Answer, Fetched};
use super::{Engine, Run, FEED_CHUNK};
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

    /// What `read` makes of the next response of `answer`, within the progress deadline
    /// `due`; `None` at the answer's end.
    async fn next_response<T>(
        &self,
        answer: &mut Answer<'_>,
        due: Instant,
        read: impl FnOnce(&Response<'_>) -> T,
    ) -> Result<Option<T>, RunError> {
        match tokio::time::timeout_at(due, answer.next(read)).await {
            Ok(next) => Ok(next.map_err(SyncFailure::from)?),
            Err(_) => Err(RunError::Failed(self.timeout())),
        }
    }

    /// Starts a UID FETCH, its sending bounded by the I/O timeout.
    async fn start_fetch<'s>(
        &self,
        session: &'s mut ImapSession,
        set: &str,
        query: &str,
    ) -> Result<Answer<'s>, RunError> {
        let command = format!("UID FETCH {set} {query}");
        Ok(self.io(Answer::start(session, &command)).await?)
    }

    /// Flags of the UIDs `1:last_uid` (with `query`'s modifiers, e.g. CHANGEDSINCE, and with
    /// QRESYNC `VANISHED`), written to the folder's indexed messages in batches as they come.
    /// The UIDs a `VANISHED (EARLIER)` names are gathered as merged ranges, clipped to
    /// `1..=last_uid` (above it nothing is indexed), for the caller to take out of the index
    /// once the answer is known complete. A VANISHED is no progress (a server that sends
    /// only those is cut off at the I/O timeout), and more separate ranges than the
    /// mailbox's message limit fail the folder: either way nothing is deleted.
    pub(super) async fn sync_flags(
        &self,
        session: &mut ImapSession,
        progress: &AtomicU64,
        fence: &Fence,
        folder: i32,
        last_uid: u32,
        query: &str,
    ) -> Result<FlagPass, RunError> {
        let range = format!("1:{last_uid}");
        let most_ranges =
            usize::try_from(self.limits.max_messages_per_mailbox).unwrap_or(usize::MAX);
        let batch = self.options.batch.max(1);
        let mut pass = FlagPass::default();
        let mut out = Vec::with_capacity(batch.min(4096));
        let mut answer = self.start_fetch(session, &range, query).await?;
        let mut due = self.progress_due();
        // A UID answered again is no progress (a server repeating itself is cut off).
        let mut seen = HashSet::new();
        // VANISHED responses since the last progress, for the reason of a timeout.
        let mut vanished_lines = 0u64;
        loop {
            let next = self
                .next_response(&mut answer, due, |response| {
                    if let Some(uids) = answer::vanished(response) {
                        return FlagItem::Vanished(clip(uids, last_uid));
                    }
                    match Fetched::of(response) {
                        // A FETCH without FLAGS (another session's change of something else)
                        // says nothing of this message's flags.
                        Some(Fetched {
                            uid: Some(uid),
                            flags: Some(names),
                            ..
                        }) => {
                            let (bits, keywords) = answer::flag_bits(names);
                            FlagItem::Flags(uid, bits, keywords)
                        }
                        _ => FlagItem::Other,
                    }
                })
                .await;
            let item = match next {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(RunError::Failed(f))
                    if f.kind == FailureKind::Timeout && vanished_lines > 0 =>
                {
                    return Err(RunError::Failed(self.vanished_flood(vanished_lines)));
                }
                Err(e) => return Err(e),
            };
            let (uid, bits, keywords) = match item {
                FlagItem::Vanished(uids) => {
                    // Not progress: the deadline stays (a server may send these endlessly).
                    vanished_lines += 1;
                    for uids in uids {
                        pass.vanished.insert(uids);
                    }
                    if pass.vanished.len() > most_ranges {
                        return Err(RunError::Failed(SyncFailure::new(
                            FailureKind::Limit,
                            format!(
                                "UID FETCH CHANGEDSINCE was not answered in full: the server names more than {most_ranges} separate ranges of expunged UIDs (VANISHED) in one folder of this mailbox, more than it may hold (limit MAILROOM_SYNC__MAX_MESSAGES_PER_MAILBOX); nothing was taken out of the index"
                            ),
                        )));
                    }
                    continue;
                }
                FlagItem::Flags(uid, bits, keywords) => (uid, bits, keywords),
                FlagItem::Other => continue,
            };
            if !seen.insert(uid) {
                continue;
            }
            vanished_lines = 0;
            out.push((uid, bits, keywords));
            if out.len() >= batch {
                pass.changed += self.write_flags(fence, folder, &out).await?;
                progress.fetch_add(1, Ordering::SeqCst);
                out.clear();
            }
            due = self.progress_due();
        }
        if !out.is_empty() {
            pass.changed += self.write_flags(fence, folder, &out).await?;
            progress.fetch_add(1, Ordering::SeqCst);
        }
        pass.complete = answer.finish().is_ok();
        Ok(pass)
    }

    /// Why a flags pass ended when only VANISHED responses (`lines` of them) came for the
    /// I/O timeout.
    fn vanished_flood(&self, lines: u64) -> SyncFailure {
        let after = self.options.io_timeout;
        SyncFailure::new(
            FailureKind::Timeout,
            format!(
                "UID FETCH CHANGEDSINCE was not answered in full: the server sent {lines} VANISHED responses and no flag for {:.1} s (limit MAILROOM_SYNC__IO_TIMEOUT_MS); nothing was taken out of the index",
                after.as_secs_f64()
            ),
        )
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
    /// mailbox's limit fails the folder's reconciliation before it is all read, and so does
    /// an answer the server ends with anything but OK (it may be cut short).
    pub(super) async fn server_uids(
        &self,
        session: &mut ImapSession,
    ) -> Result<HashSet<u32>, RunError> {
        let most = self.limits.max_messages_per_mailbox;
        let mut uids = HashSet::new();
        let mut answer = self.start_fetch(session, "1:*", "(UID)").await?;
        let mut due = self.progress_due();
        while let Some(uid) = self
            .next_response(&mut answer, due, |r| Fetched::of(r).and_then(|f| f.uid))
            .await?
        {
            let Some(uid) = uid else { continue };
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
        if let Err(refused) = answer.finish() {
            let failure = SyncFailure::from(refused);
            return Err(RunError::Failed(SyncFailure::new(
                failure.kind,
                format!(
                    "UID FETCH (UID) was not answered in full ({} UIDs came): {}",
                    uids.len(),
                    failure.message
                ),
            )));
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
        let progress = Arc::clone(run.progress);
        let allowance = self.allowance(run).await?;
        let feed_left = if feed.is_some() { run.feed_left } else { 0 };
        let feed_from = feed.as_ref().map(|f| f.from_uid).unwrap_or(u32::MAX);
        let batch = self.options.batch.max(1);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(4);
        let pool = self.pool.clone();
        // The writer is a task of its own: its round trips to PostgreSQL go on while the
        // reader parses (in the same task, a reader with data at hand would hold them up).
        // Dropped with the run (its deadline), it is aborted and its transaction rolls back.
        let writer = AbortOnDrop(tokio::spawn(async move {
            let mut written = 0i64;
            let mut fed = 0usize;
            let mut writing = std::time::Duration::ZERO;
            while let Some(Batch { rows, feed: news }) = rx.recv().await {
                let began = Instant::now();
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
                writing += began.elapsed();
                if !inserted.is_empty() {
                    progress.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok::<(i64, usize, std::time::Duration), WriteError>((written, fed, writing))
        }));
        let mut writer = writer;
        let writer = async move {
            match (&mut writer.0).await {
                Ok(written) => written.map_err(RunError::from),
                Err(panicked) if panicked.is_panic() => {
                    std::panic::resume_unwind(panicked.into_panic())
                }
                Err(_) => Err(RunError::Stopped),
            }
        };
        let reader = async move {
            let mut taken = 0u64;
            // Feed messages are made for the first rows only (the writer keeps those new to
            // the index).
            let mut to_feed = feed_left;
            let mut answer = self.start_fetch(session, set, NEW_MESSAGE_ITEMS).await?;
            let mut out = Batch {
                rows: Vec::with_capacity(batch.min(4096)),
                feed: Vec::new(),
            };
            let mut seen = HashSet::new();
            let mut due = self.progress_due();
            let started = Instant::now();
            let mut blocked = std::time::Duration::ZERO;
            loop {
                let read = |r: &Response<'_>| Fetched::of(r).and_then(|f| new_row(&f, last_uid));
                let next = tokio::select! {
                    biased;
                    n = self.next_response(&mut answer, due, read) => n?,
                    _ = stop.cancelled() => return Err(RunError::Stopped),
                };
                let Some(item) = next else { break };
                let Some((row, envelope)) = item else {
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
                    out.feed.push(news_of(&row, envelope));
                }
                out.rows.push(row);
                if out.rows.len() >= batch {
                    let full = std::mem::replace(
                        &mut out,
                        Batch {
                            rows: Vec::with_capacity(batch.min(4096)),
                            feed: Vec::new(),
                        },
                    );
                    let sending = Instant::now();
                    let sent = tx.send(full).await;
                    blocked += sending.elapsed();
                    if sent.is_err() {
                        // The writer stopped (a database error, a newer lease holder): its
                        // error is reported.
                        return Ok((taken, started.elapsed().saturating_sub(blocked), blocked));
                    }
                }
                // Progress (a wait for the writer included).
                due = self.progress_due();
            }
            // A refusal after some messages (one expunged meanwhile, say) leaves what came:
            // the folder's counts then decide whether it is looked at again.
            if let Err(refused) = answer.finish() {
                tracing::debug!(error = %refused, "UID FETCH of new messages not answered OK");
            }
            let reading = started.elapsed().saturating_sub(blocked);
            if !out.rows.is_empty() {
                let sending = Instant::now();
                let _ = tx.send(out).await;
                blocked += sending.elapsed();
            }
            Ok((taken, reading, blocked))
        };
        let (read, written) = tokio::join!(reader, writer);
        let (written, fed, writing) = written?;
        let (taken, reading, blocked) = read?;
        run.report.phases.fetch_read += reading;
        run.report.phases.fetch_blocked += blocked;
        run.report.phases.fetch_write += writing;
        run.allowance = Some(super::Allowance {
            left: allowance.left.saturating_sub(taken),
            ..allowance
        });
        run.feed_left = run.feed_left.saturating_sub(fed);
        Ok((written, fed as i64))
    }
}

/// A spawned task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a new message is fetched with.
const NEW_MESSAGE_ITEMS: &str = "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)";

/// One response of a flags answer, as a flags pass reads it.
enum FlagItem {
    Vanished(Vec<RangeInclusive<u32>>),
    Flags(u32, i16, Option<String>),
    Other,
}

/// What a flags pass found.
#[derive(Debug, Default)]
pub(super) struct FlagPass {
    /// Indexed messages whose flags changed.
    pub changed: i64,
    /// UIDs the server said are gone (`VANISHED (EARLIER)`), up to the pass's `last_uid`.
    pub vanished: UidRanges,
    /// The server ended its answer with OK: nothing was left out.
    pub complete: bool,
}

/// The parts of `uids` in `1..=last_uid`.
fn clip(uids: &[RangeInclusive<u32>], last_uid: u32) -> Vec<RangeInclusive<u32>> {
    uids.iter()
        .filter_map(|r| {
            let (start, end) = ((*r.start()).max(1), (*r.end()).min(last_uid));
            (start <= end).then_some(start..=end)
        })
        .collect()
}

/// A set of UIDs as separate, merged ranges: its size is the number of ranges, whatever
/// they span (a range named again, or within one held, costs nothing).
#[derive(Debug, Default)]
pub(super) struct UidRanges {
    /// Start to end (inclusive); no two touch or overlap.
    ranges: BTreeMap<u32, u32>,
}

impl UidRanges {
    /// Adds `uids`, merging it with the ranges it touches or overlaps.
    pub fn insert(&mut self, uids: RangeInclusive<u32>) {
        let (mut start, mut end) = (*uids.start(), *uids.end());
        if start > end {
            return;
        }
        // The range that begins at or before `start` and reaches it (or the UID before).
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e.saturating_add(1) >= start {
                if e >= end {
                    return;
                }
                start = s;
                end = end.max(e);
                self.ranges.remove(&s);
            }
        }
        // The ranges that begin within `start..=end + 1`.
        let touching: Vec<(u32, u32)> = self
            .ranges
            .range(start..=end.saturating_add(1))
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
    }

    /// How many separate ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, in order.
    pub fn to_vec(&self) -> Vec<RangeInclusive<u32>> {
        self.ranges.iter().map(|(&s, &e)| s..=e).collect()
    }
}

/// A new message's row and its envelope as read, when `fetch` is one: a UID above
/// `last_uid` with everything that was asked for.
fn new_row(fetch: &Fetched<'_>, last_uid: u32) -> Option<(NewRow, StoredEnvelope)> {
    let uid = fetch.uid?;
    // `n:*` always answers with the last message, even when its UID is below n.
    if uid <= last_uid {
        return None;
    }
    // An unsolicited FETCH (a flag change another session made) carries none of what was
    // asked: it is not a new message.
    let internal_date = fetch.internal_date()?;
    let envelope = StoredEnvelope::from_imap(Some(fetch.envelope?));
    let size = fetch.size?;
    let (bits, keywords) = fetch.flag_bits();
    let row = NewRow {
        uid,
        flags: bits,
        keywords,
        size,
        internal_date,
        envelope: envelope.encode(),
    };
    Some((row, envelope))
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
    use chrono::Utc;
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
    fn vanished_ranges_are_clipped_to_the_last_uid_and_merged() {
        assert_eq!(
            clip(&[0..=2, 3..=9, 10..=20, RangeInclusive::new(7, 5)], 8),
            vec![1..=2, 3..=8]
        );
        let mut set = UidRanges::default();
        for r in [
            5..=6,
            1..=1,
            3..=3,
            9..=9,
            2..=2,
            4..=4,
            5..=5,
            11..=12,
            8..=10,
        ] {
            set.insert(r);
        }
        assert_eq!(set.to_vec(), vec![1..=6, 8..=12]);
        set.insert(u32::MAX - 1..=u32::MAX);
        set.insert(0..=u32::MAX);
        assert_eq!(set.to_vec(), vec![0..=u32::MAX]);
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn a_flood_of_the_same_ranges_takes_no_more_room() {
        let mut set = UidRanges::default();
        for _ in 0..20 {
            for uid in (1..=10_000u32).step_by(2) {
                set.insert(uid..=uid);
            }
        }
        assert_eq!(set.len(), 5_000);
        assert!(!set.is_empty());
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
