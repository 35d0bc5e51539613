//! The scheduler: every tick it takes the mailboxes that are due (a range scan at the front
//! of `schedule_due`, so a tick costs what is due, not how many mailboxes exist), pushes
//! their due time out by the request timeout (the hold), and writes one normal-priority
//! `SyncRequested` each into the outbox in the same transaction; the relay publishes them to
//! `mailroom.sync.requests`, keyed by mailbox. A worker passes over a normal request older
//! than the hold: by then the mailbox has been handed out again if it is still due.
//!
//! Replicas need no leader: `FOR UPDATE SKIP LOCKED` gives each due row to one replica, and
//! the pushed-out due time keeps it from being handed out again until its worker has had
//! time to report (a lost request is simply issued again then).
//!
//! Every [`GAUGES_EVERY`] each replica also counts the workers' backlog for the autoscalers:
//! the mailboxes overdue by tier ([`metrics::OVERDUE_MAILBOXES`], from the database, so every
//! replica reports the same global number: take the `max` across replicas, never the sum),
//! beside the mailboxes due and not yet handed out (the scheduler's own lag).

use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::activity::Activity;
use crate::domain::{Tier, TierPolicy};
use crate::events;
use crate::metrics;
use crate::store::schedule::{self, Due};

pub struct Scheduler {
    pub pool: PgPool,
    pub activity: Option<Activity>,
    pub tick: Duration,
    pub batch: i64,
    pub hold: Duration,
    /// What counts as overdue.
    pub overdue: Overdue,
}

/// How often the scheduler refreshes its gauges (overdue and due mailboxes, active users).
pub const GAUGES_EVERY: Duration = Duration::from_secs(15);

/// A mailbox is overdue when its last successful sync (or its connection) is older than its
/// tier's interval plus `grace` (the time a sync normally takes to be handed out and run).
#[derive(Debug, Clone)]
pub struct Overdue {
    pub tiers: TierPolicy,
    pub grace: Duration,
}

impl Default for Overdue {
    fn default() -> Self {
        Self {
            tiers: TierPolicy::default(),
            grace: Duration::from_secs(30),
        }
    }
}

impl Overdue {
    /// How old each tier's last sync may be before its mailbox is overdue.
    pub fn allowed(&self) -> Vec<(Tier, Duration)> {
        Tier::ALL
            .iter()
            .map(|t| (*t, self.tiers.interval(*t) + self.grace))
            .collect()
    }
}

/// Every tier's overdue mailboxes at zero, before the first count, so the autoscalers and
/// alerts see the series from a scheduler's start.
pub fn announce_overdue() {
    for tier in Tier::ALL {
        ::metrics::gauge!(metrics::OVERDUE_MAILBOXES, "tier" => tier.name()).set(0.0);
    }
}

impl Scheduler {
    /// Hands out due work until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        announce_overdue();
        let mut gauges_due = Instant::now();
        loop {
            let issued = match self.tick_once().await {
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!(%err, "scheduler tick failed; trying again");
                    0
                }
            };
            if Instant::now() >= gauges_due {
                self.refresh_gauges().await;
                gauges_due = Instant::now() + GAUGES_EVERY;
            }
            // A full batch means more is due: go again at once.
            let pause = if issued as i64 >= self.batch {
                Duration::ZERO
            } else {
                self.tick
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One tick: returns how many requests it issued.
    pub async fn tick_once(&self) -> sqlx::Result<usize> {
        // At rest nothing is due: one statement says so, rather than a transaction of three.
        if !schedule::any_due(&self.pool).await? {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let due = issue_due(&mut tx, self.batch, self.hold).await?;
        tx.commit().await?;
        Ok(due.len())
    }

    /// Counts the overdue mailboxes by tier and sets [`metrics::OVERDUE_MAILBOXES`]; returns
    /// the counts.
    pub async fn refresh_overdue(&self) -> sqlx::Result<Vec<(Tier, i64)>> {
        let counted = schedule::overdue_by_tier(&self.pool, &self.overdue.allowed()).await?;
        let overdue: Vec<(Tier, i64)> = Tier::ALL
            .iter()
            .map(|tier| {
                let n = counted
                    .iter()
                    .find(|(t, _)| *t == tier.code())
                    .map_or(0, |(_, n)| *n);
                (*tier, n)
            })
            .collect();
        for (tier, n) in &overdue {
            ::metrics::gauge!(metrics::OVERDUE_MAILBOXES, "tier" => tier.name()).set(*n as f64);
        }
        Ok(overdue)
    }

    async fn refresh_gauges(&self) {
        if let Err(err) = self.refresh_overdue().await {
            // The last count stays: a gauge dropping to zero would scale the workers in.
            tracing::warn!(%err, "overdue mailboxes not counted; trying again");
        }
        if let Ok(due) = schedule::due_by_tier(&self.pool).await {
            for tier in Tier::ALL {
                let n = due
                    .iter()
                    .find(|(t, _)| *t == tier.code())
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                ::metrics::gauge!(metrics::DUE_MAILBOXES, "tier" => tier.name()).set(n as f64);
            }
        }
        if let Some(activity) = &self.activity {
            if let Ok(users) = activity.users_by_tier().await {
                for (tier, n) in users {
                    ::metrics::gauge!(metrics::ACTIVE_USERS, "tier" => tier.name()).set(n as f64);
                }
            }
        }
    }
}

/// Takes up to `batch` due mailboxes, holds them for `hold`, and writes a normal-priority
/// SyncRequested for each into the outbox, all in the caller's transaction. Returns them.
pub async fn issue_due(
    conn: &mut PgConnection,
    batch: i64,
    hold: Duration,
) -> sqlx::Result<Vec<Due>> {
    let due = schedule::take_due(conn, batch, hold).await?;
    for mailbox in &due {
        events::sync_requested(conn, mailbox.org_id, mailbox.mailbox_id).await?;
        ::metrics::counter!(metrics::REQUESTS_ISSUED, "tier" => Tier::from_code(mailbox.tier).name())
            .increment(1);
    }
    Ok(due)
}
