//! `mailroom dev`: every built service and the web console in one process against local
//! dependencies, a demo organisation ("Acme") seeded once, and a summary of what runs where.

use anyhow::Context;
use figment::providers::Serialized;
use mailroom_identity::Identity;
use mailroom_mail::dial::PolicySettings;
use mailroom_platform::auth::Principal;
use mailroom_platform::config::{self, LogFormat, PlatformConfig};
use mailroom_platform::proto::identity::v1 as pb;
use secrecy::ExposeSecret;

use crate::ctl::{Clients, Credentials, Endpoints};
use crate::serve::{self, Service};

/// The service client the dev stack registers for `mailroom ctl`: the operator, who alone
/// creates organisations (no service of the stack holds its secret).
pub const DEV_CTL_CLIENT: &str = mailroom_platform::auth::OPERATOR;
const DEV_CTL_SECRET: &str = "mailroom-dev-operator";
/// Each calling service's own credential at identity, in the dev stack: identity registers it
/// (`identity.service_clients.<service>`) and the service signs in with it
/// (`<service>.service_client_secret`).
const DEV_SERVICE_SECRETS: [(&str, &str); 3] = [
    ("mailboxes", "mailroom-dev-mailboxes"),
    ("sync", "mailroom-dev-sync"),
    ("invitations", "mailroom-dev-invitations"),
];
/// The demo organisation's first admin, who signs in with the dev admin password.
const DEMO_ADMIN: &str = "admin@acme.test";
/// Sample messages in each demo INBOX, so a newcomer sees the counters move.
const DEMO_MESSAGES: usize = 240;
/// How long the demo seeding waits for the mailbox registry to learn of the demo people from
/// identity's events (a few seconds on a first start), unless `MAILROOM_DEV_SEED_WAIT_S` says.
const SEED_WAIT: std::time::Duration = std::time::Duration::from_secs(90);

