//! Admission: how many calls a service runs at once, and what happens to the ones beyond.
//!
//! Each service's port admits `MAILROOM_CONCURRENCY_LIMIT` calls at once (a call holds its
//! slot until its answer begins). A call that finds every slot taken waits in a short, bounded
//! queue: at most `MAILROOM_CONCURRENCY_QUEUE` calls wait, each at most
//! `MAILROOM_CONCURRENCY_QUEUE_MS`, first come first served. Beyond that the call is refused at
//! once with `RESOURCE_EXHAUSTED` — a status a client can act on (back off, try another
//! replica), with a `grpc-retry-pushback-ms` for gRPC's retry policy — rather than queued until
//! its deadline, so the calls admitted keep their latency and no connection is given up on.
//! Refusals are counted in `mailroom_grpc_refused_total{method,reason}` (`queue_full`,
//! `queue_timeout`) besides `mailroom_grpc_requests_total{code="8"}`.
//!
//! Health checks (`grpc.health.v1`) are never queued or refused: a replica busy serving is
//! alive and ready, and says so.

use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// HTTP/2 streams a connection may have open at once: more than the calls admitted and
    /// queued, so that a caller multiplexing many calls on one connection (as a gRPC channel
    /// does) gets the excess refused with a status here rather than held back in its own
    /// transport, unseen, until its deadline. Still bounded: each stream costs a task.
    pub fn max_concurrent_streams(&self) -> u32 {
        let streams = self
            .limit
            .saturating_add(self.queue)
            .saturating_mul(2)
            .max(256);
        u32::try_from(streams).unwrap_or(u32::MAX)
    }
}

/// The shared state of one port's admission: its slots and how many calls wait for one.
struct Gate {
    admission: Admission,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
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

    /// The answer to a call refused for `reason`.
    fn refusal(&self, reason: &'static str) -> tonic::Status {
        let Admission {
            limit,
            queue,
            queue_wait,
        } = self.admission;
        let message = match reason {
            QUEUE_TIMEOUT => format!(
                "the service is overloaded: all {limit} call slots stayed busy for the {} ms this call may wait (MAILROOM_CONCURRENCY_QUEUE_MS); retry with backoff or on another replica",
                queue_wait.as_millis()
            ),
            _ => format!(
                "the service is overloaded: all {limit} call slots are busy and {queue} calls already wait (MAILROOM_CONCURRENCY_LIMIT / MAILROOM_CONCURRENCY_QUEUE); retry with backoff or on another replica"
            ),
        };
        let mut status = tonic::Status::resource_exhausted(message);
        let pushback = queue_wait.max(MIN_PUSHBACK).as_millis().to_string();
        if let Ok(value) = pushback.parse() {
            status.metadata_mut().insert(RETRY_PUSHBACK, value);
        }
        status
    }
}

/// Health checks pass without a slot.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

impl<S, B, R> Service<http::Request<B>> for Admit<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
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
                    tracing::debug!(reason, "call refused: overloaded");
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

    fn call(path: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(format!("http://svc{path}"))
            .body(())
            .expect("a request")
    }

    /// A handler taking `delay`, answering OK.
    fn slow(
        delay: Duration,
    ) -> impl Service<
        http::Request<()>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
           + Send {
        tower::service_fn(move |_req: http::Request<()>| async move {
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
            let message = full
                .headers()
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert!(message.contains("MAILROOM_CONCURRENCY_QUEUE"), "{message}");
            assert_eq!(
                full.headers()
                    .get(RETRY_PUSHBACK)
                    .and_then(|v| v.to_str().ok()),
                Some("100")
            );
            // The waiting call gives up after its 100 ms in the queue.
            let timed_out = waiting.await.expect("joined").expect("answered");
            assert_eq!(code(&timed_out), Some("8"));
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
            let _ = running.await;
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

    #[test]
    fn streams_per_connection_exceed_what_is_admitted_and_queued() {
        let admission = Admission {
            limit: 1024,
            queue: 256,
            queue_wait: Duration::from_millis(100),
        };
        assert_eq!(admission.max_concurrent_streams(), 2560);
        let tiny = Admission {
            limit: 1,
            queue: 0,
            queue_wait: Duration::ZERO,
        };
        assert_eq!(tiny.max_concurrent_streams(), 256);
    }
}
