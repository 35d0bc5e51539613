//! Mailroom as a deployment runs it: `mailroom serve <services> [--role …]` processes,
//! configured by environment only (as the chart does), over one test's database, Redis,
//! broker and topic prefix; and the calls a test makes on them as the operator, an
//! organisation's admin or its people.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mailroom_proto::access::v1 as apb;
use mailroom_proto::access::v1::access_service_client::AccessServiceClient;
use mailroom_proto::identity::v1 as pb;
use mailroom_proto::identity::v1::auth_service_client::AuthServiceClient;
use mailroom_proto::identity::v1::identity_service_client::IdentityServiceClient;
use mailroom_proto::invitations::v1::invitation_service_client::InvitationServiceClient;
use mailroom_proto::mailboxes::v1 as mpb;
use mailroom_proto::mailboxes::v1::mailbox_service_client::MailboxServiceClient;
use mailroom_proto::sync::v1 as spb;
use mailroom_proto::sync::v1::sync_service_client::SyncServiceClient;
use secrecy::SecretString;
use sqlx::PgPool;
use tonic::transport::Channel;
use tonic::Code;

use super::{free_port, mailroom_bin, Proc};
use crate::mailstore::MailUser;
use crate::{authed, PASSWORD};

/// The services, in the order they are started.
pub const SERVICES: [&str; 5] = ["identity", "access", "mailboxes", "sync", "invitations"];

/// What a cluster runs over (each defaults to the stack's: a new database on its PostgreSQL,
/// its Redis, its broker).
#[derive(Default, Clone)]
pub struct Deps {
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub brokers: Option<String>,
}

/// One test's Mailroom: its processes and how to reach them.
pub struct Cluster {
    pub dir: PathBuf,
    pub database_url: String,
    pub redis_url: String,
    pub brokers: String,
    /// Every topic is `<prefix>.<service>.<name>`.
    pub prefix: String,
    id: String,
    signing_key: String,
    sealing_key: String,
    /// The gRPC port of each service's first process (the one peers and clients call).
    pub ports: BTreeMap<&'static str, u16>,
    /// Variables every process gets after the defaults (a test's tuning).
    pub tuning: Vec<(String, String)>,
    pub procs: Vec<Proc>,
    /// The gRPC ports each process serves on.
    proc_ports: Vec<Vec<u16>>,
}

/// An organisation with its first admin signed in.
pub struct Org {
    pub id: String,
    pub domain: String,
    pub admin_id: String,
    pub admin_token: String,
}

impl Org {
    pub fn address(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }
}

fn secret(client: &str) -> String {
    format!("chaos-{client}-secret")
}

fn lazy(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .connect_lazy()
}

/// Whether a failed call may be retried (the service or its dependencies are away, or it
/// has not heard of something just made).
pub fn transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::ResourceExhausted
            | Code::Aborted
    )
}

impl Cluster {
    /// A cluster over `deps` (the stack's where not given), with nothing started yet.
    pub async fn new(dir: PathBuf, deps: Deps) -> Self {
        let env = crate::StackEnv::load();
        let database_url = match deps.database_url {
            Some(url) => url,
            None => crate::create_database(&env.database_url).await,
        };
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let ports = SERVICES.iter().map(|s| (*s, free_port())).collect();
        Self {
            dir,
            database_url,
            redis_url: deps.redis_url.unwrap_or(env.redis_url),
            brokers: deps.brokers.unwrap_or(env.kafka_brokers),
            prefix: format!("chaos.{id}"),
            id,
            signing_key: mailroom_identity::keys::KeyRing::generate_seed(),
            sealing_key: mailroom_platform::sealed::SealingKeys::generate("k1"),
            ports,
            tuning: Vec::new(),
            procs: Vec::new(),
            proc_ports: Vec::new(),
        }
    }

    /// Sets a variable for every process started from now on (`MAILROOM_SYNC__BATCH`, …).
    pub fn tune(&mut self, key: &str, value: impl ToString) {
        self.tuning.push((key.to_owned(), value.to_string()));
    }

