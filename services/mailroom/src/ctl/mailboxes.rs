//! `mailroom ctl mailboxes`: the "Manage user mailboxes" screen in a terminal — the list with
//! chosen columns, filter and sort; connect one or many (from a CSV); edit, sync now,
//! transfer, disconnect; the saved list view; and the operator's credential-key rotation.
//! The list and the saved view are [`list`]'s.
//!
//! Passwords come from an environment variable or a file, never from a flag (a flag shows in
//! `ps` and in shell history).

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use mailroom_platform::proto::mailboxes::v1 as mpb;
use serde_json::json;

use super::identity::users::resolve_user;
use super::{Answer, Clients};
use crate::output::{short_name, time, Clock, Rows};

mod list;

#[derive(Subcommand)]
pub enum MailboxesCommand {
    /// The list the admin sees.
    List(list::ListArgs),
    Get {
        id: String,
    },
    /// Connect one mailbox (the IMAP and SMTP logins are checked first).
    Connect {
        #[arg(long)]
        email: String,
        /// The owner's id or address (default: you).
        #[arg(long, default_value = "")]
        owner: String,
        #[command(flatten)]
        servers: Servers,
        #[command(flatten)]
        password: Password,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        sender_name: String,
        #[arg(long)]
        in_crm: bool,
        /// Check the logins only; save nothing.
        #[arg(long)]
        validate_only: bool,
    },
    /// Connect many mailboxes of one domain from a CSV: email,password[,owner][,name][,sender_name]
    /// (a header line starting with `email` is skipped).
    ConnectMany {
        #[arg(long)]
        csv: std::path::PathBuf,
        #[command(flatten)]
        servers: Servers,
        #[arg(long)]
        validate_only: bool,
    },
    /// Change a mailbox's names, servers, password or CRM flag.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        sender_name: Option<String>,
        /// New IMAP server, host:port (with --imap-security).
        #[arg(long)]
        imap: Option<String>,
        #[arg(long, value_enum, default_value_t = SecurityArg::Tls)]
        imap_security: SecurityArg,
        #[arg(long)]
        smtp: Option<String>,
        #[arg(long, value_enum, default_value_t = SecurityArg::Tls)]
        smtp_security: SecurityArg,
        /// Read a new password from MAILROOM_MAILBOX_PASSWORD or --password-file.
        #[arg(long)]
        new_password: bool,
        #[command(flatten)]
        password: Password,
        #[arg(long)]
        in_crm: Option<bool>,
    },
    SyncNow {
        id: String,
    },
    Transfer {
        id: String,
        /// The new owner's id or address.
        #[arg(long)]
        to: String,
    },
    Disconnect {
        id: String,
    },
    /// Your saved list view.
    #[command(subcommand)]
    View(list::ViewCommand),
    /// Re-seal every stored password under the newest configured key (service credential).
    RotateKey {
        #[arg(long, default_value_t = 500)]
        batch_size: i32,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SecurityArg {
    Tls,
    Starttls,
    None,
}

impl SecurityArg {
    fn proto(self) -> i32 {
        match self {
            SecurityArg::Tls => mpb::Security::Tls as i32,
            SecurityArg::Starttls => mpb::Security::Starttls as i32,
            SecurityArg::None => mpb::Security::None as i32,
        }
    }
}

#[derive(Args)]
pub struct Servers {
    /// IMAP server, host:port.
    #[arg(long)]
    imap: String,
    #[arg(long, value_enum, default_value_t = SecurityArg::Tls)]
    imap_security: SecurityArg,
    /// SMTP server, host:port.
    #[arg(long)]
    smtp: String,
    #[arg(long, value_enum, default_value_t = SecurityArg::Tls)]
    smtp_security: SecurityArg,
}

#[derive(Args)]
pub struct Password {
    /// The mailbox password (or --password-file).
    #[arg(
        long = "mailbox-password-env-only",
        hide = true,
        env = "MAILROOM_MAILBOX_PASSWORD",
        hide_env_values = true
    )]
    from_env: Option<String>,
    /// A file holding the mailbox password (its first line).
    #[arg(long)]
    password_file: Option<std::path::PathBuf>,
}

impl Password {
    fn read(&self) -> anyhow::Result<String> {
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(text.lines().next().unwrap_or_default().to_owned());
        }
        self.from_env
            .clone()
            .context("give the mailbox password in MAILROOM_MAILBOX_PASSWORD or --password-file")
    }
}

