//! One mailbox's sync from IMAP into the message index.
//!
//! Per folder (LIST, with SPECIAL-USE or else guessed names):
//! - **No change**: one STATUS (MESSAGES UIDNEXT UIDVALIDITY UNSEEN, and HIGHESTMODSEQ with
//!   CONDSTORE) equal to the checkpoint ends the folder's work there.
//! - **UIDVALIDITY changed**: the folder's rows and checkpoint are dropped in one transaction
//!   and it is fetched again.
//! - **New mail**: `UID FETCH last+1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)` read as
//!   one stream; rows go through a bounded channel to a writer that inserts them in batches,
//!   each batch in one transaction with the `last_uid` it reaches, so reading IMAP and writing
//!   PostgreSQL overlap and a crash anywhere neither loses nor repeats a message.
//! - **Flag changes**: `CHANGEDSINCE` the checkpoint's HIGHESTMODSEQ with CONDSTORE, else a
//!   flags pass over the folder.
//! - **Expunges**: when the index and the server disagree on the count, `UID SEARCH ALL`
//!   says which UIDs are gone.
//! - The checkpoint (what STATUS said) is saved last, so anything interrupted is redone.
//!
//! Unsolicited responses are never relied on (async-imap's channel for them holds 100 and
//! drops the rest); they are drained after each folder.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use mailroom_mail::dial::Policy;
use mailroom_mail::imap::{self, ImapSession};
use mailroom_mail::{Connector, Login};
use mailroom_platform::proto::events::v1 as ev;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::{flags, SpecialUse};
use crate::envelope::StoredEnvelope;
use crate::error::{FailureKind, RunError, SyncFailure};
use crate::store::{self, Checkpoint, FolderRow, NewRow};

/// How the engine behaves (from the worker's configuration).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Messages per database batch.
    pub batch: usize,
    /// Connect-and-login deadline.
    pub connect_timeout: Duration,
    /// Longest wait for any one response from the server.
    pub io_timeout: Duration,
    /// Whether servers on loopback or link-local addresses may be reached (tests and
    /// local development only).
    pub allow_local: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            batch: 1000,
            connect_timeout: Duration::from_secs(20),
            io_timeout: Duration::from_secs(60),
            allow_local: false,
        }
    }
}

/// What a finished sync found.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub folders: usize,
    /// Folders whose STATUS matched the checkpoint.
    pub unchanged_folders: usize,
    /// Folders the server refused to open, or whose answers did not add up (tried again next
    /// time; nothing of theirs was changed or checkpointed).
    pub skipped_folders: usize,
    pub new_messages: i64,
    pub flag_changes: i64,
    pub expunged: i64,
    pub message_count: i64,
    pub unread_count: i64,
    pub disk_bytes: i64,
    pub duration: Duration,
    /// New messages of folders synced before (not the first import), for the CRM's feed.
    pub new_for_feed: Vec<ev::NewMessages>,
}

/// Most messages one NewMessages event carries.
pub const FEED_CHUNK: usize = 500;
/// Most new messages of one sync reported to the feed (the rest are in the index).
pub const FEED_MAX: usize = 5_000;

#[derive(Clone)]
pub struct Engine {
    pool: PgPool,
    /// The mail layer's connector (destination policy, TLS, `connect_timeout`) every IMAP
    /// session of this engine opens with.
    connector: Connector,
    options: EngineOptions,
}

struct Capabilities {
    condstore: bool,
    quota: bool,
    special_use: bool,
}

struct FolderName {
    name: String,
    special_use: SpecialUse,
}

impl Engine {
    pub fn new(pool: PgPool, options: EngineOptions) -> Self {
        let policy = Policy {
            allow_local: options.allow_local,
        };
        Self {
            pool,
            connector: Connector::new(policy, options.connect_timeout),
            options,
        }
    }

    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Syncs `mailbox` from the server `login` names. `feed`: collect NewMessages for the
    /// CRM. `stop` ends the run early (what was committed stays).
    #[tracing::instrument(skip_all, fields(mailbox = %mailbox))]
    pub async fn sync(
        &self,
        mailbox: Uuid,
        login: &Login,
        feed: bool,
        stop: &CancellationToken,
    ) -> Result<SyncReport, RunError> {
        let started = Instant::now();
        let mut session = tokio::select! {
            s = imap::connect(&self.connector, login) => {
                s.map_err(|e| SyncFailure::connecting(login, &e))?
            }
            _ = stop.cancelled() => return Err(RunError::Stopped),
        };
        let result = self.sync_session(&mut session, mailbox, feed, stop).await;
        // A server slow to say goodbye does not fail a sync that is done.
        let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
        let mut report = result?;
        report.duration = started.elapsed();
        Ok(report)
    }

