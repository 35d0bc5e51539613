//! The sender's connections to its relay: dialled here with `TCP_NODELAY`, kept open between
//! mails, and reused while they last.
//!
//! Why not lettre's own pool: lettre writes a message's content and its terminating
//! `\r\n.\r\n` as two writes. With Nagle's algorithm on (lettre does not turn it off) the
//! second, small write waits until the server acknowledges the first, and a server that
//! delays its ACKs (Linux does, by up to 40 ms) makes every mail wait that long for nothing:
//! 44 ms a mail against 1.5 ms on loopback. lettre speaks SMTP over a stream it is handed
//! ([`AsyncSmtpConnection::connect_with_transport`]), so the sockets are made here.
//!
//! A connection is dialled (each address the relay's name resolves to in turn, each within
//! the command deadline; then TLS first for implicit TLS), greeted (EHLO), upgraded with
//! STARTTLS when the relay requires it, and logged in when there are credentials, the
//! greeting and login within one more deadline. Sends are not limited here (the callers have
//! their own concurrency); up to `size` connections are kept between mails, and one is used
//! again only within [`IDLE_TIMEOUT`] and after a `NOOP` (as lettre's pool does: a relay that
//! restarted or closed it is found before a mail is given to it, at the cost of one round
//! trip). A connection that failed or timed out is dropped, never parked; a task closes
//! (`QUIT`) those idle past the timeout, and ends with the pool.
//!
//! Errors do not name the relay (they reach organisation admins, as an invitation's failure
//! reason or a call's status); the log line of a relay that cannot be reached does.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;

use super::stream::Encrypted;
use crate::login::Security;
use crate::tls::{self, TlsError};

/// An idle connection older than this is closed rather than used.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest wait for a parked connection's `NOOP`, or for its `QUIT`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a mail was not handed to the relay.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The relay answered, refused, or the SMTP exchange broke during a send.
    #[error(transparent)]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// Setting up a connection failed after it was dialled: the greeting, STARTTLS (which a
    /// relay that requires it but does not offer it fails, rather than going on in plain
    /// text), or the login.
    #[error("the mail relay's connection could not be set up: {0}")]
    Setup(#[source] lettre::transport::smtp::Error),
    #[error("the mail relay could not be reached: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS with the mail relay failed: {0}")]
    Tls(#[source] TlsError),
    #[error("the mail relay did not answer within {seconds} s")]
    Timeout { seconds: f64 },
    #[error(
        "the mail relay did not finish the send within {seconds} s (the mail may have gone out)"
    )]
    SendTimeout { seconds: f64 },
}

impl SendError {
    /// The relay refused this mail for good (a 5xx answer to it): sending again will not
    /// help. A connection that could not be set up (a refused login, say) is the operator's
    /// to fix, and never refuses the mail itself.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Smtp(e) if e.is_permanent())
    }

    /// lettre refused a mail before giving it to the relay (e.g. an address the relay cannot
    /// take); never a connection that could not be set up.
    pub fn is_client(&self) -> bool {
        matches!(self, SendError::Smtp(e) if e.is_client())
    }
}

/// Where the connections go and how they are set up.
#[derive(Debug)]
pub struct Dial {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub credentials: Option<Credentials>,
    /// The deadline of dialling one address, of a connection's greeting and login, and of
    /// each SMTP command of a send.
    pub timeout: Duration,
}

/// A connection parked between mails, with when it was last used.
struct Parked {
    connection: AsyncSmtpConnection,
    since: Instant,
}

/// Connections to one relay, up to `size` of them kept between mails.
pub struct Pool {
    dial: Dial,
    hello: ClientId,
    size: usize,
    idle: Mutex<Vec<Parked>>,
}

