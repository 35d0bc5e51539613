//! Roles in the graph: the organisation's role definitions, their assignments indexed both
//! ways, which roles a user holds ([`OrgGraph::held_roles`]), the union of their grants
//! ([`OrgGraph::effective`]) and how far a scope reaches from its holder
//! ([`OrgGraph::reaches`]).
//!
//! A user holds: Administrator when an org admin; every role assigned to them, to a department
//! they are a direct member of, to a department at or above one they are a member of (as a
//! tree), or to "heads" when they head a department; and only when none of those apply and
//! they are no admin, the roles assigned to "everyone else". An assignment of a role that is
//! not defined, or of Administrator (held by exactly the org admins), counts for nothing.
//!
//! [`OrgGraph::effective`] is on the path of every check. [`OrgGraph::refresh`] joins the
//! roles' grants ahead of time — per department (its member roles and the tree roles at or
//! above it), per directly assigned user, for heads and for everyone else — so that it is a
//! handful of hash lookups with no allocation. Whatever changes those joins (a role defined,
//! changed or removed, an assignment, a department's parent) drops the cache; until the next
//! refresh `effective` walks the assignments instead and answers the same. Membership, heads,
//! admins and dismissals are read live and never drop it.

use mailroom_types::{DepartmentId, RoleId, UserId};

use super::{add, remove, Map, OrgGraph, Set};
use crate::model::{Assignee, Builtin, Grants, Relationship, RoleDef, Scope};

/// The roles of one organisation and their assignments, indexed both ways.
#[derive(Debug, Default, Clone)]
pub(super) struct RoleIndex {
    pub(super) defs: Map<RoleId, RoleDef>,
    pub(super) by_user: Map<UserId, Set<RoleId>>,
    pub(super) by_members: Map<DepartmentId, Set<RoleId>>,
    pub(super) by_tree: Map<DepartmentId, Set<RoleId>>,
    pub(super) heads: Set<RoleId>,
    pub(super) everyone_else: Set<RoleId>,
    pub(super) assignees: Map<RoleId, Set<Assignee>>,
    /// identity's "everyone may invite" (`org#inviter@org#member`).
    pub(super) everyone_invites: bool,
    /// The joins [`OrgGraph::effective`] reads; `None` when stale (see [`OrgGraph::refresh`]).
    pub(super) derived: Option<Derived>,
}

/// Role grants joined ahead of time. An entry is present exactly when at least one role
/// applies, which is what makes a user's roles "explicit" (and "everyone else" not apply).
#[derive(Debug, Default, Clone)]
pub(super) struct Derived {
    /// Per department: the roles assigned to its direct members and to the trees at or above
    /// it. A department absent has none (a department that gains a parent or an assignment
    /// drops the cache, so absence stays true until the next refresh).
    dept: Map<DepartmentId, Grants>,
    /// Per user: the roles assigned to them directly.
    user: Map<UserId, Grants>,
    /// The roles assigned to department heads, if any.
    heads: Option<Grants>,
    /// The roles assigned to everyone else.
    everyone_else: Grants,
    /// Per user with an explicit role (directly, through a department or as a head): the
    /// join of those roles, read by a check in one lookup. Kept current for membership and
    /// headship changes by [`OrgGraph::rejoin`]; a user absent holds only "everyone else".
    joined: Map<UserId, Grants>,
}

impl RoleIndex {
    pub(super) fn assign(&mut self, role: RoleId, who: Assignee) -> bool {
        match who {
            Assignee::User(u) => add(&mut self.by_user, u, role),
            Assignee::Members(d) => add(&mut self.by_members, d, role),
            Assignee::Tree(d) => add(&mut self.by_tree, d, role),
            Assignee::Heads => self.heads.insert(role),
            Assignee::EveryoneElse => self.everyone_else.insert(role),
        };
        let added = add(&mut self.assignees, role, who);
        if added {
            self.derived = None;
        }
        added
    }

    pub(super) fn unassign(&mut self, role: RoleId, who: Assignee) -> bool {
        match who {
            Assignee::User(u) => remove(&mut self.by_user, &u, &role),
            Assignee::Members(d) => remove(&mut self.by_members, &d, &role),
            Assignee::Tree(d) => remove(&mut self.by_tree, &d, &role),
            Assignee::Heads => self.heads.remove(&role),
            Assignee::EveryoneElse => self.everyone_else.remove(&role),
        };
        let removed = remove(&mut self.assignees, &role, &who);
        if removed {
            self.derived = None;
        }
        removed
    }

