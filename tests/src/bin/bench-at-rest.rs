//! The cost of Mailroom at rest, and what it buys: `mailroom serve all` (the real binary,
//! `MAILROOM_BIN`, which `.ci/bench at-rest` builds) over a broker of its own (a private tansu,
//! so nothing else's fetches count) and a fresh database, left idle — no calls, no mail — for
//! `--seconds`; the CPU of the process and of the broker is read from `/proc/<pid>/stat`
//! (utime + stime over the window, in % of one core). Then a light load of people's changes
//! through identity's outbox, and the outbox → consumer latency of each event, from its
//! `occurred_at` (stamped in the transaction that wrote it) to the moment a consumer built as
//! Mailroom builds its own ([`KafkaSettings::consumer`]) receives it.
//!
//! Each `--waits` entry is one round with the consumers' `fetch.wait.max.ms` set to it
//! (`MAILROOM_KAFKA_PROPERTY_FETCH_WAIT_MAX_MS`, for the process and the latency consumer
//! alike); `default` is Mailroom's own setting. The default compares the old 10 ms with it,
//! in one run.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mailroom_platform::kafka::{is_secret, KafkaProperties, KafkaSettings, Topic, Topics};
use mailroom_proto::events::v1::envelope::Payload;
use mailroom_proto::events::v1::Envelope;
use mailroom_tests::chaos::cluster::{Cluster, Deps, SERVICES};
use mailroom_tests::chaos::infra::PrivateBroker;
use mailroom_tests::chaos::{free_port, mailroom_bin, test_dir, Proc};
use mailroom_tests::{authed, identity_pb as pb};
use prost::Message as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::Message as _;

#[derive(Parser)]
struct Args {
    /// Seconds the process is measured at rest, per round.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seconds left to the process after it is ready and before the measure (groups joined,
    /// topics made, the revocations read).
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// The consumers' fetch.wait.max.ms of each round, in ms; `default`: Mailroom's own.
    #[arg(long, value_delimiter = ',', default_value = "10,default")]
    waits: Vec<String>,
    /// People's changes driven for the latency figures, per round.
    #[arg(long, default_value_t = 300)]
    events: usize,
    /// Their rate, per second.
    #[arg(long, default_value_t = 20)]
    rate: u64,
    /// A librdkafka property `name=value` for every round, set for the process and the
    /// latency consumer alike (repeatable), e.g. `--property enable.metrics.push=true`.
    #[arg(long = "property", value_parser = property)]
    properties: Vec<(String, String)>,
}

/// `name=value`, its name one the process can be given by environment (no `_`: the variable's
/// `_` stands for `.`).
fn property(arg: &str) -> Result<(String, String), String> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?} is not name=value"))?;
    if name.is_empty() || name.contains('_') {
        return Err(format!(
            "{name:?}: a property named with `_` cannot reach the process by environment"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// Settings the chaos harness tunes for its faults that would make the process busier (or
/// idler) at rest than a deployment: they are left at Mailroom's defaults here (8 partitions
/// a topic included).
const CHAOS_TUNING: &[&str] = &[
    "MAILROOM_KAFKA_PARTITIONS",
    "MAILROOM_SYNC__TICK_MS",
    "MAILROOM_SYNC__LEASE_TTL_MS",
    "MAILROOM_SYNC__RETRY_BASE_SECS",
    "MAILROOM_SYNC__RETRY_CAP_SECS",
    "MAILROOM_INVITATIONS__DELIVERY_RETRY_MS",
    "MAILROOM_INVITATIONS__SWEEP_INTERVAL_MS",
];

/// One round's figures.
struct Round {
    wait: String,
    broker_alone: f64,
    serve: f64,
    broker: f64,
    rss_mib: f64,
    latencies_ms: Vec<f64>,
    sent: usize,
    /// `serve all`'s CPU at rest by kind of thread: name, threads, % of a core.
    threads: Vec<(String, usize, f64)>,
}

/// CPU time (user + system) of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// CPU time (user + system) so far of a `/proc/…/stat` file's process or thread, in ticks.
fn stat_ticks(path: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(path)?;
    // After the command's name (in parentheses, which may hold spaces): state is field 3,
    // utime field 14 and stime field 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("{path} without a command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(n - 3)
            .ok_or_else(|| anyhow::anyhow!("{path} has no field {n}"))?
            .parse()?)
    };
    Ok(field(14)? + field(15)?)
}

/// CPU ticks so far of each thread of `pid`, by thread id, with the thread's name (its
/// digits dropped, so `rdk:broker12` and `rdk:broker3` count as one kind).
fn thread_ticks(pid: u32) -> std::collections::HashMap<String, (String, u64)> {
    let mut threads = std::collections::HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm"))
            .unwrap_or_default()
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_owned();
        if let Ok(ticks) = stat_ticks(&dir.join("stat").to_string_lossy()) {
            threads.insert(
                task.file_name().to_string_lossy().into_owned(),
                (name, ticks),
            );
        }
    }
    threads
}