    /// The full name of topic `name` (`identity.events`, `sync.events`, …).
    pub fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    fn endpoint(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[service])
    }

    /// The environment of a process hosting `services` on `ports`.
    pub fn env(&self, services: &[&str], ports: &[u16]) -> Vec<(String, String)> {
        let (smtp_host, smtp_port) = std::env::var("MAILROOM_SMTP_ADDR")
            .ok()
            .and_then(|a| {
                a.rsplit_once(':')
                    .map(|(h, p)| (h.to_owned(), p.to_owned()))
            })
            .unwrap_or_else(|| ("127.0.0.1".into(), "10025".into()));
        let group = |service: &str| format!("chaos-{}-{service}", self.id);
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), self.database_url.clone()),
            ("REDIS_URL".into(), self.redis_url.clone()),
            ("KAFKA_BROKERS".into(), self.brokers.clone()),
            ("MAILROOM_KAFKA_TOPIC_PREFIX".into(), self.prefix.clone()),
            ("MAILROOM_KAFKA_PARTITIONS".into(), "4".into()),
            ("MAILROOM_LISTEN_HOST".into(), "127.0.0.1".into()),
            ("MAILROOM_METRICS_ENABLED".into(), "false".into()),
            ("MAILROOM_LOG_FORMAT".into(), "json".into()),
            ("MAILROOM_LOG_LEVEL".into(), "info".into()),
            ("MAILROOM_DB_MAX_CONNECTIONS".into(), "8".into()),
            ("MAILROOM_REVOCATIONS_CATCH_UP_MS".into(), "3000".into()),
        ];
        let mut set = |k: &str, v: String| env.push((k.to_owned(), v));
        for (service, port) in services.iter().zip(ports) {
            let upper = service.to_ascii_uppercase();
            set(&format!("MAILROOM_{upper}__PORT"), port.to_string());
            set(&format!("MAILROOM_{upper}__CONSUMER_GROUP"), group(service));
            if *service != "identity" {
                set(
                    &format!("MAILROOM_{upper}__IDENTITY_ENDPOINT"),
                    self.endpoint("identity"),
                );
            }
            if matches!(*service, "mailboxes" | "sync" | "invitations") {
                set(
                    &format!("MAILROOM_{upper}__ACCESS_ENDPOINT"),
                    self.endpoint("access"),
                );
                set(
                    &format!("MAILROOM_{upper}__SERVICE_CLIENT_ID"),
                    (*service).to_owned(),
                );
                set(
                    &format!("MAILROOM_{upper}__SERVICE_CLIENT_SECRET"),
                    secret(service),
                );
            }
            if matches!(*service, "mailboxes" | "sync") {
                set(
                    &format!("MAILROOM_{upper}__MAIL_SERVERS__ALLOWED_NETWORKS"),
                    "127.0.0.0/8".into(),
                );
                set(
                    &format!("MAILROOM_{upper}__MAIL_SERVERS__ALLOWED_PORTS"),
                    "1-65535".into(),
                );
            }
            match *service {
                "identity" => {
                    set("MAILROOM_IDENTITY__SIGNING_KEYS", self.signing_key.clone());
                    for client in [
                        mailroom_platform::auth::OPERATOR,
                        "mailboxes",
                        "sync",
                        "invitations",
                    ] {
                        set(
                            &format!(
                                "MAILROOM_IDENTITY__SERVICE_CLIENTS__{}",
                                client.to_ascii_uppercase()
                            ),
                            secret(client),
                        );
                    }
                    set("MAILROOM_IDENTITY__SMTP__HOST", smtp_host.clone());
                    set("MAILROOM_IDENTITY__SMTP__PORT", smtp_port.clone());
                    set(
                        "MAILROOM_IDENTITY__LOGIN_ATTEMPTS_PER_MINUTE",
                        "100000".into(),
                    );
                    set(
                        "MAILROOM_IDENTITY__LOGIN_ATTEMPTS_PER_NETWORK_PER_MINUTE",
                        "10000000".into(),
                    );
                }
                "mailboxes" => {
                    set("MAILROOM_MAILBOXES__SEALING_KEYS", self.sealing_key.clone());
                    set("MAILROOM_MAILBOXES__LOGIN_TIMEOUT_MS", "5000".into());
                    set(
                        "MAILROOM_MAILBOXES__LOGIN_CHECKS_PER_MINUTE",
                        "100000".into(),
                    );
                    set("MAILROOM_MAILBOXES__SYNC_NOW_PER_MINUTE", "100000".into());
                    set("MAILROOM_MAILBOXES__SYNC_NOW_INTERVAL_SECS", "0".into());
                }
                "sync" => {
                    set(
                        "MAILROOM_SYNC__MAILBOXES_ENDPOINT",
                        self.endpoint("mailboxes"),
                    );
                    set("MAILROOM_SYNC__WORKER_GROUP", group("sync-workers"));
                    set("MAILROOM_SYNC__TICK_MS", "200".into());
                    set("MAILROOM_SYNC__LEASE_TTL_MS", "3000".into());
                    set("MAILROOM_SYNC__REQUEST_TIMEOUT_SECS", "10".into());
                    set("MAILROOM_SYNC__RETRY_BASE_SECS", "1".into());
                    set("MAILROOM_SYNC__RETRY_CAP_SECS", "5".into());
                    set("MAILROOM_SYNC__CONNECT_TIMEOUT_MS", "5000".into());
                    set("MAILROOM_SYNC__IO_TIMEOUT_MS", "10000".into());
                    set("MAILROOM_SYNC__IDLE_ENABLED", "false".into());
                }
                "invitations" => {
                    set("MAILROOM_INVITATIONS__SMTP__HOST", smtp_host.clone());
                    set("MAILROOM_INVITATIONS__SMTP__PORT", smtp_port.clone());
                    set("MAILROOM_INVITATIONS__SMTP__TIMEOUT_MS", "5000".into());
                    set("MAILROOM_INVITATIONS__DELIVERY_RETRY_MS", "500".into());
                    set("MAILROOM_INVITATIONS__SWEEP_INTERVAL_MS", "500".into());
                    for limit in [
                        "INVITES_PER_INVITER_PER_HOUR",
                        "INVITES_PER_ORG_PER_HOUR",
                        "REGISTRATIONS_PER_NETWORK_PER_HOUR",
                        "REGISTRATIONS_PER_LINK_PER_NETWORK_PER_HOUR",
                    ] {
                        set(&format!("MAILROOM_INVITATIONS__{limit}"), "1000000".into());
                    }
                }
                _ => {}
            }
        }
        env.extend(self.tuning.iter().cloned());
        env
    }

    /// Starts `mailroom serve <services> [--role role]` as process `name` (not waiting for
    /// it: see [`Cluster::ready`]). A service already hosted by an earlier process gets a
    /// port of its own. Returns the process's index in [`Cluster::procs`].
    pub fn spawn(&mut self, name: &str, services: &[&str], role: Option<&str>) -> usize {
        let taken: Vec<u16> = self.proc_ports.iter().flatten().copied().collect();
        let ports: Vec<u16> = services
            .iter()
            .map(|s| {
                let main = self.ports[s];
                if taken.contains(&main) {
                    free_port()
                } else {
                    main
                }
            })
            .collect();
        let env = self.env(services, &ports);
        let list = services.join(",");
        let mut args = vec!["serve", list.as_str()];
        if let Some(role) = role {
            args.extend(["--role", role]);
        }
        let proc = Proc::spawn(
            name,
            &mailroom_bin(),
            &args,
            env,
            self.dir.join(format!("{name}.log")),
        );
        self.procs.push(proc);
        self.proc_ports.push(ports);
        self.procs.len() - 1
    }

    /// Waits until every gRPC port of process `index` reports SERVING.
    pub async fn ready(&mut self, index: usize) {
        let deadline = Instant::now() + Duration::from_secs(90);
        for port in self.proc_ports[index].clone() {
            loop {
                let mut health = tonic_health::pb::health_client::HealthClient::new(lazy(port));
                let serving = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok_and(|r| r.into_inner().status == 1);
                if serving {
                    break;
                }
                let proc = &mut self.procs[index];
                if let Some(status) = proc.exit_status() {
                    panic!(
                        "{} exited ({status}) before serving:\n{}",
                        proc.name,
                        proc.log_tail(30)
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not serve on {port} within 90 s:\n{}",
                    proc.name,
                    proc.log_tail(30)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Every service in a process of its own (sync as scheduler and worker), all serving.
    pub async fn start_each_alone(&mut self) {
        let started: Vec<usize> = SERVICES
            .iter()
            .map(|service| self.spawn(service, &[service], None))
            .collect();
        for index in started {
            self.ready(index).await;
        }
    }

    /// Identity, access, the registry and invitations in one process (`core`), and sync in
    /// processes named and given roles by `sync` (`("scheduler", "scheduler")`, …), all
    /// serving. Returns the indexes of the sync processes.
    pub async fn start_core_and_sync(&mut self, sync: &[(&str, &str)]) -> Vec<usize> {
        let core = self.spawn(
            "core",
            &["identity", "access", "mailboxes", "invitations"],
            None,
        );
        let syncs: Vec<usize> = sync
            .iter()
            .map(|(name, role)| self.spawn(name, &["sync"], Some(role)))
            .collect();
        self.ready(core).await;
        for index in &syncs {
            self.ready(*index).await;
        }
        syncs
    }

    /// The process at `index`.
    pub fn proc(&mut self, index: usize) -> &mut Proc {
        &mut self.procs[index]
    }

    /// The index of the process whose pid is `pid`.
    pub fn proc_with_pid(&self, pid: u32) -> Option<usize> {
        self.procs.iter().position(|p| p.pid() == Some(pid))
    }

    pub fn identity(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(lazy(self.ports["identity"]))
    }
    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(lazy(self.ports["identity"]))
    }
    pub fn access(&self) -> AccessServiceClient<Channel> {
        AccessServiceClient::new(lazy(self.ports["access"]))
    }
    pub fn mailboxes(&self) -> MailboxServiceClient<Channel> {
        MailboxServiceClient::new(lazy(self.ports["mailboxes"]))
    }
    pub fn sync(&self) -> SyncServiceClient<Channel> {
        SyncServiceClient::new(lazy(self.ports["sync"]))
    }
    pub fn invitations(&self) -> InvitationServiceClient<Channel> {
        InvitationServiceClient::new(lazy(self.ports["invitations"]))
    }

    /// A pool on `schema` of this cluster's database.
    pub async fn pool(&self, schema: &str) -> PgPool {
        mailroom_platform::db::connect(&SecretString::from(self.database_url.clone()), schema, 4)
            .await
            .expect("connect to the cluster's database")
    }

    /// The operator's token for `audience`, from identity (retried while it starts).
    pub async fn operator_token(&self, audience: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let issued = self
                .auth()
                .issue_service_token(pb::IssueServiceTokenRequest {
                    client_id: mailroom_platform::auth::OPERATOR.into(),
                    client_secret: secret(mailroom_platform::auth::OPERATOR),
                    audience: audience.into(),
                })
                .await;
            match issued {
                Ok(t) => return t.into_inner().access_token,
                Err(s) if transient(&s) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(s) => panic!("the operator's token for {audience}: {s:?}"),
            }
        }
    }

    /// Signs `email` in with [`PASSWORD`].
    pub async fn login(&self, email: &str) -> Result<pb::TokenPair, tonic::Status> {
        self.auth()
            .login(pb::LoginRequest {
                login_email: email.into(),
                password: PASSWORD.into(),
                org_id: String::new(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// A new organisation (no seat limit) with its admin signed in.
    pub async fn create_org(&self) -> Org {
        let domain = format!("c{}.test", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let admin_email = format!("admin@{domain}");
        let operator = self.operator_token("identity").await;
        let request = pb::CreateOrganizationRequest {
            display_name: format!("Chaos {domain}"),
            seat_limit: 0,
            settings: None,
            first_admin: Some(pb::NewAdmin {
                login_email: admin_email.clone(),
                first_name: "Ada".into(),
                last_name: "Admin".into(),
                password: PASSWORD.into(),
            }),
        };
        let org = self
            .identity()
            .create_organization(authed(&operator, request))
            .await
            .expect("create an organisation")
            .into_inner();
        let admin_token = self
            .login(&admin_email)
            .await
            .expect("the admin signs in")
            .access_token;
        let admins = self
            .identity()
            .list_users(authed(
                &admin_token,
                pb::ListUsersRequest {
                    filter: "admin = true".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list the admins")
            .into_inner()
            .users;
        Org {
            id: org.id,
            domain,
            admin_id: admins[0].id.clone(),
            admin_token,
        }
    }

    /// Creates an active user `<local>@<domain>` with [`PASSWORD`], as the admin.
    pub async fn create_user(&self, org: &Org, local: &str) -> Result<pb::User, tonic::Status> {
        self.identity()
            .create_user(authed(
                &org.admin_token,
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        login_email: org.address(local),
                        first_name: local.into(),
                        last_name: "Chaos".into(),
                        ..Default::default()
                    }),
                    password: PASSWORD.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// Connects Dovecot user `user` for `owner` with its IMAP at `imap_port` (the stack's
    /// Dovecot, or a [`super::infra::Front`] of it), once; the caller decides about retries.
    pub async fn try_connect_mailbox(
        &self,
        org: &Org,
        owner: &str,
        user: &MailUser,
        imap_port: u16,
        in_crm: bool,
    ) -> Result<mpb::Mailbox, tonic::Status> {
        let server = |port: u16| mpb::ServerSettings {
            host: "127.0.0.1".into(),
            port: i32::from(port),
            security: mpb::Security::None as i32,
            username: user.username.clone(),
        };
        let submission: u16 = std::env::var("MAILROOM_SUBMISSION_ADDR")
            .ok()
            .and_then(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
            .unwrap_or(10587);
        let request = mpb::ConnectMailboxRequest {
            mailbox: Some(mpb::Mailbox {
                email: user.username.clone(),
                owner_user_id: owner.into(),
                name: "Work".into(),
                sender_name: "Chaos".into(),
                imap: Some(server(imap_port)),
                smtp: Some(server(submission)),
                crm: Some(mpb::CrmSettings {
                    in_crm,
                    queue_user_ids: Vec::new(),
                }),
                ..Default::default()
            }),
            password: user.password.clone(),
            validate_only: false,
        };
        self.mailboxes()
            .connect_mailbox(authed(&org.admin_token, request))
            .await
            .map(|r| r.into_inner())
    }

    /// As [`Cluster::try_connect_mailbox`], retrying for a minute while the registry has
    /// not heard of a just-made owner.
    pub async fn connect_mailbox(
        &self,
        org: &Org,
        owner: &str,
        user: &MailUser,
        imap_port: u16,
        in_crm: bool,
    ) -> mpb::Mailbox {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self
                .try_connect_mailbox(org, owner, user, imap_port, in_crm)
                .await
            {
                Ok(m) => return m,
                Err(s)
                    if (s.code() == Code::NotFound || transient(&s))
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(s) => panic!("connect {}: {s:?}", user.username),
            }
        }
    }

    /// Asks the registry to sync `mailbox` now (the people's button).
    pub async fn sync_now(&self, org: &Org, mailbox: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let asked = self
                .mailboxes()
                .sync_mailbox_now(authed(
                    &org.admin_token,
                    mpb::SyncMailboxNowRequest { id: mailbox.into() },
                ))
                .await;
            match asked {
                Ok(_) => return,
                Err(s) if transient(&s) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(s) => panic!("sync {mailbox} now: {s:?}"),
            }
        }
    }

    /// The sync service's status of `mailbox`, as the admin sees it.
    pub async fn sync_status(
        &self,
        org: &Org,
        mailbox: &str,
    ) -> Result<spb::SyncStatus, tonic::Status> {
        self.sync()
            .get_sync_status(authed(
                &org.admin_token,
                spb::GetSyncStatusRequest {
                    mailbox_id: mailbox.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// The registry's view of `mailbox`, as the admin sees it.
    pub async fn mailbox(&self, org: &Org, mailbox: &str) -> Result<mpb::Mailbox, tonic::Status> {
        self.mailboxes()
            .get_mailbox(authed(
                &org.admin_token,
                mpb::GetMailboxRequest { id: mailbox.into() },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// Whether access control allows `user` `permission` on `mailbox` (asked by the operator).
    pub async fn check(
        &self,
        operator_access: &str,
        user: &str,
        permission: &str,
        mailbox: &str,
    ) -> Result<bool, tonic::Status> {
        self.access()
            .check(authed(
                operator_access,
                crate::access::request(
                    user,
                    permission,
                    crate::access::object("mailbox", mailbox),
                    None,
                ),
            ))
            .await
            .map(|r| r.into_inner().allowed)
    }

    /// Grants `user` `relation` on `mailbox` as `token`'s holder.
    pub async fn grant(
        &self,
        token: &str,
        mailbox: &str,
        relation: &str,
        user: &str,
    ) -> Result<(), tonic::Status> {
        self.access()
            .write_relationships(authed(
                token,
                apb::WriteRelationshipsRequest {
                    relationships: vec![crate::access::on_mailbox(mailbox, relation, user)],
                },
            ))
            .await
            .map(|_| ())
    }

    /// Rows in every service's `dead_letters`, per schema (empty schemas left out).
    pub async fn dead_letters(&self) -> BTreeMap<String, i64> {
        self.count_per_schema("SELECT count(*) FROM {}.dead_letters")
            .await
    }

    /// Outbox rows not yet published, per schema.
    pub async fn unpublished(&self) -> BTreeMap<String, i64> {
        self.count_per_schema("SELECT count(*) FROM {}.outbox WHERE published_at IS NULL")
            .await
    }

    async fn count_per_schema(&self, query: &str) -> BTreeMap<String, i64> {
        let pool = PgPool::connect(&self.database_url)
            .await
            .expect("connect to the cluster's database");
        let mut out = BTreeMap::new();
        for schema in SERVICES {
            let q = query.replace("{}", schema);
            if let Ok(n) = sqlx::query_scalar::<_, i64>(&q).fetch_one(&pool).await {
                if n > 0 {
                    out.insert(schema.to_owned(), n);
                }
            }
        }
        pool.close().await;
        out
    }

    /// Waits until every outbox is published (the relays caught up); panics after `timeout`.
    pub async fn until_published(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.unpublished().await;
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "outbox rows still unpublished after {timeout:?}: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether every process is still the one started (none exited); names those that are not.
    pub fn exited(&mut self) -> Vec<String> {
        self.procs
            .iter_mut()
            .filter_map(|p| p.exit_status().map(|s| format!("{} ({s})", p.name)))
            .collect()
    }
}

/// How many mails each address received in the stack's SMTP sink since `since` (by the
/// addresses of their `To:` lines, lower-cased).
pub fn sink_recipients(since: std::time::SystemTime) -> BTreeMap<String, usize> {
    let dir = PathBuf::from(
        std::env::var("MAILROOM_SMTP_SINK_DIR")
            .expect("MAILROOM_SMTP_SINK_DIR is set by .ci/stack.sh"),
    );
    let mut out = BTreeMap::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let fresh = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since);
            if !fresh {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let headers = text.split("\n\n").next().unwrap_or_default();
            for line in headers.lines() {
                let Some(rest) = line
                    .get(..3)
                    .filter(|h| h.eq_ignore_ascii_case("to:"))
                    .map(|_| &line[3..])
                else {
                    continue;
                };
                for word in rest.split([' ', ',', ';']) {
                    let address = word
                        .trim_matches(|c| matches!(c, '<' | '>' | '"' | '\r'))
                        .to_ascii_lowercase();
                    if address.contains('@') {
                        *out.entry(address).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    out
}
