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
    /// `?token=…` appended. Empty (the default): `{MAILROOM_PUBLIC_URL}/invite`, or without a
    /// public URL `http://localhost:8080/invite` ([`InvitationsConfig::resolve_links`]).
    #[serde(default)]
    pub accept_url: String,
    /// The page a quick-registration link opens: links are this with `?link=…` appended.
    /// Empty (the default): `{MAILROOM_PUBLIC_URL}/join`, or `http://localhost:8080/join`.
    #[serde(default)]
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
    /// How long a mail claimed by one replica is left to it before another may take it. The
    /// sender renews the claim while it sends, so a slow server never sees a second mail;
    /// a replica that dies mid-send frees its mail after this long.
    #[serde(default = "default_lease_ms")]
    pub delivery_lease_ms: u64,
    /// How long one mail's whole send may take (the SMTP timeout, `smtp.timeout_ms`, bounds
    /// each command only: a server answering each just in time could hold a send, and its
    /// claim, for ever). A send cut off by it is deferred like a 4xx and tried again later; the
    /// server may have kept that mail, so the invitee may get it twice (only the later link
    /// works).
    #[serde(default = "default_send_deadline_ms")]
    pub delivery_send_deadline_ms: u64,
    /// How often expiry is applied (and unfinished invitations finished).
    #[serde(default = "default_sweep_ms")]
    pub sweep_interval_ms: u64,
    /// Addresses one person may invite per hour.
    #[serde(default = "default_per_inviter")]
    pub invites_per_inviter_per_hour: u32,
    /// Addresses one organisation may invite per hour.
    #[serde(default = "default_per_org")]
    pub invites_per_org_per_hour: u32,
    /// Registrations per quick-registration link per hour, from all networks together
    /// (anyone holding a link may try; only registrations that pass the link's checks count).
    #[serde(default = "default_per_link")]
    pub registrations_per_link_per_hour: u32,
    /// Registrations per link per hour from one client network: one network cannot use up a
    /// link's whole budget.
    #[serde(default = "default_per_link_network")]
    pub registrations_per_link_per_network_per_hour: u32,
    /// Registrations through any link per client network per hour (an IPv4 /24, an IPv6
    /// /64, of the client address: see `trusted_proxies`).
    #[serde(default = "default_per_network")]
    pub registrations_per_network_per_hour: u32,
    /// Proxies (CIDRs or addresses, a list or one comma-separated string) whose
    /// `x-forwarded-for` names the client of a public call (the registration limits); from
    /// any other peer the header is ignored. Default none: the client is the TCP peer, so
    /// behind an ingress every caller is one network unless the ingress is listed here.
    #[serde(default, deserialize_with = "mailroom_platform::config::string_list")]
    pub trusted_proxies: Vec<String>,
    /// How long a registration through a link waits for its address to be confirmed once the
    /// mail is sent (it holds no seat meanwhile). One awaiting an admin's approval waits
    /// `invitation_ttl_secs` for that.
    #[serde(default = "default_registration_ttl")]
    pub registration_ttl_secs: i64,
    /// Registering the same address through the same link again mails it again at most this
    /// often.
    #[serde(default = "default_registration_resend")]
    pub registration_resend_interval_secs: u64,
    /// How long after an invitation's mail was sent (or queued) ResendInvitation waits before
    /// sending it again, so the invitee does not get a mail per click.
    #[serde(default = "default_resend_cooldown")]
    pub resend_cooldown_secs: u64,
    /// Whether Mailroom mails addresses with non-ASCII characters before the `@`
    /// (`анна@…`). Off by default: that needs a relay with SMTPUTF8 (RFC 6531), so such
    /// addresses are refused when they are invited (the inviter's own mail client may still
    /// be used). Turn on when the relay offers SMTPUTF8.
    #[serde(default)]
    pub smtputf8_addresses: bool,
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
impl InvitationsConfig {
    /// Fills the links' pages that were not set: under the platform's public URL
    /// (`PlatformConfig::public_base`) when there is one, else the old defaults. An explicit
    /// `accept_url`/`join_url` wins.
    pub fn resolve_links(&mut self, public_base: Option<&str>) {
        let fill = |url: &mut String, path: &str, fallback: fn() -> String| {
            if url.trim().is_empty() {
                *url = match public_base {
                    Some(base) => format!("{base}{path}"),
                    None => fallback(),
                };
            }
        };
        fill(&mut self.accept_url, "/invite", default_accept_url);
        fill(&mut self.join_url, "/join", default_join_url);
    }
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
fn default_lease_ms() -> u64 {
    120_000
}
fn default_send_deadline_ms() -> u64 {
    300_000
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
    50
}
fn default_per_link_network() -> u32 {
    10
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
fn default_resend_cooldown() -> u64 {
    60
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
            accept_url: String::new(),
            join_url: String::new(),
            invitation_ttl_secs: default_ttl(),
            smtp: SmtpSettings::default(),
            delivery_concurrency: default_concurrency(),
            delivery_attempts: default_attempts(),
            delivery_retry_ms: default_retry_ms(),
            delivery_lease_ms: default_lease_ms(),
            delivery_send_deadline_ms: default_send_deadline_ms(),
            sweep_interval_ms: default_sweep_ms(),
            invites_per_inviter_per_hour: default_per_inviter(),
            invites_per_org_per_hour: default_per_org(),
            registrations_per_link_per_hour: default_per_link(),
            registrations_per_link_per_network_per_hour: default_per_link_network(),
            registrations_per_network_per_hour: default_per_network(),
            trusted_proxies: Vec::new(),
            registration_ttl_secs: default_registration_ttl(),
            registration_resend_interval_secs: default_registration_resend(),
            resend_cooldown_secs: default_resend_cooldown(),
            smtputf8_addresses: false,
            consumer_group: default_consumer_group(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_links_follow_the_public_url_unless_set() {
        let mut config = InvitationsConfig::default();
        config.resolve_links(Some("https://mail.example.com"));
        assert_eq!(config.accept_url, "https://mail.example.com/invite");
        assert_eq!(config.join_url, "https://mail.example.com/join");
        let mut config = InvitationsConfig::default();
        config.resolve_links(None);
        assert_eq!(config.accept_url, "http://localhost:8080/invite");
        assert_eq!(config.join_url, "http://localhost:8080/join");
        let mut config = InvitationsConfig {
            accept_url: "https://other.test/accept".into(),
            ..Default::default()
        };
        config.resolve_links(Some("https://mail.example.com"));
        assert_eq!(config.accept_url, "https://other.test/accept");
        assert_eq!(config.join_url, "https://mail.example.com/join");
    }
}
