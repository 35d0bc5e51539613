//! The outermost layer of every service's gRPC stack: the request id, the tracing span that
//! continues the caller's W3C trace, the request deadline, and the call's RED metrics
//! (`mailroom_grpc_requests_total{method,code}`, `mailroom_grpc_request_duration_seconds`).
//!
//! It sits outside the concurrency limit and applies the deadline itself (the shorter of
//! `MAILROOM_REQUEST_TIMEOUT_MS` and the caller's `grpc-timeout`), so every call is counted
//! however it ends:
//! - answered: by the `grpc-status` of the response headers (a trailers-only answer, which
//!   most errors are) or else of the trailers at the end of the body (successes, streams);
//! - past its deadline, waiting for the limit or for the handler: answered `DEADLINE_EXCEEDED`
//!   here and counted `4` (also when tonic's own timer for the caller's `grpc-timeout`, which
//!   wraps every layer, fires first: the call is dropped at its deadline);
//! - dropped before it ended (the caller went away, a stream reset): counted `cancelled`.
//!
//! Latency is measured until the answer begins (the response headers; a unary call's one
//! message is ready with them), so a long stream does not count as a slow call.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

use super::{metric_method, BoxFuture, MAX_SHOWN_METHOD, REQUEST_ID};

/// A call dropped this close to its deadline (or after it) counts as timed out: tonic's timer
/// for the caller's `grpc-timeout` starts before ours, by the time the request takes from
/// tonic's timeout layer to this one — tens of milliseconds on a loaded 2-core machine (10 ms
/// counted such calls `cancelled` there). At most a tenth of the call's time, so that a caller
/// with a short deadline that gives up (a hedged request's loser) is still counted `cancelled`;
/// one that gives up this close to its deadline is counted as timed out: it nearly was.
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// The `code` label of a call whose caller went away before its answer ended.
pub const CANCELLED: &str = "cancelled";
/// The `code` label of a call whose response or body failed below gRPC.
pub const TRANSPORT: &str = "transport";

/// Request id, tracing span, deadline and metrics for every call; see the module's header.
#[derive(Clone, Copy)]
pub struct RequestContextLayer {
    timeout: Duration,
}

impl RequestContextLayer {
    /// Calls get at most `timeout` (the caller may ask for less with `grpc-timeout`).
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestContext {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Clone)]
pub struct RequestContext<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B, R> Service<http::Request<B>> for RequestContext<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Body + Default + Send + 'static,
{
    type Response = http::Response<MeteredBody<R>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    /// Always ready: the inner stack's readiness (the concurrency limit's permit) is waited
    /// for inside the call, under its deadline and counted with it.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let request_id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if let Ok(value) = http::HeaderValue::from_str(&request_id) {
            req.headers_mut().insert(REQUEST_ID, value);
        }
        let timeout =
            caller_timeout(req.headers()).map_or(self.timeout, |asked| asked.min(self.timeout));
        let path = req.uri().path();
        // Metric labels are our methods' names only, decided here before anything else (auth
        // included): a caller's made-up paths would each make a new series, which nothing
        // bounds.
        let method = metric_method(path);
        let shown_path: String = path.chars().take(MAX_SHOWN_METHOD).collect();
        let span = tracing::info_span!("grpc", rpc.method = %shown_path, request_id = %request_id);
        crate::telemetry::set_parent_from(&span, &crate::telemetry::HeaderExtractor(req.headers()));
        let mut record = CallRecord::new(method, timeout, span.clone());
        Box::pin(
            async move {
                let answered = tokio::time::timeout(timeout, inner.oneshot(req)).await;
                let mut response = match answered {
                    Err(_elapsed) => {
                        record.finish("4");
                        let status = tonic::Status::deadline_exceeded(format!(
                            "the call did not finish within its deadline of {} ms (the caller's grpc-timeout, or MAILROOM_REQUEST_TIMEOUT_MS)",
                            timeout.as_millis()
                        ));
                        status.into_http::<R>().map(MeteredBody::finished)
                    }
                    Ok(Err(err)) => {
                        record.finish(TRANSPORT);
                        return Err(err);
                    }
                    Ok(Ok(response)) => {
                        record.answered();
                        match status_code(response.headers()) {
                            // Trailers-only: the status is in the headers, the body is empty.
                            Some(code) => {
                                record.finish(code);
                                response.map(MeteredBody::finished)
                            }
                            None => response.map(|body| MeteredBody::new(body, record)),
                        }
                    }
                };
                if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(REQUEST_ID, value);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The `grpc-timeout` a caller sent (`<up to 8 digits><H|M|S|m|u|n>`), if well formed.
fn caller_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The `code` label of a `grpc-status` in `headers` (headers or trailers): its number, `0` to
/// `16`; any other value counts as `2` (UNKNOWN), as a client would read it.
fn status_code(headers: &http::HeaderMap) -> Option<&'static str> {
    const CODES: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .and_then(|n| CODES.get(n).copied())
            .unwrap_or("2"),
    )
}

