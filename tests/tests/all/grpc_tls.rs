//! gRPC between services over TLS and mutual TLS (`MAILROOM_GRPC_TLS__*`), with a CA the test
//! makes: identity and access serve on TLS ports, callers reach them through
//! `mailroom-clients` on `https://` endpoints named by DNS (`localhost`), and access fetches
//! identity's signing keys over the same TLS. A certificate renewed in its files (as
//! cert-manager does) is served without a restart.

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use mailroom_clients::{ClientTls, Peer, PeerChannel, PeerErrorKind, ServiceCredential, Settings};
use mailroom_platform::config::PlatformConfig;
use mailroom_platform::kafka::Topics;
use mailroom_proto::ops::v1 as ops;
use mailroom_tests::tls_stack::{test_dir, TestCa};
use mailroom_tests::{create_database, identity_config, test_secret, StackEnv, TEST_CLIENT};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

/// Identity (and access when asked) serving over TLS for one test, stopped on drop (also
/// used by `ctl_tls`).
pub(crate) struct TlsServices {
    /// The CA that issued the services' certificate.
    pub(crate) ca: TestCa,
    /// Holds `ca.crt`, and `service.crt`/`.key`: the certificate of `localhost`/127.0.0.1.
    pub(crate) dir: std::path::PathBuf,
    /// `https://localhost:<port>`.
    pub(crate) identity: String,
    pub(crate) access: Option<String>,
    shutdown: CancellationToken,
}

impl Drop for TlsServices {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The platform configuration of a service of this test: the stack, and gRPC TLS with the
/// certificate of `localhost`/127.0.0.1 signed by the test's CA.
fn platform(dir: &Path, database_url: &str, topics: &Topics, client_auth: bool) -> PlatformConfig {
    let env = StackEnv::load();
    let figment = Figment::new()
        .merge(("database_url", database_url))
        .merge(("redis_url", env.redis_url.clone()))
        .merge(("kafka_brokers", env.kafka_brokers.clone()))
        .merge(("kafka_topic_prefix", topics.prefix().to_owned()))
        .merge(("listen_host", "127.0.0.1"))
        .merge(("db_max_connections", 4))
        .merge(("metrics_enabled", false))
        .merge(("log_level", "warn"))
        .merge(("grpc_tls.cert_file", dir.join("service.crt")))
        .merge(("grpc_tls.key_file", dir.join("service.key")))
        .merge(("grpc_tls.ca_file", dir.join("ca.crt")))
        .merge(("grpc_tls.client_auth", client_auth))
        // Renewed files are looked for every 200 ms here (30 s by default).
        .merge(("grpc_tls.reload_check_ms", 200));
    PlatformConfig::load(&figment).expect("the TLS platform configuration is accepted")
}

async fn bound() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    (listener, port)
}

/// Starts identity, and access (verifying tokens itself, with keys fetched from identity over
/// TLS) when `with_access`.
pub(crate) async fn start(client_auth: bool, with_access: bool) -> TlsServices {
    let ca = TestCa::new("mailroom grpc test CA");
    let dir = test_dir("grpc-tls");
    ca.write(&dir, "ca.crt");
    ca.issue("mailroom service", &["localhost", "127.0.0.1"])
        .write(&dir, "service");
    let env = StackEnv::load();
    let database_url = create_database(&env.database_url).await;
    let topics = Topics::new(format!("tests.{}", uuid::Uuid::new_v4().simple()));
    let platform = platform(&dir, &database_url, &topics, client_auth);
    let shutdown = CancellationToken::new();

    let config = identity_config(
        &env,
        vec![SecretString::from(
            mailroom_identity::keys::KeyRing::generate_seed(),
        )],
    );
    let identity = mailroom_identity::start(&platform, config)
        .await
        .expect("identity starts over TLS");
    let verifier = identity.verifier.clone();
    let (listener, identity_port) = bound().await;
    let (server_platform, stop) = (platform.clone(), shutdown.clone());
    tokio::spawn(async move {
        let served = identity
            .run(listener, verifier, &server_platform, stop)
            .await;
        if let Err(err) = served {
            eprintln!("identity over TLS stopped: {err}");
        }
    });
    let identity_endpoint = format!("https://localhost:{identity_port}");

    let access = if with_access {
        let config = mailroom_access::AccessConfig {
            identity_endpoint: identity_endpoint.clone(),
            consumer_group: format!("tests-access-{}", uuid::Uuid::new_v4().simple()),
            ..Default::default()
        };
        let access = mailroom_access::start(&platform, config)
            .await
            .expect("access starts over TLS");
        let verifier = access.verifier.clone();
        let (listener, port) = bound().await;
        let (server_platform, stop) = (platform.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(err) = access.run(listener, verifier, &server_platform, stop).await {
                eprintln!("access over TLS stopped: {err}");
            }
        });
        Some(format!("https://localhost:{port}"))
    } else {
        None
    };
    TlsServices {
        ca,
        dir,
        identity: identity_endpoint,
        access,
        shutdown,
    }
}

