//! Identity's own configuration (section `identity`: `MAILROOM_IDENTITY__*`).

use std::collections::BTreeMap;

use mailroom_mail::smtp::SmtpSettings;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct IdentityConfig {
    /// Ed25519 signing keys as base64 32-byte seeds, a list or one comma-separated string;
    /// the first signs, all verify (rotation: put the new key first, keep the old one until
    /// its tokens have expired).
    #[serde(default, deserialize_with = "mailroom_platform::config::secret_list")]
    pub signing_keys: Vec<SecretString>,
    /// Internal callers: client id → secret, exchanged for service tokens (one per service
    /// called). A secret may be given as `sha256:<hex digest>` instead, so identity holds only
    /// its digest: the chart gives the operator's that way. What each client may call is each
    /// service's callers table; `operator` is the deployment's operator (`mailroom ctl`).
    #[serde(default)]
    pub service_clients: BTreeMap<String, SecretString>,
    #[serde(default)]
    pub smtp: SmtpSettings,
    /// Kafka consumer group for the mailbox registry's events (mailbox addresses, for
    /// GetEmailAddressUsage). Every replica uses the same group.
    #[serde(default = "default_consumer_group")]
    pub consumer_group: String,
    #[serde(default = "default_access_ttl")]
    pub access_token_ttl_secs: i64,
    #[serde(default = "default_refresh_ttl")]
    pub refresh_token_ttl_secs: i64,
    /// Sign-in attempts allowed per minute for one address from one client network (and
    /// organisation named, if any); beyond it that network is refused for the rest of the
    /// minute. Other networks are not: a stranger cannot lock the owner out.
    #[serde(default = "default_login_rate")]
    pub login_attempts_per_minute: u32,
    /// Sign-in attempts allowed per minute from one client network whatever addresses and
    /// organisations they name (one network spraying a password over many addresses);
    /// beyond it that network is refused for the rest of the minute.
    #[serde(default = "default_login_network_rate")]
    pub login_attempts_per_network_per_minute: u32,
    /// Sign-in attempts for one address (and organisation named, if any) from all networks
    /// together in 15 minutes before the account is paced: then at most one attempt per
    /// `login_slowdown_ms` from all networks together (others refused with a retry of about
    /// that long), except from a network the account signed in from in the last 30 days.
    #[serde(default = "default_login_slowdown_after")]
    pub login_slowdown_after_attempts: u32,
    #[serde(default = "default_login_slowdown_ms")]
    pub login_slowdown_ms: u64,
    /// ChangePassword attempts one user may make per hour (a stolen access token must not
    /// be an oracle for the current password, nor hold the hashing gate).
    #[serde(default = "default_password_change_rate")]
    pub password_changes_per_hour: u32,
    /// Proxies (CIDRs, a list or one comma-separated string) whose `x-forwarded-for` names the
    /// client; from any other peer the header is ignored. Default none: the client is the TCP
    /// peer.
    #[serde(default, deserialize_with = "mailroom_platform::config::string_list")]
    pub trusted_proxies: Vec<String>,
    /// Argon2id runs at once (each holds 19 MiB and a core); 0 = one per core available, at
    /// most 4 (`passwords::DEFAULT_MAX_CONCURRENCY`): a node's core count is not the pod's
    /// memory.
    #[serde(default)]
    pub password_hash_concurrency: usize,
    /// How long a sign-in (or any call that hashes a password) waits for a turn before it is
    /// refused with RESOURCE_EXHAUSTED.
    #[serde(default = "default_password_hash_queue_ms")]
    pub password_hash_queue_ms: u64,
    #[serde(default = "default_code_ttl")]
    pub login_code_ttl_secs: i64,
    /// The least time a refused sign-in takes, so an unknown address, a wrong password and
    /// an address of several organisations cannot be told apart by timing. Above the slowest
    /// Argon2id verification the machine sees.
    #[serde(default = "default_login_failure_floor")]
    pub login_failure_floor_ms: u64,
    /// How long a mailed password-reset link works.
    #[serde(default = "default_reset_ttl")]
    pub password_reset_ttl_secs: i64,
    /// Password-reset requests allowed per address per hour (the answer is the same either way).
    #[serde(default = "default_reset_rate")]
    pub password_resets_per_hour: u32,
    /// The page that takes a reset token; the link is this with `?token=…` appended. Empty
    /// (the default): `{MAILROOM_PUBLIC_URL}/reset-password`, or without a public URL
    /// `http://127.0.0.1:8080/reset-password` ([`IdentityConfig::resolve_links`], at start).
    #[serde(default)]
    pub password_reset_url: String,
    /// Users GetUser keeps in this replica's memory (its read model, `user_cache`); 0 reads
    /// every one from the database. About 0.5 KiB each (2.5 KiB at most: the longest names).
    #[serde(default = "default_user_cache_rows")]
    pub user_cache_rows: usize,
}

