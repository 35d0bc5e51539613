//! What the benchmarks share: driving an operation from many tasks for a while, and the
//! throughput and latency percentiles that come out.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One workload's outcome.
pub struct Stats {
    pub name: String,
    pub calls: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
    /// For an open-loop run: how well the generator kept its schedule.
    pub pacing: Option<Pacing>,
}

impl Stats {
    pub fn throughput(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
    /// Percentile of the latencies, in ms.
    pub fn percentile(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }
    pub fn print(&self) {
        println!(
            "{:<44} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>7}",
            self.name,
            self.calls,
            self.throughput(),
            self.percentile(0.5),
            self.percentile(0.99),
            self.errors
        );
    }
}

/// Runs `op` from `concurrency` tasks for `duration`; `op(i)` is one call.
pub async fn drive<F, Fut>(name: &str, concurrency: usize, duration: Duration, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let op = op.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if !op(i).await {
                    errors += 1;
                }
                latencies.push(t.elapsed().as_micros() as u64);
                i += concurrency;
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((l, e)) = task.await {
            latencies_us.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Stats {
        name: name.to_owned(),
        calls: latencies_us.len(),
        errors,
        elapsed,
        latencies_us,
        pacing: None,
    }
}

/// Runs blocking `op` on `concurrency` OS threads of its own for `duration` (closed loop, like
/// [`drive`], for calls that block their thread, such as an FFI call into an embedded engine).
pub async fn drive_blocking<F>(name: &str, concurrency: usize, duration: Duration, op: F) -> Stats
where
    F: Fn(usize) -> bool + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let outcome = tokio::task::spawn_blocking(move || {
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let (latencies_us, errors) = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..concurrency)
                .map(|worker| {
                    let (op, stop) = (op.clone(), &stop);
                    scope.spawn(move || {
                        let mut latencies = Vec::new();
                        let mut errors = 0;
                        let mut i = worker;
                        while !stop.load(Ordering::Relaxed) {
                            let t = Instant::now();
                            if !op(i) {
                                errors += 1;
                            }
                            latencies.push(t.elapsed().as_micros() as u64);
                            i += concurrency;
                        }
                        (latencies, errors)
                    })
                })
                .collect();
            std::thread::sleep(duration);
            stop.store(true, Ordering::Relaxed);
            let mut all = Vec::new();
            let mut errors = 0;
            for thread in threads {
                if let Ok((l, e)) = thread.join() {
                    all.extend(l);
                    errors += e;
                }
            }
            (all, errors)
        });
        (latencies_us, errors, started.elapsed())
    })
    .await;
    let (mut latencies_us, errors, elapsed) = outcome.unwrap_or_default();
    latencies_us.sort_unstable();
    Stats {
        name: name.to_owned(),
        calls: latencies_us.len(),
        errors,
        elapsed,
        latencies_us,
        pacing: None,
    }
}

/// How well the open-loop generator kept its schedule, so its percentiles can be trusted.
pub struct Pacing {
    /// Calls per second asked for.
    pub rate: f64,
    /// Calls scheduled (`rate` × duration).
    pub scheduled: usize,
    /// Sorted: how late the pacer handed each call off (actual − intended send time), µs.
    pub send_late_us: Vec<u64>,
    /// Sorted: how late each call began to run (a runtime or blocking-pool thread picked it
    /// up), µs after its intended send time.
    pub start_late_us: Vec<u64>,
    /// CPU the pacer thread used, as a fraction of one core.
    pub pacer_cpu: f64,
    /// Calls still queued (never started) when the run gave up waiting for the target to
    /// catch up; they count neither as calls nor as latencies.
    pub dropped: usize,
}

fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[idx] as f64 / 1000.0
}

impl Pacing {
    /// Percentile of the pacer's own lateness, in ms.
    pub fn send_late(&self, p: f64) -> f64 {
        percentile_ms(&self.send_late_us, p)
    }
    /// Percentile of the lateness of the calls' start, in ms.
    pub fn start_late(&self, p: f64) -> f64 {
        percentile_ms(&self.start_late_us, p)
    }
}

/// How long the pacer busy-waits (yielding) before each send instead of sleeping: sleeps
/// wake up tens of microseconds late, too coarse at 15k/s (a call every 67 µs).
const SPIN: Duration = Duration::from_micros(50);