impl TlsServices {
    /// Client settings trusting this test's CA, presenting the service certificate when
    /// `with_certificate` (as a peer service does).
    fn settings(&self, with_certificate: bool) -> Settings {
        let (cert, key) = (self.dir.join("service.crt"), self.dir.join("service.key"));
        let tls = ClientTls::from_files(
            Some(&self.dir.join("ca.crt")),
            with_certificate.then_some(cert.as_path()),
            with_certificate.then_some(key.as_path()),
        )
        .expect("the test's PEM files");
        Settings {
            connect_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
            tls: Some(tls),
            ..Settings::default()
        }
    }

    /// Asks `endpoint`'s health service until it answers (the server is starting), within
    /// 20 s; the last answer.
    async fn reachable(
        &self,
        peer: Peer,
        endpoint: &str,
        settings: &Settings,
    ) -> Result<(), mailroom_clients::PeerError> {
        let channel = PeerChannel::new(peer, endpoint, settings).expect("a channel");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let answer = channel.reachable().await;
            if answer.is_ok() || tokio::time::Instant::now() > deadline {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the TLS server answers a client that may reach it.
    pub(crate) async fn wait_until_serving(&self, endpoint: &str) {
        self.reachable(Peer::Identity, endpoint, &self.settings(true))
            .await
            .unwrap_or_else(|err| panic!("{endpoint} did not answer over TLS: {err}"));
    }

    /// Whether a client with `settings` gets an answer from `endpoint` (already serving).
    async fn answers(&self, endpoint: &str, settings: &Settings) -> Result<(), String> {
        PeerChannel::new(Peer::Identity, endpoint, settings)
            .expect("a channel")
            .reachable()
            .await
            .map_err(|err| err.to_string())
    }

    /// The operator's service token for `target`, fetched from identity with `settings`.
    async fn operator_token(
        &self,
        settings: &Settings,
        target: Peer,
    ) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, String> {
        let channel = PeerChannel::new(Peer::Identity, &self.identity, settings)
            .expect("a channel to identity");
        let credential = ServiceCredential::new(
            channel,
            TEST_CLIENT,
            SecretString::from(test_secret(TEST_CLIENT)),
            Duration::from_secs(10),
        );
        credential
            .bearer(target)
            .await
            .map_err(|err| err.to_string())
    }
}

/// Identity on a TLS port: a client trusting the test's CA calls it (health and a service
/// token) through `mailroom-clients`; a plaintext client and a client trusting another CA get
/// no answer.
#[tokio::test]
async fn grpc_tls_callers_must_trust_the_services_ca() {
    let services = start(false, false).await;
    services.wait_until_serving(&services.identity).await;

    let trusting = services.settings(false);
    services
        .answers(&services.identity, &trusting)
        .await
        .expect("a client trusting the CA, without a certificate of its own, is answered");
    services
        .operator_token(&trusting, Peer::Access)
        .await
        .expect("a service token is issued over TLS");

    let plaintext = services.identity.replace("https://", "http://");
    let err = services
        .answers(&plaintext, &Settings::default())
        .await
        .expect_err("a plaintext client is not answered by a TLS port");
    assert!(err.contains("identity"), "{err}");

    let stranger_ca = TestCa::new("another CA");
    let stranger = Settings {
        tls: Some(ClientTls {
            ca_pem: Some(stranger_ca.cert_pem.as_bytes().to_vec()),
            identity: None,
            domain_name: None,
        }),
        ..services.settings(false)
    };
    let err = services
        .answers(&services.identity, &stranger)
        .await
        .expect_err("a client trusting another CA refuses the service's certificate");
    assert!(err.contains("identity"), "{err}");
    let public_roots = Settings {
        tls: None,
        ..services.settings(false)
    };
    assert!(
        services
            .answers(&services.identity, &public_roots)
            .await
            .is_err(),
        "the public web roots do not vouch for a private CA"
    );
}

/// With `CLIENT_AUTH=true` a caller without a client certificate, or with one from another
/// CA, is refused; one with a certificate of the CA is answered. Access fetches identity's
/// signing keys over mutual TLS and so accepts the operator's token, fetched over mutual TLS
/// too.
#[tokio::test]
async fn grpc_tls_mutual_tls_refuses_callers_without_a_certificate() {
    let services = start(true, true).await;
    services.wait_until_serving(&services.identity).await;
    let access = services.access.clone().expect("access runs");
    services.wait_until_serving(&access).await;

    let without = services.settings(false);
    for endpoint in [&services.identity, &access] {
        let err = services
            .answers(endpoint, &without)
            .await
            .expect_err("a caller without a client certificate is refused");
        assert!(!err.is_empty());
    }
    assert!(
        services
            .operator_token(&without, Peer::Access)
            .await
            .is_err(),
        "no token is issued to a caller without a client certificate"
    );

    let stranger_ca = TestCa::new("another CA");
    let other = test_dir("grpc-tls-other");
    stranger_ca
        .issue("stranger", &["localhost"])
        .write(&other, "stranger");
    let stranger = Settings {
        tls: Some(
            ClientTls::from_files(
                Some(&services.dir.join("ca.crt")),
                Some(&other.join("stranger.crt")),
                Some(&other.join("stranger.key")),
            )
            .expect("the stranger's files"),
        ),
        ..services.settings(false)
    };
    assert!(
        services.answers(&access, &stranger).await.is_err(),
        "a client certificate from another CA is refused"
    );
    let _ = std::fs::remove_dir_all(other);

    let with = services.settings(true);
    services
        .answers(&services.identity, &with)
        .await
        .expect("a caller with a certificate of the CA is answered");
    let token = services
        .operator_token(&with, Peer::Access)
        .await
        .expect("a service token is issued over mutual TLS");

    // Access verifies the token with identity's keys, which it fetches over mutual TLS.
    let channel = PeerChannel::new(Peer::Access, &access, &with).expect("a channel to access");
    let mut request = tonic::Request::new(ops::ListDeadLettersRequest::default());
    request.metadata_mut().insert("authorization", token);
    let listed = ops::event_ops_service_client::EventOpsServiceClient::new(channel)
        .list_dead_letters(request)
        .await;
    let listed = listed.unwrap_or_else(|status| {
        panic!(
            "access answers the operator over mutual TLS, having fetched identity's keys: {}",
            mailroom_clients::PeerError::from_status(Peer::Access, &status)
        )
    });
    assert!(listed.into_inner().dead_letters.is_empty());

    // A refused handshake is a transport failure, not a refusal by the service.
    let refused = PeerChannel::new(Peer::Access, &access, &without)
        .expect("a channel")
        .reachable()
        .await
        .expect_err("refused");
    assert_eq!(refused.kind(), PeerErrorKind::Unavailable, "{refused}");
}

/// `mailroom health` against a mutual-TLS port: SERVING with the CA and a client certificate,
/// a failure (exit status 1, naming the endpoint) without the certificate. Runs the real
/// binary (`target/debug/mailroom`, or `MAILROOM_BIN`).
#[tokio::test]
async fn grpc_tls_health_command_checks_a_tls_port() {
    let services = start(true, false).await;
    services.wait_until_serving(&services.identity).await;
    let binary = std::env::var_os("MAILROOM_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("the test executable's path");
            exe.parent()
                .and_then(Path::parent)
                .expect("the target folder")
                .join("mailroom")
        });
    assert!(
        binary.is_file(),
        "{} is missing: build it first with `cargo build -p mailroom`",
        binary.display()
    );
    let health = |with_certificate: bool| {
        let mut command = tokio::process::Command::new(&binary);
        command
            .args(["health", "--timeout-secs", "5", "--ca-file"])
            .arg(services.dir.join("ca.crt"))
            .env_remove("MAILROOM_GRPC_TLS__CERT_FILE")
            .env_remove("MAILROOM_GRPC_TLS__KEY_FILE")
            .env_remove("MAILROOM_GRPC_TLS__CA_FILE");
        if with_certificate {
            command
                .arg("--cert-file")
                .arg(services.dir.join("service.crt"))
                .arg("--key-file")
                .arg(services.dir.join("service.key"));
        }
        command.arg(&services.identity);
        command
    };
    let served = health(true).output().await.expect("mailroom health runs");
    let said = String::from_utf8_lossy(&served.stdout);
    assert!(served.status.success(), "{said}");
    assert!(said.starts_with("SERVING"), "{said}");

    let refused = health(false).output().await.expect("mailroom health runs");
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.starts_with("NOT SERVING") && said.contains(&services.identity),
        "{said}"
    );
}