    /// The definition of an assigned role, if the assignment counts: the role is defined and
    /// is not Administrator (which only org admins hold, by identity's flag).
    pub(super) fn assignable(&self, role: &RoleId) -> Option<&RoleDef> {
        self.defs
            .get(role)
            .filter(|r| r.builtin != Some(Builtin::Administrator))
    }

    /// The join of the grants of `roles` (those that count) into `acc`; `None` if no role
    /// counted and `acc` was `None`.
    fn join<'a>(
        &self,
        acc: Option<Grants>,
        roles: impl IntoIterator<Item = &'a RoleId>,
    ) -> Option<Grants> {
        roles
            .into_iter()
            .filter_map(|r| self.assignable(r))
            .fold(acc, |acc, r| {
                Some(acc.map_or(r.grants, |g: Grants| g.join(r.grants)))
            })
    }
}

/// A role a user holds, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRole {
    pub role: RoleId,
    /// The assignment (`role#assignee@…`), or `org#admin@user` for Administrator.
    pub assignment: Relationship,
    /// How the user falls under the assignment: their membership and the parents up to the
    /// assigned tree, or the department they head. Empty for a direct or "everyone else"
    /// assignment.
    pub via: Vec<Relationship>,
}

impl OrgGraph {
    /// Adds or replaces a role definition.
    pub fn put_role(&mut self, role: RoleDef) {
        self.roles.defs.insert(role.id, role);
        self.roles.derived = None;
    }

    /// Removes a role and its assignments; the definition it had.
    pub fn remove_role(&mut self, role: RoleId) -> Option<RoleDef> {
        for who in self.roles.assignees.get(&role).cloned().unwrap_or_default() {
            self.roles.unassign(role, who);
        }
        self.roles.derived = None;
        self.roles.defs.remove(&role)
    }

    pub fn role(&self, role: RoleId) -> Option<&RoleDef> {
        self.roles.defs.get(&role)
    }

