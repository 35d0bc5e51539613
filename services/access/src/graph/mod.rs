//! One organisation's relationships and roles in memory, indexed both ways.
//!
//! A check is the user's effective grants (the union of their roles, a few hash lookups once
//! [refreshed](OrgGraph::refresh)) and then how far the scope the permission has reaches: the
//! user themselves, a walk up the department tree from the owner's departments (bounded by
//! the number of parent edges: [`OrgGraph::write`] refuses cycles), or everyone. A lookup of
//! the mailboxes a holder reaches walks down the subtrees they head or belong to. No recursive
//! SQL and no policy interpretation on the hot path.
//!
//! - this file: the indexes, and the writes that keep both directions of each in step;
//! - `roles.rs`: role definitions and assignments, the roles a user holds, their union
//!   ([`OrgGraph::effective`]), how far a scope reaches ([`OrgGraph::reaches`]) and the cache
//!   of joined grants;
//! - `supervision.rs`: who supervises whom, up and down the department tree;
//! - `permissions.rs`: checks, their explanations, and the reverse lookups (which mailboxes,
//!   which users, how far a permission reaches);
//! - `delegation.rs`: what a holder of `org.manage_permissions` may give to whom.

mod delegation;
mod permissions;
mod roles;
mod supervision;

pub use roles::HeldRole;

use std::collections::{HashMap, HashSet};

/// The graph's indexes: keyed by ids, hashed with foldhash (several times faster than the
/// standard SipHash on 16-byte ids, which a check does about eight times; each map draws a
/// random seed, so keys cannot be chosen to collide).
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// A set hashed as [`Map`] is.
pub type Set<T> = HashSet<T, foldhash::fast::RandomState>;

use mailroom_types::{DepartmentId, MailboxId, UserId};

use crate::model::{ModelError, Relationship};

/// One organisation's users, relationships and roles. Each relation is held in both
/// directions (`heads` and `headed_by`, `owner` and `owned`, …) so that a check walks up and a
/// lookup walks down without scanning.
#[derive(Debug, Default, Clone)]
pub struct OrgGraph {
    users: Set<UserId>,
    dismissed: Set<UserId>,
    admins: Set<UserId>,
    parent: Map<DepartmentId, DepartmentId>,
    children: Map<DepartmentId, Set<DepartmentId>>,
    heads: Map<DepartmentId, Set<UserId>>,
    headed_by: Map<UserId, Set<DepartmentId>>,
    member_of: Map<UserId, Set<DepartmentId>>,
    members: Map<DepartmentId, Set<UserId>>,
    owner: Map<MailboxId, UserId>,
    owned: Map<UserId, Set<MailboxId>>,
    readers: Map<MailboxId, Set<UserId>>,
    reads: Map<UserId, Set<MailboxId>>,
    roles: roles::RoleIndex,
}

fn add<K: std::hash::Hash + Eq, V: std::hash::Hash + Eq>(
    map: &mut Map<K, Set<V>>,
    k: K,
    v: V,
) -> bool {
    map.entry(k).or_default().insert(v)
}

fn remove<K: std::hash::Hash + Eq, V: std::hash::Hash + Eq>(
    map: &mut Map<K, Set<V>>,
    k: &K,
    v: &V,
) -> bool {
    let Some(set) = map.get_mut(k) else {
        return false;
    };
    let removed = set.remove(v);
    if set.is_empty() {
        map.remove(k);
    }
    removed
}

