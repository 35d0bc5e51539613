//! Readiness that means something without taking every pod out on a blip (issue 25, item 3):
//! a service that starts and finds its database gone is not ready — `/readyz` on the metrics
//! port 503 naming the condition only, no driver text — until the database answers; after
//! that, a database outage sets `mailroom_dependency_up{dependency="postgres"}` to 0 but the
//! service stays ready (gRPC health `""` SERVING, `/readyz` 200) and live; and on shutdown
//! `/readyz` says it drains at once.
//!
//! The services' `DATABASE_URL` goes through a TCP proxy the test stops (cutting every
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

/// Whether `mailroom_dependency_up{dependency}` says up, on this process's metrics port.
async fn dependency_up(metrics: SocketAddr, dependency: &str) -> Option<bool> {
    let (_, scraped) = probe(metrics, "/metrics").await;
    let series = format!("mailroom_dependency_up{{dependency=\"{dependency}\"}} ");
    scraped
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map(|value| value.trim() == "1")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_holds_a_service_back_at_start_only_and_a_later_outage_leaves_it_ready() {
    let app = spawn_app().await;
    let metrics = metrics_port().await;
    let proxy = Proxy::start().await;
    let stop = CancellationToken::new();
    let mut platform = None;
    let endpoint = app
        .start_access_replica_on(
            |p| {
                p.database_url = proxy.route(&p.database_url);
                p.shutdown_drain_ms = 3_000;
                p.readiness_interval_ms = 500;
                platform = Some(p.clone());
            },
            stop.clone(),
        )
        .await;
    let platform = platform.expect("the replica's settings");
    let access = "mailroom.access.v1.AccessService";

    eventually(Duration::from_secs(30), "ready at first", || async {
        health(&endpoint, "").await == ServingStatus::Serving
            && probe(metrics, "/readyz").await.0 == 200
    })
    .await;
    assert_eq!(health(&endpoint, access).await, ServingStatus::Serving);

    // A second replica that has started (schema checked, pool made) and then finds its
    // database gone when it begins to serve: not ready until the database answers.
    let late = mailroom_access::start(
        &platform,
        mailroom_access::AccessConfig {
            consumer_group: format!("tests-access-{}", uuid::Uuid::new_v4().simple()),
            ..Default::default()
        },
    )
    .await
    .expect("access starts while its database answers");
    proxy.stop();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let late_endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
    let late_stop = CancellationToken::new();
    {
        let (platform, late_stop) = (platform.clone(), late_stop.clone());
        let verifier = late.verifier.clone();
        tokio::spawn(async move {
            if let Err(err) = late.run(listener, verifier, &platform, late_stop).await {
                eprintln!("the late access replica stopped: {err}");
            }
        });
    }
    eventually(
        Duration::from_secs(20),
        "the replica that found no database is not ready",
        || async {
            let (status, reason) = probe(metrics, "/readyz").await;
            status == 503 && reason.trim_end() == "access: PostgreSQL unreachable"
        },
    )
    .await;
    let (_, reason) = probe(metrics, "/readyz").await;
    assert!(
        !reason.contains("127.0.0.1") && !reason.contains("postgres@") && !reason.contains("error"),
        "/readyz names the condition, not what the driver said: {reason}"
    );
    // The gauges follow once the round's broker check is done too (readiness does not wait
    // for it).
    eventually(
        Duration::from_secs(10),
        "postgres down on the gauge",
        || async { dependency_up(metrics, "postgres").await == Some(false) },
    )
    .await;
    assert_eq!(
        dependency_up(metrics, "kafka").await,
        Some(true),
        "the broker is checked all the same"
    );
    // The replica that had its database once stays ready (and live) through the outage.
    assert_eq!(health(&endpoint, "").await, ServingStatus::Serving);
    assert_eq!(health(&endpoint, "liveness").await, ServingStatus::Serving);
    assert_eq!(probe(metrics, "/livez").await.0, 200);

    proxy.resume();
    eventually(
        Duration::from_secs(15),
        "every replica ready once the database answers",
        || async { probe(metrics, "/readyz").await.0 == 200 },
    )
    .await;
    assert_eq!(health(&late_endpoint, "").await, ServingStatus::Serving);
    assert_eq!(health(&late_endpoint, access).await, ServingStatus::Serving);
    eventually(Duration::from_secs(10), "the gauge back at 1", || async {
        dependency_up(metrics, "postgres").await == Some(true)
    })
    .await;

    // Now both have had their database once: an outage is a gauge (and its alert), not every
    // pod taken out of its Service.
    proxy.stop();
    eventually(
        Duration::from_secs(15),
        "mailroom_dependency_up{dependency=\"postgres\"} 0 in the outage",
        || async { dependency_up(metrics, "postgres").await == Some(false) },
    )
    .await;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(4) {
        let (status, reason) = probe(metrics, "/readyz").await;
        assert_eq!(status, 200, "ready through a database outage: {reason}");
        assert_eq!(health(&endpoint, "").await, ServingStatus::Serving);
        assert_eq!(health(&late_endpoint, "").await, ServingStatus::Serving);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(dependency_up(metrics, "postgres").await, Some(false));
    proxy.resume();

    // On shutdown: not ready at once (health and /readyz), still answering for the drain.
    late_stop.cancel();
    stop.cancel();
    eventually(Duration::from_secs(1), "draining at once", || async {
        let (status, reason) = probe(metrics, "/readyz").await;
        status == 503 && reason.contains("access: draining")
    })
    .await;
    assert_eq!(health(&endpoint, "").await, ServingStatus::NotServing);
    assert_eq!(health(&endpoint, "liveness").await, ServingStatus::Serving);
}