    /// Every role of the organisation, in no particular order.
    pub fn roles(&self) -> impl Iterator<Item = &RoleDef> + '_ {
        self.roles.defs.values()
    }

    pub fn builtin_role(&self, builtin: Builtin) -> Option<&RoleDef> {
        self.roles
            .defs
            .values()
            .find(|r| r.builtin == Some(builtin))
    }

    /// To whom a role is assigned.
    pub fn assignees(&self, role: RoleId) -> impl Iterator<Item = Assignee> + '_ {
        self.roles
            .assignees
            .get(&role)
            .into_iter()
            .flatten()
            .copied()
    }

    /// Whether identity lets everyone in the organisation invite.
    pub fn everyone_invites(&self) -> bool {
        self.roles.everyone_invites
    }

    /// Adds the three default roles with their default assignments (Supervisor to heads,
    /// Manager to everyone else) where the organisation has none of that kind. For graphs
    /// built in tests; a served graph gets them from the store.
    pub fn ensure_default_roles(&mut self) {
        for builtin in [
            Builtin::Administrator,
            Builtin::Supervisor,
            Builtin::Manager,
        ] {
            if self.builtin_role(builtin).is_some() {
                continue;
            }
            let id = RoleId::new();
            self.put_role(RoleDef {
                id,
                builtin: Some(builtin),
                name: builtin.default_name().into(),
                hidden: false,
                grants: builtin.default_grants(),
                version: 1,
            });
            match builtin {
                Builtin::Supervisor => {
                    self.roles.assign(id, Assignee::Heads);
                }
                Builtin::Manager => {
                    self.roles.assign(id, Assignee::EveryoneElse);
                }
                Builtin::Administrator => {}
            }
        }
    }

    /// The roles `user` holds and how, built-in roles first, then by id; a role held through
    /// several assignments appears once for each. Empty for someone dismissed or unknown. The
    /// walk behind explanations and listings ([`OrgGraph::effective`] gives the same union
    /// without it).
    pub fn held_roles(&self, user: UserId) -> Vec<HeldRole> {
        let mut out = Vec::new();
        if !self.active(&user) {
            return out;
        }
        let admin = self.admins.contains(&user);
        if admin {
            if let Some(r) = self.builtin_role(Builtin::Administrator) {
                out.push(HeldRole {
                    role: r.id,
                    assignment: Relationship::Admin(user),
                    via: Vec::new(),
                });
            }
        }
        let mut explicit = false;
        let mut held =
            |out: &mut Vec<HeldRole>, role: RoleId, who: Assignee, via: &[Relationship]| {
                if self.roles.assignable(&role).is_some() {
                    explicit = true;
                    out.push(HeldRole {
                        role,
                        assignment: Relationship::Assignee(role, who),
                        via: via.to_vec(),
                    });
                }
            };
        for role in self.roles.by_user.get(&user).into_iter().flatten() {
            held(&mut out, *role, Assignee::User(user), &[]);
        }
        for d in self.member_of.get(&user).into_iter().flatten() {
            let member = Relationship::Member(user, *d);
            for role in self.roles.by_members.get(d).into_iter().flatten() {
                held(&mut out, *role, Assignee::Members(*d), &[member]);
            }
            let mut via = vec![member];
            let mut below = *d;
            for a in self.ancestors_or_self(*d) {
                if a != below {
                    via.push(Relationship::Parent(below, a));
                    below = a;
                }
                for role in self.roles.by_tree.get(&a).into_iter().flatten() {
                    held(&mut out, *role, Assignee::Tree(a), &via);
                }
            }
        }
        if let Some(d) = self.headed_by.get(&user).and_then(|ds| ds.iter().min()) {
            for role in &self.roles.heads {
                held(
                    &mut out,
                    *role,
                    Assignee::Heads,
                    &[Relationship::Head(*d, user)],
                );
            }
        }
        if !explicit && !admin {
            for role in &self.roles.everyone_else {
                if self.roles.assignable(role).is_some() {
                    out.push(HeldRole {
                        role: *role,
                        assignment: Relationship::Assignee(*role, Assignee::EveryoneElse),
                        via: Vec::new(),
                    });
                }
            }
        }
        out.sort_by_key(|h| {
            (
                self.roles
                    .defs
                    .get(&h.role)
                    .and_then(|r| r.builtin)
                    .is_none(),
                h.role,
            )
        });
        out
    }

    /// Everyone who may hold `role` through its assignments (a superset: "everyone else"
    /// adds every user, whether or not another role takes it from them).
    pub(super) fn expand_assignees(&self, role: RoleId, out: &mut Set<UserId>) {
        for who in self.assignees(role) {
            match who {
                Assignee::User(u) => {
                    out.insert(u);
                }
                Assignee::Members(d) => {
                    out.extend(self.members.get(&d).into_iter().flatten().copied());
                }
                Assignee::Tree(d) => {
                    for below in self.subtree([d]) {
                        out.extend(self.members.get(&below).into_iter().flatten().copied());
                    }
                }
                Assignee::Heads => out.extend(self.headed_by.keys().copied()),
                Assignee::EveryoneElse => out.extend(self.users.iter().copied()),
            }
        }
    }

    /// The union of the grants of every role `user` holds (everything for an org admin,
    /// nothing for someone dismissed), with `invite` when identity lets everyone invite.
    /// No allocation; a few hash lookups when [refreshed](OrgGraph::refresh), a walk up the
    /// user's departments otherwise.
    pub fn effective(&self, user: UserId) -> Grants {
        if !self.active(&user) {
            return Grants::NONE;
        }
        self.effective_of_active(user)
    }

    /// [`OrgGraph::effective`] for a user already known to be active (the check path).
    pub(super) fn effective_of_active(&self, user: UserId) -> Grants {
        if self.admins.contains(&user) {
            return Grants::ALL;
        }
        let mut g = match &self.roles.derived {
            Some(d) => self.effective_cached(user, d),
            None => self
                .explicit_walk(user)
                .unwrap_or_else(|| self.everyone_else_grants()),
        };
        g.invite |= self.roles.everyone_invites;
        g
    }

    fn effective_cached(&self, user: UserId, d: &Derived) -> Grants {
        d.joined.get(&user).copied().unwrap_or(d.everyone_else)
    }

    /// The join of `user`'s explicit roles from the per-department joins (`None`: none).
    fn explicit_from(&self, user: UserId, d: &Derived) -> Option<Grants> {
        let mut g = d.user.get(&user).copied();
        for dep in self.member_of.get(&user).into_iter().flatten() {
            if let Some(x) = d.dept.get(dep) {
                g = Some(g.map_or(*x, |g| g.join(*x)));
            }
        }
        if let Some(h) = d.heads {
            if self.headed_by.contains_key(&user) {
                g = Some(g.map_or(h, |g| g.join(h)));
            }
        }
        g
    }

    /// Brings `user`'s entry of the per-user joins up to date after their membership or
    /// headship changed (nothing to do when the joins are stale anyway).
    pub(super) fn rejoin(&mut self, user: UserId) {
        let Some(d) = self.roles.derived.take() else {
            return;
        };
        let mut d = d;
        match self.explicit_from(user, &d) {
            Some(g) => {
                d.joined.insert(user, g);
            }
            None => {
                d.joined.remove(&user);
            }
        }
        self.roles.derived = Some(d);
    }

    /// The join of the roles `user` holds explicitly (not Administrator, not "everyone
    /// else"); `None` when they hold none.
    fn explicit_walk(&self, user: UserId) -> Option<Grants> {
        let r = &self.roles;
        let mut g = r.join(None, r.by_user.get(&user).into_iter().flatten());
        for d in self.member_of.get(&user).into_iter().flatten() {
            g = r.join(g, r.by_members.get(d).into_iter().flatten());
            g = self.tree_join(g, *d);
        }
        if self.headed_by.contains_key(&user) {
            g = r.join(g, &r.heads);
        }
        g
    }

    /// `acc` joined with the roles assigned to the trees at or above `department`.
    fn tree_join(&self, mut acc: Option<Grants>, department: DepartmentId) -> Option<Grants> {
        let r = &self.roles;
        if r.by_tree.is_empty() {
            return acc;
        }
        for a in self.ancestors_or_self(department) {
            acc = r.join(acc, r.by_tree.get(&a).into_iter().flatten());
        }
        acc
    }

    fn everyone_else_grants(&self) -> Grants {
        self.roles
            .join(None, &self.roles.everyone_else)
            .unwrap_or(Grants::NONE)
    }

    /// The departments `user` belongs to: those they are a member of and those they head.
    pub(super) fn home(&self, user: UserId) -> impl Iterator<Item = DepartmentId> + '_ {
        self.member_of
            .get(&user)
            .into_iter()
            .flatten()
            .chain(self.headed_by.get(&user).into_iter().flatten())
            .copied()
    }

    /// Whether `department` is one of `user`'s home departments (member or head).
    pub(super) fn is_home(&self, user: UserId, department: DepartmentId) -> bool {
        self.member_of
            .get(&user)
            .is_some_and(|ds| ds.contains(&department))
            || self
                .headed_by
                .get(&user)
                .is_some_and(|ds| ds.contains(&department))
    }

    /// Whether a permission held at `scope` by `holder` reaches mailboxes owned by `owner`.
    /// No allocation: Department is one bounded walk up from each of the owner's departments.
    pub fn reaches(&self, holder: UserId, scope: Scope, owner: UserId) -> bool {
        match scope {
            Scope::None => false,
            Scope::Own => holder == owner,
            Scope::Subordinates => holder == owner || self.supervises(holder, owner),
            Scope::Department => {
                holder == owner
                    || self
                        .home(owner)
                        .any(|d| self.ancestors_or_self(d).any(|a| self.is_home(holder, a)))
            }
            Scope::All => true,
        }
    }

    /// Rebuilds the joins [`OrgGraph::effective`] reads (in O(departments × depth +
    /// assignments)) if anything dropped them since the last refresh; otherwise costs nothing.
    /// The cache is an optimisation, never a source of truth: a graph that is never refreshed
    /// answers the same, more slowly. Replicas call it after applying changes.
    pub fn refresh(&mut self) {
        if self.roles.derived.is_some() {
            return;
        }
        let r = &self.roles;
        let mut d = Derived {
            heads: r.join(None, &r.heads),
            everyone_else: self.everyone_else_grants(),
            ..Derived::default()
        };
        for (u, roles) in &r.by_user {
            if let Some(g) = r.join(None, roles) {
                d.user.insert(*u, g);
            }
        }
        // Every department a role could apply to: one with member roles, one with tree roles,
        // and any with a parent (a tree role above it). Any other department holds none.
        let departments: Set<DepartmentId> = r
            .by_members
            .keys()
            .chain(r.by_tree.keys())
            .chain(self.parent.keys())
            .copied()
            .collect();
        for dep in departments {
            let g = r.join(None, r.by_members.get(&dep).into_iter().flatten());
            if let Some(g) = self.tree_join(g, dep) {
                d.dept.insert(dep, g);
            }
        }
        let people: Set<UserId> = self
            .member_of
            .keys()
            .chain(self.headed_by.keys())
            .chain(d.user.keys())
            .copied()
            .collect();
        for u in people {
            if let Some(g) = self.explicit_from(u, &d) {
                d.joined.insert(u, g);
            }
        }
        self.roles.derived = Some(d);
    }

    /// Whether the joins are current (tests and metrics).
    pub fn is_refreshed(&self) -> bool {
        self.roles.derived.is_some()
    }
}

