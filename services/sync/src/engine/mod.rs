//! One mailbox's sync from IMAP into the message index: this file walks the mailbox's
//! folders; `folder` brings one folder level with the server, `fetch` streams new
//! messages and flags into the index, `expunge` finds what the server no longer has.
//!
//! The walk: LIST (SPECIAL-USE marks, or else names guessed), then every folder in name
//! order, then the mailbox's counters from the checkpoints just saved and its disk use
//! (QUOTA, or the sum of indexed sizes).
//!
//! Invariant: anything interrupted is redone, never lost or doubled. Every write is committed
//! with the checkpoint that covers it, the checkpoint last; a LIST without an INBOX (refused or
//! cut off) is not believed, so it never drops a folder; a folder the server refuses to open
//! is left as it was and the others go on. `stop` ends a run between commits: what was
//! committed stays, and the next run carries on from it.
//!
//! Unsolicited responses are never relied on (async-imap's channel for them holds 100 and
//! drops the rest); they are drained after each folder.

mod expunge;
mod fetch;
mod folder;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mailroom_mail::dial::Policy;
use mailroom_mail::imap::{self, ImapSession};
use mailroom_mail::{Connector, Login};
use mailroom_platform::proto::events::v1 as ev;
use mailroom_types::MailboxId;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::domain::SpecialUse;
use crate::error::{FailureKind, RunError, SyncFailure};
use crate::store::folders::{self, FolderRow};
use crate::store::messages;

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

impl SyncReport {
    /// [`SyncReport::duration`] in whole milliseconds, as the schedule and the events keep it.
    pub fn duration_ms(&self) -> i64 {
        i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX)
    }
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

/// What the server can do that changes how a folder is synced.
struct Capabilities {
    condstore: bool,
    quota: bool,
    special_use: bool,
}

struct FolderName {
    name: String,
    special_use: SpecialUse,
}

/// One run over one mailbox: what every folder's sync shares.
struct Run<'a> {
    mailbox: MailboxId,
    caps: Capabilities,
    stop: &'a CancellationToken,
    /// New messages the feed may still take in this run (0 when not feeding).
    feed_left: usize,
    report: SyncReport,
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
        mailbox: MailboxId,
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
        mailbox: MailboxId,
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
        let known: HashMap<String, FolderRow> = folders::folders(&self.pool, mailbox)
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
                folders::drop_folder(&self.pool, mailbox, folder.id).await?;
            }
        }
        let mut run = Run {
            mailbox,
            caps,
            stop,
            feed_left: if feed { FEED_MAX } else { 0 },
            report: SyncReport::default(),
        };
        for folder_name in &names {
            if stop.is_cancelled() {
                return Err(RunError::Stopped);
            }
            let folder = match known.get(&folder_name.name) {
                Some(f) if f.special_use == folder_name.special_use.as_str() => f.clone(),
                _ => {
                    folders::ensure_folder(
                        &self.pool,
                        mailbox,
                        &folder_name.name,
                        folder_name.special_use.as_str(),
                    )
                    .await?
                }
            };
            run.report.folders += 1;
            match self.sync_folder(session, &mut run, &folder).await {
                // A folder the server will not open for this account (a shared folder
                // without read rights) is left as it is; the others go on.
                Err(RunError::Failed(f)) if f.kind == FailureKind::Refused => {
                    tracing::info!(folder = %folder.name, reason = %f.message, "folder skipped");
                    run.report.skipped_folders += 1;
                }
                other => other?,
            }
            while session.unsolicited_responses.try_recv().is_ok() {}
        }
        let mut report = run.report;
        // The counters, from the checkpoints just saved.
        for folder in folders::folders(&self.pool, mailbox).await? {
            report.message_count += folder.messages;
            if SpecialUse::from_stored(&folder.special_use).counts_unread() {
                report.unread_count += folder.unseen;
            }
        }
        report.disk_bytes = match run.caps.quota {
            true => self.quota(session).await,
            false => None,
        }
        .unwrap_or(messages::total_size(&self.pool, mailbox).await?);
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
}
