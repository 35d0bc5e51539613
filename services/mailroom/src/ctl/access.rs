//! `mailroom ctl access`: grant, revoke, check ("can X read mailbox M? why?"), list, and the
//! organisation's permission settings.
//!
//! Users are named by id or by address (resolved through identity with the caller's token).

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use mailroom_platform::proto::access::v1 as apb;
use mailroom_platform::proto::identity::v1 as pb;
use std::collections::HashMap;

use serde_json::{json, Value};

use super::{status, Clients};
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

/// Names for the users and departments a path mentions ("Ann Lee <ann@acme.test>",
/// "Sales East"), looked up with the caller's token; an id that cannot be looked up stays
/// an id.
async fn names_in(c: &mut Clients, path: &[apb::Relationship]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for rel in path {
        let ends = [
            rel.resource.clone().unwrap_or_default(),
            rel.subject
                .clone()
                .unwrap_or_default()
                .object
                .unwrap_or_default(),
        ];
        for end in ends {
            if names.contains_key(&end.id) {
                continue;
            }
            let name = match end.r#type.as_str() {
                "user" => match c.request(pb::GetUserRequest { id: end.id.clone() }) {
                    Ok(request) => c.identity.get_user(request).await.ok().map(|u| {
                        let u = u.into_inner();
                        let full = format!("{} {}", u.first_name, u.last_name);
                        format!("{} <{}>", full.trim(), u.login_email)
                    }),
                    Err(_) => None,
                },
                "department" => match c.request(pb::GetDepartmentRequest { id: end.id.clone() }) {
                    Ok(request) => c
                        .identity
                        .get_department(request)
                        .await
                        .ok()
                        .map(|d| format!("department {}", d.into_inner().name)),
                    Err(_) => None,
                },
                _ => None,
            };
            if let Some(name) = name {
                names.insert(end.id, name);
            }
        }
    }
    names
}

/// One relationship as a person reads it, with the names known for its ends.
pub fn sentence(rel: &apb::Relationship, names: &HashMap<String, String>) -> String {
    let resource = rel.resource.clone().unwrap_or_default();
    let subject = rel.subject.clone().unwrap_or_default();
    let subject_object = subject.object.unwrap_or_default();
    let name = |o: &apb::ObjectRef| {
        names
            .get(&o.id)
            .cloned()
            .unwrap_or_else(|| format!("{} {}", o.r#type, o.id))
    };
    let (what, who) = (name(&resource), name(&subject_object));
    match (resource.r#type.as_str(), rel.relation.as_str()) {
        ("mailbox", "owner") => format!("{what} is owned by {who}"),
        ("mailbox", "reader") => format!("{who} was granted reading {what}"),
        ("user", "member") => format!("{what} works in {who}"),
        ("department", "parent") => format!("{what} is part of {who}"),
        ("department", "head") => format!("{what} is headed by {who}"),
        ("org", "admin") => format!("{who} is an admin of the organisation"),
        ("org", "mailbox_manager") => format!("{who} manages the organisation's mailboxes"),
        ("org", "inviter") if subject.relation == "member" => {
            "everyone in the organisation may invite".to_owned()
        }
        ("org", "inviter") => format!("{who} may invite people"),
        _ => describe(rel),
    }
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
        Change::Grant => (
            "granted",
            c.access
                .write_relationships(c.request(apb::WriteRelationshipsRequest { relationships })?)
                .await
                .map_err(status)?
                .into_inner()
                .written_at,
        ),
        Change::Revoke => (
            "revoked",
            c.access
                .delete_relationships(c.request(apb::DeleteRelationshipsRequest { relationships })?)
                .await
                .map_err(status)?
                .into_inner()
                .deleted_at,
        ),
    };
    Ok(Rows::one(
        vec![column, "revision"],
        vec![json!(described), json!(revision.unwrap_or_default().token)],
    ))
}

/// A user id, or the id of the user holding an address (login or contact).
pub(crate) async fn resolve_user(c: &mut Clients, user: &str) -> anyhow::Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(resource: (&str, &str), relation: &str, subject: (&str, &str)) -> apb::Relationship {
        apb::Relationship {
            resource: object(resource.0, resource.1),
            relation: relation.into(),
            subject: Some(apb::SubjectRef {
                object: object(subject.0, subject.1),
                relation: String::new(),
            }),
        }
    }

    #[test]
    fn an_explanation_reads_one_relationship_a_line_with_names() {
        let names: HashMap<String, String> = [
            ("u-ann", "Ann Lee <ann@acme.test>"),
            ("d-east", "department Sales East"),
            ("d-sales", "department Sales"),
            ("u-olivia", "Olivia Chen <olivia@acme.test>"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let path = [
            rel(("mailbox", "m-1"), "owner", ("user", "u-ann")),
            rel(("user", "u-ann"), "member", ("department", "d-east")),
            rel(
                ("department", "d-east"),
                "parent",
                ("department", "d-sales"),
            ),
            rel(("department", "d-sales"), "head", ("user", "u-olivia")),
        ];
        let lines: Vec<String> = path.iter().map(|r| sentence(r, &names)).collect();
        assert_eq!(
            lines,
            [
                "mailbox m-1 is owned by Ann Lee <ann@acme.test>",
                "Ann Lee <ann@acme.test> works in department Sales East",
                "department Sales East is part of department Sales",
                "department Sales is headed by Olivia Chen <olivia@acme.test>",
            ]
        );
        let mut rows = Rows::one(vec!["allowed"], vec![json!(true)]);
        rows.footer.push((
            "because",
            Value::Array(lines.iter().map(|l| json!(l)).collect()),
        ));
        let json: Value =
            serde_json::from_str(&rows.render(crate::output::Format::Json)).expect("JSON");
        assert_eq!(json["because"][3], lines[3].as_str());
        let table = rows.render(crate::output::Format::Table);
        assert!(
            table
                .contains("because:\n  mailbox m-1 is owned by Ann Lee <ann@acme.test>\n  Ann Lee"),
            "{table}"
        );
    }
}
