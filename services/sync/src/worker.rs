//! The worker: takes `SyncRequested` from `mailroom.sync.requests` (the platform's concurrent
//! consumer, many mailboxes at once, never one mailbox twice), holds the mailbox's lease in
//! Redis while it syncs, and records the outcome: the schedule's next due time from the
//! owner's tier (or a back-off after a failure), and MailboxSynced / MailboxSyncFailed /
//! NewMessages through the outbox ([`crate::events`]), in one transaction.
//!
//! A request's priority decides whether a late one is still done ([`Priority::passed_over`]):
//! the scheduler's normal requests older than its hold are passed over (the mailbox is handed
//! out again if still due); people's high ones are always done.
//!
//! Duplicate requests are coalesced: a request made before the mailbox's last sync attempt
//! began (`last_started_at`) is answered by that attempt, once it finished and recorded its
//! outcome (`last_finished_at`), and costs no login, so "sync now" pressed 200 times while a
//! sync runs makes at most one more.
//!
//! A worker that dies stops renewing its leases: after their time to live another worker's
//! attempt (the record redelivered after the rebalance, or the scheduler handing the mailbox
//! out again when the lease runs out) takes over — the dead attempt never finished, so it
//! answers no request — and the checkpoints make it carry on where the dead one committed.
//!
//! Fencing: each acquisition of a mailbox's lease carries a generation, claimed in the store
//! before the worker reads the mailbox's state ([`crate::store::fences`]); every write of the
//! sync and the recording of its outcome are refused once a newer holder has claimed it. A
//! worker that lost its lease without noticing (paused past it, renewed too late, a Redis
//! failover) therefore writes nothing: it logs that a newer holder took over, counts it
//! ([`metrics::FENCED`]) and stops, leaving the work to the newer holder.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mailroom_platform::consumer::concurrent::WorkHandler;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::redis::RateLimiter;
use mailroom_platform::wire::from_timestamp;
use mailroom_types::{MailboxId, UserId};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::activity::Activity;
use crate::connects::connect_allowed;
use crate::domain::{backoff, Priority, Tier};
use crate::engine::{Engine, SyncReport};
use crate::error::{FailureKind, RunError, SyncFailure};
use crate::events;
use crate::lease::Leases;
use crate::metrics;
use crate::peers::{MailboxLogin, Peers};
use crate::store::fences::{self, Claim, Fence, Stale, WriteError};
use crate::store::schedule::{self, Failure, FailureRecorded, ScheduleRow};

pub struct Worker {
    pub pool: PgPool,
    pub engine: Engine,
    pub leases: Leases,
    pub activity: Activity,
    pub peers: Peers,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Normal-priority requests older than this (the scheduler's hold) are passed over.
    pub stale_after: Duration,
    /// New connections per mail server, across the workers.
    pub connects: Option<RateLimiter>,
}

/// When a mailbox whose sync its deadline cut short (with progress) is due again.
const CARRY_ON_AFTER: Duration = Duration::from_secs(1);

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Synced,
    Failed(FailureKind),
    /// Another worker holds the mailbox's lease.
    Busy,
    /// Parked, or no longer in the registry.
    Skipped,
    /// A sync began after the request was made: nothing more to do.
    Coalesced,
    /// Stopped (shutdown or a lost lease): the request is delivered again.
    Stopped,
    /// A newer holder of the mailbox's lease took over: this attempt's writes were refused,
    /// and the newer holder does the work.
    Fenced,
}

#[async_trait]
impl WorkHandler for Worker {
    async fn handle(&self, event: ev::Envelope, stop: CancellationToken) -> anyhow::Result<()> {
        let Some(ev::envelope::Payload::SyncRequested(request)) = &event.payload else {
            return Ok(());
        };
        let mailbox = MailboxId::parse("mailbox_id", &request.mailbox_id)
            .context("a sync request without a usable mailbox id")?;
        let priority = Priority::from_proto(request.priority);
        let sent = event.occurred_at.as_ref().and_then(from_timestamp);
        if let Some(sent) = sent {
            let lag = (Utc::now() - sent).to_std().unwrap_or(Duration::ZERO);
            ::metrics::histogram!(metrics::REQUEST_LAG).record(lag.as_secs_f64());
            if priority.passed_over(lag, self.stale_after) {
                metrics::sync_outcome("stale");
                return Ok(());
            }
        }
        let handled = self.sync_requested(mailbox, sent, &stop).await?;
        tracing::debug!(%mailbox, ?priority, reason = %request.reason, ?handled, "sync request handled");
        match handled {
            // Abandoned at shutdown: an error keeps the record uncommitted.
            Handled::Stopped if stop.is_cancelled() => anyhow::bail!("stopped"),
            _ => Ok(()),
        }
    }
}

