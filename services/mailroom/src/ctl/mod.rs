//! `mailroom ctl`: the admin CLI over the gRPC APIs.
//!
//! Credentials, first found wins: `--token`/`MAILROOM_TOKEN`; `--email` and `--password`
//! (`MAILROOM_EMAIL`, `MAILROOM_PASSWORD`) to sign in on the fly; `--client-id` and
//! `--client-secret` (`MAILROOM_CLIENT_ID`, `MAILROOM_CLIENT_SECRET`) for service tokens, one
//! per service: the operator's credential (client `operator`), which creating organisations,
//! changing their plans, resealing mailbox passwords and the event operations need.
//!
//! Contexts ([`context`], `ctl config …` in [`config`]): one file naming each deployment's
//! endpoints, TLS files and operator credential; `--context`/`MAILROOM_CONTEXT` or the file's
//! current context picks one, and any flag or variable given overrides it — except that a
//! context's secret is not sent to an identity endpoint that replaced the context's, nor any
//! password or secret over `http://` to another machine, unless allowed ([`outbound`]).
//! `-o table|json|yaml`
//! picks the output ([`crate::output`]); the exit status tells a denial, a refusal, a missing
//! thing and an unreachable service apart ([`exit`]).
//!
//! One module per service's commands ([`identity`], [`access`], [`mailboxes`], [`sync`],
//! [`invitations`]), and [`events`] for every service's dead letters and parked events, over
//! one core: the command line and its dispatch (here), the [`Clients`]
//! that carry the credentials ([`clients`]), and [`Rows`](crate::output::Rows) that print as a
//! table or JSON ([`crate::output`]).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::output::Format;

pub mod access;
mod clients;
pub mod config;
pub mod context;
pub mod events;
pub mod exit;
pub mod identity;
pub mod invitations;
pub mod mailboxes;
pub mod outbound;
pub mod sync;

pub(crate) use clients::{Answer, Clients, Credentials, EndpointArgs, Endpoints};

#[derive(Args)]
pub struct Ctl {
    /// The context (from the contexts file) to run in [default: the file's current-context].
    #[arg(long, env = context::CONTEXT_ENV, global = true)]
    context: Option<String>,
    #[command(flatten)]
    endpoints: EndpointArgs,
    #[command(flatten)]
    credentials: Credentials,
    #[command(flatten)]
    tls: TlsArgs,
    /// Send the context's client secret to identity even when --endpoint or
    /// MAILROOM_IDENTITY_ENDPOINT replaces the context's identity endpoint.
    #[arg(long, global = true)]
    allow_endpoint_override: bool,
    /// Send a password or client secret over plaintext http:// to a host other than this
    /// machine (only where every network in between is trusted).
    #[arg(long, global = true)]
    insecure: bool,
    /// table (for people), json or yaml (for scripts: `{"kind", "items"}` for a list, the
    /// object for one resource).
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
    /// Contexts: list, show the current one, switch, view the file (secrets redacted).
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

// TLS files for `https://` endpoints; each given overrides the context's `tls` key. (A plain
// comment, as for `Paging`.)
#[derive(Args)]
struct TlsArgs {
    /// PEM CA bundle the services' certificates chain to [default: the context's, else the
    /// public web roots].
    #[arg(
        long,
        env = "MAILROOM_GRPC_TLS__CA_FILE",
        global = true,
        value_name = "PATH"
    )]
    tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for services that require mutual TLS.
    #[arg(
        long,
        env = "MAILROOM_GRPC_TLS__CERT_FILE",
        global = true,
        value_name = "PATH"
    )]
    tls_cert_file: Option<PathBuf>,
    /// The client certificate's PEM private key.
    #[arg(
        long,
        env = "MAILROOM_GRPC_TLS__KEY_FILE",
        global = true,
        value_name = "PATH"
    )]
    tls_key_file: Option<PathBuf>,
    /// The name the services' certificates are checked against instead of the endpoint's host
    /// (e.g. identity.mailroom.example for https://localhost:50051 through a port-forward)
    /// [default: the context's tls.server-name, else the endpoint's host].
    #[arg(long, global = true, value_name = "NAME")]
    tls_server_name: Option<String>,
}

