//! One organisation's relationships in memory, indexed both ways.
//!
//! A check is a few hash lookups plus, for a supervisor, a walk up the department tree from the
//! owner's department (depth-bounded: the tree has no cycles, [`OrgGraph::write`] refuses
//! them). A lookup of the mailboxes a supervisor may view walks down the subtrees they head.
//! No recursive SQL and no policy interpretation on the hot path.

use std::collections::{HashMap, HashSet};

use crate::model::{DepartmentId, MailboxId, ModelError, Permission, Relationship, UserId};

#[derive(Debug, Default, Clone)]
pub struct OrgGraph {
    users: HashSet<UserId>,
    dismissed: HashSet<UserId>,
    admins: HashSet<UserId>,
    managers: HashSet<UserId>,
    inviters: HashSet<UserId>,
    everyone_invites: bool,
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

    /// Adds a relationship; `Ok(false)` when it was already there. A mailbox has one owner and
    /// a department one parent: writing another replaces it.
    pub fn write(&mut self, rel: Relationship) -> Result<bool, ModelError> {
        Ok(match rel {
            Relationship::Admin(u) => self.admins.insert(u),
            Relationship::MailboxManager(u) => self.managers.insert(u),
            Relationship::Inviter(u) => self.inviters.insert(u),
            Relationship::EveryoneInvites => !std::mem::replace(&mut self.everyone_invites, true),
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
        })
    }

    /// Removes a relationship; `false` when it was not there.
    pub fn delete(&mut self, rel: Relationship) -> bool {
        match rel {
            Relationship::Admin(u) => self.admins.remove(&u),
            Relationship::MailboxManager(u) => self.managers.remove(&u),
            Relationship::Inviter(u) => self.inviters.remove(&u),
            Relationship::EveryoneInvites => std::mem::replace(&mut self.everyone_invites, false),
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
        }
    }

