//! Typed configuration, read once at start and validated before anything listens.
//!
//! Sources, later ones winning: built-in defaults, the TOML file named by `MAILROOM_CONFIG`
//! (optional), `DATABASE_URL` / `REDIS_URL` / `KAFKA_BROKERS`, and `MAILROOM_*` variables with
//! `__` between levels (`MAILROOM_IDENTITY__SMTP__HOST`). Secrets are [`SecretString`], which
//! prints as `[REDACTED]` in `Debug`, so a logged config shows none.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Where each service listens on a developer's machine (`mailroom serve all`, `mailroom dev`):
/// the default for every `*_endpoint` a service calls its peers on.
pub mod local {
    pub fn identity() -> String {
        "http://127.0.0.1:50051".into()
    }
    pub fn invitations() -> String {
        "http://127.0.0.1:50052".into()
    }
    pub fn mailboxes() -> String {
        "http://127.0.0.1:50053".into()
    }
    pub fn sync() -> String {
        "http://127.0.0.1:50054".into()
    }
    pub fn access() -> String {
        "http://127.0.0.1:50055".into()
    }
}

/// Why configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Read(#[from] Box<figment::Error>),
    #[error("configuration value `{key}` is invalid: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The sources every service reads its configuration from.
pub fn sources() -> Figment {
    let mut figment = Figment::from(Serialized::defaults(PlatformDefaults::default()));
    if let Ok(path) = std::env::var("MAILROOM_CONFIG") {
        figment = figment.merge(Toml::file(PathBuf::from(path)));
    }
    figment
        .merge(Env::raw().only(&["DATABASE_URL", "REDIS_URL", "KAFKA_BROKERS"]))
        .merge(Env::prefixed("MAILROOM_").split("__"))
        .merge(kafka_properties_from_env())
}

/// The `MAILROOM_KAFKA_PROPERTY_<NAME>` variables as the `kafka_properties` table (a variable
/// naming no property is left for [`PlatformConfig::validate`] to refuse).
fn kafka_properties_from_env() -> Serialized<std::collections::BTreeMap<String, String>> {
    let properties = crate::kafka::properties_from_process_env()
        .unwrap_or_else(|_| std::collections::BTreeMap::from([(String::new(), String::new())]));
    Serialized::default("kafka_properties", properties)
}

/// Reads one section (`identity`, …) of the configuration into `T`.
pub fn section<T: for<'de> Deserialize<'de>>(
    figment: &Figment,
    key: &str,
) -> Result<T, ConfigError> {
    figment
        .focus(key)
        .extract()
        .map_err(|err| ConfigError::Read(Box::new(err)))
}

#[derive(Serialize)]
struct PlatformDefaults {
    database_url: &'static str,
    redis_url: &'static str,
    kafka_brokers: &'static str,
}

