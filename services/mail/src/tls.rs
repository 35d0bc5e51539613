//! The one TLS client configuration of the process: rustls with the ring provider, TLS 1.2
//! and 1.3, certificates verified against the web PKI roots (webpki-roots) for the name the
//! person typed. Built once and shared by every connection; a handshake that fails, or a
//! host that is not a name a certificate can be checked against, is a [`TlsError`], never a
//! connection without verification.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the host is not a name a certificate can be checked against")]
    Name,
    #[error("{0}")]
    Handshake(#[source] std::io::Error),
}

/// The process's TLS client configuration (built on first use).
pub fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| Arc::new(build())).clone()
}

fn build() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            // The ring provider supports the default versions, so this cannot happen in
            // practice; and a config without roots only makes handshakes fail, never pass.
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
}

/// Runs the TLS handshake over `stream`, checking the certificate against `host`.
pub async fn wrap<S>(
    config: &Arc<rustls::ClientConfig>,
    host: &str,
    stream: S,
) -> Result<TlsStream<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned()).map_err(|_| TlsError::Name)?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, stream)
        .await
        .map_err(TlsError::Handshake)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_built_once_and_trusts_the_web_roots() {
        let (a, b) = (client_config(), client_config());
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[tokio::test]
    async fn a_host_that_is_no_certificate_name_is_refused_before_any_byte() {
        let (client, _server) = tokio::io::duplex(64);
        let err = wrap(&client_config(), "not a host!", client)
            .await
            .unwrap_err();
        assert!(matches!(err, TlsError::Name), "{err:?}");
    }

    #[tokio::test]
    async fn a_peer_that_does_not_speak_tls_fails_the_handshake() {
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let _ = server.write_all(b"* OK IMAP4rev1 ready\r\n").await;
            let _ = server.shutdown().await;
        });
        let err = wrap(&client_config(), "imap.example.com", client)
            .await
            .unwrap_err();
        assert!(matches!(err, TlsError::Handshake(_)), "{err:?}");
    }
}
