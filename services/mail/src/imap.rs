//! Opening an IMAP session: dial through the destination policy, then TLS, STARTTLS or
//! neither as the login says, then the greeting and LOGIN — all within the connector's one
//! deadline.
//!
//! Invariant: the session runs over the TCP connection [`crate::dial`] opened to an admitted
//! address, and STARTTLS is completed before the password is sent. Every byte the server
//! sends passes a [`guard::Guarded`] reader first (over TLS, under async-imap), so no answer
//! is buffered beyond the [`ReadLimits`] ([`connect`] uses the defaults, [`connect_with`] a
//! caller's). On failure nothing is kept open and [`ImapError`] says which step failed;
//! [`ImapError::kind`] sorts it for a person. The password goes to the server and is never
//! part of an error; what the server said is quoted in its own words ([`said`]), never as
//! async-imap's debug text.
//!
//! Beside: [`names`], folder names as the server lists them and as people read them;
//! [`status`], STATUS that works whatever a folder's name; [`refusal`], a NO or BAD in the
//! server's words.

pub mod guard;
pub mod names;
pub mod refusal;
pub mod status;

use std::fmt;
use std::time::Duration;

use async_imap::Session;
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connector::{Connector, Deadline};
use crate::dial::{Destination, DialError};
use crate::failure::FailureKind;
use crate::login::{Login, Security};
use crate::text::one_line;
use crate::tls::{self, TlsError};
use guard::Guarded;
pub use guard::{LimitExceeded, ReadLimits};
pub use refusal::{refusal, Refusal};

/// Any byte stream a session can run over (plain TCP or TLS).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> Stream for T {}

/// A logged-in IMAP session.
pub type ImapSession = Session<Box<dyn Stream>>;

/// Why an IMAP connection or login failed, in words that do not repeat the server's name
/// (the caller's sentence names it).
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("no answer within {} s", .0.as_secs_f32())]
    Timeout(Duration),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the server refused STARTTLS: {}", said(.0))]
    StartTls(#[source] async_imap::error::Error),
    #[error("the connection closed before a greeting")]
    Closed,
    #[error("no IMAP greeting: {}", one_line(&.0.to_string()))]
    Greeting(#[source] std::io::Error),
    /// LOGIN answered NO: the server's words.
    #[error("the server said: {0}")]
    LoginRefused(String),
    /// LOGIN answered BAD: the server's words.
    #[error("LOGIN was refused as a bad command ({0}); the server may want TLS first")]
    LoginBad(String),
    /// Any other failure of LOGIN, bounded (a parse error repeats the whole line).
    #[error("{}", said(.0))]
    Login(#[source] async_imap::error::Error),
    /// The server's answer went over a read limit before the login was done.
    #[error(transparent)]
    Limit(LimitExceeded),
}

impl From<Deadline> for ImapError {
    fn from(Deadline(after): Deadline) -> Self {
        ImapError::Timeout(after)
    }
}

impl ImapError {
    pub fn kind(&self) -> FailureKind {
        match self {
            ImapError::Timeout(_) => FailureKind::Timeout,
            ImapError::Dial(e) => e.kind(),
            ImapError::Tls(_) | ImapError::StartTls(_) => FailureKind::Tls,
            ImapError::Greeting(e) if is_tls_like(e) => FailureKind::Tls,
            ImapError::LoginRefused(_) => FailureKind::AuthFailed,
            ImapError::Limit(LimitExceeded::Deadline { .. }) => FailureKind::Timeout,
            ImapError::Limit(_) => FailureKind::Protocol,
            ImapError::Closed
            | ImapError::Greeting(_)
            | ImapError::LoginBad(_)
            | ImapError::Login(_) => FailureKind::Protocol,
        }
    }
}

/// Resolves and admits the login's host, then connects and logs in, within the deadline;
/// reads are bounded by the default [`ReadLimits`].
pub async fn connect(connector: &Connector, login: &Login) -> Result<ImapSession, ImapError> {
    connect_with(connector, login, &ReadLimits::default()).await
}

/// As [`connect`], with reads bounded by `limits`.
pub async fn connect_with(
    connector: &Connector,
    login: &Login,
    limits: &ReadLimits,
) -> Result<ImapSession, ImapError> {
    connector
        .within(async { session(connector, &connector.resolve(login).await?, login, limits).await })
        .await
}

/// Connects to an admitted destination (no name is resolved) and logs in, within the
/// deadline; reads are bounded by the default [`ReadLimits`].
pub async fn connect_to(
    connector: &Connector,
    destination: &Destination,
    login: &Login,
) -> Result<ImapSession, ImapError> {
    connector
        .within(session(
            connector,
            destination,
            login,
            &ReadLimits::default(),
        ))
        .await
}

async fn session(
    connector: &Connector,
    destination: &Destination,
    login: &Login,
    limits: &ReadLimits,
) -> Result<ImapSession, ImapError> {
    let tcp = destination.connect().await?;
    let host = destination.host();
    let stream: Box<dyn Stream> = match login.security {
        Security::None => Box::new(Guarded::new(tcp, *limits)),
        Security::Tls => Box::new(Guarded::new(
            tls::wrap(connector.tls(), host, tcp).await?,
            *limits,
        )),
        Security::StartTls => {
            let mut client = async_imap::Client::new(Guarded::new(tcp, *limits));
            greeting(&mut client).await?;
            client
                .run_command_and_check_ok("STARTTLS", None)
                .await
                .map_err(|e| match limit_of(&e) {
                    Some(limit) => ImapError::Limit(limit),
                    None => ImapError::StartTls(e),
                })?;
            // Whatever the server sent after its OK is dropped with async-imap's buffer.
            let tcp = client.into_inner().into_inner();
            let tls: Box<dyn Stream> = Box::new(Guarded::new(
                tls::wrap(connector.tls(), host, tcp).await?,
                *limits,
            ));
            // No second greeting after STARTTLS (RFC 3501 6.2.1).
            return authenticate(login, async_imap::Client::new(tls)).await;
        }
    };
    let mut client = async_imap::Client::new(stream);
    greeting(&mut client).await?;
    authenticate(login, client).await
}

async fn greeting<S: Stream>(client: &mut async_imap::Client<S>) -> Result<(), ImapError> {
    match client.read_response().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ImapError::Closed),
        Err(e) => match LimitExceeded::of(&e) {
            Some(limit) => Err(ImapError::Limit(limit)),
            None => Err(ImapError::Greeting(e)),
        },
    }
}