    /// `department`, then its parent, and so on up to the top.
    fn ancestors_or_self(
        &self,
        department: DepartmentId,
    ) -> impl Iterator<Item = DepartmentId> + '_ {
        std::iter::successors(Some(department), move |d| self.parent.get(d).copied())
    }

    /// Whether `boss` supervises `user`: heads the user's department or one above it, or a
    /// department above one the user heads.
    pub fn supervises(&self, boss: UserId, user: UserId) -> bool {
        if boss == user || !self.active(&boss) {
            return false;
        }
        let Some(bossed) = self.headed_by.get(&boss) else {
            return false;
        };
        let from_membership = self
            .member_of
            .get(&user)
            .into_iter()
            .flatten()
            .flat_map(|d| self.ancestors_or_self(*d));
        let from_heading = self
            .headed_by
            .get(&user)
            .into_iter()
            .flatten()
            .flat_map(|d| self.ancestors_or_self(*d).skip(1));
        from_membership
            .chain(from_heading)
            .any(|d| bossed.contains(&d))
    }

    /// Everyone `boss` supervises.
    pub fn subordinates(&self, boss: UserId) -> HashSet<UserId> {
        let mut out = HashSet::new();
        if !self.active(&boss) {
            return out;
        }
        for top in self.headed_by.get(&boss).into_iter().flatten() {
            let mut stack = vec![(*top, true)];
            while let Some((d, is_top)) = stack.pop() {
                out.extend(self.members.get(&d).into_iter().flatten().copied());
                if !is_top {
                    out.extend(self.heads.get(&d).into_iter().flatten().copied());
                }
                stack.extend(
                    self.children
                        .get(&d)
                        .into_iter()
                        .flatten()
                        .map(|c| (*c, false)),
                );
            }
        }
        out.remove(&boss);
        out
    }

    /// Everyone who supervises `user`.
    pub fn supervisors(&self, user: UserId) -> HashSet<UserId> {
        let mut departments: Vec<DepartmentId> = Vec::new();
        for d in self.member_of.get(&user).into_iter().flatten() {
            departments.extend(self.ancestors_or_self(*d));
        }
        for d in self.headed_by.get(&user).into_iter().flatten() {
            departments.extend(self.ancestors_or_self(*d).skip(1));
        }
        departments
            .iter()
            .flat_map(|d| self.heads.get(d).into_iter().flatten().copied())
            .filter(|h| *h != user && self.active(h))
            .collect()
    }

    fn org_wide_mailbox_power(&self, user: &UserId) -> bool {
        self.admins.contains(user) || self.managers.contains(user)
    }

    /// Whether `user` holds `permission` (on `mailbox`, for mailbox permissions).
    pub fn check(
        &self,
        user: UserId,
        permission: Permission,
        mailbox: Option<MailboxId>,
    ) -> Result<bool, ModelError> {
        if permission.on_mailbox() && mailbox.is_none() {
            return Err(ModelError::NeedsMailbox(permission.name()));
        }
        if !self.active(&user) {
            return Ok(false);
        }
        let owner = mailbox.and_then(|m| self.owner.get(&m).copied());
        let is_owner = owner == Some(user);
        Ok(match permission {
            Permission::MailboxView => {
                owner.is_some()
                    && (is_owner
                        || self.org_wide_mailbox_power(&user)
                        || owner.is_some_and(|o| self.supervises(user, o)))
            }
            Permission::MailboxModify | Permission::MailboxSync => {
                owner.is_some() && (is_owner || self.org_wide_mailbox_power(&user))
            }
            Permission::MailboxReadMail => {
                is_owner
                    || mailbox
                        .and_then(|m| self.readers.get(&m))
                        .is_some_and(|r| r.contains(&user))
            }
            Permission::OrgInvite => {
                self.admins.contains(&user)
                    || self.inviters.contains(&user)
                    || self.everyone_invites
            }
            Permission::OrgRegisterUsers | Permission::OrgManagePermissions => {
                self.admins.contains(&user)
            }
        })
    }

    /// The mailboxes on which `user` holds `permission`, in no particular order.
    pub fn lookup_mailboxes(&self, user: UserId, permission: Permission) -> Vec<MailboxId> {
        if !self.active(&user) || !permission.on_mailbox() {
            return Vec::new();
        }
        let own = self.owned.get(&user).into_iter().flatten().copied();
        match permission {
            Permission::MailboxReadMail => {
                let mut out: HashSet<MailboxId> = own.collect();
                out.extend(self.reads.get(&user).into_iter().flatten().copied());
                out.into_iter().collect()
            }
            _ if self.org_wide_mailbox_power(&user) => self.owner.keys().copied().collect(),
            Permission::MailboxView => {
                let mut out: HashSet<MailboxId> = own.collect();
                for sub in self.subordinates(user) {
                    out.extend(self.owned.get(&sub).into_iter().flatten().copied());
                }
                out.into_iter().collect()
            }
            _ => own.collect(),
        }
    }

    /// The active users who hold `permission` on `mailbox`.
    pub fn lookup_users(&self, mailbox: MailboxId, permission: Permission) -> Vec<UserId> {
        let mut out: HashSet<UserId> = HashSet::new();
        let owner = self.owner.get(&mailbox).copied();
        out.extend(owner);
        match permission {
            Permission::MailboxReadMail => {
                out.extend(self.readers.get(&mailbox).into_iter().flatten().copied())
            }
            Permission::MailboxView | Permission::MailboxModify | Permission::MailboxSync
                if owner.is_some() =>
            {
                out.extend(self.admins.iter().copied());
                out.extend(self.managers.iter().copied());
                if permission == Permission::MailboxView {
                    out.extend(owner.map(|o| self.supervisors(o)).unwrap_or_default());
                }
            }
            _ => {}
        }
        out.retain(|u| self.active(u));
        out.into_iter().collect()
    }
}
