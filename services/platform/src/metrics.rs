//! The Prometheus endpoint (`GET /metrics` on each service's metrics port) and the names of
//! the metrics the platform itself records. One registry per process; every service hosted in
//! the process serves it on its own port, so each port that is announced answers.

use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// gRPC calls served, by `method` and `code`.
pub const GRPC_REQUESTS: &str = "mailroom_grpc_requests_total";
/// gRPC call latency in seconds, by `method`.
pub const GRPC_LATENCY: &str = "mailroom_grpc_request_duration_seconds";
/// Outbox events published to Kafka, by `topic`.
pub const OUTBOX_PUBLISHED: &str = "mailroom_outbox_published_total";
/// Failed publish attempts, by `topic`.
pub const OUTBOX_FAILURES: &str = "mailroom_outbox_publish_failures_total";
/// Events waiting in the outbox to be published, by `schema` (parked ones not counted).
pub const OUTBOX_BACKLOG: &str = "mailroom_outbox_backlog";
/// Outbox events parked now (the broker refused them for good; `ctl events parked`), by
/// `schema`.
pub const OUTBOX_PARKED: &str = "mailroom_outbox_parked_events";
/// Outbox events parked since the process started, by `schema` and `topic`.
pub const OUTBOX_PARKINGS: &str = "mailroom_outbox_parkings_total";
/// Events handled by a consumer, by `consumer` and `outcome` (applied, duplicate, skipped,
/// dead_letter, replayed).
pub const EVENTS_CONSUMED: &str = "mailroom_events_consumed_total";
/// Dead letters not replayed, by `consumer` (refreshed every 30 s by each running consumer).
pub const DEAD_LETTERS: &str = "mailroom_events_dead_letters";
/// Partitions whose first record waits to be tried again (a dependency is down, or the
/// failure is not known yet), by `consumer`.
pub const EVENTS_RETRYING: &str = "mailroom_events_retrying";
/// How long the record that has waited longest for a retry has waited, in seconds, by
/// `consumer` (0 when none waits).
pub const EVENTS_RETRY_AGE: &str = "mailroom_events_oldest_retry_seconds";
/// Records a consumer dropped because they were older than its `processed_events` retention
/// (their effect may have been applied already), by `consumer`.
pub const EVENTS_TOO_OLD: &str = "mailroom_events_too_old_total";

/// Subjects whose tokens this process refuses before a not-before time.
pub const REVOKED_SUBJECTS: &str = "mailroom_auth_revoked_subjects";
/// 1 once this process has read the revocations topic to its end, else 0.
pub const REVOCATIONS_CAUGHT_UP: &str = "mailroom_auth_revocations_caught_up";
/// Tokens refused because their subject was revoked after they were issued.
pub const TOKENS_REVOKED: &str = "mailroom_auth_revoked_tokens_refused_total";
/// Fetches of identity's signing keys, by `outcome` (unchanged, changed, failed).
pub const JWKS_FETCHES: &str = "mailroom_auth_jwks_fetches_total";
/// 1 while identity's signing keys have gone unconfirmed (every fetch failing) for longer than
/// `MAILROOM_JWKS_MAX_STALE_MS`, else 0.
pub const JWKS_STALE: &str = "mailroom_auth_jwks_stale";

/// Makes metrics show up (at zero) before their first event, so a process that has done
/// nothing yet already exposes every series its dashboards, alerts and autoscalers query.
pub fn announce(counters: &[&'static str], gauges: &[&'static str], histograms: &[&'static str]) {
    for name in counters {
        metrics::counter!(*name).increment(0);
    }
    for name in gauges {
        metrics::gauge!(*name).increment(0.0);
    }
    for name in histograms {
        let _ = metrics::histogram!(*name);
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's metrics registry, installed on first use.
fn handle() -> Result<&'static PrometheusHandle, MetricsError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(GRPC_LATENCY.into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )?
        // Sync durations and request lag: histograms (not the exporter's default summaries),
        // so the dashboards and alerts can aggregate them across workers.
        .set_buckets_for_metric(
            Matcher::Prefix("mailroom_sync_".into()),
            &[
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ],
        )?
        .build_recorder();
    let handle = recorder.handle();
    if HANDLE.set(handle).is_ok() {
        metrics::set_global_recorder(recorder).map_err(|e| MetricsError::Install(e.to_string()))?;
        if let Some(handle) = HANDLE.get() {
            // Histograms are drained into their buckets here rather than on every scrape.
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    every.tick().await;
                    handle.run_upkeep();
                }
            });
        }
    }
    HANDLE
        .get()
        .ok_or_else(|| MetricsError::Install("the registry was not installed".into()))
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics registry: {0}")]
    Registry(#[from] BuildError),
    #[error("metrics registry cannot be installed: {0}")]
    Install(String),
    #[error("metrics cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Serves the process's metrics on `addr` (`GET /metrics`, any path answers the same) until
/// the process ends. Each service of a process calls it with its own metrics port, so every
/// announced port answers, with the metrics of the whole process (several services in one
/// process share one registry).
pub async fn serve(addr: SocketAddr) -> Result<SocketAddr, MetricsError> {
    let handle = handle()?;
    announce(
        &[
            GRPC_REQUESTS,
            OUTBOX_PUBLISHED,
            OUTBOX_FAILURES,
            OUTBOX_PARKINGS,
            EVENTS_CONSUMED,
            EVENTS_TOO_OLD,
            TOKENS_REVOKED,
            JWKS_FETCHES,
        ],
        &[
            OUTBOX_BACKLOG,
            OUTBOX_PARKED,
            DEAD_LETTERS,
            EVENTS_RETRYING,
            EVENTS_RETRY_AGE,
            REVOKED_SUBJECTS,
            REVOCATIONS_CAUGHT_UP,
            JWKS_STALE,
        ],
        &[GRPC_LATENCY],
    );
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsError::Listen { addr, source })?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, say: wait rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<Incoming>| async move {
                    let body = handle.render();
                    Response::builder()
                        .header("content-type", "text/plain; version=0.0.4")
                        .body(Full::new(Bytes::from(body)))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}
