//! `mailroom ctl access`: check ("can X read mailbox M? why?"), grant and revoke read access,
//! list relationships, and the organisation's roles ([`roles`]).
//!
//! Users are named by id or by address (resolved through identity with the caller's token).
//! How a check's path reads in words is [`explain`]'s. The permission settings and the
//! mailbox-manager and inviter grants of earlier releases are roles now: their commands only
//! say so.

use std::collections::HashMap;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use mailroom_platform::proto::access::v1 as apb;
use serde_json::{json, Value};

use super::identity::own_org_id;
use super::identity::users::resolve_user;
use super::{Answer, Clients};
use crate::output::Rows;

mod explain;
mod roles;

use explain::{describe, granted_by, names_in, sentence};

#[derive(Subcommand)]
pub enum AccessCommand {
    /// Whether a user holds a permission, and with --explain why (or why not). Prints
    /// `allowed` or `denied`; with --fail-on-deny a denial exits 3.
    Check(CheckArgs),
    /// Give a user read access to a mailbox (other powers come with roles: see `roles`).
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
    /// Take a read grant back.
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
        /// admin, inviter, head, parent, member, owner, reader, assignee
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
    /// The organisation's roles and their assignments: who sees, connects and changes which
    /// mailboxes, who may grant read access, invite people and configure access.
    #[command(subcommand)]
    Roles(roles::RolesCommand),
    /// Gone: permission settings are roles now (`mailroom ctl access roles`).
    #[command(hide = true)]
    Settings {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        rest: Vec<String>,
    },
}

#[derive(Args)]
pub struct CheckArgs {
    /// User id or address.
    #[arg(long)]
    user: String,
    /// mailbox.view, mailbox.modify, mailbox.sync, mailbox.connect, mailbox.grant_read,
    /// mailbox.read_mail, org.invite, org.register_users, org.manage_permissions
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
    /// Exit with status 3 when the answer is "denied" (after printing it), so a script can
    /// tell a denial (3) from a failure to ask (1, 4, 5, 69).
    #[arg(long)]
    pub fail_on_deny: bool,
}

/// A check's answer as printed, and whether it allowed.
pub struct Checked {
    pub rows: Rows,
    pub allowed: bool,
}

