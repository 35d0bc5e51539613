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
    /// How many connects and login checks the process runs at once, all callers and
    /// ConnectMailboxes items together (one bound per process, not per request).
    #[serde(default = "default_login_concurrency")]
    pub login_concurrency: usize,
    /// Connection attempts (logins checked) allowed per caller per minute, so the API cannot
    /// be used to guess a mailbox password.
    #[serde(default = "default_logins_per_minute")]
    pub login_checks_per_minute: u32,
    /// The most mailboxes one organisation may connect; a connect beyond it is refused
    /// (RESOURCE_EXHAUSTED, naming the limit).
    #[serde(default = "default_max_mailboxes_per_org")]
    pub max_mailboxes_per_org: u64,
    /// SyncMailboxNow calls allowed per caller per minute (each may become an IMAP login).
    #[serde(default = "default_sync_now_per_minute")]
    pub sync_now_per_minute: u32,
    /// A mailbox asked to sync now is not asked again within this many seconds: a repeat
    /// answers with the time of the request already queued.
    #[serde(default = "default_sync_now_interval_secs")]
    pub sync_now_interval_secs: u64,
    /// Where mail servers may be: ports, and the operator's allowlist of networks and hosts
    /// that are not on the public internet (`MAILROOM_MAILBOXES__MAIL_SERVERS__ALLOWED_*`).
    /// Without it, the API cannot be used to probe the cluster.
    #[serde(default)]
    pub mail_servers: mailroom_mail::dial::PolicySettings,
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
fn default_max_mailboxes_per_org() -> u64 {
    100_000
}
fn default_sync_now_per_minute() -> u32 {
    30
}
fn default_sync_now_interval_secs() -> u64 {
    30
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
            max_mailboxes_per_org: default_max_mailboxes_per_org(),
            sync_now_per_minute: default_sync_now_per_minute(),
            sync_now_interval_secs: default_sync_now_interval_secs(),
            mail_servers: mailroom_mail::dial::PolicySettings::default(),
        }
    }
}
