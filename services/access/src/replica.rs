//! This process's in-memory copy of every organisation's graph, kept current from PostgreSQL.
//!
//! At start a replica loads the tables in one snapshot, remembering the latest revision in it.
//! Then it tails the changelog: woken by `NOTIFY` when a writer commits (any replica's), and
//! every poll interval regardless. A call that names a revision waits until the replica has applied
//! it ([`Replica::wait_for`]), which is how a check on one replica sees a write made through
//! another. Checks never touch the database; the queries behind loading and tailing are
//! [`crate::store`]'s. After loading, and after each batch of records, the graphs the records
//! touched rebuild their derived caches ([`OrgGraph::refresh`]) before any reader sees them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use mailroom_types::{MailboxId, OrgId, UserId};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;

use crate::error::{AccessError, Result};
use crate::graph::OrgGraph;
use crate::model::Relationship;
use crate::store::{self, changelog, Change};

/// Every organisation's graph, and where each user and mailbox belongs.
#[derive(Default)]
pub struct State {
    orgs: HashMap<OrgId, OrgGraph>,
    user_org: HashMap<UserId, OrgId>,
    mailbox_org: HashMap<MailboxId, OrgId>,
    revision: i64,
}

impl State {
    pub fn org(&self, org: OrgId) -> Option<&OrgGraph> {
        self.orgs.get(&org)
    }

    /// The organisation a user belongs to, if access has heard of them.
    pub fn org_of_user(&self, user: UserId) -> Option<OrgId> {
        self.user_org.get(&user).copied()
    }

    /// The organisation a mailbox belongs to, if it has an owner or a reader.
    pub fn org_of_mailbox(&self, mailbox: MailboxId) -> Option<OrgId> {
        self.mailbox_org.get(&mailbox).copied()
    }

    /// The revision this state reflects.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Relationships held in memory, over all organisations.
    pub fn relationship_count(&self) -> usize {
        self.orgs.values().map(OrgGraph::len).sum()
    }

    /// Rebuilds the derived caches of `orgs` (see [`OrgGraph::refresh`]), after their changes
    /// are applied and before readers see them, so serving never takes the slow path.
    fn refresh(&mut self, orgs: impl IntoIterator<Item = OrgId>) {
        let started = Instant::now();
        for org in orgs {
            if let Some(graph) = self.orgs.get_mut(&org) {
                graph.refresh();
            }
        }
        metrics::histogram!("mailroom_access_refresh_seconds")
            .record(started.elapsed().as_secs_f64());
    }

    fn apply(&mut self, org: OrgId, change: &Change) {
        let graph = self.orgs.entry(org).or_default();
        match change {
            Change::Write(row) => {
                let rel = row.relationship();
                graph.apply(rel);
                // A mailbox's organisation is fixed by its first owner (the writer checks it);
                // a row naming it from elsewhere, left from before that check, changes nothing.
                if let Relationship::Owner(mailbox, _) | Relationship::Reader(mailbox, _) = rel {
                    self.mailbox_org.entry(mailbox).or_insert(org);
                }
            }
            Change::Delete(row) => {
                graph.delete(row.relationship());
            }
            Change::User { user, active } => {
                graph.set_user(*user, *active);
                self.user_org.insert(*user, org);
            }
            // The audiences before roles: nothing evaluates them any more.
            Change::Settings(_) => {}
            Change::RoleCreated { role, .. } | Change::RoleUpdated { role, .. } => {
                graph.put_role(role.clone())
            }
            Change::RoleDeleted { role, .. } => {
                graph.remove_role(*role);
            }
        }
    }
}

/// The replica: the state, the revision it has reached, and the tailer that advances it.
pub struct Replica {
    pool: PgPool,
    state: RwLock<State>,
    applied: watch::Sender<i64>,
    catching_up: Mutex<()>,
    sized_at: std::sync::Mutex<Option<Instant>>,
    wait_limit: Duration,
    retention: Duration,
    tailing: Tailing,
}

/// How a replica learns of new changelog records besides calls that name a revision.
#[derive(Debug, Clone, Copy)]
pub struct Tailing {
    pub poll: Duration,
    pub notifications: bool,
}

/// How many changelog records one catch-up reads at a time.
const BATCH: i64 = 1_000;
/// How often the size gauges (relationships, organisations) are refreshed at most.
const SIZE_GAUGE_EVERY: Duration = Duration::from_secs(10);
/// The shortest safety poll of a replica that listens for notifications (each poll is two
/// statements, also at rest): a listener whose connection silently dropped is noticed within
/// it, and a call that names a revision catches up at once either way. A replica that does not
/// listen polls at its configured pace.
const LISTENING_POLL: Duration = Duration::from_secs(2);

