//! librdkafka properties from configuration, applied to every Kafka client Mailroom builds:
//! TLS (`security.protocol`, `ssl.*`), SASL (`sasl.*`) and any tuning a managed broker needs.
//!
//! Two sources, merged by [`crate::config::sources`]: a `[kafka_properties]` table in the TOML
//! file (`"security.protocol" = "SASL_SSL"`; an unquoted dotted key makes nested tables, which
//! are joined back with `.`), and `MAILROOM_KAFKA_PROPERTY_<NAME>` environment variables,
//! whose NAME is lower-cased with `_` turned into `.`
//! (`MAILROOM_KAFKA_PROPERTY_SASL_MECHANISM` → `sasl.mechanism`); the environment wins.
//!
//! Properties Mailroom sets itself because delivery depends on them (commits, offsets, group
//! ids, acknowledgements, ordering) are refused with a message naming them ([`RESERVED`]), and
//! the whole set is checked by librdkafka at start ([`KafkaProperties::check`]). Values of
//! secret properties (`sasl.password`, `ssl.key.password`, `ssl.key.pem`,
//! `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.extensions`, anything naming a secret,
//! password, passphrase or extensions) never appear in `Debug` output nor in the errors here.
//!
//! Properties that turn off the check of who the broker is ([`INSECURE_TLS`]:
//! `enable.ssl.certificate.verification=false`, `ssl.endpoint.identification.algorithm=none`)
//! are refused at start unless `MAILROOM_KAFKA_ALLOW_INSECURE_TLS=true`
//! ([`KafkaProperties::check_tls`]); allowed, each is warned about once
//! ([`KafkaProperties::warn_insecure_tls`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;

use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseProducer;
use rdkafka::ClientConfig;
use serde::{Deserialize, Deserializer};

/// The prefix of the environment variables that carry librdkafka properties.
pub const PROPERTY_ENV_PREFIX: &str = "MAILROOM_KAFKA_PROPERTY_";

/// Properties Mailroom sets itself, and why each cannot be given in configuration.
pub const RESERVED: &[(&str, &str)] = &[
    (
        "bootstrap.servers",
        "set KAFKA_BROKERS (or `kafka_brokers`) instead",
    ),
    (
        "metadata.broker.list",
        "set KAFKA_BROKERS (or `kafka_brokers`) instead",
    ),
    (
        "enable.idempotence",
        "set MAILROOM_KAFKA_IDEMPOTENCE instead",
    ),
    (
        "acks",
        "the producer waits for every in-sync replica, or an acknowledged event could be lost",
    ),
    (
        "request.required.acks",
        "the producer waits for every in-sync replica, or an acknowledged event could be lost",
    ),
    (
        "max.in.flight.requests.per.connection",
        "Mailroom limits it to keep each partition in order",
    ),
    (
        "max.in.flight",
        "Mailroom limits it to keep each partition in order",
    ),
    (
        "transactional.id",
        "every producer would share it and fence the others",
    ),
    (
        "group.id",
        "each consumer has its own group (MAILROOM_<SERVICE>__CONSUMER_GROUP where offered)",
    ),
    (
        "group.instance.id",
        "every consumer of the process would share it and evict the others",
    ),
    (
        "enable.auto.commit",
        "consumers commit only what they have handled",
    ),
    (
        "auto.commit.enable",
        "consumers commit only what they have handled",
    ),
    (
        "enable.auto.offset.store",
        "consumers store only the offsets of what they have handled",
    ),
    (
        "auto.offset.reset",
        "a new group or a compacted-away offset must start at the beginning, never skip events",
    ),
    ("isolation.level", "consumers read committed records only"),
    (
        "enable.partition.eof",
        "readers need it to know when they have read a whole topic",
    ),
    (
        "partition.assignment.strategy",
        "consumers rely on cooperative rebalancing to track the partitions they own",
    ),
    (
        "max.poll.interval.ms",
        "it follows the longest piece of work a consumer may run",
    ),
];

/// The variable that lets [`INSECURE_TLS`] properties through.
pub const ALLOW_INSECURE_TLS_ENV: &str = "MAILROOM_KAFKA_ALLOW_INSECURE_TLS";

