//! TLS to PostgreSQL and Redis, against servers that accept nothing else: a PostgreSQL taking
//! TCP connections over TLS only (one of its users signs in with a client certificate only)
//! and a Redis listening on TLS only and asking for client certificates, both with
//! certificates from a CA the test makes ([`mailroom_tests::tls_stack`]). A client that trusts
//! the right CA (and presents the right certificate) gets in; one that trusts another CA, or
//! presents no certificate, is refused with an error an operator can act on; and identity,
//! configured as an operator would (`MAILROOM_DATABASE_TLS__*`, `rediss://` with
//! `MAILROOM_REDIS_TLS__*`), starts and answers a sign-in over both.

use std::path::{Path, PathBuf};

use figment::Figment;
use mailroom_platform::config::PlatformConfig;
use mailroom_platform::db::{self, DbError};
use mailroom_platform::tls::{DatabaseTls, DatabaseTlsMode, RedisTls};
use mailroom_tests::tls_stack::{self, ClientCertificates, TestCa, TlsPostgres, TlsRedis};
use mailroom_tests::{identity_pb as pb, StackEnv};
use secrecy::SecretString;
use tonic::Code;

/// The files a client of the test's servers uses.
struct ClientFiles {
    ca: PathBuf,
    other_ca: PathBuf,
    /// A client certificate for [`TlsPostgres::CLIENT_CERT_USER`] from the servers' CA.
    cert: PathBuf,
    key: PathBuf,
    /// The same name, from another CA.
    foreign_cert: PathBuf,
    foreign_key: PathBuf,
}

fn client_files(dir: &Path, ca: &TestCa) -> ClientFiles {
    let other = TestCa::new("some other CA");
    let client = ca
        .issue(TlsPostgres::CLIENT_CERT_USER, &[])
        .write(dir, "client");
    let foreign = other
        .issue(TlsPostgres::CLIENT_CERT_USER, &[])
        .write(dir, "foreign-client");
    ClientFiles {
        ca: ca.write(dir, "ca.crt"),
        other_ca: other.write(dir, "other-ca.crt"),
        cert: client.cert,
        key: client.key,
        foreign_cert: foreign.cert,
        foreign_key: foreign.key,
    }
}

