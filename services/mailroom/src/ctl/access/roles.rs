//! `mailroom ctl access roles …`: the organisation's roles — list, show, create, change,
//! clone, delete — and their assignments to people, departments, department heads and
//! "everyone else".
//!
//! A role is named by its id or its display name (case-insensitively, hidden ones included);
//! a user by id or address; a department by id. A mailbox permission's scope is one of
//! none, own, subordinates, department (own department and below) or all. `update` sends
//! exactly the fields its flags name, with the etag of the role as it is now, so a change made
//! meanwhile by someone else is refused rather than overwritten.

use std::collections::HashMap;

use anyhow::bail;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use mailroom_platform::proto::access::v1 as apb;
use serde_json::{json, Value};

use super::explain::{describe, names_in, sentence};
use super::object;
use crate::ctl::identity::users::resolve_user;
use crate::ctl::{Answer, Clients};
use crate::output::{short_name, time, Clock, Rows};

#[derive(Subcommand)]
pub enum RolesCommand {
    /// The organisation's roles (hidden ones too with --hidden).
    List {
        #[arg(long)]
        hidden: bool,
    },
    /// One role (by id or name).
    Get { role: String },
    /// A custom role; a permission not given is none (not granted).
    Create {
        /// Its display name (unique in the organisation, 1–100 characters).
        name: String,
        #[command(flatten)]
        permissions: PermissionFlags,
    },
    /// Change what the flags name, and nothing else.
    Update {
        role: String,
        #[command(flatten)]
        permissions: PermissionFlags,
        /// A new display name.
        #[arg(long)]
        name: Option<String>,
        /// Hide it from the list (it still grants what it grants).
        #[arg(long, conflicts_with = "show")]
        hide: bool,
        /// Show it in the list again.
        #[arg(long)]
        show: bool,
    },
    /// A custom, unassigned copy of a role ("<name> (copy)" unless --name is given).
    Clone {
        role: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a custom role and all its assignments.
    Delete { role: String },
    /// Give a role to a user, a department, everyone heading a department, or everyone else.
    Assign {
        role: String,
        #[command(flatten)]
        to: AssigneeArgs,
    },
    /// Take back an assignment made with `assign` (the same flags).
    Unassign {
        role: String,
        #[command(flatten)]
        to: AssigneeArgs,
    },
    /// A role's assignments, or the roles a user holds and how.
    #[command(group(ArgGroup::new("of").required(true).args(["role", "user"])))]
    Assignments {
        /// The role (id or name).
        #[arg(long)]
        role: Option<String>,
        /// The user (id or address).
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

/// A mailbox permission's scope, relative to the person holding the role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// Nobody's mailboxes.
    None,
    /// Their own.
    Own,
    /// Own, and those of everyone they supervise.
    Subordinates,
    /// Own, and those of everyone in their departments (member or head) and below.
    Department,
    /// Every mailbox of the organisation.
    All,
}

impl ScopeArg {
    fn proto(self) -> apb::Scope {
        match self {
            ScopeArg::None => apb::Scope::None,
            ScopeArg::Own => apb::Scope::Own,
            ScopeArg::Subordinates => apb::Scope::Subordinates,
            ScopeArg::Department => apb::Scope::Department,
            ScopeArg::All => apb::Scope::All,
        }
    }
}

/// A scope as the flags spell it (none, own, subordinates, department, all); empty for one
/// this build does not know.
pub(super) fn scope_name(scope: i32) -> String {
    short_name(
        apb::Scope::try_from(scope).ok().map(|s| s.as_str_name()),
        "SCOPE_",
    )
    .to_lowercase()
}

// What a role grants, each flag optional (a flattened struct's doc comment would become the
// help of a command without one, hence a plain comment).
#[derive(Args, Default, Clone, Debug)]
pub struct PermissionFlags {
    /// See mailboxes in the company's list: none, own, subordinates, department, all.
    #[arg(long, value_enum, value_name = "SCOPE")]
    view_list: Option<ScopeArg>,
    /// Connect mailboxes for their owners (one's own included); a scope as for --view-list.
    #[arg(long, value_enum, value_name = "SCOPE", hide_possible_values = true)]
    connect: Option<ScopeArg>,
    /// Change mailbox settings, sync now, disconnect; a scope as for --view-list.
    #[arg(long, value_enum, value_name = "SCOPE", hide_possible_values = true)]
    modify: Option<ScopeArg>,
    /// Give or take away read access to mailboxes (never to oneself, unless an org admin); a scope as for --view-list.
    #[arg(long, value_enum, value_name = "SCOPE", hide_possible_values = true)]
    grant_read: Option<ScopeArg>,
    /// Invite people (`--invite=false` takes it away).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    invite: Option<bool>,
    /// Configure roles and their assignments; only an org admin may give it
    /// (`--manage-permissions=false` takes it away).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    manage_permissions: Option<bool>,
}

impl PermissionFlags {
    /// Sets the given permissions on `p`; the field-mask paths of those set, in the API's
    /// names.
    fn apply(&self, p: &mut apb::RolePermissions) -> Vec<&'static str> {
        let mut paths = Vec::new();
        let scopes = [
            (
                self.view_list,
                &mut p.view_mailbox_list,
                "view_mailbox_list",
            ),
            (self.connect, &mut p.connect_mailboxes, "connect_mailboxes"),
            (self.modify, &mut p.modify_mailboxes, "modify_mailboxes"),
            (
                self.grant_read,
                &mut p.grant_read_access,
                "grant_read_access",
            ),
        ];
        for (flag, field, path) in scopes {
            if let Some(s) = flag {
                *field = s.proto() as i32;
                paths.push(path);
            }
        }
        let switches = [
            (self.invite, &mut p.invite, "invite"),
            (
                self.manage_permissions,
                &mut p.manage_permissions,
                "manage_permissions",
            ),
        ];
        for (flag, field, path) in switches {
            if let Some(on) = flag {
                *field = on;
                paths.push(path);
            }
        }
        paths
    }
}

// Whom an assignment names: exactly one of --user, --department, --heads, --everyone-else.
#[derive(Args, Clone, Debug)]
#[command(group(ArgGroup::new("to").required(true).args(["user", "department", "heads", "everyone_else"])))]
pub struct AssigneeArgs {
    /// A user (id or address).
    #[arg(long)]
    user: Option<String>,
    /// A department's direct members (by department id).
    #[arg(long)]
    department: Option<String>,
    /// With --department: its members and those of every department below it.
    #[arg(long, requires = "department")]
    with_sub_departments: bool,
    /// Everyone who heads a department.
    #[arg(long)]
    heads: bool,
    /// Every active non-admin who holds no other role.
    #[arg(long)]
    everyone_else: bool,
}

/// An assignee, its user not yet resolved from an address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    User(String),
    Members(String),
    Tree(String),
    Heads,
    EveryoneElse,
}

