//! Whether a service's schema is one this binary can run on, for a service that does not
//! migrate at start (`MAILROOM_MIGRATE_ON_START=false`: in Kubernetes only the migrate Job,
//! `mailroom migrate`, applies migrations).
//!
//! The rule is expand/contract. A release's migrations only add (expand) what it needs, so an
//! older binary runs on a schema migrated past it, and a restart mid-rollout or after
//! `helm rollback` works; a migration that drops or changes what an earlier release reads has
//! `contract` in its name, and only the release after the one that stopped reading it ships it.
//! So, reading `_sqlx_migrations` of the service's schema ([`judge`]):
//! - every migration this binary has (the platform's and the service's) applied, with the same
//!   checksum: it runs ([`Compatibility::Compatible`]), whatever newer expand migrations it does
//!   not know;
//! - some not applied yet: it waits ([`wait_until_compatible`]), not ready, saying every ~10 s
//!   which are missing, until the migrate Job has applied them;
//! - an applied migration it does not know whose description contains `contract`, or one it
//!   knows applied with another checksum: it refuses to start ([`SchemaError`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::PgPool;

use crate::readiness::Condition;

/// How often a waiting service reads the schema's migrations again.
pub const POLL: Duration = Duration::from_secs(2);
/// How often a waiting service says what it waits for.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// A migration as `_sqlx_migrations` records it.
#[derive(Debug, Clone)]
pub struct Applied {
    pub version: i64,
    pub description: String,
    pub checksum: Vec<u8>,
    /// False when applying it failed part way (sqlx calls the schema dirty).
    pub success: bool,
}

/// A migration this binary has.
#[derive(Debug, Clone)]
pub struct Known {
    pub version: i64,
    pub description: String,
    pub checksum: Vec<u8>,
}

/// A schema this binary can run on, or will once the migrate Job has run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compatibility {
    /// Every migration this binary has is applied; `newer` are applied ones it does not know
    /// (expand migrations of a later release).
    Compatible { newer: Vec<i64> },
    /// Migrations of this binary not applied yet (`failed`: tried and failed part way).
    Missing { missing: Vec<i64>, failed: Vec<i64> },
}

/// A schema this binary must not run on.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema `{schema}` was migrated past what this version of Mailroom can run on: migration {version} (`{description}`) is a contract migration this version does not know, and it removed or changed what this version reads. Roll forward to the release that ships it (or later), or restore the database from before it was applied")]
    Contracted {
        schema: String,
        version: i64,
        description: String,
    },
    #[error("schema `{schema}`: migration {version} (`{description}`) was applied with another checksum than this version's file: the migration was edited after it was applied. Run the release whose migration was applied, or restore the file as it was")]
    ChecksumMismatch {
        schema: String,
        version: i64,
        description: String,
    },
    #[error("cannot read the applied migrations of schema `{schema}`: {source}")]
    Read {
        schema: String,
        #[source]
        source: sqlx::Error,
    },
}

/// Whether a migration is a contract one (it may break older binaries): its description
/// (the file name after the version) contains `contract`.
pub fn is_contract(description: &str) -> bool {
    description.to_ascii_lowercase().contains("contract")
}

/// The migrations this binary has for a service whose own are `service`: the platform's and
/// the service's, in version order (down migrations left out).
pub fn known(service: &Migrator) -> Vec<Known> {
    crate::db::combined(service)
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| Known {
            version: m.version,
            description: m.description.to_string(),
            checksum: m.checksum.to_vec(),
        })
        .collect()
}