/// Waits until `t`: a sleep to about [`SPIN`] before it, then a yielding busy-wait.
fn wait_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
    }
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// One scheduled call of an open-loop run: where its outcome goes.
pub struct Slot {
    record: Arc<Record>,
    index: usize,
    intended: Instant,
}

struct Record {
    /// Per call: ns from the intended send time to completion, or `u64::MAX` (not done).
    latency_ns: Vec<AtomicU64>,
    /// Per call: ns from the intended send time to when it began to run.
    start_ns: Vec<AtomicU64>,
    errors: AtomicUsize,
    dropped: AtomicUsize,
    outstanding: AtomicUsize,
    give_up: AtomicBool,
    last_done: std::sync::Mutex<Option<Instant>>,
    drained: tokio::sync::Notify,
}

impl Slot {
    /// Call when the call is about to run; `false` if the run has given up on it.
    pub fn begin(&self) -> bool {
        if self.record.give_up.load(Ordering::Relaxed) {
            self.record.dropped.fetch_add(1, Ordering::Relaxed);
            self.done();
            return false;
        }
        self.record.start_ns[self.index]
            .store(self.intended.elapsed().as_nanos() as u64, Ordering::Relaxed);
        true
    }

    /// Call when the call has returned.
    pub fn finish(self, ok: bool) {
        let now = Instant::now();
        self.record.latency_ns[self.index].store(
            now.duration_since(self.intended).as_nanos() as u64,
            Ordering::Relaxed,
        );
        if !ok {
            self.record.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut last) = self.record.last_done.lock() {
            if last.is_none_or(|l| l < now) {
                *last = Some(now);
            }
        }
        self.done();
    }

    fn done(&self) {
        if self.record.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.record.drained.notify_one();
        }
    }
}

/// The open-loop generator: calls `dispatch(i, slot)` for call `i` at `start + i / rate`,
/// for `duration`, from a pacing thread of its own; `dispatch` hands the call to whatever
/// runs it (a tokio task, a blocking-pool thread) and returns at once.
///
/// Each call's latency runs from its intended send time, not from when it was sent or began
/// (no coordinated omission): a late pacer, a busy runtime or a target that falls behind
/// all show in the percentiles, and the pacer's own lateness is reported beside them. When
/// the schedule is over, calls still queued get as long again as the run to finish; then
/// those not yet started are dropped (and counted).
async fn open_loop<D>(name: &str, rate: f64, duration: Duration, dispatch: D) -> Stats
where
    D: Fn(usize, Slot) + Send + 'static,
{
    let scheduled = (rate * duration.as_secs_f64()).ceil().max(1.0) as usize;
    let record = Arc::new(Record {
        latency_ns: (0..scheduled).map(|_| AtomicU64::new(u64::MAX)).collect(),
        start_ns: (0..scheduled).map(|_| AtomicU64::new(u64::MAX)).collect(),
        errors: AtomicUsize::new(0),
        dropped: AtomicUsize::new(0),
        outstanding: AtomicUsize::new(scheduled),
        give_up: AtomicBool::new(false),
        last_done: std::sync::Mutex::new(None),
        drained: tokio::sync::Notify::new(),
    });
    let interval = 1.0 / rate;
    let start = Instant::now() + Duration::from_millis(2);
    let pacer = {
        let record = record.clone();
        tokio::task::spawn_blocking(move || {
            // Ask the kernel to wake our sleeps on time (the default slack is 50 µs).
            // SAFETY: prctl with PR_SET_TIMERSLACK takes one integer argument.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
            let cpu = thread_cpu();
            let mut late = Vec::with_capacity(scheduled);
            for index in 0..scheduled {
                let intended = start + Duration::from_secs_f64(index as f64 * interval);
                wait_until(intended);
                late.push(intended.elapsed().as_micros() as u64);
                dispatch(
                    index,
                    Slot {
                        record: record.clone(),
                        index,
                        intended,
                    },
                );
            }
            (late, thread_cpu().saturating_sub(cpu))
        })
    };
    let (mut send_late_us, pacer_cpu) = pacer.await.unwrap_or_default();
    let paced = start.elapsed();
    // Calls still running or queued: as long again as the run, then give up on the queue.
    let wait = |limit: Duration| {
        let record = record.clone();
        async move {
            let _ = tokio::time::timeout(limit, async {
                while record.outstanding.load(Ordering::Acquire) > 0 {
                    let notified = record.drained.notified();
                    if record.outstanding.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
                }
            })
            .await;
        }
    };
    wait(duration).await;
    record.give_up.store(true, Ordering::Relaxed);
    wait(Duration::from_secs(30)).await;
    let mut latencies_us: Vec<u64> = record
        .latency_ns
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .filter(|l| *l != u64::MAX)
        .map(|l| l / 1000)
        .collect();
    latencies_us.sort_unstable();
    let mut start_late_us: Vec<u64> = record
        .start_ns
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .filter(|l| *l != u64::MAX)
        .map(|l| l / 1000)
        .collect();
    start_late_us.sort_unstable();
    send_late_us.sort_unstable();
    // The schedule spans `scheduled` intervals, whatever the pacer's own timing was.
    let span = Duration::from_secs_f64(scheduled as f64 * interval).max(paced);
    let last = record.last_done.lock().ok().and_then(|l| *l);
    let elapsed = last.map_or(span, |l| l.saturating_duration_since(start).max(span));
    Stats {
        name: name.to_owned(),
        calls: latencies_us.len(),
        errors: record.errors.load(Ordering::Relaxed),
        elapsed,
        latencies_us,
        pacing: Some(Pacing {
            rate,
            scheduled,
            send_late_us,
            start_late_us,
            pacer_cpu: pacer_cpu.as_secs_f64() / span.as_secs_f64(),
            dropped: record.dropped.load(Ordering::Relaxed),
        }),
    }
}

