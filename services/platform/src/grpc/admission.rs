//! Admission: how many calls a service runs at once, and what happens to the ones beyond.
//!
//! Each service's port admits `MAILROOM_CONCURRENCY_LIMIT` calls at once (a call holds its
//! slot until its answer begins). A call that finds every slot taken waits in a short, bounded
//! queue: at most `MAILROOM_CONCURRENCY_QUEUE` calls wait, each at most
//! `MAILROOM_CONCURRENCY_QUEUE_MS`, first come first served. Beyond that the call is refused at
//! once with `RESOURCE_EXHAUSTED` — a status a client can act on (back off, try another
//! replica), with a `grpc-retry-pushback-ms` for gRPC's retry policy — rather than queued until
//! its deadline, so the calls admitted keep their latency and no connection is given up on.
//! The refusal's message is the same generic advice for every caller (callers are not told the
//! service's sizes); the detail is logged at debug level. A call refused because the queue was
//! full is asked to wait a jittered 250–1000 ms, so that clients retrying do not come back in
//! lockstep. Refusals are counted in `mailroom_grpc_refused_total{method,reason}`
//! (`queue_full`, `queue_timeout`) besides `mailroom_grpc_requests_total{code="8"}`.
//!
//! Before a refusal is sent, what is left of the call's request is read (at most
//! [`DRAIN_BYTES`], for at most [`DRAIN_WAIT`]; a refused call holds no slot meanwhile). A
//! call refused by authentication, which runs inside admission and so holds a slot, reads only
//! what has already arrived ([`drain_ready`]): waiting there would let callers without a token
//! hold slots. Answering a stream whose request has not
//! ended makes HTTP/2 reset it afterwards, and until that reset is written the stream still
//! counts against the connection's `max_concurrent_streams`, while the caller, having read the
//! answer, already counts it as closed: a caller keeping its connection full would have its
//! next stream refused by HTTP/2 itself (`REFUSED_STREAM`, a transport error to gRPC) instead
//! of by this layer.
//!
//! Health `Check`s are never queued or refused: a replica busy serving is alive and ready, and
//! says so. Health `Watch` streams, which hold their stream for as long as the caller likes,
//! are admitted like any other call.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service, ServiceExt};

use super::{metric_method, BoxFuture};

/// The `reason` label of a call refused because the queue already held as many calls as it may.
pub const QUEUE_FULL: &str = "queue_full";
/// The `reason` label of a call refused because no slot freed while it waited.
pub const QUEUE_TIMEOUT: &str = "queue_timeout";

/// The metadata gRPC's retry policy reads for how long to wait before trying again.
const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";
/// The least pushback a refusal asks for.
const MIN_PUSHBACK: Duration = Duration::from_millis(50);
/// The pushback of a call refused because the queue was full: a random duration in this range
/// (inclusive), so that refused callers retrying do not all come back at once.
const FULL_PUSHBACK_MS: (u64, u64) = (250, 1_000);
/// What a refused caller is told, whatever the reason (the sizes and settings are logged).
const REFUSAL: &str = "the service is at capacity; retry with backoff or on another replica";
/// The most of a refused call's request read before answering (a unary request's message is
/// already in flight; a larger or streaming one is answered without waiting for its end).
const DRAIN_BYTES: usize = 64 * 1024;
/// The longest a refusal waits for the rest of its call's request.
const DRAIN_WAIT: Duration = Duration::from_millis(100);

/// How many calls run at once and how many may wait; see the module's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Calls run at once.
    pub limit: usize,
    /// Calls that may wait for a slot (0: refused at once when every slot is taken).
    pub queue: usize,
    /// The longest a call waits for a slot.
    pub queue_wait: Duration,
}

impl Admission {
    /// HTTP/2 streams one connection may have open at once: an eighth of the call slots, at
    /// least 64. Were it more than the slots and queue together, one caller multiplexing its
    /// calls on one connection (as a gRPC channel does) could take every slot and every place
    /// in the queue, and every other caller would be refused. Its streams beyond this wait in
    /// its own transport until one of its calls ends (those admitted are answered or refused
    /// promptly, so they do not wait long); each stream also costs a task here.
    pub fn max_concurrent_streams(&self) -> u32 {
        let streams = (self.limit / 8).max(64);
        u32::try_from(streams).unwrap_or(u32::MAX)
    }
}