/// Properties that turn off a check of who the broker is: the name, whether a value does
/// (librdkafka's spelling: `false`/`f`/`0`, `none` or empty), what is no longer checked, and
/// how to do without it. Anything but the secure values counts as turning the check off.
pub const INSECURE_TLS: &[InsecureTlsProperty] = &[
    InsecureTlsProperty {
        name: "enable.ssl.certificate.verification",
        secure: &["true", "t", "1"],
        turns_off: "the check of the brokers' TLS certificates (any certificate is accepted)",
        fix: "remove it and set ssl.ca.location (MAILROOM_KAFKA_PROPERTY_SSL_CA_LOCATION) to the CA that signed the brokers' certificates",
    },
    InsecureTlsProperty {
        name: "ssl.endpoint.identification.algorithm",
        secure: &["https"],
        turns_off: "the check that a broker's certificate names the host connected to (any certificate the trusted CAs signed is accepted for any broker)",
        fix: "remove it (librdkafka's default is `https`), set ssl.ca.location (MAILROOM_KAFKA_PROPERTY_SSL_CA_LOCATION) to the brokers' CA, and list in KAFKA_BROKERS the host names their certificates carry",
    },
];

/// A property that can turn off a check of who the broker is ([`INSECURE_TLS`]).
#[derive(Debug, Clone, Copy)]
pub struct InsecureTlsProperty {
    pub name: &'static str,
    /// The values (lower-cased) that keep the check on.
    pub secure: &'static [&'static str],
    pub turns_off: &'static str,
    pub fix: &'static str,
}

/// A property set so that a check of who the broker is is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsecureTls {
    /// The property, as configured.
    pub name: String,
    pub value: String,
    pub turns_off: &'static str,
    pub fix: &'static str,
}

impl fmt::Display for InsecureTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Kafka property `{}={}` ({}) turns off {}: anyone on the network path to the brokers can read Mailroom's events and forge them. To fix: {}",
            self.name,
            self.value,
            env_name(&self.name),
            self.turns_off,
            self.fix
        )
    }
}

/// Why the configured properties cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KafkaPropertyError {
    #[error("Kafka property `{name}` cannot be set ({env} or `[kafka_properties]`): Mailroom sets it itself; {why}")]
    Reserved {
        name: String,
        env: String,
        why: &'static str,
    },
    #[error("a Kafka property has no name (a variable named just {PROPERTY_ENV_PREFIX}, or an empty key in `[kafka_properties]`): put the property after the prefix, as in MAILROOM_KAFKA_PROPERTY_SECURITY_PROTOCOL=SSL")]
    EmptyName,
    #[error("librdkafka refused them: {0}")]
    Refused(String),
    #[error("{0}; or, to accept the risk (a test setup only), set {ALLOW_INSECURE_TLS_ENV}=true")]
    InsecureTls(InsecureTls),
}

/// The insecure properties already warned about in this process (by name and value).
static WARNED_INSECURE_TLS: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());

/// librdkafka properties from configuration, by name. Values of secret properties never
/// appear in `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties {
    values: BTreeMap<String, String>,
}

/// Whether the value of property `name` is a secret (never printed).
pub fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    // `sasl.oauthbearer.extensions` carries credentials (`logicalCluster=…,identityPoolId=…`,
    // tokens) to the broker.
    [
        "password",
        "secret",
        "passphrase",
        "private.key",
        "extensions",
    ]
    .iter()
    .any(|word| name.contains(word))
        || name.ends_with("key.pem")
        || name == "ssl_key"
        || name == "sasl.oauthbearer.config"
}

/// The environment variable that sets property `name` (`sasl.mechanism` →
/// `MAILROOM_KAFKA_PROPERTY_SASL_MECHANISM`).
pub fn env_name(name: &str) -> String {
    format!(
        "{PROPERTY_ENV_PREFIX}{}",
        name.replace('.', "_").to_ascii_uppercase()
    )
}

/// The properties the `MAILROOM_KAFKA_PROPERTY_*` variables among `vars` set, by property name
/// (NAME lower-cased, `_` → `.`). Other variables are ignored.
pub fn properties_from_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, KafkaPropertyError> {
    let mut properties = BTreeMap::new();
    for (key, value) in vars {
        let Some(name) = key.strip_prefix(PROPERTY_ENV_PREFIX) else {
            continue;
        };
        if name.is_empty() {
            return Err(KafkaPropertyError::EmptyName);
        }
        properties.insert(name.to_ascii_lowercase().replace('_', "."), value);
    }
    Ok(properties)
}

