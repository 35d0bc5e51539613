//! Outbox → consumer latency under load: people are changed at a steady rate from many
//! callers; a consumer of identity's topic notes, for each event, the time from its
//! `occurred_at` (stamped in the transaction that wrote it) to the moment it sees it. Prints
//! p50/p90/p99/max over a few thousand events (goal: p99 ≤ 100 ms) and asserts only a
//! generous bound, as a loaded CI machine is not a benchmark.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailroom_proto::events::v1::envelope::Payload;
use mailroom_proto::events::v1::Envelope;
use mailroom_tests::chaos::cluster::{Cluster, Deps};
use mailroom_tests::chaos::{report, test_dir, topic};
use mailroom_tests::{authed, identity_pb as pb};
use prost::Message as _;
use rdkafka::Message as _;

const TEST: &str = "outbox_latency";
const CALLERS: usize = 8;
const RATE_PER_CALLER: u64 = 20;
const SECONDS: u64 = 25;
/// What the test fails beyond (the goal is p99 ≤ 100 ms; a loaded 2-core CI machine has shown
/// p99 from 30 ms to 1.2 s with p50 under 60 ms): a relay that waited for a poll instead of
/// being woken would show in the median.
const BOUND_P50_MS: f64 = 250.0;
const BOUND_P99_MS: f64 = 3_000.0;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn g_outbox_to_consumer_latency_under_load() {
    let started = Instant::now();
    let mut cluster = Cluster::new(test_dir(TEST), Deps::default()).await;
    let core = cluster.spawn("identity-access", &["identity", "access"], None);
    cluster.ready(core).await;
    let org = cluster.create_org().await;
    let mut people = Vec::new();
    for n in 0..CALLERS {
        people.push(
            cluster
                .create_user(&org, &format!("p{n}"))
                .await
                .expect("create a person")
                .id,
        );
    }

    // The consumer, caught up with the topic before the load starts.
    let consumer = topic::consumer(&cluster.brokers, &cluster.topic("identity.events"));
    let warm = Instant::now();
    let mut seen_people = 0;
    while seen_people < CALLERS {
        assert!(
            warm.elapsed() < Duration::from_secs(60),
            "the consumer saw {seen_people} of {CALLERS} UserCreated"
        );
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            if let Some(Payload::UserCreated(_)) = m
                .payload()
                .and_then(|p| Envelope::decode(p).ok())
                .and_then(|e| e.payload)
            {
                seen_people += 1;
            }
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for id in people {
        let (client, token, stop, acked) = (
            cluster.identity(),
            org.admin_token.clone(),
            stop.clone(),
            acked.clone(),
        );
        callers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE_PER_CALLER));
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                seq += 1;
                let changed = client
                    .clone()
                    .update_user(authed(
                        &token,
                        pb::UpdateUserRequest {
                            user: Some(pb::User {
                                id: id.clone(),
                                position: format!("q{seq}"),
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
        }));
    }
    let load_started = Instant::now();
    let mut latencies = Vec::new();
    let mut callers = Some(callers);
    let mut expected = usize::MAX;
    let until = load_started + Duration::from_secs(SECONDS);
    while latencies.len() < expected && Instant::now() < until + Duration::from_secs(30) {
        if Instant::now() >= until {
            if let Some(callers) = callers.take() {
                // The load ends: every caller's last call is answered before the count.
                stop.store(true, Ordering::Relaxed);
                for c in callers {
                    let _ = c.await;
                }
                expected = acked.load(Ordering::Relaxed);
            }
        }
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        else {
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
        }
    }
    let acked = acked.load(Ordering::Relaxed);
    latencies.sort_by(|a, b| a.total_cmp(b));
    let (p50, p90, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
    report(
        TEST,
        format!(
            "{acked} changes acknowledged at ~{} /s over {SECONDS} s; {} events seen; outbox → consumer latency p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (goal p99 ≤ 100 ms: {}); total {:.1} s",
            CALLERS as u64 * RATE_PER_CALLER,
            latencies.len(),
            if p99 <= 100.0 { "met" } else { "NOT met" },
            started.elapsed().as_secs_f64()
        ),
    );
    assert!(
        latencies.len() >= acked,
        "{} of {acked} events arrived",
        latencies.len()
    );
    assert!(
        p50 <= BOUND_P50_MS,
        "p50 {p50:.1} ms is beyond the test's bound of {BOUND_P50_MS} ms"
    );
    assert!(
        p99 <= BOUND_P99_MS,
        "p99 {p99:.1} ms is beyond the test's bound of {BOUND_P99_MS} ms"
    );
}
