//! The schedule's SQL against a naive in-memory schedule, on random mailboxes, owners and
//! clocks, in a real PostgreSQL (the stack's `DATABASE_URL`; run with `.ci/test`).
//!
//! Every step is one transaction whose clock (`now()`, fixed for the transaction) the model
//! reads first; time passing is modelled by moving every stored time back by a random amount,
//! in the table and the model alike. The steps are what moves a mailbox in the schedule: the
//! registry's events (connect, transfer, new settings, disconnect), the scheduler's tick
//! (which may pick any of equally due mailboxes, so the model checks the choice is a valid one
//! and follows it), a busy lease, IDLE news, a heartbeat pulling an owner's mailboxes in, and
//! a finished or failed sync planned as the worker plans it (the tier's interval, or the
//! back-off after the failures so far). After each step the whole table, the gauges' counts,
//! the IDLE set and one row as the worker reads it must equal the model's.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mailroom_platform::proto::events::v1 as ev;
use mailroom_sync::domain::{backoff, Tier, TierPolicy};
use mailroom_sync::error::FailureKind;
use mailroom_sync::scheduler::issue_due;
use mailroom_sync::store::schedule::{self, Failure, FailureRecorded, ScheduleRow};
use mailroom_types::{MailboxId, OrgId, UserId};
use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secrecy::SecretString;
use sqlx::{PgConnection, PgPool};

const SEEDS: u64 = 12;
const STEPS: usize = 120;
const RETRY_BASE: Duration = Duration::from_secs(30);
const RETRY_CAP: Duration = Duration::from_secs(3_600);

/// A mailbox as the model keeps it: every column of `schedule`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct Row {
    mailbox_id: MailboxId,
    org_id: OrgId,
    owner_user_id: UserId,
    in_crm: bool,
    next_due: DateTime<Utc>,
    last_sync: Option<DateTime<Utc>>,
    last_duration_ms: i64,
    last_error: String,
    last_error_kind: String,
    failures: i32,
    parked: bool,
    tier: i16,
    settings_changed_at: Option<DateTime<Utc>>,
}

impl Row {
    fn as_schedule_row(&self) -> ScheduleRow {
        ScheduleRow {
            mailbox_id: self.mailbox_id,
            org_id: self.org_id,
            owner_user_id: self.owner_user_id,
            in_crm: self.in_crm,
            next_due: self.next_due,
            last_sync: self.last_sync,
            last_duration_ms: self.last_duration_ms,
            last_error: self.last_error.clone(),
            last_error_kind: self.last_error_kind.clone(),
            failures: self.failures,
            parked: self.parked,
            tier: self.tier,
            // Set only by a worker beginning and finishing a sync, which this model does not do.
            last_started_at: None,
            last_finished_at: None,
        }
    }

    fn due(&self, now: DateTime<Utc>) -> bool {
        !self.parked && self.next_due <= now
    }
}

/// The naive schedule: a map, and each rule written out as plainly as it reads.
#[derive(Default)]
struct Model {
    rows: BTreeMap<MailboxId, Row>,
}

impl Model {
    fn upsert(&mut self, now: DateTime<Utc>, m: MailboxId, org: OrgId, owner: UserId, crm: bool) {
        let row = self.rows.entry(m).or_insert_with(|| Row {
            mailbox_id: m,
            org_id: org,
            owner_user_id: owner,
            in_crm: crm,
            next_due: now,
            last_sync: None,
            last_duration_ms: 0,
            last_error: String::new(),
            last_error_kind: String::new(),
            failures: 0,
            parked: false,
            tier: Tier::Dormant.code(),
            settings_changed_at: None,
        });
        row.owner_user_id = owner;
        row.in_crm = crm;
    }

    fn unpark(&mut self, now: DateTime<Utc>, m: MailboxId) {
        if let Some(row) = self.rows.get_mut(&m) {
            row.parked = false;
            row.failures = 0;
            row.last_error.clear();
            row.last_error_kind.clear();
            row.next_due = now;
            row.settings_changed_at = Some(now);
        }
    }

    fn due_by_tier(&self, now: DateTime<Utc>) -> BTreeMap<i16, i64> {
        let mut out = BTreeMap::new();
        for row in self.rows.values().filter(|r| r.due(now)) {
            *out.entry(row.tier).or_insert(0) += 1;
        }
        out
    }

    fn active(&self) -> Vec<MailboxId> {
        self.rows
            .values()
            .filter(|r| r.tier == Tier::Active.code() && !r.parked)
            .map(|r| r.mailbox_id)
            .collect()
    }
}

fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

/// `d` to whole milliseconds, so the model's times are exactly what PostgreSQL stores.
fn whole_ms(d: Duration) -> chrono::Duration {
    ms(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.gen_range(0..items.len())]
}

async fn database() -> PgPool {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!("DATABASE_URL is not set: run the tests with .ci/test, which starts PostgreSQL")
    });
    let name = format!("mailroom_test_{}", uuid::Uuid::new_v4().simple());
    let admin = PgPool::connect(&url).await.expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create the test database");
    admin.close().await;
    let (base, _) = url.rsplit_once('/').expect("DATABASE_URL ends in /dbname");
    let url = SecretString::from(format!("{base}/{name}"));
    let pool = mailroom_platform::db::connect(&url, mailroom_sync::SCHEMA, 2)
        .await
        .expect("connect to the test database");
    mailroom_platform::db::migrate(&pool, mailroom_sync::SCHEMA, &mailroom_sync::MIGRATIONS)
        .await
        .expect("migrate");
    pool
}

async fn table(conn: &mut PgConnection) -> Vec<Row> {
    sqlx::query_as(
        "SELECT mailbox_id, org_id, owner_user_id, in_crm, next_due, last_sync, \
         last_duration_ms, last_error, last_error_kind, failures, parked, tier, \
         settings_changed_at FROM schedule ORDER BY mailbox_id",
    )
    .fetch_all(conn)
    .await
    .expect("read the schedule")
}

/// The SyncRequested events written to the outbox after `seq`, and the last seq.
async fn requests_after(conn: &mut PgConnection, seq: i64) -> (Vec<(String, ev::Envelope)>, i64) {
    let rows: Vec<(i64, String, Vec<u8>)> =
        sqlx::query_as("SELECT seq, record_key, payload FROM outbox WHERE seq > $1 ORDER BY seq")
            .bind(seq)
            .fetch_all(conn)
            .await
            .expect("read the outbox");
    let last = rows.last().map(|r| r.0).unwrap_or(seq);
    let events = rows
        .into_iter()
        .map(|(_, key, payload)| {
            let envelope = ev::Envelope::decode(payload.as_slice()).expect("an envelope");
            (key, envelope)
        })
        .collect();
    (events, last)
}

