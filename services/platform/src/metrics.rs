//! The Prometheus endpoint (`GET /metrics` on the service's metrics port) and the names of the
//! metrics the platform itself records.

use std::net::SocketAddr;
use std::sync::OnceLock;

use metrics_exporter_prometheus::PrometheusBuilder;

/// gRPC calls served, by `method` and `code`.
pub const GRPC_REQUESTS: &str = "mailroom_grpc_requests_total";
/// gRPC call latency in seconds, by `method`.
pub const GRPC_LATENCY: &str = "mailroom_grpc_request_duration_seconds";
/// Outbox events published to Kafka, by `topic`.
pub const OUTBOX_PUBLISHED: &str = "mailroom_outbox_published_total";
/// Failed publish attempts, by `topic`.
pub const OUTBOX_FAILURES: &str = "mailroom_outbox_publish_failures_total";
/// Events waiting in the outbox.
pub const OUTBOX_BACKLOG: &str = "mailroom_outbox_backlog";
/// Events handled by a consumer, by `consumer` and `outcome` (applied, duplicate, dead_letter).
pub const EVENTS_CONSUMED: &str = "mailroom_events_consumed_total";

/// Subjects whose tokens this process refuses before a not-before time.
pub const REVOKED_SUBJECTS: &str = "mailroom_auth_revoked_subjects";
/// 1 once this process has read the revocations topic to its end, else 0.
pub const REVOCATIONS_CAUGHT_UP: &str = "mailroom_auth_revocations_caught_up";
/// Tokens refused because their subject was revoked after they were issued.
pub const TOKENS_REVOKED: &str = "mailroom_auth_revoked_tokens_refused_total";

static INSTALLED: OnceLock<()> = OnceLock::new();

/// Serves metrics on `addr`. Only the first call in a process listens; later calls (several
/// services in one process share one registry) do nothing and return `Ok`.
pub fn serve(addr: SocketAddr) -> Result<(), metrics_exporter_prometheus::BuildError> {
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(GRPC_LATENCY.into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )?
        .install()?;
    let _ = INSTALLED.set(());
    Ok(())
}
