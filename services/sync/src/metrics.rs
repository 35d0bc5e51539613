//! The sync's Prometheus metrics: the signals workers scale on (due mailboxes by tier, active
//! users, request lag) and what an operator watches (sync duration, outcomes, leases held).

/// Mailboxes due now, by `tier` (gauge, refreshed by the scheduler).
pub const DUE_MAILBOXES: &str = "mailroom_sync_due_mailboxes";
/// Sync requests the scheduler handed out, by `tier` (its rate is the due rate).
pub const REQUESTS_ISSUED: &str = "mailroom_sync_requests_issued_total";
/// Users by activity `tier` (active, recent, idle), from heartbeats.
pub const ACTIVE_USERS: &str = "mailroom_sync_active_users";
/// Heartbeats received, by `client`.
pub const HEARTBEATS: &str = "mailroom_sync_heartbeats_total";
/// Seconds from a request being issued to a worker starting it.
pub const REQUEST_LAG: &str = "mailroom_sync_request_lag_seconds";
/// Seconds one mailbox's sync took, by `tier`.
pub const SYNC_DURATION: &str = "mailroom_sync_duration_seconds";
/// Syncs by `outcome`: synced, busy, skipped, or the failure kind.
pub const SYNC_OUTCOMES: &str = "mailroom_sync_outcomes_total";
/// Mailbox leases this process holds.
pub const LEASES_HELD: &str = "mailroom_sync_leases_held";
/// Messages added to the index.
pub const MESSAGES_INDEXED: &str = "mailroom_sync_messages_indexed_total";
/// Syncs stopped because a newer holder of the mailbox's lease took over (their writes were
/// refused): a worker that paused or renewed too late, or a Redis failover.
pub const FENCED: &str = "mailroom_sync_fenced_total";

/// Every sync metric at zero, so dashboards, alerts and the autoscaler see the series on a
/// process that has done nothing yet.
pub fn announce() {
    mailroom_platform::metrics::announce(
        &[
            REQUESTS_ISSUED,
            HEARTBEATS,
            SYNC_OUTCOMES,
            MESSAGES_INDEXED,
            FENCED,
            IDLE_WAKEUPS,
        ],
        &[DUE_MAILBOXES, ACTIVE_USERS, LEASES_HELD, IDLE_CONNECTIONS],
        &[REQUEST_LAG, SYNC_DURATION],
    );
}

pub fn sync_outcome(outcome: &'static str) {
    metrics::counter!(SYNC_OUTCOMES, "outcome" => outcome).increment(1);
}
/// Mailboxes this worker holds in IMAP IDLE.
pub const IDLE_CONNECTIONS: &str = "mailroom_sync_idle_connections";
/// IDLE notifications that pulled a sync in.
pub const IDLE_WAKEUPS: &str = "mailroom_sync_idle_wakeups_total";
