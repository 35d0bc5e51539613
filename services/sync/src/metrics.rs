//! The sync's Prometheus metrics: the signals workers scale on (overdue mailboxes by tier,
//! IDLE connections against each worker's IDLE capacity, request lag), the partition guard's
//! view (live workers, partitions of the requests topic) and what an operator watches (sync
//! duration, outcomes, leases held).

/// Mailboxes overdue, by `tier`: not parked, not failing, and last synced (or, never synced,
/// connected) longer ago than their tier's interval plus a grace — the workers' backlog, which
/// handing work out does not lower. Every scheduler replica counts it from the database and
/// reports the same global number (take the `max` across replicas, then sum the tiers).
pub const OVERDUE_MAILBOXES: &str = "mailroom_sync_overdue_mailboxes";
/// Mailboxes due and not yet handed out, by `tier`: the scheduler's own lag (handing a mailbox
/// out pushes its due time out, so this says nothing of the workers; scale on
/// [`OVERDUE_MAILBOXES`]).
pub const DUE_MAILBOXES: &str = "mailroom_sync_due_mailboxes";
/// Sync requests the scheduler handed out, by `tier` (its rate is the due rate).
pub const REQUESTS_ISSUED: &str = "mailroom_sync_requests_issued_total";
/// Users by activity `tier` (active, recent, idle), from heartbeats.
pub const ACTIVE_USERS: &str = "mailroom_sync_active_users";
/// Heartbeats received, by `client`.
pub const HEARTBEATS: &str = "mailroom_sync_heartbeats_total";
/// Seconds a sync request waited from being issued (by the scheduler, or a person's "sync
/// now") to a worker starting it.
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
        &[
            DUE_MAILBOXES,
            ACTIVE_USERS,
            LEASES_HELD,
            IDLE_CONNECTIONS,
            IDLE_CAPACITY,
            LIVE_WORKERS,
            REQUEST_PARTITIONS,
        ],
        &[REQUEST_LAG, SYNC_DURATION],
    );
}

pub fn sync_outcome(outcome: &'static str) {
    metrics::counter!(SYNC_OUTCOMES, "outcome" => outcome).increment(1);
}
/// Mailboxes this worker holds in IMAP IDLE.
pub const IDLE_CONNECTIONS: &str = "mailroom_sync_idle_connections";
/// The most IDLE connections this worker holds (`idle_max_connections`; 0 with IDLE off).
/// Workers share IDLE watches through Redis leases, so IDLE capacity grows with every worker,
/// whatever the partitions of the requests topic.
pub const IDLE_CAPACITY: &str = "mailroom_sync_idle_capacity";
/// Live sync workers, as the partition guard of this worker counts them (the workers that
/// registered in Redis within the last minute and a half).
pub const LIVE_WORKERS: &str = "mailroom_sync_live_workers";
/// Partitions of `<prefix>.sync.requests`, as the brokers report them to this worker: the
/// most workers that get work from Kafka (IDLE watches are not bound by it).
pub const REQUEST_PARTITIONS: &str = "mailroom_sync_request_partitions";
/// IDLE notifications that pulled a sync in.
pub const IDLE_WAKEUPS: &str = "mailroom_sync_idle_wakeups_total";
