//! `mailroom ctl`: the admin CLI over the gRPC APIs.
//!
//! Credentials, first found wins: `--token`/`MAILROOM_TOKEN`; `--email` and `--password`
//! (`MAILROOM_EMAIL`, `MAILROOM_PASSWORD`) to sign in on the fly; `--client-id` and
//! `--client-secret` (`MAILROOM_CLIENT_ID`, `MAILROOM_CLIENT_SECRET`) for service tokens, one
//! per service: the operator's credential (client `operator`), which creating organisations,
//! changing their plans, resealing mailbox passwords and the event operations need.
//!
//! One module per service's commands ([`identity`], [`access`], [`mailboxes`], [`sync`],
//! [`invitations`]), and [`events`] for every service's dead letters and parked events, over
//! one core: the command line and its dispatch (here), the [`Clients`]
//! that carry the credentials ([`clients`]), and [`Rows`](crate::output::Rows) that print as a
//! table or JSON ([`crate::output`]).

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::output::Format;

pub mod access;
mod clients;
pub mod events;
pub mod identity;
pub mod invitations;
pub mod mailboxes;
pub mod sync;

pub(crate) use clients::{Answer, Clients, Credentials, Endpoints};

#[derive(Args)]
pub struct Ctl {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(flatten)]
    credentials: Credentials,
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
    Org(identity::OrgCommand),
    /// Users.
    #[command(subcommand)]
    Users(identity::users::UsersCommand),
    /// Departments.
    #[command(subcommand)]
    Departments(identity::DepartmentsCommand),
    /// Where an address is used, and moving it.
    #[command(subcommand)]
    Address(identity::AddressCommand),
    /// Change your own login address.
    #[command(subcommand)]
    LoginChange(identity::LoginChangeCommand),
    /// The public keys that verify access tokens.
    Jwks,
    /// Access control: check, grant and revoke read access, list, roles.
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
    /// A service's event path (operator): dead letters (list, show, replay) and parked outbox
    /// events (list, retry).
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Quick-registration links: create, list, disable, join.
    #[command(subcommand)]
    Links(invitations::LinksCommand),
}

// Which page of a long list: its order, size and the token of the page before. (A plain
// comment: a flattened struct's doc comment would become the help of a command without one.)
#[derive(Args)]
pub struct Paging {
    #[arg(long, default_value = "")]
    order_by: String,
    #[arg(long, default_value_t = 50)]
    page_size: i32,
    #[arg(long, default_value = "")]
    page_token: String,
}

pub async fn run(ctl: Ctl) -> anyhow::Result<()> {
    if let CtlCommand::Access(cmd) = &ctl.command {
        access::refuse_removed(cmd)?;
    }
    let settings = mailroom_clients::Settings::for_operator();
    let mut clients = Clients::connect(&ctl.endpoints, &ctl.credentials, &settings).await?;
    let format = ctl.output;
    let rows = match ctl.command {
        CtlCommand::Login => {
            let token = clients
                .token()
                .context("give --email and --password (or MAILROOM_EMAIL/MAILROOM_PASSWORD)")?;
            if format == Format::Json {
                println!("{}", json!({ "access_token": token }));
            } else {
                println!("{token}");
            }
            return Ok(());
        }
        CtlCommand::Jwks => {
            println!("{}", identity::jwks(&mut clients).await?);
            return Ok(());
        }
        CtlCommand::Org(cmd) => identity::org(&mut clients, cmd).await?,
        CtlCommand::Users(cmd) => identity::users::run(&mut clients, cmd).await?,
        CtlCommand::Departments(cmd) => identity::departments(&mut clients, cmd).await?,
        CtlCommand::Address(cmd) => identity::address(&mut clients, cmd).await?,
        CtlCommand::LoginChange(cmd) => identity::login_change(&mut clients, cmd).await?,
        CtlCommand::Access(cmd) => access::run(&mut clients, cmd).await?,
        CtlCommand::Mailboxes(cmd) => mailboxes::run(&mut clients, cmd).await?,
        CtlCommand::Sync(cmd) => sync::run(&mut clients, cmd).await?,
        CtlCommand::Invite(args) => invitations::invite(&mut clients, args).await?,
        CtlCommand::Invitations(cmd) => invitations::run(&mut clients, cmd).await?,
        CtlCommand::Register(args) => invitations::register(&mut clients, args).await?,
        CtlCommand::Links(cmd) => invitations::links(&mut clients, cmd).await?,
        CtlCommand::Events(cmd) => events::run(&mut clients, cmd).await?,
    };
    println!("{}", rows.render(format));
    Ok(())
}
