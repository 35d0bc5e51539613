//! One mailbox's sync from IMAP into the message index: this file walks the mailbox's
//! folders; `folder` brings one folder level with the server, `fetch` streams new
//! messages and flags into the index, `expunge` finds what the server no longer has.
//!
//! The walk: LIST (SPECIAL-USE marks, or else names guessed; each folder kept under the name
//! the server means, escapes taken out, modified UTF-7 left as it is for the server), then
//! every folder in name order, then the mailbox's counters from the checkpoints just saved and its disk use
//! (QUOTA, or the sum of indexed sizes; a run that found nothing changed reports the QUOTA
//! figure this engine last had for the mailbox instead of asking again).
//!
//! Invariant: anything interrupted is redone, never lost or doubled. Every write is committed
//! with the checkpoint that covers it, the checkpoint last, and a batch of new messages with
//! its events for the CRM's feed (a message is fed when it first enters the index, so a run
//! that fails after some batches leaves those in the feed once, and the next feeds the rest);
//! a LIST without an INBOX (refused or cut off) is not believed, so it never drops a folder; a
//! folder the server refuses to open is left as it was and the others go on. `stop` ends a run
//! between commits: what was committed stays, and the next run carries on from it.
//!
//! Fencing: a run writes as one generation of the mailbox's lease ([`Fence`]), claimed before
//! it reads the mailbox's state; every transaction it writes in checks the claim first
//! ([`fences::begin`]), so once a newer holder claimed the mailbox, this run's next write is
//! refused and the run ends ([`RunError::Fenced`]) with nothing more written.
//!
//! Time: every command must make progress within the I/O timeout (its answer, or the next
//! message, flag or UID of a streamed answer: lines that carry none of these do not count),
//! each command ends at the command deadline, and the whole run at the sync's deadline: a
//! server that keeps a sync waiting with a line now and then fails the mailbox ("the mail
//! server stopped answering"), and what was indexed before stays.
//!
//! Unsolicited responses are never relied on (async-imap's channel for them holds 100 and
//! drops the rest); a task drains them as they come, so none is held.
//!
//! Limits ([`SyncLimits`]): every read from the server is bounded before it is buffered
//! (`mailroom_mail`'s guard: line, literal, responses per command, a deadline per command);
//! a LIST of more than `max_folders` folders fails the mailbox, saying which limit; a folder
//! whose name is too long, holds a control character (NUL, CR, LF) or is not UTF-8 is skipped
//! and named in the run's notes ([`SyncReport::notes`]), as is one the server will not open; the index takes no more messages than the
//! mailbox's and the organisation's limits allow, and the run stops there saying which. Such
//! a failure is the mailbox's alone: the worker records it and goes on with others.

mod answer;
mod expunge;
mod fetch;
mod folder;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mailroom_mail::dial::Policy;
use mailroom_mail::imap::{self, ImapSession, ReadLimits};
use mailroom_mail::{Connector, Login};
use mailroom_types::{MailboxId, OrgId};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::domain::SpecialUse;
use crate::error::{FailureKind, RunError, SyncFailure};
use crate::store::fences::{self, Fence};
use crate::store::folders::{self, FolderRow};
use crate::store::{messages, schedule};

/// How the engine behaves (from the worker's configuration).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Messages per database batch.
    pub batch: usize,
    /// Connect-and-login deadline.
    pub connect_timeout: Duration,
    /// Longest wait for progress on one command: its answer, or the next message, flag or UID
    /// of a streamed answer (lines that carry none of these do not count).
    pub io_timeout: Duration,
    /// Where mail servers may be (the destination policy every IMAP connection obeys).
    pub policy: Policy,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            batch: 1000,
            connect_timeout: Duration::from_secs(20),
            io_timeout: Duration::from_secs(60),
            policy: Policy::default(),
        }
    }
}

/// What a sync holds a mail server and a mailbox to (from the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncLimits {
    /// Every read from the server (see `mailroom_mail::imap::guard`).
    pub read: ReadLimits,
    /// Folders one LIST may name (selectable or not).
    pub max_folders: usize,
    /// Longest folder name synced, in bytes.
    pub max_folder_name_bytes: usize,
    pub max_messages_per_mailbox: u64,
    /// Every mailbox of the organisation together; `0`: no limit.
    pub max_messages_per_org: u64,
}

