//! Trace export over OTLP/gRPC with TLS and a client certificate, as an operator configures it
//! with the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT=https://…`,
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`/`_KEY`): a
//! collector of the test's own, which serves a certificate from a CA the test makes and
//! requires a client certificate from it, receives the process's spans under its service
//! name. (The refusals of unusable settings are `telemetry`'s unit tests.)
//!
//! The telemetry is installed for the whole process: this test needs a process of its own,
//! which nextest gives every test.

use std::sync::Arc;
use std::time::Duration;

use mailroom_platform::config::LogFormat;
use mailroom_tests::tls_stack::{test_dir, TestCa};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio::sync::Mutex;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// Keeps what it is sent.
#[derive(Default, Clone)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received.lock().await.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// `(service.name, span name)` of every span received.
    async fn spans(&self) -> Vec<(String, String)> {
        let received = self.received.lock().await;
        let mut spans = Vec::new();
        for request in received.iter() {
            for resource in &request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                    .and_then(|value| match value {
                        Value::StringValue(name) => Some(name.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for scope in &resource.scope_spans {
                    for span in &scope.spans {
                        spans.push((service.clone(), span.name.clone()));
                    }
                }
            }
        }
        spans
    }
}

#[tokio::test]
async fn spans_reach_a_collector_over_tls_that_requires_a_client_certificate() {
    let dir = test_dir("otlp-tls");
    let ca = TestCa::new("mailroom otlp test CA");
    let ca_file = ca.write(&dir, "ca.crt");
    let server = ca.issue("collector", &["localhost", "127.0.0.1"]);
    let client = ca.issue("mailroom", &["mailroom"]).write(&dir, "client");

    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("address").port();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&server.cert_pem, &server.key_pem))
        .client_ca_root(Certificate::from_pem(&ca.cert_pem));
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        let served = Server::builder()
            .tls_config(tls)
            .expect("the collector's TLS")
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
        if let Err(err) = served {
            eprintln!("the collector stopped: {err}");
        }
    });

    for (name, value) in [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("https://localhost:{port}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ca_file.display().to_string(),
        ),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            client.cert.display().to_string(),
        ),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            client.key.display().to_string(),
        ),
        // Batches sent every 100 ms instead of 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ] {
        std::env::set_var(name, value);
    }
    let telemetry = mailroom_platform::telemetry::init("otlp-probe", LogFormat::Json, "info")
        .expect("OTLP over TLS with a client certificate is accepted");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        // A span a handler would open; the tracing layer ends it when the scope closes.
        tracing::info_span!("otlp_tls_probe").in_scope(|| tracing::info!("probe"));
        let spans = collector.spans().await;
        if spans
            .iter()
            .any(|(service, span)| service == "mailroom-otlp-probe" && span == "otlp_tls_probe")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no probe span reached the collector over TLS within 20 s: {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(telemetry);
}
