//! Soak: what a long-running `mailroom serve` process holds in memory under steady test-like
//! traffic (issue 26, item 7).
//!
//! Starts the five gRPC services in one `mailroom serve` process (as `mailroom dev` hosts
//! them; metrics on) over a fresh database, then for `--minutes` has `--workers` callers each
//! repeat what the end-to-end tests do: create an organisation (its admin signs in), create
//! and sign in people, ask access control, invite, list. Every `--sample-secs` it prints the
//! process's resident memory (`VmRSS`, anonymous part), threads, and how many metric series
//! it exports; after the load, again after `--idle-secs` without calls and, with `--trim`,
//! after glibc's `malloc_trim(0)` run in the process through gdb: memory that `malloc_trim`
//! gives back was free but kept by the allocator, not held by Mailroom.
//!
//! `--env KEY=VALUE` (repeatable) sets a variable in the served process, e.g.
//! `--env MALLOC_ARENA_MAX=2` or `--env GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072`,
//! so that allocator settings can be compared run against run.
//!
//! Run against the local stack (`source .ci/stack.sh && stack_up`), with the binary to soak:
//! `cargo build -p mailroom && MAILROOM_BIN=target/debug/mailroom cargo run -p mailroom-tests
//! --bin bench-soak -- --minutes 10` (without `MAILROOM_BIN`, the `mailroom` beside this
//! binary).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mailroom_proto::identity::v1 as pb;
use mailroom_proto::invitations::v1 as ipb;
use mailroom_tests::authed;
use mailroom_tests::chaos::cluster::{Cluster, Deps, SERVICES};
use mailroom_tests::chaos::free_port;

#[derive(Parser)]
struct Args {
    /// How long the load runs.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Callers running at once.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Seconds between samples.
    #[arg(long, default_value_t = 15)]
    sample_secs: u64,
    /// Seconds without calls after the load before the last samples.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Run `malloc_trim(0)` in the process (with gdb) after the idle period and sample again.
    #[arg(long)]
    trim: bool,
    /// `KEY=VALUE` set in the served process (repeatable).
    #[arg(long = "env")]
    env: Vec<String>,
}

/// One reading of the served process.
struct Sample {
    rss_kib: u64,
    anon_kib: u64,
    threads: u64,
}

fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(Sample {
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        threads: field("Threads:"),
    })
}

/// Series the process exports (non-comment lines of one metrics port).
async fn series(port: u16) -> usize {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let scraped =
        tokio::time::timeout(Duration::from_secs(5), mailroom_tests::scrape_metrics(addr))
            .await
            .unwrap_or_default();
    scraped
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// How long a worker uses one operator token (they are issued for 15 minutes).
const OPERATOR_TOKEN_FOR: Duration = Duration::from_secs(5 * 60);

#[derive(Default)]
struct Counts {
    rounds: AtomicUsize,
    calls: AtomicUsize,
    errors: AtomicUsize,
    /// CreateInvitations calls retried because access had not heard of the admin yet.
    not_yet_known: AtomicUsize,
    /// Failed calls by `call: code`.
    failures: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
}

impl Counts {
    fn count<T>(&self, call: &str, result: &Result<T, tonic::Status>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Err(status) = result {
            self.errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut failures) = self.failures.lock() {
                *failures
                    .entry(format!("{call}: {:?}", status.code()))
                    .or_default() += 1;
            }
        }
    }
}

