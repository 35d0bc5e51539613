//! `mailroom ctl mailboxes`: the "Manage user mailboxes" screen in a terminal — the list with
//! chosen columns, filter and sort; connect one or many (from a CSV); edit, sync now,
//! transfer, disconnect; the saved list view; and the operator's credential-key rotation.
//!
//! Passwords come from an environment variable or a file, never from a flag (a flag shows in
//! `ps` and in shell history).

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use mailroom_platform::proto::mailboxes::v1 as mpb;
use serde_json::{json, Value};

use super::{status, Clients};
use crate::output::Rows;

#[derive(Subcommand)]
pub enum MailboxesCommand {
    /// The list the admin sees.
    List {
        /// Columns, comma separated: employee, email, name, sender_name, last_sync_time,
        /// sync_state, unread_count, message_count, disk_mb, in_crm, crm_queue, access_by
        /// (default: your saved list view).
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        /// e.g. 'in_crm = true AND days_since_sync > 7'
        #[arg(long, default_value = "")]
        filter: String,
        /// A column, optionally followed by ` desc`.
        #[arg(long, default_value = "")]
        sort: String,
        #[arg(long, default_value_t = 0)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
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
    View(ViewCommand),
    /// Re-seal every stored password under the newest configured key (service credential).
    RotateKey {
        #[arg(long, default_value_t = 500)]
        batch_size: i32,
    },
}

#[derive(Subcommand)]
pub enum ViewCommand {
    Get,
    Set {
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        #[arg(long, default_value = "")]
        filter: String,
        #[arg(long, default_value = "")]
        sort: String,
        #[arg(long, default_value_t = 0)]
        page_size: i32,
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
    let state = mpb::SyncState::try_from(m.sync_state)
        .map(|s| s.as_str_name().trim_start_matches("SYNC_STATE_").to_owned())
        .unwrap_or_default();
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

/// The list's columns, in the list view's names (the registry's own list).
use mailroom_mailboxes::view::COLUMN_NAMES as COLUMNS;

fn cell(m: &mpb::Mailbox, column: &str) -> Value {
    match column {
        "employee" => json!(owner_cell(m)),
        "email" => json!(m.email),
        "name" => json!(m.name),
        "sender_name" => json!(m.sender_name),
        "last_sync_time" => json!(m
            .last_sync_time
            .as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "never".into())),
        "sync_state" => json!(state_name(m)),
        "unread_count" => json!(m.unread_count),
        "message_count" => json!(m.message_count),
        "disk_mb" => json!((m.disk_mb * 10.0).round() / 10.0),
        "in_crm" => json!(m.crm.as_ref().is_some_and(|c| c.in_crm)),
        "crm_queue" => json!(m
            .crm
            .as_ref()
            .map(|c| c.queue_user_ids.join(" "))
            .unwrap_or_default()),
        "access_by" => json!(m.access_by_user_ids.join(" ")),
        _ => Value::Null,
    }
}

fn static_column(name: &str) -> anyhow::Result<&'static str> {
    COLUMNS
        .iter()
        .find(|c| **c == name.trim())
        .copied()
        .with_context(|| format!("unknown column `{name}`; columns: {}", COLUMNS.join(", ")))
}

pub async fn run(c: &mut Clients, cmd: MailboxesCommand) -> anyhow::Result<Rows> {
    match cmd {
        MailboxesCommand::List {
            columns,
            filter,
            sort,
            page_size,
            page_token,
        } => {
            let columns: Vec<String> = if columns.is_empty() {
                c.mailboxes
                    .get_list_view(c.request(mpb::GetListViewRequest {})?)
                    .await
                    .map_err(status)?
                    .into_inner()
                    .columns
            } else {
                columns
            };
            let chosen: Vec<&'static str> = columns
                .iter()
                .map(|n| static_column(n))
                .collect::<anyhow::Result<_>>()?;
            let mut shown = vec!["id"];
            shown.extend(chosen.iter().copied());
            let listed = c
                .mailboxes
                .list_mailboxes(c.request(mpb::ListMailboxesRequest {
                    page_size,
                    page_token,
                    filter,
                    order_by: sort,
                    read_mask: Some(prost_types::FieldMask {
                        paths: chosen.iter().map(|s| (*s).to_owned()).collect(),
                    }),
                    org_id: String::new(),
                })?)
                .await
                .map_err(status)?
                .into_inner();
            let mut rows = Rows::new(shown.clone());
            rows.rows = listed
                .mailboxes
                .iter()
                .map(|m| {
                    std::iter::once(json!(m.id))
                        .chain(chosen.iter().map(|col| cell(m, col)))
                        .collect()
                })
                .collect();
            rows.footer = vec![
                ("total_size", json!(listed.total_size)),
                ("next_page_token", json!(listed.next_page_token)),
            ];
            Ok(rows)
        }
        MailboxesCommand::Get { id } => {
            let m = c
                .mailboxes
                .get_mailbox(c.request(mpb::GetMailboxRequest { id })?)
                .await
                .map_err(status)?
                .into_inner();
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
                super::access::resolve_user(c, &owner).await?
            };
            let m = c
                .mailboxes
                .connect_mailbox(c.request(mpb::ConnectMailboxRequest {
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
                })?)
                .await
                .map_err(status)?
                .into_inner();
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
                    Some(o) => super::access::resolve_user(c, o).await?,
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
            let results = c
                .mailboxes
                .connect_mailboxes(c.request(mpb::ConnectMailboxesRequest {
                    imap: Some(server(&servers.imap, servers.imap_security)?),
                    smtp: Some(server(&servers.smtp, servers.smtp_security)?),
                    mailboxes,
                    validate_only,
                })?)
                .await
                .map_err(status)?
                .into_inner()
                .results;
            let mut rows = Rows::new(vec!["email", "connected", "id", "error"]);
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
            let m = c
                .mailboxes
                .update_mailbox(c.request(mpb::UpdateMailboxRequest {
                    mailbox: Some(mailbox),
                    update_mask: Some(prost_types::FieldMask { paths }),
                    password: secret,
                })?)
                .await
                .map_err(status)?
                .into_inner();
            Ok(detail(&m))
        }
        MailboxesCommand::SyncNow { id } => {
            let queued = c
                .mailboxes
                .sync_mailbox_now(c.request(mpb::SyncMailboxNowRequest { id: id.clone() })?)
                .await
                .map_err(status)?
                .into_inner();
            let at = queued
                .queued_time
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            Ok(Rows::one(vec!["id", "queued"], vec![json!(id), json!(at)]))
        }
        MailboxesCommand::Transfer { id, to } => {
            let to = super::access::resolve_user(c, &to).await?;
            let m = c
                .mailboxes
                .transfer_mailbox(c.request(mpb::TransferMailboxRequest {
                    id,
                    new_owner_user_id: to,
                })?)
                .await
                .map_err(status)?
                .into_inner();
            Ok(detail(&m))
        }
        MailboxesCommand::Disconnect { id } => {
            c.mailboxes
                .disconnect_mailbox(c.request(mpb::DisconnectMailboxRequest { id: id.clone() })?)
                .await
                .map_err(status)?;
            Ok(Rows::one(
                vec!["id", "disconnected"],
                vec![json!(id), json!(true)],
            ))
        }
        MailboxesCommand::View(ViewCommand::Get) => {
            let v = c
                .mailboxes
                .get_list_view(c.request(mpb::GetListViewRequest {})?)
                .await
                .map_err(status)?
                .into_inner();
            Ok(view_rows(&v))
        }
        MailboxesCommand::View(ViewCommand::Set {
            columns,
            filter,
            sort,
            page_size,
        }) => {
            let v = c
                .mailboxes
                .update_list_view(c.request(mpb::UpdateListViewRequest {
                    view: Some(mpb::ListView {
                        columns,
                        filter,
                        order_by: sort,
                        page_size,
                    }),
                })?)
                .await
                .map_err(status)?
                .into_inner();
            Ok(view_rows(&v))
        }
        MailboxesCommand::RotateKey { batch_size } => {
            let mut total = 0;
            loop {
                let step = c
                    .mailboxes
                    .reseal_credentials(c.request(mpb::ResealCredentialsRequest { batch_size })?)
                    .await
                    .map_err(status)?
                    .into_inner();
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

fn view_rows(v: &mpb::ListView) -> Rows {
    Rows::one(
        vec!["columns", "filter", "sort", "page_size"],
        vec![
            json!(v.columns.join(",")),
            json!(v.filter),
            json!(v.order_by),
            json!(v.page_size),
        ],
    )
}
