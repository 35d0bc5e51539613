//! PostgreSQL: one pool per service, confined to that service's own schema, and migrations.
//!
//! A service's pool sets `search_path` to its schema, so its queries name tables without a
//! schema and can never read another service's tables by accident. Migrations are the
//! platform's own (the outbox and the consumer's handled-event ids, versions below 1000)
//! followed by the service's (versions from 1000), applied under an advisory lock (asked for
//! again and again, never waited in: see [`migrate`]) so that replicas starting together do
//! not race.
//!
//! Every connection is made with [`connect_options`]: the URL, then TLS set apart from it
//! ([`crate::tls::DatabaseTls`], `MAILROOM_DATABASE_TLS__*`).

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::tls::{DatabaseTls, DatabaseTlsMode};

/// How long a pooled connection may sit idle before it is pinged on acquire.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

static PLATFORM_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL cannot be parsed: {0}")]
    Url(sqlx::Error),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(sqlx::Error),
    #[error("TLS to PostgreSQL failed: {0} (the server's certificate must chain to the CA of MAILROOM_DATABASE_TLS__CA_FILE or sslrootcert, and with verify-full name the host of DATABASE_URL)")]
    Tls(sqlx::Error),
    #[error("migrating schema `{schema}` failed: {source}")]
    Migrate {
        schema: String,
        source: MigrateError,
    },
    #[error("schema `{schema}` holds invalid indexes, left by a `CREATE INDEX CONCURRENTLY` that failed: {}. Queries do not use them. Drop each ({drops}), then run `mailroom migrate` again, which builds them anew (docs/runbooks/README.md, 'An invalid index')", .indexes.join(", "))]
    InvalidIndexes {
        schema: String,
        indexes: Vec<String>,
        /// `DROP INDEX CONCURRENTLY <schema>.<name>;` for each.
        drops: String,
    },
    #[error("schema name `{0}` must be lower-case letters and underscores")]
    SchemaName(String),
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
}

/// A pool whose connections see only `schema` (created if missing), with TLS as `url` alone
/// says (tests, tools); services use [`connect_with_tls`] with [`PlatformConfig::database_tls`].
///
/// [`PlatformConfig::database_tls`]: crate::config::PlatformConfig::database_tls
pub async fn connect(
    url: &SecretString,
    schema: &str,
    max_connections: u32,
) -> Result<PgPool, DbError> {
    connect_with_tls(url, &DatabaseTls::default(), schema, max_connections).await
}

/// The options every connection to PostgreSQL is made with: `url`, then `tls` over the URL's
/// own `sslmode`/`sslrootcert`/`sslcert`/`sslkey` (see [`crate::tls`]).
pub fn connect_options(url: &SecretString, tls: &DatabaseTls) -> Result<PgConnectOptions, DbError> {
    let mut options = PgConnectOptions::from_str(url.expose_secret()).map_err(DbError::Url)?;
    if let Some(mode) = tls.effective_mode(url.expose_secret()) {
        options = options.ssl_mode(match mode {
            DatabaseTlsMode::Disable => PgSslMode::Disable,
            DatabaseTlsMode::Prefer => PgSslMode::Prefer,
            DatabaseTlsMode::Require => PgSslMode::Require,
            DatabaseTlsMode::VerifyCa => PgSslMode::VerifyCa,
            DatabaseTlsMode::VerifyFull => PgSslMode::VerifyFull,
        });
    }
    if let Some(ca) = &tls.ca_file {
        options = options.ssl_root_cert(ca);
    }
    if let Some(cert) = &tls.cert_file {
        options = options.ssl_client_cert(cert);
    }
    if let Some(key) = &tls.key_file {
        options = options.ssl_client_key(key);
    }
    Ok(options
        .log_statements(tracing::log::LevelFilter::Debug)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500)))
}

/// Why connecting failed: TLS failures told apart, with what to check. (A handshake refused
/// by rustls reaches here as invalid data on the socket, its message naming the certificate
/// or the alert.)
fn connect_failed(err: sqlx::Error) -> DbError {
    let handshake = match &err {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            let message = io.to_string().to_ascii_lowercase();
            message.contains("certificate") || message.contains("alert")
        }
        _ => false,
    };
    if handshake {
        DbError::Tls(err)
    } else {
        DbError::Connect(err)
    }
}

