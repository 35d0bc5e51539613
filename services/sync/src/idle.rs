//! IMAP IDLE push for active people: their INBOXes are held in IDLE, one small tokio task
//! each, so new mail is indexed within seconds instead of at the next minute's sync.
//!
//! Which worker watches which mailbox is decided by leases (`mailroom:sync:idle:<mailbox>`),
//! never by a coordinator: every few seconds each worker registers itself, counts the live
//! workers, and takes IDLE leases on active mailboxes up to its fair share (the active
//! mailboxes divided by the workers, capped by `idle_max_connections`), giving back what is
//! over it. A mailbox is therefore never watched twice (one lease), and a dead worker's
//! mailboxes are orphaned at most one lease TTL plus one scan. New connections are paced
//! (`idle_connects_per_sec`), so a restart of thousands of watches causes no storm.
//!
//! Nothing here depends on Kafka: the requests topic's partitions bound how many workers get
//! sync work, never how many hold IDLE connections, so IDLE capacity
//! ([`metrics::IDLE_CAPACITY`], per worker) grows with every worker added.
//!
//! A watch: log in, EXAMINE INBOX, IDLE; any untagged data (EXISTS, EXPUNGE, FETCH) pulls the
//! mailbox's next sync in to now (the scheduler hands it out within a tick); IDLE is renewed
//! well before the 29 minutes servers allow, and DONE has a deadline. Errors reconnect after an
//! exponential back-off with jitter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mailroom_mail::{imap, Login};
use mailroom_types::MailboxId;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connects::connect_allowed;
use crate::domain::backoff;
use crate::engine::Engine;
use crate::error::{FailureKind, SyncFailure};
use crate::lease::Leases;
use crate::metrics;
use crate::peers::Peers;
use crate::store::schedule;

/// Live IDLE watchers (workers), scored by their last registration.
const WORKERS: &str = "mailroom:sync:idle-workers";

#[derive(Debug, Clone)]
pub struct IdleOptions {
    pub max_connections: usize,
    pub scan: Duration,
    pub reidle: Duration,
    pub connects_per_sec: u32,
    pub done_timeout: Duration,
}

impl Default for IdleOptions {
    fn default() -> Self {
        Self {
            max_connections: 2_000,
            scan: Duration::from_secs(5),
            reidle: Duration::from_secs(25 * 60),
            connects_per_sec: 50,
            done_timeout: Duration::from_secs(10),
        }
    }
}

pub struct IdleWatcher {
    pub pool: PgPool,
    pub peers: Peers,
    pub engine: Engine,
    pub leases: Leases,
    pub redis: ConnectionManager,
    pub options: IdleOptions,
    /// New connections per mail server, across the workers (shared with the syncs).
    pub connects: Option<mailroom_platform::redis::RateLimiter>,
}

