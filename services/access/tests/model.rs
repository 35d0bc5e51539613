//! The fast engine against a naive reference evaluator, on random organisations: random
//! department trees, memberships, heads, grants, owners and dismissals. The reference reads
//! the plain list of relationships for every question, straight from the definitions.

use std::collections::HashSet;

use mailroom_access::model::Relationship::{self, *};
use mailroom_access::model::{Audience, ReadAccessGrants, Settings};
use mailroom_access::OrgGraph;
use mailroom_types::{DepartmentId, MailboxId, Permission, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PERMS: [Permission; 7] = [
    Permission::MailboxView,
    Permission::MailboxModify,
    Permission::MailboxReadMail,
    Permission::MailboxSync,
    Permission::OrgInvite,
    Permission::OrgRegisterUsers,
    Permission::OrgManagePermissions,
];

struct Reference {
    rels: Vec<Relationship>,
    settings: Settings,
    dismissed: HashSet<UserId>,
    users: Vec<UserId>,
}

impl Reference {
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
    /// Straight from the definition of each audience level.
    fn in_audience(&self, u: UserId, audience: Audience, owner: Option<UserId>) -> bool {
        match audience {
            Audience::Admins => self.has(Admin(u)),
            Audience::AdminsAndManagers => self.has(Admin(u)) || self.has(MailboxManager(u)),
            Audience::AdminsManagersAndSupervisors => {
                self.has(Admin(u))
                    || self.has(MailboxManager(u))
                    || match owner {
                        Some(o) => self.supervises(u, o),
                        None => self.rels.iter().any(|r| matches!(r, Head(_, h) if *h == u)),
                    }
            }
            Audience::Everyone => true,
        }
    }
    fn check(&self, u: UserId, p: Permission, m: MailboxId) -> bool {
        if !self.active(u) {
            return false;
        }
        let owner = self.owner(m);
        let s = &self.settings;
        let modify = |o: UserId| o == u || self.in_audience(u, s.modify_mailboxes, Some(o));
        match p {
            Permission::MailboxView => owner
                .is_some_and(|o| modify(o) || self.in_audience(u, s.view_mailbox_list, Some(o))),
            Permission::MailboxModify | Permission::MailboxSync | Permission::MailboxConnect => {
                owner.is_some_and(modify)
            }
            Permission::MailboxGrantRead => false,
            Permission::MailboxReadMail => owner == Some(u) || self.has(Reader(m, u)),
            Permission::OrgInvite => self.has(Inviter(u)) || self.in_audience(u, s.invite, None),
            Permission::OrgRegisterUsers | Permission::OrgManagePermissions => self.has(Admin(u)),
        }
    }
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.gen_range(0..items.len())]
}

