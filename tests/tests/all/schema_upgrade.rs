//! Upgrades and rollbacks (issue 25, item 2): with `MAILROOM_MIGRATE_ON_START=false` a service
//! migrates nothing and runs on a schema that is one it can run on. Version N's binary serves on
//! a schema the migrate Job of version N+1 has expanded (a migration it does not know); it
//! refuses, saying what to do, a schema contracted past it; and it waits, not ready, while a
//! migration it needs is missing, becoming ready once the Job (`db::migrate`, what
//! `mailroom migrate` runs) has applied it.

use std::borrow::Cow;
use std::sync::Mutex;
use std::time::Duration;

use figment::Figment;
use mailroom_platform::config::PlatformConfig;
use mailroom_tests::{create_database, spawn_app, spawn_app_with_access, StackEnv};
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::readiness::{eventually, health, metrics_port, probe};

/// A version after every migration this binary has.
async fn next_version(pool: &PgPool, table: &str) -> i64 {
    let (max,): (i64,) = sqlx::query_as(&format!("SELECT max(version) FROM {table}"))
        .fetch_one(pool)
        .await
        .expect("the applied migrations");
    max + 1
}

/// Records migration `version` as the migrate Job of a later release would have applied it.
async fn record_applied(pool: &PgPool, table: &str, version: i64, description: &str) {
    sqlx::query(&format!(
        "INSERT INTO {table} (version, description, success, checksum, execution_time) \
         VALUES ($1, $2, true, '\\x00'::bytea, 1)"
    ))
    .bind(version)
    .bind(description)
    .execute(pool)
    .await
    .expect("record the newer migration");
}

