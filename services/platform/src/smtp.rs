//! The SMTP transport every service that sends mail builds the same way (lettre, async, over
//! `none`, `starttls` or `tls`, optionally with credentials, a command deadline and a pool).

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

/// Where and how to send.
pub struct Server<'a> {
    pub host: &'a str,
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub security: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a SecretString>,
    pub timeout: Duration,
    /// Connections kept open (lettre's default pool when `None`).
    pub pool_size: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum SmtpConfigError {
    #[error("security `{0}` is not one of none, starttls, tls")]
    Security(String),
    #[error("{0}")]
    Relay(String),
    #[error("from: {0}")]
    From(String),
}

pub fn transport(
    server: &Server<'_>,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, SmtpConfigError> {
    let relay = |e: lettre::transport::smtp::Error| SmtpConfigError::Relay(e.to_string());
    let mut builder = match server.security {
        "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.host),
        "starttls" => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(server.host).map_err(relay)?
        }
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(server.host).map_err(relay)?,
        other => return Err(SmtpConfigError::Security(other.to_owned())),
    }
    .port(server.port)
    .timeout(Some(server.timeout));
    if let Some(size) = server.pool_size {
        builder = builder.pool_config(
            PoolConfig::new()
                .max_size(size.max(1))
                .idle_timeout(Duration::from_secs(30)),
        );
    }
    // An empty username (an unset value passed through an environment variable) means no
    // login, not a login as "".
    if let (Some(user), Some(password)) = (
        server.username.filter(|u| !u.trim().is_empty()),
        server.password,
    ) {
        builder = builder.credentials(Credentials::new(
            user.to_owned(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(builder.build())
}

/// The sender, `Name <address>` or an address.
pub fn from(text: &str) -> Result<Mailbox, SmtpConfigError> {
    text.parse()
        .map_err(|e: lettre::address::AddressError| SmtpConfigError::From(e.to_string()))
}