    async fn sync_session(
        &self,
        session: &mut ImapSession,
        mailbox: Uuid,
        feed: bool,
        stop: &CancellationToken,
    ) -> Result<SyncReport, RunError> {
        let caps = self.io(session.capabilities()).await?;
        let caps = Capabilities {
            condstore: caps.has_str("CONDSTORE"),
            quota: caps.has_str("QUOTA"),
            special_use: caps.has_str("SPECIAL-USE"),
        };
        let names = self.list(session, &caps).await?;
        let known: HashMap<String, FolderRow> = store::folders(&self.pool, mailbox)
            .await?
            .into_iter()
            .map(|f| (f.name.clone(), f))
            .collect();
        let listed: HashSet<&str> = names.iter().map(|n| n.name.as_str()).collect();
        // async-imap ends a LIST at its tag without reading the status: a refused or cut-off
        // LIST would look like a mailbox whose folders were deleted. Every mailbox has an
        // INBOX, so a list without one is not believed.
        if !names.iter().any(|n| n.name.eq_ignore_ascii_case("INBOX")) {
            return Err(RunError::Failed(SyncFailure::new(
                FailureKind::Protocol,
                "the server's folder list has no INBOX (refused or cut off); nothing was changed",
            )));
        }
        for (name, folder) in &known {
            if !listed.contains(name.as_str()) {
                store::drop_folder(&self.pool, mailbox, folder.id).await?;
            }
        }
        let mut report = SyncReport::default();
        let mut feed_left = if feed { FEED_MAX } else { 0 };
        for folder_name in &names {
            if stop.is_cancelled() {
                return Err(RunError::Stopped);
            }
            let folder = match known.get(&folder_name.name) {
                Some(f) if f.special_use == folder_name.special_use.as_str() => f.clone(),
                _ => {
                    store::ensure_folder(
                        &self.pool,
                        mailbox,
                        &folder_name.name,
                        folder_name.special_use.as_str(),
                    )
                    .await?
                }
            };
            report.folders += 1;
            let synced = self
                .sync_folder(
                    session,
                    mailbox,
                    &folder,
                    &caps,
                    &mut feed_left,
                    &mut report,
                    stop,
                )
                .await;
            match synced {
                // A folder the server will not open for this account (a shared folder
                // without read rights) is left as it is; the others go on.
                Err(RunError::Failed(f)) if f.kind == FailureKind::Refused => {
                    tracing::info!(folder = %folder.name, reason = %f.message, "folder skipped");
                    report.skipped_folders += 1;
                }
                other => other?,
            }
            while session.unsolicited_responses.try_recv().is_ok() {}
        }
        // The counters, from the checkpoints just saved.
        for folder in store::folders(&self.pool, mailbox).await? {
            report.message_count += folder.messages;
            if SpecialUse::from_stored(&folder.special_use).counts_unread() {
                report.unread_count += folder.unseen;
            }
        }
        report.disk_bytes = match caps.quota {
            true => self.quota(session).await,
            false => None,
        }
        .unwrap_or(store::total_size(&self.pool, mailbox).await?);
        Ok(report)
    }

    /// Waits for one IMAP command, bounded by the I/O timeout.
    async fn io<T, F>(&self, fut: F) -> Result<T, SyncFailure>
    where
        F: std::future::Future<Output = async_imap::error::Result<T>>,
    {
        match tokio::time::timeout(self.options.io_timeout, fut).await {
            Ok(r) => r.map_err(SyncFailure::from),
            Err(_) => Err(self.timeout()),
        }
    }

    fn timeout(&self) -> SyncFailure {
        SyncFailure::new(
            FailureKind::Timeout,
            format!(
                "the server did not answer within {} s",
                self.options.io_timeout.as_secs()
            ),
        )
    }

