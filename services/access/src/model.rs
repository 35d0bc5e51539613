//! Relationships and permissions.
//!
//! Relationships are the stored facts (`department#head@user`, …); permissions are computed
//! from them and never stored:
//!
//! | permission | who holds it |
//! |---|---|
//! | `mailbox.view` | owner, org admin, mailbox manager, a supervisor of the owner |
//! | `mailbox.modify`, `mailbox.sync` | owner, org admin, mailbox manager |
//! | `mailbox.read_mail` | owner, reader — never admin or supervisor by position alone |
//! | `org.invite` | org admin, inviter, everyone when the org lets everyone invite |
//! | `org.register_users`, `org.manage_permissions` | org admin |
//!
//! A supervisor of a user is the head of the user's department or of any department above it
//! (and, for a user who heads departments, the heads above those). Nobody holds a permission
//! while dismissed.

use uuid::Uuid;

pub type UserId = Uuid;
pub type DepartmentId = Uuid;
pub type MailboxId = Uuid;

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

/// A computed permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    MailboxView,
    MailboxModify,
    MailboxReadMail,
    MailboxSync,
    OrgInvite,
    OrgRegisterUsers,
    OrgManagePermissions,
}

impl Permission {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "mailbox.view" => Permission::MailboxView,
            "mailbox.modify" => Permission::MailboxModify,
            "mailbox.read_mail" => Permission::MailboxReadMail,
            "mailbox.sync" => Permission::MailboxSync,
            "org.invite" => Permission::OrgInvite,
            "org.register_users" => Permission::OrgRegisterUsers,
            "org.manage_permissions" => Permission::OrgManagePermissions,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Permission::MailboxView => "mailbox.view",
            Permission::MailboxModify => "mailbox.modify",
            Permission::MailboxReadMail => "mailbox.read_mail",
            Permission::MailboxSync => "mailbox.sync",
            Permission::OrgInvite => "org.invite",
            Permission::OrgRegisterUsers => "org.register_users",
            Permission::OrgManagePermissions => "org.manage_permissions",
        }
    }

    /// Whether the permission is on a mailbox (else on the organisation).
    pub fn on_mailbox(self) -> bool {
        matches!(
            self,
            Permission::MailboxView
                | Permission::MailboxModify
                | Permission::MailboxReadMail
                | Permission::MailboxSync
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("department {0} cannot be its own ancestor: the parent would make a cycle")]
    Cycle(DepartmentId),
    #[error("`{0}` is a mailbox permission and needs a mailbox")]
    NeedsMailbox(&'static str),
}
