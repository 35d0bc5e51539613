//! The test harness: every test gets Mailroom running against the real local stack.
//!
//! [`spawn_app`] creates a database of its own on the stack's PostgreSQL, starts identity on a
//! random loopback port with its outbox relay, and hands back gRPC clients. Redis, the Kafka
//! broker and the SMTP sink are the stack's (started by `.ci/test`); tests keep out of each
//! other's way by creating their own organisations with unique domains, and on the broker by
//! topics of their own: every app names its topics under a prefix of its own
//! ([`TestApp::topics`]), so it neither sees another test's events nor replays the broker's
//! history, and its consumer groups are its own too. [`Broker`] starts a
//! private tansu for tests that stop and restart the broker.

pub mod bench;
pub mod browser;
pub mod chaos;
pub mod hostile_imap;
pub mod kafka_tls;
pub mod mailstore;
pub mod postgres_process;
pub mod process;
pub mod recording_listener;
pub mod spicedb;
pub mod tls_stack;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use figment::Figment;
use mailroom_platform::config::PlatformConfig;
use mailroom_platform::kafka::{Topic, Topics};
use mailroom_proto::access::v1::access_service_client::AccessServiceClient;
use mailroom_proto::events::v1::Envelope;
use mailroom_proto::identity::v1 as pb;
use mailroom_proto::mailboxes::v1::mailbox_service_client::MailboxServiceClient;
use pb::auth_service_client::AuthServiceClient;
use pb::identity_service_client::IdentityServiceClient;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message as _;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub use mailroom_proto::access::v1 as access_pb;
pub use mailroom_proto::identity::v1 as identity_pb;
use mailroom_proto::invitations::v1::invitation_service_client::InvitationServiceClient;
pub use mailroom_proto::mailboxes::v1 as mailboxes_pb;
pub use mailroom_proto::sync::v1 as sync_pb;
use mailroom_proto::sync::v1::sync_service_client::SyncServiceClient;
pub use process::{mailroom_binary, wait_for_port};

/// The operator's credential every spawned app accepts ([`TestApp::service_token`]).
pub const TEST_CLIENT: &str = mailroom_platform::auth::OPERATOR;
/// Every service client each spawned app's identity knows, each with the secret
/// [`test_secret`]: the operator's and each service's own.
pub const TEST_CLIENTS: [&str; 6] = [
    TEST_CLIENT,
    "identity",
    "access",
    "mailboxes",
    "sync",
    "invitations",
];
/// The secret of service client `client` in tests.
pub fn test_secret(client: &str) -> String {
    format!("test-{client}-secret")
}
/// The registry's own credential at identity in tests.
const MAILBOXES_SECRET: &str = "test-mailboxes-secret";
/// The sync service's own credential at identity in tests.
const SYNC_SECRET: &str = "test-sync-secret";
const INVITATIONS_SECRET: &str = "test-invitations-secret";
/// Password of every user the helpers create.
pub const PASSWORD: &str = "correct horse battery";

/// Where the stack is, from the variables `.ci/test` exports.
pub struct StackEnv {
    pub database_url: String,
    pub redis_url: String,
    pub kafka_brokers: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_sink_dir: Option<PathBuf>,
    pub tansu_bin: Option<PathBuf>,
}

impl StackEnv {
    pub fn load() -> Self {
        let need = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the tests with .ci/test, which starts PostgreSQL, Redis, Kafka, Dovecot and SMTP")
            })
        };
        let smtp = need("MAILROOM_SMTP_ADDR");
        let (host, port) = smtp
            .rsplit_once(':')
            .expect("MAILROOM_SMTP_ADDR is host:port");
        Self {
            database_url: need("DATABASE_URL"),
            redis_url: need("REDIS_URL"),
            kafka_brokers: need("KAFKA_BROKERS"),
            smtp_host: host.to_owned(),
            smtp_port: port.parse().expect("SMTP port is a number"),
            smtp_sink_dir: std::env::var("MAILROOM_SMTP_SINK_DIR")
                .ok()
                .map(PathBuf::from),
            tansu_bin: std::env::var("TANSU_BIN").ok().map(PathBuf::from),
        }
    }
}

/// Options for [`spawn_app_with`].
#[derive(Default)]
pub struct AppOptions {
    /// Another broker than the stack's (e.g. a private [`Broker`]).
    pub kafka_brokers: Option<String>,
    /// Sign-in attempts per address per minute (default: plenty).
    pub login_attempts_per_minute: Option<u32>,
    /// Another Redis than the stack's (e.g. a port a test stops and starts).
    pub redis_url: Option<String>,
    /// Adjusts identity's configuration after the test defaults.
    pub identity: Option<fn(&mut mailroom_identity::IdentityConfig)>,
    /// Also start access control (its own consumer group on the identity events).
    pub with_access: bool,
    /// Also start the mailbox registry (and access control, which it asks).
    pub with_mailboxes: bool,
    /// Also start the sync service (and the registry and access control).
    pub with_sync: bool,
    /// Also start the invitations service (and access control, which it asks).
    pub with_invitations: bool,
    /// Also start the web console (and every service it calls); mailed links point at it
    /// ([`TestApp::web_url`]).
    pub with_web: bool,
    /// Adjusts the console's configuration after the test defaults.
    pub web: Option<fn(&mut mailroom_web::WebConfig)>,
}

