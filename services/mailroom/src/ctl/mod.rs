//! `mailroom ctl`: the admin CLI over the gRPC APIs.
//!
//! Credentials, first found wins: `--token`/`MAILROOM_TOKEN`; `--email` and `--password`
//! (`MAILROOM_EMAIL`, `MAILROOM_PASSWORD`) to sign in on the fly; `--client-id` and
//! `--client-secret` (`MAILROOM_CLIENT_ID`, `MAILROOM_CLIENT_SECRET`) for a service token, which
//! creating organisations needs.
//!
//! One module per service's commands ([`access`], [`mailboxes`], [`sync`], [`invitations`];
//! identity's are here), over one core: the
//! [`Clients`] that carry the credentials, and [`Rows`] that print as a table or JSON.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use mailroom_clients::{
    AccessClient, Bearer, Caller, IdentityClient, InvitationsClient, MailboxesClient, Peer,
    PeerChannel, Settings, SyncClient,
};
use mailroom_platform::proto::access::v1::access_service_client::AccessServiceClient;
use mailroom_platform::proto::identity::v1 as pb;
use mailroom_platform::proto::invitations::v1::invitation_service_client::InvitationServiceClient;
use mailroom_platform::proto::mailboxes::v1::mailbox_service_client::MailboxServiceClient;
use mailroom_platform::proto::sync::v1::sync_service_client::SyncServiceClient;
use pb::auth_service_client::AuthServiceClient;
use pb::identity_service_client::IdentityServiceClient;
use serde_json::{json, Value};

use crate::output::{Format, Rows};

pub mod access;
pub mod invitations;
pub mod mailboxes;
pub mod sync;

#[derive(Args)]
pub struct Ctl {
    /// Identity's gRPC endpoint.
    #[arg(
        long,
        env = "MAILROOM_IDENTITY_ENDPOINT",
        default_value_t = mailroom_platform::config::local::identity(),
        global = true
    )]
    endpoint: String,
    /// Access control's gRPC endpoint.
    #[arg(
        long,
        env = "MAILROOM_ACCESS_ENDPOINT",
        default_value_t = mailroom_platform::config::local::access(),
        global = true
    )]
    access_endpoint: String,
    /// The mailbox registry's gRPC endpoint.
    #[arg(
        long,
        env = "MAILROOM_MAILBOXES_ENDPOINT",
        default_value_t = mailroom_platform::config::local::mailboxes(),
        global = true
    )]
    mailboxes_endpoint: String,
    /// The sync service's gRPC endpoint.
    #[arg(
        long,
        env = "MAILROOM_SYNC_ENDPOINT",
        default_value_t = mailroom_platform::config::local::sync(),
        global = true
    )]
    sync_endpoint: String,
    /// The invitations service's gRPC endpoint.
    #[arg(
        long,
        env = "MAILROOM_INVITATIONS_ENDPOINT",
        default_value_t = mailroom_platform::config::local::invitations(),
        global = true
    )]
    invitations_endpoint: String,
    #[arg(long, env = "MAILROOM_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[arg(long, env = "MAILROOM_EMAIL", global = true)]
    email: Option<String>,
    #[arg(long, env = "MAILROOM_PASSWORD", global = true, hide_env_values = true)]
    password: Option<String>,
    #[arg(long, env = "MAILROOM_CLIENT_ID", global = true)]
    client_id: Option<String>,
    #[arg(
        long,
        env = "MAILROOM_CLIENT_SECRET",
        global = true,
        hide_env_values = true
    )]
    client_secret: Option<String>,
    /// table (for people) or json (for scripts).
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Sign in and print an access token (export it as MAILROOM_TOKEN).
    Login,
    /// Organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Departments.
    #[command(subcommand)]
    Departments(DepartmentsCommand),
    /// Where an address is used, and moving it.
    #[command(subcommand)]
    Address(AddressCommand),
    /// Change your own login address.
    #[command(subcommand)]
    LoginChange(LoginChangeCommand),
    /// The public keys that verify access tokens.
    Jwks,
    /// Access control: check, grant, revoke, list, settings.
    #[command(subcommand)]
    Access(access::AccessCommand),
    /// Mailboxes: the list, connect, edit, sync now, transfer, list views, key rotation.
    #[command(subcommand)]
    Mailboxes(mailboxes::MailboxesCommand),
    /// Mail sync: a mailbox's status, heartbeats, the message index.
    #[command(subcommand)]
    Sync(sync::SyncCommand),
    /// Invite people by email (addresses from an argument or a file).
    Invite(invitations::InviteArgs),
    /// Invitations: list, show, resend, revoke, delete, approve, reject, accept, seats, templates.
    #[command(subcommand)]
    Invitations(invitations::InvitationsCommand),
    /// Register a person directly: they are mailed a link to set their password.
    Register(invitations::RegisterArgs),
    /// Quick-registration links: create, list, disable, join.
    #[command(subcommand)]
    Links(invitations::LinksCommand),
}