/// One round of test-like traffic: a new organisation and what its tests would do.
async fn round(cluster: &Cluster, operator_access: &str, counts: &Counts) {
    let org = cluster.create_org().await;
    counts.count("CreateOrganization", &Ok::<(), tonic::Status>(()));
    let mut people = Vec::new();
    for n in 0..3 {
        let local = format!("p{n}");
        let created = cluster.create_user(&org, &local).await;
        counts.count("CreateUser", &created);
        if let Ok(user) = created {
            people.push(user.id);
        }
        counts.count("Login", &cluster.login(&org.address(&local)).await);
    }
    let mailbox = uuid::Uuid::new_v4().to_string();
    for person in &people {
        for permission in ["mailbox.view", "mailbox.read_mail", "mailbox.modify"] {
            let checked = cluster
                .check(operator_access, person, permission, &mailbox)
                .await;
            counts.count("Check", &checked);
        }
    }
    // An admin made a moment ago may not be known to access control yet: invitations says
    // UNAVAILABLE, "retry shortly", and a client does so (for up to 10 s; counted apart).
    // Any other UNAVAILABLE is an error the soak reports.
    let deadline = Instant::now() + Duration::from_secs(10);
    let invited = loop {
        let invited = cluster
            .invitations()
            .create_invitations(authed(
                &org.admin_token,
                ipb::CreateInvitationsRequest {
                    emails: format!("{} {}", org.address("new1"), org.address("new2")),
                    ..Default::default()
                },
            ))
            .await;
        match &invited {
            Err(s)
                if s.code() == tonic::Code::Unavailable
                    && s.message().contains("retry shortly")
                    && Instant::now() < deadline =>
            {
                counts.not_yet_known.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => break invited,
        }
    };
    counts.count("CreateInvitations", &invited);
    let listed = cluster
        .identity()
        .list_users(authed(&org.admin_token, pb::ListUsersRequest::default()))
        .await;
    counts.count("ListUsers", &listed);
    counts.rounds.fetch_add(1, Ordering::Relaxed);
}

fn row(started: Instant, pid: u32, series: usize, counts: &Counts, what: &str) -> Option<u64> {
    let s = sample(pid)?;
    println!(
        "{:>7.0} s  RSS {:>8.1} MiB  anon {:>8.1} MiB  threads {:>3}  series {:>5}  rounds {:>6}  calls {:>7}  errors {:>4}  {what}",
        started.elapsed().as_secs_f64(),
        mib(s.rss_kib),
        mib(s.anon_kib),
        s.threads,
        series,
        counts.rounds.load(Ordering::Relaxed),
        counts.calls.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
    );
    Some(s.rss_kib)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::env::var_os("MAILROOM_BIN").is_none() {
        let beside = std::env::current_exe()?.with_file_name("mailroom");
        std::env::set_var("MAILROOM_BIN", beside);
    }
    let dir = std::env::temp_dir().join(format!("mailroom-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut cluster = Cluster::new(dir.clone(), Deps::default()).await;
    let metrics_port = free_port();
    cluster.tune("MAILROOM_METRICS_ENABLED", "true");
    cluster.tune("MAILROOM_LOG_LEVEL", "warn");
    for (i, service) in SERVICES.iter().enumerate() {
        let port = if i == 0 { metrics_port } else { free_port() };
        cluster.tune(
            &format!("MAILROOM_{}__METRICS_PORT", service.to_ascii_uppercase()),
            port,
        );
    }
    for pair in &args.env {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--env {pair}: KEY=VALUE"))?;
        cluster.tune(key, value);
    }
    let index = cluster.spawn("all", &SERVICES, None);
    cluster.ready(index).await;
    let pid = cluster
        .proc(index)
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the process has no pid"))?;
    println!(
        "mailroom serve {} (pid {pid}), env {:?}; log {}",
        SERVICES.join(","),
        args.env,
        dir.join("all.log").display()
    );
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let fresh = row(started, pid, series(metrics_port).await, &counts, "fresh")
        .ok_or_else(|| anyhow::anyhow!("the process is gone"))?;

    let cluster = Arc::new(cluster);
    let until = started + Duration::from_secs_f64(args.minutes * 60.0);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.workers {
        let (cluster, counts) = (cluster.clone(), counts.clone());
        workers.spawn(async move {
            // An access token lives 15 minutes: each worker takes a new one well before.
            let mut operator_access = (cluster.operator_token("access").await, Instant::now());
            while Instant::now() < until {
                if operator_access.1.elapsed() > OPERATOR_TOKEN_FOR {
                    operator_access = (cluster.operator_token("access").await, Instant::now());
                }
                round(&cluster, &operator_access.0, &counts).await;
            }
        });
    }
    let mut peak = fresh;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(args.sample_secs)).await;
        let rss = row(started, pid, series(metrics_port).await, &counts, "load")
            .ok_or_else(|| anyhow::anyhow!("the process is gone"))?;
        peak = peak.max(rss);
    }
    while let Some(joined) = workers.join_next().await {
        if let Err(err) = joined {
            println!("a worker failed: {err}");
        }
    }
    let loaded = row(
        started,
        pid,
        series(metrics_port).await,
        &counts,
        "load over",
    )
    .unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle = row(started, pid, series(metrics_port).await, &counts, "idle").unwrap_or(0);
    let mut trimmed = None;
    if args.trim {
        let out = std::process::Command::new("gdb")
            .args([
                "-p",
                &pid.to_string(),
                "-batch",
                "-ex",
                "call (int) malloc_trim(0)",
            ])
            .output();
        match out {
            Ok(out) if out.status.success() => {
                trimmed = row(
                    started,
                    pid,
                    series(metrics_port).await,
                    &counts,
                    "after malloc_trim(0)",
                );
            }
            Ok(out) => println!("gdb failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(err) => println!("gdb did not run: {err}"),
        }
    }
    println!(
        "summary: fresh {:.1} MiB, peak {:.1} MiB, after load {:.1} MiB ({:.1}x fresh), idle {:.1} MiB{}; {} rounds, {} calls, {} errors",
        mib(fresh),
        mib(peak),
        mib(loaded),
        loaded as f64 / fresh.max(1) as f64,
        mib(idle),
        trimmed
            .map(|t| format!(", after malloc_trim {:.1} MiB ({:.1}x fresh)", mib(t), t as f64 / fresh.max(1) as f64))
            .unwrap_or_default(),
        counts.rounds.load(Ordering::Relaxed),
        counts.calls.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
    );
    println!(
        "CreateInvitations retried because access had not heard of a just-made admin yet: {}",
        counts.not_yet_known.load(Ordering::Relaxed)
    );
    if let Ok(failures) = counts.failures.lock() {
        for (what, n) in failures.iter() {
            println!("failed: {what} x{n}");
        }
    }
    if let Ok(mut cluster) = Arc::try_unwrap(cluster) {
        cluster.proc(index).terminate(Duration::from_secs(10));
    }
    Ok(())
}
