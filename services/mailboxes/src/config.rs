//! The registry's own configuration (section `mailboxes`: `MAILROOM_MAILBOXES__*`).

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct MailboxesConfig {
    /// Identity's gRPC endpoint: signing keys (JWKS) and this service's own token.
    #[serde(default = "mailroom_platform::config::local::identity")]
    pub identity_endpoint: String,
    /// Access control's gRPC endpoint: who may see and change which mailbox.
    #[serde(default = "mailroom_platform::config::local::access")]
    pub access_endpoint: String,
    /// This service's credential at identity (one of identity's `service_clients`).
    #[serde(default = "default_client_id")]
    pub service_client_id: String,
    #[serde(default)]
    pub service_client_secret: SecretString,
    /// Keys that seal mailbox passwords, `id:base64(32 bytes)`, newest first (a list or one
    /// comma-separated string). The first seals; all open. Generate with
    /// `mailroom keygen --sealing <id>`.
    #[serde(default, deserialize_with = "mailroom_platform::config::secret_list")]
    pub sealing_keys: Vec<SecretString>,
    /// Kafka consumer group for identity's events. Every replica uses the same group.
    #[serde(default = "default_consumer_group")]
    pub consumer_group: String,
    /// The deadline of one IMAP or SMTP login check.
    #[serde(default = "default_login_timeout_ms")]
    pub login_timeout_ms: u64,
    /// How many login checks one ConnectMailboxes call runs at once.
    #[serde(default = "default_login_concurrency")]
    pub login_concurrency: usize,
    /// Connection attempts (logins checked) allowed per caller per minute, so the API cannot
    /// be used to guess a mailbox password.
    #[serde(default = "default_logins_per_minute")]
    pub login_checks_per_minute: u32,
    /// Whether mailbox servers may be on loopback or link-local addresses (tests and local
    /// development only: in a cluster it would let the API probe the cluster itself).
    #[serde(default)]
    pub allow_local_servers: bool,
}

fn default_client_id() -> String {
    "mailboxes".into()
}
fn default_consumer_group() -> String {
    "mailroom-mailboxes".into()
}
fn default_login_timeout_ms() -> u64 {
    10_000
}
fn default_login_concurrency() -> usize {
    8
}
fn default_logins_per_minute() -> u32 {
    60
}

impl Default for MailboxesConfig {
    fn default() -> Self {
        Self {
            identity_endpoint: mailroom_platform::config::local::identity(),
            access_endpoint: mailroom_platform::config::local::access(),
            service_client_id: default_client_id(),
            service_client_secret: SecretString::default(),
            sealing_keys: Vec::new(),
            consumer_group: default_consumer_group(),
            login_timeout_ms: default_login_timeout_ms(),
            login_concurrency: default_login_concurrency(),
            login_checks_per_minute: default_logins_per_minute(),
            allow_local_servers: false,
        }
    }
}