/// [`properties_from_env`] over this process's environment (variables whose name or value
/// is not Unicode are skipped; no property can be named so).
pub fn properties_from_process_env() -> Result<BTreeMap<String, String>, KafkaPropertyError> {
    properties_from_env(
        std::env::vars_os()
            .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?))),
    )
}

impl KafkaProperties {
    /// The properties `values` names, unless one is [`RESERVED`] or has an empty name.
    pub fn new(
        values: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, KafkaPropertyError> {
        let mut checked = BTreeMap::new();
        for (name, value) in values {
            let name = name.trim().to_owned();
            if name.is_empty() {
                return Err(KafkaPropertyError::EmptyName);
            }
            if let Some((_, why)) = RESERVED.iter().find(|(reserved, _)| *reserved == name) {
                return Err(KafkaPropertyError::Reserved {
                    env: env_name(&name),
                    name,
                    why,
                });
            }
            checked.insert(name, value);
        }
        Ok(Self { values: checked })
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value of property `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The names of the properties set, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Sets every property on `config` (over what was there).
    pub fn apply<'c>(&self, config: &'c mut ClientConfig) -> &'c mut ClientConfig {
        for (name, value) in &self.values {
            config.set(name, value);
        }
        config
    }

    /// Has librdkafka check every property (its name, its value, and what it needs at
    /// creation: a CA file that exists, a SASL mechanism this build has) by building a
    /// producer and a consumer that connect to nothing. Its message, with every secret value
    /// blanked, says what is wrong.
    pub fn check(&self) -> Result<(), KafkaPropertyError> {
        if self.is_empty() {
            return Ok(());
        }
        let mut config = ClientConfig::new();
        // No bootstrap.servers: nothing connects. log_level 3 keeps librdkafka's warnings
        // about consumer-only properties on the producer (and the reverse) quiet.
        config.set("log_level", "3");
        self.apply(&mut config);
        let refused = |err: KafkaError| KafkaPropertyError::Refused(self.redact(&describe(err)));
        config.create::<BaseProducer>().map_err(refused)?;
        config.create::<BaseConsumer>().map_err(refused)?;
        Ok(())
    }

    /// The properties set so that a check of who the broker is is off ([`INSECURE_TLS`]),
    /// in name order. Names are compared without regard to case.
    pub fn insecure_tls(&self) -> Vec<InsecureTls> {
        self.values
            .iter()
            .filter_map(|(name, value)| {
                let property = INSECURE_TLS
                    .iter()
                    .find(|p| p.name.eq_ignore_ascii_case(name.trim()))?;
                let normalized = value.trim().to_ascii_lowercase();
                if property.secure.contains(&normalized.as_str()) {
                    return None;
                }
                Some(InsecureTls {
                    name: name.clone(),
                    value: value.clone(),
                    turns_off: property.turns_off,
                    fix: property.fix,
                })
            })
            .collect()
    }

    /// Refuses a property that turns off a check of who the broker is ([`INSECURE_TLS`])
    /// unless `allow_insecure` (`MAILROOM_KAFKA_ALLOW_INSECURE_TLS=true`); the error names the
    /// property, what it turns off, and how to do without it.
    pub fn check_tls(&self, allow_insecure: bool) -> Result<(), KafkaPropertyError> {
        match self.insecure_tls().into_iter().next() {
            Some(insecure) if !allow_insecure => Err(KafkaPropertyError::InsecureTls(insecure)),
            _ => Ok(()),
        }
    }

    /// Logs a warning for each property that turns off a check of who the broker is, once per
    /// process whatever the number of clients built (call it at start, after logging is set
    /// up; [`crate::kafka::KafkaSettings::from_config`] does). Returns how many it logged.
    pub fn warn_insecure_tls(&self) -> usize {
        self.warn_insecure_tls_once_in(&WARNED_INSECURE_TLS)
    }

    fn warn_insecure_tls_once_in(&self, warned: &Mutex<BTreeSet<(String, String)>>) -> usize {
        let mut warned = warned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut logged = 0;
        for insecure in self.insecure_tls() {
            if warned.insert((insecure.name.clone(), insecure.value.clone())) {
                tracing::warn!(
                    property = %insecure.name,
                    env = %env_name(&insecure.name),
                    "{insecure}; then unset {ALLOW_INSECURE_TLS_ENV}, which lets it through"
                );
                logged += 1;
            }
        }
        logged
    }

    /// `text` with every secret value replaced by `[REDACTED]` (values of fewer than four
    /// characters are left: they would blank parts of words, and guard nothing).
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (name, value) in &self.values {
            if is_secret(name) && value.chars().count() >= 4 {
                text = text.replace(value.as_str(), "[REDACTED]");
            }
        }
        text
    }
}

/// A librdkafka error without the value a property was given (rdkafka's own text carries it).
fn describe(err: KafkaError) -> String {
    match err {
        KafkaError::ClientConfig(_, description, key, _) => {
            format!("property `{key}` ({}): {description}", env_name(&key))
        }
        KafkaError::ClientCreation(message) => message,
        other => other.to_string(),
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in &self.values {
            if is_secret(name) {
                map.entry(name, &"[REDACTED]");
            } else {
                map.entry(name, value);
            }
        }
        map.finish()
    }
}

/// A value in the `[kafka_properties]` table: text, a number or a boolean, or a nested table
/// (an unquoted dotted key in TOML).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawValue {
    Text(String),
    Bool(bool),
    Integer(i64),
    Float(f64),
    Table(BTreeMap<String, RawValue>),
}

fn flatten(
    prefix: &str,
    table: BTreeMap<String, RawValue>,
    nested: &mut BTreeMap<String, String>,
    flat: &mut BTreeMap<String, String>,
) {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        // A key written whole (`"security.protocol"`, or from the environment) wins over
        // the same name made of nested tables.
        let out = if prefix.is_empty() {
            &mut *flat
        } else {
            &mut *nested
        };
        match value {
            RawValue::Text(text) => {
                out.insert(name, text);
            }
            RawValue::Bool(b) => {
                out.insert(name, b.to_string());
            }
            RawValue::Integer(i) => {
                out.insert(name, i.to_string());
            }
            RawValue::Float(x) => {
                out.insert(name, x.to_string());
            }
            RawValue::Table(inner) => flatten(&name, inner, nested, flat),
        }
    }
}

impl<'de> Deserialize<'de> for KafkaProperties {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let table = BTreeMap::<String, RawValue>::deserialize(de)?;
        let (mut nested, mut flat) = (BTreeMap::new(), BTreeMap::new());
        flatten("", table, &mut nested, &mut flat);
        nested.extend(flat);
        KafkaProperties::new(nested).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Serialized, Toml};
    use figment::Figment;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_env_var_names_its_property_lower_cased_with_dots() {
        let found = properties_from_env(vars(&[
            ("MAILROOM_KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL"),
            ("MAILROOM_KAFKA_PROPERTY_SASL_MECHANISM", "SCRAM-SHA-512"),
            (
                "MAILROOM_KAFKA_PROPERTY_SSL_CA_LOCATION",
                "/etc/mailroom/tls/kafka/ca.crt",
            ),
            ("MAILROOM_KAFKA_PARTITIONS", "8"),
            ("KAFKA_BROKERS", "b:9096"),
        ]))
        .expect("valid");
        assert_eq!(
            found,
            BTreeMap::from([
                ("sasl.mechanism".into(), "SCRAM-SHA-512".into()),
                ("security.protocol".into(), "SASL_SSL".into()),
                (
                    "ssl.ca.location".into(),
                    "/etc/mailroom/tls/kafka/ca.crt".into()
                ),
            ])
        );
        assert_eq!(
            env_name("ssl.ca.location"),
            "MAILROOM_KAFKA_PROPERTY_SSL_CA_LOCATION"
        );
        let err = properties_from_env(vars(&[("MAILROOM_KAFKA_PROPERTY_", "x")])).unwrap_err();
        assert!(err.to_string().contains("has no name"), "{err}");
    }

    #[test]
    fn a_property_mailroom_sets_itself_is_refused_by_name() {
        for (name, var) in [
            (
                "enable.auto.commit",
                "MAILROOM_KAFKA_PROPERTY_ENABLE_AUTO_COMMIT",
            ),
            ("group.id", "MAILROOM_KAFKA_PROPERTY_GROUP_ID"),
            ("isolation.level", "MAILROOM_KAFKA_PROPERTY_ISOLATION_LEVEL"),
            (
                "bootstrap.servers",
                "MAILROOM_KAFKA_PROPERTY_BOOTSTRAP_SERVERS",
            ),
        ] {
            let err = KafkaProperties::new(vars(&[(name, "x")])).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&format!("`{name}`")), "{text}");
            assert!(text.contains(var), "{text}");
        }
        let err = KafkaProperties::new(vars(&[("bootstrap.servers", "x")])).unwrap_err();
        assert!(err.to_string().contains("KAFKA_BROKERS"), "{err}");
    }

    #[test]
    fn secret_values_are_never_printed() {
        let properties = KafkaProperties::new(vars(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.username", "mailroom"),
            ("sasl.password", "hunter2-pw"),
            ("ssl.key.password", "key-pw-77"),
            ("sasl.oauthbearer.client.secret", "oauth-s3cr3t"),
            ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----abc"),
        ]))
        .expect("valid");
        let printed = format!("{properties:?}");
        for secret in [
            "hunter2-pw",
            "key-pw-77",
            "oauth-s3cr3t",
            "BEGIN PRIVATE KEY",
        ] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(
            printed.contains("SASL_SSL") && printed.contains("mailroom"),
            "{printed}"
        );
        assert_eq!(
            properties.redact("login hunter2-pw failed"),
            "login [REDACTED] failed"
        );
    }

    #[test]
    fn oauthbearer_client_secrets_and_extensions_are_never_printed() {
        for name in [
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.extensions",
            "SASL.OAUTHBEARER.EXTENSIONS",
            "sasl.oauthbearer.config",
            "ssl.keystore.password",
        ] {
            assert!(is_secret(name), "{name} must be secret");
        }
        for name in [
            "sasl.oauthbearer.client.id",
            "sasl.oauthbearer.scope",
            "sasl.username",
            "ssl.ca.location",
        ] {
            assert!(!is_secret(name), "{name} is not a secret");
        }
        let properties = KafkaProperties::new(vars(&[
            ("sasl.mechanism", "OAUTHBEARER"),
            ("sasl.oauthbearer.client.id", "mailroom-client"),
            ("sasl.oauthbearer.client.secret", "cl13nt-s3cr3t"),
            (
                "sasl.oauthbearer.extensions",
                "logicalCluster=lkc-abc,identityPoolId=pool-t0k3n",
            ),
        ]))
        .expect("valid");
        let printed = format!("{properties:?}");
        for secret in ["cl13nt-s3cr3t", "pool-t0k3n", "lkc-abc"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("mailroom-client"), "{printed}");
        assert_eq!(
            properties.redact(
                "bad extensions logicalCluster=lkc-abc,identityPoolId=pool-t0k3n, secret cl13nt-s3cr3t"
            ),
            "bad extensions [REDACTED], secret [REDACTED]"
        );
    }

    #[test]
    fn properties_that_turn_off_the_brokers_identity_check_are_found() {
        for (name, value) in [
            ("enable.ssl.certificate.verification", "false"),
            ("enable.ssl.certificate.verification", "FALSE"),
            ("enable.ssl.certificate.verification", "f"),
            ("enable.ssl.certificate.verification", "0"),
            ("ssl.endpoint.identification.algorithm", "none"),
            ("ssl.endpoint.identification.algorithm", "None"),
            ("ssl.endpoint.identification.algorithm", ""),
            ("Enable.SSL.Certificate.Verification", "false"),
        ] {
            let properties =
                KafkaProperties::new(vars(&[("security.protocol", "SSL"), (name, value)]))
                    .expect("not reserved");
            let found = properties.insecure_tls();
            assert_eq!(found.len(), 1, "{name}={value}: {found:?}");
            assert_eq!(found[0].name, name);
            let err = properties.check_tls(false).unwrap_err().to_string();
            assert!(err.contains(&format!("`{name}={value}`")), "{err}");
            assert!(err.contains(&env_name(name)), "{err}");
            assert!(
                err.contains("read Mailroom's events and forge them"),
                "{err}"
            );
            assert!(err.contains("set ssl.ca.location"), "{err}");
            assert!(
                err.contains("MAILROOM_KAFKA_ALLOW_INSECURE_TLS=true"),
                "{err}"
            );
            properties
                .check_tls(true)
                .expect("allowed by MAILROOM_KAFKA_ALLOW_INSECURE_TLS");
        }
        // The secure values, and leaving them to librdkafka's defaults, pass.
        let secure = KafkaProperties::new(vars(&[
            ("security.protocol", "SSL"),
            ("enable.ssl.certificate.verification", "true"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ]))
        .expect("not reserved");
        assert!(secure.insecure_tls().is_empty());
        secure.check_tls(false).expect("secure");
        KafkaProperties::default()
            .check_tls(false)
            .expect("nothing set");
        // Both at once: both are named.
        let both = KafkaProperties::new(vars(&[
            ("enable.ssl.certificate.verification", "false"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ]))
        .expect("not reserved");
        let names: Vec<String> = both.insecure_tls().into_iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            [
                "enable.ssl.certificate.verification",
                "ssl.endpoint.identification.algorithm"
            ]
        );
    }

    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_allowed_insecure_property_is_warned_about_once_naming_it() {
        let properties = KafkaProperties::new(vars(&[
            ("security.protocol", "SSL"),
            ("enable.ssl.certificate.verification", "false"),
        ]))
        .expect("not reserved");
        let warned = Mutex::new(BTreeSet::new());
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let counts = tracing::subscriber::with_default(subscriber, || {
            [
                properties.warn_insecure_tls_once_in(&warned),
                properties.warn_insecure_tls_once_in(&warned),
            ]
        });
        assert_eq!(counts, [1, 0]);
        let logged =
            String::from_utf8(lines.0.lock().expect("not poisoned").clone()).expect("UTF-8");
        assert_eq!(logged.lines().count(), 1, "{logged}");
        assert!(logged.contains("WARN"), "{logged}");
        for expected in [
            "enable.ssl.certificate.verification=false",
            "MAILROOM_KAFKA_PROPERTY_ENABLE_SSL_CERTIFICATE_VERIFICATION",
            "read Mailroom's events and forge them",
            "ssl.ca.location",
            "unset MAILROOM_KAFKA_ALLOW_INSECURE_TLS",
        ] {
            assert!(logged.contains(expected), "{expected}: {logged}");
        }
        // Nothing insecure, nothing logged.
        let secure = KafkaProperties::new(vars(&[("security.protocol", "SSL")])).expect("valid");
        assert_eq!(secure.warn_insecure_tls_once_in(&warned), 0);
    }

    #[test]
    fn sasl_properties_reach_every_client_config() {
        let properties = KafkaProperties::new(vars(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "mailroom"),
            ("sasl.password", "pw"),
        ]))
        .expect("valid");
        properties
            .check()
            .expect("librdkafka accepts SCRAM over TLS");
        let mut config = ClientConfig::new();
        properties.apply(&mut config);
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.password"), Some("pw"));
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "OAUTHBEARER"] {
            KafkaProperties::new(vars(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", mechanism),
                ("sasl.username", "mailroom"),
                ("sasl.password", "pw"),
            ]))
            .expect("valid")
            .check()
            .unwrap_or_else(|err| panic!("{mechanism}: {err}"));
        }
        // librdkafka itself says what a mechanism lacks.
        let err = KafkaProperties::new(vars(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "PLAIN"),
        ]))
        .expect("valid")
        .check()
        .unwrap_err();
        assert!(err.to_string().contains("sasl.username"), "{err}");
    }

    #[test]
    fn librdkafka_refuses_unknown_properties_and_bad_values_by_name() {
        let err = KafkaProperties::new(vars(&[("no.such.property", "1")]))
            .expect("not reserved")
            .check()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no.such.property"), "{err}");
        let err = KafkaProperties::new(vars(&[("security.protocol", "TLS")]))
            .expect("not reserved")
            .check()
            .unwrap_err()
            .to_string();
        assert!(err.contains("security.protocol"), "{err}");
        let err = KafkaProperties::new(vars(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", "/nonexistent/ca.crt"),
        ]))
        .expect("not reserved")
        .check()
        .unwrap_err()
        .to_string();
        assert!(err.contains("ssl.ca.location"), "{err}");
        // This build has no Kerberos (GSSAPI).
        let err = KafkaProperties::new(vars(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "GSSAPI"),
        ]))
        .expect("not reserved")
        .check()
        .unwrap_err()
        .to_string();
        assert!(err.contains("GSSAPI"), "{err}");
        // Nor OAUTHBEARER's OIDC token fetching (it needs libcurl at build time).
        let err = KafkaProperties::new(vars(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "OAUTHBEARER"),
            ("sasl.oauthbearer.method", "oidc"),
            ("sasl.oauthbearer.client.id", "mailroom"),
            ("sasl.oauthbearer.client.secret", "s3cr3t-value"),
        ]))
        .expect("not reserved")
        .check()
        .unwrap_err()
        .to_string();
        assert!(err.contains("not supported in this build"), "{err}");
        assert!(!err.contains("s3cr3t-value"), "{err}");
    }

    #[test]
    fn a_toml_table_and_the_environment_merge_the_environment_winning() {
        let toml = r#"
            [kafka_properties]
            "security.protocol" = "SSL"
            ssl.ca.location = "/from/toml.crt"
            "socket.timeout.ms" = 30000
            "ssl.endpoint.identification.algorithm" = "https"
        "#;
        let env = properties_from_env(vars(&[(
            "MAILROOM_KAFKA_PROPERTY_SECURITY_PROTOCOL",
            "SASL_SSL",
        )]))
        .expect("valid");
        let figment =
            Figment::from(Toml::string(toml)).merge(Serialized::default("kafka_properties", env));
        let properties: KafkaProperties = figment
            .extract_inner("kafka_properties")
            .expect("valid table");
        assert_eq!(properties.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(properties.get("ssl.ca.location"), Some("/from/toml.crt"));
        assert_eq!(properties.get("socket.timeout.ms"), Some("30000"));
        let refused = Figment::from(Toml::string(
            "[kafka_properties]\n\"enable.auto.commit\" = true",
        ))
        .extract_inner::<KafkaProperties>("kafka_properties")
        .unwrap_err();
        assert!(
            refused.to_string().contains("enable.auto.commit"),
            "{refused}"
        );
    }

    fn platform(properties: &[(&str, &str)]) -> Figment {
        let properties: BTreeMap<String, String> = properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Figment::new()
            .merge(("database_url", "postgres://db/mailroom"))
            .merge(("redis_url", "redis://cache"))
            .merge(("kafka_brokers", "kafka:9093"))
            .merge(Serialized::default("kafka_properties", properties))
    }

    #[test]
    fn the_configuration_is_refused_at_start_naming_the_property() {
        use crate::config::PlatformConfig;
        let config = PlatformConfig::load(&platform(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "mailroom"),
            ("sasl.password", "hunter2-pw"),
        ]))
        .expect("valid");
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2-pw"), "{printed}");
        let kafka = crate::kafka::KafkaSettings::from_config(&config);
        assert_eq!(
            kafka.properties.get("sasl.mechanism"),
            Some("SCRAM-SHA-512")
        );
        assert!(!format!("{kafka:?}").contains("hunter2-pw"));

        for (properties, named) in [
            (&[("enable.auto.commit", "true")][..], "enable.auto.commit"),
            (
                &[("security.protocol", "PLAINTEXT_PLEASE")][..],
                "security.protocol",
            ),
            (
                &[
                    ("sasl.mechanism", "GSSAPI"),
                    ("security.protocol", "SASL_SSL"),
                ][..],
                "GSSAPI",
            ),
        ] {
            let err = PlatformConfig::load(&platform(properties))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{err}");
            assert!(err.contains("MAILROOM_KAFKA_PROPERTY_"), "{err}");
        }
    }

    #[test]
    fn turning_off_the_brokers_identity_check_stops_the_start_unless_allowed() {
        use crate::config::PlatformConfig;
        for insecure in [
            ("enable.ssl.certificate.verification", "false"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ] {
            let properties = [("security.protocol", "SSL"), insecure];
            let err = PlatformConfig::load(&platform(&properties))
                .unwrap_err()
                .to_string();
            assert!(err.contains(insecure.0), "{err}");
            assert!(err.contains("MAILROOM_KAFKA_ALLOW_INSECURE_TLS"), "{err}");
            let err = PlatformConfig::load(
                &platform(&properties).merge(("kafka_allow_insecure_tls", false)),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(insecure.0), "{err}");

            let config = PlatformConfig::load(
                &platform(&properties).merge(("kafka_allow_insecure_tls", true)),
            )
            .expect("allowed");
            assert!(config.kafka_allow_insecure_tls);
            let kafka = crate::kafka::KafkaSettings::from_config(&config);
            let mut client = ClientConfig::new();
            kafka.properties.apply(&mut client);
            assert_eq!(client.get(insecure.0), Some(insecure.1));
        }
        let config = PlatformConfig::load(&platform(&[])).expect("valid");
        assert!(!config.kafka_allow_insecure_tls);
    }
}