/// What `err` says, for a person: a refusal in the server's words, anything else on one
/// bounded line.
pub fn said(err: &async_imap::error::Error) -> String {
    match refusal(err) {
        Some(refused) => refused.to_string(),
        None => one_line(&err.to_string()),
    }
}

/// The read limit an async-imap error reports, if that is what it is.
pub fn limit_of(err: &async_imap::error::Error) -> Option<LimitExceeded> {
    match err {
        async_imap::error::Error::Io(e) => LimitExceeded::of(e),
        _ => None,
    }
}

async fn authenticate<S: Stream + 'static>(
    login: &Login,
    client: async_imap::Client<S>,
) -> Result<Session<S>, ImapError> {
    use async_imap::error::Error;
    client
        .login(&login.username, login.password.expose_secret())
        .await
        .map_err(|(e, _)| {
            if let Some(limit) = limit_of(&e) {
                return ImapError::Limit(limit);
            }
            match e {
                Error::No(text) => {
                    ImapError::LoginRefused(refusal::from_said(false, &text).to_string())
                }
                Error::Bad(text) => {
                    ImapError::LoginBad(refusal::from_said(true, &text).to_string())
                }
                other => ImapError::Login(other),
            }
        })
}

/// Whether a failure to read the greeting looks like TLS met plain text (or the reverse).
fn is_tls_like(e: &std::io::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    e.kind() == std::io::ErrorKind::InvalidData
        || text.contains("tls")
        || text.contains("certificate")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, line_server, silent_server, PASSWORD};

    /// An IMAP server that greets and answers LOGIN with `login_answer` (`OK …`, `NO …`,
    /// `BAD …`) and LOGOUT with BYE.
    async fn fake_imap(login_answer: &'static str) -> std::net::SocketAddr {
        let (addr, _) = line_server("* OK fake IMAP ready\r\n", move |line| {
            let mut words = line.split_whitespace();
            let (tag, command) = (words.next().unwrap_or("*"), words.next().unwrap_or(""));
            match command.to_ascii_uppercase().as_str() {
                "LOGIN" => format!("{tag} {login_answer}\r\n"),
                "LOGOUT" => format!("* BYE\r\n{tag} OK bye\r\n"),
                _ => format!("{tag} BAD unknown\r\n"),
            }
        })
        .await;
        addr
    }

    fn login(host: &str, port: u16) -> Login {
        testing::login(host, port, Security::None)
    }

    fn connector(allow_local: bool) -> Connector {
        testing::connector(allow_local, Duration::from_secs(5))
    }

    #[tokio::test]
    async fn logs_in_over_the_admitted_address_without_resolving_the_name_again() {
        let addr = fake_imap("OK logged in").await;
        let connector = connector(true);
        // A name no resolver knows: only the admitted address can be used.
        let destination = connector
            .policy()
            .admit("imap.mailroom.invalid", vec![addr])
            .unwrap();
        let mut session = connect_to(
            &connector,
            &destination,
            &login("imap.mailroom.invalid", addr.port()),
        )
        .await
        .expect("logged in");
        session.logout().await.expect("logged out");
    }

    #[tokio::test]
    async fn a_refused_login_is_an_authentication_failure_without_the_password() {
        let addr = fake_imap("NO [AUTHENTICATIONFAILED]\tInvalid credentials").await;
        let err = connect(&connector(true), &login("127.0.0.1", addr.port()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), FailureKind::AuthFailed, "{err:?}");
        let text = err.to_string();
        assert!(text.contains("AUTHENTICATIONFAILED"), "{text}");
        assert!(!text.contains('\t') && !text.contains(PASSWORD), "{text}");
        // The server's words, not async-imap's debug text.
        assert!(!text.contains("info:") && !text.contains("Some("), "{text}");
    }

    #[tokio::test]
    async fn a_bad_login_is_a_protocol_failure() {
        let addr = fake_imap("BAD use STARTTLS first").await;
        let err = connect(&connector(true), &login("127.0.0.1", addr.port()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), FailureKind::Protocol, "{err:?}");
        assert!(err.to_string().contains("TLS first"), "{err}");
    }

    #[tokio::test]
    async fn a_local_name_is_forbidden_unless_allowed() {
        let err = connect(&connector(false), &login("localhost", 143))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), FailureKind::Forbidden, "{err:?}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let addr = silent_server().await;
        let quick = testing::connector(true, Duration::from_millis(200));
        let err = connect(&quick, &login("127.0.0.1", addr.port()))
            .await
            .unwrap_err();
        assert!(matches!(err, ImapError::Timeout(_)), "{err:?}");
        assert_eq!(err.kind(), FailureKind::Timeout);
    }
}
