//! `mailroom ctl access`: grant, revoke, check ("can X read mailbox M? why?"), list, and the
//! organisation's permission settings.
//!
//! Users are named by id or by address (resolved through identity with the caller's token).
//! How a check's path reads in words is [`explain`]'s.

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use mailroom_platform::proto::access::v1 as apb;
use serde_json::{json, Value};

use super::identity::own_org_id;
use super::identity::users::resolve_user;
use super::{Answer, Clients};
use crate::output::{short_name, Rows};

mod explain;

use explain::{describe, names_in, sentence};

#[derive(Subcommand)]
pub enum AccessCommand {
    /// Whether a user holds a permission, and with --explain why (or why not).
    Check {
        /// User id or address.
        #[arg(long)]
        user: String,
        /// mailbox.view, mailbox.modify, mailbox.read_mail, mailbox.sync, org.invite,
        /// org.register_users, org.manage_permissions
        #[arg(long)]
        permission: String,
        /// The mailbox, for mailbox permissions.
        #[arg(long)]
        mailbox: Option<String>,
        #[arg(long)]
        explain: bool,
        /// A revision token from a write: the answer sees at least that write.
        #[arg(long)]
        at: Option<String>,
    },
    /// Give a user read access to a mailbox, or an org-wide role.
    Grant {
        #[arg(value_enum)]
        relation: GrantRelation,
        /// User id or address.
        #[arg(long)]
        user: String,
        /// The mailbox, for `reader`.
        #[arg(long)]
        mailbox: Option<String>,
    },
    /// Take a grant back.
    Revoke {
        #[arg(value_enum)]
        relation: GrantRelation,
        #[arg(long)]
        user: String,
        #[arg(long)]
        mailbox: Option<String>,
    },
    /// Stored relationships (admins), filtered.
    List {
        /// admin, mailbox_manager, inviter, head, parent, member, owner, reader
        #[arg(long, default_value = "")]
        relation: String,
        /// Only those held by this user (id or address).
        #[arg(long)]
        user: Option<String>,
        /// Only those on this mailbox.
        #[arg(long)]
        mailbox: Option<String>,
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Who holds a permission on a mailbox (the "access by" column).
    Who {
        #[arg(long)]
        mailbox: String,
        #[arg(long, default_value = "mailbox.read_mail")]
        permission: String,
    },
    /// The mailboxes on which a user holds a permission.
    Mailboxes {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "mailbox.view")]
        permission: String,
    },
    /// The organisation's permission settings.
    #[command(subcommand)]
    Settings(SettingsCommand),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GrantRelation {
    /// mailbox#reader: may read the mailbox's mail.
    Reader,
    /// org#mailbox_manager: sees and changes every mailbox (not its mail).
    MailboxManager,
    /// org#inviter: may invite people.
    Inviter,
}

