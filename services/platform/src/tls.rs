//! TLS to the stores every service depends on, PostgreSQL and Redis: the settings kept apart
//! from their URLs (`MAILROOM_DATABASE_TLS__*`, `MAILROOM_REDIS_TLS__*`), their checks at
//! start, and reading the PEM files they name.
//!
//! PostgreSQL: `DATABASE_URL`'s own parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`)
//! hold, and [`DatabaseTls`] overrides them (a chart mounts a Secret and names its files here
//! without touching the URL). A CA file (or the URL's `sslrootcert`) with no mode anywhere means
//! `verify-full`: a CA is given to be checked. The files are read on each new connection, so a
//! renewed certificate is picked up without a restart.
//!
//! The PostgreSQL client (sqlx over rustls) trusts the public web roots besides the CA file, so
//! `verify-ca` (no host-name check) would take any publicly issued certificate: it is refused,
//! and so is a CA with a mode that checks nothing (`prefer`, `require`), wherever each is set.
//! With `verify-full` a private CA is trusted beside the public roots, the host name checked.
//!
//! Redis: TLS is `rediss://`; [`RedisTls`] adds a private CA (instead of the public roots) and
//! a client certificate. Its files are read when the client is built, at start.
//!
//! Every check says which setting is wrong and what to do about it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// How PostgreSQL's server is trusted, as libpq's `sslmode` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseTlsMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, its certificate unchecked.
    Prefer,
    /// TLS or no connection, the certificate unchecked.
    Require,
    /// TLS, the certificate chaining to the CA (any host name). Refused by
    /// [`DatabaseTls::validate`]: the client trusts the public web roots too, so any publicly
    /// issued certificate would pass.
    #[serde(alias = "verify_ca")]
    VerifyCa,
    /// TLS, the certificate chaining to the CA and naming the host dialled.
    #[serde(alias = "verify_full")]
    VerifyFull,
}

impl DatabaseTlsMode {
    /// Whether the server's certificate is checked against a CA.
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }

    /// From `sslmode` as libpq spells it (`allow` counts as `prefer`: neither checks anything).
    pub fn parse(sslmode: &str) -> Option<Self> {
        match sslmode {
            "disable" => Some(Self::Disable),
            "allow" | "prefer" => Some(Self::Prefer),
            "require" => Some(Self::Require),
            "verify-ca" => Some(Self::VerifyCa),
            "verify-full" => Some(Self::VerifyFull),
            _ => None,
        }
    }

    /// As `sslmode` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// TLS to PostgreSQL on top of `DATABASE_URL` (`MAILROOM_DATABASE_TLS__MODE`, `__CA_FILE`,