impl IdentityConfig {
    /// Fills the reset link's page when it was not set: under the platform's public URL
    /// (`PlatformConfig::public_base`) when there is one, else the old default. An explicit
    /// `password_reset_url` wins.
    pub fn resolve_links(&mut self, public_base: Option<&str>) {
        if self.password_reset_url.trim().is_empty() {
            self.password_reset_url = match public_base {
                Some(base) => format!("{base}/reset-password"),
                None => default_reset_url(),
            };
        }
    }
}

/// Accepts `"k1,k2"` (as environment variables carry it) or `["k1", "k2"]`.
fn default_user_cache_rows() -> usize {
    50_000
}
fn default_consumer_group() -> String {
    "mailroom-identity".into()
}
fn default_access_ttl() -> i64 {
    15 * 60
}
fn default_refresh_ttl() -> i64 {
    30 * 24 * 3600
}
fn default_login_rate() -> u32 {
    10
}
fn default_login_network_rate() -> u32 {
    60
}
fn default_password_change_rate() -> u32 {
    10
}
fn default_login_slowdown_after() -> u32 {
    100
}
fn default_login_slowdown_ms() -> u64 {
    1000
}
fn default_password_hash_queue_ms() -> u64 {
    2000
}
fn default_code_ttl() -> i64 {
    15 * 60
}
fn default_login_failure_floor() -> u64 {
    300
}
fn default_reset_ttl() -> i64 {
    3600
}
fn default_reset_rate() -> u32 {
    5
}
fn default_reset_url() -> String {
    "http://127.0.0.1:8080/reset-password".into()
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            signing_keys: Vec::new(),
            service_clients: BTreeMap::new(),
            smtp: SmtpSettings::default(),
            consumer_group: default_consumer_group(),
            access_token_ttl_secs: default_access_ttl(),
            refresh_token_ttl_secs: default_refresh_ttl(),
            login_attempts_per_minute: default_login_rate(),
            login_attempts_per_network_per_minute: default_login_network_rate(),
            login_slowdown_after_attempts: default_login_slowdown_after(),
            login_slowdown_ms: default_login_slowdown_ms(),
            password_changes_per_hour: default_password_change_rate(),
            trusted_proxies: Vec::new(),
            password_hash_concurrency: 0,
            password_hash_queue_ms: default_password_hash_queue_ms(),
            login_code_ttl_secs: default_code_ttl(),
            login_failure_floor_ms: default_login_failure_floor(),
            password_reset_ttl_secs: default_reset_ttl(),
            password_resets_per_hour: default_reset_rate(),
            password_reset_url: String::new(),
            user_cache_rows: default_user_cache_rows(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn signing_keys_come_as_a_list_or_a_comma_separated_string() {
        let figment = figment::Figment::new().merge(("signing_keys", "a+/=, b=="));
        let config: IdentityConfig = figment.extract().unwrap();
        let keys: Vec<&str> = config
            .signing_keys
            .iter()
            .map(|k| k.expose_secret())
            .collect();
        assert_eq!(keys, ["a+/=", "b=="]);
        let figment = figment::Figment::new().merge(("trusted_proxies", "10.0.0.0/8, fd00::/8"));
        let config: IdentityConfig = figment.extract().unwrap();
        assert_eq!(config.trusted_proxies, ["10.0.0.0/8", "fd00::/8"]);
        let figment = figment::Figment::new().merge(("signing_keys", vec!["c"]));
        let config: IdentityConfig = figment.extract().unwrap();
        assert_eq!(config.signing_keys.len(), 1);
        assert!(!format!("{config:?}").contains("a+/="));
    }

    #[test]
    fn the_reset_link_follows_the_public_url_unless_set() {
        let mut config = IdentityConfig::default();
        config.resolve_links(Some("https://mail.example.com"));
        assert_eq!(
            config.password_reset_url,
            "https://mail.example.com/reset-password"
        );
        let mut config = IdentityConfig::default();
        config.resolve_links(None);
        assert_eq!(
            config.password_reset_url,
            "http://127.0.0.1:8080/reset-password"
        );
        let figment =
            figment::Figment::new().merge(("password_reset_url", "https://other.test/reset"));
        let mut config: IdentityConfig = figment.extract().unwrap();
        config.resolve_links(Some("https://mail.example.com"));
        assert_eq!(config.password_reset_url, "https://other.test/reset");
    }
}