impl TlsArgs {
    /// The TLS files and server name: each flag or variable, else the context's; `None` when
    /// neither names any.
    fn resolve(
        &self,
        selected: Option<&context::Selected<'_>>,
    ) -> Result<Option<mailroom_clients::ClientTls>, context::ContextError> {
        let from_context = |pick: fn(&context::ContextTls) -> &Option<PathBuf>| {
            selected.and_then(|s| pick(&s.context.tls).as_deref().map(|p| s.path(p)))
        };
        let ca = self
            .tls_ca_file
            .clone()
            .or_else(|| from_context(|t| &t.ca_file));
        let cert = self
            .tls_cert_file
            .clone()
            .or_else(|| from_context(|t| &t.cert_file));
        let key = self
            .tls_key_file
            .clone()
            .or_else(|| from_context(|t| &t.key_file));
        let server_name = match &self.tls_server_name {
            Some(name) => Some(checked_server_name(name, "--tls-server-name")?),
            None => match selected {
                Some(s) => s
                    .context
                    .tls
                    .server_name
                    .as_deref()
                    .map(|name| {
                        checked_server_name(
                            name,
                            &format!("{} in {}", s.key("tls.server-name"), s.file_shown()),
                        )
                    })
                    .transpose()?,
                None => None,
            },
        };
        if ca.is_none() && cert.is_none() && key.is_none() && server_name.is_none() {
            return Ok(None);
        }
        let origin = match selected {
            Some(s) => format!(
                "--tls-ca-file/--tls-cert-file/--tls-key-file or {} in {}",
                s.key("tls"),
                s.file_shown()
            ),
            None => "--tls-ca-file/--tls-cert-file/--tls-key-file".to_owned(),
        };
        let mut tls =
            mailroom_clients::ClientTls::from_files(ca.as_deref(), cert.as_deref(), key.as_deref())
                .map_err(|error| context::ContextError::Tls { origin, error })?;
        tls.domain_name = server_name;
        Ok(Some(tls))
    }
}

/// A TLS server name as given (`origin` says where): a host name or address, without scheme,
/// port or path.
fn checked_server_name(name: &str, origin: &str) -> Result<String, context::ContextError> {
    let name = name.trim();
    let usable = !name.is_empty()
        && !name.contains("://")
        && !name.contains('/')
        && !name.chars().any(char::is_whitespace);
    if usable {
        Ok(name.to_owned())
    } else {
        Err(context::ContextError::ServerName {
            origin: origin.to_owned(),
        })
    }
}

/// The contexts file, from the environment.
fn contexts_file() -> Result<context::ConfigFile, context::ContextError> {
    context::ConfigFile::load(context::config_path(|name| std::env::var(name).ok()))
}