#[tokio::test]
async fn the_schedule_agrees_with_a_naive_model_on_random_mailboxes_and_clocks() {
    let pool = database().await;
    let policy = TierPolicy::default();
    for seed in 0..SEEDS {
        let mut rng = StdRng::seed_from_u64(seed);
        sqlx::query("TRUNCATE schedule, outbox")
            .execute(&pool)
            .await
            .expect("empty the tables");
        let orgs: Vec<OrgId> = (0..2).map(|_| OrgId::new()).collect();
        let owners: Vec<UserId> = (0..rng.gen_range(2..7)).map(|_| UserId::new()).collect();
        let mailboxes: Vec<MailboxId> = (0..rng.gen_range(4..24))
            .map(|_| MailboxId::new())
            .collect();
        let org_of: BTreeMap<MailboxId, OrgId> = mailboxes
            .iter()
            .map(|m| (*m, pick(&mut rng, &orgs)))
            .collect();
        let mut model = Model::default();
        let mut outbox_seq = 0i64;
        for step in 0..STEPS {
            let at = format!("seed {seed}, step {step}");
            let mut tx = pool.begin().await.expect("begin");
            let (now,): (DateTime<Utc>,) = sqlx::query_as("SELECT now()")
                .fetch_one(&mut *tx)
                .await
                .expect("the clock");
            let m = pick(&mut rng, &mailboxes);
            let op = rng.gen_range(0..100);
            let what = match op {
                // The registry connects a mailbox, or describes it again (a transfer).
                0..=17 => {
                    let (owner, crm) = (pick(&mut rng, &owners), rng.gen_bool(0.3));
                    schedule::upsert_mailbox(&mut tx, m, org_of[&m], owner, crm)
                        .await
                        .expect("upsert");
                    model.upsert(now, m, org_of[&m], owner, crm);
                    "upsert"
                }
                // A new password or server.
                18..=23 => {
                    schedule::unpark(&mut tx, m).await.expect("unpark");
                    model.unpark(now, m);
                    "unpark"
                }
                // Disconnected.
                24..=27 => {
                    schedule::forget_mailbox(&mut tx, m).await.expect("forget");
                    model.rows.remove(&m);
                    "forget"
                }
                // The scheduler's tick.
                28..=41 => {
                    let limit = rng.gen_range(1..6i64);
                    let hold = Duration::from_secs(rng.gen_range(1..600));
                    let issued = issue_due(&mut tx, limit, hold).await.expect("tick");
                    let mut due: Vec<&Row> = model.rows.values().filter(|r| r.due(now)).collect();
                    due.sort_by_key(|r| r.next_due);
                    let expected = due.len().min(limit as usize);
                    assert_eq!(issued.len(), expected, "{at}: how many were handed out");
                    let chosen: Vec<MailboxId> = issued.iter().map(|d| d.mailbox_id).collect();
                    for d in &issued {
                        let row = model.rows.get(&d.mailbox_id);
                        let row = row.unwrap_or_else(|| panic!("{at}: {d:?} is not scheduled"));
                        assert!(row.due(now), "{at}: {d:?} was not due");
                        assert_eq!((d.org_id, d.tier), (row.org_id, row.tier), "{at}");
                    }
                    // The longest due first: nothing left behind was due before a chosen one.
                    let latest_chosen = issued
                        .iter()
                        .map(|d| model.rows[&d.mailbox_id].next_due)
                        .max();
                    for row in due.iter().filter(|r| !chosen.contains(&r.mailbox_id)) {
                        assert!(
                            latest_chosen.is_none_or(|l| l <= row.next_due),
                            "{at}: {} was due before the ones handed out",
                            row.mailbox_id
                        );
                    }
                    for id in &chosen {
                        if let Some(row) = model.rows.get_mut(id) {
                            row.next_due = now + whole_ms(hold);
                        }
                    }
                    // One normal-priority request each, keyed by mailbox, in the same
                    // transaction.
                    let (requests, last) = requests_after(&mut tx, outbox_seq).await;
                    outbox_seq = last;
                    let mut requested: Vec<String> = Vec::new();
                    for (key, envelope) in requests {
                        let Some(ev::envelope::Payload::SyncRequested(r)) = envelope.payload else {
                            panic!("{at}: the tick wrote something else than a SyncRequested");
                        };
                        assert_eq!(key, r.mailbox_id, "{at}");
                        assert_eq!(r.priority, ev::SyncPriority::Normal as i32, "{at}");
                        let id: MailboxId = r.mailbox_id.parse().expect("a mailbox id");
                        assert_eq!(envelope.org_id, org_of[&id].to_string(), "{at}");
                        requested.push(r.mailbox_id);
                    }
                    let mut handed: Vec<String> = chosen.iter().map(|c| c.to_string()).collect();
                    handed.sort();
                    requested.sort();
                    assert_eq!(
                        requested, handed,
                        "{at}: one request per mailbox handed out"
                    );
                    "tick"
                }
                // Its lease is busy (or its server over its connection budget).
                42..=48 => {
                    let after = Duration::from_secs(rng.gen_range(0..120));
                    schedule::retry_soon(&mut *tx, m, after)
                        .await
                        .expect("retry soon");
                    if let Some(row) = model.rows.get_mut(&m) {
                        row.next_due = row.next_due.min(now + whole_ms(after));
                    }
                    "retry_soon"
                }
                // IDLE saw news.
                49..=53 => {
                    schedule::pull_in(&mut *tx, m).await.expect("pull in");
                    if let Some(row) = model.rows.get_mut(&m) {
                        row.next_due = row.next_due.min(now);
                    }
                    "pull_in"
                }
                // A heartbeat raised an owner's tier.
                54..=61 => {
                    let owner = pick(&mut rng, &owners);
                    let (due, tier) = if rng.gen_bool(0.7) {
                        (now, Tier::Active)
                    } else {
                        (
                            now + ms(rng.gen_range(-60_000..600_000)),
                            pick(&mut rng, &Tier::ALL),
                        )
                    };
                    let moved = schedule::pull_in_owner(&mut *tx, owner, due, tier)
                        .await
                        .expect("pull in owner");
                    let mut expected = 0;
                    for row in model.rows.values_mut() {
                        if row.owner_user_id == owner && !row.parked && row.next_due > due {
                            row.next_due = due;
                            row.tier = tier.code();
                            expected += 1;
                        }
                    }
                    assert_eq!(moved, expected, "{at}: mailboxes pulled in");
                    "pull_in_owner"
                }
                // A sync finished: next at the owner's tier's interval.
                62..=73 => {
                    let tier = pick(&mut rng, &Tier::ALL);
                    let synced_at = now - ms(rng.gen_range(0..5_000));
                    let duration_ms = rng.gen_range(0..60_000);
                    let next = synced_at + whole_ms(policy.interval(tier));
                    let recorded = schedule::record_success(
                        &mut tx,
                        m,
                        synced_at,
                        duration_ms,
                        next,
                        tier,
                        "",
                    )
                    .await
                    .expect("record success");
                    assert_eq!(recorded, model.rows.contains_key(&m), "{at}");
                    if let Some(row) = model.rows.get_mut(&m) {
                        row.last_sync = Some(synced_at);
                        row.last_duration_ms = duration_ms;
                        row.failures = 0;
                        row.last_error.clear();
                        row.last_error_kind.clear();
                        row.parked = false;
                        row.next_due = next;
                        row.tier = tier.code();
                    }
                    "success"
                }
                // A sync failed: backed off by the failures so far, parked on a refused login.
                74..=87 => {
                    let kind = pick(
                        &mut rng,
                        &[
                            FailureKind::AuthFailed,
                            FailureKind::Unreachable,
                            FailureKind::Timeout,
                        ],
                    );
                    let park = kind == FailureKind::AuthFailed;
                    let before = model.rows.get(&m).map(|r| r.failures).unwrap_or(0);
                    let failures = u32::try_from(before).unwrap_or(0) + 1;
                    let jitter = rng.gen::<f64>();
                    let delay = backoff(failures, RETRY_BASE, RETRY_CAP, jitter);
                    let next = now + whole_ms(delay);
                    let login_read_at = now - ms(rng.gen_range(0..3_000));
                    let message = format!("failure {step}");
                    let failure = Failure {
                        kind,
                        message: &message,
                        park,
                        next_due: next,
                        login_read_at,
                    };
                    let recorded = schedule::record_failure(&mut tx, m, failure)
                        .await
                        .expect("record failure");
                    let expected = match model.rows.get_mut(&m) {
                        None => FailureRecorded::Gone,
                        Some(row) if row.settings_changed_at.is_some_and(|c| c > login_read_at) => {
                            FailureRecorded::Stale
                        }
                        Some(row) => {
                            let was_parked = row.parked;
                            row.failures += 1;
                            row.last_error = message.clone();
                            row.last_error_kind = kind.name().to_owned();
                            row.parked = park;
                            row.next_due = next;
                            FailureRecorded::Recorded {
                                was_parked,
                                failures: row.failures,
                            }
                        }
                    };
                    assert_eq!(recorded, expected, "{at}");
                    if let FailureRecorded::Recorded { failures: n, .. } = recorded {
                        // The back-off grows with the failures in a row, up to the cap.
                        let bare =
                            backoff(u32::try_from(n).unwrap_or(0), RETRY_BASE, RETRY_CAP, 0.0);
                        assert!(delay <= bare && delay >= bare.mul_f64(0.75), "{at}");
                    }
                    "failure"
                }
                // Time passes.
                _ => {
                    let by = ms(rng.gen_range(1..7_200_000));
                    sqlx::query(
                        "UPDATE schedule SET next_due = next_due - $1, last_sync = last_sync - $1, \
                         settings_changed_at = settings_changed_at - $1",
                    )
                    .bind(by)
                    .execute(&mut *tx)
                    .await
                    .expect("move the clock");
                    for row in model.rows.values_mut() {
                        row.next_due -= by;
                        row.last_sync = row.last_sync.map(|t| t - by);
                        row.settings_changed_at = row.settings_changed_at.map(|t| t - by);
                    }
                    "time passes"
                }
            };
            let at = format!("{at} ({what})");
            // The whole table, as the model has it.
            let expected: Vec<Row> = model.rows.values().cloned().collect();
            assert_eq!(table(&mut tx).await, expected, "{at}");
            // One row as the worker reads it.
            let read = schedule::schedule_row(&mut *tx, m)
                .await
                .expect("read a row");
            assert_eq!(read, model.rows.get(&m).map(Row::as_schedule_row), "{at}");
            // The gauges and the IDLE set.
            let by_tier: BTreeMap<i16, i64> = schedule::due_by_tier(&mut *tx)
                .await
                .expect("due by tier")
                .into_iter()
                .collect();
            assert_eq!(by_tier, model.due_by_tier(now), "{at}: due by tier");
            let active = schedule::active_mailboxes(&mut *tx).await.expect("active");
            assert_eq!(active, model.active(), "{at}: the mailboxes held in IDLE");
            tx.commit().await.expect("commit");
        }
    }
}