/// `__CERT_FILE`, `__KEY_FILE`); each one set wins over the URL's parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct DatabaseTls {
    /// `sslmode`.
    #[serde(default)]
    pub mode: Option<DatabaseTlsMode>,
    /// PEM file of the CA(s) the server's certificate must chain to (`sslrootcert`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (`sslcert`), for servers that ask for one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (`sslkey`).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl DatabaseTls {
    /// The mode to apply over the URL's: the one set, else `verify-full` when a CA is given
    /// (this CA file or the URL's `sslrootcert`) and the URL names no `sslmode` (a CA is given
    /// to be checked), else the URL's own.
    pub fn effective_mode(&self, database_url: &str) -> Option<DatabaseTlsMode> {
        match self.mode {
            Some(mode) => Some(mode),
            None if self.ca_given(database_url) && url_param(database_url, "sslmode").is_none() => {
                Some(DatabaseTlsMode::VerifyFull)
            }
            None => None,
        }
    }

    /// Whether a CA is given, here or in the URL (`sslrootcert`).
    fn ca_given(&self, database_url: &str) -> bool {
        self.ca_file.is_some()
            || url_param(database_url, "sslrootcert").is_some_and(|v| !v.is_empty())
    }

    /// The mode connections are made with, all sources considered, and the setting that says
    /// so (for messages; `None`: no mode anywhere, sqlx's `prefer`).
    fn mode_and_source(&self, database_url: &str) -> Option<(DatabaseTlsMode, &'static str)> {
        if let Some(mode) = self.mode {
            return Some((mode, "MAILROOM_DATABASE_TLS__MODE"));
        }
        if let Some(mode) = self.effective_mode(database_url) {
            // Implied by a CA with no mode anywhere.
            return Some((mode, "MAILROOM_DATABASE_TLS__CA_FILE"));
        }
        url_param(database_url, "sslmode")
            .and_then(DatabaseTlsMode::parse)
            .map(|mode| (mode, "DATABASE_URL"))
    }

    /// Checks the settings against each other and the URL's own parameters, and reads every
    /// file they name.
    pub fn validate(&self, database_url: &str) -> Result<(), ConfigError> {
        check_pair(
            ("MAILROOM_DATABASE_TLS__CERT_FILE", &self.cert_file),
            ("MAILROOM_DATABASE_TLS__KEY_FILE", &self.key_file),
        )?;
        let mode = self.mode_and_source(database_url);
        let said = |key: &str| match key {
            "DATABASE_URL" => "DATABASE_URL's sslmode",
            _ => "MAILROOM_DATABASE_TLS__MODE",
        };
        if let Some((DatabaseTlsMode::VerifyCa, key)) = mode {
            return Err(ConfigError::Invalid {
                key,
                reason: format!(
                    "{} is `verify-ca`, which is refused: it checks that the server's certificate chains to a trusted CA but not that it names the host, and the PostgreSQL client trusts the public web roots besides the CA file, so any publicly issued certificate for any name would pass. Use verify-full with the CA of the server's certificate, and connect to a host name the certificate names (on Cloud SQL: the instance's DNS name with its server CA, or the Cloud SQL Auth Proxy)",
                    said(key)
                ),
            });
        }
        let url_ca = url_param(database_url, "sslrootcert").is_some_and(|v| !v.is_empty());
        let ca_setting = if self.ca_file.is_some() {
            "MAILROOM_DATABASE_TLS__CA_FILE"
        } else {
            "DATABASE_URL's sslrootcert"
        };
        if let Some((DatabaseTlsMode::Disable, key)) = mode {
            if self.ca_file.is_some() || self.cert_file.is_some() || url_ca {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!(
                        "{} is `disable` while TLS files are set ({}): set the mode to verify-full, or remove the files",
                        said(key),
                        if self.cert_file.is_some() && !self.ca_given(database_url) {
                            "MAILROOM_DATABASE_TLS__CERT_FILE"
                        } else {
                            ca_setting
                        }
                    ),
                });
            }
        }
        if let Some((mode @ (DatabaseTlsMode::Prefer | DatabaseTlsMode::Require), key)) = mode {
            if self.ca_given(database_url) {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!(
                        "{} is `{}`, which does not check the server's certificate, yet a CA is given ({ca_setting}): set the mode to verify-full (in MAILROOM_DATABASE_TLS__MODE or DATABASE_URL's sslmode), or remove the CA",
                        said(key),
                        mode.as_str()
                    ),
                });
            }
        }
        if let Some(path) = &self.ca_file {
            read_pem("MAILROOM_DATABASE_TLS__CA_FILE", path, PemKind::Certificate)?;
        }
        if let Some(path) = &self.cert_file {
            read_pem(
                "MAILROOM_DATABASE_TLS__CERT_FILE",
                path,
                PemKind::Certificate,
            )?;
        }
        if let Some(path) = &self.key_file {
            read_pem("MAILROOM_DATABASE_TLS__KEY_FILE", path, PemKind::PrivateKey)?;
        }
        Ok(())
    }
}

/// TLS to Redis beyond `rediss://` (`MAILROOM_REDIS_TLS__CA_FILE`, `__CERT_FILE`,
/// `__KEY_FILE`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct RedisTls {
    /// PEM file of the CA(s) the server's certificate must chain to, instead of the public
    /// roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate, for a server run with `tls-auth-clients yes`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// The contents of a [`RedisTls`]'s files, read.
pub struct RedisTlsFiles {
    pub ca: Option<Vec<u8>>,
    /// Certificate chain and private key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisTls {
    /// Whether any file is set.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// Checks the settings against the URL and each other, and reads every file they name.
    pub fn validate(&self, redis_url: &str) -> Result<(), ConfigError> {
        if self.is_set() && !redis_url.starts_with("rediss://") {
            return Err(ConfigError::Invalid {
                key: "REDIS_URL",
                reason: "is a redis:// URL (no TLS) while MAILROOM_REDIS_TLS__* files are set: use rediss://… to connect with TLS, or remove the files".into(),
            });
        }
        self.read().map(drop)
    }