fn seed_wait() -> std::time::Duration {
    std::env::var("MAILROOM_DEV_SEED_WAIT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(SEED_WAIT, std::time::Duration::from_secs)
}
/// The longest filling one demo INBOX may take.
const FILL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The dev stack's mailbox-password sealing key: fixed, so mailboxes connected in one run
/// open in the next. For local development only; a deployment brings its own
/// (`mailroom keygen --sealing <id>`).
const DEV_SEALING_KEY: &str = "dev:bWFpbHJvb20tZGV2LXNlYWxpbmcta2V5LTMyYnl0ZXM=";
/// The dev console's session sealing key: fixed, so a browser stays signed in across
/// restarts. For local development only; a deployment brings its own
/// (`mailroom keygen --sealing <id>` for `MAILROOM_WEB__SESSION_KEYS`).
const DEV_SESSION_KEY: &str = "dev:bWFpbHJvb20tZGV2LXNlc3Npb24ta2V5LTMyYnl0ZXM=";

pub async fn run() -> anyhow::Result<()> {
    let mut figment = config::sources()
        .join(Serialized::default("log_format", LogFormat::Pretty))
        .join(Serialized::default("listen_host", "127.0.0.1"))
        .join(Serialized::default(
            "identity.signing_keys",
            vec![mailroom_identity::keys::KeyRing::generate_seed()],
        ))
        .join(Serialized::default(
            format!("identity.service_clients.{DEV_CTL_CLIENT}").as_str(),
            DEV_CTL_SECRET,
        ))
        .join(Serialized::default(
            "mailboxes.sealing_keys",
            DEV_SEALING_KEY,
        ))
        .join(Serialized::default(
            "mailboxes.mail_servers",
            PolicySettings::local(),
        ))
        .join(Serialized::default(
            "sync.mail_servers",
            PolicySettings::local(),
        ))
        // Dev mail goes out at once and is retried quickly.
        .join(Serialized::default("invitations.delivery_retry_ms", 2_000))
        .join(Serialized::default("invitations.sweep_interval_ms", 5_000))
        .join(Serialized::default("web.session_keys", DEV_SESSION_KEY));
    // The mailed links (invitations, quick registration, password reset) open the console
    // this process serves, unless MAILROOM_PUBLIC_URL names another place.
    let web_port: u16 = figment
        .extract_inner("web.port")
        .unwrap_or(mailroom_web::DEFAULT_PORT);
    figment = figment.join(Serialized::default(
        "public_url",
        format!("http://127.0.0.1:{web_port}"),
    ));
    for (service, secret) in DEV_SERVICE_SECRETS {
        figment = figment
            .join(Serialized::default(
                &format!("identity.service_clients.{service}"),
                secret,
            ))
            .join(Serialized::default(
                &format!("{service}.service_client_secret"),
                secret,
            ));
    }
    // Under a topic prefix of its own, a dev stack's consumer groups are its own too: groups
    // named as every other stack's would be joined by all of them, each rebalancing (or, one
    // wedged, stalling) the others' consumers, on topics none of them shares.
    let prefix: Option<String> = figment.extract_inner("kafka_topic_prefix").ok();
    if let Some(prefix) = prefix.filter(|p| p != mailroom_platform::kafka::DEFAULT_TOPIC_PREFIX) {
        for service in Service::ALL {
            let name = service.name();
            figment = figment.join(Serialized::default(
                &format!("{name}.consumer_group"),
                format!("{prefix}-{name}"),
            ));
        }
        figment = figment.join(Serialized::default(
            "sync.worker_group",
            format!("{prefix}-sync-workers"),
        ));
    }
    let platform = PlatformConfig::load(&figment)?;
    let _telemetry =
        mailroom_platform::telemetry::init("dev", platform.log_format, &platform.log_level)?;
    let shutdown = mailroom_platform::shutdown::on_signal(&platform);
    let running = serve::start(Service::ALL, &figment, &platform, shutdown.clone()).await?;

    let admin_password =
        std::env::var("MAILROOM_DEV_ADMIN_PASSWORD").unwrap_or_else(|_| "mailroom-dev".into());
    // The demo data and the summary, given up on when a stop comes first: the services watch
    // the same shutdown and stop meanwhile, and what was seeded so far stays for the next run.
    let introduce = async {
        let mut not_seeded = None;
        if let Some(identity) = &running.identity {
            seed(identity, &admin_password)
                .await
                .context("demo data could not be seeded")?;
            if let Some(mailboxes) = &running.mailboxes {
                // The services run all the same: the summary says what is missing and why.
                if let Err(err) = seed_mailboxes(identity, mailboxes, &admin_password).await {
                    tracing::warn!(error = %format!("{err:#}"), "demo mailboxes not connected");
                    not_seeded = Some(err);
                }
            }
        }
        let ctl_secret =
            config::section::<mailroom_identity::IdentityConfig>(&figment, "identity")?
                .service_clients
                .get(DEV_CTL_CLIENT)
                .map(|s| s.expose_secret().to_owned())
                .unwrap_or_default();

        println!("\nMailroom dev is running (Ctrl-C stops it).\n");
        if let Some(err) = &not_seeded {
            println!(" the demo mailboxes are not connected: {err:#}\n");
        }
        if let Some(url) = &running.web_url {
            println!(
                " console: {url} (sign in as {DEMO_ADMIN} / {})\n",
                mask(&admin_password)
            );
        }
        for (service, addr, metrics) in &running.endpoints {
            let protocol = if *service == Service::Web {
                "HTTP"
            } else {
                "gRPC"
            };
            println!(
                "  {:<12} {protocol} {addr}   metrics http://{metrics}/metrics",
                service.name()
            );
        }
        println!();
        println!("  demo organisation: Acme");
        println!(
            "  admin:             {DEMO_ADMIN} / {}",
            mask(&admin_password)
        );
        println!(
            "  employees:         olivia.chen@acme.test, sam.ortiz@acme.test, … (same password)\n"
        );
        println!("  try:  export MAILROOM_TOKEN=$(cargo run -q -p mailroom -- ctl login --email {DEMO_ADMIN} --password {})", shell_word(&admin_password));
        println!("        cargo run -q -p mailroom -- ctl users list");
        println!("        cargo run -q -p mailroom -- ctl mailboxes list --columns employee,email,last_sync_time,in_crm --sort owner");
        println!("        cargo run -q -p mailroom -- ctl sync status <mailbox id from the list>");
        println!("        cargo run -q -p mailroom -- ctl sync activity   # you are active: your mailbox syncs every minute");
        match demo_invitation(&admin_password).await {
            Ok(link) => {
                println!("        cargo run -q -p mailroom -- ctl invitations list --filter 'state = PENDING'");
                println!(
                "  an invitation that works (open it, or accept it from the CLI):\n        {link}"
            );
                println!("        cargo run -q -p mailroom -- ctl invitations accept --link '{link}' --first-name Nia --last-name Newhire --new-password 'choose-a-password'");
            }
            Err(err) => println!("  (no demo invitation: {err:#})"),
        }
        println!("        grpcurl -plaintext 127.0.0.1:50051 list");
        println!(
        "  operator credential (ctl org create): --client-id {DEV_CTL_CLIENT} --client-secret {ctl_secret}\n"
    );
        anyhow::Ok(())
    };
    tokio::select! {
        // A stop asked for while starting wins over the summary.
        biased;
        _ = shutdown.cancelled() => {
            tracing::info!("stopping before the demo data and the summary were ready");
        }
        introduced = introduce => introduced?,
    }
    running.wait().await
}

fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn mask(password: &str) -> String {
    if password == "mailroom-dev" {
        password.to_owned()
    } else {
        "(MAILROOM_DEV_ADMIN_PASSWORD)".to_owned()
    }
}

/// Connects each Acme person's mailbox on the local Dovecot (IMAP and its submission
/// service), through the registry as any caller would, once the registry has heard of them
/// from identity's events (a few seconds on a first start). A mailbox already connected is
/// left as it is.
async fn seed_mailboxes(
    identity: &Identity,
    mailboxes: &mailroom_mailboxes::Mailboxes,
    password: &str,
) -> anyhow::Result<()> {
    use mailroom_mailboxes::error::MailboxError;
    use mailroom_platform::proto::mailboxes::v1 as mpb;
    let tokens = identity.login(admin_login(password), None).await?;
    let verifier = mailroom_platform::auth::TokenVerifier::from_jwks(&identity.keys().jwks().keys)?;
    let admin = Principal::from_claims(&verifier.verify(&tokens.access_token).await?)?;
    let (users, _, _) = identity
        .list_users(
            &admin,
            pb::ListUsersRequest {
                page_size: 1000,
                ..Default::default()
            },
        )
        .await?;
    let Principal::User { org_id, .. } = admin else {
        anyhow::bail!("the demo admin signed in as a service");
    };
    let server = |var: &str, default: &str| -> anyhow::Result<mpb::ServerSettings> {
        let addr = std::env::var(var).unwrap_or_else(|_| default.to_owned());
        let (host, port) = addr
            .rsplit_once(':')
            .with_context(|| format!("{var} is host:port, not {addr:?}"))?;
        Ok(mpb::ServerSettings {
            host: host.to_owned(),
            port: port.parse().with_context(|| format!("{var}: port"))?,
            security: mpb::Security::None as i32,
            username: String::new(),
        })
    };
    let imap = server("MAILROOM_IMAP_ADDR", "127.0.0.1:10143")?;
    let smtp = server("MAILROOM_SUBMISSION_ADDR", "127.0.0.1:10587")?;
    let seeder = Principal::Service {
        name: "dev-seed".into(),
    };
    let wait = seed_wait();
    let deadline = std::time::Instant::now() + wait;
    let mut connected = 0;
    let mut filled = 0;
    // Active people only: a re-run also finds the invitees an earlier run's demo invitation
    // made, and a mailbox is connected for people who have joined.
    for user in users
        .iter()
        .filter(|u| u.login_email.ends_with("@acme.test") && u.state == "active")
    {
        let request = mpb::ConnectMailboxRequest {
            mailbox: Some(mpb::Mailbox {
                org_id: org_id.to_string(),
                owner_user_id: user.id.to_string(),
                email: user.login_email.clone(),
                name: "Work mailbox".into(),
                sender_name: format!("{} {}", user.first_name, user.last_name),
                imap: Some(imap.clone()),
                smtp: Some(smtp.clone()),
                crm: Some(mpb::CrmSettings {
                    in_crm: user.position.contains("Account") || user.position.contains("Sales"),
                    queue_user_ids: Vec::new(),
                }),
                ..Default::default()
            }),
            password: password.into(),
            validate_only: false,
        };
        // Mail first, so the first sync has something to show; a mail server that does not
        // answer is not waited for.
        let port = u16::try_from(imap.port).unwrap_or(10143);
        let fill = mailroom_sync::demo::fill_inbox(
            &imap.host,
            port,
            &user.login_email,
            password,
            DEMO_MESSAGES,
        );
        match tokio::time::timeout(FILL_TIMEOUT, fill).await {
            Ok(Ok(n)) => filled += n,
            Ok(Err(err)) => {
                tracing::warn!(error = %format!("{err:#}"), mailbox = %user.login_email, "demo mail not added")
            }
            Err(_) => {
                tracing::warn!(mailbox = %user.login_email, timeout_s = FILL_TIMEOUT.as_secs(), "demo mail not added: the mail server did not answer in time")
            }
        }
        loop {
            match mailboxes.connect(&seeder, request.clone()).await {
                Ok(_) => {
                    connected += 1;
                    break;
                }
                Err(MailboxError::AlreadyConnected(_)) => break,
                Err(MailboxError::UserNotFound(_)) if std::time::Instant::now() < deadline => {
                    // the registry has not mirrored this user from identity's events yet
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(MailboxError::UserNotFound(_)) => anyhow::bail!(
                    "the mailbox registry has not learnt of {} from identity's events within {} s. \
                     The broker may have lost the events this database published (tansu keeps them \
                     in memory), or a consumer group may be waiting for a member a stopped process \
                     left; `.ci/up reset` starts the demo database and the broker afresh",
                    user.login_email,
                    wait.as_secs()
                ),
                Err(err) => {
                    return Err(anyhow::Error::from(err)
                        .context(format!("connecting the demo mailbox {}", user.login_email)))
                }
            }
        }
    }
    tracing::info!(connected, filled, "demo mailboxes connected and filled");
    Ok(())
}

/// Signing in as the demo admin.
fn admin_login(password: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        login_email: DEMO_ADMIN.into(),
        password: password.into(),
        org_id: String::new(),
    }
}

/// Seeds Acme once; a second run finds the admin and leaves everything as it is.
async fn seed(identity: &Identity, password: &str) -> anyhow::Result<()> {
    let seeder = Principal::Service {
        name: "dev-seed".into(),
    };
    if identity.login(admin_login(password), None).await.is_ok() {
        tracing::info!("demo organisation already seeded");
        return Ok(());
    }
    let org = identity
        .create_organization(
            &seeder,
            pb::CreateOrganizationRequest {
                display_name: "Acme".into(),
                seat_limit: 500,
                settings: Some(pb::OrganizationSettings {
                    allow_everyone_to_invite: true,
                }),
                first_admin: Some(pb::NewAdmin {
                    login_email: DEMO_ADMIN.into(),
                    first_name: "Alex".into(),
                    last_name: "Admin".into(),
                    password: password.into(),
                }),
            },
        )
        .await?;
    let org_id = org.id.to_string();

    let department = |name: &str, parent: &str| pb::CreateDepartmentRequest {
        department: Some(pb::Department {
            org_id: org_id.clone(),
            name: name.into(),
            parent_id: parent.into(),
            ..Default::default()
        }),
    };
    let management = identity
        .create_department(&seeder, department("Management", ""))
        .await?;
    let sales = identity
        .create_department(&seeder, department("Sales", &management.id.to_string()))
        .await?;
    let east = identity
        .create_department(&seeder, department("Sales East", &sales.id.to_string()))
        .await?;
    let engineering = identity
        .create_department(
            &seeder,
            department("Engineering", &management.id.to_string()),
        )
        .await?;

    let people = [
        (
            "olivia.chen",
            "Olivia",
            "Chen",
            "Chief Executive",
            &management,
            true,
        ),
        ("sam.ortiz", "Sam", "Ortiz", "Head of Sales", &sales, true),
        ("erin.park", "Erin", "Park", "Regional Lead", &east, true),
        (
            "dev.patel",
            "Dev",
            "Patel",
            "Head of Engineering",
            &engineering,
            true,
        ),
        ("ann.lee", "Ann", "Lee", "Account Executive", &east, false),
        (
            "ivan.petrov",
            "Ivan",
            "Petrov",
            "Account Executive",
            &east,
            false,
        ),
        (
            "maria.garcia",
            "Maria",
            "Garcia",
            "Sales Assistant",
            &sales,
            false,
        ),
        ("tom.baker", "Tom", "Baker", "Engineer", &engineering, false),
        (
            "yuki.tanaka",
            "Yuki",
            "Tanaka",
            "Engineer",
            &engineering,
            false,
        ),
    ];
    for (handle, first, last, position, dept, heads) in people {
        let user = identity
            .create_user(
                &seeder,
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        org_id: org_id.clone(),
                        login_email: format!("{handle}@acme.test"),
                        first_name: first.into(),
                        last_name: last.into(),
                        position: position.into(),
                        department_id: dept.id.to_string(),
                        ..Default::default()
                    }),
                    password: password.into(),
                },
            )
            .await?;
        if heads {
            identity
                .update_department(
                    &seeder,
                    pb::UpdateDepartmentRequest {
                        department: Some(pb::Department {
                            id: dept.id.to_string(),
                            org_id: org_id.clone(),
                            head_user_id: user.id.to_string(),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["head_user_id".into()],
                        }),
                    },
                )
                .await?;
        }
    }
    tracing::info!(%org_id, "demo organisation Acme seeded");
    Ok(())
}