#[derive(Subcommand)]
enum OrgCommand {
    Get,
    /// Create an organisation and its first admin (service credential needed).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 0)]
        seat_limit: i32,
        #[arg(long)]
        admin_email: String,
        #[arg(long, env = "MAILROOM_NEW_ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: String,
        #[arg(long, default_value = "")]
        admin_first_name: String,
        #[arg(long, default_value = "")]
        admin_last_name: String,
    },
    Update {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        seat_limit: Option<i32>,
        #[arg(long)]
        allow_everyone_to_invite: Option<bool>,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    List {
        /// e.g. 'state = INVITED AND name : "lee"'
        #[arg(long, default_value = "")]
        filter: String,
        #[arg(long, default_value = "")]
        order_by: String,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    Get {
        id: String,
    },
    Create {
        #[arg(long)]
        login_email: String,
        #[arg(long, default_value = "")]
        contact_email: String,
        #[arg(long, default_value = "")]
        first_name: String,
        #[arg(long, default_value = "")]
        last_name: String,
        #[arg(long, default_value = "")]
        position: String,
        #[arg(long, default_value = "")]
        department: String,
        #[arg(long)]
        admin: bool,
        /// Without it the user is INVITED.
        #[arg(long, env = "MAILROOM_NEW_USER_PASSWORD", hide_env_values = true)]
        user_password: Option<String>,
    },
    Update {
        id: String,
        #[arg(long)]
        first_name: Option<String>,
        #[arg(long)]
        last_name: Option<String>,
        #[arg(long)]
        position: Option<String>,
        #[arg(long)]
        department: Option<String>,
        #[arg(long)]
        contact_email: Option<String>,
    },
    Dismiss {
        id: String,
    },
    Rehire {
        id: String,
    },
    SetAdmin {
        id: String,
        admin: bool,
    },
    /// Mail the user a one-time link to choose a new password (you never see it).
    SendPasswordReset {
        id: String,
    },
    /// End every session of the user (or yours, without an id), on every service.
    SignOut {
        id: Option<String>,
    },
    Subordinates {
        id: String,
    },
    Supervisors {
        id: String,
    },
}

#[derive(Subcommand)]
enum DepartmentsCommand {
    List {
        #[arg(long, default_value = "")]
        filter: String,
    },
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        parent: String,
        #[arg(long, default_value = "")]
        head: String,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// "" moves it to the top level.
        #[arg(long)]
        parent: Option<String>,
        #[arg(long)]
        head: Option<String>,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand)]
enum AddressCommand {
    /// Every use of an address in your organisation.
    Usage { address: String },
    /// Move an address from a dismissed user to someone else, or free it.
    Transfer {
        address: String,
        #[arg(long)]
        from: String,
        #[arg(long, conflicts_with = "release")]
        to: Option<String>,
        #[arg(long)]
        release: bool,
        /// login or contact
        #[arg(long, default_value = "contact")]
        r#as: String,
    },
}

