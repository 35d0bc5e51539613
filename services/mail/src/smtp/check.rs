//! The SMTP login check: connect, TLS (implicit or STARTTLS) as the login says, EHLO, AUTH
//! PLAIN or LOGIN, and QUIT, within the connector's one deadline.
//!
//! Invariant: lettre speaks SMTP over the TCP connection [`crate::dial`] opened to an
//! admitted address (`AsyncSmtpConnection::connect_with_transport`); lettre never resolves
//! the name itself, so the address checked is the address used. Implicit TLS is the
//! process's one rustls configuration; STARTTLS is lettre's upgrade, built with the same
//! web PKI roots. Whatever the outcome, the connection is closed with a brief QUIT. The
//! password goes to the server and is never part of an error.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::connector::{Connector, Deadline};
use crate::dial::{Destination, DialError};
use crate::failure::FailureKind;
use crate::login::{Login, Security};
use crate::text::one_line;
use crate::tls::{self, TlsError};

/// How long the check waits for the server's goodbye once the login was decided.
const GOODBYE: Duration = Duration::from_millis(500);

/// Why an SMTP login check failed, in words that do not repeat the server's name.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("no answer within {} s", .0.as_secs_f32())]
    Timeout(Duration),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the server does not offer STARTTLS on this port")]
    NoStartTls,
    /// STARTTLS or its settings failed: lettre's words.
    #[error("{0}")]
    StartTls(String),
    /// The server refused the credentials (535, 534, 530, 454): its answer.
    #[error("the server answered {0}")]
    Refused(String),
    /// The server answered another error: its answer.
    #[error("the server answered {0}")]
    Answered(String),
    #[error(
        "the server offers no AUTH PLAIN or LOGIN on this connection (does it want TLS first?)"
    )]
    NoMechanism,
    #[error("{0}")]
    Protocol(String),
}

impl From<Deadline> for SmtpError {
    fn from(Deadline(after): Deadline) -> Self {
        SmtpError::Timeout(after)
    }
}

impl SmtpError {
    pub fn kind(&self) -> FailureKind {
        match self {
            SmtpError::Timeout(_) => FailureKind::Timeout,
            SmtpError::Dial(e) => e.kind(),
            SmtpError::Tls(_) | SmtpError::NoStartTls | SmtpError::StartTls(_) => FailureKind::Tls,
            SmtpError::Refused(_) => FailureKind::AuthFailed,
            SmtpError::Answered(_) | SmtpError::NoMechanism | SmtpError::Protocol(_) => {
                FailureKind::Protocol
            }
        }
    }

    /// Sorts what lettre reported; `deadline` is the check's, for a timeout.
    fn from_lettre(e: &lettre::transport::smtp::Error, deadline: Duration) -> Self {
        let detail = one_line(&e.to_string());
        if e.is_timeout() {
            return SmtpError::Timeout(deadline);
        }
        if e.is_tls() {
            return SmtpError::StartTls(detail);
        }
        if let Some(code) = e.status() {
            let code = code.to_string();
            if matches!(code.as_str(), "535" | "534" | "530" | "454") || code.starts_with("535") {
                return SmtpError::Refused(detail);
            }
            return SmtpError::Answered(detail);
        }
        if detail.contains("authentication mechanism") {
            return SmtpError::NoMechanism;
        }
        if detail.to_ascii_lowercase().contains("tls") || detail.contains("certificate") {
            return SmtpError::StartTls(detail);
        }
        SmtpError::Protocol(detail)
    }
}

/// Resolves and admits the login's host, then logs in and quits, within the deadline.
#[tracing::instrument(skip_all, fields(host = %login.host, port = login.port))]
pub async fn check_login(connector: &Connector, login: &Login) -> Result<(), SmtpError> {
    connector
        .within(async { session(connector, &connector.resolve(login).await?, login).await })
        .await
}

/// Logs in at an admitted destination (no name is resolved) and quits, within the deadline.
pub async fn check_login_at(
    connector: &Connector,
    destination: &Destination,
    login: &Login,
) -> Result<(), SmtpError> {
    connector
        .within(session(connector, destination, login))
        .await
}

async fn session(
    connector: &Connector,
    destination: &Destination,
    login: &Login,
) -> Result<(), SmtpError> {
    let deadline = connector.timeout();
    let lettre_error = |e: lettre::transport::smtp::Error| SmtpError::from_lettre(&e, deadline);
    let host = destination.host();
    let tcp = destination.connect().await?;
    let stream: Box<dyn AsyncTokioStream> = match login.security {
        Security::Tls => Box::new(Encrypted(tls::wrap(connector.tls(), host, tcp).await?)),
        Security::None | Security::StartTls => Box::new(tcp),
    };
    let hello = ClientId::default();
    let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &hello)
        .await
        .map_err(lettre_error)?;
    let outcome = async {
        if login.security == Security::StartTls {
            if !conn.can_starttls() {
                return Err(SmtpError::NoStartTls);
            }
            let params = TlsParameters::builder(host.to_owned())
                .certificate_store(CertificateStore::WebpkiRoots)
                .build_rustls()
                .map_err(|e| SmtpError::StartTls(one_line(&e.to_string())))?;
            conn.starttls(params, &hello).await.map_err(lettre_error)?;
        }
        conn.auth(
            &[Mechanism::Plain, Mechanism::Login],
            &Credentials::new(
                login.username.clone(),
                login.password.expose_secret().to_owned(),
            ),
        )
        .await
        .map(|_| ())
        .map_err(lettre_error)
    }
    .await;
    // Whatever happened, say goodbye briefly and close: a refused login must not leave a
    // connection open on the server.
    let _ = tokio::time::timeout(GOODBYE, conn.abort()).await;
    outcome
}

