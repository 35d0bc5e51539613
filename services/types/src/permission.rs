//! The permissions access control computes, one enum for every service that asks or answers.
//! Each travels on the wire under its [`name`](Permission::name).

use std::fmt;
use std::str::FromStr;

/// A computed permission: on a mailbox, or on the organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// See the mailbox in the list and its settings (never its mail).
    MailboxView,
    /// Change the mailbox's settings, login or CRM flags, or disconnect it.
    MailboxModify,
    /// Read the mailbox's mail.
    MailboxReadMail,
    /// Ask for a sync now.
    MailboxSync,
    /// Connect a mailbox for its owner (asked about the owner-to-be; owners connecting their
    /// own mailbox need it too).
    MailboxConnect,
    /// Add or remove readers of the mailbox.
    MailboxGrantRead,
    /// Invite people to the organisation.
    OrgInvite,
    /// Register people directly, and make or approve quick-registration links.
    OrgRegisterUsers,
    /// Change who holds which permission.
    OrgManagePermissions,
}

/// A permission name nobody knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission `{name}`; known: mailbox.view, mailbox.modify, mailbox.read_mail, mailbox.sync, mailbox.connect, mailbox.grant_read, org.invite, org.register_users, org.manage_permissions")]
pub struct UnknownPermission {
    pub name: String,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::MailboxView,
        Permission::MailboxModify,
        Permission::MailboxReadMail,
        Permission::MailboxSync,
        Permission::MailboxConnect,
        Permission::MailboxGrantRead,
        Permission::OrgInvite,
        Permission::OrgRegisterUsers,
        Permission::OrgManagePermissions,
    ];

    /// The permission called `name` on the wire, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Permission::MailboxView => "mailbox.view",
            Permission::MailboxModify => "mailbox.modify",
            Permission::MailboxReadMail => "mailbox.read_mail",
            Permission::MailboxSync => "mailbox.sync",
            Permission::MailboxConnect => "mailbox.connect",
            Permission::MailboxGrantRead => "mailbox.grant_read",
            Permission::OrgInvite => "org.invite",
            Permission::OrgRegisterUsers => "org.register_users",
            Permission::OrgManagePermissions => "org.manage_permissions",
        }
    }

    /// Whether the permission is on a mailbox (else on the organisation).
    pub const fn on_mailbox(self) -> bool {
        matches!(
            self,
            Permission::MailboxView
                | Permission::MailboxModify
                | Permission::MailboxReadMail
                | Permission::MailboxSync
                | Permission::MailboxConnect
                | Permission::MailboxGrantRead
        )
    }
}

impl FromStr for Permission {
    type Err = UnknownPermission;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::parse(name).ok_or_else(|| UnknownPermission {
            name: name.chars().take(64).collect(),
        })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back() {
        for p in Permission::ALL {
            assert_eq!(p.name().parse::<Permission>(), Ok(p));
        }
        assert!("mailbox.delete".parse::<Permission>().is_err());
    }
}
