//! `mailroom ctl access`: grant, revoke, check ("can X read mailbox M? why?"), list, and the
//! organisation's permission settings.
//!
//! Users are named by id or by address (resolved through identity with the caller's token).

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use mailroom_platform::proto::access::v1 as apb;
use mailroom_platform::proto::identity::v1 as pb;
use serde_json::{json, Value};

use crate::ctl::{status, Clients};
use crate::output::Rows;

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

/// `type:id#relation@type:id` for printing.
pub fn describe(r: &apb::Relationship) -> String {
    let res = r.resource.clone().unwrap_or_default();
    let sub = r.subject.clone().unwrap_or_default();
    let sub_obj = sub.object.unwrap_or_default();
    let sub_rel = if sub.relation.is_empty() {
        String::new()
    } else {
        format!("#{}", sub.relation)
    };
    format!(
        "{}:{}#{}@{}:{}{}",
        res.r#type, res.id, r.relation, sub_obj.r#type, sub_obj.id, sub_rel
    )
}

/// A user id, or the id of the user holding an address (login or contact).
async fn resolve_user(c: &mut Clients, user: &str) -> anyhow::Result<String> {
    if !user.contains('@') {
        return Ok(user.to_owned());
    }
    let wanted = user.trim().to_lowercase();
    let list = c
        .identity
        .list_users(c.request(pb::ListUsersRequest {
            filter: format!("email : {:?}", wanted),
            page_size: 50,
            ..Default::default()
        })?)
        .await
        .map_err(status)?
        .into_inner();
    list.users
        .iter()
        .find(|u| u.login_email == wanted || u.contact_email == wanted)
        .map(|u| u.id.clone())
        .with_context(|| format!("no user in your organisation holds {wanted}"))
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
            let org = c
                .identity
                .get_organization(c.request(pb::GetOrganizationRequest {
                    org_id: String::new(),
                })?)
                .await
                .map_err(status)?
                .into_inner();
            apb::Relationship {
                resource: object("org", &org.id),
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
        apb::Audience::try_from(v)
            .map(|a| a.as_str_name().trim_start_matches("AUDIENCE_").to_owned())
            .unwrap_or_default()
    };
    let grants = apb::ReadAccessGrants::try_from(s.read_access_grants)
        .map(|g| {
            g.as_str_name()
                .trim_start_matches("READ_ACCESS_GRANTS_")
                .to_owned()
        })
        .unwrap_or_default();
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
                None => {
                    let org = c
                        .identity
                        .get_organization(c.request(pb::GetOrganizationRequest {
                            org_id: String::new(),
                        })?)
                        .await
                        .map_err(status)?
                        .into_inner();
                    object("org", &org.id)
                }
            };
            let request = c.request(apb::CheckRequest {
                subject: user_subject(&user),
                permission,
                resource,
                at_least_as_fresh_as: at.map(|token| apb::Revision { token }),
                explain,
            })?;
            let r = c.access.check(request).await.map_err(status)?.into_inner();
            let path: Vec<Value> = r.path.iter().map(|p| json!(describe(p))).collect();
            Rows::one(
                vec!["allowed", "reason", "path", "checked_at"],
                vec![
                    json!(r.allowed),
                    json!(r.reason),
                    Value::Array(path),
                    json!(r.checked_at.unwrap_or_default().token),
                ],
            )
        }
        AccessCommand::Grant {
            relation,
            user,
            mailbox,
        } => {
            let rel = grant_relationship(c, relation, &user, mailbox).await?;
            let described = describe(&rel);
            let r = c
                .access
                .write_relationships(c.request(apb::WriteRelationshipsRequest {
                    relationships: vec![rel],
                })?)
                .await
                .map_err(status)?
                .into_inner();
            Rows::one(
                vec!["granted", "revision"],
                vec![
                    json!(described),
                    json!(r.written_at.unwrap_or_default().token),
                ],
            )
        }
        AccessCommand::Revoke {
            relation,
            user,
            mailbox,
        } => {
            let rel = grant_relationship(c, relation, &user, mailbox).await?;
            let described = describe(&rel);
            let r = c
                .access
                .delete_relationships(c.request(apb::DeleteRelationshipsRequest {
                    relationships: vec![rel],
                })?)
                .await
                .map_err(status)?
                .into_inner();
            Rows::one(
                vec!["revoked", "revision"],
                vec![
                    json!(described),
                    json!(r.deleted_at.unwrap_or_default().token),
                ],
            )
        }
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
            let r = c
                .access
                .list_relationships(c.request(apb::ListRelationshipsRequest {
                    filter: Some(filter),
                    page_size,
                    page_token,
                    org_id: String::new(),
                })?)
                .await
                .map_err(status)?
                .into_inner();
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
            let r = c
                .access
                .lookup_subjects(c.request(apb::LookupSubjectsRequest {
                    resource: object("mailbox", &mailbox),
                    permission,
                    subject_type: "user".into(),
                    at_least_as_fresh_as: None,
                })?)
                .await
                .map_err(status)?
                .into_inner();
            ids_rows("user_id", &r.subject_ids, r.looked_up_at)
        }
        AccessCommand::Mailboxes { user, permission } => {
            let user = resolve_user(c, &user).await?;
            let r = c
                .access
                .lookup_resources(c.request(apb::LookupResourcesRequest {
                    subject: user_subject(&user),
                    permission,
                    resource_type: "mailbox".into(),
                    page_size: 1000,
                    page_token: String::new(),
                    at_least_as_fresh_as: None,
                })?)
                .await
                .map_err(status)?
                .into_inner();
            let mut rows = ids_rows("mailbox_id", &r.resource_ids, r.looked_up_at);
            rows.footer
                .push(("next_page_token", json!(r.next_page_token)));
            rows
        }
        AccessCommand::Settings(SettingsCommand::Get) => {
            let s = c
                .access
                .get_permission_settings(c.request(apb::GetPermissionSettingsRequest {
                    org_id: String::new(),
                })?)
                .await
                .map_err(status)?
                .into_inner();
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
            let s = c
                .access
                .update_permission_settings(c.request(apb::UpdatePermissionSettingsRequest {
                    settings: Some(apb::PermissionSettings {
                        view_mailbox_list: audience(view_mailbox_list),
                        modify_mailboxes: audience(modify_mailboxes),
                        invite: audience(invite),
                        read_access_grants: grants,
                        ..Default::default()
                    }),
                })?)
                .await
                .map_err(status)?
                .into_inner();
            settings_rows(&s)
        }
    })
}
