//! Relationships and permissions.
//!
//! Relationships are the stored facts (`department#head@user`, …); permissions
//! ([`mailroom_types::Permission`], one enum for every service) are computed from them and
//! never stored:
//!
//! | permission | who holds it (with the default [`Settings`]) |
//! |---|---|
//! | `mailbox.view` | owner, whoever may modify it, org admin, mailbox manager, a supervisor of the owner |
//! | `mailbox.modify`, `mailbox.sync` | owner, org admin, mailbox manager |
//! | `mailbox.read_mail` | owner, reader — never admin or supervisor by position alone |
//! | `org.invite` | org admin, inviter, and the org's invite audience |
//! | `org.register_users`, `org.manage_permissions` | org admin |
//!
//! A supervisor of a user is the head of the user's department or of any department above it
//! (and, for a user who heads departments, the heads above those). Nobody holds a permission
//! while dismissed.
//!
//! Each organisation chooses, in its [`Settings`], the [`Audience`] that may view the mailbox
//! list, change mailbox settings and invite people, and whether owners may share read access.
//! Reading mail is never part of an audience: it takes the owner or a reader grant.

use mailroom_types::{DepartmentId, MailboxId, UserId};
use serde::{Deserialize, Serialize};

/// A stored fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Relationship {
    /// `org#admin@user`
    Admin(UserId),
    /// `org#mailbox_manager@user` (delegated "manage mailboxes")
    MailboxManager(UserId),
    /// `org#inviter@user`
    Inviter(UserId),
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
}

/// Who, beyond owners and explicit grants, holds an org-configurable permission. Each level
/// includes the ones before it; org admins are always included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    Admins,
    AdminsAndManagers,
    /// For mailboxes: supervisors of the owner. For inviting: anyone who heads a department.
    AdminsManagersAndSupervisors,
    Everyone,
}

/// Who may grant read access to a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadAccessGrants {
    /// Org admins only.
    Admins,
    /// Org admins, and owners for their own mailboxes.
    AdminsAndOwners,
}

/// An organisation's permission settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Settings {
    pub view_mailbox_list: Audience,
    pub modify_mailboxes: Audience,
    /// `Everyone` is what the relationship `org#inviter@org#member` stands for.
    pub invite: Audience,
    pub read_access_grants: ReadAccessGrants,
}

impl Default for Settings {
    /// The design's defaults: supervisors see their subordinates' mailboxes, managers change
    /// them, owners share read access. Inviting is for admins and inviters until identity
    /// says the organisation lets everyone invite.
    fn default() -> Self {
        Settings {
            view_mailbox_list: Audience::AdminsManagersAndSupervisors,
            modify_mailboxes: Audience::AdminsAndManagers,
            invite: Audience::Admins,
            read_access_grants: ReadAccessGrants::AdminsAndOwners,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("department {0} cannot be its own ancestor: the parent would make a cycle")]
    Cycle(DepartmentId),
    #[error("`{0}` is a mailbox permission and needs a mailbox")]
    NeedsMailbox(&'static str),
}