#[derive(Subcommand)]
enum LoginChangeCommand {
    Request { new_login_email: String },
    Confirm { code: String },
}

/// The generated clients on `mailroom_clients`' channels (one per service, each call within
/// the operator's deadline), and the signed-in person's token their requests carry.
pub(crate) struct Clients {
    pub(crate) identity: IdentityServiceClient<PeerChannel>,
    auth: AuthServiceClient<PeerChannel>,
    pub(crate) access: AccessServiceClient<PeerChannel>,
    pub(crate) mailboxes: MailboxServiceClient<PeerChannel>,
    pub(crate) sync: SyncServiceClient<PeerChannel>,
    pub(crate) invitations: InvitationServiceClient<PeerChannel>,
    token: Option<String>,
    bearer: Option<Bearer>,
}

impl Clients {
    pub(crate) fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        Ok(match &self.bearer {
            Some(bearer) => bearer.request(message),
            None => tonic::Request::new(message),
        })
    }
}

pub async fn run(ctl: Ctl) -> anyhow::Result<()> {
    let settings = Settings::for_operator();
    let channel = |peer: Peer, endpoint: &str, flag: &str| {
        PeerChannel::new(peer, endpoint, &settings)
            .with_context(|| format!("{flag} is not a valid URL"))
    };
    let identity = IdentityClient::new(
        channel(Peer::Identity, &ctl.endpoint, "--endpoint")?,
        Caller::Anonymous,
    );
    identity.channel().reachable().await.with_context(|| {
        format!(
            "cannot reach identity at {}; is `mailroom dev` or `mailroom serve identity` running?",
            ctl.endpoint
        )
    })?;
    let mut auth = identity.raw_auth();
    let token = credentials(&mut auth, &ctl).await?;
    let bearer = token
        .as_deref()
        .map(Bearer::from_token)
        .transpose()
        .context("token is not valid metadata")?;
    let caller = bearer.clone().map_or(Caller::Anonymous, Caller::Person);
    // The others are connected on first use, so identity-only commands work without them.
    let mut clients = Clients {
        identity: identity.raw(),
        auth,
        access: AccessClient::new(
            channel(Peer::Access, &ctl.access_endpoint, "--access-endpoint")?,
            caller.clone(),
        )
        .raw(),
        mailboxes: MailboxesClient::new(
            channel(
                Peer::Mailboxes,
                &ctl.mailboxes_endpoint,
                "--mailboxes-endpoint",
            )?,
            caller.clone(),
        )
        .raw(),
        sync: SyncClient::new(
            channel(Peer::Sync, &ctl.sync_endpoint, "--sync-endpoint")?,
            caller.clone(),
        )
        .raw(),
        invitations: InvitationsClient::new(
            channel(
                Peer::Invitations,
                &ctl.invitations_endpoint,
                "--invitations-endpoint",
            )?,
            caller,
        )
        .raw(),
        token,
        bearer,
    };
    let format = ctl.output;
    let rows = match ctl.command {
        CtlCommand::Login => {
            let token = clients
                .token
                .clone()
                .context("give --email and --password (or MAILROOM_EMAIL/MAILROOM_PASSWORD)")?;
            if format == Format::Json {
                println!("{}", json!({ "access_token": token }));
            } else {
                println!("{token}");
            }
            return Ok(());
        }
        CtlCommand::Jwks => {
            let jwks = clients
                .auth
                .get_jwks(pb::GetJwksRequest {})
                .await?
                .into_inner();
            println!("{}", jwks.json);
            return Ok(());
        }
        CtlCommand::Org(cmd) => org(&mut clients, cmd).await?,
        CtlCommand::Users(cmd) => users(&mut clients, cmd).await?,
        CtlCommand::Departments(cmd) => departments(&mut clients, cmd).await?,
        CtlCommand::Address(cmd) => address(&mut clients, cmd).await?,
        CtlCommand::LoginChange(cmd) => login_change(&mut clients, cmd).await?,
        CtlCommand::Access(cmd) => access::run(&mut clients, cmd).await?,
        CtlCommand::Mailboxes(cmd) => mailboxes::run(&mut clients, cmd).await?,
        CtlCommand::Sync(cmd) => sync::run(&mut clients, cmd).await?,
        CtlCommand::Invite(args) => invitations::invite(&mut clients, args).await?,
        CtlCommand::Invitations(cmd) => invitations::run(&mut clients, cmd).await?,
        CtlCommand::Register(args) => invitations::register(&mut clients, args).await?,
        CtlCommand::Links(cmd) => invitations::links(&mut clients, cmd).await?,
    };
    println!("{}", rows.render(format));
    Ok(())
}

