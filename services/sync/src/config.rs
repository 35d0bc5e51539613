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
    /// Back-off after failed syncs: first delay and cap.
    pub retry_base_secs: u64,
    pub retry_cap_secs: u64,
    /// Messages per database batch during a fetch.
    pub batch: usize,
    pub connect_timeout_ms: u64,
    pub io_timeout_ms: u64,
    /// Largest message body GetMessageBody returns.
    pub max_body_bytes: u64,
    /// Whether mail servers may be on loopback (tests and local development only).
    pub allow_local_servers: bool,
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
            consumer_group: "mailroom-sync".into(),
            worker_group: "mailroom-sync-workers".into(),
            tiers: TierPolicy::default(),
            worker_concurrency: 32,
            lease_ttl_ms: 30_000,
            tick_ms: 1_000,
            tick_batch: 1_000,
            request_timeout_secs: 300,
            retry_base_secs: 30,
            retry_cap_secs: 3_600,
            batch: 1_000,
            connect_timeout_ms: 20_000,
            io_timeout_ms: 60_000,
            max_body_bytes: 25 * 1024 * 1024,
            allow_local_servers: false,
            idle_enabled: true,
            idle_max_connections: 2_000,
            idle_scan_ms: 5_000,
            idle_reidle_secs: 25 * 60,
            idle_connects_per_sec: 50,
            connects_per_server_per_sec: 200,
        }
    }
}