impl Default for SyncLimits {
    fn default() -> Self {
        Self {
            read: ReadLimits::default(),
            max_folders: 1_000,
            max_folder_name_bytes: 1_000,
            max_messages_per_mailbox: 1_000_000,
            max_messages_per_org: 0,
        }
    }
}

impl SyncLimits {
    /// The limits the configuration sets.
    pub fn from_config(config: &crate::config::SyncConfig) -> Self {
        Self {
            read: ReadLimits {
                max_line_bytes: config.max_line_bytes.max(1024),
                max_literal_bytes: config.max_literal_bytes.max(1024),
                max_responses: config.max_responses_per_command.max(1),
                // What async-imap keeps whole is small (capabilities, EXAMINE's flags).
                max_kept_bytes: config.max_line_bytes.max(1024),
                command_deadline: Duration::from_secs(config.command_deadline_secs.max(1)),
            },
            max_folders: config.max_folders_per_mailbox.max(1),
            max_folder_name_bytes: config.max_folder_name_bytes.max(1),
            max_messages_per_mailbox: config.max_messages_per_mailbox,
            max_messages_per_org: config.max_messages_per_org,
        }
    }
}

/// Most STATUS commands sent together.
const STATUS_PIPELINE: usize = 64;

/// Most notes one report keeps (the rest are counted).
const MAX_NOTES: usize = 5;

/// What a finished sync found.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub folders: usize,
    /// Folders whose STATUS matched the checkpoint.
    pub unchanged_folders: usize,
    /// Folders the server refused to open (tried again next time; nothing of theirs was
    /// changed or checkpointed), said in [`SyncReport::notes`].
    pub skipped_folders: usize,
    pub new_messages: i64,
    pub flag_changes: i64,
    pub expunged: i64,
    /// Of `expunged`, the messages the server named as gone (QRESYNC's VANISHED) rather than
    /// found missing from a listing of every UID.
    pub vanished: i64,
    /// Folders whose every flag was read (no CONDSTORE, or a HIGHESTMODSEQ gone back).
    pub flag_passes: usize,
    /// Folders whose every UID was listed to find what the server no longer has (their
    /// counts disagreed after everything else).
    pub listings: usize,
    pub message_count: i64,
    pub unread_count: i64,
    pub disk_bytes: i64,
    /// The server was asked for QUOTA in this run (not: a figure kept from an earlier run
    /// of this engine was reported, or the server has no QUOTA).
    pub quota_asked: bool,
    pub duration: Duration,
    /// The whole sync's deadline ended the run after it had committed some of its work (a
    /// large import, a slow server): not a failure; the mailbox is due again at once, and the
    /// next run carries on from what was committed. The counts are those of the checkpoints
    /// saved so far.
    pub cut_short: bool,
    /// New messages of folders synced before (not the first import) put in the CRM's feed,
    /// each in the transaction that indexed it.
    pub fed: i64,
    /// Folders skipped for their names (too long, control characters): never synced, and
    /// said in [`SyncReport::notes`].
    pub unsyncable_folders: usize,
    /// What a person should know of a run that succeeded (the first few folders skipped for
    /// their names or refused by the server).
    pub notes: Vec<String>,
    /// Where the run's time went (for benchmarks and slow-sync logs).
    pub phases: Phases,
}

/// Where a sync's time went. The fetch figures overlap the folders' time: reading IMAP and
/// writing the index run side by side.
#[derive(Debug, Clone, Default)]
pub struct Phases {
    /// Dial, greeting and LOGIN.
    pub connect: Duration,
    /// CAPABILITY, the mailbox's state, LIST and every folder's STATUS.
    pub prepare: Duration,
    /// Every folder's work (EXAMINE, flags, new messages, expunges, checkpoints).
    pub folders: Duration,
    /// The counters and the disk figure.
    pub finish: Duration,
    /// New messages: waiting for the server's answer and parsing it.
    pub fetch_read: Duration,
    /// New messages: the reader waiting for the index writer to take a batch.
    pub fetch_blocked: Duration,
    /// New messages: the writer's transactions (begin to commit).
    pub fetch_write: Duration,
}