#[tokio::test(flavor = "multi_thread")]
async fn version_n_serves_on_a_schema_expanded_by_version_n_plus_1() {
    let app = spawn_app_with_access().await;
    let org = app.create_org(0).await;
    let token = app.service_token().await;
    // Version N+1's migrate Job: an additive change and its row.
    let version = next_version(&app.pool, "access._sqlx_migrations").await;
    sqlx::query(
        "ALTER TABLE access.users ADD COLUMN added_by_next_release TEXT NOT NULL DEFAULT 'n+1'",
    )
    .execute(&app.pool)
    .await
    .expect("the expand migration");
    record_applied(
        &app.pool,
        "access._sqlx_migrations",
        version,
        "expand add column",
    )
    .await;

    // Version N restarting mid-rollout (or after `helm rollback`), migrating nothing.
    let stop = CancellationToken::new();
    let endpoint = app
        .start_access_replica_on(|p| p.migrate_on_start = false, stop.clone())
        .await;
    eventually(Duration::from_secs(30), "version N ready", || async {
        health(&endpoint, "").await == ServingStatus::Serving
    })
    .await;
    // A real call answers, from the expanded tables.
    let channel = tonic::transport::Channel::from_shared(endpoint.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let client =
        mailroom_proto::access::v1::access_service_client::AccessServiceClient::new(channel);
    eventually(Duration::from_secs(30), "version N knows the admin", || {
        let mut client = client.clone();
        let (token, admin) = (token.clone(), org.admin_id.clone());
        async move {
            let mut asked = mailroom_tests::access::request(
                &admin,
                "mailbox.view",
                mailroom_tests::access::object("mailbox", &uuid::Uuid::nil().to_string()),
                None,
            );
            asked.explain = true;
            let answer = client
                .check(mailroom_tests::authed(&token, asked))
                .await
                .expect("version N answers a check")
                .into_inner();
            !answer.reason.contains("has not heard of this user")
        }
    })
    .await;
    let (still,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM access._sqlx_migrations WHERE version = $1")
            .bind(version)
            .fetch_one(&app.pool)
            .await
            .expect("the newer migration");
    assert_eq!(still, 1, "version N leaves the newer migration alone");
    stop.cancel();
}

/// A platform configuration on a database of its own (nothing started on it).
async fn platform_on_new_database() -> PlatformConfig {
    let env = StackEnv::load();
    let figment = Figment::new()
        .merge(("database_url", create_database(&env.database_url).await))
        .merge(("redis_url", env.redis_url.clone()))
        .merge(("kafka_brokers", env.kafka_brokers.clone()))
        .merge((
            "kafka_topic_prefix",
            format!("tests.{}", uuid::Uuid::new_v4().simple()),
        ))
        .merge(("listen_host", "127.0.0.1"))
        .merge(("db_max_connections", 4))
        .merge(("metrics_enabled", false));
    PlatformConfig::load(&figment).expect("test platform config")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_contracted_past_this_version_is_refused_with_what_to_do() {
    let mut platform = platform_on_new_database().await;
    let pool = mailroom_platform::hosting::database(
        &platform,
        mailroom_access::SCHEMA,
        &mailroom_access::MIGRATIONS,
    )
    .await
    .expect("the migrate Job of this version");
    let version = next_version(&pool, "_sqlx_migrations").await;
    record_applied(&pool, "_sqlx_migrations", version, "contract drop column").await;

    for migrate_on_start in [false, true] {
        platform.migrate_on_start = migrate_on_start;
        let refused = match mailroom_access::start(&platform, Default::default()).await {
            Ok(_) => panic!("access started on a schema contracted past it (migrate_on_start={migrate_on_start})"),
            Err(err) => format!("{err:#}"),
        };
        assert!(
            refused.contains("migrated past what this version of Mailroom can run on")
                && refused.contains(&format!("migration {version} (`contract drop column`)"))
                && refused.contains("Roll forward"),
            "{refused}"
        );
    }

    // A migration this version has, changed since it was applied: refused, naming it.
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(version)
        .execute(&pool)
        .await
        .expect("forget the contract migration");
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea WHERE version = 1000")
        .execute(&pool)
        .await
        .expect("change a checksum");
    platform.migrate_on_start = false;
    let refused = match mailroom_access::start(&platform, Default::default()).await {
        Ok(_) => panic!("access started on a migration applied with another checksum"),
        Err(err) => format!("{err:#}"),
    };
    assert!(
        refused.contains("migration 1000") && refused.contains("another checksum"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_waits_not_ready_for_a_missing_migration_until_the_job_applies_it() {
    let app = spawn_app().await;
    // The test's database is a copy of one with every schema migrated: access's goes, so it
    // starts as a database no migrate Job has run on yet.
    sqlx::query("DROP SCHEMA access CASCADE")
        .execute(&app.pool)
        .await
        .expect("drop access's schema");
    let metrics = metrics_port().await;
    let seen: Mutex<Option<PlatformConfig>> = Mutex::new(None);
    let stop = CancellationToken::new();
    let starting = app.start_access_replica_on(
        |p| {
            p.migrate_on_start = false;
            *seen.lock().expect("seen") = Some(p.clone());
        },
        stop.clone(),
    );
    tokio::pin!(starting);
    // Nothing applied yet: it waits.
    tokio::select! {
        _ = &mut starting => panic!("access started on a schema without its migrations"),
        _ = tokio::time::sleep(Duration::from_secs(3)) => {}
    }
    let mut platform = seen
        .lock()
        .expect("seen")
        .clone()
        .expect("the replica's configuration");
    platform.migrate_on_start = true;
    // An older release's migrate Job: every migration but this version's last.
    let all = &mailroom_access::MIGRATIONS;
    let last = all
        .iter()
        .map(|m| m.version)
        .max()
        .expect("access has migrations");
    let older = Migrator {
        migrations: Cow::Owned(all.iter().filter(|m| m.version != last).cloned().collect()),
        ..Migrator::DEFAULT
    };
    mailroom_platform::hosting::database(&platform, mailroom_access::SCHEMA, &older)
        .await
        .expect("the older migrate Job");
    let lacks = format!("access: schema `access` lacks migration(s) {last};");
    let waited = async {
        eventually(
            Duration::from_secs(15),
            "not ready, naming the missing migration",
            || async {
                let (status, reason) = probe(metrics, "/readyz").await;
                status == 503 && reason.starts_with(&lacks) && reason.contains("mailroom migrate")
            },
        )
        .await
    };
    tokio::select! {
        _ = &mut starting => panic!("access started without migration {last}"),
        _ = waited => {}
    }

    // This version's migrate Job.
    mailroom_platform::hosting::database(
        &platform,
        mailroom_access::SCHEMA,
        &mailroom_access::MIGRATIONS,
    )
    .await
    .expect("the migrate Job");
    let endpoint = tokio::time::timeout(Duration::from_secs(30), &mut starting)
        .await
        .expect("access starts once its migrations are applied");
    eventually(Duration::from_secs(30), "ready once migrated", || async {
        health(&endpoint, "").await == ServingStatus::Serving
            && probe(metrics, "/readyz").await.0 == 200
    })
    .await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_a_failed_concurrent_build_left_invalid_stops_the_migration_naming_the_fix() {
    let platform = platform_on_new_database().await;
    let schema = mailroom_access::SCHEMA;
    let pool =
        mailroom_platform::hosting::database(&platform, schema, &mailroom_access::MIGRATIONS)
            .await
            .expect("the migrate Job of this version");
    // A concurrent build that fails (here on duplicates) leaves its index behind, invalid.
    sqlx::raw_sql("CREATE TABLE left_behind (x int); INSERT INTO left_behind VALUES (1), (1);")
        .execute(&pool)
        .await
        .expect("a table with duplicates");
    sqlx::raw_sql("CREATE UNIQUE INDEX CONCURRENTLY left_behind_x ON left_behind (x)")
        .execute(&pool)
        .await
        .expect_err("a unique index over duplicates fails");

    let refused = mailroom_platform::db::migrate(&pool, schema, &mailroom_access::MIGRATIONS)
        .await
        .expect_err("migrating over an invalid index");
    let message = refused.to_string();
    assert!(
        message.contains(&format!("DROP INDEX CONCURRENTLY {schema}.left_behind_x;"))
            && message.contains("mailroom migrate"),
        "{message}"
    );
    // A pod migrating at start refuses the same way.
    let refused =
        mailroom_platform::hosting::database(&platform, schema, &mailroom_access::MIGRATIONS)
            .await
            .expect_err("a start migrating over an invalid index");
    assert!(refused.to_string().contains("left_behind_x"), "{refused}");

    // What the message says to do works.
    sqlx::raw_sql(&format!("DROP INDEX CONCURRENTLY {schema}.left_behind_x"))
        .execute(&pool)
        .await
        .expect("drop the invalid index");
    mailroom_platform::db::migrate(&pool, schema, &mailroom_access::MIGRATIONS)
        .await
        .expect("migrate again once it is dropped");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_services_schema_takes_the_next_releases_expand_and_refuses_its_contract() {
    let mut platform = platform_on_new_database().await;
    let services: [(&str, &Migrator); 5] = [
        (mailroom_identity::SCHEMA, &mailroom_identity::MIGRATIONS),
        (mailroom_access::SCHEMA, &mailroom_access::MIGRATIONS),
        (
            mailroom_invitations::SCHEMA,
            &mailroom_invitations::MIGRATIONS,
        ),
        (mailroom_mailboxes::SCHEMA, &mailroom_mailboxes::MIGRATIONS),
        (mailroom_sync::SCHEMA, &mailroom_sync::MIGRATIONS),
    ];
    for (schema, migrations) in services {
        platform.migrate_on_start = true;
        let pool = mailroom_platform::hosting::database(&platform, schema, migrations)
            .await
            .unwrap_or_else(|err| panic!("{schema}: this version's migrate Job: {err:#}"));
        let table = format!("{schema}._sqlx_migrations");
        let version = next_version(&pool, &table).await;
        record_applied(&pool, &table, version, "expand add table").await;
        // Version N's pods, mid-rollout or after `helm rollback`: with and without migrating
        // at start, they run on the expanded schema and leave the newer row alone.
        for migrate_on_start in [false, true] {
            platform.migrate_on_start = migrate_on_start;
            tokio::time::timeout(
                Duration::from_secs(15),
                mailroom_platform::hosting::database(&platform, schema, migrations),
            )
            .await
            .unwrap_or_else(|_| panic!("{schema}: version N waited on an expanded schema"))
            .unwrap_or_else(|err| {
                panic!("{schema}: version N refused an expanded schema (migrate_on_start={migrate_on_start}): {err:#}")
            });
        }
        let (still,): (i64,) =
            sqlx::query_as(&format!("SELECT count(*) FROM {table} WHERE version = $1"))
                .bind(version)
                .fetch_one(&pool)
                .await
                .expect("the newer migration");
        assert_eq!(
            still, 1,
            "{schema}: version N leaves the newer migration alone"
        );

        // The release after removes what version N still uses: version N refuses to run.
        record_applied(&pool, &table, version + 1, "contract drop column").await;
        platform.migrate_on_start = false;
        let refused =
            match mailroom_platform::hosting::database(&platform, schema, migrations).await {
                Ok(_) => panic!("{schema}: version N started on a schema contracted past it"),
                Err(err) => format!("{err:#}"),
            };
        assert!(
            refused.contains("migrated past what this version of Mailroom can run on")
                && refused.contains(&format!("migration {}", version + 1)),
            "{schema}: {refused}"
        );
    }
}