fn server(addr: &str, security: SecurityArg) -> anyhow::Result<mpb::ServerSettings> {
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<i32>()
                .with_context(|| format!("{addr}: the port is not a number"))?,
        ),
        None => (addr, 0),
    };
    Ok(mpb::ServerSettings {
        host: host.to_owned(),
        port,
        security: security.proto(),
        username: String::new(),
    })
}

const DETAIL: [&str; 10] = [
    "id",
    "email",
    "owner",
    "name",
    "sender_name",
    "imap",
    "smtp",
    "sync_state",
    "in_crm",
    "access_by",
];

fn detail(m: &mpb::Mailbox) -> Rows {
    let server = |s: &Option<mpb::ServerSettings>| {
        s.as_ref()
            .map(|s| format!("{}:{} ({})", s.host, s.port, security_name(s.security)))
            .unwrap_or_default()
    };
    Rows::one(
        DETAIL.to_vec(),
        vec![
            json!(m.id),
            json!(m.email),
            json!(owner_cell(m)),
            json!(m.name),
            json!(m.sender_name),
            json!(server(&m.imap)),
            json!(server(&m.smtp)),
            json!(state_name(m)),
            json!(m.crm.as_ref().is_some_and(|c| c.in_crm)),
            json!(m.access_by_user_ids.join(" ")),
        ],
    )
}

fn security_name(value: i32) -> &'static str {
    match mpb::Security::try_from(value).unwrap_or(mpb::Security::Unspecified) {
        mpb::Security::None => "none",
        mpb::Security::Starttls => "starttls",
        _ => "tls",
    }
}

fn state_name(m: &mpb::Mailbox) -> String {
    let state = short_name(
        mpb::SyncState::try_from(m.sync_state)
            .ok()
            .map(|s| s.as_str_name()),
        "SYNC_STATE_",
    );
    if m.sync_error.is_empty() {
        state
    } else {
        format!("{state}: {}", m.sync_error)
    }
}

fn owner_cell(m: &mpb::Mailbox) -> String {
    if m.owner_dismissed {
        format!("{} (dismissed)", m.owner_display_name)
    } else {
        m.owner_display_name.clone()
    }
}