    /// Reads the files (checking that they hold what they should).
    pub fn read(&self) -> Result<RedisTlsFiles, ConfigError> {
        check_pair(
            ("MAILROOM_REDIS_TLS__CERT_FILE", &self.cert_file),
            ("MAILROOM_REDIS_TLS__KEY_FILE", &self.key_file),
        )?;
        let ca = self
            .ca_file
            .as_deref()
            .map(|path| read_pem("MAILROOM_REDIS_TLS__CA_FILE", path, PemKind::Certificate))
            .transpose()?;
        let client = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some((
                read_pem("MAILROOM_REDIS_TLS__CERT_FILE", cert, PemKind::Certificate)?,
                read_pem("MAILROOM_REDIS_TLS__KEY_FILE", key, PemKind::PrivateKey)?,
            )),
            _ => None,
        };
        Ok(RedisTlsFiles { ca, client })
    }
}

/// A client certificate needs its key and the other way round.
fn check_pair(
    cert: (&'static str, &Option<PathBuf>),
    key: (&'static str, &Option<PathBuf>),
) -> Result<(), ConfigError> {
    match (cert.1, key.1) {
        (Some(_), None) => Err(ConfigError::Invalid {
            key: key.0,
            reason: format!(
                "is not set while {} is: a client certificate needs its private key (set both, or neither)",
                cert.0
            ),
        }),
        (None, Some(_)) => Err(ConfigError::Invalid {
            key: cert.0,
            reason: format!(
                "is not set while {} is: a private key needs its client certificate (set both, or neither)",
                key.0
            ),
        }),
        _ => Ok(()),
    }
}

/// What a PEM file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemKind {
    Certificate,
    PrivateKey,
}

/// Reads the PEM file `path` named by setting `key`, refusing one that cannot be read or that
/// holds no PEM block of `kind`.
pub fn read_pem(key: &'static str, path: &Path, kind: PemKind) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|err| ConfigError::Invalid {
        key,
        reason: format!(
            "`{}` cannot be read: {err} (is the Secret mounted there, and readable by this process?)",
            path.display()
        ),
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let holds = match kind {
        PemKind::Certificate => text.contains("-----BEGIN CERTIFICATE-----"),
        PemKind::PrivateKey => text.contains("-----BEGIN ") && text.contains("PRIVATE KEY-----"),
    };
    if !holds {
        let expected = match kind {
            PemKind::Certificate => "a PEM certificate (-----BEGIN CERTIFICATE-----)",
            PemKind::PrivateKey => "a PEM private key (-----BEGIN … PRIVATE KEY-----)",
        };
        return Err(ConfigError::Invalid {
            key,
            reason: format!("`{}` does not hold {expected}", path.display()),
        });
    }
    Ok(bytes)
}

/// The value of query parameter `name` of a URL, if present (no percent-decoding: used for
/// `sslmode`, whose values are plain words).
fn url_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = url.split_once('?')?;
    let query = query.split('#').next().unwrap_or("");
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name || k.replace('-', "") == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mailroom-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        dir
    }

    #[test]
    fn the_settings_are_read_under_their_documented_names() {
        use figment::providers::{Format, Toml};
        let toml = r#"
            [database_tls]
            mode = "verify-full"
            ca_file = "/etc/mailroom/tls/postgres/ca.crt"
            [redis_tls]
            cert_file = "/etc/mailroom/tls/redis/tls.crt"
            key_file = "/etc/mailroom/tls/redis/tls.key"
        "#;
        let figment = figment::Figment::from(Toml::string(toml));
        let db: DatabaseTls = figment.extract_inner("database_tls").expect("database_tls");
        assert_eq!(db.mode, Some(DatabaseTlsMode::VerifyFull));
        assert_eq!(
            db.ca_file.as_deref(),
            Some(Path::new("/etc/mailroom/tls/postgres/ca.crt"))
        );
        let redis: RedisTls = figment.extract_inner("redis_tls").expect("redis_tls");
        assert!(redis.is_set() && redis.ca_file.is_none());
    }

    #[test]
    fn a_ca_file_alone_means_verify_full_unless_the_url_says_otherwise() {
        let tls = DatabaseTls {
            ca_file: Some("/ca.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            tls.effective_mode("postgres://db/x"),
            Some(DatabaseTlsMode::VerifyFull)
        );
        assert_eq!(
            tls.effective_mode("postgres://db/x?sslmode=verify-ca"),
            None
        );
        assert_eq!(
            DatabaseTls::default().effective_mode("postgres://db/x"),
            None
        );
    }

    #[test]
    fn contradictory_or_unreadable_settings_are_refused_with_the_setting_to_fix() {
        let dir = temp_dir();
        let cert = file(&dir, "tls.crt", CERT);
        let key = file(&dir, "tls.key", KEY);
        let url = "postgres://db/x";

        let without_key = DatabaseTls {
            cert_file: Some(cert.clone()),
            ..Default::default()
        };
        let err = without_key.validate(url).unwrap_err().to_string();
        assert!(err.contains("MAILROOM_DATABASE_TLS__KEY_FILE"), "{err}");

        let missing = DatabaseTls {
            ca_file: Some(dir.join("nowhere.crt")),
            ..Default::default()
        };
        let err = missing.validate(url).unwrap_err().to_string();
        assert!(
            err.contains("MAILROOM_DATABASE_TLS__CA_FILE") && err.contains("nowhere.crt"),
            "{err}"
        );

        let swapped = DatabaseTls {
            cert_file: Some(key.clone()),
            key_file: Some(cert.clone()),
            ..Default::default()
        };
        let err = swapped.validate(url).unwrap_err().to_string();
        assert!(err.contains("does not hold a PEM certificate"), "{err}");

        let unchecked = DatabaseTls {
            mode: Some(DatabaseTlsMode::Require),
            ca_file: Some(cert.clone()),
            ..Default::default()
        };
        let err = unchecked.validate(url).unwrap_err().to_string();
        assert!(err.contains("verify-full"), "{err}");

        // A CA with a mode that checks nothing, the mode in the URL: refused too.
        let ca_only = DatabaseTls {
            ca_file: Some(cert.clone()),
            ..Default::default()
        };
        for sslmode in ["require", "prefer", "disable"] {
            let err = ca_only
                .validate(&format!("postgres://db/x?sslmode={sslmode}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("DATABASE_URL") && err.contains("verify-full"),
                "{sslmode}: {err}"
            );
        }
        // A CA in the URL (`sslrootcert`) with a mode that checks nothing, from either place.
        let in_url = format!("postgres://db/x?sslrootcert={}", cert.display());
        let err = DatabaseTls::default()
            .validate(&format!("{in_url}&sslmode=require"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sslrootcert") && err.contains("verify-full"),
            "{err}"
        );
        let err = DatabaseTls {
            mode: Some(DatabaseTlsMode::Prefer),
            ..Default::default()
        }
        .validate(&in_url)
        .unwrap_err()
        .to_string();
        assert!(err.contains("MAILROOM_DATABASE_TLS__MODE"), "{err}");
        // A CA in the URL and no mode anywhere: verify-full.
        assert_eq!(
            DatabaseTls::default().effective_mode(&in_url),
            Some(DatabaseTlsMode::VerifyFull)
        );
        DatabaseTls::default()
            .validate(&in_url)
            .expect("a CA in the URL alone means verify-full");

        // verify-ca: the client trusts the public roots too, so it is refused wherever it is
        // set, saying to use verify-full and why.
        let verify_ca = DatabaseTls {
            mode: Some(DatabaseTlsMode::VerifyCa),
            ca_file: Some(cert.clone()),
            ..Default::default()
        };
        let err = verify_ca.validate(url).unwrap_err().to_string();
        assert!(
            err.contains("MAILROOM_DATABASE_TLS__MODE")
                && err.contains("verify-full")
                && err.contains("public web roots"),
            "{err}"
        );
        let err = ca_only
            .validate("postgres://db/x?sslmode=verify-ca")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DATABASE_URL") && err.contains("verify-full"),
            "{err}"
        );
        DatabaseTls::default()
            .validate("postgres://db/x?sslmode=require")
            .expect("require without a CA: encrypted, unchecked, as asked");

        let fine = DatabaseTls {
            mode: Some(DatabaseTlsMode::VerifyFull),
            ca_file: Some(cert.clone()),
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
        };
        fine.validate(url).expect("a complete setting");

        let redis = RedisTls {
            ca_file: Some(cert.clone()),
            ..Default::default()
        };
        let err = redis
            .validate("redis://cache:6379")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rediss://"), "{err}");
        redis
            .validate("rediss://cache:6379")
            .expect("a CA over rediss://");
        let redis_without_cert = RedisTls {
            key_file: Some(key),
            ..Default::default()
        };
        let err = redis_without_cert
            .validate("rediss://cache:6379")
            .unwrap_err()
            .to_string();
        assert!(err.contains("MAILROOM_REDIS_TLS__CERT_FILE"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