#[test]
fn the_engine_agrees_with_the_reference_on_random_organisations() {
    for seed in 0..60u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let departments: Vec<DepartmentId> = (0..rng.gen_range(1..12))
            .map(|_| DepartmentId::new())
            .collect();
        let users: Vec<UserId> = (0..rng.gen_range(2..20)).map(|_| UserId::new()).collect();
        let mailboxes: Vec<MailboxId> = (0..rng.gen_range(1..15))
            .map(|_| MailboxId::new())
            .collect();
        let mut graph = OrgGraph::new();
        // Half the organisations keep the defaults; the rest draw every setting.
        let audiences = [
            Audience::Admins,
            Audience::AdminsAndManagers,
            Audience::AdminsManagersAndSupervisors,
            Audience::Everyone,
        ];
        let settings = if rng.gen_bool(0.5) {
            Settings::default()
        } else {
            Settings {
                view_mailbox_list: pick(&mut rng, &audiences),
                modify_mailboxes: pick(&mut rng, &audiences),
                invite: pick(&mut rng, &audiences),
                read_access_grants: ReadAccessGrants::Admins,
            }
        };
        graph.set_settings(settings);
        let mut reference = Reference {
            settings,
            rels: Vec::new(),
            dismissed: HashSet::new(),
            users: users.clone(),
        };
        for u in &users {
            graph.set_user(*u, true);
        }
        // A random tree: each department may hang under an earlier one.
        for (i, d) in departments.iter().enumerate().skip(1) {
            if rng.gen_bool(0.8) {
                let rel = Parent(*d, departments[rng.gen_range(0..i)]);
                graph.write(rel).expect("tree edge");
                reference.rels.push(rel);
            }
        }
        // Random moves: the engine refuses exactly the ones that would make a cycle.
        for _ in 0..5 {
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
        let mut rels: Vec<Relationship> = Vec::new();
        for u in &users {
            if rng.gen_bool(0.8) {
                rels.push(Member(*u, pick(&mut rng, &departments)));
            }
            if rng.gen_bool(0.25) {
                rels.push(Head(pick(&mut rng, &departments), *u));
            }
            if rng.gen_bool(0.1) {
                rels.push(Admin(*u));
            }
            if rng.gen_bool(0.1) {
                rels.push(MailboxManager(*u));
            }
            if rng.gen_bool(0.1) {
                rels.push(Inviter(*u));
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
        if rng.gen_bool(0.2) {
            graph.write(EveryoneInvites).expect("write");
            reference.settings.invite = Audience::Everyone;
        }
        for r in rels {
            graph.write(r).expect("write");
            if !reference.rels.contains(&r) {
                reference.rels.push(r);
            }
        }
        // Some deletions and dismissals.
        for _ in 0..rng.gen_range(0..4) {
            if reference.rels.is_empty() {
                break;
            }
            let r = reference.rels[rng.gen_range(0..reference.rels.len())];
            if matches!(r, Parent(..)) {
                continue;
            }
            assert!(graph.delete(r), "seed {seed}: delete {r:?}");
            reference.rels.retain(|x| *x != r);
        }
        for u in &users {
            if rng.gen_bool(0.15) {
                graph.set_user(*u, false);
                reference.dismissed.insert(*u);
            }
        }

        let mut strangers = users.clone();
        strangers.push(UserId::new());
        for u in &strangers {
            for p in PERMS {
                for m in &mailboxes {
                    let allowed = reference.check(*u, p, *m);
                    assert_eq!(
                        graph.check(*u, p, Some(*m)).unwrap(),
                        allowed,
                        "seed {seed}: {u} {} {m}",
                        p.name()
                    );
                    let explanation = graph.explain(*u, p, Some(*m)).unwrap();
                    assert_eq!(explanation.is_some(), allowed, "seed {seed}: explain");
                    for r in explanation.map(|e| e.path).unwrap_or_default() {
                        let held = match r {
                            EveryoneInvites => reference.settings.invite == Audience::Everyone,
                            other => reference.has(other),
                        };
                        assert!(
                            held,
                            "seed {seed}: the explanation cites {r:?}, which is not held"
                        );
                    }
                }
                if p.on_mailbox() {
                    let mut fast = graph.lookup_mailboxes(*u, p);
                    fast.sort();
                    let mut slow: Vec<MailboxId> = mailboxes
                        .iter()
                        .copied()
                        .filter(|m| reference.check(*u, p, *m))
                        .collect();
                    slow.sort();
                    assert_eq!(fast, slow, "seed {seed}: lookup_mailboxes {u} {}", p.name());
                    // The scope a service applies to its own rows reaches the same mailboxes.
                    let scope = graph.mailbox_scope(*u, p);
                    let mut scoped: Vec<MailboxId> = mailboxes
                        .iter()
                        .copied()
                        .filter(|m| {
                            scope.mailboxes.contains(m)
                                || graph.owner_of(*m).is_some_and(|o| {
                                    scope.whole_organization || scope.owners.contains(&o)
                                })
                        })
                        .collect();
                    scoped.sort();
                    assert_eq!(scoped, slow, "seed {seed}: mailbox_scope {u} {}", p.name());
                }
            }
            for v in &strangers {
                assert_eq!(
                    graph.supervises(*u, *v),
                    reference.supervises(*u, *v),
                    "seed {seed}: {u} supervises {v}"
                );
            }
        }
        for m in &mailboxes {
            for p in PERMS.iter().filter(|p| p.on_mailbox()) {
                let mut fast = graph.lookup_users(*m, *p);
                fast.sort();
                let mut slow: Vec<UserId> = users
                    .iter()
                    .copied()
                    .filter(|u| reference.check(*u, *p, *m))
                    .collect();
                slow.sort();
                assert_eq!(fast, slow, "seed {seed}: lookup_users {m} {}", p.name());
            }
        }
    }
}