async fn credentials(
    auth: &mut AuthServiceClient<PeerChannel>,
    ctl: &Ctl,
) -> anyhow::Result<Option<String>> {
    if let Some(token) = &ctl.token {
        return Ok(Some(token.clone()));
    }
    if let (Some(email), Some(password)) = (&ctl.email, &ctl.password) {
        let pair = auth
            .login(pb::LoginRequest {
                login_email: email.clone(),
                password: password.clone(),
                org_id: String::new(),
            })
            .await
            .map_err(status)?
            .into_inner();
        return Ok(Some(pair.access_token));
    }
    if let (Some(id), Some(secret)) = (&ctl.client_id, &ctl.client_secret) {
        let pair = auth
            .issue_service_token(pb::IssueServiceTokenRequest {
                client_id: id.clone(),
                client_secret: secret.clone(),
            })
            .await
            .map_err(status)?
            .into_inner();
        return Ok(Some(pair.access_token));
    }
    Ok(None)
}

pub(crate) fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

fn mask(paths: &[(&str, bool)]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths
            .iter()
            .filter(|(_, set)| *set)
            .map(|(p, _)| (*p).to_owned())
            .collect(),
    })
}

const USER_COLUMNS: [&str; 8] = [
    "id",
    "state",
    "login_email",
    "contact_email",
    "name",
    "position",
    "department_id",
    "admin",
];

fn user_row(u: &pb::User) -> Vec<Value> {
    let state = pb::UserState::try_from(u.state)
        .map(|s| s.as_str_name().trim_start_matches("USER_STATE_").to_owned())
        .unwrap_or_default();
    vec![
        json!(u.id),
        json!(state),
        json!(u.login_email),
        json!(u.contact_email),
        json!(format!("{} {}", u.first_name, u.last_name).trim()),
        json!(u.position),
        json!(u.department_id),
        json!(u.admin),
    ]
}

fn users_rows(list: &[pb::User], next: String, total: i32) -> Rows {
    let mut rows = Rows::new(USER_COLUMNS.to_vec());
    rows.rows = list.iter().map(user_row).collect();
    rows.footer = vec![
        ("total_size", json!(total)),
        ("next_page_token", json!(next)),
    ];
    rows
}

fn one_user(u: &pb::User) -> Rows {
    Rows::one(USER_COLUMNS.to_vec(), user_row(u))
}