#[derive(Subcommand)]
pub enum SettingsCommand {
    Get,
    Set {
        #[arg(long, value_enum)]
        view_mailbox_list: Option<AudienceArg>,
        #[arg(long, value_enum)]
        modify_mailboxes: Option<AudienceArg>,
        #[arg(long, value_enum)]
        invite: Option<AudienceArg>,
        #[arg(long, value_enum)]
        read_access_grants: Option<GrantsArg>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AudienceArg {
    Admins,
    AdminsAndManagers,
    AdminsManagersAndSupervisors,
    Everyone,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GrantsArg {
    Admins,
    AdminsAndOwners,
}

fn audience(a: Option<AudienceArg>) -> i32 {
    (match a {
        None => apb::Audience::Unspecified,
        Some(AudienceArg::Admins) => apb::Audience::Admins,
        Some(AudienceArg::AdminsAndManagers) => apb::Audience::AdminsAndManagers,
        Some(AudienceArg::AdminsManagersAndSupervisors) => {
            apb::Audience::AdminsManagersAndSupervisors
        }
        Some(AudienceArg::Everyone) => apb::Audience::Everyone,
    }) as i32
}

fn object(kind: &str, id: &str) -> Option<apb::ObjectRef> {
    Some(apb::ObjectRef {
        r#type: kind.into(),
        id: id.into(),
    })
}

fn user_subject(id: &str) -> Option<apb::SubjectRef> {
    Some(apb::SubjectRef {
        object: object("user", id),
        relation: String::new(),
    })
}

enum Change {
    Grant,
    Revoke,
}

/// Writes or deletes one grant and prints it with the revision that holds the change.
async fn change(
    c: &mut Clients,
    relation: GrantRelation,
    user: &str,
    mailbox: Option<String>,
    change: Change,
) -> anyhow::Result<Rows> {
    let rel = grant_relationship(c, relation, user, mailbox).await?;
    let described = describe(&rel);
    let relationships = vec![rel];
    let (column, revision) = match change {
        Change::Grant => {
            let request = c.request(apb::WriteRelationshipsRequest { relationships });
            let written = c.access.write_relationships(request).await.answer()?;
            ("granted", written.written_at)
        }
        Change::Revoke => {
            let request = c.request(apb::DeleteRelationshipsRequest { relationships });
            let deleted = c.access.delete_relationships(request).await.answer()?;
            ("revoked", deleted.deleted_at)
        }
    };
    Ok(Rows::one(
        vec![column, "revision"],
        vec![json!(described), json!(revision.unwrap_or_default().token)],
    ))
}

async fn grant_relationship(
    c: &mut Clients,
    relation: GrantRelation,
    user: &str,
    mailbox: Option<String>,
) -> anyhow::Result<apb::Relationship> {
    let user = resolve_user(c, user).await?;
    Ok(match relation {
        GrantRelation::Reader => apb::Relationship {
            resource: object(
                "mailbox",
                &mailbox.context("--mailbox is required for reader")?,
            ),
            relation: "reader".into(),
            subject: user_subject(&user),
        },
        other => {
            let org_id = own_org_id(c).await?;
            apb::Relationship {
                resource: object("org", &org_id),
                relation: match other {
                    GrantRelation::MailboxManager => "mailbox_manager",
                    _ => "inviter",
                }
                .into(),
                subject: user_subject(&user),
            }
        }
    })
}

fn settings_rows(s: &apb::PermissionSettings) -> Rows {
    let name = |v: i32| {
        short_name(
            apb::Audience::try_from(v).ok().map(|a| a.as_str_name()),
            "AUDIENCE_",
        )
    };
    let grants = short_name(
        apb::ReadAccessGrants::try_from(s.read_access_grants)
            .ok()
            .map(|g| g.as_str_name()),
        "READ_ACCESS_GRANTS_",
    );
    Rows::one(
        vec![
            "org_id",
            "view_mailbox_list",
            "modify_mailboxes",
            "invite",
            "read_access_grants",
        ],
        vec![
            json!(s.org_id),
            json!(name(s.view_mailbox_list)),
            json!(name(s.modify_mailboxes)),
            json!(name(s.invite)),
            json!(grants),
        ],
    )
}

fn ids_rows(column: &'static str, ids: &[String], revision: Option<apb::Revision>) -> Rows {
    let mut rows = Rows::new(vec![column]);
    rows.rows = ids.iter().map(|id| vec![json!(id)]).collect();
    rows.footer
        .push(("revision", json!(revision.unwrap_or_default().token)));
    rows
}

pub async fn run(c: &mut Clients, cmd: AccessCommand) -> anyhow::Result<Rows> {
    Ok(match cmd {
        AccessCommand::Check {
            user,
            permission,
            mailbox,
            explain,
            at,
        } => {
            let user = resolve_user(c, &user).await?;
            let resource = match &mailbox {
                Some(m) => object("mailbox", m),
                None => object("org", &own_org_id(c).await?),
            };
            let request = c.request(apb::CheckRequest {
                subject: user_subject(&user),
                permission,
                resource,
                at_least_as_fresh_as: at.map(|token| apb::Revision { token }),
                explain,
            });
            let r = c.access.check(request).await.answer()?;
            let names = names_in(c, &r.path).await;
            let why: Vec<Value> = r.path.iter().map(|p| json!(sentence(p, &names))).collect();
            let path: Vec<Value> = r.path.iter().map(|p| json!(describe(p))).collect();
            let mut rows = Rows::one(
                vec!["allowed", "reason", "checked_at"],
                vec![
                    json!(r.allowed),
                    json!(r.reason),
                    json!(r.checked_at.unwrap_or_default().token),
                ],
            );
            // One relationship per line, in words, from the mailbox to the user (the table
            // prints a list under its name, and nothing for an empty one).
            rows.footer.push(("because", Value::Array(why)));
            rows.footer.push(("path", Value::Array(path)));
            rows
        }
        AccessCommand::Grant {
            relation,
            user,
            mailbox,
        } => change(c, relation, &user, mailbox, Change::Grant).await?,
        AccessCommand::Revoke {
            relation,
            user,
            mailbox,
        } => change(c, relation, &user, mailbox, Change::Revoke).await?,
        AccessCommand::List {
            relation,
            user,
            mailbox,
            page_size,
            page_token,
        } => {
            let user = match user {
                Some(u) => Some(resolve_user(c, &u).await?),
                None => None,
            };
            let filter = apb::Relationship {
                resource: mailbox.as_deref().and_then(|m| object("mailbox", m)),
                relation,
                subject: user.as_deref().and_then(user_subject),
            };
            let request = c.request(apb::ListRelationshipsRequest {
                filter: Some(filter),
                page_size,
                page_token,
                org_id: String::new(),
            });
            let r = c.access.list_relationships(request).await.answer()?;
            let mut rows = Rows::new(vec!["relationship"]);
            rows.rows = r
                .relationships
                .iter()
                .map(|rel| vec![json!(describe(rel))])
                .collect();
            rows.footer
                .push(("next_page_token", json!(r.next_page_token)));
            rows
        }
        AccessCommand::Who {
            mailbox,
            permission,
        } => {
            let request = c.request(apb::LookupSubjectsRequest {
                resource: object("mailbox", &mailbox),
                permission,
                subject_type: "user".into(),
                at_least_as_fresh_as: None,
            });
            let r = c.access.lookup_subjects(request).await.answer()?;
            ids_rows("user_id", &r.subject_ids, r.looked_up_at)
        }
        AccessCommand::Mailboxes { user, permission } => {
            let user = resolve_user(c, &user).await?;
            let request = c.request(apb::LookupResourcesRequest {
                subject: user_subject(&user),
                permission,
                resource_type: "mailbox".into(),
                page_size: 1000,
                page_token: String::new(),
                at_least_as_fresh_as: None,
            });
            let r = c.access.lookup_resources(request).await.answer()?;
            let mut rows = ids_rows("mailbox_id", &r.resource_ids, r.looked_up_at);
            rows.footer
                .push(("next_page_token", json!(r.next_page_token)));
            rows
        }
        AccessCommand::Settings(SettingsCommand::Get) => {
            let request = c.request(apb::GetPermissionSettingsRequest {
                org_id: String::new(),
            });
            let s = c.access.get_permission_settings(request).await.answer()?;
            settings_rows(&s)
        }
        AccessCommand::Settings(SettingsCommand::Set {
            view_mailbox_list,
            modify_mailboxes,
            invite,
            read_access_grants,
        }) => {
            let grants = match read_access_grants {
                None => apb::ReadAccessGrants::Unspecified,
                Some(GrantsArg::Admins) => apb::ReadAccessGrants::Admins,
                Some(GrantsArg::AdminsAndOwners) => apb::ReadAccessGrants::AdminsAndOwners,
            } as i32;
            let request = c.request(apb::UpdatePermissionSettingsRequest {
                settings: Some(apb::PermissionSettings {
                    view_mailbox_list: audience(view_mailbox_list),
                    modify_mailboxes: audience(modify_mailboxes),
                    invite: audience(invite),
                    read_access_grants: grants,
                    ..Default::default()
                }),
            });
            let s = c
                .access
                .update_permission_settings(request)
                .await
                .answer()?;
            settings_rows(&s)
        }
    })
}
