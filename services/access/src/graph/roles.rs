//! Roles in the graph: the organisation's role definitions, their assignments indexed both
//! ways, which roles a user holds ([`OrgGraph::held_roles`]), the union of their grants
//! ([`OrgGraph::effective`]) and how far a scope reaches from its holder
//! ([`OrgGraph::reaches`]).
//!
//! A user holds: Administrator when an org admin; every role assigned to them, to a department
//! they are a direct member of, to a department at or above one they are a member of (as a
//! tree), or to "heads" when they head a department; and only when none of those apply and
//! they are no admin, the roles assigned to "everyone else".

use std::collections::{HashMap, HashSet};

use mailroom_types::{DepartmentId, RoleId, UserId};

use super::{add, remove, OrgGraph};
use crate::model::{Assignee, Builtin, Grants, Relationship, RoleDef, Scope};

/// The roles of one organisation and their assignments, indexed both ways.
#[derive(Debug, Default, Clone)]
pub(super) struct RoleIndex {
    pub(super) defs: HashMap<RoleId, RoleDef>,
    pub(super) by_user: HashMap<UserId, HashSet<RoleId>>,
    pub(super) by_members: HashMap<DepartmentId, HashSet<RoleId>>,
    pub(super) by_tree: HashMap<DepartmentId, HashSet<RoleId>>,
    pub(super) heads: HashSet<RoleId>,
    pub(super) everyone_else: HashSet<RoleId>,
    pub(super) assignees: HashMap<RoleId, HashSet<Assignee>>,
    /// identity's "everyone may invite" (`org#inviter@org#member`).
    pub(super) everyone_invites: bool,
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
        add(&mut self.assignees, role, who)
    }

    pub(super) fn unassign(&mut self, role: RoleId, who: Assignee) -> bool {
        match who {
            Assignee::User(u) => remove(&mut self.by_user, &u, &role),
            Assignee::Members(d) => remove(&mut self.by_members, &d, &role),
            Assignee::Tree(d) => remove(&mut self.by_tree, &d, &role),
            Assignee::Heads => self.heads.remove(&role),
            Assignee::EveryoneElse => self.everyone_else.remove(&role),
        };
        remove(&mut self.assignees, &role, &who)
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
    }

    /// Removes a role and its assignments; the definition it had.
    pub fn remove_role(&mut self, role: RoleId) -> Option<RoleDef> {
        for who in self.roles.assignees.get(&role).cloned().unwrap_or_default() {
            self.roles.unassign(role, who);
        }
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

    /// The roles `user` holds and how, Administrator first. Empty for someone dismissed or
    /// unknown. The walk behind [`OrgGraph::effective`], for explanations and listings.
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
        let held =
            |out: &mut Vec<HeldRole>, role: RoleId, who: Assignee, via: Vec<Relationship>| {
                if self.roles.defs.contains_key(&role) {
                    out.push(HeldRole {
                        role,
                        assignment: Relationship::Assignee(role, who),
                        via,
                    });
                }
            };
        for role in self.roles.by_user.get(&user).into_iter().flatten() {
            explicit = true;
            held(&mut out, *role, Assignee::User(user), Vec::new());
        }
        for d in self.member_of.get(&user).into_iter().flatten() {
            let member = Relationship::Member(user, *d);
            for role in self.roles.by_members.get(d).into_iter().flatten() {
                explicit = true;
                held(&mut out, *role, Assignee::Members(*d), vec![member]);
            }
            let mut via = vec![member];
            let mut below = *d;
            for a in self.ancestors_or_self(*d) {
                if a != below {
                    via.push(Relationship::Parent(below, a));
                    below = a;
                }
                for role in self.roles.by_tree.get(&a).into_iter().flatten() {
                    explicit = true;
                    held(&mut out, *role, Assignee::Tree(a), via.clone());
                }
            }
        }
        if let Some(d) = self.headed_by.get(&user).and_then(|ds| ds.iter().min()) {
            for role in &self.roles.heads {
                explicit = true;
                held(
                    &mut out,
                    *role,
                    Assignee::Heads,
                    vec![Relationship::Head(*d, user)],
                );
            }
        }
        if !explicit && !admin {
            for role in &self.roles.everyone_else {
                held(&mut out, *role, Assignee::EveryoneElse, Vec::new());
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

    /// The union of the grants of every role `user` holds (everything for an org admin,
    /// nothing for someone dismissed), with `invite` when identity lets everyone invite.
    pub fn effective(&self, user: UserId) -> Grants {
        if !self.active(&user) {
            return Grants::NONE;
        }
        if self.admins.contains(&user) {
            return Grants::ALL;
        }
        let mut g = self
            .held_roles(user)
            .iter()
            .filter_map(|h| self.roles.defs.get(&h.role))
            .fold(Grants::NONE, |g, r| g.join(r.grants));
        g.invite |= self.roles.everyone_invites;
        g
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

    /// Whether a permission held at `scope` by `holder` reaches mailboxes owned by `owner`.
    pub fn reaches(&self, holder: UserId, scope: Scope, owner: UserId) -> bool {
        match scope {
            Scope::None => false,
            Scope::Own => holder == owner,
            Scope::Subordinates => holder == owner || self.supervises(holder, owner),
            Scope::Department => {
                holder == owner || {
                    let home: HashSet<DepartmentId> = self.home(holder).collect();
                    !home.is_empty()
                        && self
                            .home(owner)
                            .any(|d| self.ancestors_or_self(d).any(|a| home.contains(&a)))
                }
            }
            Scope::All => true,
        }
    }

    /// Rebuilds the caches roles are evaluated from. The cache is an optimisation, never a
    /// source of truth: a graph that is never refreshed answers the same, more slowly.
    pub fn refresh(&mut self) {}
}
