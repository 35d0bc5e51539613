//! TLS on the gRPC port and towards peers (`MAILROOM_GRPC_TLS__*`): the files a service is
//! given, checked at start, and made into tonic's server and client TLS settings.
//!
//! - `CERT_FILE` and `KEY_FILE` (PEM): the service's certificate and key. Set, the gRPC port
//!   speaks TLS only; the same pair is the client certificate a service presents to its peers.
//! - `CA_FILE` (PEM): what a peer's certificate must chain to on `https://` endpoints (unset:
//!   the public web roots), and with `CLIENT_AUTH` what callers' certificates must chain to.
//! - `CLIENT_AUTH=true`: mutual TLS; a call without a valid client certificate is refused
//!   during the handshake.
//! - `RELOAD_CHECK_MS`: how often the port looks at its files for a renewed certificate
//!   (default 30 000: see [`serving`]).
//!
//! Every file is read and parsed when the configuration is loaded, so a missing or unusable
//! one stops the process at start, naming its variable. `http://` endpoints stay plaintext
//! whatever is set here. The port picks up renewed files while it runs ([`ServingTls`]);
//! calls to peers read them once, at start: a renewed client certificate or CA is used by
//! outgoing calls from the next restart.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

pub mod serving;
pub use serving::ServingTls;

pub const CERT_FILE_VAR: &str = "MAILROOM_GRPC_TLS__CERT_FILE";
pub const KEY_FILE_VAR: &str = "MAILROOM_GRPC_TLS__KEY_FILE";
pub const CA_FILE_VAR: &str = "MAILROOM_GRPC_TLS__CA_FILE";
pub const CLIENT_AUTH_VAR: &str = "MAILROOM_GRPC_TLS__CLIENT_AUTH";

/// The `grpc_tls` section of the platform configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct GrpcTlsConfig {
    /// The service's certificate chain (PEM).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The private key of that certificate (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// CA certificates peers (and, with `client_auth`, callers) must chain to (PEM).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Whether callers must present a certificate chaining to `ca_file`.
    #[serde(default)]
    pub client_auth: bool,
    /// How often (milliseconds) the port looks at the files for a renewed certificate;
    /// unset: [`serving::RELOAD_CHECK_EVERY`].
    #[serde(default)]
    pub reload_check_ms: Option<u64>,
}

/// Why the gRPC TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GrpcTlsError {
    #[error("{var}: cannot read {path}: {source}")]
    Read {
        var: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{var}: {path} holds no {what} in PEM form (-----BEGIN {what}-----)")]
    NotPem {
        var: &'static str,
        path: String,
        what: &'static str,
    },
    #[error("{set} is set but {missing} is not: the certificate and its key go together, set both or neither")]
    HalfIdentity {
        set: &'static str,
        missing: &'static str,
    },
    #[error(
        "{CLIENT_AUTH_VAR}=true needs TLS on the gRPC port: set {CERT_FILE_VAR} and {KEY_FILE_VAR}"
    )]
    ClientAuthWithoutTls,
    #[error("{CLIENT_AUTH_VAR}=true needs {CA_FILE_VAR}: the CA that callers' certificates must chain to")]
    ClientAuthWithoutCa,
    #[error("{vars}: {reason}")]
    Unusable { vars: &'static str, reason: String },
}

/// The PEM contents of the files, read once. The key never appears in `Debug`.
#[derive(Clone, Default)]
pub struct GrpcTlsFiles {
    /// The service's certificate chain and key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The CA bundle.
    pub ca: Option<Vec<u8>>,
    pub client_auth: bool,
}

impl std::fmt::Debug for GrpcTlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTlsFiles")
            .field("identity", &self.identity.is_some())
            .field("ca", &self.ca.is_some())
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

fn read_pem(
    var: &'static str,
    path: &Path,
    what: &'static str,
    marker: &str,
) -> Result<Vec<u8>, GrpcTlsError> {
    let bytes = std::fs::read(path).map_err(|source| GrpcTlsError::Read {
        var,
        path: path.display().to_string(),
        source,
    })?;
    if !String::from_utf8_lossy(&bytes).contains(marker) {
        return Err(GrpcTlsError::NotPem {
            var,
            path: path.display().to_string(),
            what,
        });
    }
    Ok(bytes)
}