impl Default for PlatformDefaults {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/mailroom",
            redis_url: "redis://127.0.0.1:6379",
            kafka_brokers: "127.0.0.1:19092",
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

/// What every service needs, whichever it is.
#[derive(Debug, Clone, Deserialize)]
pub struct PlatformConfig {
    pub database_url: SecretString,
    pub redis_url: SecretString,
    /// TLS to PostgreSQL over `DATABASE_URL`'s own parameters (`MAILROOM_DATABASE_TLS__MODE`,
    /// `__CA_FILE`, `__CERT_FILE`, `__KEY_FILE`; see [`crate::tls`]).
    #[serde(default)]
    pub database_tls: crate::tls::DatabaseTls,
    /// A private CA and a client certificate for `rediss://` (`MAILROOM_REDIS_TLS__CA_FILE`,
    /// `__CERT_FILE`, `__KEY_FILE`; see [`crate::tls`]).
    #[serde(default)]
    pub redis_tls: crate::tls::RedisTls,
    pub kafka_brokers: String,
    #[serde(default = "default_listen_host")]
    pub listen_host: IpAddr,
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// The longest any call may run, whatever deadline the caller asked for.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// After a stop is asked for, how long a service goes on accepting connections and
    /// answering calls while its health says NOT_SERVING, so that callers (which re-resolve a
    /// headless Service every few seconds) move to other pods before this one stops listening;
    /// its background work runs on meanwhile. Then the calls in flight finish (each within
    /// `request_timeout_ms`). 0 stops listening at once.
    #[serde(default)]
    pub shutdown_drain_ms: u64,
    /// Calls served at once per service (`MAILROOM_CONCURRENCY_LIMIT`); more wait in a short
    /// queue, or are refused (see [`crate::grpc::Admission`]).
    #[serde(default = "default_concurrency_limit")]
    pub concurrency_limit: usize,
    /// Calls per service that may wait for one of those slots (`MAILROOM_CONCURRENCY_QUEUE`);
    /// more are refused at once with RESOURCE_EXHAUSTED. 0: no queue.
    #[serde(default = "default_concurrency_queue")]
    pub concurrency_queue: usize,
    /// The longest a call waits in that queue before it is refused with RESOURCE_EXHAUSTED
    /// (`MAILROOM_CONCURRENCY_QUEUE_MS`).
    #[serde(default = "default_concurrency_queue_ms")]
    pub concurrency_queue_ms: u64,
    #[serde(default = "default_db_max_connections")]
    pub db_max_connections: u32,
    /// Whether the Kafka producer uses idempotent delivery (needs broker support).
    #[serde(default = "default_true")]
    pub kafka_idempotence: bool,
    /// Whether the outbox relays publish in Kafka transactions (needs idempotence, and an ACL
    /// on their transactional ids where the broker checks ACLs): a relay leader that stops
    /// mid-round then never has an event sent twice (`MAILROOM_KAFKA_TRANSACTIONS`). Off by
    /// default: on tansu (the test broker) transactions slowed its group coordination and
    /// doubled the outbox → consumer latency (README, "Seventh pass").
    #[serde(default)]
    pub kafka_transactions: bool,
    /// Partitions of topics Mailroom creates.
    #[serde(default = "default_partitions")]
    pub kafka_partitions: i32,
    #[serde(default = "default_replication")]
    pub kafka_replication: i32,
    /// What every topic's name starts with (`<prefix>.identity.events`, …). The default,
    /// `mailroom`, is what the chart's autoscaler and alerts name; tests run under their own.
    #[serde(default = "default_topic_prefix")]
    pub kafka_topic_prefix: String,
    /// librdkafka properties set on every Kafka client (TLS, SASL, tuning): the
    /// `[kafka_properties]` table and `MAILROOM_KAFKA_PROPERTY_<NAME>` variables (see
    /// [`crate::kafka::KafkaProperties`]); secret values are redacted in `Debug`.
    #[serde(default)]
    pub kafka_properties: crate::kafka::KafkaProperties,
    /// Whether Kafka properties that turn off the check of who the broker is
    /// (`enable.ssl.certificate.verification=false`, `ssl.endpoint.identification.algorithm=none`)
    /// are let through, with a warning at start (`MAILROOM_KAFKA_ALLOW_INSECURE_TLS`); false:
    /// they stop the process ([`crate::kafka::KafkaProperties::check_tls`]).
    #[serde(default)]
    pub kafka_allow_insecure_tls: bool,
    /// How many times the outbox relay tries an event the broker refuses for good (too large,
    /// an invalid topic, not authorised, …) before it parks it and goes on with the events
    /// after it (`mailroom ctl events parked list|retry`). Refusals that may pass (the broker
    /// down, timeouts) never park an event.
    #[serde(default = "default_outbox_max_attempts")]
    pub outbox_max_attempts: u32,
    /// Whether to serve Prometheus metrics (on each service's metrics port).
    #[serde(default = "default_true")]
    pub metrics_enabled: bool,
    /// How long a service waits at start to read the token revocations topic to its end
    /// before it serves anyway: until it has read it, every call with a token is refused
    /// (UNAVAILABLE), so no token revoked while it was down gets through.
    #[serde(default = "default_revocations_catch_up_ms")]
    pub revocations_catch_up_ms: u64,
    /// How often a service fetches identity's token-signing keys (JWKS) again, so that a key
    /// withdrawn at identity is refused everywhere within this time.
    #[serde(default = "default_jwks_refresh_ms")]
    pub jwks_refresh_ms: u64,
    /// At most one fetch of the keys per this interval for tokens signed with a key not in
    /// the set (a flood of made-up key ids costs identity nothing), and how long a failed
    /// fetch is remembered before a call may try again.
    #[serde(default = "default_jwks_retry_ms")]
    pub jwks_retry_ms: u64,
    /// How long one fetch of the keys may take, connecting included.
    #[serde(default = "default_jwks_timeout_ms")]
    pub jwks_timeout_ms: u64,
    /// How long the keys may go unconfirmed (every fetch failing) before each failure is
    /// logged as an error and `mailroom_auth_jwks_stale` turns 1 (an alert): a key withdrawn
    /// at identity meanwhile is still trusted by this process.
    #[serde(default = "default_jwks_max_stale_ms")]
    pub jwks_max_stale_ms: u64,
    /// Days a consumer keeps the ids of the events it applied (`processed_events`), so that a
    /// redelivery changes nothing: beyond any redelivery, so more than the topics keep their
    /// records ([`crate::kafka::EVENT_RETENTION`], 7 days).
    #[serde(default = "default_processed_events_retention_days")]
    pub processed_events_retention_days: u32,
    /// Days a consumer keeps its dead letters (replayed or not).
    #[serde(default = "default_dead_letters_retention_days")]
    pub dead_letters_retention_days: u32,
    /// Where people reach the web console (`MAILROOM_PUBLIC_URL`, e.g.
    /// `https://mail.example.com`): the links identity and invitations mail (`/invite`,
    /// `/join`, `/reset-password`) start with it, and the console's cookies are `Secure` when it
    /// is https. Unset: the links keep their own settings' defaults.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Whether a service applies its schema's migrations at start (`MAILROOM_MIGRATE_ON_START`,
    /// true: `mailroom dev`, local runs, tests). The chart sets false: only its migrate Job
    /// (`mailroom migrate`) migrates, and a service waits, not ready, until every migration it
    /// needs is applied, and refuses a schema contracted past it ([`crate::schema`]).
    #[serde(default = "default_true")]
    pub migrate_on_start: bool,
    /// How often each hosted service checks its database and the broker
    /// (`MAILROOM_READINESS_INTERVAL_MS`, [`crate::readiness`]): `mailroom_dependency_up`, and
    /// readiness until the database first answers after start.
    #[serde(default = "default_readiness_interval_ms")]
    pub readiness_interval_ms: u64,
    /// TLS on the gRPC port and towards peers (`MAILROOM_GRPC_TLS__*`, see
    /// [`crate::grpc_tls`]); unset: plaintext gRPC.
    #[serde(default)]
    pub grpc_tls: crate::grpc_tls::GrpcTlsConfig,
}

fn default_processed_events_retention_days() -> u32 {
    30
}
fn default_dead_letters_retention_days() -> u32 {
    90
}

fn default_revocations_catch_up_ms() -> u64 {
    10_000
}
fn default_jwks_refresh_ms() -> u64 {
    300_000
}
fn default_jwks_retry_ms() -> u64 {
    5_000
}
fn default_jwks_timeout_ms() -> u64 {
    5_000
}
fn default_jwks_max_stale_ms() -> u64 {
    3_600_000
}

fn default_listen_host() -> IpAddr {
    IpAddr::from([0, 0, 0, 0])
}
fn default_log_level() -> String {
    "info".into()
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_concurrency_limit() -> usize {
    1024
}
fn default_concurrency_queue() -> usize {
    256
}
fn default_concurrency_queue_ms() -> u64 {
    100
}
fn default_db_max_connections() -> u32 {
    16
}
fn default_true() -> bool {
    true
}
fn default_partitions() -> i32 {
    8
}
fn default_replication() -> i32 {
    1
}
fn default_topic_prefix() -> String {
    DEFAULT_TOPIC_PREFIX.into()
}
fn default_readiness_interval_ms() -> u64 {
    5_000
}
fn default_outbox_max_attempts() -> u32 {
    5
}

impl PlatformConfig {
    /// How many calls each service runs at once and how many wait, for how long.
    pub fn admission(&self) -> crate::grpc::Admission {
        crate::grpc::Admission {
            limit: self.concurrency_limit,
            queue: self.concurrency_queue,
            queue_wait: std::time::Duration::from_millis(self.concurrency_queue_ms),
        }
    }

    pub fn revocations_catch_up(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.revocations_catch_up_ms)
    }

    /// Reads the platform part of the configuration and checks it.
    pub fn load(figment: &Figment) -> Result<Self, ConfigError> {
        let config: Self = figment
            .extract()
            .map_err(|err| ConfigError::Read(Box::new(err)))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.grpc_tls.check().map_err(|err| ConfigError::Invalid {
            key: "MAILROOM_GRPC_TLS",
            reason: err.to_string(),
        })?;
        if let Some(url) = &self.public_url {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            let host = rest.map(|r| r.trim_end_matches('/')).unwrap_or("");
            if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
                return Err(ConfigError::Invalid {
                    key: "MAILROOM_PUBLIC_URL",
                    reason: "must be an http:// or https:// origin such as https://mail.example.com (no path)".into(),
                });
            }
        }
        let db = self.database_url.expose_secret();
        if !(db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            return Err(ConfigError::Invalid {
                key: "DATABASE_URL",
                reason: "must be a postgres:// URL".into(),
            });
        }
        let redis = self.redis_url.expose_secret();
        if !(redis.starts_with("redis://") || redis.starts_with("rediss://")) {
            return Err(ConfigError::Invalid {
                key: "REDIS_URL",
                reason: "must be a redis:// or rediss:// URL".into(),
            });
        }
        self.database_tls.validate(db)?;
        self.redis_tls.validate(redis)?;
        if self.kafka_brokers.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "KAFKA_BROKERS",
                reason: "must list at least one host:port".into(),
            });
        }
        self.kafka_properties
            .check()
            .map_err(|err| ConfigError::Invalid {
                key: "MAILROOM_KAFKA_PROPERTY_* / kafka_properties",
                reason: err.to_string(),
            })?;
        self.kafka_properties
            .check_tls(self.kafka_allow_insecure_tls)
            .map_err(|err| ConfigError::Invalid {
                key: "MAILROOM_KAFKA_PROPERTY_* / kafka_properties",
                reason: err.to_string(),
            })?;
        if !valid_topic_prefix(&self.kafka_topic_prefix) {
            return Err(ConfigError::Invalid {
                key: "MAILROOM_KAFKA_TOPIC_PREFIX",
                reason: "must be 1 to 200 of ASCII letters, digits, '.', '_' and '-'".into(),
            });
        }
        if self.request_timeout_ms == 0
            || self.concurrency_limit == 0
            || self.db_max_connections == 0
        {
            return Err(ConfigError::Invalid {
                key: "MAILROOM_REQUEST_TIMEOUT_MS / CONCURRENCY_LIMIT / DB_MAX_CONNECTIONS",
                reason: "must be greater than zero".into(),
            });
        }
        if self.outbox_max_attempts == 0 || self.outbox_max_attempts > 1000 {
            return Err(ConfigError::Invalid {
                key: "MAILROOM_OUTBOX_MAX_ATTEMPTS",
                reason: "must be 1 to 1000".into(),
            });
        }
        if u64::from(self.processed_events_retention_days) * 24 * 3600
            <= crate::kafka::EVENT_RETENTION.as_secs()
        {
            return Err(ConfigError::Invalid {
                key: "MAILROOM_PROCESSED_EVENTS_RETENTION_DAYS",
                reason: format!(
                    "must be more than the {} days the topics keep their records, or a redelivered event could be applied twice",
                    crate::kafka::EVENT_RETENTION.as_secs() / (24 * 3600)
                ),
            });
        }
        if self.readiness_interval_ms < 100 {
            return Err(ConfigError::Invalid {
                key: "MAILROOM_READINESS_INTERVAL_MS",
                reason: "must be at least 100 (ms between a service's checks of its database and broker)".into(),
            });
        }
        if self.dead_letters_retention_days == 0 {
            return Err(ConfigError::Invalid {
                key: "MAILROOM_DEAD_LETTERS_RETENTION_DAYS",
                reason: "must be greater than zero".into(),
            });
        }
        if self.jwks_refresh_ms == 0 || self.jwks_timeout_ms == 0 || self.jwks_max_stale_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "MAILROOM_JWKS_REFRESH_MS / JWKS_TIMEOUT_MS / JWKS_MAX_STALE_MS",
                reason: "must be greater than zero".into(),
            });
        }
        if u128::from(self.jwks_retry_ms) < crate::auth::MIN_KEY_RETRY.as_millis() {
            return Err(ConfigError::Invalid {
                key: "MAILROOM_JWKS_RETRY_MS",
                reason: format!(
                    "must be at least {} ms: a failed fetch of the signing keys would be tried again at once, without end",
                    crate::auth::MIN_KEY_RETRY.as_millis()
                ),
            });
        }
        Ok(())
    }

    /// [`Self::public_url`] without a trailing slash, ready for `{base}/invite`.
    pub fn public_base(&self) -> Option<&str> {
        self.public_url.as_deref().map(|u| u.trim_end_matches('/'))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn processed_events_retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.processed_events_retention_days) * 24 * 3600)
    }

    pub fn dead_letters_retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.dead_letters_retention_days) * 24 * 3600)
    }

    pub fn readiness_interval(&self) -> Duration {
        Duration::from_millis(self.readiness_interval_ms)
    }

    pub fn shutdown_drain(&self) -> Duration {
        Duration::from_millis(self.shutdown_drain_ms)
    }
}

