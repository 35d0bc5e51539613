//! TLS to peers: what a client trusts (a CA bundle, else the public web roots) and the
//! certificate it presents when the peer asks for one (mutual TLS). Used for every `https://`
//! endpoint; `http://` endpoints stay plaintext.

use std::path::Path;

/// The TLS a client uses for `https://` endpoints. Cheap to clone.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM CA certificates a peer's certificate must chain to; `None`: the public web roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and private key presented to peers that ask (mutual TLS).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name a peer's certificate must carry, instead of the endpoint's host: for an
    /// endpoint such as `https://localhost:50051` reached through a port-forward. `None`: the
    /// endpoint's host.
    pub domain_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("domain_name", &self.domain_name)
            .finish()
    }
}

/// A TLS file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read the {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("a client certificate needs its key, and a key its certificate: set both or neither")]
    HalfIdentity,
}

impl ClientTls {
    /// What a service trusts and presents when it calls its peers: `MAILROOM_GRPC_TLS__CA_FILE`
    /// and the service's own certificate and key (`…CERT_FILE`, `…KEY_FILE`). `None` when none
    /// is set (the public web roots, no client certificate).
    pub fn from_platform(
        config: &mailroom_platform::grpc_tls::GrpcTlsConfig,
    ) -> Result<Option<Self>, mailroom_platform::grpc_tls::GrpcTlsError> {
        let files = config.read()?;
        if files.ca.is_none() && files.identity.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            ca_pem: files.ca,
            identity: files.identity,
            domain_name: None,
        }))
    }

    /// tonic's TLS settings for these: the server name is [`ClientTls::domain_name`] when set,
    /// else the endpoint's host (which the caller sets).
    pub fn tonic_config(&self) -> tonic::transport::ClientTlsConfig {
        let config = mailroom_platform::grpc_tls::client_tls_config(
            self.ca_pem.as_deref(),
            self.identity
                .as_ref()
                .map(|(cert, key)| (cert.as_slice(), key.as_slice())),
        );
        match &self.domain_name {
            Some(name) => config.domain_name(name.clone()),
            None => config,
        }
    }

    /// The server name to check a peer's certificate against when its endpoint's host is
    /// `host`: [`ClientTls::domain_name`] when set, else `host`.
    pub fn server_name<'a>(&'a self, host: &'a str) -> &'a str {
        self.domain_name.as_deref().unwrap_or(host)
    }

    /// Reads a CA bundle and an optional client certificate and key (PEM files).
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self, TlsFileError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| TlsFileError::Read {
                what,
                path: path.display().to_string(),
                source,
            })
        };
        let ca_pem = ca.map(|p| read("CA certificate", p)).transpose()?;
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((read("certificate", c)?, read("private key", k)?)),
            (None, None) => None,
            _ => return Err(TlsFileError::HalfIdentity),
        };
        Ok(Self {
            ca_pem,
            identity,
            domain_name: None,
        })
    }
}