async fn org(c: &mut Clients, cmd: OrgCommand) -> anyhow::Result<Rows> {
    let org = match cmd {
        OrgCommand::Get => {
            c.identity
                .get_organization(c.request(pb::GetOrganizationRequest::default())?)
                .await
        }
        OrgCommand::Create {
            name,
            seat_limit,
            admin_email,
            admin_password,
            admin_first_name,
            admin_last_name,
        } => {
            let req = c.request(pb::CreateOrganizationRequest {
                display_name: name,
                seat_limit,
                settings: Some(pb::OrganizationSettings {
                    allow_everyone_to_invite: true,
                }),
                first_admin: Some(pb::NewAdmin {
                    login_email: admin_email,
                    first_name: admin_first_name,
                    last_name: admin_last_name,
                    password: admin_password,
                }),
            })?;
            c.identity.create_organization(req).await
        }
        OrgCommand::Update {
            name,
            seat_limit,
            allow_everyone_to_invite,
        } => {
            let req = c.request(pb::UpdateOrganizationRequest {
                organization: Some(pb::Organization {
                    display_name: name.clone().unwrap_or_default(),
                    seat_limit: seat_limit.unwrap_or_default(),
                    settings: Some(pb::OrganizationSettings {
                        allow_everyone_to_invite: allow_everyone_to_invite.unwrap_or_default(),
                    }),
                    ..Default::default()
                }),
                update_mask: mask(&[
                    ("display_name", name.is_some()),
                    ("seat_limit", seat_limit.is_some()),
                    (
                        "settings.allow_everyone_to_invite",
                        allow_everyone_to_invite.is_some(),
                    ),
                ]),
            })?;
            c.identity.update_organization(req).await
        }
    }
    .map_err(status)?
    .into_inner();
    Ok(Rows::one(
        vec![
            "id",
            "display_name",
            "seat_limit",
            "allow_everyone_to_invite",
        ],
        vec![
            json!(org.id),
            json!(org.display_name),
            json!(org.seat_limit),
            json!(org
                .settings
                .map(|s| s.allow_everyone_to_invite)
                .unwrap_or_default()),
        ],
    ))
}

async fn users(c: &mut Clients, cmd: UsersCommand) -> anyhow::Result<Rows> {
    Ok(match cmd {
        UsersCommand::List {
            filter,
            order_by,
            page_size,
            page_token,
        } => {
            let req = c.request(pb::ListUsersRequest {
                page_size,
                page_token,
                filter,
                order_by,
            })?;
            let r = c
                .identity
                .list_users(req)
                .await
                .map_err(status)?
                .into_inner();
            users_rows(&r.users, r.next_page_token, r.total_size)
        }
        UsersCommand::Get { id } => one_user(
            &c.identity
                .get_user(c.request(pb::GetUserRequest { id })?)
                .await
                .map_err(status)?
                .into_inner(),
        ),
        UsersCommand::Create {
            login_email,
            contact_email,
            first_name,
            last_name,
            position,
            department,
            admin,
            user_password,
        } => {
            let req = c.request(pb::CreateUserRequest {
                user: Some(pb::User {
                    login_email,
                    contact_email,
                    first_name,
                    last_name,
                    position,
                    department_id: department,
                    admin,
                    ..Default::default()
                }),
                password: user_password.unwrap_or_default(),
            })?;
            one_user(
                &c.identity
                    .create_user(req)
                    .await
                    .map_err(status)?
                    .into_inner(),
            )
        }
        UsersCommand::Update {
            id,
            first_name,
            last_name,
            position,
            department,
            contact_email,
        } => {
            let update_mask = mask(&[
                ("first_name", first_name.is_some()),
                ("last_name", last_name.is_some()),
                ("position", position.is_some()),
                ("department_id", department.is_some()),
                ("contact_email", contact_email.is_some()),
            ]);
            let req = c.request(pb::UpdateUserRequest {
                user: Some(pb::User {
                    id,
                    first_name: first_name.unwrap_or_default(),
                    last_name: last_name.unwrap_or_default(),
                    position: position.unwrap_or_default(),
                    department_id: department.unwrap_or_default(),
                    contact_email: contact_email.unwrap_or_default(),
                    ..Default::default()
                }),
                update_mask,
            })?;
            one_user(
                &c.identity
                    .update_user(req)
                    .await
                    .map_err(status)?
                    .into_inner(),
            )
        }
        UsersCommand::Dismiss { id } => one_user(
            &c.identity
                .dismiss_user(c.request(pb::DismissUserRequest { id })?)
                .await
                .map_err(status)?
                .into_inner(),
        ),
        UsersCommand::SendPasswordReset { id } => {
            c.identity
                .send_password_reset_link(c.request(pb::SendPasswordResetLinkRequest {
                    user_id: id.clone(),
                })?)
                .await
                .map_err(status)?;
            Rows::one(vec!["reset_link_sent_to"], vec![json!(id)])
        }
        UsersCommand::SignOut { id } => {
            let user_id = id.unwrap_or_default();
            c.auth
                .sign_out_everywhere(c.request(pb::SignOutEverywhereRequest {
                    user_id: user_id.clone(),
                })?)
                .await
                .map_err(status)?;
            Rows::one(
                vec!["signed_out"],
                vec![json!(if user_id.is_empty() {
                    "you".to_owned()
                } else {
                    user_id
                })],
            )
        }
        UsersCommand::Rehire { id } => one_user(
            &c.identity
                .rehire_user(c.request(pb::RehireUserRequest { id })?)
                .await
                .map_err(status)?
                .into_inner(),
        ),
        UsersCommand::SetAdmin { id, admin } => one_user(
            &c.identity
                .set_admin(c.request(pb::SetAdminRequest { id, admin })?)
                .await
                .map_err(status)?
                .into_inner(),
        ),
        UsersCommand::Subordinates { id } => {
            let req = c.request(pb::ListSubordinatesRequest {
                user_id: id,
                page_size: 1000,
                page_token: String::new(),
            })?;
            let r = c
                .identity
                .list_subordinates(req)
                .await
                .map_err(status)?
                .into_inner();
            users_rows(&r.users, r.next_page_token, r.total_size)
        }
        UsersCommand::Supervisors { id } => {
            let r = c
                .identity
                .list_supervisors(c.request(pb::ListSupervisorsRequest { user_id: id })?)
                .await
                .map_err(status)?
                .into_inner();
            let mut rows = Rows::new(USER_COLUMNS.to_vec());
            rows.rows = r.supervisors.iter().map(user_row).collect();
            rows
        }
    })
}