impl Pool {
    /// The pool, with its task that closes idle connections when a runtime is running (it
    /// ends when the pool is dropped).
    pub fn new(dial: Dial, size: usize) -> Arc<Self> {
        let pool = Arc::new(Self {
            dial,
            hello: ClientId::default(),
            size: size.max(1),
            idle: Mutex::new(Vec::new()),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(close_idle(Arc::downgrade(&pool)));
        }
        pool
    }

    /// Hands one message (`email`, formatted) to the relay for `envelope`'s recipients, on a
    /// parked connection or a new one; the connection is parked again if it is still sound.
    pub async fn send(&self, envelope: &Envelope, email: &[u8]) -> Result<(), SendError> {
        let mut connection = match self.reusable().await {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        // MAIL, each RCPT, DATA and the content: one command deadline each.
        let commands = 3 + u32::try_from(envelope.to().len()).unwrap_or(u32::MAX - 3);
        let deadline = self.dial.timeout.saturating_mul(commands);
        match tokio::time::timeout(deadline, connection.send(envelope, email)).await {
            Ok(Ok(_)) => {
                self.park(connection);
                Ok(())
            }
            // lettre has closed a connection whose exchange failed (`has_broken`).
            Ok(Err(err)) => {
                if !connection.has_broken() {
                    self.park(connection);
                }
                Err(SendError::Smtp(err))
            }
            Err(_) => Err(SendError::SendTimeout {
                seconds: deadline.as_secs_f64(),
            }),
        }
    }

    /// The most recently parked connection, if it is within the idle timeout and answers a
    /// `NOOP`. When it does not, the others (parked earlier) are given up with it rather than
    /// probed one by one: they are older, and a relay that dropped one has likely dropped all.
    async fn reusable(&self) -> Option<AsyncSmtpConnection> {
        let parked = self.idle.lock().ok()?.pop()?;
        if parked.since.elapsed() <= IDLE_TIMEOUT {
            let mut connection = parked.connection;
            let probe = PROBE_TIMEOUT.min(self.dial.timeout);
            if matches!(
                tokio::time::timeout(probe, connection.test_connected()).await,
                Ok(true)
            ) {
                return Some(connection);
            }
        } else {
            quit_later(vec![parked.connection]);
        }
        let older = self
            .idle
            .lock()
            .map(|mut idle| std::mem::take(&mut *idle))
            .unwrap_or_default();
        quit_later(older.into_iter().map(|p| p.connection).collect());
        None
    }

    /// Keeps `connection` for the next mail, or closes it when `size` are kept already.
    fn park(&self, connection: AsyncSmtpConnection) {
        let surplus = match self.idle.lock() {
            Ok(mut idle) if idle.len() < self.size => {
                idle.push(Parked {
                    connection,
                    since: Instant::now(),
                });
                None
            }
            _ => Some(connection),
        };
        if let Some(connection) = surplus {
            quit_later(vec![connection]);
        }
    }

    /// A new connection, greeted, secured and logged in.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let tcp = self.dial_tcp().await.inspect_err(|err| {
            tracing::warn!(relay = %self.relay(), error = %err, "the mail relay could not be reached");
        })?;
        let deadline = self.dial.timeout;
        let set_up = match tokio::time::timeout(deadline, self.set_up(tcp)).await {
            Ok(set_up) => set_up,
            Err(_) => Err(SendError::Timeout {
                seconds: deadline.as_secs_f64(),
            }),
        };
        set_up.inspect_err(|err| {
            tracing::warn!(relay = %self.relay(), error = %err, "a connection to the mail relay could not be set up");
        })
    }

    /// A TCP connection to the first of the relay's addresses that answers, each tried
    /// within the command deadline.
    async fn dial_tcp(&self) -> Result<TcpStream, SendError> {
        let deadline = self.dial.timeout;
        let timed_out = || SendError::Timeout {
            seconds: deadline.as_secs_f64(),
        };
        let addresses = tokio::time::timeout(
            deadline,
            tokio::net::lookup_host((self.dial.host.as_str(), self.dial.port)),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(SendError::Connect)?;
        let mut last = None;
        for address in addresses {
            match tokio::time::timeout(deadline, TcpStream::connect(address)).await {
                Ok(Ok(tcp)) => {
                    // The point of this module: the end of a message is not held back by
                    // Nagle's algorithm.
                    tcp.set_nodelay(true).map_err(SendError::Connect)?;
                    return Ok(tcp);
                }
                Ok(Err(err)) => last = Some(SendError::Connect(err)),
                Err(_) => last = Some(timed_out()),
            }
        }
        Err(last.unwrap_or_else(|| {
            SendError::Connect(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the relay's name resolves to no address",
            ))
        }))
    }

    async fn set_up(&self, tcp: TcpStream) -> Result<AsyncSmtpConnection, SendError> {
        let Dial {
            host,
            security,
            credentials,
            ..
        } = &self.dial;
        let tcp: Box<dyn AsyncTokioStream> = Box::new(tcp);
        let stream: Box<dyn AsyncTokioStream> = match security {
            Security::Tls => Box::new(Encrypted(
                tls::wrap(&tls::client_config(), host, tcp)
                    .await
                    .map_err(SendError::Tls)?,
            )),
            Security::None | Security::StartTls => tcp,
        };
        let mut connection = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(SendError::Setup)?;
        if *security == Security::StartTls {
            // Fails when the relay does not offer STARTTLS: never sent in plain text.
            let parameters = TlsParameters::builder(host.clone())
                .certificate_store(CertificateStore::WebpkiRoots)
                .build_rustls()
                .map_err(SendError::Setup)?;
            connection
                .starttls(parameters, &self.hello)
                .await
                .map_err(SendError::Setup)?;
        }
        if let Some(credentials) = credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(SendError::Setup)?;
        }
        Ok(connection)
    }

    fn relay(&self) -> String {
        format!("{}:{}", self.dial.host, self.dial.port)
    }
}

/// Says `QUIT` and closes, waiting at most [`PROBE_TIMEOUT`] for the relay.
async fn quit(mut connection: AsyncSmtpConnection) {
    let _ = tokio::time::timeout(PROBE_TIMEOUT, connection.abort()).await;
}

