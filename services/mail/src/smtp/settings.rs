//! The SMTP relay settings every service that sends mail reads from its configuration
//! (`MAILROOM_<SERVICE>__SMTP__HOST`, `__PORT`, …), one type so that identity's and the
//! invitations' mail are configured alike (the chart sets both from the same values).

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::send::{Relay, Sender, SmtpConfigError};

/// Where and how a service sends its mail.
#[derive(Debug, Clone, Deserialize)]
pub struct SmtpSettings {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    #[serde(default = "default_security")]
    pub security: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretString>,
    /// The sender, `Name <address>` or an address.
    #[serde(default = "default_from")]
    pub from: String,
    /// Connections kept open to the relay.
    #[serde(default = "default_pool")]
    pub pool_size: u32,
    /// The deadline of one SMTP command.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    25
}
fn default_security() -> String {
    "none".into()
}
fn default_from() -> String {
    "Mailroom <no-reply@mailroom.local>".into()
}
fn default_pool() -> u32 {
    8
}
fn default_timeout_ms() -> u64 {
    10_000
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: default_host(),
            port: default_port(),
            security: default_security(),
            username: None,
            password: None,
            from: default_from(),
            pool_size: default_pool(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

impl SmtpSettings {
    /// The pooled sender these settings describe, parsed once at start.
    pub fn sender(&self) -> Result<Sender, SmtpConfigError> {
        let relay = Relay {
            host: &self.host,
            port: self.port,
            security: &self.security,
            username: self.username.as_deref(),
            password: self.password.as_ref(),
            timeout: Duration::from_millis(self.timeout_ms.max(100)),
            pool_size: Some(self.pool_size),
        };
        Sender::new(&relay, &self.from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (A runtime, as a service has: lettre's pool lives on it.)
    #[tokio::test]
    async fn missing_keys_take_the_defaults_and_a_bad_security_is_refused() {
        let settings: SmtpSettings =
            serde_json::from_str(r#"{"host": "smtp.example.org", "security": "starttls"}"#)
                .expect("parses");
        assert_eq!(settings.port, 25);
        assert_eq!(settings.pool_size, 8);
        assert!(settings.sender().is_ok());
        let bad = SmtpSettings {
            security: "ssl".into(),
            ..SmtpSettings::default()
        };
        assert!(matches!(bad.sender(), Err(SmtpConfigError::Security(_))));
    }
}