impl OrgGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that a user belongs to the organisation, active or dismissed.
    pub fn set_user(&mut self, user: UserId, active: bool) {
        self.users.insert(user);
        if active {
            self.dismissed.remove(&user);
        } else {
            self.dismissed.insert(user);
        }
    }

    fn active(&self, user: &UserId) -> bool {
        self.users.contains(user) && !self.dismissed.contains(user)
    }

    /// Whether `user` is a user of this organisation and not dismissed.
    pub fn is_active(&self, user: UserId) -> bool {
        self.active(&user)
    }

    /// Adds a relationship; `Ok(false)` when it was already there. A mailbox has one owner and
    /// a department one parent: writing another replaces it.
    pub fn write(&mut self, rel: Relationship) -> Result<bool, ModelError> {
        Ok(match rel {
            Relationship::Admin(u) => self.admins.insert(u),
            Relationship::EveryoneInvites => {
                !std::mem::replace(&mut self.roles.everyone_invites, true)
            }
            Relationship::Head(d, u) => {
                add(&mut self.headed_by, u, d);
                let changed = add(&mut self.heads, d, u);
                self.rejoin(u);
                changed
            }
            Relationship::Parent(child, parent) => {
                if self.parent.get(&child) == Some(&parent) {
                    return Ok(false);
                }
                if child == parent || self.ancestors_or_self(parent).any(|a| a == child) {
                    return Err(ModelError::Cycle(child));
                }
                self.roles.derived = None;
                if let Some(old) = self.parent.insert(child, parent) {
                    remove(&mut self.children, &old, &child);
                }
                add(&mut self.children, parent, child)
            }
            Relationship::Member(u, d) => {
                add(&mut self.members, d, u);
                let changed = add(&mut self.member_of, u, d);
                self.rejoin(u);
                changed
            }
            Relationship::Owner(m, u) => {
                if let Some(old) = self.owner.insert(m, u) {
                    if old == u {
                        return Ok(false);
                    }
                    remove(&mut self.owned, &old, &m);
                }
                add(&mut self.owned, u, m)
            }
            Relationship::Reader(m, u) => {
                add(&mut self.reads, u, m);
                add(&mut self.readers, m, u)
            }
            Relationship::Assignee(role, who) => self.roles.assign(role, who),
        })
    }

    /// Removes a relationship; `false` when it was not there.
    pub fn delete(&mut self, rel: Relationship) -> bool {
        match rel {
            Relationship::Admin(u) => self.admins.remove(&u),
            Relationship::EveryoneInvites => {
                std::mem::replace(&mut self.roles.everyone_invites, false)
            }
            Relationship::Head(d, u) => {
                remove(&mut self.headed_by, &u, &d);
                let changed = remove(&mut self.heads, &d, &u);
                self.rejoin(u);
                changed
            }
            Relationship::Parent(child, parent) => {
                if self.parent.get(&child) != Some(&parent) {
                    return false;
                }
                self.roles.derived = None;
                self.parent.remove(&child);
                remove(&mut self.children, &parent, &child)
            }
            Relationship::Member(u, d) => {
                remove(&mut self.members, &d, &u);
                let changed = remove(&mut self.member_of, &u, &d);
                self.rejoin(u);
                changed
            }
            Relationship::Owner(m, u) => {
                if self.owner.get(&m) != Some(&u) {
                    return false;
                }
                self.owner.remove(&m);
                remove(&mut self.owned, &u, &m)
            }
            Relationship::Reader(m, u) => {
                remove(&mut self.reads, &u, &m);
                remove(&mut self.readers, &m, &u)
            }
            Relationship::Assignee(role, who) => self.roles.unassign(role, who),
        }
    }

    /// Records a relationship that is already stored. Unlike [`OrgGraph::write`] it accepts a
    /// parent that closes a cycle: identity's events about different departments can arrive
    /// out of order, so the mirror may pass through a cycle before the next event undoes it;
    /// every walk is bounded, so checks stay answerable meanwhile.
    pub fn apply(&mut self, rel: Relationship) -> bool {
        if let Relationship::Parent(child, parent) = rel {
            if self.parent.get(&child) == Some(&parent) {
                return false;
            }
            self.roles.derived = None;
            if let Some(old) = self.parent.insert(child, parent) {
                remove(&mut self.children, &old, &child);
            }
            return add(&mut self.children, parent, child);
        }
        self.write(rel).unwrap_or(false)
    }

    pub fn is_admin(&self, user: UserId) -> bool {
        self.active(&user) && self.admins.contains(&user)
    }

    pub fn owner_of(&self, mailbox: MailboxId) -> Option<UserId> {
        self.owner.get(&mailbox).copied()
    }

    /// How many relationships the graph holds (a gauge for memory).
    pub fn len(&self) -> usize {
        self.admins.len()
            + usize::from(self.roles.everyone_invites)
            + self.roles.assignees.values().map(Set::len).sum::<usize>()
            + self.parent.len()
            + self.headed_by.values().map(Set::len).sum::<usize>()
            + self.member_of.values().map(Set::len).sum::<usize>()
            + self.owner.len()
            + self.reads.values().map(Set::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.users.is_empty()
    }
}

/// Where a mailbox permission reaches for one user (see [`OrgGraph::mailbox_scope`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MailboxScope {
    /// Every mailbox of the organisation.
    pub whole_organization: bool,
    /// Every mailbox these users own.
    pub owners: Set<UserId>,
    /// These mailboxes, whoever owns them.
    pub mailboxes: Set<MailboxId>,
}

