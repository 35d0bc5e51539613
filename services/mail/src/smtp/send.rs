//! The SMTP sender every service that mails people builds the same way: a pool of
//! connections ([`super::pool`]) to the relay the operator configured (`none`, `starttls` or
//! `tls`, optionally with credentials, a command deadline and a pool size), lettre speaking
//! SMTP over them, and the sender's address, both parsed once when the service starts.
//!
//! The relay is the operator's configuration, not a server a person named, so it is dialled
//! directly (local relays included) and not through the destination policy.

use std::sync::Arc;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::{Mailbox, MessageBuilder};
use lettre::transport::smtp::authentication::Credentials;
use lettre::Message;
use secrecy::{ExposeSecret, SecretString};

use super::pool::{Dial, Pool, SendError};
use crate::login::Security;

/// Connections kept when the settings name no pool size.
const DEFAULT_POOL_SIZE: u32 = 10;

/// Where and how to send.
#[derive(Debug)]
pub struct Relay<'a> {
    pub host: &'a str,
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub security: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a SecretString>,
    /// The deadline of one SMTP command.
    pub timeout: Duration,
    /// Connections kept open between mails ([`DEFAULT_POOL_SIZE`] when `None`); sends are
    /// not limited by it.
    pub pool_size: Option<u32>,
}

/// Why the sending settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SmtpConfigError {
    #[error("security `{0}` is not one of none, starttls, tls")]
    Security(String),
    #[error("{0}")]
    Relay(String),
    #[error("from: {0}")]
    From(String),
}

/// Pooled connections to the relay and the address mail is sent from.
#[derive(Clone)]
pub struct Sender {
    pool: Arc<Pool>,
    from: Mailbox,
}

impl Sender {
    /// `from` is `Name <address>` or an address.
    pub fn new(relay: &Relay<'_>, from: &str) -> Result<Self, SmtpConfigError> {
        let from = from
            .parse()
            .map_err(|e: lettre::address::AddressError| SmtpConfigError::From(e.to_string()))?;
        Ok(Self {
            pool: pool(relay)?,
            from,
        })
    }

    /// A message from this sender, for the caller to address and fill: it already has its
    /// `Message-ID` in the sender's domain (mail without one is junked by large providers).
    pub fn message(&self) -> MessageBuilder {
        Message::builder()
            .from(self.from.clone())
            .message_id(Some(format!(
                "<{}@{}>",
                uuid::Uuid::new_v4().simple(),
                self.domain()
            )))
    }

    /// The domain of the sender's address: the right-hand side of the `Message-ID`s of its
    /// mail (`<unique@domain>`, RFC 5322 3.6.4), which receivers check against the sender.
    pub fn domain(&self) -> &str {
        self.from.email.domain()
    }

    /// Hands `message` to the relay.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        self.send_raw(message.envelope(), &message.formatted())
            .await
    }

    /// Hands an already formatted message (`email`) to the relay for `envelope`.
    pub async fn send_raw(&self, envelope: &Envelope, email: &[u8]) -> Result<(), SendError> {
        self.pool.send(envelope, email).await
    }
}

fn pool(relay: &Relay<'_>) -> Result<Arc<Pool>, SmtpConfigError> {
    let security = Security::parse(relay.security)
        .ok_or_else(|| SmtpConfigError::Security(relay.security.to_owned()))?;
    if relay.host.trim().is_empty() {
        return Err(SmtpConfigError::Relay("the relay's host is empty".into()));
    }
    // An empty username (an unset value passed through an environment variable) means no
    // login, not a login as "".
    let credentials = match (
        relay.username.filter(|u| !u.trim().is_empty()),
        relay.password,
    ) {
        (Some(user), Some(password)) => Some(Credentials::new(
            user.to_owned(),
            password.expose_secret().to_owned(),
        )),
        _ => None,
    };
    let size = relay.pool_size.unwrap_or(DEFAULT_POOL_SIZE).max(1);
    Ok(Pool::new(
        Dial {
            host: relay.host.to_owned(),
            port: relay.port,
            security,
            credentials,
            timeout: relay.timeout,
        },
        usize::try_from(size).unwrap_or(1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(security: &str) -> Relay<'_> {
        Relay {
            host: "127.0.0.1",
            port: 25,
            security,
            username: Some(""),
            password: None,
            timeout: Duration::from_secs(1),
            pool_size: Some(2),
        }
    }

    #[tokio::test]
    async fn settings_are_checked_when_the_sender_is_built() {
        for security in ["none", "starttls", "tls"] {
            assert!(Sender::new(&relay(security), "Mailroom <no-reply@mailroom.local>").is_ok());
        }
        assert!(matches!(
            Sender::new(&relay("ssl"), "no-reply@mailroom.local"),
            Err(SmtpConfigError::Security(s)) if s == "ssl"
        ));
        assert!(matches!(
            Sender::new(&relay("none"), "not an address"),
            Err(SmtpConfigError::From(_))
        ));
    }

    #[tokio::test]
    async fn messages_come_from_the_configured_sender() {
        let sender = Sender::new(&relay("none"), "Mailroom <no-reply@mailroom.local>").unwrap();
        let message = sender
            .message()
            .to("ann@example.com".parse().unwrap())
            .subject("hello")
            .body(String::from("hi"))
            .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(
            text.contains("From: Mailroom <no-reply@mailroom.local>"),
            "{text}"
        );
        assert_eq!(sender.domain(), "mailroom.local");
    }
}