/// Runs async `op` at a fixed `rate` per second for `duration` (open loop): each call is
/// its own tokio task, spawned by the pacer (see [`open_loop`]) at its intended send time.
pub async fn drive_at_rate<F, Fut>(name: &str, rate: f64, duration: Duration, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let op = Arc::new(op);
    let runtime = tokio::runtime::Handle::current();
    open_loop(name, rate, duration, move |i, slot| {
        let op = op.clone();
        runtime.spawn(async move {
            if slot.begin() {
                let ok = op(i).await;
                slot.finish(ok);
            }
        });
    })
    .await
}

/// Runs blocking `op` at a fixed `rate` per second for `duration` (open loop): the pacer
/// (see [`open_loop`]) queues each call at its intended time to a pool of `threads` OS
/// threads started beforehand, so at most `threads` calls run at once and the rest wait in
/// the queue (the wait counts in their latency).
pub async fn drive_blocking_at_rate<F>(
    name: &str,
    rate: f64,
    threads: usize,
    duration: Duration,
    op: F,
) -> Stats
where
    F: Fn(usize) -> bool + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let (queue, jobs) = std::sync::mpsc::channel::<(usize, Slot)>();
    let jobs = Arc::new(std::sync::Mutex::new(jobs));
    let pool: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (op, jobs) = (op.clone(), jobs.clone());
            std::thread::spawn(move || loop {
                let job = jobs.lock().ok().and_then(|j| j.recv().ok());
                let Some((i, slot)) = job else { break };
                if slot.begin() {
                    let ok = op(i);
                    slot.finish(ok);
                }
            })
        })
        .collect();
    // The queue closes when the pacer is done with `dispatch`; the threads then finish.
    let stats = open_loop(name, rate, duration, move |i, slot| {
        let _ = queue.send((i, slot));
    })
    .await;
    let _ = tokio::task::spawn_blocking(move || {
        for thread in pool {
            let _ = thread.join();
        }
    })
    .await;
    stats
}

/// This process's resident memory, in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

const FIRST: &[&str] = &[
    "Ann", "Ivan", "Maria", "Tom", "Yuki", "Olivia", "Sam", "Erin", "Dev", "Lee", "Nora", "Omar",
];
const LAST: &[&str] = &[
    "Lee", "Petrov", "Garcia", "Baker", "Tanaka", "Chen", "Ortiz", "Park", "Patel", "Kim", "Novak",
    "Haddad", "Smith", "Jones", "Müller", "Rossi",
];
const NAMES: &[&str] = &[
    "Work mailbox",
    "Backup mailbox",
    "Sales",
    "Support",
    "Billing",
    "Personal",
];

