//! JSON log lines with the OpenTelemetry ids of the span they were logged in: `trace_id` and
//! `span_id` first on the line, so a log search finds every line of one trace (across services:
//! the trace id travels in `traceparent`), whether or not spans are exported.

use std::fmt;

use opentelemetry::trace::{SpanId, TraceId};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OtelData;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event format (the current span's fields included, not the list of spans) with
/// `"trace_id"` and `"span_id"` added when the event is logged inside a span that has them.
pub struct JsonWithTraceIds {
    json: Format<Json>,
}

impl JsonWithTraceIds {
    pub fn new() -> Self {
        Self {
            json: tracing_subscriber::fmt::format()
                .json()
                .with_current_span(true)
                .with_span_list(false),
        }
    }
}

impl Default for JsonWithTraceIds {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.json.format_event(ctx, Writer::new(&mut line), event)?;
        let ids = ctx.parent_span().and_then(|span| {
            let extensions = span.extensions();
            let data = extensions.get::<OtelData>()?;
            Some((data.trace_id()?, data.span_id()?))
        });
        match (ids, line.strip_prefix('{')) {
            (Some((trace_id, span_id)), Some(rest))
                if trace_id != TraceId::INVALID && span_id != SpanId::INVALID =>
            {
                write!(
                    writer,
                    "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
                )
            }
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The JSON lines logged by `log` under the format and OpenTelemetry layer `init` installs
    /// when no exporter is configured.
    fn logged(log: impl FnOnce()) -> Vec<serde_json::Value> {
        let lines = Lines::default();
        let writer = lines.clone();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(JsonWithTraceIds::new())
                    .with_writer(move || writer.clone()),
            )
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, log);
        let bytes = lines.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes)
            .expect("UTF-8")
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[test]
    fn a_line_logged_in_a_call_carries_the_callers_trace_id() {
        const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
        const PARENT_SPAN: &str = "00f067aa0ba902b7";
        let lines = logged(|| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                "traceparent",
                http::HeaderValue::from_static(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            );
            let span = tracing::info_span!("grpc", request_id = "r-1");
            crate::telemetry::set_parent_from(&span, &crate::telemetry::HeaderExtractor(&headers));
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside the call");
        });
        let [line] = lines.as_slice() else {
            panic!("one line: {lines:?}")
        };
        assert_eq!(line["trace_id"], TRACE, "{line}");
        let span_id = line["span_id"].as_str().expect("a span id");
        assert_eq!(span_id.len(), 16, "{line}");
        assert_ne!(
            span_id, PARENT_SPAN,
            "the call's own span, a child of the caller's"
        );
        // The rest of the line is the usual JSON line.
        assert_eq!(line["fields"]["message"], "inside the call", "{line}");
        assert_eq!(line["fields"]["answer"], 42, "{line}");
        assert_eq!(line["span"]["request_id"], "r-1", "{line}");
    }

    #[test]
    fn a_span_without_a_caller_starts_a_trace_and_a_line_outside_spans_has_none() {
        let lines = logged(|| {
            tracing::info!("outside");
            let span = tracing::info_span!("background");
            let _entered = span.enter();
            tracing::info!("inside");
        });
        let [outside, inside] = lines.as_slice() else {
            panic!("two lines: {lines:?}")
        };
        assert!(outside.get("trace_id").is_none(), "{outside}");
        let trace_id = inside["trace_id"].as_str().expect("a trace id");
        assert_eq!(trace_id.len(), 32, "{inside}");
        assert_ne!(trace_id, "0".repeat(32));
    }
}