impl SyncReport {
    /// [`SyncReport::duration`] in whole milliseconds, as the schedule and the events keep it.
    pub fn duration_ms(&self) -> i64 {
        i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX)
    }

    /// The notes as one sentence for the mailbox's status ('' when there are none).
    pub fn note(&self) -> String {
        if self.cut_short {
            return crate::error::bounded_message(
                "synced in part: the sync reached its time limit (MAILROOM_SYNC__SYNC_DEADLINE_SECS) while the mailbox was still being indexed; the next sync carries on at once",
            );
        }
        let skipped = self.unsyncable_folders + self.skipped_folders;
        if skipped == 0 {
            return String::new();
        }
        crate::error::bounded_message(&format!(
            "synced, but {skipped} folder(s) were skipped and are not synced: {}",
            self.notes.join("; ")
        ))
    }
}

/// Most messages one NewMessages event carries.
pub const FEED_CHUNK: usize = 500;
/// Most new messages of one sync reported to the feed (the rest are in the index).
pub const FEED_MAX: usize = 5_000;
/// The longest a whole sync may take by default (connect, every folder, the counters).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(1_800);
/// By default, without CONDSTORE, every flag of a folder whose STATUS did not change is read
/// again on every 6th sync ([`Engine::with_flag_pass_every`]).
pub const DEFAULT_FLAG_PASS_EVERY: u32 = 6;

#[derive(Clone)]
pub struct Engine {
    pool: PgPool,
    /// The mail layer's connector (destination policy, TLS, `connect_timeout`) every IMAP
    /// session of this engine opens with.
    connector: Connector,
    options: EngineOptions,
    limits: SyncLimits,
    /// The longest a whole sync may take.
    deadline: Duration,
    /// Without CONDSTORE: every flag of a quiet folder is read on every this-many-th sync
    /// (0: only when its STATUS changes).
    flag_pass_every: u32,
    /// The disk figure QUOTA last gave for each mailbox this engine synced (at most
    /// [`QUOTA_KEPT`] of them), with the checkpoints the run that read it left: a run that
    /// starts from the same checkpoints and finds every folder as they say reports it again
    /// instead of asking
    /// (a server may take longer over QUOTA than over the rest of such a run, Dovecot's
    /// `count` quota ~10 ms for 20k messages). A run of another replica in between moves the
    /// checkpoints, and a figure older than [`QUOTA_KEPT_FOR`] is asked again (a server may
    /// recount, a quota root may be shared).
    quotas: Arc<Mutex<HashMap<MailboxId, KeptQuota>>>,
}

/// Most mailboxes whose last QUOTA figure an engine keeps (about 60 bytes each); past it the
/// figures are forgotten and asked again.
const QUOTA_KEPT: usize = 100_000;
/// How long a kept QUOTA figure may be reported again.
const QUOTA_KEPT_FOR: Duration = Duration::from_secs(3_600);

/// A mailbox's QUOTA figure, the checkpoints it was read at and when.
#[derive(Debug, Clone, Copy)]
struct KeptQuota {
    checkpoints: u64,
    bytes: i64,
    read: Instant,
}

/// A digest of a mailbox's folder checkpoints (what tells a run whether anything changed).
fn checkpoints_digest<'a>(folders: impl Iterator<Item = &'a FolderRow>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut folders: Vec<&FolderRow> = folders.collect();
    folders.sort_by(|a, b| a.name.cmp(&b.name));
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    for f in folders {
        (
            &f.name,
            f.uid_validity,
            f.uid_next,
            f.highest_modseq,
            f.messages,
            f.last_uid,
        )
            .hash(&mut digest);
    }
    digest.finish()
}

/// The mailbox's state as a run finds it (read once its fence is claimed).
struct State {
    /// The mailbox's organisation, when the schedule knows it.
    org: Option<OrgId>,
    /// The folders' checkpoints.
    known: Vec<FolderRow>,
}

/// What the server can do that changes how a folder is synced.
struct Capabilities {
    condstore: bool,
    /// RFC 7162's QRESYNC: a flags fetch with `CHANGEDSINCE` may ask for `VANISHED` too.
    qresync: bool,
    quota: bool,
    special_use: bool,
}

struct FolderName {
    name: String,
    special_use: SpecialUse,
}

/// The folders a LIST named, and those skipped for their names.
struct Listing {
    names: Vec<FolderName>,
    unsyncable: usize,
    notes: Vec<String>,
}

/// How many more messages the index may take in this run, and whose limit that is.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    left: u64,
    limit: u64,
    whose: &'static str,
}

