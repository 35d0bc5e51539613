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
//! A connection is dialled (TCP, then TLS first for implicit TLS), greeted (EHLO), upgraded
//! with STARTTLS when the relay requires it, and logged in when there are credentials, all
//! within one command deadline. At most `size` connections are in use at once; an idle one
//! is used again unless it has idled past [`IDLE_TIMEOUT`], after a `NOOP` (as lettre's pool
//! does: a relay that restarted or closed it is found before a mail is given to it, at the
//! cost of one round trip). A connection that failed or timed out is dropped, never parked;
//! idle ones past the timeout are dropped when the pool is next used.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;

use crate::login::Security;
use crate::tls::{self, TlsError};

/// An idle connection older than this is closed rather than used.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a mail was not handed to the relay.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The relay answered, refused, or the SMTP exchange broke.
    #[error(transparent)]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("the mail relay {relay} could not be reached: {source}")]
    Connect {
        relay: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with the mail relay {relay} failed: {source}")]
    Tls {
        relay: String,
        #[source]
        source: TlsError,
    },
    #[error("the mail relay {relay} did not answer within {seconds} s")]
    Timeout { relay: String, seconds: f64 },
}

impl SendError {
    /// The relay refused for good (a 5xx answer): sending again will not help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Smtp(e) if e.is_permanent())
    }

    /// lettre refused before asking the relay (e.g. an address the relay cannot take).
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
    /// The deadline of a connection's setup, and of each SMTP command of a send.
    pub timeout: Duration,
}

/// A connection parked between mails, with when it was last used.
struct Parked {
    connection: AsyncSmtpConnection,
    since: Instant,
}

/// Up to `size` connections to one relay.
pub struct Pool {
    dial: Dial,
    hello: ClientId,
    in_use: Semaphore,
    idle: Mutex<Vec<Parked>>,
}

impl Pool {
    pub fn new(dial: Dial, size: usize) -> Self {
        Self {
            dial,
            hello: ClientId::default(),
            in_use: Semaphore::new(size.max(1)),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Hands one message (`email`, formatted) to the relay for `envelope`'s recipients, on a
    /// parked connection or a new one; the connection is parked again if it is still sound.
    pub async fn send(&self, envelope: &Envelope, email: &[u8]) -> Result<(), SendError> {
        // The semaphore is never closed: `None` cannot happen.
        let _slot = self.in_use.acquire().await.ok();
        let mut connection = match self.reusable().await {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        // MAIL, each RCPT, DATA and the content: one command deadline each.
        let commands = 3 + envelope.to().len() as u32;
        let deadline = self.dial.timeout.saturating_mul(commands);
        let sent = tokio::time::timeout(deadline, connection.send(envelope, email)).await;
        match sent {
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
            Err(_) => Err(self.timed_out(deadline)),
        }
    }

    /// An idle connection that still answers, if any: the most recently parked first (the
    /// others may then idle out).
    async fn reusable(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let parked = self.idle.lock().ok()?.pop()?;
            if parked.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            let mut connection = parked.connection;
            let alive = tokio::time::timeout(self.dial.timeout, connection.test_connected()).await;
            if matches!(alive, Ok(true)) {
                return Some(connection);
            }
        }
    }

    fn park(&self, connection: AsyncSmtpConnection) {
        if let Ok(mut idle) = self.idle.lock() {
            // Connections idle past the timeout go when the next one is parked.
            idle.retain(|p| p.since.elapsed() <= IDLE_TIMEOUT);
            idle.push(Parked {
                connection,
                since: Instant::now(),
            });
        }
    }

    /// A new connection, greeted, secured and logged in, within one command deadline.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let deadline = self.dial.timeout;
        match tokio::time::timeout(deadline, self.set_up()).await {
            Ok(connection) => connection,
            Err(_) => Err(self.timed_out(deadline)),
        }
    }

    async fn set_up(&self) -> Result<AsyncSmtpConnection, SendError> {
        let Dial {
            host,
            port,
            security,
            credentials,
            ..
        } = &self.dial;
        let tcp = TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|source| SendError::Connect {
                relay: self.relay(),
                source,
            })?;
        // The point of this module: the end of a message is not held back by Nagle.
        tcp.set_nodelay(true).map_err(|source| SendError::Connect {
            relay: self.relay(),
            source,
        })?;
        let stream: Box<dyn AsyncTokioStream> = match security {
            Security::Tls => Box::new(Encrypted(
                tls::wrap(&tls::client_config(), host, tcp)
                    .await
                    .map_err(|source| SendError::Tls {
                        relay: self.relay(),
                        source,
                    })?,
            )),
            Security::None | Security::StartTls => Box::new(tcp),
        };
        let mut connection =
            AsyncSmtpConnection::connect_with_transport(stream, &self.hello).await?;
        if *security == Security::StartTls {
            // Fails when the relay does not offer STARTTLS: never sent in plain text.
            let parameters = TlsParameters::new(host.clone())?;
            connection.starttls(parameters, &self.hello).await?;
        }
        if let Some(credentials) = credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(connection)
    }

    fn relay(&self) -> String {
        format!("{}:{}", self.dial.host, self.dial.port)
    }

    fn timed_out(&self, deadline: Duration) -> SendError {
        SendError::Timeout {
            relay: self.relay(),
            seconds: deadline.as_secs_f64(),
        }
    }
}

/// A TLS stream lettre can speak SMTP over (implicit TLS, set up before the greeting).
struct Encrypted(TlsStream<TcpStream>);

impl std::fmt::Debug for Encrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Encrypted(TlsStream)")
    }
}

impl AsyncTokioStream for Encrypted {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for Encrypted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Encrypted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