impl Replica {
    /// Loads every organisation from the tables, in one snapshot.
    pub async fn load(
        pool: PgPool,
        wait_limit: Duration,
        retention: Duration,
        tailing: Tailing,
    ) -> Result<Self> {
        let state = load_snapshot(&mut *pool.acquire().await?).await?;
        let (applied, _) = watch::channel(state.revision);
        let replica = Replica {
            pool,
            state: RwLock::new(state),
            applied,
            catching_up: Mutex::new(()),
            sized_at: std::sync::Mutex::new(None),
            wait_limit,
            retention,
            tailing,
        };
        replica.record_gauges();
        Ok(replica)
    }

    /// Reads the current state. Hold the guard only for synchronous work.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while applying would poison the lock; the state is still the last one
        // fully applied or partly applied, and the next catch-up rewrites the same changes.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn revision(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Waits until this replica has applied `revision`. A revision never drawn is refused at
    /// once; one drawn but not yet applied here is waited for up to the wait limit.
    pub async fn wait_for(&self, revision: i64) -> Result<()> {
        if self.revision() >= revision {
            return Ok(());
        }
        let started = Instant::now();
        let mut applied = self.applied.subscribe();
        let mut drawn_checked = false;
        loop {
            // Catch up now rather than wait for the notification, unless another task is at
            // it. The connection comes first and its wait is bounded: the catch-up lock is
            // never held while waiting for the pool, which writers parked on the changelog
            // lock may have emptied (the one holding that lock catches up itself).
            let left = self.wait_limit.saturating_sub(started.elapsed());
            let free =
                tokio::time::timeout(left.min(Duration::from_millis(100)), self.pool.acquire())
                    .await;
            if let Ok(conn) = free {
                let mut conn = conn?;
                if let Ok(_guard) = self.catching_up.try_lock() {
                    self.catch_up_with(&mut conn, false).await?;
                }
                // A revision never drawn will never come: refuse it at once.
                if !drawn_checked && *applied.borrow() < revision {
                    drawn_checked = true;
                    let latest = changelog::last_drawn(&mut conn).await?;
                    if revision > latest {
                        return Err(AccessError::InvalidArgument(format!(
                            "revision {revision} has not been written yet (the latest is {latest}); pass a token this service returned"
                        )));
                    }
                }
            }
            if *applied.borrow_and_update() >= revision {
                return Ok(());
            }
            let left = self.wait_limit.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(AccessError::NotYetAt {
                    wanted: revision,
                    have: self.revision(),
                    waited_ms: self.wait_limit.as_millis() as u64,
                });
            }
            let changed = async {
                let _ = applied.changed().await;
            };
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), changed).await;
        }
    }

    /// Applies what the changelog holds beyond this replica's revision.
    pub async fn catch_up(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let _guard = self.catching_up.lock().await;
        self.catch_up_with(&mut conn, false).await
    }

    /// Applies everything committed so far, reading through `conn`: a writer's READ COMMITTED
    /// transaction that holds the changelog lock, so nothing can commit between this catch-up
    /// and its write, and who may write is decided on exactly the latest state. (Under
    /// REPEATABLE READ the snapshot would predate the lock and could miss the writer before.)
    pub async fn catch_up_in(&self, conn: &mut PgConnection) -> Result<()> {
        let _guard = self.catching_up.lock().await;
        self.catch_up_with(conn, true).await
    }

    /// Call with `catching_up` held. `locked`: `conn` is a READ COMMITTED transaction holding
    /// the changelog lock (a writer's); otherwise a connection outside any transaction.
    async fn catch_up_with(&self, conn: &mut PgConnection, locked: bool) -> Result<()> {
        loop {
            let from = self.revision();
            // The records first, then the prune horizon. A prune commits its deletions and its
            // new horizon together, so if it removed any record after `from` before the first
            // read, the second read sees the horizon past `from` and this replica reloads;
            // otherwise the records read are complete. (This holds in READ COMMITTED, which
            // is what a writer's transaction runs in.)
            let records = changelog::records_after(conn, from, BATCH).await?;
            let pruned_through = changelog::pruned_through(conn).await?;
            if from < pruned_through {
                tracing::warn!(
                    from,
                    pruned_through,
                    "this replica is behind the pruned changelog; reloading from the tables"
                );
                // Through the connection already held: waiting for another while holding the
                // catch-up lock could starve behind writers parked on the changelog lock.
                let state = if locked {
                    load_state(conn).await?
                } else {
                    load_snapshot(conn).await?
                };
                let revision = state.revision;
                *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
                self.applied.send_replace(revision);
                self.record_gauges();
                continue;
            }
            let Some(last) = records.last().map(|r| r.0) else {
                return Ok(());
            };
            let fetched = records.len();
            let mut decoded = Vec::with_capacity(fetched);
            for (revision, org, changes) in records {
                // What this build cannot read (entries a newer build wrote, or a damaged
                // record) is skipped, as `load_state` skips an unknown row: one bad record must
                // not stop every later change from reaching this replica. The readable entries
                // of a record still apply; legacy rows an older pod wrote pass quietly.
                match changelog::decode_entries(&changes) {
                    Ok((changes, 0)) => decoded.push((org, changes)),
                    Ok((changes, unreadable)) => {
                        tracing::error!(
                            revision,
                            %org,
                            unreadable,
                            "changelog record has changes this build cannot read; those skipped"
                        );
                        metrics::counter!("mailroom_access_changelog_records_skipped_total")
                            .increment(1);
                        decoded.push((org, changes));
                    }
                    Err(err) => {
                        tracing::error!(revision, %org, %err, "changelog record is unreadable; skipped");
                        metrics::counter!("mailroom_access_changelog_records_skipped_total")
                            .increment(1);
                    }
                }
            }
            {
                let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
                let mut touched = HashSet::new();
                for (org, changes) in &decoded {
                    for change in changes {
                        state.apply(*org, change);
                    }
                    touched.insert(*org);
                }
                state.refresh(touched);
                state.revision = last;
            }
            self.applied.send_replace(last);
            self.record_gauges();
            if (fetched as i64) < BATCH {
                return Ok(());
            }
        }
    }

    /// The revision gauge on every catch-up; the counts, which walk every graph, at most
    /// every [`SIZE_GAUGE_EVERY`].
    fn record_gauges(&self) {
        metrics::gauge!("mailroom_access_revision_applied").set(self.revision() as f64);
        let mut last = self.sized_at.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < SIZE_GAUGE_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        let state = self.read();
        metrics::gauge!("mailroom_access_relationships").set(state.relationship_count() as f64);
        metrics::gauge!("mailroom_access_organisations").set(state.orgs.len() as f64);
    }

    /// Keeps the replica current until `shutdown`: on every notification from a writer, and
    /// every poll interval in case one was missed. Prunes the changelog now and then.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut listener = if !self.tailing.notifications {
            None
        } else {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut l) => match l.listen(changelog::CHANNEL).await {
                    Ok(()) => Some(l),
                    Err(err) => {
                        tracing::warn!(%err, "cannot LISTEN for changes; polling instead");
                        None
                    }
                },
                Err(err) => {
                    tracing::warn!(%err, "cannot LISTEN for changes; polling instead");
                    None
                }
            }
        };
        let mut last_prune = Instant::now();
        loop {
            if let Err(err) = self.catch_up().await {
                tracing::warn!(error = %err, "catching up with the changelog failed; retrying");
            }
            if last_prune.elapsed() > Duration::from_secs(600) {
                last_prune = Instant::now();
                if let Err(err) = self.prune().await {
                    tracing::warn!(error = %err, "pruning the changelog failed");
                }
            }
            let poll = if listener.is_some() {
                self.tailing.poll.max(LISTENING_POLL)
            } else {
                self.tailing.poll
            };
            let woken = async {
                match listener.as_mut() {
                    Some(l) => {
                        if let Err(err) = l.recv().await {
                            tracing::warn!(%err, "changelog notifications interrupted; reconnecting");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = woken => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Deletes changelog records older than the retention, keeping the newest.
    pub async fn prune(&self) -> Result<u64> {
        changelog::prune(&self.pool, self.retention).await
    }
}

/// Loads every organisation in one REPEATABLE READ snapshot on `conn`.
async fn load_snapshot(conn: &mut PgConnection) -> Result<State> {
    let mut tx = changelog::begin_snapshot(conn).await?;
    let state = load_state(&mut tx).await?;
    tx.commit().await?;
    Ok(state)
}

/// Loads every organisation through `conn`, which must see one consistent state: a snapshot
/// transaction, or a transaction holding the changelog lock (nothing else commits then).
async fn load_state(tx: &mut PgConnection) -> Result<State> {
    let started = Instant::now();
    let mut state = State {
        revision: changelog::latest(&mut *tx).await?,
        ..State::default()
    };
    for (user, org, active) in store::all_users(&mut *tx).await? {
        state.apply(org, &Change::User { user, active });
    }
    // Roles before the rows that assign them.
    for (org, role) in store::all_roles(&mut *tx).await? {
        state.apply(
            org,
            &Change::RoleCreated {
                role,
                cloned_from: None,
            },
        );
    }
    // Where each mailbox belongs, from the table writers check, before any relationship.
    state
        .mailbox_org
        .extend(store::all_mailboxes(&mut *tx).await?);
    let rows = store::all_rows(&mut *tx).await?;
    let count = rows.len();
    for (org, row) in rows {
        state.apply(org, &Change::Write(row));
    }
    let orgs: Vec<OrgId> = state.orgs.keys().copied().collect();
    state.refresh(orgs);
    tracing::info!(
        relationships = count,
        revision = state.revision,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "access graph loaded"
    );
    Ok(state)
}