/// What a new TLS connection to `endpoint` (`https://localhost:<port>`) is shown: the
/// server's certificate (DER) and the protocol agreed by ALPN. Trusts `ca_pem`, offers `h2`.
async fn served_certificate(endpoint: &str, ca_pem: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let port: u16 = endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the endpoint's port");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("the CA's PEM")).expect("the CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the TLS port");
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("a server name"),
            tcp,
        ),
    )
    .await
    .expect("the handshake ends within 5 s")
    .expect("the handshake succeeds");
    let (_, session) = tls.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server shows a certificate")
        .to_vec();
    (leaf, session.alpn_protocol().map(<[u8]>::to_vec))
}

/// The DER of the first certificate in `pem`.
fn der(pem: &str) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    tokio_rustls::rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a certificate in PEM")
        .to_vec()
}

/// Writes `dir/<stem>.crt` and `.key` at once (written aside, then renamed over), as the
/// kubelet swaps a Secret's files.
fn replace_files(dir: &Path, stem: &str, cert_pem: &str, key_pem: &str) {
    for (ext, contents) in [("crt", cert_pem), ("key", key_pem)] {
        let aside = dir.join(format!(".{stem}.{ext}.new"));
        std::fs::write(&aside, contents).expect("write a renewed file");
        std::fs::rename(&aside, dir.join(format!("{stem}.{ext}"))).expect("rename it in place");
    }
}

