//! Relationships, roles and permissions.
//!
//! Relationships are the stored facts (`department#head@user`, `role#assignee@user`, …);
//! permissions ([`mailroom_types::Permission`], one enum for every service) are computed from
//! them and never stored. Each organisation has **roles** ([`RoleDef`]): named sets of
//! [`Grants`], each mailbox permission at a [`Scope`] relative to its holder, assigned to
//! people and departments ([`Assignee`]). A user's grants are the union of their roles':
//!
//! | permission | who holds it |
//! |---|---|
//! | `mailbox.view` | a role whose list or change scope reaches the owner |
//! | `mailbox.modify`, `mailbox.sync` | a role whose change scope reaches the owner |
//! | `mailbox.connect` | a role whose connect scope reaches the (future) owner |
//! | `mailbox.grant_read` | a role whose grant-read scope reaches the owner |
//! | `mailbox.read_mail` | owner, reader — never a role, not even Administrator |
//! | `org.invite` | a role that may invite, or everyone when identity says so |
//! | `org.manage_permissions` | a role that may configure access |
//! | `org.register_users` | org admin |
//!
//! Roles held: Administrator for org admins; the roles assigned to the user, to a department
//! they are a member of (or a tree above it), or to department heads if they head one; and
//! only when none of those apply, the roles assigned to "everyone else". Nobody holds a
//! permission while dismissed.

use mailroom_types::{DepartmentId, MailboxId, Permission, RoleId, UserId};
use serde::{Deserialize, Serialize};

/// A stored fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Relationship {
    /// `org#admin@user`
    Admin(UserId),
    /// `org#inviter@org#member`: everyone in the organisation may invite.
    EveryoneInvites,
    /// `department#head@user`
    Head(DepartmentId, UserId),
    /// `department#parent@department`: (child, parent)
    Parent(DepartmentId, DepartmentId),
    /// `user#member@department`
    Member(UserId, DepartmentId),
    /// `mailbox#owner@user`
    Owner(MailboxId, UserId),
    /// `mailbox#reader@user`
    Reader(MailboxId, UserId),
    /// `role#assignee@…`: the role is assigned to these people.
    Assignee(RoleId, Assignee),
}

/// How far a role's permission reaches, relative to its holder. Each includes the ones
/// before it, so the union of several roles is the largest.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Nobody's mailboxes.
    #[default]
    None,
    /// The holder's own mailboxes.
    Own,
    /// Own, and those of everyone the holder supervises.
    Subordinates,
    /// Own, and those of everyone in the holder's departments (member or head) and below.
    Department,
    /// Every mailbox of the organisation.
    All,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::None,
        Scope::Own,
        Scope::Subordinates,
        Scope::Department,
        Scope::All,
    ];

    /// The stored (and CLI) name: none, own, subordinates, department, all.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::None => "none",
            Scope::Own => "own",
            Scope::Subordinates => "subordinates",
            Scope::Department => "department",
            Scope::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// In words, for explanations and denials ("own department and below").
    pub const fn describe(self) -> &'static str {
        match self {
            Scope::None => "none",
            Scope::Own => "own",
            Scope::Subordinates => "subordinates",
            Scope::Department => "own department and below",
            Scope::All => "everyone",
        }
    }
}

/// What a role grants. Reading mail is deliberately absent: it always takes the owner or an
/// explicit reader grant on the mailbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grants {
    /// See mailboxes in the list (and their settings).
    pub view_mailbox_list: Scope,
    /// Connect a mailbox for its owner (self included).
    pub connect_mailboxes: Scope,
    /// Change mailbox settings, sync, disconnect.
    pub modify_mailboxes: Scope,
    /// Add or remove readers of a mailbox.
    pub grant_read_access: Scope,
    /// Invite people to the organisation.
    pub invite: bool,
    /// Configure roles and their assignments.
    pub manage_permissions: bool,
}

impl Grants {
    pub const NONE: Grants = Grants {
        view_mailbox_list: Scope::None,
        connect_mailboxes: Scope::None,
        modify_mailboxes: Scope::None,
        grant_read_access: Scope::None,
        invite: false,
        manage_permissions: false,
    };

    pub const ALL: Grants = Grants {
        view_mailbox_list: Scope::All,
        connect_mailboxes: Scope::All,
        modify_mailboxes: Scope::All,
        grant_read_access: Scope::All,
        invite: true,
        manage_permissions: true,
    };