impl GrpcTlsConfig {
    /// Whether the gRPC port speaks TLS.
    pub fn serves_tls(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Reads the files, checking that they go together and hold PEM.
    pub fn read(&self) -> Result<GrpcTlsFiles, GrpcTlsError> {
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some((
                read_pem(
                    CERT_FILE_VAR,
                    cert,
                    "CERTIFICATE",
                    "-----BEGIN CERTIFICATE-----",
                )?,
                read_pem(KEY_FILE_VAR, key, "PRIVATE KEY", "PRIVATE KEY-----")?,
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err(GrpcTlsError::HalfIdentity {
                    set: CERT_FILE_VAR,
                    missing: KEY_FILE_VAR,
                })
            }
            (None, Some(_)) => {
                return Err(GrpcTlsError::HalfIdentity {
                    set: KEY_FILE_VAR,
                    missing: CERT_FILE_VAR,
                })
            }
        };
        if self.client_auth && identity.is_none() {
            return Err(GrpcTlsError::ClientAuthWithoutTls);
        }
        if self.client_auth && self.ca_file.is_none() {
            return Err(GrpcTlsError::ClientAuthWithoutCa);
        }
        let ca = self
            .ca_file
            .as_deref()
            .map(|ca| {
                read_pem(
                    CA_FILE_VAR,
                    ca,
                    "CERTIFICATE",
                    "-----BEGIN CERTIFICATE-----",
                )
            })
            .transpose()?;
        Ok(GrpcTlsFiles {
            identity,
            ca,
            client_auth: self.client_auth,
        })
    }

    /// Reads the files and builds both the server's and a client's TLS from them, so that
    /// anything unusable (a certificate that does not parse, a key that is not the
    /// certificate's) is found at start.
    pub fn check(&self) -> Result<(), GrpcTlsError> {
        let files = self.read()?;
        ServingTls::build(self)?;
        if files.ca.is_some() || files.identity.is_some() {
            tonic::transport::Endpoint::from_static("https://peer.invalid")
                .tls_config(files.client_config())
                .map_err(|err| GrpcTlsError::Unusable {
                    vars: "MAILROOM_GRPC_TLS__CA_FILE / CERT_FILE / KEY_FILE",
                    reason: format!("a client's TLS cannot be built from them: {}", chain(&err)),
                })?;
        }
        Ok(())
    }

    /// The TLS for calling peers on `https://` endpoints: this service's CA (else the public
    /// web roots) and its certificate as the client's.
    pub fn client_config(&self) -> Result<ClientTlsConfig, GrpcTlsError> {
        Ok(self.read()?.client_config())
    }
}

impl GrpcTlsFiles {
    /// A client's TLS from these files ([`client_tls_config`]).
    pub fn client_config(&self) -> ClientTlsConfig {
        client_tls_config(
            self.ca.as_deref(),
            self.identity
                .as_ref()
                .map(|(cert, key)| (cert.as_slice(), key.as_slice())),
        )
    }
}

/// A client's TLS: trusting `ca_pem` (else the public web roots), presenting `identity`
/// (certificate chain and key, PEM) to peers that ask for one. The server name is the
/// endpoint's host unless the caller sets another (`domain_name`).
pub fn client_tls_config(
    ca_pem: Option<&[u8]>,
    identity: Option<(&[u8], &[u8])>,
) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new();
    config = match ca_pem {
        Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
        None => config.with_webpki_roots(),
    };
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    config
}

/// An error and its causes on one line (tonic's transport errors say little at the top).
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("grpc-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn nothing_set_is_plaintext() {
        let config = GrpcTlsConfig::default();
        config.check().unwrap();
        assert!(!config.serves_tls());
        assert!(ServingTls::build(&config).unwrap().is_none());
    }

    #[test]
    fn a_key_without_its_certificate_is_refused_naming_the_variable() {
        let dir = scratch();
        let config = GrpcTlsConfig {
            key_file: Some(file(&dir, "tls.key", "-----BEGIN PRIVATE KEY-----\n")),
            ..Default::default()
        };
        let err = config.check().unwrap_err().to_string();
        assert!(
            err.contains(CERT_FILE_VAR) && err.contains(KEY_FILE_VAR),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_file_is_refused_naming_the_variable() {
        let config = GrpcTlsConfig {
            ca_file: Some("/nonexistent/ca.crt".into()),
            ..Default::default()
        };
        let err = config.check().unwrap_err().to_string();
        assert!(err.starts_with(CA_FILE_VAR), "{err}");
        assert!(err.contains("/nonexistent/ca.crt"), "{err}");

        let dir = scratch();
        let config = GrpcTlsConfig {
            ca_file: Some(file(&dir, "ca.crt", "not a certificate")),
            ..Default::default()
        };
        let err = config.check().unwrap_err().to_string();
        assert!(err.starts_with(CA_FILE_VAR) && err.contains("PEM"), "{err}");
    }

    #[test]
    fn client_auth_needs_tls_and_a_ca() {
        let config = GrpcTlsConfig {
            client_auth: true,
            ..Default::default()
        };
        let err = config.check().unwrap_err().to_string();
        assert!(
            err.contains(CLIENT_AUTH_VAR) && err.contains(CERT_FILE_VAR),
            "{err}"
        );

        let dir = scratch();
        let config = GrpcTlsConfig {
            cert_file: Some(file(&dir, "tls.crt", "-----BEGIN CERTIFICATE-----\n")),
            key_file: Some(file(&dir, "tls.key", "-----BEGIN PRIVATE KEY-----\n")),
            client_auth: true,
            ..Default::default()
        };
        let err = config.check().unwrap_err().to_string();
        assert!(
            err.contains(CLIENT_AUTH_VAR) && err.contains(CA_FILE_VAR),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_that_does_not_parse_is_refused_at_start() {
        let dir = scratch();
        let config = GrpcTlsConfig {
            cert_file: Some(file(
                &dir,
                "tls.crt",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            )),
            key_file: Some(file(
                &dir,
                "tls.key",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            )),
            ..Default::default()
        };
        let err = config.check().unwrap_err().to_string();
        assert!(err.starts_with("MAILROOM_GRPC_TLS__CERT_FILE"), "{err}");
    }
}