const DEPARTMENT_COLUMNS: [&str; 4] = ["id", "name", "parent_id", "head_user_id"];

fn department_row(d: &pb::Department) -> Vec<Value> {
    vec![
        json!(d.id),
        json!(d.name),
        json!(d.parent_id),
        json!(d.head_user_id),
    ]
}

async fn departments(c: &mut Clients, cmd: DepartmentsCommand) -> anyhow::Result<Rows> {
    let one = |d: pb::Department| Rows::one(DEPARTMENT_COLUMNS.to_vec(), department_row(&d));
    Ok(match cmd {
        DepartmentsCommand::List { filter } => {
            let req = c.request(pb::ListDepartmentsRequest {
                page_size: 1000,
                page_token: String::new(),
                filter,
            })?;
            let r = c
                .identity
                .list_departments(req)
                .await
                .map_err(status)?
                .into_inner();
            let mut rows = Rows::new(DEPARTMENT_COLUMNS.to_vec());
            rows.rows = r.departments.iter().map(department_row).collect();
            rows.footer = vec![("next_page_token", json!(r.next_page_token))];
            rows
        }
        DepartmentsCommand::Create { name, parent, head } => {
            let req = c.request(pb::CreateDepartmentRequest {
                department: Some(pb::Department {
                    name,
                    parent_id: parent,
                    head_user_id: head,
                    ..Default::default()
                }),
            })?;
            one(c
                .identity
                .create_department(req)
                .await
                .map_err(status)?
                .into_inner())
        }
        DepartmentsCommand::Update {
            id,
            name,
            parent,
            head,
        } => {
            let update_mask = mask(&[
                ("name", name.is_some()),
                ("parent_id", parent.is_some()),
                ("head_user_id", head.is_some()),
            ]);
            let req = c.request(pb::UpdateDepartmentRequest {
                department: Some(pb::Department {
                    id,
                    name: name.unwrap_or_default(),
                    parent_id: parent.unwrap_or_default(),
                    head_user_id: head.unwrap_or_default(),
                    ..Default::default()
                }),
                update_mask,
            })?;
            one(c
                .identity
                .update_department(req)
                .await
                .map_err(status)?
                .into_inner())
        }
        DepartmentsCommand::Delete { id } => {
            c.identity
                .delete_department(c.request(pb::DeleteDepartmentRequest { id: id.clone() })?)
                .await
                .map_err(status)?;
            Rows::one(vec!["deleted"], vec![json!(id)])
        }
    })
}

