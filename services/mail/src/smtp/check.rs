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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::stream::Encrypted;
use crate::connector::{Connector, Deadline};
use crate::dial::{Destination, DialError};
use crate::failure::FailureKind;
use crate::login::{Login, Security};
use crate::text::one_line;
use crate::tls::{self, TlsError};

/// How long the check waits for the server's goodbye once the login was decided.
const GOODBYE: Duration = Duration::from_millis(500);

/// Most bytes a server may send during one check (greeting, EHLO, a TLS handshake with its
/// certificates, AUTH): lettre reads a reply line into memory whole, with no limit, so a
/// hostile server sending bytes without a newline is cut here instead.
pub const MAX_CHECK_BYTES: u64 = 256 * 1024;

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
    #[error("the server sent more than {} KiB during a login check; it is not behaving as a mail server", MAX_CHECK_BYTES / 1024)]
    TooMuch,
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
            SmtpError::Answered(_)
            | SmtpError::NoMechanism
            | SmtpError::Protocol(_)
            | SmtpError::TooMuch => FailureKind::Protocol,
        }
    }

    /// Sorts what lettre reported; `deadline` is the check's, for a timeout. A server's
    /// answer is its code and its words quoted (`535 "5.7.8 Authentication failed."`), not
    /// lettre's wording of it (`permanent error (535): …`); a line that is not SMTP is quoted
    /// as the server sent it, not as the parser's report (`error Tag at: …`).
    fn from_lettre(e: &lettre::transport::smtp::Error, deadline: Duration) -> Self {
        let detail = one_line(&e.to_string());
        // What lettre wraps: the server's words after a code, or the parser's report.
        let inner = std::error::Error::source(e)
            .map(ToString::to_string)
            .unwrap_or_default();
        if e.is_timeout() {
            return SmtpError::Timeout(deadline);
        }
        if e.is_tls() {
            return SmtpError::StartTls(detail);
        }
        if let Some(code) = e.status() {
            let code = code.to_string();
            let answer = match one_line(&inner) {
                words if words.is_empty() => code.clone(),
                words => format!("{code} \"{words}\""),
            };
            if matches!(code.as_str(), "535" | "534" | "530" | "454") || code.starts_with("535") {
                return SmtpError::Refused(answer);
            }
            return SmtpError::Answered(answer);
        }
        if detail.contains("authentication mechanism") {
            return SmtpError::NoMechanism;
        }
        if detail.to_ascii_lowercase().contains("tls") || detail.contains("certificate") {
            return SmtpError::StartTls(detail);
        }
        if e.is_response() {
            // nom's report of a line it could not parse: "error <kind> at: <the line>".
            let line = inner
                .strip_prefix("error ")
                .and_then(|rest| rest.split_once(" at: "))
                .map(|(_, line)| one_line(line));
            return SmtpError::Protocol(match line {
                Some(line) if !line.is_empty() => {
                    format!("the server's answer is not SMTP: \"{line}\"")
                }
                Some(_) => "the server's answer is not SMTP".to_owned(),
                None if inner == "incomplete response" => {
                    "the connection closed before the server answered".to_owned()
                }
                None => one_line(&inner),
            });
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
    let host = destination.host();
    let tcp = destination.connect().await?;
    let exceeded = Arc::new(AtomicBool::new(false));
    let capped = |stream| -> Box<dyn AsyncTokioStream> {
        Box::new(Capped {
            inner: stream,
            left: MAX_CHECK_BYTES,
            exceeded: exceeded.clone(),
        })
    };
    // The cap sits under TLS too: certificates count, and a server cannot stream an endless
    // handshake or reply however it is wrapped.
    let stream: Box<dyn AsyncTokioStream> = match login.security {
        Security::Tls => Box::new(Encrypted(
            tls::wrap(connector.tls(), host, capped(Box::new(tcp))).await?,
        )),
        Security::None | Security::StartTls => capped(Box::new(tcp)),
    };
    let outcome = converse(stream, host, login, deadline).await;
    if exceeded.load(Ordering::Relaxed) {
        return Err(SmtpError::TooMuch);
    }
    outcome
}

async fn converse(
    stream: Box<dyn AsyncTokioStream>,
    host: &str,
    login: &Login,
    deadline: Duration,
) -> Result<(), SmtpError> {
    let lettre_error = |e: lettre::transport::smtp::Error| SmtpError::from_lettre(&e, deadline);
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

/// A stream that refuses to read more than `left` bytes in all, and says so in `exceeded`.
#[derive(Debug)]
struct Capped {
    inner: Box<dyn AsyncTokioStream>,
    left: u64,
    exceeded: Arc<AtomicBool>,
}

impl AsyncTokioStream for Capped {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.left == 0 {
            this.exceeded.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server sent more than a login check needs",
            )));
        }
        // Read through a small buffer of our own, so no more than `left` can arrive.
        let room = usize::try_from(this.left)
            .unwrap_or(usize::MAX)
            .min(buf.remaining())
            .min(16 * 1024);
        let mut chunk = vec![0u8; room];
        let mut limited = ReadBuf::new(&mut chunk);
        let polled = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
        if let Poll::Ready(Ok(())) = polled {
            let got = limited.filled();
            buf.put_slice(got);
            this.left -= got.len() as u64;
        }
        polled
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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
    async fn a_server_that_speaks_no_smtp_is_quoted_not_parsed() {
        let (addr, _) = line_server("lol, not a mail server\r\n", |_| String::new()).await;
        let err = check_login(
            &connector(true),
            &login("127.0.0.1", addr.port(), Security::None),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), FailureKind::Protocol, "{err:?}");
        assert_eq!(
            err.to_string(),
            "the server's answer is not SMTP: \"lol, not a mail server\""
        );
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

    /// A hostile server streams a greeting that never ends: the check stops at
    /// [`MAX_CHECK_BYTES`] with a plain error, long before memory or the deadline matter.
    #[tokio::test]
    async fn a_server_that_never_ends_its_line_is_cut_off_at_the_cap() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let counted = sent.clone();
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket.write_all(b"220 ").await;
                let chunk = vec![b'x'; 64 * 1024];
                // Up to 64 MiB, or until the client hangs up.
                for _ in 0..1024 {
                    if socket.write_all(&chunk).await.is_err() {
                        break;
                    }
                    counted.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            }
        });
        let started = std::time::Instant::now();
        let err = check_login(
            &connector(true),
            &login("127.0.0.1", addr.port(), Security::None),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SmtpError::TooMuch), "{err:?}");
        assert_eq!(err.kind(), FailureKind::Protocol);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(
            sent.load(Ordering::SeqCst) < 8 * 1024 * 1024,
            "the check hung up early, after {} bytes",
            sent.load(Ordering::SeqCst)
        );
    }
}