#[cfg(test)]
mod tests {
    use mailroom_types::RoleId;

    use crate::graph::fixture::{scoped, Org, PEOPLE};
    use crate::model::{Assignee, Builtin, Grants, Relationship, RoleDef, Scope};

    /// Every user's effective grants, walked and cached, must agree.
    fn assert_cache_agrees(org: &mut Org) {
        org.graph.roles.derived = None;
        let walked: Vec<Grants> = PEOPLE
            .iter()
            .map(|p| org.graph.effective(org.user[p]))
            .collect();
        org.graph.refresh();
        assert!(org.graph.is_refreshed());
        let cached: Vec<Grants> = PEOPLE
            .iter()
            .map(|p| org.graph.effective(org.user[p]))
            .collect();
        assert_eq!(walked, cached);
    }

    #[test]
    fn defaults_give_heads_supervisor_and_everyone_else_manager() {
        let mut org = Org::new();
        let g = &org.graph;
        assert_eq!(g.effective(org.user["ada"]), Grants::ALL);
        assert_eq!(
            g.effective(org.user["hanna"]),
            Builtin::Supervisor.default_grants()
        );
        assert_eq!(
            g.effective(org.user["emil"]),
            Builtin::Manager.default_grants()
        );
        let held: Vec<RoleId> = g
            .held_roles(org.user["hanna"])
            .iter()
            .map(|h| h.role)
            .collect();
        assert_eq!(held, vec![org.builtin(Builtin::Supervisor)]);
        assert_cache_agrees(&mut org);
    }