/// Closes `connections` from a task of their own, so no send waits for their `QUIT`s
/// (dropped without one outside a runtime).
fn quit_later(connections: Vec<AsyncSmtpConnection>) {
    if connections.is_empty() {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            for connection in connections {
                quit(connection).await;
            }
        });
    }
}

/// Closes connections idle past [`IDLE_TIMEOUT`], a third of it apart, while the pool lives.
async fn close_idle(pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT / 3).await;
        let Some(pool) = pool.upgrade() else { return };
        let expired: Vec<Parked> = match pool.idle.lock() {
            Ok(mut idle) => {
                let (expired, kept) = std::mem::take(&mut *idle)
                    .into_iter()
                    .partition(|p| p.since.elapsed() > IDLE_TIMEOUT);
                *idle = kept;
                expired
            }
            Err(_) => return,
        };
        drop(pool);
        for parked in expired {
            quit(parked.connection).await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! What the pool says to a relay, against relays on loopback that answer line by line
    //! (the sends against a real SMTP server are in the end-to-end tests' `smtp_relay`).
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::testing::{line_server, silent_server};

    /// A relay offering AUTH (and taking any login) but not STARTTLS, keeping the command
    /// lines it was sent; the lines of a message's content get no answer, its closing `.` a
    /// 250. A sender that went on in plain text when STARTTLS is required would log in here.
    async fn relay() -> (u16, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let log = heard.clone();
        let (addr, accepted) = line_server("220 relay.test ESMTP\r\n", move |line| {
            if line == "." {
                return "250 queued\r\n".into();
            }
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            let answer = match verb.as_str() {
                "EHLO" => "250-relay.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
                "DATA" => "354 go ahead\r\n",
                "QUIT" => "221 bye\r\n",
                "AUTH" => "235 accepted\r\n",
                "STARTTLS" => "502 not implemented\r\n",
                "MAIL" | "RCPT" | "NOOP" | "RSET" => "250 ok\r\n",
                _ => return String::new(),
            };
            log.lock().unwrap().push(line.to_owned());
            answer.into()
        })
        .await;
        (addr.port(), accepted, heard)
    }

    fn pool(port: u16, security: Security, timeout: Duration) -> Arc<Pool> {
        Pool::new(
            Dial {
                host: "127.0.0.1".into(),
                port,
                security,
                credentials: Some(Credentials::new("mailroom".into(), "relay-password".into())),
                timeout,
            },
            2,
        )
    }

    async fn send(pool: &Pool) -> Result<(), SendError> {
        let envelope = Envelope::new(
            Some("no-reply@mailroom.test".parse().unwrap()),
            vec!["ann@example.test".parse().unwrap()],
        )
        .unwrap();
        pool.send(&envelope, b"Subject: hello\r\n\r\nhi\r\n").await
    }

    fn count(heard: &[String], prefix: &str) -> usize {
        heard.iter().filter(|l| l.starts_with(prefix)).count()
    }

    #[tokio::test]
    async fn mails_one_after_another_go_over_one_connection_each_reuse_after_a_noop() {
        let (port, accepted, heard) = relay().await;
        let pool = pool(port, Security::None, Duration::from_secs(5));
        for _ in 0..5 {
            send(&pool).await.expect("the relay takes the mail");
        }
        let heard = heard.lock().unwrap().clone();
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "{heard:?}");
        assert_eq!(count(&heard, "EHLO"), 1, "{heard:?}");
        assert_eq!(count(&heard, "MAIL FROM"), 5, "{heard:?}");
        assert_eq!(count(&heard, "NOOP"), 4, "{heard:?}");
    }

    #[tokio::test]
    async fn a_relay_that_does_not_offer_starttls_when_it_is_required_gets_no_login_and_no_mail() {
        let (port, _, heard) = relay().await;
        let pool = pool(port, Security::StartTls, Duration::from_secs(5));
        let err = send(&pool).await.expect_err("STARTTLS is required");
        assert!(matches!(err, SendError::Setup(_)), "{err:?}");
        assert!(
            !err.is_client() && !err.is_permanent(),
            "neither an address problem nor a refusal of the mail: {err}"
        );
        let heard = heard.lock().unwrap().clone();
        for said in ["AUTH", "MAIL", "RCPT", "DATA"] {
            assert_eq!(
                count(&heard, said),
                0,
                "nothing but the greeting in plain text: {heard:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_relay_that_never_greets_is_given_up_at_the_deadline() {
        let addr = silent_server().await;
        let pool = pool(addr.port(), Security::None, Duration::from_millis(300));
        let started = Instant::now();
        let err = send(&pool).await.expect_err("the relay never greets");
        assert!(matches!(err, SendError::Timeout { .. }), "{err:?}");
        assert!(!err.is_permanent(), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
