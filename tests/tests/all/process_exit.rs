//! A stopped `mailroom` process exits, within a bound it can be given a grace period for: after
//! SIGTERM it drains (the configured drain), lets the calls in flight finish (each within the
//! request timeout) and stops its background work, and is gone within the drain, the request
//! timeout and [`MARGIN`] — also when something it was doing hangs: `mailroom dev` filling the
//! demo mailboxes from a mail server that never answers, services whose Kafka broker never
//! answers. A second SIGTERM exits at once. One that cannot listen on a port it is given exits
//! before any of its services starts.
//!
//! **Needs the real binary**: these tests start `target/debug/mailroom` (or `MAILROOM_BIN`)
//! against the stack, each on a database, topic prefix, consumer groups and ports of its own.
//! Build it before running them: `cargo build -p mailroom` (a binary older than the code under
//! test tests the old code).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mailroom_tests::chaos::free_port;
use mailroom_tests::{create_database, mailroom_binary, StackEnv};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Beyond the drain and the request timeout, what a stopping process may take: the calls in
/// flight sending their answers, the background work stopping and the exit itself (the chart
/// allows 5 s for it).
const MARGIN: Duration = Duration::from_secs(4);
/// The request timeout the processes run with (short, so the bound is too).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a process may take to come up and answer on every port.
const START: Duration = Duration::from_secs(60);

const SERVICES: [&str; 5] = ["identity", "access", "mailboxes", "sync", "invitations"];

/// One `mailroom` process of a test, killed if the test leaves it running; its log (in the
/// temporary folder) is kept when the test fails.
struct Process {
    child: Child,
    log: PathBuf,
    ports: Vec<u16>,
}

