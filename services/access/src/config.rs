//! Access control's own configuration (section `access`: `MAILROOM_ACCESS__*`).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct AccessConfig {
    /// Identity's gRPC endpoint, for its signing keys (JWKS) when access runs in a process
    /// of its own.
    #[serde(default = "mailroom_platform::config::local::identity")]
    pub identity_endpoint: String,
    /// Kafka consumer group for identity's events. Every replica uses the same group.
    #[serde(default = "default_consumer_group")]
    pub consumer_group: String,
    /// How long a call that names a revision waits for this replica to reach it.
    #[serde(default = "default_consistency_wait_ms")]
    pub consistency_wait_ms: u64,
    /// How long changelog entries are kept for replicas to catch up from (older ones are
    /// pruned; a replica further behind reloads from the tables).
    #[serde(default = "default_changelog_retention_secs")]
    pub changelog_retention_secs: u64,
    /// How often a replica reads the changelog when no notification woke it: while it
    /// listens this is a safety net, taken no more often than every 2 s
    /// (`LISTENING_POLL` in the replica).
    #[serde(default = "default_changelog_poll_ms")]
    pub changelog_poll_ms: u64,
    /// Whether a replica LISTENs for writers' notifications (off: it learns of writes by
    /// polling, or when a call names a revision it has not reached).
    #[serde(default = "default_true")]
    pub changelog_notifications: bool,
    /// How many ids of lookup answers a replica keeps for their next pages, in all (16 bytes
    /// each; 0: every page computes its answer again).
    #[serde(default = "default_lookup_cache_ids")]
    pub lookup_cache_ids: usize,
    /// How long a lookup answer is kept for its next pages.
    #[serde(default = "default_lookup_cache_secs")]
    pub lookup_cache_secs: u64,
    /// Lookup answers of at most this many ids are computed again for each page rather than
    /// kept (default: a default page, [`crate::pages::MIN_IDS`]).
    #[serde(default = "default_lookup_cache_min_ids")]
    pub lookup_cache_min_ids: usize,
}

fn default_consumer_group() -> String {
    "mailroom-access".into()
}
fn default_consistency_wait_ms() -> u64 {
    2_000
}
fn default_changelog_retention_secs() -> u64 {
    24 * 3600
}
fn default_changelog_poll_ms() -> u64 {
    1_000
}
pub(crate) fn default_lookup_cache_ids() -> usize {
    1_000_000
}
pub(crate) fn default_lookup_cache_secs() -> u64 {
    30
}
fn default_lookup_cache_min_ids() -> usize {
    crate::pages::MIN_IDS
}
fn default_true() -> bool {
    true
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            identity_endpoint: mailroom_platform::config::local::identity(),
            consumer_group: default_consumer_group(),
            consistency_wait_ms: default_consistency_wait_ms(),
            changelog_retention_secs: default_changelog_retention_secs(),
            changelog_poll_ms: default_changelog_poll_ms(),
            changelog_notifications: true,
            lookup_cache_ids: default_lookup_cache_ids(),
            lookup_cache_secs: default_lookup_cache_secs(),
            lookup_cache_min_ids: default_lookup_cache_min_ids(),
        }
    }
}