pub async fn run(c: &mut Clients, cmd: MailboxesCommand) -> anyhow::Result<Rows> {
    match cmd {
        MailboxesCommand::List(args) => list::list(c, args).await,
        MailboxesCommand::View(cmd) => list::view(c, cmd).await,
        MailboxesCommand::Get { id } => {
            let request = c.request(mpb::GetMailboxRequest { id });
            let m = c.mailboxes.get_mailbox(request).await.answer()?;
            Ok(detail(&m))
        }
        MailboxesCommand::Connect {
            email,
            owner,
            servers,
            password,
            name,
            sender_name,
            in_crm,
            validate_only,
        } => {
            let owner = if owner.is_empty() {
                owner
            } else {
                resolve_user(c, &owner).await?
            };
            let request = c.request(mpb::ConnectMailboxRequest {
                mailbox: Some(mpb::Mailbox {
                    email,
                    owner_user_id: owner,
                    name,
                    sender_name,
                    imap: Some(server(&servers.imap, servers.imap_security)?),
                    smtp: Some(server(&servers.smtp, servers.smtp_security)?),
                    crm: Some(mpb::CrmSettings {
                        in_crm,
                        queue_user_ids: Vec::new(),
                    }),
                    ..Default::default()
                }),
                password: password.read()?,
                validate_only,
            });
            let m = c.mailboxes.connect_mailbox(request).await.answer()?;
            Ok(detail(&m))
        }
        MailboxesCommand::ConnectMany {
            csv,
            servers,
            validate_only,
        } => {
            let text = std::fs::read_to_string(&csv)
                .with_context(|| format!("cannot read {}", csv.display()))?;
            let mut mailboxes = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let fields: Vec<&str> = line.split(',').map(str::trim).collect();
                if line.trim().is_empty() || (n == 0 && fields[0].eq_ignore_ascii_case("email")) {
                    continue;
                }
                if fields.len() < 2 {
                    bail!(
                        "{}:{}: expected email,password[,owner][,name][,sender_name]",
                        csv.display(),
                        n + 1
                    );
                }
                let owner = match fields.get(2).filter(|o| !o.is_empty()) {
                    Some(o) => resolve_user(c, o).await?,
                    None => String::new(),
                };
                mailboxes.push(mpb::MailboxCredentials {
                    email: fields[0].to_owned(),
                    password: fields[1].to_owned(),
                    owner_user_id: owner,
                    name: fields.get(3).copied().unwrap_or_default().to_owned(),
                    sender_name: fields.get(4).copied().unwrap_or_default().to_owned(),
                });
            }
            let request = c.request(mpb::ConnectMailboxesRequest {
                imap: Some(server(&servers.imap, servers.imap_security)?),
                smtp: Some(server(&servers.smtp, servers.smtp_security)?),
                mailboxes,
                validate_only,
            });
            let results = c
                .mailboxes
                .connect_mailboxes(request)
                .await
                .answer()?
                .results;
            let mut rows = Rows::new("connect_results", vec!["email", "connected", "id", "error"]);
            rows.rows = results
                .iter()
                .map(|r| {
                    vec![
                        json!(r.email),
                        json!(r.mailbox.is_some()),
                        json!(r.mailbox.as_ref().map(|m| m.id.clone()).unwrap_or_default()),
                        json!(r.error),
                    ]
                })
                .collect();
            let ok = results.iter().filter(|r| r.mailbox.is_some()).count();
            rows.footer = vec![
                ("connected", json!(ok)),
                ("failed", json!(results.len() - ok)),
            ];
            Ok(rows)
        }
        MailboxesCommand::Update {
            id,
            name,
            sender_name,
            imap,
            imap_security,
            smtp,
            smtp_security,
            new_password,
            password,
            in_crm,
        } => {
            let mut paths = Vec::new();
            let mut mailbox = mpb::Mailbox {
                id,
                ..Default::default()
            };
            if let Some(n) = name {
                mailbox.name = n;
                paths.push("name".to_owned());
            }
            if let Some(n) = sender_name {
                mailbox.sender_name = n;
                paths.push("sender_name".to_owned());
            }
            if let Some(addr) = imap {
                mailbox.imap = Some(server(&addr, imap_security)?);
                paths.push("imap".to_owned());
            }
            if let Some(addr) = smtp {
                mailbox.smtp = Some(server(&addr, smtp_security)?);
                paths.push("smtp".to_owned());
            }
            if let Some(flag) = in_crm {
                mailbox.crm = Some(mpb::CrmSettings {
                    in_crm: flag,
                    queue_user_ids: Vec::new(),
                });
                paths.push("crm".to_owned());
            }
            let secret = if new_password {
                paths.push("password".to_owned());
                password.read()?
            } else {
                String::new()
            };
            if paths.is_empty() {
                bail!("say what to change: --name, --sender-name, --imap, --smtp, --new-password or --in-crm");
            }
            let moving = paths.iter().any(|p| p == "imap" || p == "smtp");
            let request = c.request(mpb::UpdateMailboxRequest {
                mailbox: Some(mailbox),
                update_mask: Some(prost_types::FieldMask { paths }),
                password: secret,
            });
            let m = c
                .mailboxes
                .update_mailbox(request)
                .await
                .answer()
                .map_err(|e| {
                    if moving && !new_password {
                        e.context(
                            "moving a server needs the mailbox password again: add --new-password",
                        )
                    } else {
                        e
                    }
                })?;
            Ok(detail(&m))
        }
        MailboxesCommand::SyncNow { id } => {
            let request = c.request(mpb::SyncMailboxNowRequest { id: id.clone() });
            let queued = c.mailboxes.sync_mailbox_now(request).await.answer()?;
            let at = time(queued.queued_time.as_ref(), Clock::Rfc3339);
            Ok(Rows::one(vec!["id", "queued"], vec![json!(id), json!(at)]))
        }
        MailboxesCommand::Transfer { id, to } => {
            let to = resolve_user(c, &to).await?;
            let request = c.request(mpb::TransferMailboxRequest {
                id,
                new_owner_user_id: to,
            });
            let m = c.mailboxes.transfer_mailbox(request).await.answer()?;
            Ok(detail(&m))
        }
        MailboxesCommand::Disconnect { id } => {
            let request = c.request(mpb::DisconnectMailboxRequest { id: id.clone() });
            c.mailboxes.disconnect_mailbox(request).await.answer()?;
            Ok(Rows::one(
                vec!["id", "disconnected"],
                vec![json!(id), json!(true)],
            ))
        }
        MailboxesCommand::RotateKey { batch_size } => {
            let mut total = 0;
            loop {
                let request = c.request(mpb::ResealCredentialsRequest { batch_size });
                let step = c.mailboxes.reseal_credentials(request).await.answer()?;
                total += step.resealed;
                eprintln!(
                    "re-sealed {} (key {}), {} left",
                    step.resealed, step.key_id, step.remaining
                );
                if step.remaining == 0 || step.resealed == 0 {
                    return Ok(Rows::one(
                        vec!["key_id", "resealed", "remaining"],
                        vec![json!(step.key_id), json!(total), json!(step.remaining)],
                    ));
                }
            }
        }
    }
}