impl Allowance {
    fn exhausted(&self) -> SyncFailure {
        let (setting, whose) = match self.whose {
            "organisation" => (
                "MAILROOM_SYNC__MAX_MESSAGES_PER_ORG",
                "the organisation's mailboxes together hold",
            ),
            _ => (
                "MAILROOM_SYNC__MAX_MESSAGES_PER_MAILBOX",
                "the mailbox holds",
            ),
        };
        SyncFailure::new(
            FailureKind::Limit,
            format!(
                "{whose} {} indexed messages, the most allowed (limit {setting}); newer messages are not indexed",
                self.limit
            ),
        )
    }
}

/// One run over one mailbox: what every folder's sync shares.
struct Run<'a> {
    mailbox: MailboxId,
    /// The mailbox's organisation, when the schedule knows it (its limit applies then).
    org: Option<OrgId>,
    /// Worked out when the first new message comes.
    allowance: Option<Allowance>,
    caps: Capabilities,
    stop: &'a CancellationToken,
    /// The lease generation this run writes as.
    fence: Fence,
    /// Where the feed's events go (the mailbox's organisation), when the run feeds.
    feed_org: Option<OrgId>,
    /// New messages the feed may still take in this run.
    feed_left: usize,
    /// Transactions this run committed that moved the index or a checkpoint on (what decides
    /// whether its deadline ends it as a failure, see [`SyncReport::cut_short`]).
    progress: &'a Arc<AtomicU64>,
    /// Some folder has a checkpoint with a HIGHESTMODSEQ and indexed messages: a changed one
    /// is brought level with `CHANGEDSINCE`, where QRESYNC also names what was expunged.
    incremental: bool,
    /// `ENABLE QRESYNC` was sent (it must come before the first EXAMINE), and whether it took.
    qresync_asked: bool,
    qresync_on: bool,
    /// Folders whose STATUS did not change and whose flags were not read (without CONDSTORE:
    /// counted towards their next flags pass).
    quiet: Vec<i32>,
    report: SyncReport,
}

impl Engine {
    pub fn new(pool: PgPool, options: EngineOptions) -> Self {
        Self {
            pool,
            connector: Connector::new(options.policy.clone(), options.connect_timeout),
            options,
            limits: SyncLimits::default(),
            deadline: DEFAULT_DEADLINE,
            flag_pass_every: DEFAULT_FLAG_PASS_EVERY,
            quotas: Arc::default(),
        }
    }

    /// The engine reading every flag of a folder whose STATUS did not change on every
    /// `every`-th sync, for servers without CONDSTORE (whose STATUS shows no change of a flag
    /// other than `\Seen`); `1`: every sync; `0`: only when STATUS changes. Default
    /// [`DEFAULT_FLAG_PASS_EVERY`]. With CONDSTORE, HIGHESTMODSEQ shows every change and
    /// this does not apply.
    pub fn with_flag_pass_every(mut self, every: u32) -> Self {
        self.flag_pass_every = every;
        self
    }

