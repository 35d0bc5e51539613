//! The scheduler: every tick it takes the mailboxes that are due (a range scan at the front
//! of `schedule_due`, so a tick costs what is due, not how many mailboxes exist), pushes
//! their due time out by the request timeout, and writes one `SyncRequested` each into the
//! outbox in the same transaction; the relay publishes them to `mailroom.sync.requests`,
//! keyed by mailbox.
//!
//! Replicas need no leader: `FOR UPDATE SKIP LOCKED` gives each due row to one replica, and
//! the pushed-out due time keeps it from being handed out again until its worker has had
//! time to report (a lost request is simply issued again then).

use std::time::Duration;

use mailroom_platform::kafka::Topic;
use mailroom_platform::outbox::{self, EventActor};
use mailroom_platform::proto::events::v1 as ev;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::activity::Activity;
use crate::domain::Tier;
use crate::metrics;
use crate::store;
use crate::worker::SERVICE;

/// The `reason` of the requests the scheduler issues.
pub const REASON: &str = "scheduled";

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
        let due = store::take_due(&mut tx, self.batch, self.hold).await?;
        let actor = EventActor::Service(SERVICE.into());
        for (mailbox, org, tier) in &due {
            let key = mailbox.to_string();
            outbox::enqueue(
                &mut tx,
                Topic::SyncRequests,
                *org,
                &key,
                &actor,
                ev::envelope::Payload::SyncRequested(ev::SyncRequested {
                    mailbox_id: key.clone(),
                    priority: ev::SyncPriority::Normal as i32,
                    reason: REASON.into(),
                }),
            )
            .await?;
            ::metrics::counter!(metrics::REQUESTS_ISSUED, "tier" => Tier::from_code(*tier).name())
                .increment(1);
        }
        tx.commit().await?;
        Ok(due.len())
    }

    async fn refresh_gauges(&self) {
        if let Ok(due) = store::due_by_tier(&self.pool).await {
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