/// Why a permission is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// From the resource towards the subject.
    pub path: Vec<Relationship>,
    pub reason: String,
    /// The role that granted it, when one did: for a mailbox permission other than reading
    /// mail (owners too hold those through a role), inviting and configuring access. `None`
    /// for read_mail, `org.register_users` and the organisation-wide "everyone may invite".
    pub granted_by: Option<RoleGrant>,
}

/// Which role granted a permission, at which scope, through which assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleGrant {
    pub role: mailroom_types::RoleId,
    /// The role's scope for the permission (`Grants::scope_for`): at least what reaching the
    /// owner takes. [`Scope::None`](crate::model::Scope::None) for an organisation
    /// permission, which has no scope.
    pub scope: crate::model::Scope,
    /// `role#assignee@…`, or `org#admin@user` for Administrator.
    pub assignment: Relationship,
}

/// A small organisation for the graph's unit tests: Company → Sales → East, Other;
/// Company → Warehouse → Night shift. Ceo heads Company, Hanna heads East; Emil is in East,
/// Olga in Other, Hilda in Company, Vera in Warehouse, Walt in Night shift; Ada is an org
/// admin. Everyone owns one mailbox. The three default roles are in place.
#[cfg(test)]
pub(crate) mod fixture {
    use crate::graph::Map;

    use mailroom_types::{DepartmentId, MailboxId, RoleId, UserId};

    use super::OrgGraph;
    use crate::model::{Assignee, Builtin, Grants, Relationship, RoleDef, Scope};

    pub struct Org {
        pub graph: OrgGraph,
        pub dept: Map<&'static str, DepartmentId>,
        pub user: Map<&'static str, UserId>,
        pub mailbox: Map<&'static str, MailboxId>,
    }

    pub const PEOPLE: [&str; 8] = [
        "ada", "ceo", "hanna", "emil", "olga", "hilda", "vera", "walt",
    ];

    impl Org {
        pub fn new() -> Org {
            let mut graph = OrgGraph::new();
            graph.ensure_default_roles();
            let mut dept = Map::default();
            for d in ["company", "sales", "east", "other", "warehouse", "night"] {
                dept.insert(d, DepartmentId::new());
            }
            for (child, parent) in [
                ("sales", "company"),
                ("east", "sales"),
                ("other", "sales"),
                ("warehouse", "company"),
                ("night", "warehouse"),
            ] {
                graph
                    .write(Relationship::Parent(dept[child], dept[parent]))
                    .expect("tree");
            }
            let mut user = Map::default();
            let mut mailbox = Map::default();
            for p in PEOPLE {
                let u = UserId::new();
                graph.set_user(u, true);
                user.insert(p, u);
                let m = MailboxId::new();
                graph.write(Relationship::Owner(m, u)).expect("owner");
                mailbox.insert(p, m);
            }
            let rels = [
                Relationship::Admin(user["ada"]),
                Relationship::Head(dept["company"], user["ceo"]),
                Relationship::Head(dept["east"], user["hanna"]),
                Relationship::Member(user["emil"], dept["east"]),
                Relationship::Member(user["olga"], dept["other"]),
                Relationship::Member(user["hilda"], dept["company"]),
                Relationship::Member(user["vera"], dept["warehouse"]),
                Relationship::Member(user["walt"], dept["night"]),
            ];
            for r in rels {
                graph.write(r).expect("relationship");
            }
            Org {
                graph,
                dept,
                user,
                mailbox,
            }
        }

        pub fn builtin(&self, b: Builtin) -> RoleId {
            self.graph.builtin_role(b).expect("default role").id
        }

        /// Defines a custom role and assigns it to each of `to`.
        pub fn role(&mut self, name: &str, grants: Grants, to: &[Assignee]) -> RoleId {
            let id = RoleId::new();
            self.graph.put_role(RoleDef {
                id,
                builtin: None,
                name: name.into(),
                hidden: false,
                grants,
                version: 1,
            });
            for a in to {
                self.graph
                    .write(Relationship::Assignee(id, *a))
                    .expect("assign");
            }
            id
        }

        pub fn may(&self, who: &str, p: mailroom_types::Permission, whose: &str) -> bool {
            self.graph
                .check(self.user[who], p, Some(self.mailbox[whose]))
                .expect("mailbox given")
        }
    }

    /// Grants with the four mailbox scopes as given and nothing else.
    pub fn scoped(view: Scope, connect: Scope, modify: Scope, grant_read: Scope) -> Grants {
        Grants {
            view_mailbox_list: view,
            connect_mailboxes: connect,
            modify_mailboxes: modify,
            grant_read_access: grant_read,
            invite: false,
            manage_permissions: false,
        }
    }
}