impl AssigneeArgs {
    fn target(&self) -> anyhow::Result<Target> {
        if self.with_sub_departments && self.department.is_none() {
            bail!("--with-sub-departments goes with --department <id>");
        }
        Ok(match (&self.user, &self.department) {
            (Some(u), None) => Target::User(u.clone()),
            (None, Some(d)) if self.with_sub_departments => Target::Tree(d.clone()),
            (None, Some(d)) => Target::Members(d.clone()),
            _ if self.heads => Target::Heads,
            _ if self.everyone_else => Target::EveryoneElse,
            _ => bail!("give one of --user, --department, --heads or --everyone-else"),
        })
    }
}

/// The subject an assignment request names, in the role's organisation `org_id`.
fn subject_ref(target: &Target, org_id: &str) -> apb::SubjectRef {
    let (kind, id, relation) = match target {
        Target::User(u) => ("user", u.as_str(), ""),
        Target::Members(d) => ("department", d.as_str(), "member"),
        Target::Tree(d) => ("department", d.as_str(), "all_members"),
        Target::Heads => ("org", org_id, "head"),
        Target::EveryoneElse => ("org", org_id, "everyone_else"),
    };
    apb::SubjectRef {
        object: object(kind, id),
        relation: relation.into(),
    }
}

/// The role a name or id means: the one with that id, else the one with that display name
/// (case-insensitively). Several roles with names that differ only in case (or in what
/// lowercasing makes alike) are refused with their ids, so the person picks the one they mean.
fn find_role<'a>(roles: &'a [apb::Role], wanted: &str) -> anyhow::Result<&'a apb::Role> {
    let wanted = wanted.trim();
    if let Some(r) = roles.iter().find(|r| r.id == wanted) {
        return Ok(r);
    }
    let lower = wanted.to_lowercase();
    let named: Vec<&apb::Role> = roles
        .iter()
        .filter(|r| r.display_name.to_lowercase() == lower)
        .collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => {
            let known: Vec<&str> = roles.iter().map(|r| r.display_name.as_str()).collect();
            bail!(
                "no role `{wanted}` in your organisation (its roles: {})",
                known.join(", ")
            )
        }
        many => {
            let ids: Vec<String> = many
                .iter()
                .map(|r| format!("{} (`{}`)", r.id, r.display_name))
                .collect();
            bail!(
                "{} roles are named `{wanted}` (ignoring case): {}; name the one you mean by its id",
                many.len(),
                ids.join(", ")
            )
        }
    }
}

