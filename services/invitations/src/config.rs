//! The invitations service's configuration (section `invitations`: `MAILROOM_INVITATIONS__*`).

use secrecy::SecretString;
use serde::Deserialize;

use mailroom_mail::smtp::SmtpSettings;

#[derive(Debug, Clone, Deserialize)]
pub struct InvitationsConfig {
    /// Identity's gRPC endpoint: keys (JWKS), this service's token, INVITED users and seats.
    #[serde(default = "mailroom_platform::config::local::identity")]
    pub identity_endpoint: String,
    /// Access control's gRPC endpoint: who may invite and register people.
    #[serde(default = "mailroom_platform::config::local::access")]
    pub access_endpoint: String,
    /// This service's credential at identity (one of identity's `service_clients`).
    #[serde(default = "default_client_id")]
    pub service_client_id: String,
    #[serde(default)]
    pub service_client_secret: SecretString,
    /// The registration page that takes an invitation token: links are this with
    /// `?token=…` appended.
    #[serde(default = "default_accept_url")]
    pub accept_url: String,
    /// The page a quick-registration link opens: links are this with `?link=…` appended.
    #[serde(default = "default_join_url")]
    pub join_url: String,
    /// How long an invitation stays open.
    #[serde(default = "default_ttl")]
    pub invitation_ttl_secs: i64,
    /// Outgoing mail.
    #[serde(default)]
    pub smtp: SmtpSettings,
    /// Mails sent at once.
    #[serde(default = "default_concurrency")]
    pub delivery_concurrency: usize,
    /// Attempts before a mail the server keeps deferring (or a server that stays down) marks
    /// the invitation FAILED. A refusal (5xx) fails at once.
    #[serde(default = "default_attempts")]
    pub delivery_attempts: i32,
    /// The first retry's delay; each next one doubles, with jitter, up to ten minutes.
    #[serde(default = "default_retry_ms")]
    pub delivery_retry_ms: u64,
    /// How often expiry is applied (and unfinished invitations finished).
    #[serde(default = "default_sweep_ms")]
    pub sweep_interval_ms: u64,
    /// Addresses one person may invite per hour.
    #[serde(default = "default_per_inviter")]
    pub invites_per_inviter_per_hour: u32,
    /// Addresses one organisation may invite per hour.
    #[serde(default = "default_per_org")]
    pub invites_per_org_per_hour: u32,
    /// Registrations per quick-registration link per hour (anyone holding a link may try).
    #[serde(default = "default_per_link")]
    pub registrations_per_link_per_hour: u32,
    /// Registrations through any link per client network per hour (an IPv4 /24, an IPv6
    /// /64, as the gRPC connection's peer address shows it).
    #[serde(default = "default_per_network")]
    pub registrations_per_network_per_hour: u32,
    /// How long a registration through a link waits for its address to be confirmed once the
    /// mail is sent (it holds no seat meanwhile). One awaiting an admin's approval waits
    /// `invitation_ttl_secs` for that.
    #[serde(default = "default_registration_ttl")]
    pub registration_ttl_secs: i64,
    /// Registering the same address through the same link again mails it again at most this
    /// often.
    #[serde(default = "default_registration_resend")]
    pub registration_resend_interval_secs: u64,
    /// Kafka consumer group for identity's events (invitees activated, dismissed, removed).
    /// Every replica uses the same group.
    #[serde(default = "default_consumer_group")]
    pub consumer_group: String,
}

fn default_client_id() -> String {
    "invitations".into()
}
fn default_accept_url() -> String {
    "http://localhost:8080/invite".into()
}
fn default_join_url() -> String {
    "http://localhost:8080/join".into()
}
fn default_ttl() -> i64 {
    7 * 24 * 3600
}
fn default_concurrency() -> usize {
    16
}
fn default_attempts() -> i32 {
    8
}
fn default_retry_ms() -> u64 {
    30_000
}
fn default_sweep_ms() -> u64 {
    30_000
}
fn default_per_inviter() -> u32 {
    2_000
}
fn default_per_org() -> u32 {
    10_000
}
fn default_per_link() -> u32 {
    20
}
fn default_per_network() -> u32 {
    30
}
fn default_registration_ttl() -> i64 {
    24 * 3600
}
fn default_registration_resend() -> u64 {
    600
}
fn default_consumer_group() -> String {
    "mailroom-invitations".into()
}

impl Default for InvitationsConfig {
    fn default() -> Self {
        Self {
            identity_endpoint: mailroom_platform::config::local::identity(),
            access_endpoint: mailroom_platform::config::local::access(),
            service_client_id: default_client_id(),
            service_client_secret: SecretString::default(),
            accept_url: default_accept_url(),
            join_url: default_join_url(),
            invitation_ttl_secs: default_ttl(),
            smtp: SmtpSettings::default(),
            delivery_concurrency: default_concurrency(),
            delivery_attempts: default_attempts(),
            delivery_retry_ms: default_retry_ms(),
            sweep_interval_ms: default_sweep_ms(),
            invites_per_inviter_per_hour: default_per_inviter(),
            invites_per_org_per_hour: default_per_org(),
            registrations_per_link_per_hour: default_per_link(),
            registrations_per_network_per_hour: default_per_network(),
            registration_ttl_secs: default_registration_ttl(),
            registration_resend_interval_secs: default_registration_resend(),
            consumer_group: default_consumer_group(),
        }
    }
}