/// The shared state of one port's admission: its slots and how many calls wait for one.
struct Gate {
    admission: Admission,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// The state of the pushbacks' jitter (seeded at random, advanced by each refusal).
    jitter: AtomicU64,
}

/// Admits calls as [`Admission`] says; see the module's header.
#[derive(Clone)]
pub struct AdmissionLayer {
    gate: Arc<Gate>,
}

impl AdmissionLayer {
    pub fn new(admission: Admission) -> Self {
        Self {
            gate: Arc::new(Gate {
                admission,
                slots: Arc::new(Semaphore::new(admission.limit.max(1))),
                waiting: AtomicUsize::new(0),
                jitter: AtomicU64::new(
                    std::collections::hash_map::RandomState::new()
                        .build_hasher()
                        .finish(),
                ),
            }),
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Admit {
            inner,
            gate: self.gate.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    gate: Arc<Gate>,
}

/// One call waiting for a slot; no longer counted as waiting when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    /// A slot for a call: at once, or after waiting in the queue; else why not.
    async fn admit(&self) -> Result<OwnedSemaphorePermit, &'static str> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let queue = self.admission.queue;
        if queue == 0 || self.admission.queue_wait.is_zero() {
            return Err(QUEUE_FULL);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(QUEUE_FULL);
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(
            self.admission.queue_wait,
            self.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; timed out.
            Ok(Err(_)) | Err(_) => Err(QUEUE_TIMEOUT),
        }
    }

    /// The answer to a call refused for `reason`: the same message whatever the reason, and
    /// how long to wait before retrying.
    fn refusal(&self, reason: &'static str) -> tonic::Status {
        let mut status = tonic::Status::resource_exhausted(REFUSAL);
        let pushback = self.pushback(reason).as_millis().to_string();
        if let Ok(value) = pushback.parse() {
            status.metadata_mut().insert(RETRY_PUSHBACK, value);
        }
        status
    }

    /// How long a call refused for `reason` is asked to wait: a call that timed out in the
    /// queue, the queue's wait; one refused at once, a random time in [`FULL_PUSHBACK_MS`].
    fn pushback(&self, reason: &'static str) -> Duration {
        if reason == QUEUE_TIMEOUT {
            return self.admission.queue_wait.max(MIN_PUSHBACK);
        }
        let (least, most) = FULL_PUSHBACK_MS;
        Duration::from_millis(least + self.random() % (most - least + 1))
    }

    /// A cheap pseudo-random number (SplitMix64 over a shared counter): enough to spread
    /// retries, not for anything secret.
    fn random(&self) -> u64 {
        let mut z = self
            .jitter
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Reads what is left of a refused call's request, up to [`DRAIN_BYTES`] and [`DRAIN_WAIT`],
/// so that its stream ends when the refusal is written (see the module's header).
pub(super) async fn drain<B>(mut body: B)
where
    B: http_body::Body + Unpin,
{
    use bytes::Buf;
    use http_body_util::BodyExt;
    let mut read = 0usize;
    let _ = tokio::time::timeout(DRAIN_WAIT, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                read = read.saturating_add(data.remaining());
                if read > DRAIN_BYTES {
                    return;
                }
            }
        }
    })
    .await;
}

/// Reads what of a refused call's request has already arrived (up to [`DRAIN_BYTES`]),
/// without waiting for more: for refusals decided while the call holds a slot (the
/// authentication inside admission), which must give the slot back at once. A unary call's
/// message usually arrives with its headers, and then the stream ends cleanly too.
pub(super) fn drain_ready<B>(mut body: B)
where
    B: http_body::Body + Unpin,
{
    use bytes::Buf;
    use futures::FutureExt;
    use http_body_util::BodyExt;
    let mut read = 0usize;
    while let Some(Some(Ok(frame))) = body.frame().now_or_never() {
        if let Some(data) = frame.data_ref() {
            read = read.saturating_add(data.remaining());
            if read > DRAIN_BYTES {
                return;
            }
        }
    }
}

/// Health checks pass without a slot. Not health `Watch`: its stream lasts as long as its
/// caller wants, so it takes a slot like any call.
fn exempt(path: &str) -> bool {
    path == "/grpc.health.v1.Health/Check"
}

impl<S, B, R> Service<http::Request<B>> for Admit<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    /// Always ready: the slot is waited for (or refused) inside the call.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let gate = self.gate.clone();
        if exempt(req.uri().path()) {
            return Box::pin(inner.oneshot(req));
        }
        Box::pin(async move {
            match gate.admit().await {
                Ok(permit) => {
                    let answered = inner.oneshot(req).await;
                    drop(permit);
                    answered
                }
                Err(reason) => {
                    let method = metric_method(req.uri().path());
                    metrics::counter!(
                        crate::metrics::GRPC_REFUSED,
                        "method" => method,
                        "reason" => reason
                    )
                    .increment(1);
                    let Admission {
                        limit,
                        queue,
                        queue_wait,
                    } = gate.admission;
                    tracing::debug!(
                        reason,
                        limit,
                        queue,
                        queue_wait_ms = queue_wait.as_millis() as u64,
                        "call refused: every call slot busy (MAILROOM_CONCURRENCY_LIMIT) and the \
                         queue full (MAILROOM_CONCURRENCY_QUEUE) or its wait over \
                         (MAILROOM_CONCURRENCY_QUEUE_MS)"
                    );
                    drain(req.into_body()).await;
                    Ok(gate.refusal(reason).into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

    const CHECK: &str = "/mailroom.access.v1.AccessService/Check";
    const HEALTH: &str = "/grpc.health.v1.Health/Check";

    fn recorded<F>(test: F) -> String
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
                .block_on(test)
        });
        handle.render()
    }

    fn refused(rendered: &str, method: &str, reason: &str) -> u64 {
        let series = format!(
            "{}{{method=\"{method}\",reason=\"{reason}\"}} ",
            crate::metrics::GRPC_REFUSED
        );
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    type Empty = http_body_util::Empty<bytes::Bytes>;

    fn call(path: &str) -> http::Request<Empty> {
        http::Request::builder()
            .uri(format!("http://svc{path}"))
            .body(Empty::new())
            .expect("a request")
    }

    /// A handler taking `delay`, answering OK.
    fn slow(
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
            Ok::<_, std::convert::Infallible>(tonic::Status::ok("").into_http())
        })
    }

    fn code(response: &http::Response<tonic::body::Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    fn pushback_ms(response: &http::Response<tonic::body::Body>) -> Option<u64> {
        response
            .headers()
            .get(RETRY_PUSHBACK)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    fn admit(limit: usize, queue: usize, queue_ms: u64) -> AdmissionLayer {
        AdmissionLayer::new(Admission {
            limit,
            queue,
            queue_wait: Duration::from_millis(queue_ms),
        })
    }

    #[test]
    fn beyond_the_slots_and_the_queue_calls_are_refused_resource_exhausted_at_once() {
        let rendered = recorded(async {
            let service = admit(1, 1, 100).layer(slow(Duration::from_secs(10)));
            let started = tokio::time::Instant::now();
            let running = tokio::spawn(service.clone().oneshot(call(CHECK)));
            tokio::task::yield_now().await;
            let waiting = tokio::spawn(service.clone().oneshot(call(CHECK)));
            tokio::task::yield_now().await;
            // The slot is taken and the one place in the queue too: refused at once.
            let full = service
                .clone()
                .oneshot(call(CHECK))
                .await
                .expect("answered");
            assert_eq!(started.elapsed(), Duration::ZERO);
            assert_eq!(code(&full), Some("8"));
            let status = tonic::Status::from_header_map(full.headers()).expect("a status");
            // Generic advice: neither the sizes nor the settings' names.
            assert_eq!(status.message(), REFUSAL);
            let pushback = pushback_ms(&full).expect("a pushback");
            assert!((250..=1_000).contains(&pushback), "{pushback}");
            // The waiting call gives up after its 100 ms in the queue.
            let timed_out = waiting.await.expect("joined").expect("answered");
            assert_eq!(code(&timed_out), Some("8"));
            assert_eq!(pushback_ms(&timed_out), Some(100));
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(100) && waited < Duration::from_secs(1),
                "{waited:?}"
            );
            let first = running.await.expect("joined").expect("answered");
            assert_eq!(code(&first), Some("0"));
        });
        assert_eq!(refused(&rendered, CHECK, QUEUE_FULL), 1, "{rendered}");
        assert_eq!(refused(&rendered, CHECK, QUEUE_TIMEOUT), 1, "{rendered}");
    }

    #[test]
    fn a_queued_call_runs_when_a_slot_frees_within_its_wait() {
        let rendered = recorded(async {
            let service = admit(2, 8, 100).layer(slow(Duration::from_millis(30)));
            let calls: Vec<_> = (0..6)
                .map(|_| tokio::spawn(service.clone().oneshot(call(CHECK))))
                .collect();
            for answered in futures::future::join_all(calls).await {
                let response = answered.expect("joined").expect("answered");
                assert_eq!(code(&response), Some("0"));
            }
            // Two at a time, in three rounds of 30 ms.
        });
        assert!(
            !rendered.contains(crate::metrics::GRPC_REFUSED),
            "{rendered}"
        );
    }

    #[test]
    fn without_a_queue_a_call_finding_every_slot_busy_is_refused() {
        let rendered = recorded(async {
            let service = admit(1, 0, 100).layer(slow(Duration::from_secs(1)));
            let running = tokio::spawn(service.clone().oneshot(call(CHECK)));
            tokio::task::yield_now().await;
            let refused = service
                .clone()
                .oneshot(call(CHECK))
                .await
                .expect("answered");
            assert_eq!(code(&refused), Some("8"));
            let first = running.await.expect("joined").expect("answered");
            assert_eq!(code(&first), Some("0"));
            // The slot is free again.
            let again = service
                .clone()
                .oneshot(call(CHECK))
                .await
                .expect("answered");
            assert_eq!(code(&again), Some("0"));
        });
        assert_eq!(refused(&rendered, CHECK, QUEUE_FULL), 1, "{rendered}");
    }

    #[test]
    fn health_checks_pass_however_busy_the_service_is() {
        recorded(async {
            let service = admit(1, 0, 0).layer(slow(Duration::from_millis(10)));
            let running = tokio::spawn(service.clone().oneshot(call(CHECK)));
            tokio::task::yield_now().await;
            let health = service
                .clone()
                .oneshot(call(HEALTH))
                .await
                .expect("answered");
            assert_eq!(code(&health), Some("0"));
            // A Watch holds its stream as long as its caller likes: it needs a slot.
            let watch = service
                .clone()
                .oneshot(call("/grpc.health.v1.Health/Watch"))
                .await
                .expect("answered");
            assert_eq!(code(&watch), Some("8"));
            let _ = running.await;
        });
    }

    #[test]
    fn refusals_of_a_full_queue_ask_for_jittered_pushbacks() {
        recorded(async {
            let service = admit(1, 0, 100).layer(slow(Duration::from_secs(10)));
            let running = tokio::spawn(service.clone().oneshot(call(CHECK)));
            tokio::task::yield_now().await;
            let mut pushbacks = std::collections::BTreeSet::new();
            for _ in 0..50 {
                let refused = service
                    .clone()
                    .oneshot(call(CHECK))
                    .await
                    .expect("answered");
                assert_eq!(code(&refused), Some("8"));
                let pushback = pushback_ms(&refused).expect("a pushback");
                assert!((250..=1_000).contains(&pushback), "{pushback}");
                pushbacks.insert(pushback);
            }
            // Spread, not in lockstep (50 draws of 751 values: a handful of repeats at most).
            assert!(pushbacks.len() >= 40, "{pushbacks:?}");
            running.abort();
        });
    }

    #[test]
    fn a_caller_that_gives_up_while_queued_frees_its_place() {
        let rendered = recorded(async {
            let service = admit(1, 1, 1_000).layer(slow(Duration::from_secs(10)));
            let running = tokio::spawn(service.clone().oneshot(call(CHECK)));
            tokio::task::yield_now().await;
            let gave_up = tokio::time::timeout(
                Duration::from_millis(10),
                service.clone().oneshot(call(CHECK)),
            )
            .await;
            assert!(gave_up.is_err());
            // Its place in the queue is free: this one waits (and times out) instead of
            // being refused as the queue's second.
            let waited = service
                .clone()
                .oneshot(call(CHECK))
                .await
                .expect("answered");
            assert_eq!(code(&waited), Some("8"));
            running.abort();
        });
        assert_eq!(refused(&rendered, CHECK, QUEUE_FULL), 0, "{rendered}");
        assert_eq!(refused(&rendered, CHECK, QUEUE_TIMEOUT), 1, "{rendered}");
    }

    /// A request body whose message arrives `after` (never, if `None`).
    type Late = http_body_util::StreamBody<
        futures::stream::BoxStream<
            'static,
            Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>,
        >,
    >;

    fn late(after: Option<Duration>) -> http::Request<Late> {
        use futures::StreamExt;
        let frames = match after {
            Some(after) => futures::stream::once(async move {
                tokio::time::sleep(after).await;
                Ok(http_body::Frame::data(bytes::Bytes::from_static(
                    b"message",
                )))
            })
            .boxed(),
            None => futures::stream::pending().boxed(),
        };
        http::Request::builder()
            .uri(format!("http://svc{CHECK}"))
            .body(http_body_util::StreamBody::new(frames))
            .expect("a request")
    }

    #[test]
    fn a_refusal_is_sent_once_the_rest_of_its_request_is_read() {
        recorded(async {
            let service =
                admit(1, 0, 100).layer(tower::service_fn(|_req: http::Request<Late>| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok::<_, std::convert::Infallible>(tonic::Status::ok("").into_http())
                }));
            let running = tokio::spawn(service.clone().oneshot(late(Some(Duration::ZERO))));
            tokio::task::yield_now().await;
            // Its message 20 ms behind its headers: refused once the message is in.
            let started = tokio::time::Instant::now();
            let refused = service
                .clone()
                .oneshot(late(Some(Duration::from_millis(20))))
                .await
                .expect("answered");
            assert_eq!(code(&refused), Some("8"));
            assert_eq!(started.elapsed(), Duration::from_millis(20));
            // A request that never ends does not hold its refusal longer than DRAIN_WAIT.
            let started = tokio::time::Instant::now();
            let refused = service.clone().oneshot(late(None)).await.expect("answered");
            assert_eq!(code(&refused), Some("8"));
            assert_eq!(started.elapsed(), DRAIN_WAIT);
            running.abort();
        });
    }

    #[test]
    fn a_refusal_inside_a_slot_reads_only_what_has_arrived() {
        recorded(async {
            // A body whose message never comes: read at once, nothing waited for.
            let started = tokio::time::Instant::now();
            drain_ready(late(None).into_body());
            assert_eq!(started.elapsed(), Duration::ZERO);
            // A body whose message is there: read.
            let here = http_body_util::Full::new(bytes::Bytes::from_static(b"message"));
            drain_ready(here);
        });
    }

    #[test]
    fn one_connection_opens_a_fraction_of_the_call_slots_at_once() {
        let admission = Admission {
            limit: 1024,
            queue: 256,
            queue_wait: Duration::from_millis(100),
        };
        assert_eq!(admission.max_concurrent_streams(), 128);
        let large = Admission {
            limit: 8192,
            ..admission
        };
        assert_eq!(large.max_concurrent_streams(), 1024);
        let tiny = Admission {
            limit: 1,
            queue: 0,
            queue_wait: Duration::ZERO,
        };
        assert_eq!(tiny.max_concurrent_streams(), 64);
    }
}