/// Asks access control whether the user holds the permission (and why, with --explain).
pub async fn check(c: &mut Clients, args: CheckArgs) -> anyhow::Result<Checked> {
    let CheckArgs {
        user,
        permission,
        mailbox,
        explain,
        at,
        fail_on_deny: _,
    } = args;
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
    let mut mentioned = r.path.clone();
    mentioned.extend(r.granted_by.iter().filter_map(|g| g.assignment.clone()));
    let names = names_in(c, &mentioned, HashMap::new()).await;
    let why: Vec<Value> = r.path.iter().map(|p| json!(sentence(p, &names))).collect();
    let path: Vec<Value> = r.path.iter().map(|p| json!(describe(p))).collect();
    let verdict = if r.allowed { "allowed" } else { "denied" };
    let mut rows = Rows::one(
        vec!["verdict", "allowed", "reason", "checked_at"],
        vec![
            json!(verdict),
            json!(r.allowed),
            json!(r.reason),
            json!(r.checked_at.unwrap_or_default().token),
        ],
    );
    // One relationship per line, in words, from the mailbox to the user (the table prints a
    // list under its name, and nothing for an empty one).
    rows.footer.push(("because", Value::Array(why)));
    rows.footer.push(("path", Value::Array(path)));
    if let Some(g) = &r.granted_by {
        rows.footer
            .push(("granted_by", json!(granted_by(g, &names))));
    }
    Ok(Checked {
        rows,
        allowed: r.allowed,
    })
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GrantRelation {
    /// mailbox#reader: may read the mailbox's mail.
    Reader,
    /// Gone: a role now (`roles assign "Mailbox managers" --user …`).
    #[value(hide = true)]
    MailboxManager,
    /// Gone: a role now (`roles update <role> --invite`, then `roles assign`).
    #[value(hide = true)]
    Inviter,
}

/// What `access settings …` says now.
const SETTINGS_ARE_ROLES: &str = "permission settings are roles now: see `mailroom ctl access roles list`, and change one with `mailroom ctl access roles update <role> --view-list/--connect/--modify/--grant-read SCOPE` (upgrading turned each setting into the roles Supervisor, Manager and, where used, Mailbox managers and Inviters)";

/// What `grant`/`revoke mailbox-manager|inviter` say now.
fn grant_is_a_role(relation: GrantRelation) -> Option<String> {
    let (what, role) = match relation {
        GrantRelation::Reader => return None,
        GrantRelation::MailboxManager => ("mailbox managers", "Mailbox managers"),
        GrantRelation::Inviter => ("inviters", "Inviters"),
    };
    Some(format!(
        "{what} are a role now: `mailroom ctl access roles assign \"{role}\" --user <user>` (or unassign; upgrading created the role where the organisation had {what}), or give any role the permission with `mailroom ctl access roles update`"
    ))
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
    if let Some(gone) = grant_is_a_role(relation) {
        bail!(gone);
    }
    let rel = grant_relationship(c, user, mailbox).await?;
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

/// `mailbox#reader@user`, the one grant written here.
async fn grant_relationship(
    c: &mut Clients,
    user: &str,
    mailbox: Option<String>,
) -> anyhow::Result<apb::Relationship> {
    let mailbox = mailbox.context("--mailbox is required for reader")?;
    let user = resolve_user(c, user).await?;
    Ok(apb::Relationship {
        resource: object("mailbox", &mailbox),
        relation: "reader".into(),
        subject: user_subject(&user),
    })
}

fn ids_rows(
    kind: &'static str,
    column: &'static str,
    ids: &[String],
    revision: Option<apb::Revision>,
) -> Rows {
    let mut rows = Rows::new(kind, vec![column]);
    rows.rows = ids.iter().map(|id| vec![json!(id)]).collect();
    rows.footer
        .push(("revision", json!(revision.unwrap_or_default().token)));
    rows
}

/// Refuses a command of earlier releases that roles replaced, before any service is asked.
pub fn refuse_removed(cmd: &AccessCommand) -> anyhow::Result<()> {
    match cmd {
        AccessCommand::Settings { .. } => bail!(SETTINGS_ARE_ROLES),
        AccessCommand::Grant { relation, .. } | AccessCommand::Revoke { relation, .. } => {
            match grant_is_a_role(*relation) {
                Some(gone) => bail!(gone),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

pub async fn run(c: &mut Clients, cmd: AccessCommand) -> anyhow::Result<Rows> {
    Ok(match cmd {
        AccessCommand::Check(args) => check(c, args).await?.rows,
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
            let mut rows = Rows::new("relationships", vec!["relationship"]);
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
            // Every holder: the answer comes a page at a time.
            let (mut ids, mut page_token) = (Vec::new(), String::new());
            let looked_up_at = loop {
                let request = c.request(apb::LookupSubjectsRequest {
                    resource: object("mailbox", &mailbox),
                    permission: permission.clone(),
                    subject_type: "user".into(),
                    at_least_as_fresh_as: None,
                    page_size: 10_000,
                    page_token,
                });
                let r = c.access.lookup_subjects(request).await.answer()?;
                ids.extend(r.subject_ids);
                if r.next_page_token.is_empty() {
                    break r.looked_up_at;
                }
                page_token = r.next_page_token;
            };
            ids_rows("users", "user_id", &ids, looked_up_at)
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
            let mut rows = ids_rows("mailboxes", "mailbox_id", &r.resource_ids, r.looked_up_at);
            rows.footer
                .push(("next_page_token", json!(r.next_page_token)));
            rows
        }
        AccessCommand::Roles(cmd) => roles::run(c, cmd).await?,
        AccessCommand::Settings { .. } => bail!(SETTINGS_ARE_ROLES),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        access: AccessCommand,
    }

    fn parse(args: &[&str]) -> AccessCommand {
        match Cli::try_parse_from(std::iter::once("access").chain(args.iter().copied())) {
            Ok(cli) => cli.access,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn the_old_settings_and_grants_point_to_roles() {
        // Any old invocation still parses, so it can say where to go instead.
        let old = [
            "settings",
            "set",
            "--view-mailbox-list",
            "admins-and-managers",
            "--read-access-grants",
            "admins",
        ];
        assert!(matches!(parse(&old), AccessCommand::Settings { .. }));
        let err = refuse_removed(&parse(&old)).expect_err("settings are gone");
        assert!(err.to_string().contains("roles now"), "{err}");
        let reader = parse(&["revoke", "reader", "--user", "u", "--mailbox", "m"]);
        assert!(refuse_removed(&reader).is_ok());
        assert!(refuse_removed(&parse(&["revoke", "inviter", "--user", "u"])).is_err());
        assert!(matches!(
            parse(&["settings", "get"]),
            AccessCommand::Settings { .. }
        ));
        assert!(SETTINGS_ARE_ROLES.contains("mailroom ctl access roles"));
        for (relation, role) in [
            ("mailbox-manager", "Mailbox managers"),
            ("inviter", "Inviters"),
        ] {
            let AccessCommand::Grant { relation, .. } =
                parse(&["grant", relation, "--user", "sam@acme.test"])
            else {
                panic!("not grant")
            };
            let gone = grant_is_a_role(relation).expect("a role now");
            assert!(gone.contains(&format!("roles assign \"{role}\"")), "{gone}");
        }
        let AccessCommand::Grant { relation, .. } =
            parse(&["grant", "reader", "--user", "u", "--mailbox", "m"])
        else {
            panic!("not grant")
        };
        assert!(grant_is_a_role(relation).is_none());
    }
}
