//! Logs and traces.
//!
//! Logs are JSON lines on stdout (or human-readable with `MAILROOM_LOG_FORMAT=pretty`), filtered
//! by `RUST_LOG` or `MAILROOM_LOG_LEVEL`; a JSON line logged inside a span carries its
//! OpenTelemetry `trace_id` and `span_id` ([`JsonWithTraceIds`]), exported or not. When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also
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

mod trace_ids;
pub use trace_ids::JsonWithTraceIds;

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

/// Why tracing export cannot start as configured (the process should not start either: spans
/// would go unencrypted, or nowhere).
#[derive(Debug, thiserror::Error)]
#[error("OTLP trace export: {0}")]
pub struct TelemetryError(String);

/// Installs logging (and tracing export when configured). Safe to call more than once: only
/// the first call in a process installs anything. An OTLP configuration that cannot be used
/// (a TLS file that cannot be read, TLS variables with an `http://` endpoint, an exporter that
/// cannot be built) is printed on stderr (logging is not up yet) and returned, nothing
/// installed: the caller refuses to start.
pub fn init(
    service_name: &str,
    format: LogFormat,
    level: &str,
) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = with_secret_guards(filter);

    let fmt_layer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .event_format(trace_ids::JsonWithTraceIds::new())
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    };

    let exporting = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|endpoint| !endpoint.is_empty())
        .map(|_| otlp_provider(service_name))
        .transpose()
        .map_err(|err| {
            eprintln!("ERROR: OTLP trace export cannot start, so neither does this process: {err}");
            TelemetryError(err)
        })?;
    if let Some(provider) = &exporting {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    // Without an exporter spans still get OpenTelemetry ids (continuing a caller's
    // `traceparent`): the logs carry them and calls and events pass them on.
    let provider = exporting.unwrap_or_else(|| SdkTracerProvider::builder().build());
    let tracer = provider.tracer("mailroom");
    let _ = PROVIDER.set(provider);
    let otel_layer = tracing_opentelemetry::layer().with_tracer(tracer);

    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    Ok(TelemetryGuard)
}

fn otlp_provider(service_name: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithTonicConfig as _;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(tls) = otlp_tls()? {
        builder = builder.with_tls_config(tls);
    }
    let exporter = builder.build().map_err(|err| err.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(format!("mailroom-{service_name}"))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The TLS of an `https://` OTLP endpoint, from the standard variables the exporter does not
/// read itself: `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE` (the CA; unset: the public web
/// roots), `…_CLIENT_CERTIFICATE` and `…_CLIENT_KEY` (mutual TLS). `None` for `http://`, which
/// is refused when any of those is set (TLS was meant; the spans would go unencrypted).
fn otlp_tls() -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
    let var = |name: &str| {
        std::env::var(format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| (format!("OTEL_EXPORTER_OTLP_TRACES_{name}"), v))
            .or_else(|| {
                std::env::var(format!("OTEL_EXPORTER_OTLP_{name}"))
                    .ok()
                    .filter(|v| !v.is_empty())
                    .map(|v| (format!("OTEL_EXPORTER_OTLP_{name}"), v))
            })
    };
    let https = var("ENDPOINT").is_some_and(|(_, endpoint)| endpoint.starts_with("https://"));
    if !https {
        if let Some((set, _)) = ["CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"]
            .iter()
            .find_map(|name| var(name))
        {
            return Err(format!(
                "{set} is set but the endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) is not https://: spans would go unencrypted; name the collector https://…, or unset {set}"
            ));
        }
        return Ok(None);
    }
    let read = |name: &str| {
        var(name)
            .map(|(var, path)| {
                std::fs::read(&path).map_err(|err| format!("{var}: cannot read {path}: {err}"))
            })
            .transpose()
    };
    let ca = read("CERTIFICATE")?;
    let identity = match (read("CLIENT_CERTIFICATE")?, read("CLIENT_KEY")?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY go together: set both or neither".into())
        }
    };
    Ok(Some(crate::grpc_tls::client_tls_config(
        ca.as_deref(),
        identity
            .as_ref()
            .map(|(cert, key)| (cert.as_slice(), key.as_slice())),
    )))
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

#[cfg(test)]
mod otlp_tls_tests {
    use super::otlp_tls;

    /// One test for every case: they set the process's OTLP variables.
    #[test]
    fn otlp_tls_follows_the_endpoint_and_names_an_unreadable_file() {
        std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE");
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        assert!(otlp_tls().unwrap().is_none(), "plaintext endpoint");
        std::env::set_var("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.crt");
        let err = otlp_tls().unwrap_err();
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && err.contains("https://"),
            "TLS meant, plaintext named: {err}"
        );

        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317");
        let err = otlp_tls().unwrap_err();
        assert!(
            err.starts_with("OTEL_EXPORTER_OTLP_CERTIFICATE") && err.contains("/nonexistent"),
            "{err}"
        );

        std::env::remove_var("OTEL_EXPORTER_OTLP_CERTIFICATE");
        std::env::set_var("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/nonexistent/tls.key");
        let err = otlp_tls().unwrap_err();
        assert!(err.contains("OTEL_EXPORTER_OTLP_CLIENT_KEY"), "{err}");

        std::env::remove_var("OTEL_EXPORTER_OTLP_CLIENT_KEY");
        assert!(
            otlp_tls().unwrap().is_some(),
            "https with the public web roots"
        );
        std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
    }
}
