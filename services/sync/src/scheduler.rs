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

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::activity::Activity;
use crate::domain::Tier;
use crate::events;
use crate::metrics;
use crate::store::schedule::{self, Due};

pub struct Scheduler {
    pub pool: PgPool,
    pub activity: Option<Activity>,
    pub tick: Duration,
    pub batch: i64,
    pub hold: Duration,
}

impl Scheduler {
    /// Hands out due work until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticks = 0u64;
        loop {
            let issued = match self.tick_once().await {
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!(%err, "scheduler tick failed; trying again");
                    0
                }
            };
            if ticks.is_multiple_of(10) {
                self.refresh_gauges().await;
            }
            ticks += 1;
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
        let mut tx = self.pool.begin().await?;
        let due = issue_due(&mut tx, self.batch, self.hold).await?;
        tx.commit().await?;
        Ok(due.len())
    }

    async fn refresh_gauges(&self) {
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