    async fn list(
        &self,
        session: &mut ImapSession,
        caps: &Capabilities,
    ) -> Result<Vec<FolderName>, SyncFailure> {
        use async_imap::types::NameAttribute;
        let mut out = Vec::new();
        let mut stream = self.io(session.list(Some(""), Some("*"))).await?;
        loop {
            let next = match tokio::time::timeout(self.options.io_timeout, stream.next()).await {
                Ok(n) => n,
                Err(_) => return Err(self.timeout()),
            };
            let Some(name) = next else { break };
            let name = name?;
            let attrs = name.attributes();
            let unselectable = attrs.iter().any(|a| match a {
                NameAttribute::NoSelect => true,
                NameAttribute::Extension(e) => e.eq_ignore_ascii_case("\\NonExistent"),
                _ => false,
            });
            if unselectable {
                continue;
            }
            let marked = attrs.iter().find_map(|a| match a {
                NameAttribute::Trash => Some(SpecialUse::Trash),
                NameAttribute::Junk => Some(SpecialUse::Junk),
                NameAttribute::Sent => Some(SpecialUse::Sent),
                NameAttribute::Drafts => Some(SpecialUse::Drafts),
                _ => None,
            });
            let special_use = match marked {
                Some(s) => s,
                None if caps.special_use => SpecialUse::None,
                None => SpecialUse::guess(name.name()),
            };
            out.push(FolderName {
                name: name.name().to_owned(),
                special_use,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn quota(&self, session: &mut ImapSession) -> Option<i64> {
        let (_, quotas) = self.io(session.get_quota_root("INBOX")).await.ok()?;
        quotas
            .iter()
            .flat_map(|q| q.resources.iter())
            .find(|r| matches!(r.name, async_imap::types::QuotaResourceName::Storage))
            .map(|r| i64::try_from(r.usage.saturating_mul(1024)).unwrap_or(i64::MAX))
    }

    #[allow(clippy::too_many_arguments)]
    async fn sync_folder(
        &self,
        session: &mut ImapSession,
        mailbox: Uuid,
        folder: &FolderRow,
        caps: &Capabilities,
        feed_left: &mut usize,
        report: &mut SyncReport,
        stop: &CancellationToken,
    ) -> Result<(), RunError> {
        let items = if caps.condstore {
            "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)"
        } else {
            "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"
        };
        let status = self.io(session.status(&folder.name, items)).await?;
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
        if unchanged {
            report.unchanged_folders += 1;
            return Ok(());
        }
        // Read-only: the sync changes nothing on the server (not even \Recent), so it wakes
        // no IDLE watcher. CHANGEDSINCE below enables CONDSTORE by itself (RFC 7162 3.1).
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
        if folder.uid_validity != 0 && folder.uid_validity != i64::from(cp.uid_validity) {
            tracing::info!(folder = %folder.name, "UIDVALIDITY changed; indexing the folder again");
            store::reset_folder(&self.pool, mailbox, folder.id, cp.uid_validity).await?;
            last_uid = 0;
            since_modseq = 0;
        } else if folder.uid_validity == 0 {
            store::reset_folder(&self.pool, mailbox, folder.id, cp.uid_validity).await?;
        }
        let first_import = last_uid == 0;

        // Flags of what the index already has, before new mail (whose flags come with it).
        if last_uid > 0 {
            let changes = if caps.condstore && since_modseq > 0 {
                if cp.highest_modseq > since_modseq {
                    self.fetch_flags(
                        session,
                        &format!("1:{last_uid}"),
                        &format!("(UID FLAGS) (CHANGEDSINCE {since_modseq})"),
                    )
                    .await?
                } else {
                    Vec::new()
                }
            } else {
                self.fetch_flags(session, &format!("1:{last_uid}"), "(UID FLAGS)")
                    .await?
            };
            report.flag_changes +=
                store::update_flags(&self.pool, mailbox, folder.id, &changes).await? as i64;
        }

        // UIDNEXT is optional in a server's answers: without it, ask.
        let server_next = cp.uid_next.max(selected.uid_next.unwrap_or(0));
        if selected.exists > 0 && (server_next == 0 || server_next.saturating_sub(1) > last_uid) {
            let feed = if first_import {
                None
            } else {
                Some(&mut *feed_left)
            };
            let range = format!("{}:*", last_uid.saturating_add(1));
            let (count, fed) = self
                .fetch_new(session, mailbox, folder.id, &range, last_uid, feed, stop)
                .await?;
            report.new_messages += count;
            if !fed.is_empty() {
                for chunk in fed.chunks(FEED_CHUNK) {
                    report.new_for_feed.push(ev::NewMessages {
                        mailbox_id: mailbox.to_string(),
                        folder: folder.name.clone(),
                        uid_validity: cp.uid_validity,
                        messages: chunk.to_vec(),
                    });
                }
            }
        }

        // Expunged messages (and any the index misses): only when the counts disagree.
        let indexed = store::indexed_count(&self.pool, mailbox, folder.id).await?;
        let mut final_count = indexed;
        if indexed != i64::from(selected.exists) || indexed != i64::from(cp.messages) {
            // Read before the search: a row written after it cannot be taken for gone.
            let in_index = store::indexed_uids(&self.pool, mailbox, folder.id).await?;
            let on_server = self.io(session.uid_search("ALL")).await?;
            // async-imap ends a SEARCH at its tag without reading the status: a refused or
            // cut-off answer would look like an emptied folder. Fewer UIDs than EXAMINE
            // counted is not believed; nothing is deleted and the folder is looked at again.
            if on_server.len() < selected.exists as usize {
                return Err(RunError::Failed(SyncFailure::new(
                    FailureKind::Refused,
                    format!(
                        "UID SEARCH answered {} of the {} messages the folder has",
                        on_server.len(),
                        selected.exists
                    ),
                )));
            }
            let indexed_set: HashSet<u32> = in_index.iter().copied().collect();
            let gone: Vec<u32> = in_index
                .into_iter()
                .filter(|uid| !on_server.contains(uid))
                .collect();
            report.expunged +=
                store::delete_uids(&self.pool, mailbox, folder.id, &gone).await? as i64;
            // On the server at or below the checkpoint, yet not in the index (a fetch cut off
            // earlier): fetched now, so a loss repairs itself.
            let mut missing: Vec<u32> = on_server
                .iter()
                .copied()
                .filter(|uid| *uid <= last_uid.max(1) && !indexed_set.contains(uid))
                .collect();
            missing.sort_unstable();
            for chunk in missing.chunks(500) {
                let set = chunk
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let (count, _) = self
                    .fetch_new(session, mailbox, folder.id, &set, 0, None, stop)
                    .await?;
                report.new_messages += count;
            }
            final_count = store::indexed_count(&self.pool, mailbox, folder.id).await?;
        }
        // The checkpoint says "the index has what STATUS described": saved only when the
        // counts agree, so a change this run could not account for is looked at again.
        if final_count == i64::from(cp.messages) {
            store::save_checkpoint(&self.pool, folder.id, cp).await?;
        } else {
            tracing::debug!(folder = %folder.name, final_count, status = cp.messages, "counts differ; no checkpoint this time");
        }
        Ok(())
    }

    async fn fetch_flags(
        &self,
        session: &mut ImapSession,
        range: &str,
        query: &str,
    ) -> Result<Vec<(u32, i16, Option<String>)>, SyncFailure> {
        let mut out = Vec::new();
        let mut stream = self.io(session.uid_fetch(range, query)).await?;
        loop {
            let next = match tokio::time::timeout(self.options.io_timeout, stream.next()).await {
                Ok(n) => n,
                Err(_) => return Err(self.timeout()),
            };
            let Some(fetch) = next else { break };
            let fetch = fetch?;
            let Some(uid) = fetch.uid else { continue };
            let (bits, keywords) = flag_bits(&fetch);
            out.push((uid, bits, keywords));
        }
        Ok(out)
    }

    /// Fetches the UIDs `set` names (above `last_uid`) as one stream, written in batches as
    /// it arrives.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_new(
        &self,
        session: &mut ImapSession,
        mailbox: Uuid,
        folder: i32,
        set: &str,
        last_uid: u32,
        mut feed: Option<&mut usize>,
        stop: &CancellationToken,
    ) -> Result<(i64, Vec<ev::NewMessage>), RunError> {
        let batch = self.options.batch.max(1);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<NewRow>>(4);
        let pool = self.pool.clone();
        let writer = async move {
            let mut written = 0i64;
            while let Some(rows) = rx.recv().await {
                store::insert_batch(&pool, mailbox, folder, &rows).await?;
                written += rows.len() as i64;
            }
            Ok::<i64, sqlx::Error>(written)
        };
        let io_timeout = self.options.io_timeout;
        let reader = async move {
            let mut fed = Vec::new();
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
                        return Ok(fed);
                    }
                }
            }
            if !rows.is_empty() {
                let _ = tx.send(rows).await;
            }
            Ok(fed)
        };
        let (read, written) = tokio::join!(reader, writer);
        let written = written?;
        let fed = read?;
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
        internal_date: Some(prost_types::Timestamp {
            seconds: row.internal_date.timestamp(),
            nanos: row.internal_date.timestamp_subsec_nanos() as i32,
        }),
        size: i64::from(row.size),
    }
}
