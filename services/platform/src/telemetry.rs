//! Logs and traces.
//!
//! Logs are JSON lines on stdout (or human-readable with `MAILROOM_LOG_FORMAT=pretty`), filtered
//! by `RUST_LOG` or `MAILROOM_LOG_LEVEL`. When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also
//! exported over OTLP/gRPC. W3C trace context (`traceparent`) travels in gRPC metadata and in
//! Kafka record headers; [`inject_current`] and [`extract`] move it in and out of a string map.

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Flushes traces on drop; keep it alive for the life of the process.
pub struct TelemetryGuard;

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = PROVIDER.get() {
            let _ = provider.shutdown();
        }
    }
}

/// Log targets that write credentials at their most verbose levels, switched off whatever
/// level is configured: async-imap traces every command it encodes, `LOGIN user password`
/// included.
pub const SECRET_BEARING_TARGETS: &[&str] = &["async_imap::imap_stream"];

/// `filter` with [`SECRET_BEARING_TARGETS`] off (more specific than any level a person sets,
/// so `RUST_LOG=trace` still cannot print a password).
pub fn with_secret_guards(mut filter: EnvFilter) -> EnvFilter {
    for target in SECRET_BEARING_TARGETS {
        if let Ok(directive) = format!("{target}=off").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Installs logging (and tracing export when configured). Safe to call more than once: only
/// the first call in a process installs anything.
pub fn init(service_name: &str, format: LogFormat, level: &str) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = with_secret_guards(filter);

    let fmt_layer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    };

    let otel_layer = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|endpoint| !endpoint.is_empty())
        .and_then(|_| match otlp_provider(service_name) {
            Ok(provider) => {
                let tracer = provider.tracer("mailroom");
                opentelemetry::global::set_tracer_provider(provider.clone());
                let _ = PROVIDER.set(provider);
                Some(tracing_opentelemetry::layer().with_tracer(tracer))
            }
            Err(err) => {
                eprintln!("OTLP exporter not started: {err}");
                None
            }
        });

    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    TelemetryGuard
}

fn otlp_provider(
    service_name: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(format!("mailroom-{service_name}"))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The current span's trace context as W3C headers (`traceparent`, `tracestate`).
pub fn inject_current() -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier
}

/// Adds the current trace context to an outgoing gRPC request, so the callee's span continues
/// this trace.
pub fn inject_into_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    for (key, value) in inject_current() {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            metadata.insert(key, value);
        }
    }
}

/// Makes `span` a child of the trace described by `carrier`, when it describes one.
pub fn set_parent_from(span: &tracing::Span, carrier: &dyn Extractor) {
    let context = TraceContextPropagator::new().extract(carrier);
    let _ = span.set_parent(context);
}

/// Reads W3C headers out of HTTP/gRPC metadata.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Reads W3C headers out of a plain map (event envelopes, Kafka headers).
pub struct MapExtractor<'a>(pub &'a HashMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