async fn address(c: &mut Clients, cmd: AddressCommand) -> anyhow::Result<Rows> {
    Ok(match cmd {
        AddressCommand::Usage { address } => {
            let r = c
                .identity
                .get_email_address_usage(c.request(pb::GetEmailAddressUsageRequest { address })?)
                .await
                .map_err(status)?
                .into_inner();
            let mut rows = Rows::new(vec!["address", "use", "user_id", "user", "user_state"]);
            rows.rows = r
                .uses
                .iter()
                .map(|u| {
                    let kind = pb::AddressUseKind::try_from(u.kind)
                        .map(|k| {
                            k.as_str_name()
                                .trim_start_matches("ADDRESS_USE_KIND_")
                                .to_owned()
                        })
                        .unwrap_or_default();
                    let state = pb::UserState::try_from(u.user_state)
                        .map(|s| s.as_str_name().trim_start_matches("USER_STATE_").to_owned())
                        .unwrap_or_default();
                    vec![
                        json!(r.address),
                        json!(kind),
                        json!(u.user_id),
                        json!(u.user_display_name),
                        json!(state),
                    ]
                })
                .collect();
            rows
        }
        AddressCommand::Transfer {
            address,
            from,
            to,
            release,
            r#as,
        } => {
            let destination = match (to, release) {
                (Some(to), false) => pb::transfer_email_address_request::Destination::ToUserId(to),
                (None, true) => pb::transfer_email_address_request::Destination::Release(true),
                _ => bail!("give --to USER_ID or --release"),
            };
            let as_kind = match r#as.as_str() {
                "login" => pb::AddressUseKind::Login,
                "contact" => pb::AddressUseKind::Contact,
                other => bail!("--as is login or contact, not `{other}`"),
            };
            let r = c
                .identity
                .transfer_email_address(c.request(pb::TransferEmailAddressRequest {
                    address,
                    from_user_id: from,
                    destination: Some(destination),
                    as_kind: as_kind as i32,
                })?)
                .await
                .map_err(status)?
                .into_inner();
            let mut rows = Rows::new(USER_COLUMNS.to_vec());
            rows.rows = r
                .from_user
                .iter()
                .chain(r.to_user.iter())
                .map(user_row)
                .collect();
            rows
        }
    })
}

async fn login_change(c: &mut Clients, cmd: LoginChangeCommand) -> anyhow::Result<Rows> {
    Ok(match cmd {
        LoginChangeCommand::Request { new_login_email } => {
            let r = c
                .identity
                .request_login_email_change(
                    c.request(pb::RequestLoginEmailChangeRequest { new_login_email })?,
                )
                .await
                .map_err(status)?
                .into_inner();
            let expires = r.expire_time.map(|t| t.seconds).unwrap_or_default();
            let at = chrono::DateTime::from_timestamp(expires, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            Rows::one(vec!["code_sent", "expires"], vec![json!(true), json!(at)])
        }
        LoginChangeCommand::Confirm { code } => one_user(
            &c.identity
                .confirm_login_email_change(c.request(pb::ConfirmLoginEmailChangeRequest { code })?)
                .await
                .map_err(status)?
                .into_inner(),
        ),
    })
}