/// Identity running for one test.
pub struct TestApp {
    pub addr: SocketAddr,
    pub endpoint: String,
    pub pool: PgPool,
    pub kafka_brokers: String,
    /// This app's topic names: under a prefix no other test uses.
    pub topics: Topics,
    pub identity: IdentityServiceClient<Channel>,
    pub auth: AuthServiceClient<Channel>,
    /// Access control, when started ([`spawn_app_with_access`]).
    pub access: Option<AccessServiceClient<Channel>>,
    /// The mailbox registry, when started ([`spawn_app_with_mailboxes`]).
    pub mailboxes: Option<MailboxServiceClient<Channel>>,
    /// The sync service, when started ([`spawn_app_with_sync`]).
    pub sync: Option<SyncServiceClient<Channel>>,
    /// The invitations service, when started ([`spawn_app_with_invitations`]).
    pub invitations: Option<InvitationServiceClient<Channel>>,
    /// Where access control and the registry listen, when started.
    pub access_endpoint: Option<String>,
    pub mailboxes_endpoint: Option<String>,
    /// The registry's sealing keys (newest first), as configured.
    pub sealing_keys: Vec<String>,
    /// Where sync and invitations listen, when started.
    pub sync_endpoint: Option<String>,
    pub invitations_endpoint: Option<String>,
    /// The web console's base URL (`http://127.0.0.1:port`, no trailing slash), when started.
    pub web_url: Option<String>,
    pub env: StackEnv,
    platform: PlatformConfig,
    verifier: mailroom_platform::auth::TokenVerifier,
    /// Identity itself, whose keys sign the operator token of [`TestApp::service_token`].
    issuer: std::sync::Arc<mailroom_identity::Identity>,
    access_group: String,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// Identity, access control and the invitations service.
pub async fn spawn_app_with_invitations() -> TestApp {
    spawn_app_with(AppOptions {
        with_invitations: true,
        ..AppOptions::default()
    })
    .await
}

/// Identity and access control, as most access tests need.
pub async fn spawn_app_with_access() -> TestApp {
    spawn_app_with(AppOptions {
        with_access: true,
        ..AppOptions::default()
    })
    .await
}

/// Identity, access control, the mailbox registry and the sync service.
pub async fn spawn_app_with_sync() -> TestApp {
    spawn_app_with(AppOptions {
        with_sync: true,
        ..AppOptions::default()
    })
    .await
}

/// Identity, access control and the mailbox registry.
pub async fn spawn_app_with_mailboxes() -> TestApp {
    spawn_app_with(AppOptions {
        with_mailboxes: true,
        ..AppOptions::default()
    })
    .await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let env = StackEnv::load();
    // The console's port is picked first: identity's reset links and the invitations' links
    // point at it.
    let web_listener = if options.with_web {
        Some(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback"),
        )
    } else {
        None
    };
    let web_url = web_listener
        .as_ref()
        .map(|l| format!("http://{}", l.local_addr().expect("local addr")));
    let database_url = create_migrated_database(&env.database_url).await;
    let kafka_brokers = options
        .kafka_brokers
        .clone()
        .unwrap_or_else(|| env.kafka_brokers.clone());
    let topics = Topics::new(format!("tests.{}", uuid::Uuid::new_v4().simple()));
    let figment = Figment::new()
        .merge(("database_url", database_url.clone()))
        .merge((
            "redis_url",
            options
                .redis_url
                .clone()
                .unwrap_or_else(|| env.redis_url.clone()),
        ))
        .merge(("kafka_brokers", kafka_brokers.clone()))
        .merge(("kafka_topic_prefix", topics.prefix().to_owned()))
        .merge(("listen_host", "127.0.0.1"))
        .merge(("db_max_connections", 8))
        .merge(("metrics_enabled", false))
        .merge(("log_level", "warn"));
    let platform = PlatformConfig::load(&figment).expect("test platform config");
    // MAILROOM_TEST_LOG=info,mailroom_sync=debug shows more of what a test's services do.
    let level = std::env::var("MAILROOM_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = mailroom_platform::telemetry::init(
        "tests",
        mailroom_platform::config::LogFormat::Pretty,
        &level,
    );

    let mut config = mailroom_identity::IdentityConfig {
        login_attempts_per_minute: options.login_attempts_per_minute.unwrap_or(10_000),
        // Every test signs in from 127.0.0.1, on one Redis count: plenty (the limit's own
        // test sets a small one and names its networks in `x-forwarded-for`).
        login_attempts_per_network_per_minute: 1_000_000,
        ..identity_config(
            &env,
            vec![SecretString::from(
                mailroom_identity::keys::KeyRing::generate_seed(),
            )],
        )
    };
    if let Some(web) = &web_url {
        config.password_reset_url = format!("{web}/reset-password");
    }
    if let Some(tweak) = options.identity {
        tweak(&mut config);
    }

    let started = mailroom_identity::start(&platform, config)
        .await
        .expect("identity starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let pool = started.pool.clone();
    let verifier = started.verifier.clone();
    let issuer = started.service.clone();
    let server_verifier = verifier.clone();
    let server_shutdown = shutdown.clone();
    let server_platform = platform.clone();
    tokio::spawn(async move {
        if let Err(err) = started
            .run(listener, server_verifier, &server_platform, server_shutdown)
            .await
        {
            eprintln!("test server stopped: {err}");
        }
    });
    let endpoint = format!("http://{addr}");
    let channel = connect(&endpoint).await;
    // As a readiness probe would: a server starts serving after a bounded wait for the
    // revocations topic and refuses tokens (UNAVAILABLE) until it has read it, which on a busy
    // machine can take longer than that wait. Every service here shares this verifier.
    assert!(
        verifier
            .revocations()
            .wait_caught_up(std::time::Duration::from_secs(60))
            .await,
        "the revocations topic was not read to its end within 60 s"
    );
    let mut app = TestApp {
        addr,
        endpoint,
        pool,
        kafka_brokers,
        topics,
        identity: IdentityServiceClient::new(channel.clone()),
        auth: AuthServiceClient::new(channel),
        access: None,
        mailboxes: None,
        sync: None,
        invitations: None,
        access_endpoint: None,
        mailboxes_endpoint: None,
        sealing_keys: vec![mailroom_platform::sealed::SealingKeys::generate("k1")],
        sync_endpoint: None,
        invitations_endpoint: None,
        web_url,
        env,
        platform,
        verifier,
        issuer,
        access_group: format!("tests-access-{}", uuid::Uuid::new_v4().simple()),
        shutdown,
    };
    if options.with_access
        || options.with_mailboxes
        || options.with_sync
        || options.with_invitations
        || options.with_web
    {
        let (client, access_endpoint) = app.start_access_replica(app.shutdown.clone()).await;
        app.access = Some(client);
        app.access_endpoint = Some(access_endpoint.clone());
        if options.with_mailboxes || options.with_sync || options.with_web {
            let keys = app.sealing_keys.clone();
            let (client, endpoint) = app
                .launch_mailboxes(&access_endpoint, keys, app.shutdown.clone())
                .await;
            app.mailboxes = Some(client);
            app.mailboxes_endpoint = Some(endpoint);
        }
        if options.with_sync || options.with_web {
            let (client, endpoint) = app.launch_sync(app.shutdown.clone(), |_| {}).await;
            app.sync = Some(client);
            app.sync_endpoint = Some(endpoint);
        }
        if options.with_invitations || options.with_web {
            let (client, endpoint) = app.launch_invitations(app.shutdown.clone(), |_| {}).await;
            app.invitations = Some(client);
            app.invitations_endpoint = Some(endpoint);
        }
    }
    if let Some(listener) = web_listener {
        app.start_web(listener, options.web).await;
    }
    app
}

impl TestApp {
    /// Starts one more access replica over this app's database (sharing its consumer group),
    /// stopped by `shutdown`. Returns its client and endpoint.
    pub async fn start_access_replica(
        &self,
        shutdown: CancellationToken,
    ) -> (AccessServiceClient<Channel>, String) {
        self.start_access_replica_with(shutdown, |_| {}).await
    }

    /// As [`TestApp::start_access_replica`], with its configuration adjusted by `tweak`.
    pub async fn start_access_replica_with(
        &self,
        shutdown: CancellationToken,
        tweak: impl FnOnce(&mut mailroom_access::AccessConfig),
    ) -> (AccessServiceClient<Channel>, String) {
        let mut config = mailroom_access::AccessConfig {
            consumer_group: self.access_group.clone(),
            ..Default::default()
        };
        tweak(&mut config);
        self.launch_access(config, Some(self.verifier.clone()), shutdown)
            .await
    }

    /// An access replica that verifies tokens itself, as a separately deployed one does: keys
    /// from identity's JWKS over gRPC, revocations from the topic.
    pub async fn start_access_replica_verifying_itself(
        &self,
        shutdown: CancellationToken,
    ) -> AccessServiceClient<Channel> {
        let config = mailroom_access::AccessConfig {
            consumer_group: self.access_group.clone(),
            identity_endpoint: self.endpoint.clone(),
            ..Default::default()
        };
        self.launch_access(config, None, shutdown).await.0
    }

    /// Starts access with `config`, verifying with `verifier` (identity's, as when co-hosted)
    /// or, without one, with its own.
    /// Starts one more access replica (its own consumer group) whose platform settings
    /// `tweak` adjusts, stopped by `shutdown`. Returns its endpoint.
    pub async fn start_access_replica_on(
        &self,
        tweak: impl FnOnce(&mut PlatformConfig),
        shutdown: CancellationToken,
    ) -> String {
        let mut platform = self.platform.clone();
        tweak(&mut platform);
        let config = mailroom_access::AccessConfig {
            consumer_group: format!("tests-access-{}", uuid::Uuid::new_v4().simple()),
            ..Default::default()
        };
        self.launch_access_on(platform, config, Some(self.verifier.clone()), shutdown)
            .await
            .1
    }

    async fn launch_access(
        &self,
        config: mailroom_access::AccessConfig,
        verifier: Option<mailroom_platform::auth::TokenVerifier>,
        shutdown: CancellationToken,
    ) -> (AccessServiceClient<Channel>, String) {
        self.launch_access_on(self.platform.clone(), config, verifier, shutdown)
            .await
    }

    async fn launch_access_on(
        &self,
        platform: PlatformConfig,
        config: mailroom_access::AccessConfig,
        verifier: Option<mailroom_platform::auth::TokenVerifier>,
        shutdown: CancellationToken,
    ) -> (AccessServiceClient<Channel>, String) {
        let started = mailroom_access::start(&platform, config)
            .await
            .expect("access starts");
        let verifier = verifier.unwrap_or_else(|| started.verifier.clone());
        let endpoint = serve_in_background("access", move |listener| async move {
            started.run(listener, verifier, &platform, shutdown).await
        })
        .await;
        let channel = connect(&endpoint).await;
        (AccessServiceClient::new(channel), endpoint)
    }

    /// Starts a mailbox registry over this app's database with these sealing keys (newest
    /// first), asking access control at `access_endpoint`, stopped by `shutdown`.
    pub async fn start_mailboxes(
        &self,
        access_endpoint: &str,
        sealing_keys: Vec<String>,
        shutdown: CancellationToken,
    ) -> MailboxServiceClient<Channel> {
        self.launch_mailboxes(access_endpoint, sealing_keys, shutdown)
            .await
            .0
    }

    /// As [`TestApp::start_mailboxes`], also returning the registry's endpoint.
    pub async fn launch_mailboxes(
        &self,
        access_endpoint: &str,
        sealing_keys: Vec<String>,
        shutdown: CancellationToken,
    ) -> (MailboxServiceClient<Channel>, String) {
        self.launch_mailboxes_with(access_endpoint, sealing_keys, shutdown, |_| {})
            .await
    }

    /// As [`TestApp::launch_mailboxes`], with the test configuration adjusted by `tweak`.
    pub async fn launch_mailboxes_with(
        &self,
        access_endpoint: &str,
        sealing_keys: Vec<String>,
        shutdown: CancellationToken,
        tweak: impl FnOnce(&mut mailroom_mailboxes::MailboxesConfig),
    ) -> (MailboxServiceClient<Channel>, String) {
        let mut config = mailroom_mailboxes::MailboxesConfig {
            identity_endpoint: self.endpoint.clone(),
            access_endpoint: access_endpoint.to_owned(),
            service_client_id: "mailboxes".into(),
            service_client_secret: SecretString::from(MAILBOXES_SECRET),
            sealing_keys: sealing_keys.into_iter().map(SecretString::from).collect(),
            consumer_group: format!("tests-mailboxes-{}", uuid::Uuid::new_v4().simple()),
            login_timeout_ms: 4_000,
            login_checks_per_minute: 10_000,
            mail_servers: mailroom_mail::dial::PolicySettings::local(),
            ..Default::default()
        };
        tweak(&mut config);
        let started = mailroom_mailboxes::start(&self.platform, config)
            .await
            .expect("mailboxes starts");
        let platform = self.platform.clone();
        let verifier = self.verifier.clone();
        let endpoint = serve_in_background("mailboxes", move |listener| async move {
            started.run(listener, verifier, &platform, shutdown).await
        })
        .await;
        (
            MailboxServiceClient::new(connect(&endpoint).await),
            endpoint,
        )
    }

    /// The sync configuration tests run with: quick ticks and leases, loopback servers
    /// allowed, consumer groups of this test's own.
    pub fn sync_config(&self) -> mailroom_sync::SyncConfig {
        mailroom_sync::SyncConfig {
            identity_endpoint: self.endpoint.clone(),
            access_endpoint: self.access_endpoint.clone().unwrap_or_default(),
            mailboxes_endpoint: self.mailboxes_endpoint.clone().unwrap_or_default(),
            service_client_id: "sync".into(),
            service_client_secret: SecretString::from(SYNC_SECRET),
            consumer_group: format!("tests-sync-{}", uuid::Uuid::new_v4().simple()),
            worker_group: format!("tests-sync-workers-{}", uuid::Uuid::new_v4().simple()),
            tick_ms: 100,
            lease_ttl_ms: 3_000,
            request_timeout_secs: 5,
            retry_base_secs: 1,
            retry_cap_secs: 5,
            connect_timeout_ms: 5_000,
            io_timeout_ms: 10_000,
            mail_servers: mailroom_mail::dial::PolicySettings::local(),
            idle_scan_ms: 300,
            ..Default::default()
        }
    }

    /// Starts a sync replica (registry and access must be running) with the test
    /// configuration adjusted by `tweak`, stopped by `shutdown`.
    pub async fn start_sync(
        &self,
        shutdown: CancellationToken,
        tweak: impl FnOnce(&mut mailroom_sync::SyncConfig),
    ) -> SyncServiceClient<Channel> {
        self.launch_sync(shutdown, tweak).await.0
    }

    /// As [`TestApp::start_sync`], also returning the replica's endpoint.
    pub async fn launch_sync(
        &self,
        shutdown: CancellationToken,
        tweak: impl FnOnce(&mut mailroom_sync::SyncConfig),
    ) -> (SyncServiceClient<Channel>, String) {
        let mut config = self.sync_config();
        tweak(&mut config);
        let started = mailroom_sync::start(&self.platform, config)
            .await
            .expect("sync starts");
        let platform = self.platform.clone();
        let verifier = self.verifier.clone();
        let endpoint = serve_in_background("sync", move |listener| async move {
            started.run(listener, verifier, &platform, shutdown).await
        })
        .await;
        (SyncServiceClient::new(connect(&endpoint).await), endpoint)
    }

    /// The invitations configuration tests run with: mail to the stack's SMTP sink, quick
    /// retries and sweeps.
    pub fn invitations_config(&self) -> mailroom_invitations::InvitationsConfig {
        let mut config = mailroom_invitations::InvitationsConfig {
            identity_endpoint: self.endpoint.clone(),
            access_endpoint: self.access_endpoint.clone().unwrap_or_default(),
            service_client_id: "invitations".into(),
            service_client_secret: SecretString::from(INVITATIONS_SECRET),
            // The console's pages when it runs, else an address nothing serves.
            accept_url: format!("{}/invite", self.links_base()),
            join_url: format!("{}/join", self.links_base()),
            delivery_retry_ms: 200,
            delivery_attempts: 3,
            sweep_interval_ms: 200,
            consumer_group: format!("tests-invitations-{}", uuid::Uuid::new_v4().simple()),
            // Every test registers from 127.0.0.1, on one Redis count: plenty, so tests never
            // refuse each other (the limit's own test starts a replica with a small one).
            registrations_per_network_per_hour: 1_000_000,
            registrations_per_link_per_network_per_hour: 1_000_000,
            ..Default::default()
        };
        config.smtp.host = self.env.smtp_host.clone();
        config.smtp.port = self.env.smtp_port;
        config.smtp.timeout_ms = 5_000;
        config
    }

    /// Starts an invitations replica (access must be running) with the test configuration
    /// adjusted by `tweak`, stopped by `shutdown`.
    pub async fn start_invitations(
        &self,
        shutdown: CancellationToken,
        tweak: impl FnOnce(&mut mailroom_invitations::InvitationsConfig),
    ) -> InvitationServiceClient<Channel> {
        self.launch_invitations(shutdown, tweak).await.0
    }

    /// As [`TestApp::start_invitations`], also returning the replica's endpoint.
    pub async fn launch_invitations(
        &self,
        shutdown: CancellationToken,
        tweak: impl FnOnce(&mut mailroom_invitations::InvitationsConfig),
    ) -> (InvitationServiceClient<Channel>, String) {
        let mut config = self.invitations_config();
        tweak(&mut config);
        let started = mailroom_invitations::start(&self.platform, config)
            .await
            .expect("invitations starts");
        let platform = self.platform.clone();
        let verifier = self.verifier.clone();
        let endpoint = serve_in_background("invitations", move |listener| async move {
            started.run(listener, verifier, &platform, shutdown).await
        })
        .await;
        (
            InvitationServiceClient::new(connect(&endpoint).await),
            endpoint,
        )
    }

    /// Where mailed links point: the console when it runs, else `https://mailroom.test`.
    fn links_base(&self) -> String {
        self.web_url
            .clone()
            .unwrap_or_else(|| "https://mailroom.test".into())
    }

    /// Starts the web console on `listener` (its port already in [`TestApp::web_url`]),
    /// calling this app's five services, stopped with the app.
    async fn start_web(
        &self,
        listener: tokio::net::TcpListener,
        tweak: Option<fn(&mut mailroom_web::WebConfig)>,
    ) {
        let port = listener.local_addr().expect("local addr").port();
        let mut platform = self.platform.clone();
        platform.public_url = Some(format!("http://127.0.0.1:{port}"));
        let mut config = mailroom_web::WebConfig {
            identity_endpoint: self.endpoint.clone(),
            access_endpoint: self.access_endpoint.clone().expect("access runs"),
            mailboxes_endpoint: self.mailboxes_endpoint.clone().expect("mailboxes runs"),
            sync_endpoint: self.sync_endpoint.clone().expect("sync runs"),
            invitations_endpoint: self.invitations_endpoint.clone().expect("invitations runs"),
            session_keys: vec![SecretString::from(
                mailroom_platform::sealed::SealingKeys::generate("test"),
            )],
            // Every test posts from 127.0.0.1, on one Redis count: plenty (the limit's own
            // test sets a small one and names its network in `x-forwarded-for`).
            anonymous_posts_per_minute: 1_000_000,
            ..Default::default()
        };
        if let Some(tweak) = tweak {
            tweak(&mut config);
        }
        let started = mailroom_web::start_on_port(&platform, config, port)
            .await
            .expect("the web console starts");
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            if let Err(err) = started.run(listener, &platform, shutdown).await {
                eprintln!("test web server stopped: {err}");
            }
        });
    }