impl Worker {
    /// Syncs one mailbox under its lease and records the outcome.
    pub async fn sync_one(
        &self,
        mailbox: MailboxId,
        stop: &CancellationToken,
    ) -> anyhow::Result<Handled> {
        self.sync_requested(mailbox, None, stop).await
    }

    /// As [`Worker::sync_one`] for a request made at `sent`: nothing is done when a sync
    /// attempt began after it (the request is answered by that attempt).
    #[tracing::instrument(skip_all, fields(mailbox = %mailbox))]
    pub async fn sync_requested(
        &self,
        mailbox: MailboxId,
        sent: Option<DateTime<Utc>>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Handled> {
        let name = mailbox.to_string();
        // Unknown here, or parked: nothing to do, and no lease taken.
        match schedule::schedule_row(&self.pool, mailbox).await? {
            Some(row) if !row.parked => {
                if answered_by(sent, row.last_started_at, row.last_finished_at) {
                    metrics::sync_outcome("coalesced");
                    return Ok(Handled::Coalesced);
                }
            }
            _ => {
                metrics::sync_outcome("skipped");
                return Ok(Handled::Skipped);
            }
        }
        // The login is asked for before the lease: a mailbox the registry no longer has
        // leaves the schedule without ever holding up the mailbox's lease.
        let login_read_at = Utc::now();
        let Some(login) = self.peers.login(mailbox).await? else {
            let mut tx = self.pool.begin().await?;
            schedule::forget_mailbox(&mut tx, mailbox).await?;
            tx.commit().await?;
            metrics::sync_outcome("skipped");
            return Ok(Handled::Skipped);
        };
        if let Some(wait) = connect_allowed(self.connects.as_ref(), &login.login.host).await {
            schedule::retry_soon(&self.pool, mailbox, wait).await?;
            metrics::sync_outcome("throttled");
            return Ok(Handled::Busy);
        }
        let Some(generation) = self.leases.acquire(&name).await? else {
            // Another worker is on it, or died holding it: look again once its lease could
            // have run out, so a dead worker's mailbox is taken over within a TTL.
            let ttl = self.leases.ttl();
            let wait = match self.leases.expires_in(&name).await {
                Ok(Some(left)) => (left + Duration::from_millis(200)).min(ttl),
                _ => ttl,
            };
            schedule::retry_soon(&self.pool, mailbox, wait).await?;
            let holder = self.leases.holder_of(&name).await.ok().flatten();
            tracing::debug!(?holder, "lease busy");
            metrics::sync_outcome("busy");
            return Ok(Handled::Busy);
        };
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
        let result = self
            .sync_leased(mailbox, generation, login, login_read_at, &lost)
            .await;
        done.cancel();
        let _ = keeper.await;
        if let Err(err) = self.leases.release(&name).await {
            tracing::warn!(%err, "lease not returned; it expires by itself");
        }
        ::metrics::gauge!(metrics::LEASES_HELD).decrement(1.0);
        result
    }

    /// A newer holder of the mailbox's lease took over: said, counted, and nothing more done.
    fn fenced(&self, stale: &Stale) -> Handled {
        tracing::warn!(
            generation = stale.mine,
            newer = stale.current,
            "a newer holder of the mailbox's lease took over; this sync's writes were refused and it stopped"
        );
        ::metrics::counter!(metrics::FENCED).increment(1);
        metrics::sync_outcome("fenced");
        Handled::Fenced
    }

    /// A transaction checked against `fence` ([`fences::begin`]), or the newer holder's claim.
    async fn fenced_tx(
        &self,
        fence: &Fence,
    ) -> anyhow::Result<Result<sqlx::Transaction<'static, sqlx::Postgres>, Stale>> {
        match fences::begin(&self.pool, fence).await {
            Ok(tx) => Ok(Ok(tx)),
            Err(WriteError::Stale(stale)) => Ok(Err(stale)),
            Err(WriteError::Db(err)) => Err(err.into()),
        }
    }