/// Invites a fresh address (one per start, so a restart never collides with the last one)
/// through the running invitations service, as the demo admin, and returns its personal link.
async fn demo_invitation(admin_password: &str) -> anyhow::Result<String> {
    use mailroom_platform::proto::invitations::v1 as ipb;
    let mut clients = Clients::connect(
        &Endpoints::local(),
        &Credentials::password(DEMO_ADMIN, admin_password),
        &mailroom_clients::Settings::default(),
    )
    .await?;
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
    // Access control learns of the admin from identity's events: a first start may need a moment.
    for _ in 0..50 {
        let request = clients.request(ipb::CreateInvitationsRequest {
            emails: format!("new.hire.{stamp}@acme.test"),
            message: "Welcome to Acme!".into(),
            delivery: ipb::DeliveryMethod::OwnMailClient as i32,
            ..Default::default()
        });
        match clients.invitations.create_invitations(request).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                return answer
                    .composed
                    .and_then(|c| c.invitation_links.into_iter().next())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "the invitation was refused: {}",
                            answer
                                .rejected
                                .first()
                                .map(|r| r.reason.as_str())
                                .unwrap_or("no reason given")
                        )
                    });
            }
            Err(s) if s.code() == tonic::Code::PermissionDenied => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            Err(s) => anyhow::bail!("{}", s.message()),
        }
    }
    anyhow::bail!("access control did not learn of the demo admin in time")
}