    /// The console's base URL (the app must have been spawned with the web).
    pub fn web_url(&self) -> &str {
        self.web_url
            .as_deref()
            .expect("spawn the app with the web (AppOptions { with_web: true, .. })")
    }

    /// The invitations client (the app must have been spawned with invitations).
    pub fn invitations(&self) -> InvitationServiceClient<Channel> {
        self.invitations
            .clone()
            .expect("spawn the app with invitations (spawn_app_with_invitations)")
    }

    /// The sync client (the app must have been spawned with sync).
    pub fn sync(&self) -> SyncServiceClient<Channel> {
        self.sync
            .clone()
            .expect("spawn the app with sync (spawn_app_with_sync)")
    }

    /// The registry client (the app must have been spawned with mailboxes).
    pub fn mailboxes(&self) -> MailboxServiceClient<Channel> {
        self.mailboxes
            .clone()
            .expect("spawn the app with mailboxes (spawn_app_with_mailboxes)")
    }

    /// The access client (the app must have been spawned with access).
    pub fn access(&self) -> AccessServiceClient<Channel> {
        self.access
            .clone()
            .expect("spawn the app with access (spawn_app_with_access)")
    }
}

/// Binds a loopback port, runs `run` on it in the background (a service's `Started::run`) and
/// returns the endpoint.
async fn serve_in_background<F, Fut, E>(what: &'static str, run: F) -> String
where
    F: FnOnce(tokio::net::TcpListener) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
    let served = run(listener);
    tokio::spawn(async move {
        if let Err(err) = served.await {
            eprintln!("test {what} server stopped: {err}");
        }
    });
    endpoint
}

