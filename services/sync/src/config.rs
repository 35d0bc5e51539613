//! The sync service's own configuration (section `sync`: `MAILROOM_SYNC__*`).

use secrecy::SecretString;
use serde::Deserialize;

use crate::domain::TierPolicy;

/// What this process does: plan the work, do it, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Scheduler,
    Worker,
    Both,
}

impl Role {
    pub fn schedules(self) -> bool {
        matches!(self, Role::Scheduler | Role::Both)
    }
    pub fn works(self) -> bool {
        matches!(self, Role::Worker | Role::Both)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SyncConfig {
    pub role: Role,
    /// Identity's gRPC endpoint: signing keys (JWKS) and this service's own token.
    pub identity_endpoint: String,
    /// Access control: who may see a mailbox's status and read its mail.
    pub access_endpoint: String,
    /// The mailbox registry: a mailbox's server and password, for the sync only.
    pub mailboxes_endpoint: String,
    /// This service's credential at identity (one of identity's `service_clients`; the
    /// registry hands mailbox credentials to the client id `sync` only).
    pub service_client_id: String,
    pub service_client_secret: SecretString,
    /// Secrets the page tokens of ListMessages are signed with (the same on every replica):
    /// the first signs, every one is accepted, so a new one goes first and the old one stays
    /// second until tokens signed with it are no longer in use. Empty: a key derived from
    /// `service_client_secret` (rotating the credential then invalidates every page token).
    #[serde(deserialize_with = "mailroom_platform::config::secret_list")]
    pub page_token_secrets: Vec<SecretString>,
    /// Consumer group of the registry's events (every replica the same).
    pub consumer_group: String,
    /// Consumer group of the workers on `mailroom.sync.requests`.
    pub worker_group: String,
    pub tiers: TierPolicy,
    /// Mailboxes one worker syncs at once.
    pub worker_concurrency: usize,
    /// How long a mailbox lease lives without renewal (a dead worker's mailboxes are free
    /// again after this).
    pub lease_ttl_ms: u64,
    /// How often the scheduler looks for due mailboxes.
    pub tick_ms: u64,
    /// Most mailboxes handed out per tick.
    pub tick_batch: i64,
    /// How long a handed-out mailbox waits for its worker before it is handed out again.
    pub request_timeout_secs: u64,
    /// A mailbox is overdue (`mailroom_sync_overdue_mailboxes`, what the workers scale on) when
    /// its last successful sync is older than its tier's interval plus this: the time a sync
    /// normally takes to be handed out and run.
    pub overdue_grace_secs: u64,
    /// Back-off after failed syncs: first delay and cap.
    pub retry_base_secs: u64,
    pub retry_cap_secs: u64,
    /// Messages per database batch during a fetch.
    pub batch: usize,
    /// For mail servers without CONDSTORE: every flag of a folder whose STATUS did not
    /// change is read again on every this-many-th sync of it (a change of a flag other than
    /// `\Seen` shows in no STATUS figure; such a change is seen at most this many syncs late).
    /// `1`: every sync; `0`: only when STATUS changes. Default 6. Servers with CONDSTORE
    /// (Dovecot, most others) show every change in HIGHESTMODSEQ, and this does not apply.
    pub flag_pass_every: u32,
    pub connect_timeout_ms: u64,
    pub io_timeout_ms: u64,
    /// Largest message body GetMessageBody returns (a server announcing a larger literal is
    /// refused before it is read).
    pub max_body_bytes: u64,
    /// Most literal data one IMAP response may carry during a sync (envelopes: subjects and
    /// names; an announced literal beyond it is refused before it is read). Kept well below
    /// `max_body_bytes`: async-imap's report of an unparsable response copies it several
    /// times over.
    pub max_literal_bytes: u64,
    /// Longest text of one IMAP response outside its literals.
    pub max_line_bytes: u64,
    /// Most untagged responses to one IMAP command (a FETCH of a whole folder is one command:
    /// keep it above `max_messages_per_mailbox`).
    pub max_responses_per_command: u64,
    /// Longest one IMAP command may take from being sent to its answer (a server that keeps
    /// a sync waiting with a line now and then is cut off here; what was indexed stays).
    pub command_deadline_secs: u64,
    /// Longest one mailbox's whole sync may take (connect, every folder, the counters): past
    /// it the worker's slot and the mailbox's lease are free again and what was indexed
    /// stays. A run that committed nothing by then fails as "the mail server stopped
    /// answering" and backs off; one that did (a large import) is not a failure and carries
    /// on at once. Not 0; above the connect and I/O timeouts; below the work consumer's `max.poll.interval.ms`, which is set from it (this plus two
    /// minutes, at most an hour).
    pub sync_deadline_secs: u64,
    /// Most folders a mailbox may list; beyond it the mailbox is not synced and says why.
    pub max_folders_per_mailbox: usize,
    /// Longest folder name (bytes) synced; longer ones, and names with control characters,
    /// are skipped and reported.
    pub max_folder_name_bytes: usize,
    /// Most messages indexed for one mailbox; the sync stops there and says why.
    pub max_messages_per_mailbox: u64,
    /// Most messages indexed for one organisation, every mailbox together (`0`: no limit).
    pub max_messages_per_org: u64,
    /// GetMessageBody calls one person may make per minute (each opens an IMAP session).
    pub body_reads_per_user_per_minute: u32,
    /// GetMessageBody calls one person may have under way at once.
    pub body_reads_per_user_at_once: usize,
    /// Where mail servers may be (as the registry's `mail_servers`; the two must agree).
    pub mail_servers: mailroom_mail::dial::PolicySettings,
    /// Hold active people's INBOXes in IMAP IDLE (workers only).
    pub idle_enabled: bool,
    /// Most IDLE connections one worker holds.
    pub idle_max_connections: usize,
    /// How often a worker rebalances its IDLE share.
    pub idle_scan_ms: u64,
    /// IDLE is renewed after this (servers end it at 29 minutes).
    pub idle_reidle_secs: u64,
    /// New IDLE connections per second per worker, so a restart causes no storm.
    pub idle_connects_per_sec: u32,
    /// New IMAP connections per second to one mail server, across every worker (Redis): a
    /// restart of thousands of syncs and watches, or a flapping server, causes no storm.
    pub connects_per_server_per_sec: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            role: Role::Both,
            identity_endpoint: mailroom_platform::config::local::identity(),
            access_endpoint: mailroom_platform::config::local::access(),
            mailboxes_endpoint: mailroom_platform::config::local::mailboxes(),
            service_client_id: "sync".into(),
            service_client_secret: SecretString::default(),
            page_token_secrets: Vec::new(),
            consumer_group: "mailroom-sync".into(),
            worker_group: "mailroom-sync-workers".into(),
            tiers: TierPolicy::default(),
            worker_concurrency: 32,
            lease_ttl_ms: 30_000,
            tick_ms: 1_000,
            tick_batch: 1_000,
            request_timeout_secs: 300,
            overdue_grace_secs: 30,
            retry_base_secs: 30,
            retry_cap_secs: 3_600,
            batch: 1_000,
            flag_pass_every: crate::engine::DEFAULT_FLAG_PASS_EVERY,
            connect_timeout_ms: 20_000,
            io_timeout_ms: 60_000,
            max_body_bytes: 25 * 1024 * 1024,
            max_literal_bytes: 1024 * 1024,
            max_line_bytes: 1024 * 1024,
            max_responses_per_command: 2_000_000,
            command_deadline_secs: 600,
            sync_deadline_secs: 1_800,
            max_folders_per_mailbox: 1_000,
            max_folder_name_bytes: 1_000,
            max_messages_per_mailbox: 1_000_000,
            max_messages_per_org: 0,
            body_reads_per_user_per_minute: 30,
            body_reads_per_user_at_once: 2,
            mail_servers: mailroom_mail::dial::PolicySettings::default(),
            idle_enabled: true,
            idle_max_connections: 2_000,
            idle_scan_ms: 5_000,
            idle_reidle_secs: 25 * 60,
            idle_connects_per_sec: 50,
            connects_per_server_per_sec: 200,
        }
    }
}
