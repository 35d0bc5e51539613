//! Readiness that means something (issue 25, item 3): a service whose database stops answering
//! turns not ready — gRPC health `""` and its service names NOT_SERVING, `/readyz` on the
//! metrics port 503 naming it — within ~15 s, while it stays live (`liveness`, `/livez`); it is
//! ready again once the database answers; and on shutdown `/readyz` says it drains at once.
//!
//! The service's `DATABASE_URL` goes through a TCP proxy the test stops (cutting every
//! connection and refusing new ones) and resumes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailroom_tests::spawn_app;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// `GET path` on a metrics port: the status code and the body.
pub async fn probe(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the metrics port listens");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The metrics port of this test process (its registry and its `/livez`, `/readyz`).
pub async fn metrics_port() -> SocketAddr {
    mailroom_platform::metrics::serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("a metrics port")
}

/// What gRPC health at `endpoint` says of `service` (`""`: readiness).
pub async fn health(endpoint: &str, service: &str) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .expect("the service's port accepts");
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health answers")
        .into_inner();
    ServingStatus::try_from(answer.status).unwrap_or(ServingStatus::Unknown)
}

/// Waits until `done` holds, `within` at most; returns how long it took.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if done().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A TCP proxy to a target learnt later, that the test stops (every connection cut, new ones
/// closed at once) and resumes.
struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<Option<String>>>,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let proxy = Self {
            addr: listener.local_addr().expect("local addr"),
            target: Arc::default(),
            up: Arc::new(AtomicBool::new(true)),
            connections: Arc::default(),
        };
        let (target, up, connections) = (
            proxy.target.clone(),
            proxy.up.clone(),
            proxy.connections.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = target.lock().expect("target").clone();
                let Some(to) = to.filter(|_| up.load(Ordering::SeqCst)) else {
                    drop(inbound);
                    continue;
                };
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections
                    .lock()
                    .expect("connections")
                    .push(relay.abort_handle());
            }
        });
        proxy
    }

    /// `url` (a postgres:// URL) going through this proxy; the proxy forwards to its host.
    fn route(&self, url: &SecretString) -> SecretString {
        let mut parsed = url::Url::parse(url.expose_secret()).expect("DATABASE_URL is a URL");
        let target = format!(
            "{}:{}",
            parsed.host_str().expect("DATABASE_URL names a host"),
            parsed.port().unwrap_or(5432)
        );
        *self.target.lock().expect("target") = Some(target);
        parsed.set_host(Some("127.0.0.1")).expect("host");
        parsed.set_port(Some(self.addr.port())).expect("port");
        SecretString::from(parsed.to_string())
    }

    fn stop(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().expect("connections").drain(..) {
            connection.abort();
        }
    }

    fn resume(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_whose_database_is_gone_is_not_ready_but_live_and_ready_again_when_it_returns() {
    let app = spawn_app().await;
    let metrics = metrics_port().await;
    let proxy = Proxy::start().await;
    let stop = CancellationToken::new();
    let endpoint = app
        .start_access_replica_on(
            |p| {
                p.database_url = proxy.route(&p.database_url);
                p.shutdown_drain_ms = 3_000;
            },
            stop.clone(),
        )
        .await;
    let access = "mailroom.access.v1.AccessService";

    eventually(Duration::from_secs(30), "ready at first", || async {
        health(&endpoint, "").await == ServingStatus::Serving
            && probe(metrics, "/readyz").await.0 == 200
    })
    .await;
    assert_eq!(health(&endpoint, access).await, ServingStatus::Serving);

    proxy.stop();
    let took = eventually(
        Duration::from_secs(20),
        "not ready once the database is gone",
        || async {
            health(&endpoint, "").await == ServingStatus::NotServing
                && probe(metrics, "/readyz").await.0 == 503
        },
    )
    .await;
    assert!(
        took <= Duration::from_secs(15),
        "not ready only after {took:?}"
    );
    let (_, reason) = probe(metrics, "/readyz").await;
    assert!(
        reason.starts_with("access: PostgreSQL unreachable") && reason.contains("DATABASE_URL"),
        "/readyz says why, in one line: {reason}"
    );
    assert_eq!(reason.trim_end().lines().count(), 1, "{reason}");
    assert_eq!(health(&endpoint, access).await, ServingStatus::NotServing);
    // Live all along: restarting it would not bring the database back.
    assert_eq!(health(&endpoint, "liveness").await, ServingStatus::Serving);
    assert_eq!(probe(metrics, "/livez").await.0, 200);
    let (_, scraped) = probe(metrics, "/metrics").await;
    assert!(
        scraped.contains("mailroom_dependency_up{dependency=\"postgres\"} 0"),
        "{scraped}"
    );
    assert!(
        scraped.contains("mailroom_dependency_up{dependency=\"kafka\"} 1"),
        "{scraped}"
    );

    proxy.resume();
    eventually(
        Duration::from_secs(15),
        "ready again once the database answers",
        || async {
            health(&endpoint, "").await == ServingStatus::Serving
                && probe(metrics, "/readyz").await.0 == 200
        },
    )
    .await;
    assert_eq!(health(&endpoint, access).await, ServingStatus::Serving);

    // On shutdown: not ready at once (health and /readyz), still answering for the drain.
    stop.cancel();
    eventually(Duration::from_secs(1), "draining at once", || async {
        let (status, reason) = probe(metrics, "/readyz").await;
        status == 503 && reason.contains("access: draining")
    })
    .await;
    assert_eq!(health(&endpoint, "").await, ServingStatus::NotServing);
    assert_eq!(health(&endpoint, "liveness").await, ServingStatus::Serving);
}
