//! The worker: takes `SyncRequested` from `mailroom.sync.requests` (the platform's concurrent
//! consumer, many mailboxes at once, never one mailbox twice), holds the mailbox's lease in
//! Redis while it syncs, and records the outcome: the schedule's next due time from the
//! owner's tier (or a back-off after a failure), and MailboxSynced / MailboxSyncFailed /
//! NewMessages through the outbox, in one transaction.
//!
//! A worker that dies stops renewing its leases: after their time to live another worker's
//! attempt (the record redelivered after the rebalance, or the scheduler handing the mailbox
//! out again) takes over, and the checkpoints make it carry on where the dead one committed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::Utc;
use mailroom_platform::consumer::concurrent::WorkHandler;
use mailroom_platform::kafka::Topic;
use mailroom_platform::outbox::{self, EventActor};
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::redis::{RateDecision, RateLimiter};
use mailroom_types::MailboxId;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::activity::Activity;
use crate::domain::{backoff, Tier};
use crate::engine::{Engine, SyncReport};
use crate::error::{FailureKind, RunError, SyncFailure};
use crate::lease::Leases;
use crate::metrics;
use crate::peers::{MailboxLogin, Peers};
use crate::store;

/// The service's name as an event actor.
pub const SERVICE: &str = "sync";

pub struct Worker {
    pub pool: PgPool,
    pub engine: Engine,
    pub leases: Leases,
    pub activity: Activity,
    pub peers: Peers,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Requests older than this are passed over (the scheduler issues due work again).
    pub stale_after: Duration,
    /// New connections per mail server, across the workers.
    pub connects: Option<RateLimiter>,
}

