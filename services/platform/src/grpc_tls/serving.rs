//! The gRPC port's TLS while it serves, renewed without a restart.
//!
//! The certificate and key (and, with `CLIENT_AUTH`, the CA callers' certificates must chain
//! to) are read at start and read again every [`RELOAD_CHECK_EVERY`]
//! (`MAILROOM_GRPC_TLS__RELOAD_CHECK_MS`): cert-manager renews them in place, in the mounted
//! Secret. Files whose contents changed are loaded and served to every new connection from
//! then on (connections already open keep theirs); files that cannot be used (half written,
//! not PEM, a key that is not the certificate's) are logged as an error and the previous ones
//! kept, until a later look finds them usable.
//!
//! Handshakes run in tasks of their own, each given [`HANDSHAKE_TIMEOUT`], so a slow or failing
//! client holds up no other; a failed handshake is logged at debug and the port goes on
//! accepting. Only HTTP/2 is offered (ALPN `h2`). [`crate::metrics::TLS_CERT_EXPIRY`]
//! `{file="grpc"}` says when the certificate being served expires.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{GrpcTlsConfig, GrpcTlsError, CA_FILE_VAR, CERT_FILE_VAR, KEY_FILE_VAR};

/// How often the files are looked at for a renewed certificate, unless
/// `MAILROOM_GRPC_TLS__RELOAD_CHECK_MS` says otherwise.
pub const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(30);
/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The `file` label of the gRPC certificate's expiry metric.
pub const EXPIRY_FILE_LABEL: &str = "grpc";
const ALPN_H2: &[u8] = b"h2";
/// Handshaken connections waiting for the server to take them.
const HANDSHAKEN_CAPACITY: usize = 64;

/// The identity the port serves and the TLS settings of new connections, reloaded from the
/// files when they change.
pub struct ServingTls {
    config: GrpcTlsConfig,
    provider: Arc<CryptoProvider>,
    certificate: Arc<ServedCertificate>,
    /// The file contents behind what is served now.
    loaded: Mutex<LoadedFiles>,
    acceptor: RwLock<TlsAcceptor>,
    check_every: Duration,
}

impl std::fmt::Debug for ServingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingTls")
            .field("cert_file", &self.config.cert_file)
            .field("client_auth", &self.config.client_auth)
            .field("check_every", &self.check_every)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
struct LoadedFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    /// Only with client auth: otherwise the CA is no concern of the server's.
    ca: Option<Vec<u8>>,
}

/// The certificate chain and key handed to each handshake: the latest usable ones.
struct ServedCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for ServedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedCertificate").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// A certificate chain and its key, parsed and matched, and the chain's first certificate's
/// notAfter (Unix seconds).
fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, i64), GrpcTlsError> {
    let unusable = |vars: &'static str, reason: String| GrpcTlsError::Unusable { vars, reason };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            unusable(
                CERT_FILE_VAR,
                format!("a certificate does not parse: {err}"),
            )
        })?;
    let Some(leaf) = chain.first() else {
        return Err(unusable(
            CERT_FILE_VAR,
            "the file holds no certificate".to_owned(),
        ));
    };
    let not_after = x509_parser::parse_x509_certificate(leaf)
        .map_err(|err| {
            unusable(
                CERT_FILE_VAR,
                format!("the certificate does not parse: {err}"),
            )
        })?
        .1
        .validity()
        .not_after
        .timestamp();
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| {
        unusable(
            KEY_FILE_VAR,
            format!("no private key parses in the file ({err})"),
        )
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|err| {
        unusable(
            "MAILROOM_GRPC_TLS__CERT_FILE / KEY_FILE",
            format!("the key cannot serve the certificate: {err}"),
        )
    })?;
    Ok((Arc::new(certified), not_after))
}