/// One call's metrics, recorded once: latency when the answer begins, the count with its code
/// when it ends — or, when dropped unfinished, as timed out or cancelled.
struct CallRecord {
    method: String,
    started: Instant,
    deadline: Instant,
    span: tracing::Span,
    answered: bool,
    counted: bool,
}

impl CallRecord {
    fn new(method: String, timeout: Duration, span: tracing::Span) -> Self {
        let started = Instant::now();
        Self {
            method,
            started,
            deadline: started + timeout,
            span,
            answered: false,
            counted: false,
        }
    }

    /// The answer begins: its latency.
    fn answered(&mut self) {
        if !self.answered {
            self.answered = true;
            metrics::histogram!(crate::metrics::GRPC_LATENCY, "method" => self.method.clone())
                .record(self.started.elapsed().as_secs_f64());
        }
    }

    /// The call ended with `code`.
    fn finish(&mut self, code: &'static str) {
        self.answered();
        if self.counted {
            return;
        }
        self.counted = true;
        metrics::counter!(crate::metrics::GRPC_REQUESTS, "method" => self.method.clone(), "code" => code)
            .increment(1);
        let _entered = self.span.enter();
        tracing::debug!(
            grpc.code = code,
            elapsed_ms = self.started.elapsed().as_secs_f64() * 1e3,
            "call finished"
        );
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if self.counted {
            return;
        }
        // Dropped before the answer began, at its deadline: tonic's timer for the caller's
        // grpc-timeout fired. Otherwise the caller went away (or reset the stream).
        let slack = DEADLINE_SLACK.min((self.deadline - self.started) / 10);
        let code = if !self.answered && Instant::now() + slack >= self.deadline {
            "4"
        } else {
            CANCELLED
        };
        self.finish(code);
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its call when its trailers pass (or it ends, or it is
    /// dropped unfinished).
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        record: Option<CallRecord>,
    }
}

impl<B> MeteredBody<B> {
    fn new(inner: B, record: CallRecord) -> Self {
        Self {
            inner,
            record: Some(record),
        }
    }

    /// A body whose call has been counted already.
    fn finished(inner: B) -> Self {
        Self {
            inner,
            record: None,
        }
    }
}

impl<B: Default> Default for MeteredBody<B> {
    fn default() -> Self {
        Self::finished(B::default())
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(record) = this.record.as_mut() {
            match &polled {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        // Trailers without a grpc-status: a client reads UNKNOWN.
                        record.finish(status_code(trailers).unwrap_or("2"));
                    }
                }
                Some(Err(_)) => record.finish(TRANSPORT),
                // Ended without trailers: no status, UNKNOWN to the client.
                None => record.finish("2"),
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use futures::StreamExt;
    use http_body_util::BodyExt;
    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

    const CHECK: &str = "/grpc.health.v1.Health/Check";

    /// Runs `test` on a paused clock with a recorder of its own (whose handle it is given),
    /// and returns what it recorded.
    fn recorded<F>(test: impl FnOnce(PrometheusHandle) -> F) -> String
    where
        F: std::future::Future<Output = ()>,
    {
        let recorder: PrometheusRecorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a runtime")
                .block_on(test(handle.clone()))
        });
        handle.render()
    }

