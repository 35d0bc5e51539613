//! The fast engine against a naive reference evaluator, on random organisations: random
//! department trees, memberships, heads, owners, readers and dismissals, and random roles
//! with random scopes assigned to people, departments, heads and everyone else — then moved,
//! edited, unassigned and deleted after assigning. The reference reads the plain list of
//! relationships and roles for every question, straight from the definitions (design §2):
//! which roles a user holds by scanning every assignment, how far a scope reaches by brute
//! force over departments, and reading mail from the owner and readers only.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use mailroom_access::model::Relationship::{self, *};
use mailroom_access::model::{Assignee, Builtin, Grants, RoleDef, Scope};
use mailroom_access::{MailboxScope, OrgGraph};
use mailroom_types::{DepartmentId, MailboxId, Permission, RoleId, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The permissions a role's scope gives on a mailbox.
const SCOPED: [Permission; 5] = [
    Permission::MailboxView,
    Permission::MailboxModify,
    Permission::MailboxSync,
    Permission::MailboxConnect,
    Permission::MailboxGrantRead,
];

struct Reference {
    rels: Vec<Relationship>,
    roles: Vec<RoleDef>,
    dismissed: HashSet<UserId>,
    users: Vec<UserId>,
    /// Answers worked out once the organisation stops changing ([`Reference::settle`]):
    /// effective grants per user, and (supervises, same department or below) per pair.
    effective: RefCell<HashMap<UserId, Grants>>,
    pairs: RefCell<HashMap<(UserId, UserId), (bool, bool)>>,
}

impl Reference {
    /// Forgets the worked-out answers: call after every change.
    fn settle(&self) {
        self.effective.borrow_mut().clear();
        self.pairs.borrow_mut().clear();
    }
    fn parent(&self, d: DepartmentId) -> Option<DepartmentId> {
        self.rels.iter().find_map(|r| match r {
            Parent(c, p) if *c == d => Some(*p),
            _ => None,
        })
    }
    fn is_ancestor_or_self(&self, a: DepartmentId, d: DepartmentId) -> bool {
        let mut cur = Some(d);
        for _ in 0..10_000 {
            match cur {
                Some(x) if x == a => return true,
                Some(x) => cur = self.parent(x),
                None => return false,
            }
        }
        panic!("cycle in reference data");
    }
    fn active(&self, u: UserId) -> bool {
        self.users.contains(&u) && !self.dismissed.contains(&u)
    }
    fn has(&self, r: Relationship) -> bool {
        self.rels.contains(&r)
    }
    fn admin(&self, u: UserId) -> bool {
        self.active(u) && self.has(Admin(u))
    }
    fn supervises(&self, b: UserId, u: UserId) -> bool {
        if b == u || !self.active(b) {
            return false;
        }
        self.rels.iter().any(|r| match r {
            Head(a, boss) if *boss == b => self.rels.iter().any(|s| match s {
                Member(user, m) if *user == u => self.is_ancestor_or_self(*a, *m),
                Head(h, user) if *user == u => self
                    .parent(*h)
                    .is_some_and(|p| self.is_ancestor_or_self(*a, p)),
                _ => false,
            }),
            _ => false,
        })
    }
    fn owner(&self, m: MailboxId) -> Option<UserId> {
        self.rels.iter().find_map(|r| match r {
            Owner(mb, u) if *mb == m => Some(*u),
            _ => None,
        })
    }
    fn role(&self, id: RoleId) -> Option<&RoleDef> {
        self.roles.iter().find(|r| r.id == id)
    }
    fn builtin(&self, b: Builtin) -> RoleId {
        self.roles
            .iter()
            .find(|r| r.builtin == Some(b))
            .expect("builtin role")
            .id
    }
    /// The departments `x` is a member of or heads.
    fn home(&self, x: UserId) -> Vec<DepartmentId> {
        self.rels
            .iter()
            .filter_map(|r| match r {
                Member(u, d) if *u == x => Some(*d),
                Head(d, u) if *u == x => Some(*d),
                _ => None,
            })
            .collect()
    }
    /// Whether an assignment other than "everyone else" takes in `u`.
    fn applies(&self, u: UserId, a: Assignee) -> bool {
        match a {
            Assignee::User(x) => x == u,
            Assignee::Members(d) => self.has(Member(u, d)),
            Assignee::Tree(t) => self
                .rels
                .iter()
                .any(|r| matches!(r, Member(x, d) if *x == u && self.is_ancestor_or_self(t, *d))),
            Assignee::Heads => self.rels.iter().any(|r| matches!(r, Head(_, x) if *x == u)),
            Assignee::EveryoneElse => false,
        }
    }
    /// The roles assigned to `u` other than through "everyone else", scanning every
    /// assignment.
    fn explicit_roles(&self, u: UserId) -> Vec<RoleId> {
        self.rels
            .iter()
            .filter_map(|r| match r {
                Relationship::Assignee(role, a)
                    if self.role(*role).is_some() && self.applies(u, *a) =>
                {
                    Some(*role)
                }
                _ => None,
            })
            .collect()
    }
    fn everyone_else_roles(&self) -> Vec<RoleId> {
        self.rels
            .iter()
            .filter_map(|r| match r {
                Relationship::Assignee(role, Assignee::EveryoneElse)
                    if self.role(*role).is_some() =>
                {
                    Some(*role)
                }
                _ => None,
            })
            .collect()
    }
    /// The roles `u` holds: Administrator for an admin; the explicit ones; and only with
    /// neither, those of everyone else.
    fn roles_of(&self, u: UserId) -> HashSet<RoleId> {
        if !self.active(u) {
            return HashSet::new();
        }
        let mut out: HashSet<RoleId> = self.explicit_roles(u).into_iter().collect();
        if self.has(Admin(u)) {
            out.insert(self.builtin(Builtin::Administrator));
        } else if out.is_empty() {
            out.extend(self.everyone_else_roles());
        }
        out
    }
    /// Whether `u` holds a role through this assignment (`org#admin@u` for Administrator).
    fn holds_through(&self, u: UserId, assignment: Relationship) -> bool {
        match assignment {
            Admin(x) => x == u && self.admin(u),
            Relationship::Assignee(role, Assignee::EveryoneElse) => {
                self.has(assignment)
                    && self.active(u)
                    && !self.has(Admin(u))
                    && self.explicit_roles(u).is_empty()
                    && self.role(role).is_some()
            }
            Relationship::Assignee(role, a) => {
                self.has(assignment)
                    && self.active(u)
                    && self.role(role).is_some()
                    && self.applies(u, a)
            }
            _ => false,
        }
    }
    fn effective(&self, u: UserId) -> Grants {
        if let Some(g) = self.effective.borrow().get(&u) {
            return *g;
        }
        let g = if !self.active(u) {
            Grants::NONE
        } else if self.has(Admin(u)) {
            Grants::ALL
        } else {
            let mut g = self
                .roles_of(u)
                .into_iter()
                .filter_map(|r| self.role(r))
                .fold(Grants::NONE, |g, r| g.join(r.grants));
            g.invite |= self.has(EveryoneInvites);
            g
        };
        self.effective.borrow_mut().insert(u, g);
        g
    }
    /// Whether a permission held at `scope` by `h` reaches the mailboxes of `o`.
    fn reaches(&self, h: UserId, scope: Scope, o: UserId) -> bool {
        let pair = || {
            if let Some(p) = self.pairs.borrow().get(&(h, o)) {
                return *p;
            }
            let (home_h, home_o) = (self.home(h), self.home(o));
            let department = home_h
                .iter()
                .any(|dh| home_o.iter().any(|d_o| self.is_ancestor_or_self(*dh, *d_o)));
            let p = (self.supervises(h, o), department);
            self.pairs.borrow_mut().insert((h, o), p);
            p
        };
        match scope {
            Scope::None => false,
            Scope::Own => h == o,
            Scope::Subordinates => h == o || pair().0,
            Scope::Department => h == o || pair().1,
            Scope::All => true,
        }
    }
    /// A permission on the mailbox (`Some`) or the organisation (`None`).
    fn check(&self, u: UserId, p: Permission, m: Option<MailboxId>) -> bool {
        if !self.active(u) {
            return false;
        }
        let owner = m.and_then(|m| self.owner(m));
        match p {
            Permission::MailboxReadMail => {
                m.is_some_and(|m| owner == Some(u) || self.has(Reader(m, u)))
            }
            Permission::OrgInvite => self.effective(u).invite,
            Permission::OrgManagePermissions => self.effective(u).manage_permissions,
            Permission::OrgRegisterUsers => self.has(Admin(u)),
            _ => owner.is_some_and(|o| self.reaches(u, self.effective(u).scope_for(p), o)),
        }
    }
    /// Everyone an assignment would take in now.
    fn covered(&self, a: Assignee) -> Vec<UserId> {
        self.users
            .iter()
            .copied()
            .filter(|u| match a {
                Assignee::EveryoneElse => {
                    self.active(*u) && !self.has(Admin(*u)) && self.explicit_roles(*u).is_empty()
                }
                a => self.applies(*u, a),
            })
            .collect()
    }
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.gen_range(0..items.len())]
}