    /// The union of two grants: each permission at the larger scope.
    pub fn join(self, o: Grants) -> Grants {
        Grants {
            view_mailbox_list: self.view_mailbox_list.max(o.view_mailbox_list),
            connect_mailboxes: self.connect_mailboxes.max(o.connect_mailboxes),
            modify_mailboxes: self.modify_mailboxes.max(o.modify_mailboxes),
            grant_read_access: self.grant_read_access.max(o.grant_read_access),
            invite: self.invite || o.invite,
            manage_permissions: self.manage_permissions || o.manage_permissions,
        }
    }

    /// Whether every permission here is at most what `holder` has (pointwise `≤`).
    pub fn within(self, holder: Grants) -> bool {
        self.view_mailbox_list <= holder.view_mailbox_list
            && self.connect_mailboxes <= holder.connect_mailboxes
            && self.modify_mailboxes <= holder.modify_mailboxes
            && self.grant_read_access <= holder.grant_read_access
            && (!self.invite || holder.invite)
            && (!self.manage_permissions || holder.manage_permissions)
    }

    /// The scope at which these grants give a mailbox permission. Viewing includes what may be
    /// changed; reading mail is never granted by a role ([`Scope::None`], always).
    pub fn scope_for(self, p: Permission) -> Scope {
        match p {
            Permission::MailboxView => self.view_mailbox_list.max(self.modify_mailboxes),
            Permission::MailboxModify | Permission::MailboxSync => self.modify_mailboxes,
            Permission::MailboxConnect => self.connect_mailboxes,
            Permission::MailboxGrantRead => self.grant_read_access,
            Permission::MailboxReadMail
            | Permission::OrgInvite
            | Permission::OrgRegisterUsers
            | Permission::OrgManagePermissions => Scope::None,
        }
    }
}

/// The three roles every organisation has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// Every org admin (identity's flag), with fixed grants; cannot be edited, assigned or
    /// deleted.
    Administrator,
    /// By default assigned to everyone who heads a department.
    Supervisor,
    /// By default assigned to everyone else.
    Manager,
}

impl Builtin {
    pub const fn as_str(self) -> &'static str {
        match self {
            Builtin::Administrator => "administrator",
            Builtin::Supervisor => "supervisor",
            Builtin::Manager => "manager",
        }
    }

    pub fn parse(s: &str) -> Option<Builtin> {
        [
            Builtin::Administrator,
            Builtin::Supervisor,
            Builtin::Manager,
        ]
        .into_iter()
        .find(|b| b.as_str() == s)
    }

    /// The grants a new organisation starts with.
    pub const fn default_grants(self) -> Grants {
        match self {
            Builtin::Administrator => Grants::ALL,
            Builtin::Supervisor => Grants {
                view_mailbox_list: Scope::Subordinates,
                connect_mailboxes: Scope::Own,
                modify_mailboxes: Scope::Own,
                grant_read_access: Scope::Own,
                invite: false,
                manage_permissions: false,
            },
            Builtin::Manager => Grants {
                view_mailbox_list: Scope::Own,
                connect_mailboxes: Scope::Own,
                modify_mailboxes: Scope::Own,
                grant_read_access: Scope::Own,
                invite: false,
                manage_permissions: false,
            },
        }
    }

    /// The display name a new organisation's role gets.
    pub const fn default_name(self) -> &'static str {
        match self {
            Builtin::Administrator => "Administrator",
            Builtin::Supervisor => "Supervisor",
            Builtin::Manager => "Manager",
        }
    }
}

/// A role of one organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDef {
    pub id: RoleId,
    /// `None` for a custom role.
    pub builtin: Option<Builtin>,
    /// 1–100 characters, unique in the organisation (case-insensitively).
    pub name: String,
    /// Display only: a hidden role is evaluated like any other.
    pub hidden: bool,
    pub grants: Grants,
    /// Bumped by each change; the API's etag.
    pub version: i64,
}

/// To whom a role is assigned (`role#assignee@…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Assignee {
    /// `user:U`
    User(UserId),
    /// `department:D#member`: the department's direct members.
    Members(DepartmentId),
    /// `department:D#all_members`: members of D and of every department below it.
    Tree(DepartmentId),
    /// `org:O#head`: everyone who heads a department.
    Heads,
    /// `org:O#everyone_else`: every active non-admin holding no other role.
    EveryoneElse,
}

pub use crate::legacy::{Audience, ReadAccessGrants, Settings};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("department {0} cannot be its own ancestor: the parent would make a cycle")]
    Cycle(DepartmentId),
    #[error("`{0}` is a mailbox permission and needs a mailbox")]
    NeedsMailbox(&'static str),
}