/// A list of secrets from configuration: a list, or one comma-separated string (as an
/// environment variable gives it), blanks dropped.
pub fn secret_list<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Vec<secrecy::SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let values = match OneOrMany::deserialize(de)? {
        OneOrMany::One(s) => s.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(v) => v,
    };
    Ok(values
        .into_iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .map(secrecy::SecretString::from)
        .collect())
}

/// A list of plain strings from configuration (CIDRs, host names): a list, or one
/// comma-separated string (as an environment variable gives it), blanks dropped.
pub fn string_list<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    Ok(secret_list(de)?
        .into_iter()
        .map(|v| secrecy::ExposeSecret::expose_secret(&v).to_owned())
        .collect())
}

/// The prefix of every Kafka topic unless configured otherwise.
pub const DEFAULT_TOPIC_PREFIX: &str = "mailroom";

/// Whether `prefix` can start a topic name: 1 to 200 of ASCII letters, digits, `.`, `_`, `-`.
pub fn valid_topic_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 200
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figment(pairs: &[(&str, &str)]) -> Figment {
        let mut f = Figment::from(Serialized::defaults(PlatformDefaults::default()));
        for (k, v) in pairs {
            f = f.merge((k.to_string(), v.to_string()));
        }
        f
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let config = PlatformConfig::load(&figment(&[(
            "database_url",
            "postgres://app:hunter2@db/mailroom",
        )]))
        .expect("valid config");
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn topics_are_named_under_mailroom_unless_configured() {
        let config = PlatformConfig::load(&figment(&[])).expect("valid config");
        assert_eq!(config.kafka_topic_prefix, "mailroom");
        let config = PlatformConfig::load(&figment(&[("kafka_topic_prefix", "tests.x1")]))
            .expect("valid config");
        assert_eq!(config.kafka_topic_prefix, "tests.x1");
        let err = PlatformConfig::load(&figment(&[("kafka_topic_prefix", "a b")])).unwrap_err();
        assert!(err.to_string().contains("TOPIC_PREFIX"), "{err}");
    }

    #[test]
    fn processed_events_outlive_the_records_of_the_topics() {
        let config = PlatformConfig::load(&figment(&[])).expect("valid config");
        assert_eq!(config.processed_events_retention_days, 30);
        assert_eq!(config.dead_letters_retention_days, 90);
        assert!(config.processed_events_retention() > crate::kafka::EVENT_RETENTION);
        let short = figment(&[]).merge(("processed_events_retention_days", 7));
        let err = PlatformConfig::load(&short).unwrap_err();
        assert!(
            err.to_string().contains("PROCESSED_EVENTS_RETENTION"),
            "{err}"
        );
    }

    #[test]
    fn a_jwks_retry_interval_that_would_spin_is_refused_at_start() {
        for retry in [0u64, 99] {
            let err =
                PlatformConfig::load(&figment(&[]).merge(("jwks_retry_ms", retry))).unwrap_err();
            assert!(err.to_string().contains("MAILROOM_JWKS_RETRY_MS"), "{err}");
        }
        let config = PlatformConfig::load(&figment(&[]).merge(("jwks_retry_ms", 100u64)))
            .expect("valid config");
        assert_eq!(config.jwks_max_stale_ms, 3_600_000);
        let err =
            PlatformConfig::load(&figment(&[]).merge(("jwks_max_stale_ms", 0u64))).unwrap_err();
        assert!(err.to_string().contains("JWKS_MAX_STALE_MS"), "{err}");
    }

    #[test]
    fn services_migrate_at_start_unless_told_and_check_readiness_every_5_s() {
        let config = PlatformConfig::load(&figment(&[])).expect("valid config");
        assert!(config.migrate_on_start);
        assert_eq!(config.readiness_interval(), Duration::from_secs(5));
        let config = PlatformConfig::load(&figment(&[]).merge(("migrate_on_start", false)))
            .expect("valid config");
        assert!(!config.migrate_on_start);
        let err = PlatformConfig::load(&figment(&[]).merge(("readiness_interval_ms", 10u64)))
            .unwrap_err();
        assert!(
            err.to_string().contains("MAILROOM_READINESS_INTERVAL_MS"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_database_url_is_refused_at_start() {
        let err = PlatformConfig::load(&figment(&[("database_url", "mysql://x")])).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
    }
}