/// Whether a new connection to `host` may be opened now; if not, when to look again. Without
/// Redis the limit is not applied (the sync goes on; the outage is logged where it matters).
pub async fn connect_allowed(limiter: Option<&RateLimiter>, host: &str) -> Option<Duration> {
    let limiter = limiter?;
    match limiter.hit(&host.to_ascii_lowercase()).await {
        Ok(RateDecision::Allowed) | Err(_) => None,
        Ok(RateDecision::Limited { retry_after }) => {
            // Spread the retries over the next second or so instead of all at its start.
            Some(retry_after + Duration::from_millis(rand::random::<u64>() % 1000))
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Synced,
    Failed(FailureKind),
    /// Another worker holds the mailbox's lease.
    Busy,
    /// Parked, or no longer in the registry.
    Skipped,
    /// Stopped (shutdown or a lost lease): the request is delivered again.
    Stopped,
}

#[async_trait]
impl WorkHandler for Worker {
    async fn handle(&self, event: ev::Envelope, stop: CancellationToken) -> anyhow::Result<()> {
        let Some(ev::envelope::Payload::SyncRequested(request)) = &event.payload else {
            return Ok(());
        };
        let mailbox = Uuid::parse_str(&request.mailbox_id).context("mailbox_id is not a UUID")?;
        if let Some(at) = &event.occurred_at {
            let sent_ms = at
                .seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(at.nanos) / 1_000_000);
            let lag_ms = Utc::now().timestamp_millis().saturating_sub(sent_ms).max(0);
            ::metrics::histogram!(metrics::REQUEST_LAG).record(lag_ms as f64 / 1000.0);
            // A scheduled request older than the scheduler's hold has been issued again if
            // the mailbox is still due: after an outage that backlog is passed over without a
            // query. Requests from people ("sync now", a new password) are always done.
            if request.reason == crate::scheduler::REASON
                && lag_ms as u128 > self.stale_after.as_millis()
            {
                metrics::sync_outcome("stale");
                return Ok(());
            }
        }
        let handled = self.sync_one(mailbox, &stop).await?;
        tracing::debug!(%mailbox, reason = %request.reason, ?handled, "sync request handled");
        match handled {
            // Abandoned at shutdown: an error keeps the record uncommitted.
            Handled::Stopped if stop.is_cancelled() => anyhow::bail!("stopped"),
            _ => Ok(()),
        }
    }
}

impl Worker {
    /// Syncs one mailbox under its lease and records the outcome.
    #[tracing::instrument(skip_all, fields(mailbox = %mailbox))]
    pub async fn sync_one(
        &self,
        mailbox: Uuid,
        stop: &CancellationToken,
    ) -> anyhow::Result<Handled> {
        let name = mailbox.to_string();
        // Unknown here, or parked: nothing to do, and no lease taken.
        match store::schedule_row(&self.pool, mailbox).await? {
            Some(row) if !row.parked => {}
            _ => {
                metrics::sync_outcome("skipped");
                return Ok(Handled::Skipped);
            }
        }
        // The login is asked for before the lease: a mailbox the registry no longer has
        // leaves the schedule without ever holding up the mailbox's lease.
        let login_read_at = Utc::now();
        let Some(login) = self.peers.login(MailboxId::from_uuid(mailbox)).await? else {
            let mut tx = self.pool.begin().await?;
            store::forget_mailbox(&mut tx, mailbox).await?;
            tx.commit().await?;
            metrics::sync_outcome("skipped");
            return Ok(Handled::Skipped);
        };
        if let Some(wait) = connect_allowed(self.connects.as_ref(), &login.login.host).await {
            store::retry_soon(&self.pool, mailbox, wait).await?;
            metrics::sync_outcome("throttled");
            return Ok(Handled::Busy);
        }
        if !self.leases.try_acquire(&name).await? {
            // Another worker is on it, or died holding it: look again once a lease could
            // have expired, so a dead worker's mailbox is taken over within about a TTL.
            store::retry_soon(&self.pool, mailbox, self.leases.ttl()).await?;
            let holder = self.leases.holder_of(&name).await.ok().flatten();
            tracing::debug!(?holder, "lease busy");
            metrics::sync_outcome("busy");
            return Ok(Handled::Busy);
        }
        ::metrics::gauge!(metrics::LEASES_HELD).increment(1.0);
        let done = CancellationToken::new();
        let lost = stop.child_token();
        let keeper = {
            let leases = self.leases.clone();
            let name = name.clone();
            let done = done.clone();
            let lost = lost.clone();
            tokio::spawn(async move { leases.keep(&name, done, lost).await })
        };
        let result = self.sync_leased(mailbox, login, login_read_at, &lost).await;
        done.cancel();
        let _ = keeper.await;
        if let Err(err) = self.leases.release(&name).await {
            tracing::warn!(%err, "lease not returned; it expires by itself");
        }
        ::metrics::gauge!(metrics::LEASES_HELD).decrement(1.0);
        result
    }

    async fn sync_leased(
        &self,
        mailbox: Uuid,
        login: MailboxLogin,
        login_read_at: chrono::DateTime<Utc>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Handled> {
        // Read again under the lease: the state another worker left is the one that counts.
        let Some(row) = store::schedule_row(&self.pool, mailbox).await? else {
            metrics::sync_outcome("skipped");
            return Ok(Handled::Skipped);
        };
        if row.parked {
            metrics::sync_outcome("skipped");
            return Ok(Handled::Skipped);
        }
        let started = Utc::now();
        let result = self
            .engine
            .sync(mailbox, &login.login, login.in_crm || row.in_crm, stop)
            .await;
        match result {
            Ok(report) => {
                self.record_success(&row, report).await?;
                metrics::sync_outcome("synced");
                Ok(Handled::Synced)
            }
            Err(RunError::Failed(failure)) => {
                let kind = failure.kind;
                self.record_failure(&row, failure, login_read_at).await?;
                metrics::sync_outcome(kind.name());
                Ok(Handled::Failed(kind))
            }
            Err(RunError::Stopped) => {
                tracing::info!(
                    after_ms = (Utc::now() - started).num_milliseconds(),
                    "sync stopped; what was committed stays"
                );
                Ok(Handled::Stopped)
            }
            Err(RunError::Db(err)) => Err(err).context("writing the message index"),
        }
    }

    async fn tier_of(&self, owner: Uuid) -> Tier {
        match self.activity.tier(owner).await {
            Ok(t) => t,
            Err(err) => {
                // Without Redis the owner is taken as recent: neither hammered nor forgotten.
                tracing::warn!(%err, "activity unavailable; planning as recent");
                Tier::Recent
            }
        }
    }

    async fn record_success(
        &self,
        row: &store::ScheduleRow,
        report: SyncReport,
    ) -> anyhow::Result<()> {
        let tier = self.tier_of(row.owner_user_id).await;
        let now = Utc::now();
        let interval = self.activity.policy().interval(tier);
        let next = now + chrono::Duration::from_std(interval).unwrap_or_default();
        let duration_ms = i64::try_from(report.duration.as_millis()).unwrap_or(i64::MAX);
        ::metrics::histogram!(metrics::SYNC_DURATION, "tier" => tier.name())
            .record(report.duration.as_secs_f64());
        ::metrics::counter!(metrics::MESSAGES_INDEXED).increment(report.new_messages.max(0) as u64);
        let mut tx = self.pool.begin().await?;
        if !store::record_success(&mut tx, row.mailbox_id, now, duration_ms, next, tier.code())
            .await?
        {
            // Disconnected while it synced: what this run indexed goes too, and nothing is
            // reported for a mailbox the registry no longer has.
            store::forget_mailbox(&mut tx, row.mailbox_id).await?;
            tx.commit().await?;
            return Ok(());
        }
        let actor = EventActor::Service(SERVICE.into());
        let key = row.mailbox_id.to_string();
        outbox::enqueue(
            &mut tx,
            Topic::SyncEvents,
            row.org_id,
            &key,
            &actor,
            ev::envelope::Payload::MailboxSynced(ev::MailboxSynced {
                mailbox_id: key.clone(),
                message_count: report.message_count,
                unread_count: report.unread_count,
                disk_bytes: report.disk_bytes,
                duration_ms,
                new_messages: report.new_messages,
                synced_at: Some(prost_types::Timestamp {
                    seconds: now.timestamp(),
                    nanos: now.timestamp_subsec_nanos() as i32,
                }),
            }),
        )
        .await?;
        for feed in report.new_for_feed {
            outbox::enqueue(
                &mut tx,
                Topic::SyncEvents,
                row.org_id,
                &key,
                &actor,
                ev::envelope::Payload::NewMessages(feed),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_failure(
        &self,
        row: &store::ScheduleRow,
        failure: SyncFailure,
        login_read_at: chrono::DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let park = failure.kind == FailureKind::AuthFailed;
        let failures = u32::try_from(row.failures.max(0)).unwrap_or(0) + 1;
        let delay = backoff(
            failures,
            self.retry_base,
            self.retry_cap,
            rand::random::<f64>(),
        );
        let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        tracing::info!(kind = failure.kind.name(), error = %failure.message, park, retry_in_s = delay.as_secs(), "sync failed");
        let mut tx = self.pool.begin().await?;
        let (was_parked, failures) = match store::record_failure(
            &mut tx,
            row.mailbox_id,
            failure.kind.name(),
            &failure.message,
            park,
            next,
            login_read_at,
        )
        .await?
        {
            store::FailureRecorded::Recorded {
                was_parked,
                failures,
            } => (was_parked, failures),
            store::FailureRecorded::Stale => {
                // The settings it used were replaced meanwhile; the change made it due again.
                return Ok(());
            }
            store::FailureRecorded::Gone => {
                store::forget_mailbox(&mut tx, row.mailbox_id).await?;
                tx.commit().await?;
                return Ok(());
            }
        };
        // A parked mailbox is reported once, not at every attempt.
        if !(park && was_parked) {
            let key = row.mailbox_id.to_string();
            outbox::enqueue(
                &mut tx,
                Topic::SyncEvents,
                row.org_id,
                &key,
                &EventActor::Service(SERVICE.into()),
                ev::envelope::Payload::MailboxSyncFailed(ev::MailboxSyncFailed {
                    mailbox_id: key.clone(),
                    kind: failure.kind.to_proto() as i32,
                    message: failure.message,
                    parked: park,
                    failures,
                }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Shared handle for the consumer.
pub fn handler(worker: Worker) -> Arc<dyn WorkHandler> {
    Arc::new(worker)
}