/// The server's TLS settings: the served certificate, HTTP/2, and with `ca_pem` the
/// verification of callers' certificates.
fn acceptor(
    certificate: Arc<ServedCertificate>,
    ca_pem: Option<&[u8]>,
    provider: &Arc<CryptoProvider>,
) -> Result<TlsAcceptor, GrpcTlsError> {
    let unusable = |vars: &'static str, reason: String| GrpcTlsError::Unusable { vars, reason };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| unusable(CERT_FILE_VAR, format!("no TLS version to serve: {err}")))?;
    let builder = match ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca_pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_pem) {
                let cert = cert.map_err(|err| {
                    unusable(
                        CA_FILE_VAR,
                        format!("a CA certificate does not parse: {err}"),
                    )
                })?;
                roots.add(cert).map_err(|err| {
                    unusable(CA_FILE_VAR, format!("a CA certificate is unusable: {err}"))
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|err| {
                        unusable(
                            CA_FILE_VAR,
                            format!("callers' certificates cannot be checked against it: {err}"),
                        )
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(certificate);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn set_expiry(not_after: i64) {
    metrics::gauge!(crate::metrics::TLS_CERT_EXPIRY, "file" => EXPIRY_FILE_LABEL)
        .set(not_after as f64);
}

fn shown_time(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| unix.to_string())
}

impl ServingTls {
    /// Reads and checks the files; `None` when the port serves plaintext. Nothing is
    /// recorded: see [`Self::load`].
    pub fn build(config: &GrpcTlsConfig) -> Result<Option<Self>, GrpcTlsError> {
        Ok(Self::build_with_expiry(config)?.map(|(serving, _)| serving))
    }

    fn build_with_expiry(config: &GrpcTlsConfig) -> Result<Option<(Self, i64)>, GrpcTlsError> {
        let files = config.read()?;
        let Some((cert, key)) = files.identity else {
            return Ok(None);
        };
        let ca = if files.client_auth { files.ca } else { None };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (served, not_after) = certified_key(&cert, &key, &provider)?;
        let certificate = Arc::new(ServedCertificate {
            current: RwLock::new(served),
        });
        let acceptor = acceptor(certificate.clone(), ca.as_deref(), &provider)?;
        let check_every = config
            .reload_check_ms
            .map(Duration::from_millis)
            .filter(|every| !every.is_zero())
            .unwrap_or(RELOAD_CHECK_EVERY);
        Ok(Some((
            Self {
                config: config.clone(),
                provider,
                certificate,
                loaded: Mutex::new(LoadedFiles { cert, key, ca }),
                acceptor: RwLock::new(acceptor),
                check_every,
            },
            not_after,
        )))
    }

    /// Reads and checks the files, and records when the certificate expires; `None` when the
    /// port serves plaintext.
    pub fn load(config: &GrpcTlsConfig) -> Result<Option<Arc<Self>>, GrpcTlsError> {
        let Some((serving, not_after)) = Self::build_with_expiry(config)? else {
            return Ok(None);
        };
        set_expiry(not_after);
        tracing::info!(
            not_after = %shown_time(not_after),
            client_auth = config.client_auth,
            "gRPC port serves TLS"
        );
        Ok(Some(Arc::new(serving)))
    }

    /// How often the files are looked at.
    pub fn check_every(&self) -> Duration {
        self.check_every
    }

    /// What new connections are handshaken with.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again and serves what changed in them, if it can be used; else logs why
    /// and keeps what it serves. Whether anything new is served.
    pub fn reload_if_changed(&self) -> bool {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let now = match self.read_again(loaded.ca.is_some()) {
            Ok(now) => now,
            Err(err) => {
                tracing::error!(
                    error = %err,
                    "gRPC TLS files cannot be read again; still serving the certificate loaded before"
                );
                return false;
            }
        };
        if now == *loaded {
            return false;
        }
        let mut renewed = false;
        if (&now.cert, &now.key) != (&loaded.cert, &loaded.key) {
            match certified_key(&now.cert, &now.key, &self.provider) {
                Ok((served, not_after)) => {
                    *self
                        .certificate
                        .current
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = served;
                    set_expiry(not_after);
                    tracing::info!(
                        not_after = %shown_time(not_after),
                        "gRPC TLS certificate renewed: new connections get the new one"
                    );
                    loaded.cert = now.cert;
                    loaded.key = now.key;
                    renewed = true;
                }
                Err(err) => tracing::error!(
                    error = %err,
                    "a renewed gRPC TLS certificate cannot be used; still serving the one loaded before"
                ),
            }
        }
        if now.ca != loaded.ca {
            match acceptor(self.certificate.clone(), now.ca.as_deref(), &self.provider) {
                Ok(acceptor) => {
                    *self
                        .acceptor
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = acceptor;
                    tracing::info!(
                        "gRPC TLS CA renewed: new connections' client certificates are checked against it"
                    );
                    loaded.ca = now.ca;
                    renewed = true;
                }
                Err(err) => tracing::error!(
                    error = %err,
                    "a renewed gRPC TLS CA cannot be used; still checking callers against the one loaded before"
                ),
            }
        }
        renewed
    }

    fn read_again(&self, with_ca: bool) -> Result<LoadedFiles, GrpcTlsError> {
        let read = |var: &'static str, path: &Option<std::path::PathBuf>| {
            let path = path.as_deref().ok_or(GrpcTlsError::Unusable {
                vars: var,
                reason: "no longer set".to_owned(),
            })?;
            std::fs::read(path).map_err(|source| GrpcTlsError::Read {
                var,
                path: path.display().to_string(),
                source,
            })
        };
        Ok(LoadedFiles {
            cert: read(CERT_FILE_VAR, &self.config.cert_file)?,
            key: read(KEY_FILE_VAR, &self.config.key_file)?,
            ca: with_ca
                .then(|| read(CA_FILE_VAR, &self.config.ca_file))
                .transpose()?,
        })
    }

    /// The TLS connections made from `tcp`'s: each handshaken in a task of its own (within
    /// [`HANDSHAKE_TIMEOUT`]), the files looked at every [`Self::check_every`] meanwhile.
    /// Dropping the stream stops accepting (and drops `tcp`, closing its listener).
    pub fn incoming<S>(
        self: Arc<Self>,
        tcp: S,
    ) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static
    where
        S: Stream<Item = Result<TcpStream, std::io::Error>> + Send + 'static,
    {
        let (handshaken, taken) = tokio::sync::mpsc::channel(HANDSHAKEN_CAPACITY);
        tokio::spawn(async move {
            let mut tcp = Box::pin(tcp);
            let mut checks = tokio::time::interval(self.check_every);
            checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            checks.tick().await;
            loop {
                tokio::select! {
                    _ = handshaken.closed() => return,
                    _ = checks.tick() => {
                        self.reload_if_changed();
                    }
                    accepted = tcp.next() => match accepted {
                        None => return,
                        Some(Err(err)) => {
                            tracing::debug!(error = %err, "a gRPC connection could not be accepted");
                        }
                        Some(Ok(stream)) => {
                            let (acceptor, handshaken) = (self.acceptor(), handshaken.clone());
                            tokio::spawn(async move {
                                let peer = stream.peer_addr().ok();
                                let shaken = tokio::time::timeout(
                                    HANDSHAKE_TIMEOUT,
                                    acceptor.accept(stream),
                                )
                                .await;
                                match shaken {
                                    Ok(Ok(tls)) => {
                                        let _ = handshaken.send(tls).await;
                                    }
                                    Ok(Err(err)) => tracing::debug!(
                                        ?peer,
                                        error = %err,
                                        "TLS handshake with a gRPC caller failed"
                                    ),
                                    Err(_) => tracing::debug!(
                                        ?peer,
                                        "TLS handshake with a gRPC caller timed out"
                                    ),
                                }
                            });
                        }
                    }
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(taken).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "grpc-tls-serving-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A certificate for `localhost` expiring at `not_after` (Unix seconds), signed by a new
    /// CA: (CA, certificate, key) in PEM.
    fn issued(not_after: i64) -> (String, String, String) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + time_offset(not_after);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (ca_pem, cert.pem(), key.serialize_pem())
    }

    fn time_offset(seconds: i64) -> std::time::Duration {
        std::time::Duration::from_secs(seconds as u64)
    }

    fn write(dir: &Path, (ca, cert, key): &(String, String, String)) -> GrpcTlsConfig {
        std::fs::write(dir.join("ca.crt"), ca).unwrap();
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
        GrpcTlsConfig {
            cert_file: Some(dir.join("tls.crt")),
            key_file: Some(dir.join("tls.key")),
            ca_file: Some(dir.join("ca.crt")),
            client_auth: true,
            reload_check_ms: Some(50),
        }
    }

    fn served_expiry(serving: &ServingTls) -> i64 {
        let current = serving.certificate.current.read().unwrap().clone();
        x509_parser::parse_x509_certificate(current.end_entity_cert().unwrap())
            .unwrap()
            .1
            .validity()
            .not_after
            .timestamp()
    }

    fn expiry_metric(rendered: &str) -> Option<f64> {
        rendered
            .lines()
            .find(|line| {
                line.starts_with("mailroom_tls_cert_expiry_timestamp_seconds{file=\"grpc\"}")
            })
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }

    /// A renewed pair is served and its expiry recorded; files that cannot be used leave the
    /// served certificate as it was; unchanged files change nothing.
    #[test]
    fn renewed_files_are_served_and_unusable_ones_ignored() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let dir = scratch();
            let (first, second) = (2_000_000_000, 2_100_000_000);
            let config = write(&dir, &issued(first));
            let serving = ServingTls::load(&config).unwrap().expect("TLS is served");
            assert_eq!(served_expiry(&serving), first);
            assert_eq!(expiry_metric(&handle.render()), Some(first as f64));
            assert_eq!(serving.check_every(), Duration::from_millis(50));
            assert!(!serving.reload_if_changed(), "nothing changed");

            let renewed = issued(second);
            write(&dir, &renewed);
            assert!(serving.reload_if_changed(), "renewed files are loaded");
            assert_eq!(served_expiry(&serving), second);
            assert_eq!(expiry_metric(&handle.render()), Some(second as f64));

            std::fs::write(dir.join("tls.crt"), "garbage").unwrap();
            assert!(!serving.reload_if_changed());
            let (_, _, other_key) = issued(first);
            std::fs::write(dir.join("tls.crt"), &renewed.1).unwrap();
            std::fs::write(dir.join("tls.key"), other_key).unwrap();
            assert!(
                !serving.reload_if_changed(),
                "a key that is not the certificate's"
            );
            std::fs::remove_file(dir.join("tls.key")).unwrap();
            assert!(!serving.reload_if_changed(), "a missing key");
            assert_eq!(served_expiry(&serving), second, "still the last usable one");
            assert_eq!(expiry_metric(&handle.render()), Some(second as f64));
            let _ = std::fs::remove_dir_all(dir);
        });
    }

    /// With client auth a changed CA file makes a new acceptor; a garbage one does not.
    #[test]
    fn a_renewed_ca_is_used_for_new_connections() {
        let dir = scratch();
        let config = write(&dir, &issued(2_000_000_000));
        let serving = ServingTls::build(&config).unwrap().unwrap();
        let before = serving.acceptor();
        let (other_ca, _, _) = issued(2_000_000_000);
        std::fs::write(
            dir.join("ca.crt"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(!serving.reload_if_changed(), "a CA that does not parse");
        assert!(Arc::ptr_eq(before.config(), serving.acceptor().config()));
        std::fs::write(dir.join("ca.crt"), other_ca).unwrap();
        assert!(serving.reload_if_changed());
        assert!(!Arc::ptr_eq(before.config(), serving.acceptor().config()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
