//! The RED metrics of calls through a real tonic server and client over loopback, with the
//! platform's request-context layer outermost: a success (its status in the trailers), a call
//! past the server's request timeout, one past the caller's own `grpc-timeout` (tonic's timer,
//! which wraps every layer, fires first) and one the caller abandons are each counted with the
//! code an operator would look for.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use mailroom_platform::grpc::RequestContextLayer;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::Service;

const CHECK: &str = "/grpc.health.v1.Health/Check";
/// A request header that makes the handler take this many milliseconds.
const DELAY: &str = "x-test-delay-ms";
const SERVER_TIMEOUT: Duration = Duration::from_millis(2_000);

/// Makes a call take as long as its [`DELAY`] header says, before the handler runs.
#[derive(Clone)]
struct Delay<S>(S);

impl<S, B> Service<http::Request<B>> for Delay<S>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let clone = self.0.clone();
        let mut inner = std::mem::replace(&mut self.0, clone);
        let delay = req
            .headers()
            .get(DELAY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis);
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            inner.call(req).await
        })
    }
}

fn count(handle: &PrometheusHandle, code: &str) -> u64 {
    let series = format!("mailroom_grpc_requests_total{{method=\"{CHECK}\",code=\"{code}\"}} ");
    handle
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (2 s at most) until `code` has been counted `expected` times: the server counts a
/// call when its answer has left, a moment after the client has it.
async fn counted(handle: &PrometheusHandle, code: &str, expected: u64) {
    for _ in 0..100 {
        if count(handle, code) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "expected {expected} call(s) counted with code {code}:\n{}",
        handle.render()
    );
}

fn check(delay_ms: Option<u64>, timeout: Option<Duration>) -> tonic::Request<HealthCheckRequest> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if let Some(ms) = delay_ms {
        request
            .metadata_mut()
            .insert(DELAY, ms.to_string().parse().expect("a metadata value"));
    }
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
}

#[tokio::test]
async fn calls_are_counted_however_they_end() {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("this test process's recorder");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(
                tower::ServiceBuilder::new()
                    .layer(RequestContextLayer::new(SERVER_TIMEOUT))
                    .layer(tower::layer::layer_fn(Delay)),
            )
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("an endpoint")
        .connect()
        .await
        .expect("the server answers");
    let mut client = HealthClient::new(channel);

    // A success: tonic sends its status in the trailers.
    client.check(check(None, None)).await.expect("SERVING");
    counted(&handle, "0", 1).await;

    // Past the server's request timeout: answered DEADLINE_EXCEEDED, counted 4.
    let refused = client
        .check(check(Some(4_000), None))
        .await
        .expect_err("past the deadline");
    assert_eq!(refused.code(), tonic::Code::DeadlineExceeded, "{refused:?}");
    counted(&handle, "4", 1).await;

    // Past the caller's own deadline (grpc-timeout), shorter than the server's.
    let refused = client
        .check(check(Some(4_000), Some(Duration::from_millis(1_000))))
        .await
        .expect_err("past the caller's deadline");
    assert!(
        matches!(
            refused.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{refused:?}"
    );
    counted(&handle, "4", 2).await;

    // The caller goes away before the answer: counted cancelled, not as a timeout.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(100),
        client.check(check(Some(300), None)),
    )
    .await;
    assert!(abandoned.is_err(), "the call was abandoned");
    counted(&handle, "cancelled", 1).await;
    // Nothing else was counted as a success meanwhile.
    assert_eq!(count(&handle, "0"), 1, "{}", handle.render());
}