/// The body of a CreateRole: the name and the permissions given; the others none.
fn new_role(name: &str, flags: &PermissionFlags) -> apb::Role {
    let mut permissions = apb::RolePermissions {
        view_mailbox_list: apb::Scope::None as i32,
        connect_mailboxes: apb::Scope::None as i32,
        modify_mailboxes: apb::Scope::None as i32,
        grant_read_access: apb::Scope::None as i32,
        invite: false,
        manage_permissions: false,
    };
    flags.apply(&mut permissions);
    apb::Role {
        display_name: name.to_owned(),
        permissions: Some(permissions),
        ..Default::default()
    }
}

/// What `roles update` changes, besides the permissions.
#[derive(Debug, Default, Clone)]
struct Edit {
    name: Option<String>,
    /// `Some(true)` hides, `Some(false)` shows.
    hidden: Option<bool>,
}

/// An UpdateRole of `current` (as just read, for its etag) whose mask names exactly what the
/// flags give.
fn update_request(
    current: &apb::Role,
    flags: &PermissionFlags,
    edit: &Edit,
) -> anyhow::Result<apb::UpdateRoleRequest> {
    let mut role = current.clone();
    let mut paths = Vec::new();
    if let Some(name) = &edit.name {
        role.display_name = name.clone();
        paths.push("display_name".to_owned());
    }
    if let Some(hidden) = edit.hidden {
        role.hidden = hidden;
        paths.push("hidden".to_owned());
    }
    let permissions = role.permissions.get_or_insert_with(Default::default);
    paths.extend(
        flags
            .apply(permissions)
            .into_iter()
            .map(|p| format!("permissions.{p}")),
    );
    if paths.is_empty() {
        bail!("nothing to change: give --name, --hide, --show or a permission flag (see --help)");
    }
    Ok(apb::UpdateRoleRequest {
        role: Some(role),
        update_mask: Some(prost_types::FieldMask { paths }),
    })
}

const ROLE_COLUMNS: [&str; 13] = [
    "id",
    "name",
    "kind",
    "hidden",
    "view_list",
    "connect",
    "modify",
    "grant_read",
    "invite",
    "manage_permissions",
    "assignments",
    "updated",
    "etag",
];

fn role_row(r: &apb::Role) -> Vec<Value> {
    let p = r.permissions.unwrap_or_default();
    let kind = short_name(
        apb::RoleKind::try_from(r.kind)
            .ok()
            .map(|k| k.as_str_name()),
        "ROLE_KIND_",
    )
    .to_lowercase();
    vec![
        json!(r.id),
        json!(r.display_name),
        json!(kind),
        json!(r.hidden),
        json!(scope_name(p.view_mailbox_list)),
        json!(scope_name(p.connect_mailboxes)),
        json!(scope_name(p.modify_mailboxes)),
        json!(scope_name(p.grant_read_access)),
        json!(p.invite),
        json!(p.manage_permissions),
        json!(r.assignment_count),
        json!(time(r.update_time.as_ref(), Clock::Minutes)),
        json!(r.etag),
    ]
}