struct Watch {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl IdleWatcher {
    /// Watches this worker's share of the active mailboxes until `shutdown`, then ends every
    /// watch (DONE, LOGOUT) and returns its leases.
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = Arc::new(self);
        let mut watches: HashMap<MailboxId, Watch> = HashMap::new();
        ::metrics::gauge!(metrics::IDLE_CAPACITY).set(shared.options.max_connections as f64);
        loop {
            if let Err(err) = shared.rebalance(&mut watches, &shutdown).await {
                tracing::warn!(%err, "IDLE rebalance failed; trying again");
            }
            ::metrics::gauge!(metrics::IDLE_CONNECTIONS).set(watches.len() as f64);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(shared.options.scan) => {}
            }
        }
        for (_, w) in watches.drain() {
            w.stop.cancel();
            let _ = w.task.await;
        }
        let _ = shared.deregister().await;
        ::metrics::gauge!(metrics::IDLE_CONNECTIONS).set(0.0);
        ::metrics::gauge!(metrics::IDLE_CAPACITY).set(0.0);
    }

    async fn register(&self) -> redis::RedisResult<u64> {
        let stale_after_ms = 3 * self.options.scan.as_millis() as i64 + 5_000;
        crate::partitions::register_in(&self.redis, WORKERS, self.leases.holder(), stale_after_ms)
            .await
    }

    async fn deregister(&self) -> redis::RedisResult<()> {
        crate::partitions::deregister_from(&self.redis, WORKERS, self.leases.holder()).await
    }

    async fn rebalance(
        self: &Arc<Self>,
        watches: &mut HashMap<MailboxId, Watch>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        watches.retain(|_, w| !w.task.is_finished());
        let workers = self.register().await?;
        let active = schedule::active_mailboxes(&self.pool).await?;
        let share = active
            .len()
            .div_ceil(workers as usize)
            .min(self.options.max_connections);
        // No longer active: stop watching.
        let wanted: std::collections::HashSet<MailboxId> = active.iter().copied().collect();
        let gone: Vec<MailboxId> = watches
            .keys()
            .filter(|id| !wanted.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(w) = watches.remove(&id) {
                w.stop.cancel();
            }
        }
        // Over the fair share (workers were added): give some back for others to take.
        while watches.len() > share {
            let Some(id) = watches.keys().next().copied() else {
                break;
            };
            if let Some(w) = watches.remove(&id) {
                w.stop.cancel();
            }
        }
        // Under it: take free ones, paced.
        let pace = Duration::from_secs(1) / self.options.connects_per_sec.max(1);
        let offset = rand::random::<usize>() % active.len().max(1);
        for id in active.iter().cycle().skip(offset).take(active.len()) {
            if watches.len() >= share || shutdown.is_cancelled() {
                break;
            }
            if watches.contains_key(id) {
                continue;
            }
            if !self.leases.try_acquire(&id.to_string()).await? {
                continue;
            }
            let stop = shutdown.child_token();
            let task = tokio::spawn(self.clone().watch(*id, stop.clone()));
            watches.insert(*id, Watch { stop, task });
            tokio::time::sleep(pace).await;
        }
        Ok(())
    }

    /// Holds one mailbox's INBOX in IDLE under its lease until `stop` or the lease is lost.
    async fn watch(self: Arc<Self>, mailbox: MailboxId, stop: CancellationToken) {
        let name = mailbox.to_string();
        let done = CancellationToken::new();
        let lost = stop.child_token();
        let keep = self.leases.keep(&name, done.clone(), lost.clone());
        let work = self.watch_loop(mailbox, &lost);
        tokio::select! {
            _ = keep => {}
            _ = work => {}
        }
        done.cancel();
        if let Err(err) = self.leases.release(&name).await {
            tracing::debug!(%err, "IDLE lease not returned; it expires by itself");
        }
    }

    async fn watch_loop(&self, mailbox: MailboxId, stop: &CancellationToken) {
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            match self.watch_once(mailbox, stop).await {
                Ok(()) => return,
                Err(failure) => {
                    failures += 1;
                    if failure.kind == FailureKind::AuthFailed {
                        // The sync parks the mailbox; this watch ends with it.
                        let _ = schedule::pull_in(&self.pool, mailbox).await;
                        return;
                    }
                    let delay = backoff(
                        failures,
                        Duration::from_secs(1),
                        Duration::from_secs(300),
                        rand::random::<f64>(),
                    );
                    tracing::debug!(%mailbox, error = %failure, retry_in_ms = delay.as_millis() as u64, "IDLE connection failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One connection: returns Ok when told to stop, Err when the connection failed.
    async fn watch_once(
        &self,
        mailbox: MailboxId,
        stop: &CancellationToken,
    ) -> Result<(), SyncFailure> {
        let login = match self.peers.login(mailbox).await {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(()),
            Err(err) => return Err(SyncFailure::new(FailureKind::Unreachable, err.to_string())),
        };
        while let Some(wait) = connect_allowed(self.connects.as_ref(), &login.login.host).await {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let pool = self.pool.clone();
        hold(&self.engine, &self.options, &login.login, stop, |event| {
            if event == IdleEvent::News {
                // Something changed in the INBOX: sync it now.
                let pool = pool.clone();
                tokio::spawn(async move {
                    if let Err(err) = schedule::pull_in(&pool, mailbox).await {
                        tracing::warn!(%err, %mailbox, "IDLE news not recorded");
                    }
                });
                ::metrics::counter!(metrics::IDLE_WAKEUPS).increment(1);
            }
        })
        .await
    }
}

/// What a held IDLE connection reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleEvent {
    /// The server accepted IDLE (again).
    Idling,
    /// Untagged data arrived: the INBOX changed.
    News,
}

/// Logs in, EXAMINEs INBOX and holds it in IDLE until `stop` (then DONE and LOGOUT, and
/// `Ok`), telling `on_event` when it idles and when news arrives; `Err` when the connection
/// fails.
pub async fn hold(
    engine: &Engine,
    idle: &IdleOptions,
    login: &Login,
    stop: &CancellationToken,
    mut on_event: impl FnMut(IdleEvent),
) -> Result<(), SyncFailure> {
    let options = engine.options();
    let mut session = tokio::select! {
        s = imap::connect_with(engine.connector(), login, &engine.limits().read) => {
            s.map_err(|e| SyncFailure::connecting(login, &e))?
        }
        _ = stop.cancelled() => return Ok(()),
    };
    tokio::time::timeout(options.io_timeout, session.examine("INBOX"))
        .await
        .map_err(|_| SyncFailure::new(FailureKind::Timeout, "EXAMINE INBOX timed out"))??;
    loop {
        while session.unsolicited_responses.try_recv().is_ok() {}
        let mut handle = session.idle();
        tokio::time::timeout(options.io_timeout, handle.init())
            .await
            .map_err(|_| {
                SyncFailure::new(FailureKind::Timeout, "IDLE was not accepted in time")
            })??;
        on_event(IdleEvent::Idling);
        let outcome = {
            let (wait, _interrupt) = handle.wait_with_timeout(idle.reidle);
            tokio::select! {
                r = wait => Some(r),
                _ = stop.cancelled() => None,
            }
        };
        session = tokio::time::timeout(idle.done_timeout, handle.done())
            .await
            .map_err(|_| {
                SyncFailure::new(FailureKind::Timeout, "DONE was not answered in time")
            })??;
        match outcome {
            None => {
                let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
                return Ok(());
            }
            Some(Ok(async_imap::extensions::idle::IdleResponse::NewData(_))) => {
                on_event(IdleEvent::News)
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(SyncFailure::from(e)),
        }
    }
}