    async fn sync_leased(
        &self,
        mailbox: MailboxId,
        generation: i64,
        login: MailboxLogin,
        login_read_at: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Handled> {
        let fence = match claim(&self.pool, &self.leases, mailbox, generation).await? {
            Ok(fence) => fence,
            Err(stale) => {
                // The lease went (a Redis flush or failover) with nobody holding it now: no
                // newer holder does the work, so the request must be tried again.
                if self.leases.holder_of(&mailbox.to_string()).await?.is_none() {
                    anyhow::bail!(
                        "the mailbox's lease was lost before its sync began and nobody holds it (generation {}, stored {}); the request is tried again",
                        stale.mine,
                        stale.current
                    );
                }
                return Ok(self.fenced(&stale));
            }
        };
        // Read again under the lease: the state another worker left is the one that counts.
        let Some(row) = schedule::schedule_row(&self.pool, mailbox).await? else {
            metrics::sync_outcome("skipped");
            return Ok(Handled::Skipped);
        };
        if row.parked {
            metrics::sync_outcome("skipped");
            return Ok(Handled::Skipped);
        }
        let started = Utc::now();
        let mut tx = match self.fenced_tx(&fence).await? {
            Ok(tx) => tx,
            Err(stale) => return Ok(self.fenced(&stale)),
        };
        schedule::mark_started(&mut *tx, mailbox, Some(started)).await?;
        tx.commit().await?;
        let result = self
            .engine
            .sync_fenced(fence, &login.login, login.in_crm || row.in_crm, stop)
            .await;
        match result {
            Ok(report) => match self.record_success(&row, report.clone(), &fence).await? {
                Ok(()) => {
                    metrics::sync_outcome(match report.cut_short {
                        true => "cut_short",
                        false => "synced",
                    });
                    Ok(Handled::Synced)
                }
                Err(stale) => Ok(self.fenced(&stale)),
            },
            Err(RunError::Failed(failure)) => {
                let kind = failure.kind;
                match self
                    .record_failure(&row, failure, login_read_at, &fence)
                    .await?
                {
                    Ok(()) => {
                        metrics::sync_outcome(kind.name());
                        Ok(Handled::Failed(kind))
                    }
                    Err(stale) => Ok(self.fenced(&stale)),
                }
            }
            // An attempt that did not finish answers no request: the one redelivered must run.
            Err(RunError::Stopped) => {
                tracing::info!(
                    after_ms = (Utc::now() - started).num_milliseconds(),
                    "sync stopped; what was committed stays"
                );
                self.unmark(&fence, row.last_started_at).await;
                Ok(Handled::Stopped)
            }
            Err(RunError::Fenced(stale)) => Ok(self.fenced(&stale)),
            Err(RunError::Db(err)) => {
                self.unmark(&fence, row.last_started_at).await;
                Err(err).context("writing the message index")
            }
        }
    }

    /// Puts back the start of the attempt before this one, unless a newer holder took over
    /// (best effort: a failure here only lets a redelivered request be coalesced, and the
    /// scheduler hands the mailbox out again).
    async fn unmark(&self, fence: &Fence, before: Option<DateTime<Utc>>) {
        let unmarked = async {
            let Ok(mut tx) = self.fenced_tx(fence).await? else {
                return Ok(());
            };
            schedule::mark_started(&mut *tx, fence.mailbox, before).await?;
            tx.commit().await?;
            Ok::<(), anyhow::Error>(())
        };
        if let Err(err) = unmarked.await {
            tracing::warn!(error = %format!("{err:#}"), "the unfinished attempt's start was not put back");
        }
    }

    async fn tier_of(&self, owner: UserId) -> Tier {
        match self.activity.tier(owner).await {
            Ok(t) => t,
            Err(err) => {
                // Without Redis the owner is taken as recent: neither hammered nor forgotten.
                tracing::warn!(%err, "activity unavailable; planning as recent");
                Tier::Recent
            }
        }
    }

    /// Records a finished sync, unless a newer holder took over (its claim, returned).
    async fn record_success(
        &self,
        row: &ScheduleRow,
        report: SyncReport,
        fence: &Fence,
    ) -> anyhow::Result<Result<(), Stale>> {
        let tier = self.tier_of(row.owner_user_id).await;
        let now = Utc::now();
        // A run its deadline cut short with more to do carries on at once (no back-off: the
        // server answered, there was just more than one run's time).
        let interval = match report.cut_short {
            true => CARRY_ON_AFTER,
            false => self.activity.policy().interval(tier),
        };
        let next = now + chrono::Duration::from_std(interval).unwrap_or_default();
        let duration_ms = report.duration_ms();
        let note = report.note();
        ::metrics::histogram!(metrics::SYNC_DURATION, "tier" => tier.name())
            .record(report.duration.as_secs_f64());
        ::metrics::counter!(metrics::MESSAGES_INDEXED).increment(report.new_messages.max(0) as u64);
        let mut tx = match self.fenced_tx(fence).await? {
            Ok(tx) => tx,
            Err(stale) => return Ok(Err(stale)),
        };
        if !schedule::record_success(&mut tx, row.mailbox_id, now, duration_ms, next, tier, &note)
            .await?
        {
            // Disconnected while it synced: what this run indexed goes too, and nothing is
            // reported for a mailbox the registry no longer has.
            schedule::forget_mailbox(&mut tx, row.mailbox_id).await?;
            tx.commit().await?;
            return Ok(Ok(()));
        }
        schedule::mark_finished(&mut *tx, row.mailbox_id, now).await?;
        events::synced(&mut tx, row.org_id, row.mailbox_id, now, report).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Records a failed sync, unless a newer holder took over (its claim, returned).
    async fn record_failure(
        &self,
        row: &ScheduleRow,
        failure: SyncFailure,
        login_read_at: DateTime<Utc>,
        fence: &Fence,
    ) -> anyhow::Result<Result<(), Stale>> {
        let park = failure.kind == FailureKind::AuthFailed;
        let failures = u32::try_from(row.failures.max(0)).unwrap_or(0) + 1;
        let delay = backoff(
            failures,
            self.retry_base,
            self.retry_cap,
            rand::random::<f64>(),
        );
        let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        let mut tx = match self.fenced_tx(fence).await? {
            Ok(tx) => tx,
            Err(stale) => return Ok(Err(stale)),
        };
        tracing::info!(kind = failure.kind.name(), error = %failure.message, park, retry_in_s = delay.as_secs(), "sync failed");
        let recorded = schedule::record_failure(
            &mut tx,
            row.mailbox_id,
            Failure {
                kind: failure.kind,
                message: &failure.message,
                park,
                next_due: next,
                login_read_at,
            },
        )
        .await?;
        let (was_parked, failures) = match recorded {
            FailureRecorded::Recorded {
                was_parked,
                failures,
            } => (was_parked, failures),
            FailureRecorded::Stale => {
                // The settings it used were replaced meanwhile; the change made it due again.
                return Ok(Ok(()));
            }
            FailureRecorded::Gone => {
                schedule::forget_mailbox(&mut tx, row.mailbox_id).await?;
                tx.commit().await?;
                return Ok(Ok(()));
            }
        };
        schedule::mark_finished(&mut *tx, row.mailbox_id, Utc::now()).await?;
        // A parked mailbox is reported once, not at every attempt.
        if !(park && was_parked) {
            events::sync_failed(
                &mut tx,
                row.org_id,
                row.mailbox_id,
                failure,
                park,
                failures,
                login_read_at,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }
}

/// Claims `mailbox` for the lease acquisition of `generation` ([`Leases::acquire`]) before
/// anything of it is read. A claim behind the stored generation while the lease is still
/// `leases`' holder's means Redis lost the counter (a failover, a flush), or a writer without
/// a lease claimed meanwhile: the counter is lifted above the stored generation and the claim
/// made again. Otherwise a newer holder has it: its claim is returned.
pub async fn claim(
    pool: &PgPool,
    leases: &Leases,
    mailbox: MailboxId,
    generation: i64,
) -> anyhow::Result<Result<Fence, Stale>> {
    let name = mailbox.to_string();
    let mut mine = generation;
    let mut current = 0;
    for _ in 0..3 {
        match fences::claim(pool, mailbox, mine).await? {
            Claim::Held(fence) => return Ok(Ok(fence)),
            Claim::Behind { current: stored } => current = stored,
        }
        match leases.advance(&name, current).await? {
            Some(next) => {
                tracing::warn!(
                    generation = mine,
                    stored = current,
                    next,
                    "the lease's generation counter was behind the store's (lost in Redis, or a writer without a lease); lifted above it"
                );
                mine = next;
            }
            None => break,
        }
    }
    Ok(Err(Stale {
        mailbox,
        mine,
        current,
    }))
}

/// Whether a request made at `sent` is answered by the last sync attempt, which began at
/// `started`: it began after the request, and finished (the last attempt that recorded its
/// outcome did so at `finished`, not before it began). An attempt whose worker died, or that
/// another worker is still running, answers nothing (the second is found busy).
fn answered_by(
    sent: Option<DateTime<Utc>>,
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
) -> bool {
    matches!(
        (sent, started, finished),
        (Some(sent), Some(started), Some(finished)) if sent <= started && started <= finished
    )
}

/// Shared handle for the consumer.
pub fn handler(worker: Worker) -> Arc<dyn WorkHandler> {
    Arc::new(worker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_answered_by_an_attempt_that_began_after_it_and_finished() {
        let t = Utc::now();
        let later = t + chrono::Duration::milliseconds(1);
        let done = t + chrono::Duration::seconds(5);
        assert!(answered_by(Some(t), Some(later), Some(done)));
        assert!(answered_by(Some(t), Some(t), Some(t)));
        assert!(!answered_by(Some(later), Some(t), Some(done)));
        assert!(
            !answered_by(None, Some(t), Some(done)),
            "a request of unknown time is done"
        );
        assert!(!answered_by(Some(t), None, None), "never attempted");
        // The attempt that began after the request died (or runs elsewhere): the last one to
        // finish finished before it began.
        assert!(!answered_by(Some(t), Some(later), Some(t)));
        assert!(!answered_by(Some(t), Some(later), None));
    }
}