impl Process {
    /// Starts `mailroom <args>` on a new database and topic prefix, consumer groups and ports of
    /// its own, with `extra` settings.
    async fn start(args: &[&str], extra: &[(&str, String)]) -> Self {
        let bin = mailroom_binary();
        let env = StackEnv::load();
        let database_url = create_database(&env.database_url).await;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let log = std::env::temp_dir().join(format!("mailroom-exit-{id}.log"));
        let out = std::fs::File::create(&log).expect("the process's log file");
        let err = out.try_clone().expect("the log file again");
        let mut command = Command::new(&bin);
        command
            .args(args)
            .env("DATABASE_URL", &database_url)
            .env("REDIS_URL", &env.redis_url)
            .env("KAFKA_BROKERS", &env.kafka_brokers)
            .env("MAILROOM_KAFKA_TOPIC_PREFIX", format!("tests.exit{id}"))
            .env("MAILROOM_KAFKA_PARTITIONS", "2")
            .env("MAILROOM_LISTEN_HOST", "127.0.0.1")
            .env("MAILROOM_METRICS_ENABLED", "false")
            .env("MAILROOM_LOG_FORMAT", "pretty")
            .env("RUST_LOG", "info")
            .env("MAILROOM_DB_MAX_CONNECTIONS", "4")
            .env("MAILROOM_REVOCATIONS_CATCH_UP_MS", "3000")
            .env(
                "MAILROOM_REQUEST_TIMEOUT_MS",
                REQUEST_TIMEOUT.as_millis().to_string(),
            )
            .env("MAILROOM_SYNC__WORKER_GROUP", format!("exit{id}-workers"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let ports: Vec<u16> = SERVICES.iter().map(|_| free_port()).collect();
        for (service, port) in SERVICES.iter().zip(&ports) {
            let upper = service.to_uppercase();
            command
                .env(format!("MAILROOM_{upper}__PORT"), port.to_string())
                .env(
                    format!("MAILROOM_{upper}__CONSUMER_GROUP"),
                    format!("exit{id}-{service}"),
                );
        }
        let endpoint = |service: &str| {
            let at = SERVICES.iter().position(|s| *s == service).unwrap_or(0);
            format!("http://127.0.0.1:{}", ports[at])
        };
        // The web console (HTTP, in `serve all` and `dev`) on a port of its own too, calling
        // this process's services; it is not among `ports`, which answer gRPC health.
        command.env("MAILROOM_WEB__PORT", free_port().to_string());
        for (service, peers) in [
            ("web", &SERVICES[..]),
            ("access", &["identity"][..]),
            ("mailboxes", &["identity", "access"][..]),
            ("invitations", &["identity", "access"][..]),
            ("sync", &["identity", "access", "mailboxes"][..]),
        ] {
            for peer in peers {
                command.env(
                    format!(
                        "MAILROOM_{}__{}_ENDPOINT",
                        service.to_uppercase(),
                        peer.to_uppercase()
                    ),
                    endpoint(peer),
                );
            }
        }
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", bin.display()));
        Self { child, log, ports }
    }

    /// Waits until every service answers on its port (health, whatever it says).
    async fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + START;
        for port in self.ports.clone() {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "mailroom exited ({status}) before it served:\n{}",
                        self.log_tail()
                    );
                }
                if answers(port).await {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "mailroom did not answer on port {port} within {START:?}:\n{}",
                    self.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) on our own child's pid, with a valid signal number.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits up to `limit` for the process to exit; how long it took and how it ended, or
    /// None if it is still running.
    async fn exited_within(&mut self, limit: Duration) -> Option<(Duration, ExitStatus)> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((started.elapsed(), status));
            }
            if started.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end of what the process logged.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The log is kept when the test failed (its message quotes the end of it).
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Whether something answers gRPC health on `port`.
async fn answers(port: u16) -> bool {
    let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok()
}

/// What `mailroom serve` needs that `mailroom dev` sets itself: keys, and each calling
/// service's own credential at identity.
fn serve_settings() -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    // Any 32 bytes: keys for this test's processes only.
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let mut settings = vec![
        ("MAILROOM_IDENTITY__SIGNING_KEYS", key.clone()),
        ("MAILROOM_MAILBOXES__SEALING_KEYS", format!("exit:{key}")),
    ];
    for (at_identity, own, secret) in [
        (
            "MAILROOM_IDENTITY__SERVICE_CLIENTS__MAILBOXES",
            "MAILROOM_MAILBOXES__SERVICE_CLIENT_SECRET",
            "exit-mailboxes-secret",
        ),
        (
            "MAILROOM_IDENTITY__SERVICE_CLIENTS__SYNC",
            "MAILROOM_SYNC__SERVICE_CLIENT_SECRET",
            "exit-sync-secret",
        ),
        (
            "MAILROOM_IDENTITY__SERVICE_CLIENTS__INVITATIONS",
            "MAILROOM_INVITATIONS__SERVICE_CLIENT_SECRET",
            "exit-invitations-secret",
        ),
    ] {
        settings.push((at_identity, secret.to_owned()));
        settings.push((own, secret.to_owned()));
    }
    settings
}

/// A server (a mail server, a broker) that accepts connections and never says a word.
async fn silent_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (connected, connections) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            let _ = connected.send(());
        }
    });
    (addr, connections)
}

