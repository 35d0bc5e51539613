//! One organisation's relationships in memory, indexed both ways.
//!
//! A check is a few hash lookups plus, for a supervisor, a walk up the department tree from the
//! owner's department (depth-bounded: the tree has no cycles, [`OrgGraph::write`] refuses
//! them). A lookup of the mailboxes a supervisor may view walks down the subtrees they head.
//! No recursive SQL and no policy interpretation on the hot path.
//!
//! - this file: the indexes, and the writes that keep both directions of each in step;
//! - `supervision.rs`: who supervises whom, up and down the department tree;
//! - `permissions.rs`: checks, their explanations, and the reverse lookups (which mailboxes,
//!   which users, how far a permission reaches).

mod permissions;
mod roles;
mod supervision;

pub use roles::HeldRole;

use std::collections::{HashMap, HashSet};

use mailroom_types::{DepartmentId, MailboxId, UserId};

use crate::model::{Audience, ModelError, Relationship, Settings};

/// One organisation's users, relationships and settings. Each relation is held in both
/// directions (`heads` and `headed_by`, `owner` and `owned`, …) so that a check walks up and a
/// lookup walks down without scanning.
#[derive(Debug, Default, Clone)]
pub struct OrgGraph {
    users: HashSet<UserId>,
    dismissed: HashSet<UserId>,
    admins: HashSet<UserId>,
    managers: HashSet<UserId>,
    inviters: HashSet<UserId>,
    settings: Settings,
    parent: HashMap<DepartmentId, DepartmentId>,
    children: HashMap<DepartmentId, HashSet<DepartmentId>>,
    heads: HashMap<DepartmentId, HashSet<UserId>>,
    headed_by: HashMap<UserId, HashSet<DepartmentId>>,
    member_of: HashMap<UserId, HashSet<DepartmentId>>,
    members: HashMap<DepartmentId, HashSet<UserId>>,
    owner: HashMap<MailboxId, UserId>,
    owned: HashMap<UserId, HashSet<MailboxId>>,
    readers: HashMap<MailboxId, HashSet<UserId>>,
    reads: HashMap<UserId, HashSet<MailboxId>>,
    roles: roles::RoleIndex,
}

fn add<K: std::hash::Hash + Eq, V: std::hash::Hash + Eq>(
    map: &mut HashMap<K, HashSet<V>>,
    k: K,
    v: V,
) -> bool {
    map.entry(k).or_default().insert(v)
}

fn remove<K: std::hash::Hash + Eq, V: std::hash::Hash + Eq>(
    map: &mut HashMap<K, HashSet<V>>,
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
            Relationship::MailboxManager(u) => self.managers.insert(u),
            Relationship::Inviter(u) => self.inviters.insert(u),
            Relationship::EveryoneInvites => {
                self.settings.invite = Audience::Everyone;
                !std::mem::replace(&mut self.roles.everyone_invites, true)
            }
            Relationship::Head(d, u) => {
                add(&mut self.headed_by, u, d);
                add(&mut self.heads, d, u)
            }
            Relationship::Parent(child, parent) => {
                if self.parent.get(&child) == Some(&parent) {
                    return Ok(false);
                }
                if child == parent || self.ancestors_or_self(parent).any(|a| a == child) {
                    return Err(ModelError::Cycle(child));
                }
                if let Some(old) = self.parent.insert(child, parent) {
                    remove(&mut self.children, &old, &child);
                }
                add(&mut self.children, parent, child)
            }
            Relationship::Member(u, d) => {
                add(&mut self.members, d, u);
                add(&mut self.member_of, u, d)
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
            Relationship::MailboxManager(u) => self.managers.remove(&u),
            Relationship::Inviter(u) => self.inviters.remove(&u),
            Relationship::EveryoneInvites => {
                self.settings.invite = Audience::Admins;
                std::mem::replace(&mut self.roles.everyone_invites, false)
            }
            Relationship::Head(d, u) => {
                remove(&mut self.headed_by, &u, &d);
                remove(&mut self.heads, &d, &u)
            }
            Relationship::Parent(child, parent) => {
                if self.parent.get(&child) != Some(&parent) {
                    return false;
                }
                self.parent.remove(&child);
                remove(&mut self.children, &parent, &child)
            }
            Relationship::Member(u, d) => {
                remove(&mut self.members, &d, &u);
                remove(&mut self.member_of, &u, &d)
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
            if let Some(old) = self.parent.insert(child, parent) {
                remove(&mut self.children, &old, &child);
            }
            return add(&mut self.children, parent, child);
        }
        self.write(rel).unwrap_or(false)
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
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
            + self.managers.len()
            + self.inviters.len()
            + self.parent.len()
            + self.headed_by.values().map(HashSet::len).sum::<usize>()
            + self.member_of.values().map(HashSet::len).sum::<usize>()
            + self.owner.len()
            + self.reads.values().map(HashSet::len).sum::<usize>()
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
    pub owners: HashSet<UserId>,
    /// These mailboxes, whoever owns them.
    pub mailboxes: HashSet<MailboxId>,
}

/// Why a permission is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// From the resource towards the subject.
    pub path: Vec<Relationship>,
    pub reason: String,
    /// The role that granted it, when one did (not for owners and readers).
    pub granted_by: Option<RoleGrant>,
}

/// Which role granted a permission, at which scope, through which assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleGrant {
    pub role: mailroom_types::RoleId,
    pub scope: crate::model::Scope,
    /// `role#assignee@…`, or `org#admin@user` for Administrator.
    pub assignment: Relationship,
}