fn random_scope(rng: &mut StdRng) -> Scope {
    pick(rng, &Scope::ALL)
}

fn random_grants(rng: &mut StdRng) -> Grants {
    Grants {
        view_mailbox_list: random_scope(rng),
        connect_mailboxes: random_scope(rng),
        modify_mailboxes: random_scope(rng),
        grant_read_access: random_scope(rng),
        invite: rng.gen_bool(0.3),
        manage_permissions: rng.gen_bool(0.3),
    }
}

/// At most `holder`, each permission lowered at random.
fn lowered(rng: &mut StdRng, holder: Grants) -> Grants {
    let mut low = |s: Scope| {
        Scope::ALL[rng.gen_range(0..=Scope::ALL.iter().position(|x| *x == s).unwrap_or(0))]
    };
    Grants {
        view_mailbox_list: low(holder.view_mailbox_list),
        connect_mailboxes: low(holder.connect_mailboxes),
        modify_mailboxes: low(holder.modify_mailboxes),
        grant_read_access: low(holder.grant_read_access),
        invite: holder.invite && rng.gen_bool(0.5),
        manage_permissions: holder.manage_permissions && rng.gen_bool(0.2),
    }
}

fn random_assignee(rng: &mut StdRng, users: &[UserId], departments: &[DepartmentId]) -> Assignee {
    match rng.gen_range(0..5) {
        0 => Assignee::User(pick(rng, users)),
        1 => Assignee::Members(pick(rng, departments)),
        2 => Assignee::Tree(pick(rng, departments)),
        3 => Assignee::Heads,
        _ => Assignee::EveryoneElse,
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Whether `scope` takes in `mailbox`, owned by `owner`.
fn in_scope(scope: &MailboxScope, mailbox: MailboxId, owner: Option<UserId>) -> bool {
    scope.mailboxes.contains(&mailbox)
        || owner.is_some_and(|o| scope.whole_organization || scope.owners.contains(&o))
}

#[test]
fn the_engine_agrees_with_the_reference_on_random_organisations() {
    let mut delegations = (0usize, 0usize); // (Ok for a non-admin with a subject, asked)
    for seed in 0..200u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let departments: Vec<DepartmentId> = (0..rng.gen_range(1..=12))
            .map(|_| DepartmentId::new())
            .collect();
        let users: Vec<UserId> = (0..rng.gen_range(2..=20)).map(|_| UserId::new()).collect();
        let mailboxes: Vec<MailboxId> = (0..rng.gen_range(1..15))
            .map(|_| MailboxId::new())
            .collect();
        let refreshes = seed % 2 == 1;
        let mut graph = OrgGraph::new();
        let mut reference = Reference {
            rels: Vec::new(),
            roles: Vec::new(),
            dismissed: HashSet::new(),
            users: users.clone(),
            effective: RefCell::default(),
            pairs: RefCell::default(),
        };
        // The three defaults (random grants for Supervisor and Manager in half the
        // organisations), and 0–6 custom roles.
        let random_defaults = rng.gen_bool(0.5);
        for b in [
            Builtin::Administrator,
            Builtin::Supervisor,
            Builtin::Manager,
        ] {
            let grants = if random_defaults && b != Builtin::Administrator {
                random_grants(&mut rng)
            } else {
                b.default_grants()
            };
            reference.roles.push(RoleDef {
                id: RoleId::new(),
                builtin: Some(b),
                name: b.default_name().into(),
                hidden: false,
                grants,
                version: 1,
            });
        }
        for i in 0..rng.gen_range(0..=6) {
            reference.roles.push(RoleDef {
                id: RoleId::new(),
                builtin: None,
                name: format!("custom {i}"),
                hidden: rng.gen_bool(0.2),
                grants: random_grants(&mut rng),
                version: 1,
            });
        }
        for r in &reference.roles {
            graph.put_role(r.clone());
        }
        let assignable: Vec<RoleId> = reference
            .roles
            .iter()
            .filter(|r| r.builtin != Some(Builtin::Administrator))
            .map(|r| r.id)
            .collect();
        let custom: Vec<RoleId> = reference
            .roles
            .iter()
            .filter(|r| r.builtin.is_none())
            .map(|r| r.id)
            .collect();
        let mut rels: Vec<Relationship> = vec![
            Relationship::Assignee(reference.builtin(Builtin::Supervisor), Assignee::Heads),
            Relationship::Assignee(reference.builtin(Builtin::Manager), Assignee::EveryoneElse),
        ];
        for u in &users {
            graph.set_user(*u, true);
        }
        // A random tree: each department may hang under an earlier one.
        for (i, d) in departments.iter().enumerate().skip(1) {
            if rng.gen_bool(0.8) {
                rels.push(Parent(*d, departments[rng.gen_range(0..i)]));
            }
        }
        for u in &users {
            if rng.gen_bool(0.8) {
                rels.push(Member(*u, pick(&mut rng, &departments)));
            }
            if rng.gen_bool(0.1) {
                rels.push(Member(*u, pick(&mut rng, &departments)));
            }
            if rng.gen_bool(0.25) {
                rels.push(Head(pick(&mut rng, &departments), *u));
            }
            if rng.gen_bool(0.1) {
                rels.push(Admin(*u));
            }
        }
        for m in &mailboxes {
            if rng.gen_bool(0.9) {
                rels.push(Owner(*m, pick(&mut rng, &users)));
            }
            for _ in 0..rng.gen_range(0..3) {
                rels.push(Reader(*m, pick(&mut rng, &users)));
            }
        }
        for _ in 0..rng.gen_range(0..=10) {
            let role = pick(&mut rng, &assignable);
            rels.push(Relationship::Assignee(
                role,
                random_assignee(&mut rng, &users, &departments),
            ));
        }
        if rng.gen_bool(0.2) {
            rels.push(EveryoneInvites);
        }
        for r in rels {
            graph.write(r).expect("write");
            if !reference.rels.contains(&r) {
                reference.rels.push(r);
            }
        }
        if refreshes {
            graph.refresh();
        }

        // After assigning: moves, role edits, unassignments, role deletions, other deletions,
        // new memberships and heads, dismissals. The engine refuses exactly the moves that
        // would make a cycle.
        for _ in 0..rng.gen_range(0..4) {
            let (child, parent) = (pick(&mut rng, &departments), pick(&mut rng, &departments));
            let cycle = reference.is_ancestor_or_self(child, parent);
            let result = graph.write(Parent(child, parent));
            assert_eq!(
                result.is_err(),
                cycle,
                "seed {seed}: move {child} under {parent}"
            );
            if !cycle {
                reference
                    .rels
                    .retain(|r| !matches!(r, Parent(c, _) if *c == child));
                reference.rels.push(Parent(child, parent));
            }
        }
        for _ in 0..rng.gen_range(0..3) {
            let id = pick(&mut rng, &assignable);
            let grants = random_grants(&mut rng);
            let role = reference
                .roles
                .iter_mut()
                .find(|r| r.id == id)
                .expect("role");
            role.grants = grants;
            role.version += 1;
            graph.put_role(role.clone());
        }
        for _ in 0..rng.gen_range(0..3) {
            let assigned: Vec<Relationship> = reference
                .rels
                .iter()
                .copied()
                .filter(|r| matches!(r, Relationship::Assignee(..)))
                .collect();
            if assigned.is_empty() {
                break;
            }
            let r = pick(&mut rng, &assigned);
            assert!(graph.delete(r), "seed {seed}: unassign {r:?}");
            reference.rels.retain(|x| *x != r);
        }
        if !custom.is_empty() && rng.gen_bool(0.4) {
            let id = pick(&mut rng, &custom);
            let removed = graph.remove_role(id);
            assert_eq!(removed.map(|r| r.id), Some(id), "seed {seed}: delete role");
            reference.roles.retain(|r| r.id != id);
            reference
                .rels
                .retain(|r| !matches!(r, Relationship::Assignee(role, _) if *role == id));
            assert_eq!(graph.assignees(id).count(), 0, "seed {seed}: cascade");
        }
        for _ in 0..rng.gen_range(0..4) {
            let r = reference.rels[rng.gen_range(0..reference.rels.len())];
            if matches!(r, Parent(..) | Relationship::Assignee(..)) {
                continue;
            }
            assert!(graph.delete(r), "seed {seed}: delete {r:?}");
            reference.rels.retain(|x| *x != r);
        }
        // A role created after the caches were built, and more assignments.
        let mut late = assignable.clone();
        late.retain(|id| reference.role(*id).is_some());
        if rng.gen_bool(0.3) {
            let role = RoleDef {
                id: RoleId::new(),
                builtin: None,
                name: "late".into(),
                hidden: false,
                grants: random_grants(&mut rng),
                version: 1,
            };
            late.push(role.id);
            graph.put_role(role.clone());
            reference.roles.push(role);
        }
        for _ in 0..rng.gen_range(0..3) {
            let r = Relationship::Assignee(
                pick(&mut rng, &late),
                random_assignee(&mut rng, &users, &departments),
            );
            graph.write(r).expect("assign");
            if !reference.rels.contains(&r) {
                reference.rels.push(r);
            }
        }
        for _ in 0..rng.gen_range(0..3) {
            let u = pick(&mut rng, &users);
            let r = if rng.gen_bool(0.5) {
                Member(u, pick(&mut rng, &departments))
            } else {
                Head(pick(&mut rng, &departments), u)
            };
            graph.write(r).expect("write");
            if !reference.rels.contains(&r) {
                reference.rels.push(r);
            }
        }
        for u in &users {
            if rng.gen_bool(0.15) {
                graph.set_user(*u, false);
                reference.dismissed.insert(*u);
            }
        }
        if refreshes && rng.gen_bool(0.5) {
            graph.refresh();
        }
        reference.settle();
        // The same organisation with its caches rebuilt: refreshing changes no answer.
        let mut refreshed = graph.clone();
        refreshed.refresh();

        let mut everyone = users.clone();
        everyone.push(UserId::new()); // a user of another organisation
        for u in &everyone {
            let u = *u;
            let why = |p: Permission| format!("seed {seed}: {u} {}", p.name());
            assert_eq!(
                graph.effective(u),
                reference.effective(u),
                "seed {seed}: effective grants of {u}"
            );
            let held: HashSet<RoleId> = graph.held_roles(u).iter().map(|h| h.role).collect();
            assert_eq!(held, reference.roles_of(u), "seed {seed}: roles of {u}");
            for p in Permission::ALL {
                let targets: Vec<Option<MailboxId>> = if p.on_mailbox() {
                    mailboxes.iter().copied().map(Some).collect()
                } else {
                    vec![None]
                };
                for m in targets {
                    let allowed = reference.check(u, p, m);
                    let at = format!("{} {m:?}", why(p));
                    assert_eq!(graph.check(u, p, m).expect("check"), allowed, "{at}");
                    assert_eq!(
                        refreshed.check(u, p, m).expect("check"),
                        allowed,
                        "{at}: refreshed"
                    );
                    if p == Permission::MailboxReadMail {
                        let m = m.expect("a mailbox");
                        assert_eq!(
                            allowed,
                            reference.active(u)
                                && (reference.owner(m) == Some(u) || reference.has(Reader(m, u))),
                            "{at}: reading mail takes the owner or a reader grant"
                        );
                    }
                    let explanation = graph.explain(u, p, m).expect("explain");
                    assert_eq!(explanation.is_some(), allowed, "{at}: explain");
                    let Some(explanation) = explanation else {
                        continue;
                    };
                    for r in &explanation.path {
                        assert!(
                            reference.has(*r),
                            "{at}: the explanation cites {r:?}, which is not held"
                        );
                    }
                    let granted = explanation.granted_by;
                    match p {
                        Permission::MailboxReadMail | Permission::OrgRegisterUsers => {
                            assert_eq!(granted, None, "{at}: no role grants this")
                        }
                        Permission::OrgInvite if granted.is_none() => assert!(
                            reference.has(EveryoneInvites),
                            "{at}: invites without a role, though not everyone may"
                        ),
                        _ => {
                            let g = granted.unwrap_or_else(|| panic!("{at}: names no role"));
                            let role = reference
                                .role(g.role)
                                .unwrap_or_else(|| panic!("{at}: names an unknown role"));
                            assert!(
                                reference.roles_of(u).contains(&g.role),
                                "{at}: names {}, which {u} does not hold",
                                role.name
                            );
                            let through = match g.assignment {
                                Relationship::Assignee(r, _) => r == g.role,
                                Admin(_) => role.builtin == Some(Builtin::Administrator),
                                _ => false,
                            };
                            assert!(
                                through && reference.holds_through(u, g.assignment),
                                "{at}: {u} does not hold {} through {:?}",
                                role.name,
                                g.assignment
                            );
                            match p {
                                Permission::OrgInvite => assert!(role.grants.invite, "{at}"),
                                Permission::OrgManagePermissions => {
                                    assert!(role.grants.manage_permissions, "{at}")
                                }
                                _ => {
                                    let owner = m.and_then(|m| reference.owner(m)).expect("owner");
                                    assert!(
                                        role.grants.scope_for(p) >= g.scope
                                            && reference.reaches(u, g.scope, owner),
                                        "{at}: {} at {:?} does not reach {owner}",
                                        role.name,
                                        g.scope
                                    );
                                }
                            }
                        }
                    }
                }
                if !p.on_mailbox() {
                    continue;
                }
                let expected: Vec<MailboxId> = mailboxes
                    .iter()
                    .copied()
                    .filter(|m| reference.check(u, p, Some(*m)))
                    .collect();
                assert_eq!(
                    sorted(graph.lookup_mailboxes(u, p)),
                    sorted(expected.clone()),
                    "{}: lookup_mailboxes",
                    why(p)
                );
                assert_eq!(
                    sorted(refreshed.lookup_mailboxes(u, p)),
                    sorted(expected.clone()),
                    "{}: lookup_mailboxes, refreshed",
                    why(p)
                );
                // The scope a service applies to its own rows reaches the same mailboxes.
                let scope = graph.mailbox_scope(u, p);
                let scoped: Vec<MailboxId> = mailboxes
                    .iter()
                    .copied()
                    .filter(|m| in_scope(&scope, *m, graph.owner_of(*m)))
                    .collect();
                assert_eq!(
                    sorted(scoped),
                    sorted(expected),
                    "{}: mailbox_scope",
                    why(p)
                );
                // And restricted to some owners, also the owners-to-be of no mailbox yet.
                let only: Vec<UserId> = users
                    .iter()
                    .copied()
                    .filter(|_| rng.gen_bool(0.4))
                    .collect();
                let scope = graph.mailbox_scope_for(u, p, &only);
                for m in &mailboxes {
                    let owner = reference.owner(*m);
                    if owner.is_some_and(|o| only.contains(&o)) {
                        assert_eq!(
                            in_scope(&scope, *m, owner),
                            reference.check(u, p, Some(*m)),
                            "{}: mailbox_scope_for {m}",
                            why(p)
                        );
                    }
                }
                if p != Permission::MailboxReadMail {
                    for o in &only {
                        assert_eq!(
                            scope.whole_organization || scope.owners.contains(o),
                            reference.active(u)
                                && reference.reaches(u, reference.effective(u).scope_for(p), *o),
                            "{}: mailbox_scope_for owner {o}",
                            why(p)
                        );
                    }
                }
            }
            for v in &everyone {
                assert_eq!(
                    graph.supervises(u, *v),
                    reference.supervises(u, *v),
                    "seed {seed}: {u} supervises {v}"
                );
            }
        }
        for p in Permission::ALL {
            if p.on_mailbox() {
                for m in &mailboxes {
                    let expected: Vec<UserId> = users
                        .iter()
                        .copied()
                        .filter(|u| reference.check(*u, p, Some(*m)))
                        .collect();
                    assert_eq!(
                        sorted(graph.lookup_users(*m, p)),
                        sorted(expected.clone()),
                        "seed {seed}: lookup_users {m} {}",
                        p.name()
                    );
                    assert_eq!(
                        sorted(refreshed.lookup_users(*m, p)),
                        sorted(expected),
                        "seed {seed}: lookup_users {m} {}, refreshed",
                        p.name()
                    );
                }
            } else {
                let expected: Vec<UserId> = users
                    .iter()
                    .copied()
                    .filter(|u| reference.check(*u, p, None))
                    .collect();
                assert_eq!(
                    sorted(graph.lookup_org_users(p)),
                    sorted(expected),
                    "seed {seed}: lookup_org_users {}",
                    p.name()
                );
            }
        }

        // Delegation: whatever the engine lets a caller hand out, to whomever, reaches no
        // owner the caller does not reach.
        for _ in 0..30 {
            let caller = pick(&mut rng, &everyone);
            let mine = reference.effective(caller);
            let grants = if rng.gen_bool(0.7) {
                lowered(&mut rng, mine)
            } else {
                random_grants(&mut rng)
            };
            let subject = if rng.gen_bool(0.2) {
                None
            } else {
                Some(random_assignee(&mut rng, &users, &departments))
            };
            let answer = graph.may_delegate(caller, grants, subject);
            let at = format!("seed {seed}: {caller} delegates {grants:?} to {subject:?}");
            if reference.admin(caller) {
                assert_eq!(answer, Ok(()), "{at}: an org admin may");
                continue;
            }
            let refused = !mine.manage_permissions
                || grants.manage_permissions
                || !grants.within(mine)
                || matches!(subject, Some(Assignee::Heads | Assignee::EveryoneElse));
            if refused {
                assert!(answer.is_err(), "{at}: allowed, but it should not be");
                continue;
            }
            let Some(subject) = subject else {
                assert_eq!(
                    answer,
                    Ok(()),
                    "{at}: creating a role within one's own grants"
                );
                continue;
            };
            delegations.1 += 1;
            if answer.is_err() {
                continue;
            }
            delegations.0 += 1;
            for x in reference.covered(subject) {
                for p in SCOPED {
                    for o in &users {
                        assert!(
                            !reference.reaches(x, grants.scope_for(p), *o)
                                || reference.reaches(caller, mine.scope_for(p), *o),
                            "{at}: {x} would reach {o} for {}, which the caller does not",
                            p.name()
                        );
                    }
                }
            }
        }
    }
    eprintln!(
        "delegation: {} of {} non-admin delegations to a subject allowed",
        delegations.0, delegations.1
    );
    assert!(
        delegations.0 > 0,
        "no delegation by a non-admin was ever allowed"
    );
}