/// A certificate renewed in the service's files (cert-manager's renewal) is served to new
/// connections within the reload interval, without a restart, and calls go on being answered;
/// a file that is not a certificate leaves the last good one served. Only `h2` is agreed, and a
/// client that never completes its handshake holds up no other.
#[tokio::test]
async fn grpc_tls_renewed_certificate_is_served_without_a_restart() {
    let services = start(false, false).await;
    services.wait_until_serving(&services.identity).await;
    let ca_pem = std::fs::read_to_string(services.dir.join("ca.crt")).expect("the CA file");
    let first = std::fs::read_to_string(services.dir.join("service.crt")).expect("the cert");

    // A caller that connects and then says nothing.
    let port = services.identity.rsplit(':').next().expect("a port");
    let _silent = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("a silent connection");

    let (shown, alpn) = served_certificate(&services.identity, &ca_pem).await;
    assert_eq!(shown, der(&first), "the certificate of the files at start");
    assert_eq!(
        alpn.as_deref(),
        Some(&b"h2"[..]),
        "HTTP/2 is agreed by ALPN"
    );
    let trusting = services.settings(false);
    services
        .answers(&services.identity, &trusting)
        .await
        .expect("answered with the first certificate");

    // The CA issues the service a new certificate (a new key, a new serial), written over
    // the old files.
    let renewed = services
        .ca
        .issue("mailroom service", &["localhost", "127.0.0.1"]);
    replace_files(
        &services.dir,
        "service",
        &renewed.cert_pem,
        &renewed.key_pem,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (shown, _) = served_certificate(&services.identity, &ca_pem).await;
        if shown == der(&renewed.cert_pem) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate is not served 10 s after it was written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    services
        .answers(&services.identity, &trusting)
        .await
        .expect("answered on a new connection with the renewed certificate");
    services
        .operator_token(&trusting, Peer::Access)
        .await
        .expect("a service token is issued with the renewed certificate");

    // A half-written or broken renewal: the last good certificate stays.
    std::fs::write(services.dir.join("service.crt"), "not a certificate")
        .expect("overwrite the certificate");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (shown, _) = served_certificate(&services.identity, &ca_pem).await;
    assert_eq!(
        shown,
        der(&renewed.cert_pem),
        "a file that is not a certificate leaves the last good one served"
    );
    services
        .answers(&services.identity, &trusting)
        .await
        .expect("answered while the certificate file is broken");
}
