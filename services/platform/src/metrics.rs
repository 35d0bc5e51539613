//! The Prometheus endpoint (`GET /metrics` on each service's metrics port) and the names of
//! the metrics the platform itself records. One registry per process; every service hosted in
//! the process serves it on its own port, so each port that is announced answers. Each scrape
//! also reads this process's `process_*` metrics from `/proc` ([`ProcessSample`]);
//! `mailroom_build_info` names the build.

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

mod process;
pub use process::ProcessSample;

/// gRPC calls served, by `method` (a declared method, else `unknown`) and `code`: the gRPC
/// status code's number (`0` OK … `16`), `cancelled` (the caller went away before the answer
/// ended) or `transport`. Counted outside the request timeout and the concurrency limit, so
/// calls that timed out (`4`) or waited for the limit are counted too.
pub const GRPC_REQUESTS: &str = "mailroom_grpc_requests_total";
/// gRPC call latency in seconds until the answer began (for a unary call, the whole call), by
/// `method`; buckets up to 60 s.
pub const GRPC_LATENCY: &str = "mailroom_grpc_request_duration_seconds";
/// 1, with the running build's `version` and `commit` (`MAILROOM_GIT_COMMIT` when it was
/// built, else `unknown`).
pub const BUILD_INFO: &str = "mailroom_build_info";
/// Connections of a service's database pool, by `schema` and `state` (`idle`, `in_use`);
/// refreshed every 10 s ([`crate::pool_metrics`]).
pub const DB_POOL_CONNECTIONS: &str = "mailroom_db_pool_connections";
/// The most connections a service's database pool opens, by `schema`.
pub const DB_POOL_MAX_CONNECTIONS: &str = "mailroom_db_pool_max_connections";
/// When the certificate a process serves expires (its notAfter, Unix seconds), by `file`
/// (`grpc`: `MAILROOM_GRPC_TLS__CERT_FILE`); set when it is loaded and each time a renewed
/// one is ([`crate::grpc_tls`]).
pub const TLS_CERT_EXPIRY: &str = "mailroom_tls_cert_expiry_timestamp_seconds";

/// Buckets of latency histograms (seconds): 5 ms to 60 s, so the slowest calls that still
/// succeed (an IMAP login behind a slow mail server) land in a bucket rather than `+Inf`.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Histograms of request latencies other services record, bucketed like [`GRPC_LATENCY`]
/// (without buckets they would be rendered as summaries, which cannot be aggregated).
const OTHER_LATENCY_HISTOGRAMS: &[&str] = &[
    "mailroom_web_request_seconds",
    "mailroom_access_refresh_seconds",
];

/// The commit this binary was built from, when the build said (`MAILROOM_GIT_COMMIT`).
pub const BUILD_COMMIT: &str = match option_env!("MAILROOM_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};
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
/// How far a consumer is behind, in records, by `consumer`: for the partitions it owns, from
/// the first record not applied to the partition's end, summed (an event mirror: every
/// second, ends as last fetched); for a work consumer (the sync workers' group) the records
/// running, held or not taken (every 5 s, a paused partition's end asked of the broker).
pub const EVENTS_LAG_RECORDS: &str = "mailroom_events_lag_records";
/// How far an event mirror is behind, in time: the age (since it was produced) of the oldest
/// record the consumer holds and has not applied (the one being tried included), by
/// `consumer`; 0 when it holds none (event mirrors, refreshed every second).
pub const EVENTS_LAG_SECONDS: &str = "mailroom_events_lag_seconds";
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

/// gRPC calls refused because the service was overloaded (every call slot busy and the
/// queue full, or no slot freed within the queue's wait), by `method` and `reason`
/// (`queue_full`, `queue_timeout`); answered RESOURCE_EXHAUSTED, also counted in
/// [`GRPC_REQUESTS`] with code `8`.
pub const GRPC_REFUSED: &str = "mailroom_grpc_refused_total";
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
    let mut builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(GRPC_LATENCY.into()), LATENCY_BUCKETS)?;
    for name in OTHER_LATENCY_HISTOGRAMS {
        builder = builder.set_buckets_for_metric(Matcher::Full((*name).into()), LATENCY_BUCKETS)?;
    }
    let recorder = builder
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

/// Serves the process's metrics on `addr` (`GET /metrics`, any path but the probes' answers
/// the same) until the process ends, and the probes: `GET /livez` (200 while the process
/// answers) and `GET /readyz` (200 when every service hosted in the process is ready, else 503
/// with a one-line reason: [`crate::readiness::process`]). Each service of a process calls it with its own metrics port, so every
/// announced port answers, with the metrics of the whole process (several services in one
/// process share one registry).
pub async fn serve(addr: SocketAddr) -> Result<SocketAddr, MetricsError> {
    let handle = handle()?;
    announce(
        &[
            GRPC_REQUESTS,
            GRPC_REFUSED,
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
            EVENTS_LAG_RECORDS,
            EVENTS_LAG_SECONDS,
            REVOKED_SUBJECTS,
            REVOCATIONS_CAUGHT_UP,
            JWKS_STALE,
        ],
        &[GRPC_LATENCY],
    );
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => BUILD_COMMIT)
        .set(1.0);
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
                let service = service_fn(move |request: Request<Incoming>| async move {
                    match request.uri().path() {
                        "/livez" => probe_answer(Ok(())),
                        "/readyz" => probe_answer(crate::readiness::process()),
                        _ => Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(render(handle)))),
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

/// A probe's answer: 200 `ok`, or 503 with the one-line reason.
fn probe_answer(ready: Result<(), String>) -> Result<Response<Full<Bytes>>, http::Error> {
    let (status, body) = match ready {
        Ok(()) => (http::StatusCode::OK, "ok\n".to_owned()),
        Err(reason) => (http::StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    };
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
}

/// The registry's metrics and this process's `process_*` metrics, read now.
fn render(handle: &PrometheusHandle) -> String {
    let mut body = handle.render();
    if let Some(process) = ProcessSample::read() {
        if !body.is_empty() && !body.ends_with('\n') {
            body.push('\n');
        }
        body.push_str(&process.render());
    }
    body
}