async fn connect(endpoint: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Channel::from_shared(endpoint.to_owned())
            .expect("endpoint")
            .connect()
            .await
        {
            Ok(channel) => return channel,
            Err(err) if Instant::now() > deadline => panic!("test server did not come up: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Identity's configuration for a test: signing with `signing_keys`, a consumer group of its
/// own (every test process has its own database, so its own group, or they would share the
/// mailbox events' partitions between them), every [`TEST_CLIENTS`] known with its
/// [`test_secret`], and mail to the stack's SMTP sink; the rest the defaults.
pub fn identity_config(
    env: &StackEnv,
    signing_keys: Vec<SecretString>,
) -> mailroom_identity::IdentityConfig {
    let mut config = mailroom_identity::IdentityConfig {
        signing_keys,
        consumer_group: format!("tests-identity-{}", uuid::Uuid::new_v4().simple()),
        ..Default::default()
    };
    for client in TEST_CLIENTS {
        config
            .service_clients
            .insert(client.into(), SecretString::from(test_secret(client)));
    }
    config.smtp.host = env.smtp_host.clone();
    config.smtp.port = env.smtp_port;
    config
}

/// A database of its own on the stack's PostgreSQL with sync's schema migrated: the store a
/// sync worker's engine and scheduler run on.
pub async fn sync_database() -> PgPool {
    let env = StackEnv::load();
    let url = create_database(&env.database_url).await;
    let pool = mailroom_platform::db::connect(&SecretString::from(url), mailroom_sync::SCHEMA, 8)
        .await
        .expect("connect");
    mailroom_platform::db::migrate(&pool, mailroom_sync::SCHEMA, &mailroom_sync::MIGRATIONS)
        .await
        .expect("migrate");
    pool
}

/// The text a process's metrics port at `addr` answers `GET /metrics` with (the HTTP response,
/// headers included).
pub async fn scrape_metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the metrics port listens");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

/// The value of the series `series` (name and labels as exported) in a scrape's `text`.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// A loopback port nothing listens on at the moment, for a process a test starts: below the
/// kernel's ephemeral range (`net.ipv4.ip_local_port_range`), from which every connection of
/// the tests running beside it takes its local port. A port from that range (port 0's) could
/// be taken by one of those connections before the process bound it ("address already in
/// use", seen in CI); and above the local stack's own ports (10024–19092).
pub fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 20_000;
    if ephemeral_low > LOWEST + 1_000 {
        let span = u128::from(ephemeral_low - LOWEST);
        for _ in 0..200 {
            let port = LOWEST + (uuid::Uuid::new_v4().as_u128() % span) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A loopback port nothing listens on, for a test that needs a refused connection: one the
/// kernel handed out and took back (from the ephemeral range, where no test's process listens,
/// unlike [`free_port`]'s).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Every service's schema with the migrations each gets: what a Mailroom database holds.
fn every_schema() -> [(&'static str, &'static sqlx::migrate::Migrator); 5] {
    [
        (mailroom_identity::SCHEMA, &mailroom_identity::MIGRATIONS),
        (mailroom_access::SCHEMA, &mailroom_access::MIGRATIONS),
        (mailroom_mailboxes::SCHEMA, &mailroom_mailboxes::MIGRATIONS),
        (mailroom_sync::SCHEMA, &mailroom_sync::MIGRATIONS),
        (
            mailroom_invitations::SCHEMA,
            &mailroom_invitations::MIGRATIONS,
        ),
    ]
}

/// Creates a database next to the stack's with every service's schema migrated, and returns
/// its URL: a copy of a template migrated once (per set of migrations, on the stack's server)
/// rather than migrating each test's database — about a quarter of a second a test saved.
/// The services still run their migrations at start and find them applied; what migrating
/// an empty database does is tested with [`create_database`].
pub async fn create_migrated_database(server_url: &str) -> String {
    let template = template_name();
    let name = new_database_name();
    let admin = PgPool::connect(server_url)
        .await
        .expect("connect to the stack's PostgreSQL");
    let mut conn = admin.acquire().await.expect("a connection");
    // Copies hold the template's lock shared; making it (and .ci/test dropping it) holds it
    // alone, so no copy meets a template half made or being dropped.
    loop {
        advisory(&mut conn, "pg_advisory_lock_shared", &template).await;
        let ready = template_ready(&mut conn, &template).await;
        if ready {
            sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
                .execute(&mut *conn)
                .await
                .expect("create test database from the migrated template");
        }
        advisory(&mut conn, "pg_advisory_unlock_shared", &template).await;
        if ready {
            break;
        }
        advisory(&mut conn, "pg_advisory_lock", &template).await;
        if !template_ready(&mut conn, &template).await {
            make_template(&mut conn, server_url, &template).await;
        }
        advisory(&mut conn, "pg_advisory_unlock", &template).await;
    }
    drop(conn);
    admin.close().await;
    database_url(server_url, &name)
}

/// The name of the template database for this build's migrations: `mailroom_test_` like every
/// test database, so .ci/test drops it with them before a run.
fn template_name() -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (schema, migrator) in every_schema() {
        schema.hash(&mut hasher);
        for migration in mailroom_platform::db::combined(migrator).iter() {
            migration.version.hash(&mut hasher);
            migration.checksum.hash(&mut hasher);
        }
    }
    format!("mailroom_test_template_{:016x}", hasher.finish())
}

/// Runs the advisory-lock function `function` on `conn` with the template's name as its key
/// (.ci/test takes the same key as `hashtext(name)`).
async fn advisory(conn: &mut sqlx::PgConnection, function: &str, template: &str) {
    sqlx::query(&format!("SELECT {function}(hashtext($1))"))
        .bind(template)
        .execute(conn)
        .await
        .expect("the template's advisory lock");
}

/// Makes the template database `template` on the server: every schema migrated, then marked a
/// template (the sign it is whole) that nobody may connect to (a session connected to it
/// would make every copy fail).
async fn make_template(conn: &mut sqlx::PgConnection, server_url: &str, template: &str) {
    // Left half-made by a process that died making it.
    sqlx::query(&format!("DROP DATABASE IF EXISTS {template}"))
        .execute(&mut *conn)
        .await
        .expect("drop a half-made template");
    sqlx::query(&format!("CREATE DATABASE {template}"))
        .execute(&mut *conn)
        .await
        .expect("create the template database");
    let url = SecretString::from(database_url(server_url, template));
    for (schema, migrator) in every_schema() {
        // Two connections: migrating holds one while it looks for invalid indexes.
        let pool = mailroom_platform::db::connect(&url, schema, 2)
            .await
            .expect("connect to the template database");
        mailroom_platform::db::migrate(&pool, schema, migrator)
            .await
            .expect("migrate the template database");
        pool.close().await;
    }
    sqlx::query(&format!(
        "ALTER DATABASE {template} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
    ))
    .execute(&mut *conn)
    .await
    .expect("mark the template whole");
}

/// Whether the template database `name` was made to its end (it is marked a template last).
async fn template_ready(conn: &mut sqlx::PgConnection, name: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate)",
    )
    .bind(name)
    .fetch_one(conn)
    .await
    .expect("look for the template database")
}

/// Creates an empty database next to the stack's and returns its URL.
pub async fn create_database(server_url: &str) -> String {
    let name = new_database_name();
    let admin = PgPool::connect(server_url)
        .await
        .expect("connect to the stack's PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    database_url(server_url, &name)
}

fn new_database_name() -> String {
    format!("mailroom_test_{}", uuid::Uuid::new_v4().simple())
}

/// `server_url` naming database `name` instead of its own (its parameters — `sslmode` and the
/// like — kept).
fn database_url(server_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(server_url).expect("DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.into()
}

/// Adds `authorization: Bearer token` to a request.
pub fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("token is ASCII"),
    );
    request
}

/// An organisation created for a test, with its first admin signed in.
pub struct TestOrg {
    pub id: String,
    pub domain: String,
    pub admin_id: String,
    pub admin_email: String,
    pub admin_token: String,
}

impl TestOrg {
    /// A unique address in this organisation's domain.
    pub fn address(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }
}

impl TestApp {
    /// An operator token addressed to every service, for test setup that acts as the
    /// deployment's operator across services (creating organisations, writing relationships,
    /// resealing). Identity issues one audience per token; this one, naming all five, is
    /// signed with the test identity's key by the harness, and holds only the operator's
    /// rights ([`TestApp::service_token_as`] gets a real one for one service).
    pub async fn service_token(&self) -> String {
        let mut claims =
            mailroom_identity::keys::claims(format!("service:{TEST_CLIENT}"), None, false, 15 * 60);
        claims.aud = mailroom_platform::auth::SERVICES
            .iter()
            .map(|service| mailroom_platform::auth::service_audience(service))
            .collect();
        self.issuer
            .keys()
            .sign(&claims)
            .expect("the test identity signs")
    }

    /// A token from identity (`IssueServiceToken`) for service client `client` (one of
    /// [`TEST_CLIENTS`]) to call `audience`.
    pub async fn service_token_as(
        &self,
        client: &str,
        audience: &str,
    ) -> Result<String, tonic::Status> {
        self.auth
            .clone()
            .issue_service_token(pb::IssueServiceTokenRequest {
                client_id: client.into(),
                client_secret: test_secret(client),
                audience: audience.into(),
            })
            .await
            .map(|answer| answer.into_inner().access_token)
    }

    pub async fn create_org(&self, seat_limit: i32) -> TestOrg {
        let domain = format!("t{}.test", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let admin_email = format!("admin@{domain}");
        let service = self
            .service_token_as(TEST_CLIENT, "identity")
            .await
            .expect("the operator's token for identity");
        let org = self
            .identity
            .clone()
            .create_organization(authed(
                &service,
                pb::CreateOrganizationRequest {
                    display_name: format!("Org {domain}"),
                    seat_limit,
                    settings: None,
                    first_admin: Some(pb::NewAdmin {
                        login_email: admin_email.clone(),
                        first_name: "Ada".into(),
                        last_name: "Admin".into(),
                        password: PASSWORD.into(),
                    }),
                },
            ))
            .await
            .expect("create organisation")
            .into_inner();
        let tokens = self.login(&admin_email).await.expect("admin signs in");
        let admin_id = self
            .identity
            .clone()
            .list_users(authed(
                &tokens.access_token,
                pb::ListUsersRequest {
                    filter: "admin = true".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list admins")
            .into_inner()
            .users[0]
            .id
            .clone();
        TestOrg {
            id: org.id,
            domain,
            admin_id,
            admin_email,
            admin_token: tokens.access_token,
        }
    }

    pub async fn login(&self, email: &str) -> Result<pb::TokenPair, tonic::Status> {
        self.auth
            .clone()
            .login(pb::LoginRequest {
                login_email: email.into(),
                password: PASSWORD.into(),
                org_id: String::new(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Creates an active user (with [`PASSWORD`]) as the org's admin.
    pub async fn create_user(&self, org: &TestOrg, local: &str, department_id: &str) -> pb::User {
        self.try_create_user(org, &org.address(local), department_id)
            .await
            .unwrap_or_else(|s| panic!("create user {local}: {s:?}"))
    }

    pub async fn try_create_user(
        &self,
        org: &TestOrg,
        login: &str,
        department_id: &str,
    ) -> Result<pb::User, tonic::Status> {
        self.identity
            .clone()
            .create_user(authed(
                &org.admin_token,
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        login_email: login.into(),
                        first_name: login.split('@').next().unwrap_or_default().into(),
                        last_name: "Tester".into(),
                        department_id: department_id.into(),
                        ..Default::default()
                    }),
                    password: PASSWORD.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn create_department(
        &self,
        org: &TestOrg,
        name: &str,
        parent: &str,
        head: &str,
    ) -> pb::Department {
        self.identity
            .clone()
            .create_department(authed(
                &org.admin_token,
                pb::CreateDepartmentRequest {
                    department: Some(pb::Department {
                        name: name.into(),
                        parent_id: parent.into(),
                        head_user_id: head.into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap_or_else(|s| panic!("create department {name}: {s:?}"))
            .into_inner()
    }

    pub async fn set_head(
        &self,
        org: &TestOrg,
        department: &pb::Department,
        head: &str,
    ) -> pb::Department {
        self.identity
            .clone()
            .update_department(authed(
                &org.admin_token,
                pb::UpdateDepartmentRequest {
                    department: Some(pb::Department {
                        id: department.id.clone(),
                        head_user_id: head.into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["head_user_id".into()],
                    }),
                },
            ))
            .await
            .expect("set head")
            .into_inner()
    }
}

impl TestApp {
    /// Waits until an event on this app's `topic` matches `predicate`, reading the topic from
    /// the start (only this app's events are on it).
    pub async fn wait_for_event(
        &self,
        topic: Topic,
        timeout: Duration,
        predicate: impl Fn(&Envelope) -> bool,
    ) -> Option<Envelope> {
        wait_for_event(
            &self.kafka_brokers,
            &self.topics.name(topic),
            timeout,
            predicate,
        )
        .await
    }
}

/// Waits until an event on the topic named `topic` matches `predicate`, reading the topic from
/// the start.
pub async fn wait_for_event(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    predicate: impl Fn(&Envelope) -> bool,
) -> Option<Envelope> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("fetch.wait.max.ms", "10")
        // The topic may not exist yet (a broker that lost it is repopulated by the relay):
        // look for it every second rather than every five minutes.
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("test consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        {
            if let Some(envelope) = message.payload().and_then(|p| Envelope::decode(p).ok()) {
                if predicate(&envelope) {
                    return Some(envelope);
                }
            }
        }
    }
    None
}

/// Waits for a message to `address` in the SMTP sink's maildir and returns its text.
pub async fn wait_for_mail(app: &TestApp, address: &str, timeout: Duration) -> String {
    wait_for_mail_where(app, address, timeout, |_| true).await
}

/// Waits for a message to `address` whose text satisfies `wanted` (a second mail, say).
pub async fn wait_for_mail_where(
    app: &TestApp,
    address: &str,
    timeout: Duration,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(text) = mails_to(app, address).into_iter().find(|t| wanted(t)) {
            return text;
        }
        if Instant::now() > deadline {
            panic!("no such mail to {address} reached the SMTP sink in {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every message to `address` in the SMTP sink's maildir, in no particular order.
pub fn mails_to(app: &TestApp, address: &str) -> Vec<String> {
    let dir = app
        .env
        .smtp_sink_dir
        .clone()
        .expect("MAILROOM_SMTP_SINK_DIR is set when .ci/test runs the SMTP sink");
    let mut found = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
            for entry in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(entry.path()) {
                    if text
                        .lines()
                        .any(|l| l.to_ascii_lowercase().starts_with("to:") && l.contains(address))
                    {
                        found.push(text);
                    }
                }
            }
        }
    }
    found
}

/// A private tansu broker, for tests that stop and restart it.
pub struct Broker {
    bin: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Broker {
    pub fn start() -> Self {
        let bin = StackEnv::load()
            .tansu_bin
            .expect("TANSU_BIN is set by .ci/test");
        let port = free_port();
        let mut broker = Self {
            bin,
            port,
            child: None,
        };
        broker.restart();
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(kafka_tls::start_tansu(&self.bin, self.port, self.port));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Helpers for talking to access control in tests.
pub mod access {
    use std::time::{Duration, Instant};

    use mailroom_proto::access::v1 as apb;

    use super::{authed, TestApp};

    pub fn user(id: &str) -> Option<apb::SubjectRef> {
        Some(apb::SubjectRef {
            object: Some(apb::ObjectRef {
                r#type: "user".into(),
                id: id.into(),
            }),
            relation: String::new(),
        })
    }

    pub fn object(kind: &str, id: &str) -> Option<apb::ObjectRef> {
        Some(apb::ObjectRef {
            r#type: kind.into(),
            id: id.into(),
        })
    }

    /// `mailbox:<mailbox>#<relation>@user:<user>` (owner, reader).
    pub fn on_mailbox(mailbox: &str, relation: &str, user_id: &str) -> apb::Relationship {
        apb::Relationship {
            resource: object("mailbox", mailbox),
            relation: relation.into(),
            subject: user(user_id),
        }
    }

    pub fn request(
        user_id: &str,
        permission: &str,
        resource: Option<apb::ObjectRef>,
        at: Option<&apb::Revision>,
    ) -> apb::CheckRequest {
        apb::CheckRequest {
            subject: user(user_id),
            permission: permission.into(),
            resource,
            at_least_as_fresh_as: at.cloned(),
            explain: false,
        }
    }

    impl TestApp {
        pub async fn check(
            &self,
            token: &str,
            req: apb::CheckRequest,
        ) -> Result<apb::CheckResponse, tonic::Status> {
            self.access()
                .check(authed(token, req))
                .await
                .map(|r| r.into_inner())
        }

        /// Whether `user` may `permission` on `mailbox`, asked with a service token.
        pub async fn can(&self, user_id: &str, permission: &str, mailbox: &str) -> bool {
            let service = self.service_token().await;
            self.check(
                &service,
                request(user_id, permission, object("mailbox", mailbox), None),
            )
            .await
            .expect("check")
            .allowed
        }

        /// Polls until access control has heard of `user_id` from identity's events (they
        /// arrive in no fixed order across users).
        pub async fn until_known(&self, user_id: &str) {
            let service = self.service_token().await;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let mut asked = request(
                    user_id,
                    "mailbox.view",
                    object("mailbox", &uuid::Uuid::nil().to_string()),
                    None,
                );
                asked.explain = true;
                let answer = self.check(&service, asked).await.expect("check");
                if !answer.reason.contains("has not heard of this user") {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "access did not hear of {user_id} within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// Polls until access, which follows identity's events, gives `expected`.
        pub async fn eventually(
            &self,
            user_id: &str,
            permission: &str,
            mailbox: &str,
            expected: bool,
        ) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.can(user_id, permission, mailbox).await != expected {
                assert!(
                    Instant::now() < deadline,
                    "{user_id} {permission} {mailbox} did not become {expected} within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        /// Writes relationships with `token`, retrying while access has not yet heard of a
        /// user identity just created (FAILED_PRECONDITION).
        pub async fn write_when_known(
            &self,
            token: &str,
            relationships: Vec<apb::Relationship>,
        ) -> apb::Revision {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let written = self
                    .access()
                    .write_relationships(authed(
                        token,
                        apb::WriteRelationshipsRequest {
                            relationships: relationships.clone(),
                        },
                    ))
                    .await;
                match written {
                    Ok(r) => return r.into_inner().written_at.expect("a revision"),
                    // Not known yet: UNAVAILABLE to a service, NOT_FOUND to a user.
                    Err(s)
                        if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::NotFound)
                            && Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(s) => panic!("write relationships: {s:?}"),
                }
            }
        }

        /// The platform settings this app's services start with.
        pub fn platform(&self) -> &mailroom_platform::config::PlatformConfig {
            &self.platform
        }

        /// The URL of this app's own database.
        pub fn database_url(&self) -> &str {
            secrecy::ExposeSecret::expose_secret(&self.platform.database_url)
        }
    }
}

/// A real SMTP server of a test's own (aiosmtpd, `tests/smtp_server.py`): refuses recipients
/// whose local part starts with `refuse` (550), keeps the rest in its own maildir. Stopped on
/// drop; [`SmtpServer::stop`] and [`SmtpServer::start_on`] take it down and bring it back.
pub struct SmtpServer {
    pub port: u16,
    pub maildir: PathBuf,
    child: Option<Child>,
}

impl SmtpServer {
    /// A free port, nothing listening on it yet.
    pub fn free_port() -> u16 {
        crate::free_port()
    }

    pub fn start() -> Self {
        Self::start_on(Self::free_port())
    }

    pub fn start_on(port: u16) -> Self {
        let python = std::env::var("MAILROOM_PYTHON")
            .expect("MAILROOM_PYTHON is set by .ci/test (the stack's Python with aiosmtpd)");
        let maildir =
            std::env::temp_dir().join(format!("mailroom-smtp-{}", uuid::Uuid::new_v4().simple()));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("smtp_server.py");
        let child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the test SMTP server");
        wait_for_port(port, "the test SMTP server", Duration::from_secs(15));
        Self {
            port,
            maildir,
            child: Some(child),
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every message this server kept, as text.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) {
                for entry in entries.flatten() {
                    if let Ok(text) = std::fs::read_to_string(entry.path()) {
                        out.push(text);
                    }
                }
            }
        }
        out
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}
