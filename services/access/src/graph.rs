//! One organisation's relationships in memory, indexed both ways.
//!
//! A check is a few hash lookups plus, for a supervisor, a walk up the department tree from the
//! owner's department (depth-bounded: the tree has no cycles, [`OrgGraph::write`] refuses
//! them). A lookup of the mailboxes a supervisor may view walks down the subtrees they head.
//! No recursive SQL and no policy interpretation on the hot path.

use std::collections::{HashMap, HashSet};

use crate::model::{
    Audience, DepartmentId, MailboxId, ModelError, Permission, Relationship, Settings, UserId,
};

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
                let changed = self.settings.invite != Audience::Everyone;
                self.settings.invite = Audience::Everyone;
                changed
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
        })
    }

    /// Removes a relationship; `false` when it was not there.
    pub fn delete(&mut self, rel: Relationship) -> bool {
        match rel {
            Relationship::Admin(u) => self.admins.remove(&u),
            Relationship::MailboxManager(u) => self.managers.remove(&u),
            Relationship::Inviter(u) => self.inviters.remove(&u),
            Relationship::EveryoneInvites => {
                if self.settings.invite != Audience::Everyone {
                    return false;
                }
                self.settings.invite = Audience::Admins;
                true
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
        }
    }

    /// `department`, then its parent, and so on up to the top. Bounded by the number of
    /// parent edges, so even a cycle (see [`OrgGraph::apply`]) ends.
    fn ancestors_or_self(
        &self,
        department: DepartmentId,
    ) -> impl Iterator<Item = DepartmentId> + '_ {
        std::iter::successors(Some(department), move |d| self.parent.get(d).copied())
            .take(self.parent.len() + 1)
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
        let mut seen: HashSet<DepartmentId> = HashSet::new();
        for top in self.headed_by.get(&boss).into_iter().flatten() {
            let mut stack = vec![(*top, true)];
            while let Some((d, is_top)) = stack.pop() {
                if !is_top && !seen.insert(d) {
                    continue;
                }
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

    /// Whether `user` belongs to `audience` for a mailbox owned by `owner` (`None` for an
    /// org-level permission, where "supervisors" means anyone heading a department).
    fn in_audience(&self, user: UserId, audience: Audience, owner: Option<UserId>) -> bool {
        self.admins.contains(&user)
            || (audience >= Audience::AdminsAndManagers && self.managers.contains(&user))
            || (audience == Audience::AdminsManagersAndSupervisors
                && match owner {
                    Some(o) => self.supervises(user, o),
                    None => self.headed_by.contains_key(&user),
                })
            || audience == Audience::Everyone
    }

    /// Whether `user` holds the permission on every mailbox of the organisation.
    fn org_wide(&self, user: UserId, audience: Audience) -> bool {
        self.admins.contains(&user)
            || (audience >= Audience::AdminsAndManagers && self.managers.contains(&user))
            || audience == Audience::Everyone
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
        let s = &self.settings;
        Ok(match permission {
            Permission::MailboxView => {
                owner.is_some()
                    && (is_owner
                        || self.in_audience(user, s.modify_mailboxes, owner)
                        || self.in_audience(user, s.view_mailbox_list, owner))
            }
            Permission::MailboxModify | Permission::MailboxSync => {
                owner.is_some() && (is_owner || self.in_audience(user, s.modify_mailboxes, owner))
            }
            Permission::MailboxReadMail => {
                is_owner
                    || mailbox
                        .and_then(|m| self.readers.get(&m))
                        .is_some_and(|r| r.contains(&user))
            }
            Permission::OrgInvite => {
                self.inviters.contains(&user) || self.in_audience(user, s.invite, None)
            }
            Permission::OrgRegisterUsers | Permission::OrgManagePermissions => {
                self.admins.contains(&user)
            }
        })
    }

    /// Why `user` holds `permission`: the relationships that grant it, from the resource to
    /// the subject, and a sentence. `None` when the user does not hold it.
    pub fn explain(
        &self,
        user: UserId,
        permission: Permission,
        mailbox: Option<MailboxId>,
    ) -> Result<Option<Explanation>, ModelError> {
        if !self.check(user, permission, mailbox)? {
            return Ok(None);
        }
        let s = &self.settings;
        let owner = mailbox.and_then(|m| self.owner.get(&m).copied().map(|o| (m, o)));
        let explanation =
            |path: Vec<Relationship>, reason: &'static str| Ok(Some(Explanation { path, reason }));
        if let Some((m, o)) = owner {
            if o == user && permission.on_mailbox() {
                return explanation(vec![Relationship::Owner(m, o)], "owns the mailbox");
            }
        }
        match permission {
            Permission::MailboxReadMail => {
                let m = mailbox.ok_or(ModelError::NeedsMailbox(permission.name()))?;
                explanation(
                    vec![Relationship::Reader(m, user)],
                    "was granted read access to the mailbox",
                )
            }
            Permission::MailboxView | Permission::MailboxModify | Permission::MailboxSync => {
                let Some((m, o)) = owner else {
                    return Ok(None);
                };
                let own = Relationship::Owner(m, o);
                if self.admins.contains(&user) {
                    return explanation(vec![own, Relationship::Admin(user)], "is an org admin");
                }
                let audience = if permission == Permission::MailboxView {
                    s.view_mailbox_list.max(s.modify_mailboxes)
                } else {
                    s.modify_mailboxes
                };
                if audience >= Audience::AdminsAndManagers && self.managers.contains(&user) {
                    return explanation(
                        vec![own, Relationship::MailboxManager(user)],
                        "manages the organisation's mailboxes",
                    );
                }
                if audience >= Audience::AdminsManagersAndSupervisors {
                    if let Some(mut chain) = self.supervision_chain(user, o) {
                        chain.insert(0, own);
                        return explanation(chain, "supervises the owner");
                    }
                }
                explanation(
                    vec![own],
                    "the organisation's settings give this to everyone",
                )
            }
            Permission::OrgInvite => {
                if self.admins.contains(&user) {
                    explanation(vec![Relationship::Admin(user)], "is an org admin")
                } else if self.inviters.contains(&user) {
                    explanation(vec![Relationship::Inviter(user)], "may invite people")
                } else if s.invite == Audience::Everyone {
                    explanation(
                        vec![Relationship::EveryoneInvites],
                        "everyone in the organisation may invite people",
                    )
                } else if self.managers.contains(&user) {
                    explanation(
                        vec![Relationship::MailboxManager(user)],
                        "the organisation lets mailbox managers invite people",
                    )
                } else {
                    let heads: Vec<Relationship> = self
                        .headed_by
                        .get(&user)
                        .into_iter()
                        .flatten()
                        .take(1)
                        .map(|d| Relationship::Head(*d, user))
                        .collect();
                    explanation(
                        heads,
                        "the organisation lets department heads invite people",
                    )
                }
            }
            Permission::OrgRegisterUsers | Permission::OrgManagePermissions => {
                explanation(vec![Relationship::Admin(user)], "is an org admin")
            }
        }
    }

    /// The relationships by which `boss` supervises `user`: how `user` sits in a department
    /// (member of it, or head of one below), the parents up to the department `boss` heads,
    /// and that head relationship.
    fn supervision_chain(&self, boss: UserId, user: UserId) -> Option<Vec<Relationship>> {
        if !self.supervises(boss, user) {
            return None;
        }
        let bossed = self.headed_by.get(&boss)?;
        let starts = self
            .member_of
            .get(&user)
            .into_iter()
            .flatten()
            .map(|d| (Relationship::Member(user, *d), *d, true))
            .chain(
                self.headed_by
                    .get(&user)
                    .into_iter()
                    .flatten()
                    .map(|d| (Relationship::Head(*d, user), *d, false)),
            );
        for (first, department, counts_itself) in starts {
            let mut path = vec![first];
            let mut current = department;
            let mut at_start = true;
            for _ in 0..=self.parent.len() {
                if (counts_itself || !at_start) && bossed.contains(&current) {
                    path.push(Relationship::Head(current, boss));
                    return Some(path);
                }
                let Some(parent) = self.parent.get(&current).copied() else {
                    break;
                };
                path.push(Relationship::Parent(current, parent));
                current = parent;
                at_start = false;
            }
        }
        None
    }

    /// The mailboxes on which `user` holds `permission`, in no particular order.
    pub fn lookup_mailboxes(&self, user: UserId, permission: Permission) -> Vec<MailboxId> {
        if !self.active(&user) || !permission.on_mailbox() {
            return Vec::new();
        }
        let s = &self.settings;
        let own = self.owned.get(&user).into_iter().flatten().copied();
        let audience = match permission {
            Permission::MailboxReadMail => {
                let mut out: HashSet<MailboxId> = own.collect();
                out.extend(self.reads.get(&user).into_iter().flatten().copied());
                return out.into_iter().collect();
            }
            Permission::MailboxView => s.view_mailbox_list.max(s.modify_mailboxes),
            _ => s.modify_mailboxes,
        };
        if self.org_wide(user, audience) {
            return self.owner.keys().copied().collect();
        }
        let mut out: HashSet<MailboxId> = own.collect();
        if audience >= Audience::AdminsManagersAndSupervisors {
            for sub in self.subordinates(user) {
                out.extend(self.owned.get(&sub).into_iter().flatten().copied());
            }
        }
        out.into_iter().collect()
    }

    /// Where `permission` reaches for `user`, as owners and mailboxes rather than a list of
    /// every mailbox: the whole organisation, or the mailboxes of some owners plus some
    /// mailboxes. A service applies it to its own rows, so a mailbox it has just connected is
    /// in scope before this graph has heard of it.
    pub fn mailbox_scope(&self, user: UserId, permission: Permission) -> MailboxScope {
        let mut scope = MailboxScope::default();
        if !self.active(&user) || !permission.on_mailbox() {
            return scope;
        }
        let s = &self.settings;
        let audience = match permission {
            Permission::MailboxReadMail => {
                scope.owners.insert(user);
                scope
                    .mailboxes
                    .extend(self.reads.get(&user).into_iter().flatten().copied());
                return scope;
            }
            Permission::MailboxView => s.view_mailbox_list.max(s.modify_mailboxes),
            _ => s.modify_mailboxes,
        };
        if self.org_wide(user, audience) {
            scope.whole_organization = true;
            return scope;
        }
        scope.owners.insert(user);
        if audience >= Audience::AdminsManagersAndSupervisors {
            scope.owners.extend(self.subordinates(user));
        }
        scope
    }

    /// Everyone in `audience` for a mailbox owned by `owner`.
    fn audience_users(&self, audience: Audience, owner: UserId, out: &mut HashSet<UserId>) {
        out.extend(self.admins.iter().copied());
        if audience >= Audience::AdminsAndManagers {
            out.extend(self.managers.iter().copied());
        }
        if audience >= Audience::AdminsManagersAndSupervisors {
            out.extend(self.supervisors(owner));
        }
        if audience == Audience::Everyone {
            out.extend(self.users.iter().copied());
        }
    }

    /// The active users who hold `permission` on `mailbox`.
    pub fn lookup_users(&self, mailbox: MailboxId, permission: Permission) -> Vec<UserId> {
        let mut out: HashSet<UserId> = HashSet::new();
        let owner = self.owner.get(&mailbox).copied();
        out.extend(owner);
        let s = &self.settings;
        match (permission, owner) {
            (Permission::MailboxReadMail, _) => {
                out.extend(self.readers.get(&mailbox).into_iter().flatten().copied())
            }
            (Permission::MailboxView, Some(o)) => {
                self.audience_users(s.view_mailbox_list.max(s.modify_mailboxes), o, &mut out)
            }
            (Permission::MailboxModify | Permission::MailboxSync, Some(o)) => {
                self.audience_users(s.modify_mailboxes, o, &mut out)
            }
            _ => {}
        }
        out.retain(|u| self.active(u));
        out.into_iter().collect()
    }

    /// The active users who hold an organisation-level `permission`.
    pub fn lookup_org_users(&self, permission: Permission) -> Vec<UserId> {
        self.users
            .iter()
            .copied()
            .filter(|u| self.check(*u, permission, None).unwrap_or(false))
            .collect()
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

/// Why a permission is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// From the resource towards the subject.
    pub path: Vec<Relationship>,
    pub reason: &'static str,
}