#[tokio::test(flavor = "multi_thread")]
async fn mailroom_dev_stopped_while_its_mail_server_hangs_exits_within_its_limit() {
    let (imap, mut connections) = silent_server().await;
    let mut dev = Process::start(
        &["dev"],
        &[
            ("MAILROOM_IMAP_ADDR", imap.to_string()),
            ("MAILROOM_SHUTDOWN_DRAIN_MS", "0".to_owned()),
        ],
    )
    .await;
    dev.wait_until_serving().await;
    // The demo data is being seeded: the first mailbox is being filled from the mail server,
    // which does not answer.
    tokio::time::timeout(START, connections.recv())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "mailroom dev never reached the mail server:\n{}",
                dev.log_tail()
            )
        });
    let limit = REQUEST_TIMEOUT + MARGIN;
    dev.signal(libc::SIGTERM);
    let Some((took, status)) = dev.exited_within(limit).await else {
        panic!(
            "mailroom dev was still running {limit:?} after SIGTERM (drain 0 + request timeout {REQUEST_TIMEOUT:?} + {MARGIN:?}); its log ends:\n{}",
            dev.log_tail()
        );
    };
    eprintln!(
        "[exit] mailroom dev, its mail server hung: exited {took:?} after SIGTERM ({status})"
    );
    assert!(
        status.success(),
        "mailroom dev stopped by SIGTERM exited with {status}, not cleanly:\n{}",
        dev.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mailroom_serve_all_drains_then_exits_within_its_limit() {
    const DRAIN: Duration = Duration::from_millis(1500);
    let mut settings = serve_settings();
    settings.push(("MAILROOM_SHUTDOWN_DRAIN_MS", DRAIN.as_millis().to_string()));
    let mut process = Process::start(&["serve", "all"], &settings).await;
    process.wait_until_serving().await;
    // Background work running (consumers in their groups, relays, the sync's scheduler).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let limit = DRAIN + REQUEST_TIMEOUT + MARGIN;
    process.signal(libc::SIGTERM);
    let Some((took, status)) = process.exited_within(limit).await else {
        panic!(
            "mailroom serve all was still running {limit:?} after SIGTERM (drain {DRAIN:?} + request timeout {REQUEST_TIMEOUT:?} + {MARGIN:?}); its log ends:\n{}",
            process.log_tail()
        );
    };
    eprintln!("[exit] mailroom serve all: exited {took:?} after SIGTERM ({status})");
    assert!(
        took >= DRAIN,
        "it exited {took:?} after SIGTERM, before its drain of {DRAIN:?} was over"
    );
    assert!(
        status.success(),
        "mailroom serve all stopped by SIGTERM exited with {status}, not cleanly:\n{}",
        process.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_exits_at_once() {
    // A drain far longer than the test: only the second signal can end it.
    let mut settings = serve_settings();
    settings.push(("MAILROOM_SHUTDOWN_DRAIN_MS", "120000".to_owned()));
    let mut process = Process::start(&["serve", "identity,access"], &settings).await;
    process.ports.truncate(2);
    process.wait_until_serving().await;
    process.signal(libc::SIGTERM);
    assert!(
        process
            .exited_within(Duration::from_secs(1))
            .await
            .is_none(),
        "the process did not drain after the first SIGTERM:\n{}",
        process.log_tail()
    );
    process.signal(libc::SIGTERM);
    let Some((took, status)) = process.exited_within(Duration::from_secs(2)).await else {
        panic!(
            "a second SIGTERM did not end the draining process within 2 s:\n{}",
            process.log_tail()
        );
    };
    eprintln!("[exit] second SIGTERM: exited {took:?} after it ({status})");
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "a process ended by a second SIGTERM says so in its exit status"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mailroom_serve_all_whose_broker_hangs_exits_within_its_limit() {
    // Every consumer, relay and the revocations follower waits on a broker that accepts
    // connections and never answers.
    let (broker, _connections) = silent_server().await;
    let mut settings = serve_settings();
    settings.push(("KAFKA_BROKERS", broker.to_string()));
    let mut process = Process::start(&["serve", "all"], &settings).await;
    process.wait_until_serving().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let limit = REQUEST_TIMEOUT + MARGIN;
    process.signal(libc::SIGTERM);
    let Some((took, status)) = process.exited_within(limit).await else {
        panic!(
            "mailroom serve all, its broker hung, was still running {limit:?} after SIGTERM (drain 0 + request timeout {REQUEST_TIMEOUT:?} + {MARGIN:?}); its log ends:\n{}",
            process.log_tail()
        );
    };
    eprintln!(
        "[exit] mailroom serve all, its broker hung: exited {took:?} after SIGTERM ({status})"
    );
    assert!(
        status.success(),
        "mailroom serve all stopped by SIGTERM exited with {status}, not cleanly:\n{}",
        process.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_held_by_another_program_stops_serve_all_before_any_service_starts() {
    // Another program holds the port the web console, hosted last, is to listen on.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let held = holder.local_addr().expect("local addr").port();
    let mut settings = serve_settings();
    settings.push(("MAILROOM_WEB__PORT", held.to_string()));
    let mut process = Process::start(&["serve", "all"], &settings).await;
    let Some((took, status)) = process.exited_within(START).await else {
        panic!(
            "mailroom serve all kept running while its web port {held} was held by another program:\n{}",
            process.log_tail()
        );
    };
    // The whole log: a pretty event spans several lines.
    let log = std::fs::read_to_string(&process.log).unwrap_or_default();
    eprintln!("[exit] mailroom serve all, a port held: exited after {took:?} ({status})");
    assert!(!status.success(), "it exited {status}, as if it had served");
    assert!(
        log.contains(&format!("127.0.0.1:{held}")) && log.contains("MAILROOM_WEB__PORT"),
        "the error names neither the held address nor the setting that moves it:\n{log}"
    );
    // Every port is bound before any service starts: none started (no "serving" line, no
    // migration, no consumer joined) only to be stopped again.
    assert!(
        !log.lines().any(|line| line.contains("serving")),
        "services started before the held port was found:\n{log}"
    );
    drop(holder);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_does_not_start_stops_the_ones_started_before_it_gracefully() {
    // Identity starts and serves; access, started after it, has a setting it cannot read.
    let mut settings = serve_settings();
    settings.push(("MAILROOM_ACCESS__CONSISTENCY_WAIT_MS", "soon".to_owned()));
    // A drain longer than the test waits: a process that never became ready has no callers
    // to drain, and must not wait it out.
    settings.push(("MAILROOM_SHUTDOWN_DRAIN_MS", "300000".to_owned()));
    let mut process = Process::start(&["serve", "identity,access"], &settings).await;
    let Some((took, status)) = process.exited_within(START).await else {
        panic!(
            "mailroom serve kept running when access could not start (waiting out its drain?):\n{}",
            process.log_tail()
        );
    };
    let log = std::fs::read_to_string(&process.log).unwrap_or_default();
    eprintln!("[exit] mailroom serve identity,access, access misconfigured: exited after {took:?} ({status})");
    assert!(!status.success(), "it exited {status}, as if it had served");
    assert!(
        log.contains("CONSISTENCY_WAIT_MS") && log.contains("access's configuration"),
        "the error names neither the service nor the setting it could not read:\n{log}"
    );
    // Identity had started: it is stopped as on any shutdown (its server drains, its
    // consumers leave their groups, its relay steps down), not dropped with the process.
    assert!(
        log.lines()
            .any(|line| line.contains("serving") && line.contains("identity")),
        "identity did not start first, so this tests nothing:\n{log}"
    );
    assert!(
        log.contains("stopping the ones that did") && log.contains("drained: no new connections"),
        "identity, started before access failed, was not shut down gracefully:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mailroom_dev_whose_registry_never_hears_of_the_demo_people_runs_on_and_says_why() {
    // The broker accepts connections and never answers: identity's events never reach the
    // mailbox registry, so the demo mailboxes cannot be connected.
    let (broker, _connections) = silent_server().await;
    let mut dev = Process::start(
        &["dev"],
        &[
            ("KAFKA_BROKERS", broker.to_string()),
            ("MAILROOM_DEV_SEED_WAIT_S", "3".to_owned()),
            ("MAILROOM_SHUTDOWN_DRAIN_MS", "0".to_owned()),
        ],
    )
    .await;
    let deadline = Instant::now() + START;
    let log = loop {
        if let Ok(Some(status)) = dev.child.try_wait() {
            panic!(
                "mailroom dev exited ({status}) when its demo mailboxes could not be connected:\n{}",
                dev.log_tail()
            );
        }
        let log = std::fs::read_to_string(&dev.log).unwrap_or_default();
        if log.contains("Mailroom dev is running") {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "mailroom dev printed no summary within {START:?}:\n{}",
            dev.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        log.contains("the demo mailboxes are not connected") && log.contains("`.ci/up reset`"),
        "the summary does not say the demo mailboxes are missing and what to run:\n{log}"
    );
    assert!(
        matches!(dev.child.try_wait(), Ok(None)),
        "mailroom dev did not keep running"
    );
    dev.signal(libc::SIGTERM);
    let exited = dev.exited_within(REQUEST_TIMEOUT + MARGIN).await;
    assert!(
        exited.is_some_and(|(_, status)| status.success()),
        "mailroom dev did not stop cleanly on SIGTERM: {exited:?}"
    );
}