/// One role, with the revision a change was written at (pass it to `check --at`).
fn one_role(r: &apb::Role) -> Rows {
    let mut rows = Rows::one(ROLE_COLUMNS.to_vec(), role_row(r));
    if let Some(at) = &r.written_at {
        rows.footer.push(("revision", json!(at.token)));
    }
    rows
}

/// Every role of the caller's organisation, page after page.
async fn all_roles(c: &mut Clients, show_hidden: bool) -> anyhow::Result<Vec<apb::Role>> {
    let mut roles = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = c.request(apb::ListRolesRequest {
            org_id: String::new(),
            page_size: 200,
            page_token,
            show_hidden,
        });
        let page = c.access.list_roles(request).await.answer()?;
        roles.extend(page.roles);
        if page.next_page_token.is_empty() {
            return Ok(roles);
        }
        page_token = page.next_page_token;
    }
}

/// The role a name or id means, as it is now (with its current etag).
async fn resolve_role(c: &mut Clients, wanted: &str) -> anyhow::Result<apb::Role> {
    let roles = all_roles(c, true).await?;
    let id = find_role(&roles, wanted)?.id.clone();
    let request = c.request(apb::GetRoleRequest { id });
    c.access.get_role(request).await.answer()
}

/// The relationship an assignment stands for (`role:R#assignee@…`), to print.
fn assignment(role_id: &str, subject: &apb::SubjectRef) -> apb::Relationship {
    apb::Relationship {
        resource: object("role", role_id),
        relation: "assignee".into(),
        subject: Some(subject.clone()),
    }
}

/// The name a role is printed with in sentences.
pub(super) fn role_label(name: &str) -> String {
    format!("role “{name}”")
}

pub async fn run(c: &mut Clients, cmd: RolesCommand) -> anyhow::Result<Rows> {
    Ok(match cmd {
        RolesCommand::List { hidden } => {
            let roles = all_roles(c, hidden).await?;
            let mut rows = Rows::new("roles", ROLE_COLUMNS.to_vec());
            rows.rows = roles.iter().map(role_row).collect();
            rows
        }
        RolesCommand::Get { role } => one_role(&resolve_role(c, &role).await?),
        RolesCommand::Create { name, permissions } => {
            let request = c.request(apb::CreateRoleRequest {
                role: Some(new_role(&name, &permissions)),
            });
            one_role(&c.access.create_role(request).await.answer()?)
        }
        RolesCommand::Update {
            role,
            permissions,
            name,
            hide,
            show,
        } => {
            let edit = Edit {
                name,
                hidden: (hide || show).then_some(hide),
            };
            // Checked before asking anything, so a mistyped call costs no round trip.
            update_request(&apb::Role::default(), &permissions, &edit)?;
            let current = resolve_role(c, &role).await?;
            let request = c.request(update_request(&current, &permissions, &edit)?);
            one_role(&c.access.update_role(request).await.answer()?)
        }
        RolesCommand::Clone { role, name } => {
            let id = resolve_role(c, &role).await?.id;
            let request = c.request(apb::CloneRoleRequest {
                id,
                display_name: name.unwrap_or_default(),
            });
            one_role(&c.access.clone_role(request).await.answer()?)
        }
        RolesCommand::Delete { role } => {
            let current = resolve_role(c, &role).await?;
            let request = c.request(apb::DeleteRoleRequest {
                id: current.id.clone(),
                etag: current.etag.clone(),
            });
            let deleted = c.access.delete_role(request).await.answer()?;
            Rows::one(
                vec!["deleted", "id", "revision"],
                vec![
                    json!(current.display_name),
                    json!(current.id),
                    json!(deleted.deleted_at.unwrap_or_default().token),
                ],
            )
        }
        RolesCommand::Assign { role, to } => {
            let (role, subject) = role_and_subject(c, &role, &to).await?;
            let request = c.request(apb::AssignRoleRequest {
                role_id: role.id.clone(),
                subject: Some(subject.clone()),
            });
            let written = c.access.assign_role(request).await.answer()?;
            let line = assignment_line(c, &role, &subject).await;
            Rows::one(
                vec!["assigned", "revision"],
                vec![
                    json!(line),
                    json!(written.written_at.unwrap_or_default().token),
                ],
            )
        }
        RolesCommand::Unassign { role, to } => {
            let (role, subject) = role_and_subject(c, &role, &to).await?;
            let request = c.request(apb::UnassignRoleRequest {
                role_id: role.id.clone(),
                subject: Some(subject.clone()),
            });
            let done = c.access.unassign_role(request).await.answer()?;
            let line = assignment_line(c, &role, &subject).await.replacen(
                " is assigned to ",
                " is no longer assigned to ",
                1,
            );
            Rows::one(
                vec!["unassigned", "revision"],
                vec![
                    json!(line),
                    json!(done.unassigned_at.unwrap_or_default().token),
                ],
            )
        }
        RolesCommand::Assignments {
            role,
            user,
            page_size,
            page_token,
        } => {
            let (role_id, user_id) = match (role, user) {
                (Some(r), None) => (resolve_role(c, &r).await?.id, String::new()),
                (None, Some(u)) => (String::new(), resolve_user(c, &u).await?),
                _ => bail!("give --role or --user"),
            };
            let request = c.request(apb::ListRoleAssignmentsRequest {
                org_id: String::new(),
                role_id,
                user_id,
                page_size,
                page_token,
                at_least_as_fresh_as: None,
            });
            let r = c.access.list_role_assignments(request).await.answer()?;
            assignment_rows(c, &r).await
        }
    })
}