/// [`connect`] with TLS set apart from the URL (`MAILROOM_DATABASE_TLS__*`).
pub async fn connect_with_tls(
    url: &SecretString,
    tls: &DatabaseTls,
    schema: &str,
    max_connections: u32,
) -> Result<PgPool, DbError> {
    if schema.is_empty() || !schema.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(DbError::SchemaName(schema.to_owned()));
    }
    let base = connect_options(url, tls)?;
    let mut conn = base.connect().await.map_err(connect_failed)?;
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
        // sqlx pings every connection before handing it out: a whole extra round trip per
        // statement (a quarter of a GetUser call, issue 26's profile). Only a connection that
        // sat idle for a second is checked; one that fails its ping is dropped and another
        // taken, so a database restart still costs no caller an error from a dead socket
        // that idled, and one in steady use finds out on its next statement.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_BEFORE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(base.options([("search_path", schema)]))
        .await
        .map_err(connect_failed)
}

/// The platform's migrations and the service's own (`service`), in version order: every
/// migration a service's schema gets.
pub fn combined(service: &Migrator) -> Migrator {
    let mut migrations: Vec<_> = PLATFORM_MIGRATIONS
        .iter()
        .chain(service.iter())
        .cloned()
        .collect();
    migrations.sort_by_key(|m| m.version);
    Migrator {
        migrations: Cow::Owned(migrations),
        // The lock is taken here (`migration_lock`), not by sqlx.
        locking: false,
        // A migration applied that this binary does not know is left alone: after a rollback
        // an older binary must start against the newer schema (each release's migrations keep
        // what the release before reads), not crash-loop on `VersionMissing`.
        ignore_missing: true,
        ..Migrator::DEFAULT
    }
}

/// Applies the platform's migrations and then the service's own to the pool's schema. A
/// migration applied that this binary does not know is left alone (see [`crate::schema`] for
/// which such schemas a service still runs on).
pub async fn migrate(pool: &PgPool, schema: &str, service: &Migrator) -> Result<(), DbError> {
    let combined = combined(service);
    let failed = |source: MigrateError| DbError::Migrate {
        schema: schema.to_owned(),
        source,
    };
    let mut conn = pool.acquire().await.map_err(|e| failed(e.into()))?;
    migration_lock(&mut conn).await.map_err(failed)?;
    let applied = combined.run(&mut *conn).await.map_err(failed);
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() {
        // The lock goes with the session: close it rather than return it to the pool.
        let _ = conn.detach().close().await;
    }
    applied?;
    refuse_invalid_indexes(pool, schema).await
}

/// Fails naming the invalid indexes of `schema`, if any. A `CREATE INDEX CONCURRENTLY` that
/// fails (a deadlock, a unique violation, the Job killed) leaves its index behind, invalid, and
/// the migration not recorded; its `IF NOT EXISTS` then skips it on the next run, so the
/// migration would be recorded over an index that serves no query. Better to stop and say so.
async fn refuse_invalid_indexes(pool: &PgPool, schema: &str) -> Result<(), DbError> {
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND NOT i.indisvalid ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .map_err(|err| DbError::Migrate {
        schema: schema.to_owned(),
        source: err.into(),
    })?;
    if indexes.is_empty() {
        return Ok(());
    }
    let indexes: Vec<String> = indexes.into_iter().map(|(name,)| name).collect();
    tracing::error!(
        schema,
        ?indexes,
        "invalid indexes left by a failed CREATE INDEX CONCURRENTLY; drop them and migrate again"
    );
    let drops = indexes
        .iter()
        .map(|index| format!("DROP INDEX CONCURRENTLY {schema}.{index};"))
        .collect::<Vec<_>>()
        .join(" ");
    Err(DbError::InvalidIndexes {
        schema: schema.to_owned(),
        indexes,
        drops,
    })
}

/// The advisory lock under which one process at a time migrates a database (every schema).
const MIGRATION_LOCK: i64 = 0x6d61_696c_726f_6f6d; // "mailroom"

/// Takes [`MIGRATION_LOCK`] for this session, asking again every 100 ms rather than waiting
/// in `pg_advisory_lock`: a session blocked there holds a snapshot, and `CREATE INDEX
/// CONCURRENTLY` (in a `-- no-transaction` migration) waits for every older snapshot to end —
/// the holder waiting for the waiter, a deadlock that fails one of them (and can leave an
/// invalid index behind). Between attempts a waiter holds nothing.
async fn migration_lock(conn: &mut sqlx::PgConnection) -> Result<(), MigrateError> {
    loop {
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if locked {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