    #[test]
    fn an_explicit_role_replaces_everyone_else_and_unions_with_the_rest() {
        let mut org = Org::new();
        let no_mail = org.role(
            "No mail",
            Grants::NONE,
            &[Assignee::Tree(org.dept["warehouse"])],
        );
        let hanna_too = org.role(
            "No mail for Hanna",
            Grants::NONE,
            &[Assignee::User(org.user["hanna"])],
        );
        for refreshed in [false, true] {
            if refreshed {
                org.graph.refresh();
            }
            let g = &org.graph;
            assert_eq!(g.effective(org.user["vera"]), Grants::NONE);
            assert_eq!(g.effective(org.user["walt"]), Grants::NONE);
            assert_eq!(
                g.effective(org.user["olga"]),
                Builtin::Manager.default_grants()
            );
            // A head holding "No mail" keeps Supervisor: roles are a union.
            assert_eq!(
                g.effective(org.user["hanna"]),
                Builtin::Supervisor.default_grants()
            );
        }
        let walt = org.graph.held_roles(org.user["walt"]);
        assert_eq!(walt.len(), 1);
        assert_eq!(walt[0].role, no_mail);
        assert_eq!(
            walt[0].via,
            vec![
                Relationship::Member(org.user["walt"], org.dept["night"]),
                Relationship::Parent(org.dept["night"], org.dept["warehouse"]),
            ]
        );
        assert!(org
            .graph
            .held_roles(org.user["hanna"])
            .iter()
            .any(|h| h.role == hanna_too));

        // Moving Night shift under Sales takes Walt out of the tree: the cache is dropped and
        // he falls back to Manager.
        org.graph.refresh();
        org.graph
            .write(Relationship::Parent(org.dept["night"], org.dept["sales"]))
            .expect("move");
        assert!(!org.graph.is_refreshed());
        assert_eq!(
            org.graph.effective(org.user["walt"]),
            Builtin::Manager.default_grants()
        );
        assert_cache_agrees(&mut org);

        // Deleting the role deletes its assignments: Vera is back to Manager.
        org.graph.remove_role(no_mail);
        assert_eq!(
            org.graph.effective(org.user["vera"]),
            Builtin::Manager.default_grants()
        );
        assert_cache_agrees(&mut org);
    }