/// Where `pid`'s CPU went between two [`thread_ticks`]: each kind of thread's share of a
/// core over `seconds`, and how many such threads there are, busiest first.
fn thread_shares(
    before: &std::collections::HashMap<String, (String, u64)>,
    after: &std::collections::HashMap<String, (String, u64)>,
    seconds: f64,
) -> Vec<(String, usize, f64)> {
    let mut kinds: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
    for (tid, (name, ticks)) in after {
        let spent = ticks.saturating_sub(before.get(tid).map_or(0, |(_, t)| *t));
        let kind = kinds.entry(name.clone()).or_default();
        kind.0 += 1;
        kind.1 += spent;
    }
    let hz = ticks_per_second();
    let mut shares: Vec<_> = kinds
        .into_iter()
        .map(|(name, (n, ticks))| (name, n, ticks as f64 / hz / seconds * 100.0))
        .collect();
    shares.sort_by(|a, b| b.2.total_cmp(&a.2));
    shares
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system; no memory is shared.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The share of one core each of `pids` used over `window`, in %.
async fn cpu_shares(pids: &[u32], window: Duration) -> anyhow::Result<Vec<f64>> {
    let before = pids
        .iter()
        .map(|pid| cpu_ticks(*pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = pids
        .iter()
        .map(|pid| cpu_ticks(*pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let hz = ticks_per_second();
    Ok(before
        .iter()
        .zip(after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / hz / elapsed * 100.0)
        .collect())
}

/// The resident memory of `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Waits until every gRPC port in `ports` answers health SERVING, or fails naming the log.
async fn ready(proc: &mut Proc, ports: &[u16]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for port in ports {
        loop {
            let channel =
                tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))?
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(2))
                    .connect_lazy();
            let serving = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok_and(|r| r.into_inner().status == 1);
            if serving {
                break;
            }
            if let Some(status) = proc.exit_status() {
                anyhow::bail!(
                    "mailroom serve all exited ({status}):\n{}",
                    proc.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "mailroom serve all did not serve on {port} within 120 s:\n{}",
                    proc.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

async fn round(wait: &str, args: &Args) -> anyhow::Result<Round> {
    let dir = test_dir(&format!("at-rest-{wait}"));
    let broker = PrivateBroker::start(&dir);
    let broker_pid = broker
        .proc
        .pid()
        .ok_or_else(|| anyhow::anyhow!("tansu has no pid"))?;
    let broker_alone = cpu_shares(&[broker_pid], Duration::from_secs(3)).await?[0];

    let mut cluster = Cluster::new(
        dir.clone(),
        Deps {
            brokers: Some(broker.brokers()),
            ..Deps::default()
        },
    )
    .await;
    let mut properties = Vec::new();
    if wait != "default" {
        cluster.tune("MAILROOM_KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", wait);
        properties.push(("fetch.wait.max.ms".to_owned(), wait.to_owned()));
    }
    for (name, value) in &args.properties {
        let variable = format!(
            "MAILROOM_KAFKA_PROPERTY_{}",
            name.replace('.', "_").to_ascii_uppercase()
        );
        cluster.tune(&variable, value);
        properties.push((name.clone(), value.clone()));
    }
    let ports: Vec<u16> = SERVICES.iter().map(|s| cluster.ports[s]).collect();
    let mut env: Vec<(String, String)> = cluster
        .env(&SERVICES, &ports)
        .into_iter()
        .filter(|(key, _)| !CHAOS_TUNING.contains(&key.as_str()))
        .collect();
    // The web console, part of `serve all`, on a port of its own, calling this process.
    env.push(("MAILROOM_WEB__PORT".into(), free_port().to_string()));
    for (service, port) in SERVICES.iter().zip(&ports) {
        env.push((
            format!("MAILROOM_WEB__{}_ENDPOINT", service.to_ascii_uppercase()),
            format!("http://127.0.0.1:{port}"),
        ));
    }
    let mut serve = Proc::spawn(
        "serve-all",
        &mailroom_bin(),
        &["serve", "all"],
        env,
        dir.join("serve-all.log"),
    );
    ready(&mut serve, &ports).await?;
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let serve_pid = serve
        .pid()
        .ok_or_else(|| anyhow::anyhow!("mailroom has no pid"))?;
    let threads_before = thread_ticks(serve_pid);
    let shares = cpu_shares(&[serve_pid, broker_pid], Duration::from_secs(args.seconds)).await?;
    let threads = thread_shares(
        &threads_before,
        &thread_ticks(serve_pid),
        args.seconds as f64,
    );
    let rss = rss_mib(serve_pid);

    // The load: people's changes, each an event on identity's topic.
    let org = cluster.create_org().await;
    let mut people = Vec::new();
    for n in 0..4 {
        let person = cluster
            .create_user(&org, &format!("rest{n}"))
            .await
            .map_err(|s| anyhow::anyhow!("create a person: {s:?}"))?;
        people.push(person.id);
    }
    let kafka = KafkaSettings {
        brokers: broker.brokers(),
        idempotence: true,
        transactions: true,
        partitions: 8,
        replication: 1,
        topics: Topics::new(cluster.prefix.clone()),
        properties: KafkaProperties::new(properties)?,
    };
    let consumer = kafka.consumer(&format!("at-rest-{}", uuid::Uuid::new_v4().simple()))?;
    consumer.subscribe(&[kafka.topics.name(Topic::IdentityEvents).as_str()])?;
    // Caught up (every person's creation seen) before the load starts.
    let mut created = 0;
    let warm = Instant::now();
    while created < people.len() {
        anyhow::ensure!(
            warm.elapsed() < Duration::from_secs(60),
            "the consumer saw {created} of {} UserCreated",
            people.len()
        );
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            let event = m.payload().and_then(|p| Envelope::decode(p).ok());
            if let Some(Payload::UserCreated(_)) = event.and_then(|e| e.payload) {
                created += 1;
            }
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let driver = {
        let (client, token, done, acked) = (
            cluster.identity(),
            org.admin_token.clone(),
            done.clone(),
            acked.clone(),
        );
        let (events, rate) = (args.events, args.rate.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            for n in 0..events {
                tick.tick().await;
                let changed = client
                    .clone()
                    .update_user(authed(
                        &token,
                        pb::UpdateUserRequest {
                            user: Some(pb::User {
                                id: people[n % people.len()].clone(),
                                position: format!("q{n}"),
                                ..Default::default()
                            }),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["position".into()],
                            }),
                        },
                    ))
                    .await;
                if changed.is_ok() {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    let mut latencies = Vec::new();
    let mut quiet_since: Option<Instant> = None;
    loop {
        let finished = done.load(Ordering::Relaxed);
        if finished && latencies.len() >= acked.load(Ordering::Relaxed) {
            break;
        }
        if finished && quiet_since.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
            break;
        }
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        else {
            if finished {
                quiet_since.get_or_insert_with(Instant::now);
            }
            continue;
        };
        let now = chrono::Utc::now();
        let Some(envelope) = m.payload().and_then(|p| Envelope::decode(p).ok()) else {
            continue;
        };
        if let (Some(Payload::UserUpdated(_)), Some(at)) =
            (&envelope.payload, &envelope.occurred_at)
        {
            let occurred =
                chrono::DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32).unwrap_or(now);
            latencies.push((now - occurred).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            quiet_since = None;
        }
    }
    driver.await?;
    drop(consumer);
    serve.terminate(Duration::from_secs(10));
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(Round {
        wait: wait.to_owned(),
        broker_alone,
        serve: shares[0],
        broker: shares[1],
        rss_mib: rss,
        latencies_ms: latencies,
        sent: acked.load(Ordering::Relaxed),
        threads,
    })
}

fn print(round: &Round) {
    let l = &round.latencies_ms;
    println!(
        "{:<12} {:>9.2} {:>9.2} {:>9.2} {:>8.1} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
        round.wait,
        round.serve,
        round.broker,
        round.broker_alone,
        round.rss_mib,
        format!("{}/{}", l.len(), round.sent),
        percentile(l, 0.5),
        percentile(l, 0.9),
        percentile(l, 0.99),
        l.last().copied().unwrap_or(f64::NAN),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = mailroom_bin();
    anyhow::ensure!(
        Path::new(&bin).is_file(),
        "{} is missing: run through `.ci/bench at-rest`, which builds it",
        bin.display()
    );
    println!(
        "mailroom serve all ({}) at rest for {} s after {} s settling, then {} people's changes at {}/s through identity's outbox; a private tansu per round",
        bin.display(),
        args.seconds,
        args.settle,
        args.events,
        args.rate
    );
    println!("CPU in % of one core; latency outbox → consumer in ms (occurred_at → received)");
    let header = format!(
        "{:<12} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "fetch wait",
        "serve %",
        "broker %",
        "alone %",
        "RSS MiB",
        "events",
        "p50",
        "p90",
        "p99",
        "max"
    );
    if !args.properties.is_empty() {
        let shown: Vec<String> = args
            .properties
            .iter()
            .map(|(name, value)| {
                let value = if is_secret(name) { "…" } else { value };
                format!("{name}={value}")
            })
            .collect();
        println!("librdkafka properties in every round: {}", shown.join(", "));
    }
    println!("{header}");
    let mut rounds = Vec::new();
    for wait in &args.waits {
        let r = round(wait, &args).await?;
        print(&r);
        rounds.push(r);
    }
    println!("\nsummary (`alone`: the broker with no client, before the process started)");
    println!("{header}");
    for r in &rounds {
        print(r);
    }
    println!("\nserve all at rest by kind of thread (% of one core, threads of the kind)");
    for r in &rounds {
        let kinds: Vec<String> = r
            .threads
            .iter()
            .filter(|(_, _, share)| *share >= 0.005)
            .map(|(name, n, share)| format!("{name} {share:.2} ({n})"))
            .collect();
        println!("{:<12} {}", r.wait, kinds.join(", "));
    }
    if let (Some(first), Some(last)) = (rounds.first(), rounds.last()) {
        if rounds.len() > 1 {
            println!(
                "{} vs {}: serve all CPU ×{:.3}, broker CPU ×{:.3}, p99 {:.1} → {:.1} ms (goal: serve all < 1 %, broker < 5 %, p99 ≤ 100 ms)",
                last.wait,
                first.wait,
                last.serve / first.serve,
                last.broker / first.broker,
                percentile(&first.latencies_ms, 0.99),
                percentile(&last.latencies_ms, 0.99),
            );
        }
    }
    Ok(())
}