/// Whether the pool's connection is encrypted, and as whom it is signed in.
async fn tls_and_user(pool: &sqlx::PgPool) -> (bool, String) {
    sqlx::query_as("SELECT ssl, current_user::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .expect("pg_stat_ssl")
}

async fn connect(url: &str, tls: &DatabaseTls) -> Result<sqlx::PgPool, DbError> {
    db::connect_with_tls(&SecretString::from(url.to_owned()), tls, "tls_check", 2).await
}

#[tokio::test]
async fn postgres_over_tls_checks_the_server_certificate_and_presents_a_client_certificate() {
    let dir = tls_stack::test_dir("pg-tls");
    let ca = TestCa::new("mailroom test CA");
    let pg = TlsPostgres::start(&dir, &ca);
    let files = client_files(&dir, &ca);
    let trusted = DatabaseTls {
        mode: Some(DatabaseTlsMode::VerifyFull),
        ca_file: Some(files.ca.clone()),
        ..Default::default()
    };
    let postgres = pg.url("postgres");

    // verify-full with the CA that signed the server's certificate.
    let pool = connect(&postgres, &trusted.clone())
        .await
        .expect("verify-full with the server's CA connects");
    assert_eq!(tls_and_user(&pool).await, (true, "postgres".into()));
    pool.close().await;

    // The same from DATABASE_URL's own parameters, nothing set apart.
    let in_url = format!(
        "{postgres}?sslmode=verify-full&sslrootcert={}",
        files.ca.display()
    );
    let pool = connect(&in_url, &DatabaseTls::default())
        .await
        .expect("sslmode and sslrootcert in DATABASE_URL connect");
    assert!(tls_and_user(&pool).await.0);
    pool.close().await;

    // A CA file alone means verify-full; and the settings win over the URL's `sslmode`.
    let ca_only = DatabaseTls {
        ca_file: Some(files.ca.clone()),
        ..Default::default()
    };
    let pool = connect(&postgres, &ca_only)
        .await
        .expect("a CA file alone connects");
    assert!(tls_and_user(&pool).await.0);
    pool.close().await;
    let without_tls = format!("{postgres}?sslmode=disable");
    let refused = connect(&without_tls, &DatabaseTls::default())
        .await
        .expect_err("the server takes TLS connections only");
    assert!(
        refused.to_string().contains("pg_hba.conf"),
        "a plaintext connection is refused by the server: {refused}"
    );
    let pool = connect(&without_tls, &trusted.clone())
        .await
        .expect("MAILROOM_DATABASE_TLS__MODE wins over the URL's sslmode");
    assert!(tls_and_user(&pool).await.0);
    pool.close().await;

    // A server whose certificate does not chain to the CA configured is refused, and the
    // error names the certificate and the setting to check.
    let wrong_ca = DatabaseTls {
        mode: Some(DatabaseTlsMode::VerifyFull),
        ca_file: Some(files.other_ca.clone()),
        ..Default::default()
    };
    let refused = connect(&postgres, &wrong_ca)
        .await
        .expect_err("a server certificate from another CA is refused");
    let message = refused.to_string();
    assert!(matches!(refused, DbError::Tls(_)), "{message}");
    assert!(
        message.contains("certificate") && message.contains("MAILROOM_DATABASE_TLS__CA_FILE"),
        "{message}"
    );

    // The user that must present a client certificate: refused without one or with one from
    // another CA, in with the one its CA signed.
    let client_user = pg.url(TlsPostgres::CLIENT_CERT_USER);
    let refused = connect(&client_user, &trusted.clone())
        .await
        .expect_err("no client certificate");
    assert!(
        refused.to_string().contains("certificate"),
        "the server says a certificate is missing: {refused}"
    );
    let foreign = DatabaseTls {
        cert_file: Some(files.foreign_cert.clone()),
        key_file: Some(files.foreign_key.clone()),
        ..trusted.clone()
    };
    connect(&client_user, &foreign)
        .await
        .expect_err("a client certificate from another CA is refused");
    let with_cert = DatabaseTls {
        cert_file: Some(files.cert.clone()),
        key_file: Some(files.key.clone()),
        ..trusted.clone()
    };
    let pool = connect(&client_user, &with_cert)
        .await
        .expect("the client certificate signs in");
    assert_eq!(
        tls_and_user(&pool).await,
        (true, TlsPostgres::CLIENT_CERT_USER.into())
    );
    pool.close().await;
}

/// Connects to the Redis at `url` with `tls` and runs a PING: the answer, or why not.
async fn ping(url: &str, tls: &RedisTls) -> Result<String, String> {
    let url = SecretString::from(url.to_owned());
    let mut conn = mailroom_platform::redis::connect_with_tls(&url, tls)
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn redis_over_tls_checks_the_server_certificate_and_presents_a_client_certificate() {
    let dir = tls_stack::test_dir("redis-tls");
    let ca = TestCa::new("mailroom test CA");
    let server = TlsRedis::start(&dir, &ca, ClientCertificates::Required);
    let files = client_files(&dir, &ca);
    let url = server.url();
    let with_cert = RedisTls {
        ca_file: Some(files.ca.clone()),
        cert_file: Some(files.cert.clone()),
        key_file: Some(files.key.clone()),
    };

    assert_eq!(
        ping(&url, &with_cert)
            .await
            .expect("CA and client certificate"),
        "PONG"
    );
    // Sessions and limiters go through a link: the same TLS.
    let link =
        mailroom_platform::redis::RedisLink::with_tls(&SecretString::from(url.clone()), &with_cert)
            .expect("a link");
    let limiter = mailroom_platform::redis::RateLimiter::new(
        link,
        "tls-test",
        10,
        std::time::Duration::from_secs(60),
        mailroom_platform::redis::WithoutRedis::FailClosed,
    );
    limiter
        .hit("k")
        .await
        .expect("a fail-closed limiter counts in Redis over TLS");

    // Without a client certificate the server ends the handshake.
    let without_cert = RedisTls {
        ca_file: Some(files.ca.clone()),
        ..Default::default()
    };
    let refused = ping(&url, &without_cert).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    // A client certificate from another CA neither.
    let foreign = RedisTls {
        ca_file: Some(files.ca.clone()),
        cert_file: Some(files.foreign_cert.clone()),
        key_file: Some(files.foreign_key.clone()),
    };
    let refused = ping(&url, &foreign).await;
    assert!(
        refused.is_err(),
        "a foreign client certificate: {refused:?}"
    );

    // A server whose certificate does not chain to the CA configured is refused, and the
    // error says it is the certificate.
    let wrong_ca = RedisTls {
        ca_file: Some(files.other_ca.clone()),
        ..with_cert.clone()
    };
    let refused = ping(&url, &wrong_ca)
        .await
        .expect_err("a server certificate from another CA is refused");
    assert!(
        refused.to_lowercase().contains("certificate") || refused.contains("UnknownIssuer"),
        "{refused}"
    );
    // No CA configured: the public roots, which do not hold the test's CA.
    let public_roots = RedisTls {
        ca_file: None,
        ..with_cert.clone()
    };
    assert!(ping(&url, &public_roots).await.is_err());

    // TLS files with a redis:// URL: told to use rediss://, before anything is dialled.
    let plain = format!("redis://127.0.0.1:{}", server.port);
    let refused = ping(&plain, &with_cert)
        .await
        .expect_err("TLS files with redis://");
    assert!(refused.contains("rediss://"), "{refused}");
}

#[tokio::test]
async fn identity_starts_and_answers_over_tls_postgres_and_tls_redis_with_client_certificates() {
    let dir = tls_stack::test_dir("service-tls");
    let ca = TestCa::new("mailroom test CA");
    let pg = TlsPostgres::start(&dir, &ca);
    let redis_server = TlsRedis::start(&dir, &ca, ClientCertificates::Required);
    let files = client_files(&dir, &ca);
    let env = StackEnv::load();
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();

    // As the chart's environment gives it: DATABASE_URL without TLS parameters, the files
    // set apart (MAILROOM_DATABASE_TLS__* and MAILROOM_REDIS_TLS__* are these keys).
    let prefix = format!("tests.{}", uuid::Uuid::new_v4().simple());
    let figment = Figment::new()
        .merge(("database_url", pg.url(TlsPostgres::CLIENT_CERT_USER)))
        .merge(("database_tls.mode", "verify-full"))
        .merge(("database_tls.ca_file", path(&files.ca)))
        .merge(("database_tls.cert_file", path(&files.cert)))
        .merge(("database_tls.key_file", path(&files.key)))
        .merge(("redis_url", redis_server.url()))
        .merge(("redis_tls.ca_file", path(&files.ca)))
        .merge(("redis_tls.cert_file", path(&files.cert)))
        .merge(("redis_tls.key_file", path(&files.key)))
        .merge(("kafka_brokers", env.kafka_brokers.clone()))
        .merge(("kafka_topic_prefix", prefix))
        .merge(("listen_host", "127.0.0.1"))
        .merge(("db_max_connections", 4))
        .merge(("metrics_enabled", false))
        .merge(("log_level", "warn"));
    let platform = PlatformConfig::load(&figment).expect("the TLS configuration is valid");
    assert_eq!(
        platform.database_tls.mode,
        Some(DatabaseTlsMode::VerifyFull)
    );

    // A key file that is not there is refused at start, naming the setting.
    let broken = figment
        .clone()
        .merge(("redis_tls.key_file", path(&dir.join("missing.key"))));
    let err = PlatformConfig::load(&broken).expect_err("an unreadable key file");
    assert!(
        err.to_string().contains("MAILROOM_REDIS_TLS__KEY_FILE"),
        "{err}"
    );

    // verify-ca is refused (the PostgreSQL client trusts the public web roots besides the CA,
    // and verify-ca checks no host name), wherever it is set; so is a CA beside a mode that
    // checks nothing, the mode in the URL.
    let verify_ca = figment.clone().merge(("database_tls.mode", "verify-ca"));
    let err = PlatformConfig::load(&verify_ca)
        .expect_err("verify-ca")
        .to_string();
    assert!(
        err.contains("MAILROOM_DATABASE_TLS__MODE") && err.contains("verify-full"),
        "{err}"
    );
    let with_url = |url: String| {
        Figment::new()
            .merge(("database_url", url))
            .merge(("database_tls.ca_file", path(&files.ca)))
            .merge(("redis_url", env.redis_url.clone()))
            .merge(("kafka_brokers", env.kafka_brokers.clone()))
    };
    for sslmode in ["verify-ca", "require"] {
        let url = format!("{}?sslmode={sslmode}", pg.url("postgres"));
        let err = PlatformConfig::load(&with_url(url))
            .expect_err("a CA file with a URL's sslmode that does not check the host")
            .to_string();
        assert!(
            err.contains("DATABASE_URL") && err.contains("verify-full"),
            "{sslmode}: {err}"
        );
    }
    PlatformConfig::load(&with_url(format!(
        "{}?sslmode=verify-full",
        pg.url("postgres")
    )))
    .expect("verify-full in the URL with the CA file");

    let mut config = mailroom_tests::identity_config(
        &env,
        vec![SecretString::from(
            mailroom_identity::keys::KeyRing::generate_seed(),
        )],
    );
    config.login_failure_floor_ms = 0;
    let started = mailroom_identity::start(&platform, config)
        .await
        .expect("identity starts over TLS PostgreSQL and TLS Redis");
    // Its pool (migrations included) is on TLS, signed in by the client certificate.
    assert_eq!(
        tls_and_user(&started.pool).await,
        (true, TlsPostgres::CLIENT_CERT_USER.into())
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let verifier = started.verifier.clone();
    let server_platform = platform.clone();
    let server_shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(err) = started
            .run(listener, verifier, &server_platform, server_shutdown)
            .await
        {
            eprintln!("identity stopped: {err}");
        }
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("identity listens");
    let mut auth = pb::auth_service_client::AuthServiceClient::new(channel);

    // A sign-in is counted in Redis first (refused as UNAVAILABLE if Redis cannot be reached),
    // then looked up in PostgreSQL: an unknown address ends as UNAUTHENTICATED.
    let refused = auth
        .login(pb::LoginRequest {
            login_email: "nobody@tls.example".into(),
            password: "not the password".into(),
            org_id: String::new(),
        })
        .await
        .expect_err("no such user");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // The count is in the TLS Redis.
    let url = SecretString::from(redis_server.url());
    let mut conn = mailroom_platform::redis::connect_with_tls(&url, &platform.redis_tls)
        .await
        .expect("the test's own TLS connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("ratelimit:login-network*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(!keys.is_empty(), "the sign-in was counted in the TLS Redis");
    shutdown.cancel();
}
