//! Opening an IMAP session to a mailbox's server: TCP, then TLS, STARTTLS or neither as the
//! registry says, then LOGIN; every failure sorted into the kind a person can act on
//! (wrong password, unreachable, TLS, timeout, protocol). The password is handed to the
//! server and nowhere else.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_imap::Session;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::{FailureKind, SyncFailure};

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Tls,
    StartTls,
    None,
}

/// Where and as whom to log in.
#[derive(Clone)]
pub struct Login {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub password: SecretString,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Any byte stream a session can run over (plain TCP or TLS).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> Stream for T {}

pub type ImapSession = Session<Box<dyn Stream>>;

/// TLS settings shared by every connection of the process (web PKI roots).
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
    Arc::new(config)
}

/// Connects and logs in within `timeout`.
pub async fn connect(
    login: &Login,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
    allow_local: bool,
) -> Result<ImapSession, SyncFailure> {
    match tokio::time::timeout(timeout, connect_inner(login, tls, allow_local)).await {
        Ok(result) => result,
        Err(_) => Err(SyncFailure::new(
            FailureKind::Timeout,
            format!(
                "{}:{} did not complete the login within {} s",
                login.host,
                login.port,
                timeout.as_secs()
            ),
        )),
    }
}

async fn connect_inner(
    login: &Login,
    tls: &Arc<rustls::ClientConfig>,
    allow_local: bool,
) -> Result<ImapSession, SyncFailure> {
    let tcp = open(login, allow_local).await?;
    let stream: Box<dyn Stream> = match login.security {
        Security::None => Box::new(tcp),
        Security::Tls => Box::new(tls_wrap(login, tls, tcp).await?),
        Security::StartTls => {
            let mut client = async_imap::Client::new(tcp);
            greeting(login, &mut client).await?;
            client
                .run_command_and_check_ok("STARTTLS", None)
                .await
                .map_err(|e| {
                    SyncFailure::new(
                        FailureKind::Tls,
                        format!("{} refused STARTTLS: {e}", login.host),
                    )
                })?;
            let tls: Box<dyn Stream> = Box::new(tls_wrap(login, tls, client.into_inner()).await?);
            return authenticate(login, async_imap::Client::new(tls)).await;
        }
    };
    let mut client = async_imap::Client::new(stream);
    greeting(login, &mut client).await?;
    authenticate(login, client).await
}

/// Opens TCP through the platform's dialer (no loopback or link-local destinations unless
/// allowed).
async fn open(login: &Login, allow_local: bool) -> Result<TcpStream, SyncFailure> {
    mailroom_platform::net::dial(&login.host, login.port, allow_local)
        .await
        .map_err(|e| {
            SyncFailure::new(
                FailureKind::Unreachable,
                format!("cannot reach {}:{}: {e}", login.host, login.port),
            )
        })
}

async fn tls_wrap(
    login: &Login,
    tls: &Arc<rustls::ClientConfig>,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, SyncFailure> {
    let name = rustls::pki_types::ServerName::try_from(login.host.clone()).map_err(|_| {
        SyncFailure::new(
            FailureKind::Tls,
            format!(
                "`{}` is not a name a certificate can be checked against",
                login.host
            ),
        )
    })?;
    tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| {
            SyncFailure::new(
                FailureKind::Tls,
                format!("TLS with {} failed: {e}", login.host),
            )
        })
}

async fn greeting<S: Stream>(
    login: &Login,
    client: &mut async_imap::Client<S>,
) -> Result<(), SyncFailure> {
    match client.read_response().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(SyncFailure::new(
            FailureKind::Protocol,
            format!("{} closed the connection before greeting", login.host),
        )),
        Err(e) => Err(SyncFailure::new(
            FailureKind::Protocol,
            format!("no IMAP greeting from {}: {e}", login.host),
        )),
    }
}

async fn authenticate<S: Stream + 'static>(
    login: &Login,
    client: async_imap::Client<S>,
) -> Result<Session<S>, SyncFailure> {
    match client
        .login(&login.username, login.password.expose_secret())
        .await
    {
        Ok(session) => Ok(session),
        Err((async_imap::error::Error::No(text), _)) => Err(SyncFailure::new(
            FailureKind::AuthFailed,
            format!(
                "{} refused the login for `{}` ({}); update the mailbox's password or server in the registry",
                login.host,
                login.username,
                one_line(&text)
            ),
        )),
        Err((e, _)) => Err(SyncFailure::new(
            FailureKind::Protocol,
            format!("login to {} failed: {e}", login.host),
        )),
    }
}

/// Server text made safe for one line of a message: no control characters, bounded.
pub fn one_line(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = cleaned.trim();
    match trimmed.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &trimmed[..at]),
        None => trimmed.to_owned(),
    }
}