/// A TLS stream lettre can speak over (lettre's stream trait, on the process's TLS).
#[derive(Debug)]
struct Encrypted(TlsStream<TcpStream>);

impl AsyncTokioStream for Encrypted {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for Encrypted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Encrypted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::imap;
    use crate::testing::{self, line_server, PASSWORD};

    /// An SMTP server that greets, offers AUTH PLAIN, answers AUTH with `auth_answer` and
    /// QUIT with 221; it counts the connections it accepted.
    async fn fake_smtp(auth_answer: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
        line_server("220 fake ESMTP\r\n", move |line| {
            let verb = line.split_whitespace().next().unwrap_or("");
            match verb.to_ascii_uppercase().as_str() {
                "EHLO" => "250-fake\r\n250 AUTH PLAIN LOGIN\r\n".to_owned(),
                "AUTH" => format!("{auth_answer}\r\n"),
                "QUIT" => "221 bye\r\n".to_owned(),
                _ => "502 unknown\r\n".to_owned(),
            }
        })
        .await
    }

    fn login(host: &str, port: u16, security: Security) -> Login {
        testing::login(host, port, security)
    }

    fn connector(allow_local: bool) -> Connector {
        testing::connector(allow_local, Duration::from_secs(5))
    }

    /// The defect this module exists to prevent: the check must log in over the address the
    /// policy admitted, never resolve the name again (a name can resolve elsewhere the
    /// second time). The name here resolves nowhere, so a second resolution fails the check.
    #[tokio::test]
    async fn the_check_uses_the_admitted_address_and_never_resolves_the_name_again() {
        let (addr, accepted) = fake_smtp("235 2.7.0 accepted").await;
        let connector = connector(true);
        let destination = connector
            .policy()
            .admit("smtp.mailroom.invalid", vec![addr])
            .unwrap();
        check_login_at(
            &connector,
            &destination,
            &login("smtp.mailroom.invalid", addr.port(), Security::None),
        )
        .await
        .expect("logged in over the admitted address");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "exactly one connection");
    }

    #[tokio::test]
    async fn a_name_on_a_forbidden_address_is_refused_for_smtp_as_for_imap() {
        let connector = connector(false);
        for security in [Security::None, Security::StartTls, Security::Tls] {
            let smtp = check_login(&connector, &login("localhost", 587, security))
                .await
                .unwrap_err();
            assert_eq!(smtp.kind(), FailureKind::Forbidden, "{smtp:?}");
            let imap = imap::connect(&connector, &login("localhost", 143, security))
                .await
                .unwrap_err();
            assert_eq!(imap.kind(), FailureKind::Forbidden, "{imap:?}");
            assert_eq!(smtp.to_string(), imap.to_string());
        }
    }

    #[tokio::test]
    async fn a_refused_password_is_an_authentication_failure_without_the_password() {
        let (addr, _) = fake_smtp("535 5.7.8 Error: authentication failed").await;
        let err = check_login(
            &connector(true),
            &login("127.0.0.1", addr.port(), Security::None),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), FailureKind::AuthFailed, "{err:?}");
        let text = err.to_string();
        assert!(text.contains("authentication failed"), "{text}");
        assert!(!text.contains(PASSWORD), "{text}");
    }

    #[tokio::test]
    async fn starttls_not_offered_is_a_tls_failure() {
        let (addr, _) = fake_smtp("235 2.7.0 accepted").await;
        let err = check_login(
            &connector(true),
            &login("127.0.0.1", addr.port(), Security::StartTls),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SmtpError::NoStartTls), "{err:?}");
        assert_eq!(err.kind(), FailureKind::Tls);
    }

    #[tokio::test]
    async fn implicit_tls_to_a_plain_server_is_a_tls_failure() {
        let (addr, _) = fake_smtp("235 2.7.0 accepted").await;
        let connector = connector(true);
        let destination = connector
            .policy()
            .admit("smtp.example.com", vec![addr])
            .unwrap();
        let err = check_login_at(
            &connector,
            &destination,
            &login("smtp.example.com", addr.port(), Security::Tls),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SmtpError::Tls(_)), "{err:?}");
        assert_eq!(err.kind(), FailureKind::Tls);
    }
}