    /// The engine with a whole sync's deadline of `deadline` instead of [`DEFAULT_DEADLINE`].
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline.max(Duration::from_secs(1));
        self
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The engine with `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: SyncLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> &SyncLimits {
        &self.limits
    }

    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Syncs `mailbox` as a writer that holds no lease (a tool, a benchmark, a test): it
    /// claims the generation after the stored one, so any lease holder before it is fenced
    /// out. The worker, which holds the lease, uses [`Engine::sync_fenced`].
    pub async fn sync(
        &self,
        mailbox: MailboxId,
        login: &Login,
        feed: bool,
        stop: &CancellationToken,
    ) -> Result<SyncReport, RunError> {
        let fence = fences::claim_next(&self.pool, mailbox).await?;
        self.sync_fenced(fence, login, feed, stop).await
    }

    /// Syncs `fence.mailbox` from the server `login` names, writing as `fence`'s generation
    /// (claimed by the caller with [`fences::claim`]). `feed`: put new messages in the CRM's
    /// feed (when the schedule knows the mailbox's organisation). `stop` ends the run early;
    /// the deadline ends it, as a failure when it committed nothing, else as a report
    /// [`SyncReport::cut_short`] (what was committed stays either way).
    #[tracing::instrument(skip_all, fields(mailbox = %fence.mailbox, generation = fence.generation))]
    pub async fn sync_fenced(
        &self,
        fence: Fence,
        login: &Login,
        feed: bool,
        stop: &CancellationToken,
    ) -> Result<SyncReport, RunError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.deadline;
        let connect = async {
            tokio::select! {
                s = imap::connect_with(&self.connector, login, &self.limits.read) => {
                    s.map_err(|e| RunError::Failed(SyncFailure::connecting(login, &e)))
                }
                _ = stop.cancelled() => Err(RunError::Stopped),
            }
        };
        // The mailbox's state (its fence claimed before) is read while the server logs in.
        let state = async {
            let (org, known) = tokio::join!(
                schedule::org_of(&self.pool, fence.mailbox),
                folders::folders(&self.pool, fence.mailbox),
            );
            Ok::<_, RunError>(State {
                org: org?,
                known: known?,
            })
        };
        // Either failing ends the other at once.
        let both = async { tokio::try_join!(connect, state) };
        let (mut session, state) = match tokio::time::timeout_at(deadline, both).await {
            Ok(both) => both?,
            Err(_) => return Err(self.past_deadline().into()),
        };
        let connected = started.elapsed();
        drain_unsolicited(&session);
        let progress = Arc::new(AtomicU64::new(0));
        let run = self.sync_session(&mut session, fence, state, feed, stop, &progress);
        let result = match tokio::time::timeout_at(deadline, run).await {
            Ok(result) => result,
            // Whatever was under way is dropped (an open transaction rolls back); the server
            // is not waited for again.
            Err(_) if progress.load(Ordering::SeqCst) == 0 => {
                return Err(self.past_deadline().into())
            }
            // A healthy run that has more to do than fits: what it committed stays, and it
            // is not held against the server.
            Err(_) => {
                let mut report = SyncReport {
                    cut_short: true,
                    ..SyncReport::default()
                };
                self.counters(fence.mailbox, &mut report).await?;
                report.disk_bytes = messages::total_size(&self.pool, fence.mailbox).await?;
                report.duration = started.elapsed();
                tracing::info!(
                    committed = progress.load(Ordering::SeqCst),
                    "the sync reached its deadline with more to do; it carries on next time"
                );
                return Ok(report);
            }
        };
        // A server slow to say goodbye does not fail a sync that is done, nor keep it waiting:
        // the goodbye is said after the report (the connection closes with it, within 2 s).
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
        });
        let mut report = result?;
        report.duration = started.elapsed();
        report.phases.connect = connected;
        Ok(report)
    }

    /// The whole sync took longer than its deadline.
    fn past_deadline(&self) -> SyncFailure {
        SyncFailure::new(
            FailureKind::Timeout,
            format!(
                "the mail server stopped answering in time: the sync did not finish within {} s (limit MAILROOM_SYNC__SYNC_DEADLINE_SECS); what was indexed stays, and the next sync carries on from there",
                self.deadline.as_secs()
            ),
        )
    }

    async fn sync_session(
        &self,
        session: &mut ImapSession,
        fence: Fence,
        State { org, known }: State,
        feed: bool,
        stop: &CancellationToken,
        progress: &Arc<AtomicU64>,
    ) -> Result<SyncReport, RunError> {
        let mailbox = fence.mailbox;
        let started = Instant::now();
        let caps = self.io(session.capabilities()).await?;
        let caps = Capabilities {
            // QRESYNC implies CONDSTORE (RFC 7162 3.2.3).
            condstore: caps.has_str("CONDSTORE") || caps.has_str("QRESYNC"),
            qresync: caps.has_str("QRESYNC"),
            quota: caps.has_str("QUOTA"),
            special_use: caps.has_str("SPECIAL-USE"),
        };
        let Listing {
            names,
            unsyncable,
            notes,
        } = self.list(session, &caps).await?;
        let known: HashMap<String, FolderRow> =
            known.into_iter().map(|f| (f.name.clone(), f)).collect();
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
        let gone: Vec<&FolderRow> = known
            .iter()
            .filter(|(name, _)| !listed.contains(name.as_str()))
            .map(|(_, folder)| folder)
            .collect();
        let folders_dropped = !gone.is_empty();
        if !gone.is_empty() {
            let mut tx = fences::begin(&self.pool, &fence).await?;
            for folder in gone {
                folders::drop_folder(&mut tx, mailbox, folder.id).await?;
            }
            tx.commit().await?;
        }
        let feed_org = match (feed, org) {
            (true, None) => {
                tracing::warn!("the mailbox is not in the schedule: no organisation to feed");
                None
            }
            (feed, org) => org.filter(|_| feed),
        };
        let incremental = known
            .values()
            .any(|f| f.highest_modseq > 0 && f.last_uid > 0);
        let checkpoints = checkpoints_digest(known.values());
        let mut run = Run {
            mailbox,
            org,
            allowance: None,
            caps,
            stop,
            fence,
            feed_org,
            feed_left: FEED_MAX,
            progress,
            incremental,
            qresync_asked: false,
            qresync_on: false,
            quiet: Vec::new(),
            report: SyncReport {
                unsyncable_folders: unsyncable,
                notes,
                ..SyncReport::default()
            },
        };
        // Every folder's STATUS first, the commands sent together (one round trip for a
        // mailbox whose folders are all unchanged). A folder's figures may be older than its
        // turn by then: they are only ever saved after the folder's work, so a change since
        // is seen by the next run.
        let items = if run.caps.condstore {
            "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)"
        } else {
            "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"
        };
        let mut statuses = Vec::with_capacity(names.len());
        for chunk in names.chunks(STATUS_PIPELINE) {
            let chunk: Vec<&str> = chunk.iter().map(|n| n.name.as_str()).collect();
            // Not async-imap's STATUS, which loses the answer for a name with quotes or
            // backslashes.
            statuses.extend(
                self.io(imap::status::statuses(session, &chunk, items))
                    .await?,
            );
        }
        run.report.phases.prepare = started.elapsed();
        let started = Instant::now();
        for (folder_name, status) in names.iter().zip(statuses) {
            if stop.is_cancelled() {
                return Err(RunError::Stopped);
            }
            let folder = match known.get(&folder_name.name) {
                Some(f) if f.special_use == folder_name.special_use.as_str() => f.clone(),
                _ => {
                    let mut tx = fences::begin(&self.pool, &fence).await?;
                    let row = folders::ensure_folder(
                        &mut tx,
                        mailbox,
                        &folder_name.name,
                        folder_name.special_use.as_str(),
                    )
                    .await?;
                    tx.commit().await?;
                    row
                }
            };
            run.report.folders += 1;
            match self.sync_folder(session, &mut run, &folder, status).await {
                // A folder the server will not open for this account (a shared folder
                // without read rights) is left as it is; the others go on.
                // Said in the run's notes: its mail is missing from the index and the counts.
                Err(RunError::Failed(f)) if f.kind == FailureKind::Refused => {
                    tracing::info!(folder = %folder.name, reason = %f.message, "folder skipped");
                    run.report.skipped_folders += 1;
                    if run.report.notes.len() < MAX_NOTES {
                        run.report.notes.push(format!(
                            "`{}`, which the server would not open ({})",
                            mailroom_mail::one_line(&folder.display_name()),
                            f.message
                        ));
                    }
                }
                other => other?,
            }
            while session.unsolicited_responses.try_recv().is_ok() {}
        }
        run.report.phases.folders = started.elapsed();
        let started = Instant::now();
        if !run.quiet.is_empty() {
            let mut tx = fences::begin(&self.pool, &fence).await?;
            folders::count_quiet_syncs(&mut tx, mailbox, &run.quiet, fence.generation).await?;
            tx.commit().await?;
        }
        let mut report = run.report;
        // The server's QUOTA is asked after the counters are read; the sum of indexed sizes
        // only where it gives none.
        // Nothing changed (every folder as its checkpoint says, none added or dropped): nor
        // did the disk use.
        let unchanged = !folders_dropped
            && report.skipped_folders == 0
            && report.unchanged_folders == report.folders;
        let quotas = &self.quotas;
        let known_quota = match unchanged {
            true => quotas
                .lock()
                .ok()
                .and_then(|q| q.get(&mailbox).copied())
                .filter(|k| k.checkpoints == checkpoints && k.read.elapsed() < QUOTA_KEPT_FOR)
                .map(|k| k.bytes),
            false => None,
        };
        // The checkpoints are read back before QUOTA is asked: whatever they are (this run's,
        // or a newer holder's written meanwhile), each came from a STATUS answered before
        // this QUOTA, so a change since moves a STATUS figure and the next run asks again.
        let left = self.counters(mailbox, &mut report).await?;
        let (quota, asked) = match (run.caps.quota, known_quota) {
            (true, Some(bytes)) => (Some(bytes), false),
            (true, None) => (self.quota(session).await, true),
            (false, _) => (None, false),
        };
        report.quota_asked = asked;
        // Kept with the checkpoints this run leaves (those the next run starts from), unless
        // some mail is in no checkpoint: a folder skipped, or one never synced for its name.
        if let (true, Some(bytes), 0, 0) = (
            asked,
            quota,
            report.skipped_folders,
            report.unsyncable_folders,
        ) {
            if let Ok(mut kept) = quotas.lock() {
                if kept.len() >= QUOTA_KEPT {
                    kept.clear();
                }
                kept.insert(
                    mailbox,
                    KeptQuota {
                        checkpoints: left,
                        bytes,
                        read: Instant::now(),
                    },
                );
            }
        }
        report.disk_bytes = match quota {
            Some(bytes) => bytes,
            None => messages::total_size(&self.pool, mailbox).await?,
        };
        report.phases.finish = started.elapsed();
        Ok(report)
    }

    /// `ENABLE QRESYNC`, once per session and before its first EXAMINE (RFC 5161: ENABLE is
    /// for the authenticated state), when the server has it and some folder may be brought
    /// level by `CHANGEDSINCE` (a first import has no use for it, and its FETCH answers
    /// would carry MODSEQ for nothing). A server that refuses it is synced without.
    async fn enable_qresync(
        &self,
        session: &mut ImapSession,
        run: &mut Run<'_>,
    ) -> Result<(), SyncFailure> {
        if run.qresync_asked || !run.caps.qresync || !run.incremental {
            run.qresync_asked = true;
            return Ok(());
        }
        run.qresync_asked = true;
        match self
            .io(session.run_command_and_check_ok("ENABLE QRESYNC"))
            .await
        {
            Ok(()) => run.qresync_on = true,
            Err(f) if matches!(f.kind, FailureKind::Refused | FailureKind::Protocol) => {
                tracing::info!(reason = %f.message, "the server did not enable QRESYNC; expunges are found by listing UIDs");
            }
            Err(f) => return Err(f),
        }
        Ok(())
    }

    /// The counters, from the checkpoints saved; returns those checkpoints' digest.
    async fn counters(&self, mailbox: MailboxId, report: &mut SyncReport) -> sqlx::Result<u64> {
        let saved = folders::folders(&self.pool, mailbox).await?;
        for folder in &saved {
            report.message_count += folder.messages;
            if SpecialUse::from_stored(&folder.special_use).counts_unread() {
                report.unread_count += folder.unseen;
            }
        }
        Ok(checkpoints_digest(saved.iter()))
    }

    /// Waits for one IMAP command's answer, bounded by the I/O timeout.
    async fn io<T, F>(&self, fut: F) -> Result<T, SyncFailure>
    where
        F: std::future::Future<Output = async_imap::error::Result<T>>,
    {
        match tokio::time::timeout(self.options.io_timeout, fut).await {
            Ok(r) => r.map_err(SyncFailure::from),
            Err(_) => Err(self.timeout()),
        }
    }

    /// No progress on a command within the I/O timeout.
    fn timeout(&self) -> SyncFailure {
        let after = self.options.io_timeout;
        let after = if after.subsec_millis() == 0 {
            format!("{} s", after.as_secs())
        } else {
            format!("{:.1} s", after.as_secs_f64())
        };
        SyncFailure::new(
            FailureKind::Timeout,
            format!(
                "the mail server stopped answering: nothing the sync asked for came within {after} (limit MAILROOM_SYNC__IO_TIMEOUT_MS); what was indexed before stays"
            ),
        )
    }

    /// How many more messages the index may take in this run (worked out once per run).
    async fn allowance(&self, run: &mut Run<'_>) -> Result<Allowance, RunError> {
        if let Some(allowance) = run.allowance {
            return Ok(allowance);
        }
        let indexed =
            u64::try_from(messages::mailbox_count(&self.pool, run.mailbox).await?).unwrap_or(0);
        let per_mailbox = self.limits.max_messages_per_mailbox;
        let mut allowance = Allowance {
            left: per_mailbox.saturating_sub(indexed),
            limit: per_mailbox,
            whose: "mailbox",
        };
        let per_org = self.limits.max_messages_per_org;
        if let (Some(org), true) = (run.org, per_org > 0) {
            let others =
                u64::try_from(schedule::org_messages_besides(&self.pool, org, run.mailbox).await?)
                    .unwrap_or(0);
            let left = per_org.saturating_sub(others.saturating_add(indexed));
            if left < allowance.left {
                allowance = Allowance {
                    left,
                    limit: per_org,
                    whose: "organisation",
                };
            }
        }
        run.allowance = Some(allowance);
        Ok(allowance)
    }

    async fn list(
        &self,
        session: &mut ImapSession,
        caps: &Capabilities,
    ) -> Result<Listing, SyncFailure> {
        use async_imap::types::NameAttribute;
        let mut out = Vec::new();
        let mut unsyncable = 0;
        let mut notes = Vec::new();
        let mut listed = 0usize;
        let mut stream = self.io(session.list(Some(""), Some("*"))).await?;
        loop {
            let next = match tokio::time::timeout(self.options.io_timeout, stream.next()).await {
                Ok(n) => n,
                Err(_) => return Err(self.timeout()),
            };
            let Some(name) = next else { break };
            let name = name?;
            listed += 1;
            if listed > self.limits.max_folders {
                return Err(SyncFailure::new(
                    FailureKind::Limit,
                    format!(
                        "the server lists more than {} folders for this mailbox, the most synced (limit MAILROOM_SYNC__MAX_FOLDERS_PER_MAILBOX); nothing was changed",
                        self.limits.max_folders
                    ),
                ));
            }
            // The name the server means: a quoted one without its escapes (async-imap leaves
            // them in), so a command quoting it again names the same folder.
            let listed = match imap::names::listed_name(&name) {
                Some(listed) => listed,
                None => {
                    unsyncable += 1;
                    if notes.len() < MAX_NOTES {
                        notes.push(format!(
                            "a name that is not UTF-8: `{}`",
                            mailroom_mail::one_line(
                                &name.name().chars().take(40).collect::<String>()
                            )
                        ));
                    }
                    continue;
                }
            };
            if let Some(why) = unsyncable_name(&listed, self.limits.max_folder_name_bytes) {
                unsyncable += 1;
                if notes.len() < MAX_NOTES {
                    notes.push(why);
                }
                continue;
            }
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
                None => SpecialUse::guess(&imap::names::display_name(&listed)),
            };
            out.push(FolderName {
                name: listed,
                special_use,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Listing {
            names: out,
            unsyncable,
            notes,
        })
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

/// Why a folder name cannot be synced, if it cannot: longer than `max_bytes`, or holding a
/// control character (NUL, CR, LF, …), which neither a command line nor the index can carry.
fn unsyncable_name(name: &str, max_bytes: usize) -> Option<String> {
    if name.len() > max_bytes {
        let start: String = name.chars().take(40).collect();
        return Some(format!(
            "a name of {} bytes (limit MAILROOM_SYNC__MAX_FOLDER_NAME_BYTES) beginning `{}`",
            name.len(),
            mailroom_mail::one_line(&start)
        ));
    }
    let control = name.chars().find(|c| c.is_control())?;
    let start: String = name.chars().take(40).collect();
    Some(format!(
        "a name with the control character U+{:04X}: `{}`",
        u32::from(control),
        mailroom_mail::one_line(&start)
    ))
}

/// Reads the session's unsolicited responses as they come and drops them (until the
/// session is gone), so none waits in async-imap's channel holding a whole response.
pub(crate) fn drain_unsolicited(session: &ImapSession) {
    let unsolicited = session.unsolicited_responses.clone();
    tokio::spawn(async move { while unsolicited.recv().await.is_ok() {} });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_too_long_or_with_controls_cannot_be_synced() {
        assert_eq!(unsyncable_name("INBOX", 1000), None);
        assert_eq!(unsyncable_name("Проекты/2024", 1000), None);
        let long = "x".repeat(3000);
        let why = unsyncable_name(&long, 1000).unwrap();
        assert!(why.contains("3000 bytes") && why.len() < 200, "{why}");
        for bad in ["a\0b", "a\r\nb", "tab\there"] {
            let why = unsyncable_name(bad, 1000).unwrap();
            assert!(why.contains("control character"), "{why}");
            assert!(!why.chars().any(char::is_control), "{why:?}");
        }
    }
}