/// A warning about the ctl configuration, on stderr.
fn warn(message: String) {
    eprintln!("warning: {message}");
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
    let Ctl {
        context: requested,
        endpoints: endpoint_args,
        mut credentials,
        tls,
        allow_endpoint_override,
        insecure,
        output: format,
        command,
    } = ctl;
    let file = contexts_file()?;
    let command = match command {
        CtlCommand::Config(cmd) => {
            println!("{}", config::run(file, cmd, requested.as_deref(), format)?);
            return Ok(());
        }
        command => command,
    };
    let selected = file.select(requested.as_deref())?;
    let endpoints = endpoint_args.resolve(selected.as_ref().map(|s| &s.context.endpoints));
    let mut secret_from_context = false;
    if let Some(selected) = &selected {
        if credentials.wants_client_secret() {
            let credential = selected.client_credential(|name| std::env::var(name).ok(), warn)?;
            if let Some((id, secret)) = credential {
                credentials.fill_client(id, &secret);
                secret_from_context = true;
            }
        }
    }
    let mut settings = mailroom_clients::Settings::for_operator();
    settings.tls = tls.resolve(selected.as_ref())?;
    let given = endpoint_args.given(selected.as_ref());
    let given: Vec<(&str, &str)> = given
        .iter()
        .map(|(o, e)| (o.as_str(), e.as_str()))
        .collect();
    if let Some(warning) = outbound::plaintext_despite_tls(settings.tls.is_some(), &given) {
        warn(warning);
    }
    let context_identity = selected.as_ref().map(|s| {
        let identity = s.context.endpoints.identity.clone();
        (
            s.name,
            identity.unwrap_or_else(mailroom_platform::config::local::identity),
        )
    });
    let sending = outbound::Sending {
        identity: endpoints.identity(),
        secret: credentials.sent_secret(),
        from_context: context_identity
            .as_ref()
            .filter(|_| secret_from_context)
            .map(|(name, identity)| outbound::CredentialContext { name, identity }),
    };
    let allowed = outbound::Allowed {
        endpoint_override: allow_endpoint_override,
        insecure,
    };
    outbound::check(&sending, allowed)?;
    let mut clients = Clients::connect(&endpoints, &credentials, &settings).await?;
    let rows = match command {
        CtlCommand::Login => {
            let token = clients
                .token()
                .context("give --email and --password (or MAILROOM_EMAIL/MAILROOM_PASSWORD)")?;
            match format {
                Format::Table => println!("{token}"),
                Format::Json | Format::Yaml => {
                    println!("{}", format.document(&json!({ "access_token": token })))
                }
            }
            return Ok(());
        }
        CtlCommand::Jwks => {
            let jwks = identity::jwks(&mut clients).await?;
            match serde_json::from_str::<serde_json::Value>(&jwks) {
                Ok(value) if format != Format::Table => println!("{}", format.document(&value)),
                _ => println!("{jwks}"),
            }
            return Ok(());
        }
        CtlCommand::Access(access::AccessCommand::Check(args)) => {
            let fail_on_deny = args.fail_on_deny;
            let checked = access::check(&mut clients, args).await?;
            println!("{}", checked.rows.render(format));
            if fail_on_deny && !checked.allowed {
                return Err(exit::Denied.into());
            }
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
        CtlCommand::Config(_) => anyhow::bail!("ctl config runs before connecting"),
    };
    println!("{}", rows.render(format));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contexts(text: &str) -> context::ConfigFile {
        let dir = std::env::temp_dir().join(format!("mailroom-ctl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl.yaml");
        std::fs::write(&path, text).unwrap();
        context::ConfigFile::load(Some(path)).unwrap()
    }

    fn tls_args(server_name: Option<&str>) -> TlsArgs {
        TlsArgs {
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_server_name: server_name.map(str::to_owned),
        }
    }

    #[test]
    fn the_server_name_reaches_the_channels_tls_from_the_context_or_the_flag() {
        let file = contexts(
            "contexts:\n  fwd:\n    endpoints:\n      identity: https://localhost:50051\n    tls:\n      server-name: identity.mailroom.example\n  plain: {}\n",
        );
        let fwd = file.select(Some("fwd")).unwrap();
        let tls = tls_args(None).resolve(fwd.as_ref()).unwrap().unwrap();
        assert_eq!(
            tls.domain_name.as_deref(),
            Some("identity.mailroom.example")
        );
        assert_eq!(
            tls.ca_pem, None,
            "a server name alone keeps the public roots"
        );
        assert_eq!(tls.server_name("localhost"), "identity.mailroom.example");

        let flag = tls_args(Some("mailroom.internal"));
        let tls = flag.resolve(fwd.as_ref()).unwrap().unwrap();
        assert_eq!(
            tls.domain_name.as_deref(),
            Some("mailroom.internal"),
            "the flag wins"
        );

        let plain = file.select(Some("plain")).unwrap();
        assert!(tls_args(None).resolve(plain.as_ref()).unwrap().is_none());
        assert!(tls_args(None).resolve(None).unwrap().is_none());
    }

    #[test]
    fn a_server_name_that_is_a_url_is_refused_naming_where_it_was_set() {
        let file = contexts(
            "contexts:\n  fwd:\n    tls:\n      server-name: https://identity.mailroom.example:50051\n",
        );
        let fwd = file.select(Some("fwd")).unwrap();
        let err = tls_args(None)
            .resolve(fwd.as_ref())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("contexts.fwd.tls.server-name") && err.contains("without scheme"),
            "{err}"
        );
        let err = tls_args(Some("")).resolve(None).unwrap_err().to_string();
        assert!(err.contains("--tls-server-name"), "{err}");
        // An address is a name a certificate may carry.
        let tls = tls_args(Some("10.0.0.7")).resolve(None).unwrap().unwrap();
        assert_eq!(tls.domain_name.as_deref(), Some("10.0.0.7"));
    }
}