    #[test]
    fn membership_changes_need_no_refresh() {
        let mut org = Org::new();
        let hr = scoped(Scope::All, Scope::Own, Scope::Own, Scope::Own);
        org.role("HR", hr, &[Assignee::Members(org.dept["other"])]);
        org.graph.refresh();
        assert_eq!(org.graph.effective(org.user["olga"]), hr);
        org.graph
            .write(Relationship::Member(org.user["emil"], org.dept["other"]))
            .expect("member");
        org.graph
            .delete(Relationship::Member(org.user["olga"], org.dept["other"]));
        assert!(org.graph.is_refreshed());
        assert_eq!(org.graph.effective(org.user["emil"]), hr);
        assert_eq!(
            org.graph.effective(org.user["olga"]),
            Builtin::Manager.default_grants()
        );
        assert_cache_agrees(&mut org);
    }

    #[test]
    fn role_edits_drop_the_cache_and_undefined_or_administrator_assignments_count_for_nothing() {
        let mut org = Org::new();
        let manager = org.builtin(Builtin::Manager);
        org.graph.refresh();
        let mut def = org.graph.role(manager).cloned().expect("manager");
        def.grants.invite = true;
        org.graph.put_role(def);
        assert!(!org.graph.is_refreshed());
        assert!(org.graph.effective(org.user["emil"]).invite);

        // An assignment of a role nobody defined, or of Administrator, gives nothing and does
        // not take "everyone else" away.
        let ghost = RoleId::new();
        let admin_role = org.builtin(Builtin::Administrator);
        for role in [ghost, admin_role] {
            org.graph
                .write(Relationship::Assignee(
                    role,
                    Assignee::User(org.user["emil"]),
                ))
                .expect("assign");
        }
        assert!(org.graph.effective(org.user["emil"]).invite);
        assert_eq!(
            org.graph.effective(org.user["emil"]).connect_mailboxes,
            Scope::Own
        );
        assert!(org
            .graph
            .held_roles(org.user["emil"])
            .iter()
            .all(|h| h.role == manager));
        assert_cache_agrees(&mut org);

        // Defining it later counts at once.
        org.graph.put_role(RoleDef {
            id: ghost,
            builtin: None,
            name: "Late".into(),
            hidden: true,
            grants: Grants::NONE,
            version: 1,
        });
        assert!(!org.graph.effective(org.user["emil"]).invite);
        assert_cache_agrees(&mut org);
    }

    #[test]
    fn dismissed_hold_nothing_and_everyone_invites_is_identitys_flag() {
        let mut org = Org::new();
        org.graph
            .write(Relationship::EveryoneInvites)
            .expect("flag");
        org.graph.refresh();
        assert!(org.graph.effective(org.user["emil"]).invite);
        org.graph.set_user(org.user["emil"], false);
        assert_eq!(org.graph.effective(org.user["emil"]), Grants::NONE);
        assert!(org.graph.held_roles(org.user["emil"]).is_empty());
        org.graph.delete(Relationship::EveryoneInvites);
        assert!(!org.graph.effective(org.user["olga"]).invite);
    }

    #[test]
    fn scopes_reach_as_far_as_they_say() {
        let org = Org::new();
        let g = &org.graph;
        let u = |p: &str| org.user[p];
        // Hanna heads East: Emil is hers in every sense; Olga (Other) only for All.
        for (scope, emil, olga) in [
            (Scope::None, false, false),
            (Scope::Own, false, false),
            (Scope::Subordinates, true, false),
            (Scope::Department, true, false),
            (Scope::All, true, true),
        ] {
            assert_eq!(g.reaches(u("hanna"), scope, u("emil")), emil, "{scope:?}");
            assert_eq!(g.reaches(u("hanna"), scope, u("olga")), olga, "{scope:?}");
            assert_eq!(
                g.reaches(u("hanna"), scope, u("hanna")),
                scope >= Scope::Own
            );
        }
        // Hilda is a member of Company (not a head): she supervises nobody, but her department
        // and below is everyone in the tree.
        assert!(!g.reaches(u("hilda"), Scope::Subordinates, u("walt")));
        assert!(g.reaches(u("hilda"), Scope::Department, u("walt")));
        assert!(g.reaches(u("hilda"), Scope::Department, u("ceo")));
        // Emil's department is East: not Olga, not Hanna's superior.
        assert!(g.reaches(u("emil"), Scope::Department, u("hanna")));
        assert!(!g.reaches(u("emil"), Scope::Department, u("olga")));
        assert!(!g.reaches(u("emil"), Scope::Department, u("ceo")));
        // Someone with no department reaches only themselves.
        assert!(!g.reaches(u("ada"), Scope::Department, u("emil")));
    }
}