    fn count(rendered: &str, method: &str, code: &str) -> u64 {
        let series = format!(
            "{}{{method=\"{method}\",code=\"{code}\"}} ",
            crate::metrics::GRPC_REQUESTS
        );
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    type Empty = http_body_util::Empty<bytes::Bytes>;

    fn call(path: &str, headers: &[(&'static str, &str)]) -> http::Request<Empty> {
        let mut req = http::Request::builder().uri(format!("http://svc{path}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(Empty::new()).expect("a request")
    }

    /// A handler taking `delay`, answering OK in the trailers after one message.
    fn slow_ok(
        delay: Duration,
    ) -> impl Service<
        http::Request<Empty>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
           + Send {
        tower::service_fn(move |_req: http::Request<Empty>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(with_trailers("0")))
        })
    }

    fn with_trailers(code: &'static str) -> tonic::body::Body {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static(code));
        let frames = futures::stream::iter([
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(Frame::trailers(trailers)),
        ]);
        tonic::body::Body::new(http_body_util::StreamBody::new(frames))
    }

    #[test]
    fn a_call_past_the_request_timeout_is_answered_and_counted_deadline_exceeded() {
        let rendered = recorded(|_| async {
            let mut service = RequestContextLayer::new(Duration::from_secs(1))
                .layer(slow_ok(Duration::from_secs(30)));
            let response = service.call(call(CHECK, &[])).await.expect("answered");
            assert_eq!(status_code(response.headers()), Some("4"));
        });
        assert_eq!(count(&rendered, CHECK, "4"), 1, "{rendered}");
        assert_eq!(count(&rendered, CHECK, "0"), 0, "{rendered}");
    }

    #[test]
    fn the_callers_shorter_grpc_timeout_is_the_deadline() {
        let rendered = recorded(|_| async {
            let mut service = RequestContextLayer::new(Duration::from_secs(60))
                .layer(slow_ok(Duration::from_secs(5)));
            let started = tokio::time::Instant::now();
            let response = service
                .call(call(CHECK, &[("grpc-timeout", "200m")]))
                .await
                .expect("answered");
            assert_eq!(status_code(response.headers()), Some("4"));
            assert!(started.elapsed() < Duration::from_secs(1));
        });
        assert_eq!(count(&rendered, CHECK, "4"), 1, "{rendered}");
    }

    #[test]
    fn a_call_waiting_for_the_concurrency_limit_past_its_deadline_is_counted() {
        let rendered = recorded(|_| async {
            let service = tower::ServiceBuilder::new()
                .layer(RequestContextLayer::new(Duration::from_secs(2)))
                .layer(super::super::AdmissionLayer::new(super::super::Admission {
                    limit: 1,
                    queue: 8,
                    queue_wait: Duration::from_secs(60),
                }))
                .service(slow_ok(Duration::from_secs(10)));
            let first = service.clone().oneshot(call(CHECK, &[]));
            let second = service.clone().oneshot(call(CHECK, &[]));
            let (first, second) = tokio::join!(first, second);
            for answer in [first, second] {
                let answer = answer.expect("answered");
                assert_eq!(status_code(answer.headers()), Some("4"));
            }
        });
        assert_eq!(count(&rendered, CHECK, "4"), 2, "{rendered}");
    }

    #[test]
    fn an_error_in_the_trailers_is_counted_with_its_code() {
        let rendered = recorded(|handle| async move {
            let handler = tower::service_fn(|_req: http::Request<Empty>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(with_trailers("13")))
            });
            let mut service = RequestContextLayer::new(Duration::from_secs(5)).layer(handler);
            let response = service.call(call(CHECK, &[])).await.expect("answered");
            assert_eq!(
                count(&handle.render(), CHECK, "13"),
                0,
                "not counted before the trailers pass"
            );
            let collected = response.into_body().collect().await.expect("a body");
            assert!(collected.trailers().is_some());
        });
        assert_eq!(count(&rendered, CHECK, "13"), 1, "{rendered}");
        assert_eq!(count(&rendered, CHECK, "0"), 0, "{rendered}");
    }

    #[test]
    fn a_trailers_only_error_is_counted_with_its_code() {
        let rendered = recorded(|_| async {
            let handler = tower::service_fn(|_req: http::Request<Empty>| async {
                Ok::<_, std::convert::Infallible>(
                    tonic::Status::permission_denied("no").into_http::<tonic::body::Body>(),
                )
            });
            let mut service = RequestContextLayer::new(Duration::from_secs(5)).layer(handler);
            let response = service.call(call(CHECK, &[])).await.expect("answered");
            drop(response);
        });
        assert_eq!(count(&rendered, CHECK, "7"), 1, "{rendered}");
        assert_eq!(count(&rendered, CHECK, CANCELLED), 0, "{rendered}");
    }

    #[test]
    fn a_call_dropped_before_its_answer_is_counted_cancelled() {
        let rendered = recorded(|_| async {
            let mut service = RequestContextLayer::new(Duration::from_secs(30))
                .layer(slow_ok(Duration::from_secs(10)));
            let pending = service.call(call(CHECK, &[]));
            // The caller goes away after a second.
            let gave_up = tokio::time::timeout(Duration::from_secs(1), pending).await;
            assert!(gave_up.is_err());
        });
        assert_eq!(count(&rendered, CHECK, CANCELLED), 1, "{rendered}");
        assert_eq!(count(&rendered, CHECK, "4"), 0, "{rendered}");
    }

    #[test]
    fn a_stream_dropped_before_its_trailers_is_counted_cancelled() {
        let rendered = recorded(|_| async {
            let handler = tower::service_fn(|_req: http::Request<Empty>| async {
                let frames = futures::stream::iter([Ok::<_, std::convert::Infallible>(
                    Frame::data(Bytes::from_static(b"\0\0\0\0\0")),
                )])
                .chain(futures::stream::pending::<
                    Result<Frame<Bytes>, std::convert::Infallible>,
                >());
                Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::new(
                    http_body_util::StreamBody::new(frames),
                )))
            });
            let mut service = RequestContextLayer::new(Duration::from_secs(5)).layer(handler);
            let mut body = service
                .call(call(CHECK, &[]))
                .await
                .expect("answered")
                .into_body();
            let first = body.frame().await.expect("a frame").expect("data");
            assert!(first.is_data());
        });
        assert_eq!(count(&rendered, CHECK, CANCELLED), 1, "{rendered}");
    }

    #[test]
    fn a_call_dropped_at_the_callers_deadline_counts_as_timed_out() {
        // tonic's own timer for grpc-timeout wraps every layer: it drops the call at the
        // deadline, a moment before this layer's timer.
        let rendered = recorded(|_| async {
            let mut service = RequestContextLayer::new(Duration::from_secs(30))
                .layer(slow_ok(Duration::from_secs(10)));
            let pending = service.call(call(CHECK, &[("grpc-timeout", "1S")]));
            // This layer began 60 ms after tonic's timer (a loaded machine).
            let outer =
                tokio::time::timeout(Duration::from_secs(1) - Duration::from_millis(60), pending)
                    .await;
            assert!(outer.is_err());
        });
        assert_eq!(count(&rendered, CHECK, "4"), 1, "{rendered}");
    }

    #[test]
    fn made_up_paths_are_counted_as_unknown() {
        let rendered = recorded(|_| async {
            let handler = tower::service_fn(|_req: http::Request<Empty>| async {
                Ok::<_, std::convert::Infallible>(
                    tonic::Status::unimplemented("").into_http::<tonic::body::Body>(),
                )
            });
            let mut service = RequestContextLayer::new(Duration::from_secs(5)).layer(handler);
            for path in ["/made.Up/One", "/made.Up/Two"] {
                let _ = service.call(call(path, &[])).await;
            }
        });
        assert_eq!(count(&rendered, "unknown", "12"), 2, "{rendered}");
        assert!(!rendered.contains("made.Up"), "{rendered}");
    }

    #[test]
    fn grpc_timeouts_are_parsed_in_every_unit() {
        let parsed = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().expect("a header value"));
            caller_timeout(&headers)
        };
        assert_eq!(parsed("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parsed("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parsed("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parsed("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parsed("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parsed("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "5", "5x", "123456789S", "-1S"] {
            assert_eq!(parsed(bad), None, "{bad}");
        }
    }
}