async fn role_and_subject(
    c: &mut Clients,
    role: &str,
    to: &AssigneeArgs,
) -> anyhow::Result<(apb::Role, apb::SubjectRef)> {
    let target = match to.target()? {
        Target::User(u) => Target::User(resolve_user(c, &u).await?),
        other => other,
    };
    let role = resolve_role(c, role).await?;
    let subject = subject_ref(&target, &role.org_id);
    Ok((role, subject))
}

/// An assignment in words, with the names of the people and departments it mentions.
async fn assignment_line(c: &mut Clients, role: &apb::Role, subject: &apb::SubjectRef) -> String {
    let rel = assignment(&role.id, subject);
    let known = HashMap::from([(role.id.clone(), role_label(&role.display_name))]);
    let names = names_in(c, std::slice::from_ref(&rel), known).await;
    sentence(&rel, &names)
}

async fn assignment_rows(c: &mut Clients, r: &apb::ListRoleAssignmentsResponse) -> Rows {
    let mut every = Vec::new();
    let mut known = HashMap::new();
    for a in &r.assignments {
        known.insert(a.role_id.clone(), role_label(&a.role_display_name));
        every.push(assignment(
            &a.role_id,
            &a.subject.clone().unwrap_or_default(),
        ));
        every.extend(a.via.iter().cloned());
    }
    let names = names_in(c, &every, known).await;
    let mut rows = Rows::new(
        "role_assignments",
        vec!["role_id", "role", "assignment", "via", "relationship"],
    );
    rows.rows = r
        .assignments
        .iter()
        .map(|a| {
            let rel = assignment(&a.role_id, &a.subject.clone().unwrap_or_default());
            let via: Vec<String> = a.via.iter().map(|v| sentence(v, &names)).collect();
            vec![
                json!(a.role_id),
                json!(a.role_display_name),
                json!(sentence(&rel, &names)),
                json!(via.join("; ")),
                json!(describe(&rel)),
            ]
        })
        .collect();
    rows.footer
        .push(("next_page_token", json!(r.next_page_token)));
    rows.footer.push((
        "listed_at",
        json!(r.listed_at.clone().unwrap_or_default().token),
    ));
    rows
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        roles: RolesCommand,
    }

    fn parse(args: &[&str]) -> RolesCommand {
        match Cli::try_parse_from(std::iter::once("roles").chain(args.iter().copied())) {
            Ok(cli) => cli.roles,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    fn refused(args: &[&str]) -> String {
        match Cli::try_parse_from(std::iter::once("roles").chain(args.iter().copied())) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => e.to_string(),
        }
    }

    fn role(id: &str, name: &str) -> apb::Role {
        apb::Role {
            id: id.into(),
            org_id: "o-1".into(),
            display_name: name.into(),
            etag: "7".into(),
            permissions: Some(apb::RolePermissions {
                view_mailbox_list: apb::Scope::Subordinates as i32,
                connect_mailboxes: apb::Scope::Own as i32,
                modify_mailboxes: apb::Scope::Own as i32,
                grant_read_access: apb::Scope::Own as i32,
                invite: true,
                manage_permissions: false,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_role_grants_what_its_flags_say_and_nothing_else() {
        let RolesCommand::Create { name, permissions } = parse(&[
            "create",
            "Department heads",
            "--view-list",
            "department",
            "--connect",
            "department",
            "--modify",
            "department",
            "--grant-read",
            "own",
            "--invite",
        ]) else {
            panic!("not create")
        };
        let r = new_role(&name, &permissions);
        assert_eq!(r.display_name, "Department heads");
        let p = r.permissions.expect("permissions");
        assert_eq!(p.view_mailbox_list, apb::Scope::Department as i32);
        assert_eq!(p.connect_mailboxes, apb::Scope::Department as i32);
        assert_eq!(p.modify_mailboxes, apb::Scope::Department as i32);
        assert_eq!(p.grant_read_access, apb::Scope::Own as i32);
        assert!(p.invite && !p.manage_permissions);

        let RolesCommand::Create { permissions, .. } = parse(&["create", "No mail"]) else {
            panic!("not create")
        };
        let p = new_role("No mail", &permissions).permissions.expect("set");
        assert_eq!(p.view_mailbox_list, apb::Scope::None as i32);
        assert_eq!(p.connect_mailboxes, apb::Scope::None as i32);
        assert!(!p.invite && !p.manage_permissions);
    }

    #[test]
    fn an_update_masks_exactly_the_flags_given_and_carries_the_etag() {
        let RolesCommand::Update {
            role: wanted,
            permissions,
            name,
            hide,
            show,
        } = parse(&[
            "update",
            "Supervisor",
            "--modify",
            "subordinates",
            "--invite=false",
            "--name",
            "Team leads",
            "--hide",
        ])
        else {
            panic!("not update")
        };
        assert_eq!(wanted, "Supervisor");
        let edit = Edit {
            name,
            hidden: (hide || show).then_some(hide),
        };
        let current = role("r-1", "Supervisor");
        let request = update_request(&current, &permissions, &edit).expect("a change");
        let mask = request.update_mask.expect("mask").paths;
        assert_eq!(
            mask,
            [
                "display_name",
                "hidden",
                "permissions.modify_mailboxes",
                "permissions.invite"
            ]
        );
        let sent = request.role.expect("role");
        assert_eq!((sent.id.as_str(), sent.etag.as_str()), ("r-1", "7"));
        assert_eq!(sent.display_name, "Team leads");
        assert!(sent.hidden);
        let p = sent.permissions.expect("permissions");
        assert_eq!(p.modify_mailboxes, apb::Scope::Subordinates as i32);
        assert!(!p.invite);
        // Untouched fields keep what the role has (and are not in the mask anyway).
        assert_eq!(p.view_mailbox_list, apb::Scope::Subordinates as i32);
    }

    #[test]
    fn an_update_without_a_change_is_refused_before_any_call() {
        let RolesCommand::Update { permissions, .. } = parse(&["update", "Manager"]) else {
            panic!("not update")
        };
        let err = update_request(&role("r", "Manager"), &permissions, &Edit::default())
            .expect_err("nothing to change");
        assert!(err.to_string().contains("nothing to change"), "{err}");
        let RolesCommand::Update { show, hide, .. } = parse(&["update", "Manager", "--show"])
        else {
            panic!("not update")
        };
        let edit = Edit {
            hidden: (hide || show).then_some(hide),
            ..Edit::default()
        };
        let request = update_request(&role("r", "Manager"), &PermissionFlags::default(), &edit)
            .expect("a change");
        assert_eq!(request.update_mask.expect("mask").paths, ["hidden"]);
        assert!(!request.role.expect("role").hidden);
        assert!(refused(&["update", "Manager", "--hide", "--show"]).contains("cannot be used"));
        assert!(refused(&["update", "Manager", "--modify", "everyone"]).contains("everyone"));
    }

    #[test]
    fn each_assignment_form_names_its_subject() {
        let cases: [(&[&str], &str, &str, &str); 5] = [
            (&["--user", "u-1"], "user", "u-1", ""),
            (&["--department", "d-1"], "department", "d-1", "member"),
            (
                &["--department", "d-1", "--with-sub-departments"],
                "department",
                "d-1",
                "all_members",
            ),
            (&["--heads"], "org", "o-1", "head"),
            (&["--everyone-else"], "org", "o-1", "everyone_else"),
        ];
        for (flags, kind, id, relation) in cases {
            let args: Vec<&str> = ["assign", "HR"].iter().chain(flags).copied().collect();
            let RolesCommand::Assign { role, to } = parse(&args) else {
                panic!("not assign")
            };
            assert_eq!(role, "HR");
            let subject = subject_ref(&to.target().expect("one target"), "o-1");
            let object = subject.object.expect("object");
            assert_eq!(
                (
                    object.r#type.as_str(),
                    object.id.as_str(),
                    subject.relation.as_str()
                ),
                (kind, id, relation),
                "{flags:?}"
            );
        }
        assert!(refused(&["assign", "HR"]).contains("required"));
        assert!(refused(&["unassign", "HR", "--heads", "--user", "u"]).contains("cannot be used"));
        let RolesCommand::Assign { to, .. } =
            parse(&["assign", "HR", "--with-sub-departments", "--heads"])
        else {
            panic!("not assign")
        };
        let err = to.target().expect_err("sub-departments of nothing");
        assert!(err.to_string().contains("--department"), "{err}");
        assert!(refused(&["assignments"]).contains("required"));
    }

    #[test]
    fn a_role_is_found_by_id_or_by_name_in_any_case() {
        let roles = [role("r-1", "Supervisor"), role("r-2", "HR")];
        assert_eq!(find_role(&roles, "r-2").expect("by id").display_name, "HR");
        assert_eq!(find_role(&roles, "hr").expect("by name").id, "r-2");
        assert_eq!(
            find_role(&roles, " supervisor ").expect("trimmed").id,
            "r-1"
        );
        let err = find_role(&roles, "Accounting").expect_err("unknown");
        assert!(
            err.to_string().contains("its roles: Supervisor, HR"),
            "{err}"
        );
    }

    #[test]
    fn a_name_several_roles_answer_to_is_refused_with_their_ids() {
        let roles = [role("r-1", "HR"), role("r-2", "Hr"), role("r-3", "Sales")];
        let err = find_role(&roles, "hr").expect_err("ambiguous");
        assert_eq!(
            err.to_string(),
            "2 roles are named `hr` (ignoring case): r-1 (`HR`), r-2 (`Hr`); name the one you mean by its id"
        );
        assert_eq!(find_role(&roles, "r-2").expect("by id").display_name, "Hr");
        assert_eq!(find_role(&roles, "sales").expect("one").id, "r-3");
    }

    #[test]
    fn a_role_prints_its_scopes_as_the_flags_spell_them() {
        let mut r = role("r-1", "Supervisor");
        r.kind = apb::RoleKind::Supervisor as i32;
        let rows = one_role(&r);
        let json: Value =
            serde_json::from_str(&rows.render(crate::output::Format::Json)).expect("JSON");
        assert_eq!(json["kind"], "supervisor");
        assert_eq!(json["view_list"], "subordinates");
        assert_eq!(json["connect"], "own");
        assert_eq!(json["invite"], true);
        assert_eq!(json["etag"], "7");
    }
}
