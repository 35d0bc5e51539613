//! The four fixed audiences per setting that roles replaced (issue 23). Kept so that old
//! changelog records still decode, and as the oracle the upgrade-equivalence tests compare the
//! roles that `1002_roles.sql` makes against. Nothing evaluates them any more.

use serde::{Deserialize, Serialize};

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
