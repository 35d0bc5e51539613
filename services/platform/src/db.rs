//! PostgreSQL: one pool per service, confined to that service's own schema, and migrations.
//!
//! A service's pool sets `search_path` to its schema, so its queries name tables without a
//! schema and can never read another service's tables by accident. Migrations are the
//! platform's own (the outbox and the consumer's handled-event ids, versions below 1000)
//! followed by the service's (versions from 1000), applied under sqlx's advisory lock so that
//! replicas starting together do not race.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

static PLATFORM_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL cannot be parsed: {0}")]
    Url(sqlx::Error),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(sqlx::Error),
    #[error("migrating schema `{schema}` failed: {source}")]
    Migrate {
        schema: String,
        source: MigrateError,
    },
    #[error("schema name `{0}` must be lower-case letters and underscores")]
    SchemaName(String),
}

/// A pool whose connections see only `schema` (created if missing).
pub async fn connect(
    url: &SecretString,
    schema: &str,
    max_connections: u32,
) -> Result<PgPool, DbError> {
    if schema.is_empty() || !schema.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(DbError::SchemaName(schema.to_owned()));
    }
    let base = PgConnectOptions::from_str(url.expose_secret())
        .map_err(DbError::Url)?
        .log_statements(tracing::log::LevelFilter::Debug)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
    let mut conn = base.connect().await.map_err(DbError::Connect)?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut conn)
        .await
        .or_else(|err| match &err {
            // Two replicas creating the schema at once: the loser sees a unique violation.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                Ok(Default::default())
            }
            _ => Err(err),
        })
        .map_err(DbError::Connect)?;
    let _ = conn.close().await;

    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(base.options([("search_path", schema)]))
        .await
        .map_err(DbError::Connect)
}

/// Applies the platform's migrations and then the service's own to the pool's schema.
pub async fn migrate(pool: &PgPool, schema: &str, service: &Migrator) -> Result<(), DbError> {
    let mut migrations: Vec<_> = PLATFORM_MIGRATIONS
        .iter()
        .chain(service.iter())
        .cloned()
        .collect();
    migrations.sort_by_key(|m| m.version);
    let combined = Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    };
    combined.run(pool).await.map_err(|source| DbError::Migrate {
        schema: schema.to_owned(),
        source,
    })
}
