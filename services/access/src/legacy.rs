//! The four fixed audiences per setting that roles replaced (issue 23). Kept so that old
//! changelog records still decode, and as the oracle the upgrade-equivalence tests compare the
//! roles that `1002_roles.sql` makes against. Nothing evaluates them any more. [`roles_for`]
//! is the migration's mapping from audiences to roles, in Rust.

use mailroom_types::RoleId;
use serde::{Deserialize, Serialize};

use crate::model::{Assignee, Builtin, Grants, RoleDef, Scope};

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

/// The display name of the custom role the upgrade gives the old mailbox managers.
pub const MAILBOX_MANAGERS_ROLE: &str = "Mailbox managers";
/// The display name of the custom role the upgrade gives the old inviters.
pub const INVITERS_ROLE: &str = "Inviters";

/// An audience as the upgrade migration numbers it: admins 0, + managers 1, + supervisors 2,
/// everyone 3 (`pg_temp.lvl` in `1002_roles.sql`, where any unknown text is 2).
pub const fn level(audience: Audience) -> u8 {
    match audience {
        Audience::Admins => 0,
        Audience::AdminsAndManagers => 1,
        Audience::AdminsManagersAndSupervisors => 2,
        Audience::Everyone => 3,
    }
}

/// Whether the upgrade writes the organisation's `everyone_invites` row: exactly when the
/// invite audience was everyone. That audience is never a role bit, so identity's flag
/// turning off still means "back to the roles".
pub const fn everyone_invites(settings: Settings) -> bool {
    matches!(settings.invite, Audience::Everyone)
}

/// The roles, and their assignments, that the upgrade migration (`1002_roles.sql`, design §3)
/// makes for an organisation with these settings, so that everyone keeps exactly what their
/// audiences gave them. `has_mailbox_managers`/`has_inviters`: whether the organisation had
/// any `org#mailbox_manager@user`/`org#inviter@user` row. The custom roles are returned with
/// no assignees: the migration assigns "Mailbox managers" to `user:U` for each old mailbox
/// manager U and "Inviters" to each old inviter (find them by [`MAILBOX_MANAGERS_ROLE`] and
/// [`INVITERS_ROLE`]); and writes `everyone_invites` when [`everyone_invites`] says so.
///
/// With `v = level(max(view_mailbox_list, modify_mailboxes))`, `m = level(modify_mailboxes)`,
/// `i = level(invite)` ([`level`]) and `gr = none` when `read_access_grants` is admins, else
/// `own`, where "f(x)" is `all` for 3, `subordinates` for 2 and `own` otherwise:
///
/// | role | view list | connect, modify | grant read | invite | assigned to |
/// |---|---|---|---|---|---|
/// | Administrator | all | all | all | yes (and manage) | org admins (identity's flag) |
/// | Supervisor | f(v) | f(m) | gr | `i == 2` | `org#head` |
/// | Manager | all if v = 3, else own | all if m = 3, else own | gr | no | `org#everyone_else` |
/// | Mailbox managers (if any) | all if v ≥ 1, else own | all if m ≥ 1, else own | gr | `i` is 1 or 2 | each old mailbox manager |
/// | Inviters (if any) | all if v = 3, else own | all if m = 3, else own | gr | yes | each old inviter |
///
/// Nobody but Administrator may manage permissions. Why this is exact: every role includes
/// what every non-admin had (own, or all where the audience was everyone), so a user with an
/// explicit role loses nothing by leaving "everyone else"; Supervisor adds what level 2 gave
/// heads, "Mailbox managers" what level ≥ 1 gave managers, "Inviters" the invite bit; their
/// union reproduces each combination. `tests/legacy.rs` proves it against the old semantics.
pub fn roles_for(
    settings: Settings,
    has_mailbox_managers: bool,
    has_inviters: bool,
) -> Vec<(RoleDef, Vec<Assignee>)> {
    let v = level(settings.view_mailbox_list).max(level(settings.modify_mailboxes));
    let m = level(settings.modify_mailboxes);
    let i = level(settings.invite);
    let gr = match settings.read_access_grants {
        ReadAccessGrants::Admins => Scope::None,
        ReadAccessGrants::AdminsAndOwners => Scope::Own,
    };
    let all_or_own = |everyone: bool| if everyone { Scope::All } else { Scope::Own };
    let with_heads = |level: u8| match level {
        3 => Scope::All,
        2 => Scope::Subordinates,
        _ => Scope::Own,
    };
    let grants = |view: Scope, change: Scope, invite: bool| Grants {
        view_mailbox_list: view,
        connect_mailboxes: change,
        modify_mailboxes: change,
        grant_read_access: gr,
        invite,
        manage_permissions: false,
    };
    let role = |builtin: Option<Builtin>, name: &str, grants: Grants| RoleDef {
        id: RoleId::new(),
        builtin,
        name: name.to_string(),
        hidden: false,
        grants,
        version: 1,
    };
    let mut out = vec![
        (
            role(
                Some(Builtin::Administrator),
                Builtin::Administrator.default_name(),
                Grants::ALL,
            ),
            Vec::new(),
        ),
        (
            role(
                Some(Builtin::Supervisor),
                Builtin::Supervisor.default_name(),
                grants(with_heads(v), with_heads(m), i == 2),
            ),
            vec![Assignee::Heads],
        ),
        (
            role(
                Some(Builtin::Manager),
                Builtin::Manager.default_name(),
                grants(all_or_own(v == 3), all_or_own(m == 3), false),
            ),
            vec![Assignee::EveryoneElse],
        ),
    ];
    if has_mailbox_managers {
        out.push((
            role(
                None,
                MAILBOX_MANAGERS_ROLE,
                grants(all_or_own(v >= 1), all_or_own(m >= 1), i == 1 || i == 2),
            ),
            Vec::new(),
        ));
    }
    if has_inviters {
        out.push((
            role(
                None,
                INVITERS_ROLE,
                grants(all_or_own(v == 3), all_or_own(m == 3), true),
            ),
            Vec::new(),
        ));
    }
    out
}