/// Seeds the registry issue's scale into `app`'s database for organisation `org_id`: an
/// 8-level department tree (fan-out 3, 3,280 departments) written straight into access's
/// tables, `user_count` users (one of them `boss_id`, head of the first level-2 department,
/// ~1/9 of the tree) and `mailbox_count` mailboxes, two per user, in the registry's tables.
/// Access replicas and registries started before do not see it: start fresh ones. Returns a
/// pool on the registry's schema.
pub async fn seed_mailboxes(
    app: &crate::TestApp,
    org_id: uuid::Uuid,
    boss_id: uuid::Uuid,
    user_count: usize,
    mailbox_count: usize,
) -> anyhow::Result<sqlx::PgPool> {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use uuid::Uuid;

    // The tree, written straight into access's tables (as identity's events would have), and
    // the mailboxes into the registry's (as connects and sync would have), only faster.
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(9);
    let (fanout, depth) = (3usize, 8u32);
    let mut levels: Vec<Vec<Uuid>> = vec![vec![Uuid::new_v4()]];
    for _ in 1..depth {
        let next: Vec<Uuid> = levels
            .last()
            .map(|l| {
                l.iter()
                    .flat_map(|_| (0..fanout).map(|_| Uuid::new_v4()))
                    .collect()
            })
            .unwrap_or_default();
        levels.push(next);
    }
    let departments: Vec<Uuid> = levels.iter().flatten().copied().collect();
    let mut users: Vec<Uuid> = (0..user_count).map(|_| Uuid::new_v4()).collect();
    // The boss heads the first level-2 department: ~1/9 of the tree.
    let boss_at = departments
        .iter()
        .position(|d| *d == levels[2][0])
        .unwrap_or(0);
    users[boss_at] = boss_id;
    let mut rows: Vec<(&str, Uuid, Uuid)> = Vec::new();
    for (level, depts) in levels.iter().enumerate().skip(1) {
        for (i, d) in depts.iter().enumerate() {
            rows.push(("parent", *d, levels[level - 1][i / fanout]));
        }
    }
    for (i, d) in departments.iter().enumerate() {
        rows.push(("head", *d, users[i]));
    }
    for (i, u) in users.iter().enumerate() {
        rows.push(("member", *u, departments[i % departments.len()]));
    }
    let access = mailroom_platform::db::connect(
        &secrecy::SecretString::from(app.database_url().to_owned()),
        "access",
        4,
    )
    .await?;
    for chunk in users.chunks(20_000) {
        sqlx::query("INSERT INTO users (user_id, org_id, active) SELECT u, $1, true FROM unnest($2::uuid[]) AS u ON CONFLICT DO NOTHING")
            .bind(org_id)
            .bind(chunk)
            .execute(&access)
            .await?;
    }
    for chunk in rows.chunks(20_000) {
        let kinds: Vec<&str> = chunk.iter().map(|r| r.0).collect();
        let objects: Vec<Uuid> = chunk.iter().map(|r| r.1).collect();
        let subjects: Vec<Uuid> = chunk.iter().map(|r| r.2).collect();
        sqlx::query("INSERT INTO relationships (org_id, kind, object_id, subject_id) SELECT $1, k, o, s FROM unnest($2::text[], $3::uuid[], $4::uuid[]) AS t(k, o, s) ON CONFLICT DO NOTHING")
            .bind(org_id)
            .bind(&kinds)
            .bind(&objects)
            .bind(&subjects)
            .execute(&access)
            .await?;
    }

    let registry = mailroom_platform::db::connect(
        &secrecy::SecretString::from(app.database_url().to_owned()),
        "mailboxes",
        4,
    )
    .await?;
    let firsts: Vec<String> = users
        .iter()
        .map(|_| FIRST[rng.gen_range(0..FIRST.len())].to_owned())
        .collect();
    let lasts: Vec<String> = users
        .iter()
        .map(|_| LAST[rng.gen_range(0..LAST.len())].to_owned())
        .collect();
    for (start, chunk) in users
        .chunks(20_000)
        .enumerate()
        .map(|(i, c)| (i * 20_000, c))
    {
        sqlx::query("INSERT INTO users (user_id, org_id, first_name, last_name, active) SELECT u, $1, f, l, true FROM unnest($2::uuid[], $3::text[], $4::text[]) AS t(u, f, l) ON CONFLICT DO NOTHING")
            .bind(org_id)
            .bind(chunk)
            .bind(&firsts[start..start + chunk.len()])
            .bind(&lasts[start..start + chunk.len()])
            .execute(&registry)
            .await?;
    }
    let total = mailbox_count;
    let mut batch = Vec::new();
    for i in 0..total {
        let owner = (i / 2) % users.len();
        batch.push(i);
        if batch.len() == 10_000 || i + 1 == total {
            let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
            let owners: Vec<Uuid> = batch.iter().map(|i| users[(i / 2) % users.len()]).collect();
            let emails: Vec<String> = batch
                .iter()
                .map(|i| {
                    format!(
                        "{}.{}.{i}@acme.example",
                        firsts[(i / 2) % users.len()].to_lowercase(),
                        lasts[(i / 2) % users.len()].to_lowercase()
                    )
                })
                .collect();
            let names: Vec<String> = batch
                .iter()
                .map(|_| NAMES[rng.gen_range(0..NAMES.len())].to_owned())
                .collect();
            let senders: Vec<String> = batch
                .iter()
                .map(|i| {
                    format!(
                        "{} {}",
                        firsts[(i / 2) % users.len()],
                        lasts[(i / 2) % users.len()]
                    )
                })
                .collect();
            let first_names: Vec<String> = batch
                .iter()
                .map(|i| firsts[(i / 2) % users.len()].clone())
                .collect();
            let last_names: Vec<String> = batch
                .iter()
                .map(|i| lasts[(i / 2) % users.len()].clone())
                .collect();
            let crm: Vec<bool> = batch.iter().map(|_| rng.gen_bool(0.3)).collect();
            let disk: Vec<i64> = batch
                .iter()
                .map(|_| rng.gen_range(0..2_000i64) * 1_048_576)
                .collect();
            let unread: Vec<i64> = batch.iter().map(|_| rng.gen_range(0..500i64)).collect();
            let synced: Vec<Option<chrono::DateTime<chrono::Utc>>> = batch
                .iter()
                .map(|_| {
                    if rng.gen_bool(0.05) {
                        None
                    } else {
                        Some(
                            chrono::Utc::now()
                                - chrono::Duration::minutes(rng.gen_range(0..60 * 24 * 30)),
                        )
                    }
                })
                .collect();
            sqlx::query(
                "INSERT INTO mailboxes (id, org_id, owner_user_id, email, name, sender_name, \
                    imap_host, imap_port, imap_security, imap_username, smtp_host, smtp_port, smtp_security, smtp_username, \
                    password_sealed, password_key, in_crm, disk_bytes, unread_count, message_count, last_sync_time, \
                    sync_state, owner_first_name, owner_last_name) \
                 SELECT id, $1, o, e, n, s, 'imap.acme.example', 993, 'tls', e, 'smtp.acme.example', 465, 'tls', e, \
                    '\\x00'::bytea, 'bench', c, d, u, u * 10, COALESCE(t, '-infinity'), 'ok', fname, lname \
                 FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::bigint[], $9::bigint[], $10::timestamptz[], $11::text[], $12::text[]) \
                    AS x(id, o, e, n, s, c, d, u, t, fname, lname)",
            )
            .bind(org_id)
            .bind(&ids)
            .bind(&owners)
            .bind(&emails)
            .bind(&names)
            .bind(&senders)
            .bind(&crm)
            .bind(&disk)
            .bind(&unread)
            .bind(&synced)
            .bind(&first_names)
            .bind(&last_names)
            .execute(&registry)
            .await?;
            batch.clear();
        }
        let _ = owner;
    }
    sqlx::query("ANALYZE mailboxes").execute(&registry).await?;
    println!(
        "seeded {} users, {} departments in {depth} levels, {} mailboxes in {:.1} s",
        users.len(),
        departments.len(),
        total,
        started.elapsed().as_secs_f64()
    );
    Ok(registry)
}