/// Judges schema `schema` whose `_sqlx_migrations` holds `applied`, for a binary that has
/// `known` (pure: see the module's header for the rule).
pub fn judge(
    schema: &str,
    known: &[Known],
    applied: &[Applied],
) -> Result<Compatibility, SchemaError> {
    let known_by_version: BTreeMap<i64, &Known> = known.iter().map(|k| (k.version, k)).collect();
    let applied_by_version: BTreeMap<i64, &Applied> =
        applied.iter().map(|a| (a.version, a)).collect();
    let mut newer = Vec::new();
    for a in applied {
        match known_by_version.get(&a.version) {
            None if is_contract(&a.description) => {
                return Err(SchemaError::Contracted {
                    schema: schema.to_owned(),
                    version: a.version,
                    description: a.description.clone(),
                })
            }
            None => newer.push(a.version),
            Some(k) if a.success && k.checksum != a.checksum => {
                return Err(SchemaError::ChecksumMismatch {
                    schema: schema.to_owned(),
                    version: a.version,
                    description: k.description.clone(),
                })
            }
            Some(_) => {}
        }
    }
    let mut missing = Vec::new();
    let mut failed = Vec::new();
    for k in known {
        match applied_by_version.get(&k.version) {
            Some(a) if a.success => {}
            Some(_) => failed.push(k.version),
            None => missing.push(k.version),
        }
    }
    if missing.is_empty() && failed.is_empty() {
        Ok(Compatibility::Compatible { newer })
    } else {
        Ok(Compatibility::Missing { missing, failed })
    }
}

/// The migrations applied to the schema `pool` sees (none when it has no `_sqlx_migrations`).
pub async fn applied(pool: &PgPool, schema: &str) -> Result<Vec<Applied>, SchemaError> {
    let read = |source| SchemaError::Read {
        schema: schema.to_owned(),
        source,
    };
    let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(read)?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, String, Vec<u8>, bool)> = sqlx::query_as(
        "SELECT version, description, checksum, success FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .map_err(read)?;
    Ok(rows
        .into_iter()
        .map(|(version, description, checksum, success)| Applied {
            version,
            description,
            checksum,
            success,
        })
        .collect())
}

/// Judges the schema `pool` sees against `service`'s migrations (and the platform's).
pub async fn check(
    pool: &PgPool,
    schema: &str,
    service: &Migrator,
) -> Result<Compatibility, SchemaError> {
    let applied = applied(pool, schema).await?;
    judge(schema, &known(service), &applied)
}

/// What a waiting service says it waits for.
pub fn waiting_reason(schema: &str, missing: &[i64], failed: &[i64]) -> String {
    let list = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
    let mut reason = format!("schema `{schema}` lacks migration(s) {}", list(missing));
    if missing.is_empty() {
        reason = format!(
            "schema `{schema}` has migration(s) {} that failed part way",
            list(failed)
        );
    } else if !failed.is_empty() {
        reason.push_str(&format!(" (and {} failed part way)", list(failed)));
    }
    reason.push_str(
        "; the migrate Job (`mailroom migrate <service>`) applies them (MAILROOM_MIGRATE_ON_START=false: this process does not migrate)",
    );
    reason
}

/// Waits until the schema `pool` sees holds every migration of `service` (and the platform's),
/// not ready meanwhile and saying every [`LOG_EVERY`] what is missing; fails at once on a
/// schema this binary must not run on. A failure to read the schema is retried like a
/// missing migration.
pub async fn wait_until_compatible(
    pool: &PgPool,
    schema: &str,
    service: &Migrator,
) -> Result<(), SchemaError> {
    let known = known(service);
    let mut readiness = None;
    let mut last_said: Option<Instant> = None;
    loop {
        let reason = match applied(pool, schema).await {
            Ok(applied) => match judge(schema, &known, &applied)? {
                Compatibility::Compatible { newer } => {
                    if !newer.is_empty() {
                        tracing::info!(
                            schema,
                            ?newer,
                            "the schema holds newer (expand) migrations this version does not know; running on it"
                        );
                    }
                    if last_said.is_some() {
                        tracing::info!(schema, "every migration this version needs is applied");
                    }
                    return Ok(());
                }
                Compatibility::Missing { missing, failed } => {
                    waiting_reason(schema, &missing, &failed)
                }
            },
            Err(err) => format!("{err}; trying again"),
        };
        let readiness = readiness.get_or_insert_with(|| crate::readiness::register(schema));
        readiness.block(Condition::Schema, reason.clone());
        if last_said.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            tracing::warn!(schema, %reason, "waiting for migrations; not ready");
            last_said = Some(Instant::now());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known_upto(last: i64) -> Vec<Known> {
        (1..=last)
            .map(|v| Known {
                version: v,
                description: format!("m{v}"),
                checksum: vec![v as u8],
            })
            .collect()
    }

    fn applied(v: i64, description: &str) -> Applied {
        Applied {
            version: v,
            description: description.into(),
            checksum: vec![v as u8],
            success: true,
        }
    }

    fn applied_upto(last: i64) -> Vec<Applied> {
        (1..=last).map(|v| applied(v, &format!("m{v}"))).collect()
    }

    #[test]
    fn the_same_migrations_are_compatible() {
        assert_eq!(
            judge("s", &known_upto(3), &applied_upto(3)).unwrap(),
            Compatibility::Compatible { newer: vec![] }
        );
    }

    #[test]
    fn newer_expand_migrations_are_run_on() {
        let mut schema = applied_upto(3);
        schema.push(applied(4, "expand add column"));
        assert_eq!(
            judge("s", &known_upto(3), &schema).unwrap(),
            Compatibility::Compatible { newer: vec![4] }
        );
    }

    #[test]
    fn a_newer_contract_migration_refuses_with_what_to_do() {
        let mut schema = applied_upto(3);
        schema.push(applied(4, "Contract drop column"));
        let err = judge("access", &known_upto(3), &schema).unwrap_err();
        assert!(
            matches!(err, SchemaError::Contracted { version: 4, .. }),
            "{err}"
        );
        let said = err.to_string();
        assert!(said.contains("migrated past what this version"), "{said}");
        assert!(said.contains("Roll forward"), "{said}");
        assert!(said.contains("restore"), "{said}");
    }

    #[test]
    fn a_known_contract_migration_is_fine() {
        let mut known = known_upto(3);
        known[2].description = "contract drop old column".into();
        let mut schema = applied_upto(3);
        schema[2].description = "contract drop old column".into();
        assert!(matches!(
            judge("s", &known, &schema).unwrap(),
            Compatibility::Compatible { .. }
        ));
    }

    #[test]
    fn missing_migrations_are_waited_for_by_version() {
        let mut schema = applied_upto(2);
        schema.push(Applied {
            success: false,
            ..applied(3, "m3")
        });
        assert_eq!(
            judge("s", &known_upto(5), &schema).unwrap(),
            Compatibility::Missing {
                missing: vec![4, 5],
                failed: vec![3]
            }
        );
        assert_eq!(
            judge("s", &known_upto(2), &[]).unwrap(),
            Compatibility::Missing {
                missing: vec![1, 2],
                failed: vec![]
            }
        );
        let reason = waiting_reason("access", &[4, 5], &[3]);
        assert!(
            reason.contains("4, 5") && reason.contains("mailroom migrate"),
            "{reason}"
        );
    }

    #[test]
    fn a_changed_checksum_refuses_naming_the_version() {
        let mut schema = applied_upto(3);
        schema[1].checksum = vec![99];
        let err = judge("s", &known_upto(3), &schema).unwrap_err();
        assert!(matches!(
            err,
            SchemaError::ChecksumMismatch { version: 2, .. }
        ));
        assert!(err.to_string().contains("migration 2"), "{err}");
    }

    #[test]
    fn the_binarys_migrations_are_the_platforms_then_the_services() {
        let none = Migrator::DEFAULT;
        let known = known(&none);
        assert!(!known.is_empty());
        assert!(known.windows(2).all(|w| w[0].version < w[1].version));
        assert!(known.iter().all(|k| k.version < 1000));
    }
}
