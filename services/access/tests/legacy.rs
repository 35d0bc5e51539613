//! Upgrade equivalence, without a database: for every combination of the old settings
//! (4 × 4 × 4 × 2), with and without mailbox managers and inviters, on random organisations,
//! the engine given the roles of [`legacy::roles_for`] (what `1002_roles.sql` makes) answers
//! exactly what the four fixed audiences answered, for every user, permission and mailbox.
//! The oracle, [`LegacyReference`], is the reference model as it was before roles: it reads
//! the plain list of relationships, straight from the definition of each audience level.
//!
//! The two new permissions have old counterparts: connecting a mailbox for someone was
//! `mailbox.modify` on their mailbox, and granting read access was for org admins, plus owners
//! of their own mailbox when `read_access_grants` was `admins_and_owners`. A mailbox
//! permission needs an owner now, as every other one did before.

use std::collections::HashSet;

use mailroom_access::legacy::{self, Audience, ReadAccessGrants, Settings};
use mailroom_access::model::Assignee;
use mailroom_access::model::Relationship::{self, *};
use mailroom_access::OrgGraph;
use mailroom_types::{DepartmentId, MailboxId, Permission, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A random organisation: the facts that stay the same whatever the settings.
struct Org {
    rels: Vec<Relationship>,
    users: Vec<UserId>,
    dismissed: HashSet<UserId>,
    mailboxes: Vec<MailboxId>,
    /// Who held `org#mailbox_manager` and `org#inviter` (used when the combination has any).
    managers: Vec<UserId>,
    inviters: Vec<UserId>,
}

/// The old semantics, as `tests/model.rs` had them before roles.
struct LegacyReference<'a> {
    org: &'a Org,
    settings: Settings,
    managers: HashSet<UserId>,
    inviters: HashSet<UserId>,
    /// `supervises`, worked out once per organisation by [`LegacyReference::supervises_slowly`].
    supervises: &'a HashSet<(UserId, UserId)>,
}

impl LegacyReference<'_> {
    fn parent(&self, d: DepartmentId) -> Option<DepartmentId> {
        self.org.rels.iter().find_map(|r| match r {
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
        self.org.users.contains(&u) && !self.org.dismissed.contains(&u)
    }
    fn has(&self, r: Relationship) -> bool {
        self.org.rels.contains(&r)
    }
    fn supervises_slowly(&self, b: UserId, u: UserId) -> bool {
        if b == u || !self.active(b) {
            return false;
        }
        self.org.rels.iter().any(|r| match r {
            Head(a, boss) if *boss == b => self.org.rels.iter().any(|s| match s {
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
        self.org.rels.iter().find_map(|r| match r {
            Owner(mb, u) if *mb == m => Some(*u),
            _ => None,
        })
    }
    /// Straight from the definition of each audience level.
    fn in_audience(&self, u: UserId, audience: Audience, owner: Option<UserId>) -> bool {
        match audience {
            Audience::Admins => self.has(Admin(u)),
            Audience::AdminsAndManagers => self.has(Admin(u)) || self.managers.contains(&u),
            Audience::AdminsManagersAndSupervisors => {
                self.has(Admin(u))
                    || self.managers.contains(&u)
                    || match owner {
                        Some(o) => self.supervises.contains(&(u, o)),
                        None => self
                            .org
                            .rels
                            .iter()
                            .any(|r| matches!(r, Head(_, h) if *h == u)),
                    }
            }
            Audience::Everyone => true,
        }
    }
    /// `mailbox.modify` on a mailbox of `o`: what connecting one for `o` took.
    fn modify(&self, u: UserId, o: UserId) -> bool {
        self.active(u) && (o == u || self.in_audience(u, self.settings.modify_mailboxes, Some(o)))
    }
    /// A permission on the mailbox (`Some`) or the organisation (`None`).
    fn check(&self, u: UserId, p: Permission, m: Option<MailboxId>) -> bool {
        if !self.active(u) {
            return false;
        }
        let owner = m.and_then(|m| self.owner(m));
        let s = &self.settings;
        match p {
            Permission::MailboxView => owner.is_some_and(|o| {
                self.modify(u, o) || self.in_audience(u, s.view_mailbox_list, Some(o))
            }),
            Permission::MailboxModify | Permission::MailboxSync | Permission::MailboxConnect => {
                owner.is_some_and(|o| self.modify(u, o))
            }
            Permission::MailboxGrantRead => owner.is_some_and(|o| {
                self.has(Admin(u))
                    || (o == u && s.read_access_grants == ReadAccessGrants::AdminsAndOwners)
            }),
            Permission::MailboxReadMail => {
                m.is_some_and(|m| owner == Some(u) || self.has(Reader(m, u)))
            }
            Permission::OrgInvite => {
                self.inviters.contains(&u) || self.in_audience(u, s.invite, None)
            }
            Permission::OrgRegisterUsers | Permission::OrgManagePermissions => self.has(Admin(u)),
        }
    }
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.gen_range(0..items.len())]
}

/// A random organisation: a department tree, members, heads (some heading several
/// departments), admins, owners, readers, dismissals, and who was a mailbox manager or an
/// inviter (some of them admins, heads or dismissed).
fn random_org(rng: &mut StdRng) -> Org {
    let departments: Vec<DepartmentId> = (0..rng.gen_range(1..9))
        .map(|_| DepartmentId::new())
        .collect();
    let users: Vec<UserId> = (0..rng.gen_range(3..13)).map(|_| UserId::new()).collect();
    let mailboxes: Vec<MailboxId> = (0..rng.gen_range(1..9)).map(|_| MailboxId::new()).collect();
    let mut rels = Vec::new();
    for (i, d) in departments.iter().enumerate().skip(1) {
        if rng.gen_bool(0.8) {
            rels.push(Parent(*d, departments[rng.gen_range(0..i)]));
        }
    }
    for u in &users {
        if rng.gen_bool(0.8) {
            rels.push(Member(*u, pick(rng, &departments)));
        }
        for _ in 0..2 {
            if rng.gen_bool(0.25) {
                rels.push(Head(pick(rng, &departments), *u));
            }
        }
        if rng.gen_bool(0.12) {
            rels.push(Admin(*u));
        }
    }
    for m in &mailboxes {
        if rng.gen_bool(0.9) {
            rels.push(Owner(*m, pick(rng, &users)));
        }
        for _ in 0..rng.gen_range(0..3) {
            rels.push(Reader(*m, pick(rng, &users)));
        }
    }
    rels.sort();
    rels.dedup();
    let some = |rng: &mut StdRng| {
        let mut out: Vec<UserId> = users
            .iter()
            .copied()
            .filter(|_| rng.gen_bool(0.25))
            .collect();
        if out.is_empty() {
            out.push(pick(rng, &users));
        }
        out
    };
    let managers = some(rng);
    let inviters = some(rng);
    let dismissed = users
        .iter()
        .copied()
        .filter(|_| rng.gen_bool(0.15))
        .collect();
    Org {
        rels,
        users,
        dismissed,
        mailboxes,
        managers,
        inviters,
    }
}

/// The engine as the upgrade leaves it: the organisation's relationships, the roles of
/// [`legacy::roles_for`], the old managers and inviters assigned to their roles, and the
/// `everyone_invites` row when the invite audience was everyone.
fn upgraded(org: &Org, settings: Settings, has_mm: bool, has_inv: bool, refresh: bool) -> OrgGraph {
    let mut graph = OrgGraph::new();
    for u in &org.users {
        graph.set_user(*u, !org.dismissed.contains(u));
    }
    for r in &org.rels {
        graph.write(*r).expect("write");
    }
    for (role, assignees) in legacy::roles_for(settings, has_mm, has_inv) {
        let id = role.id;
        let users: &[UserId] = match role.name.as_str() {
            legacy::MAILBOX_MANAGERS_ROLE if role.builtin.is_none() => &org.managers,
            legacy::INVITERS_ROLE if role.builtin.is_none() => &org.inviters,
            _ => &[],
        };
        graph.put_role(role);
        for a in assignees
            .into_iter()
            .chain(users.iter().map(|u| Assignee::User(*u)))
        {
            graph
                .write(Relationship::Assignee(id, a))
                .expect("assignment");
        }
    }
    if legacy::everyone_invites(settings) {
        graph.write(EveryoneInvites).expect("everyone invites");
    }
    if refresh {
        graph.refresh();
    }
    graph
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn the_upgrade_roles_answer_exactly_what_the_audiences_did() {
    let audiences = [
        Audience::Admins,
        Audience::AdminsAndManagers,
        Audience::AdminsManagersAndSupervisors,
        Audience::Everyone,
    ];
    let mut rng = StdRng::seed_from_u64(23);
    let orgs: Vec<Org> = (0..6).map(|_| random_org(&mut rng)).collect();
    let mut checked = 0usize;
    for (n, org) in orgs.iter().enumerate() {
        let mut supervises = HashSet::new();
        let probe = LegacyReference {
            org,
            settings: Settings::default(),
            managers: HashSet::new(),
            inviters: HashSet::new(),
            supervises: &supervises,
        };
        let pairs: Vec<(UserId, UserId)> = org
            .users
            .iter()
            .flat_map(|b| org.users.iter().map(move |u| (*b, *u)))
            .filter(|(b, u)| probe.supervises_slowly(*b, *u))
            .collect();
        supervises.extend(pairs);
        let mut everyone = org.users.clone();
        everyone.push(UserId::new()); // a user of another organisation
        for (combo, (((view, modify), invite), grants, has_mm, has_inv)) in audiences
            .iter()
            .flat_map(|v| audiences.iter().map(move |m| (*v, *m)))
            .flat_map(|vm| audiences.iter().map(move |i| (vm, *i)))
            .flat_map(|vmi| {
                [ReadAccessGrants::Admins, ReadAccessGrants::AdminsAndOwners].map(|g| (vmi, g))
            })
            .flat_map(|(vmi, g)| {
                [(false, false), (true, false), (false, true), (true, true)]
                    .map(|(mm, inv)| (vmi, g, mm, inv))
            })
            .enumerate()
        {
            let settings = Settings {
                view_mailbox_list: view,
                modify_mailboxes: modify,
                invite,
                read_access_grants: grants,
            };
            let reference = LegacyReference {
                org,
                settings,
                managers: if has_mm {
                    org.managers.iter().copied().collect()
                } else {
                    HashSet::new()
                },
                inviters: if has_inv {
                    org.inviters.iter().copied().collect()
                } else {
                    HashSet::new()
                },
                supervises: &supervises,
            };
            let graph = upgraded(org, settings, has_mm, has_inv, combo % 2 == 0);
            let case =
                format!("org {n}, {settings:?}, mailbox managers {has_mm}, inviters {has_inv}");
            for u in &everyone {
                for p in Permission::ALL {
                    if !p.on_mailbox() {
                        assert_eq!(
                            graph.check(*u, p, None).expect("check"),
                            reference.check(*u, p, None),
                            "{case}: {u} {}",
                            p.name()
                        );
                        checked += 1;
                        continue;
                    }
                    for m in &org.mailboxes {
                        assert_eq!(
                            graph.check(*u, p, Some(*m)).expect("check"),
                            reference.check(*u, p, Some(*m)),
                            "{case}: {u} {} {m}",
                            p.name()
                        );
                        checked += 1;
                    }
                    let expected: Vec<MailboxId> = org
                        .mailboxes
                        .iter()
                        .copied()
                        .filter(|m| reference.check(*u, p, Some(*m)))
                        .collect();
                    assert_eq!(
                        sorted(graph.lookup_mailboxes(*u, p)),
                        sorted(expected),
                        "{case}: lookup_mailboxes {u} {}",
                        p.name()
                    );
                }
                // Connecting a mailbox for someone who has none yet, as the registry asks it.
                for o in &org.users {
                    let scope = graph.mailbox_scope_for(*u, Permission::MailboxConnect, &[*o]);
                    assert_eq!(
                        scope.whole_organization || scope.owners.contains(o),
                        reference.modify(*u, *o),
                        "{case}: {u} connects a mailbox for {o}"
                    );
                }
            }
            for p in Permission::ALL {
                if p.on_mailbox() {
                    for m in &org.mailboxes {
                        let expected: Vec<UserId> = org
                            .users
                            .iter()
                            .copied()
                            .filter(|u| reference.check(*u, p, Some(*m)))
                            .collect();
                        assert_eq!(
                            sorted(graph.lookup_users(*m, p)),
                            sorted(expected),
                            "{case}: lookup_users {m} {}",
                            p.name()
                        );
                    }
                } else {
                    let expected: Vec<UserId> = org
                        .users
                        .iter()
                        .copied()
                        .filter(|u| reference.check(*u, p, None))
                        .collect();
                    assert_eq!(
                        sorted(graph.lookup_org_users(p)),
                        sorted(expected),
                        "{case}: lookup_org_users {}",
                        p.name()
                    );
                }
            }
            // identity's "everyone may invite" turning off after the upgrade means what it
            // meant before: the invite audience back to admins (`identity_events.rs`).
            if legacy::everyone_invites(settings) {
                let mut graph = graph;
                assert!(graph.delete(EveryoneInvites));
                let before = LegacyReference {
                    settings: Settings {
                        invite: Audience::Admins,
                        ..settings
                    },
                    ..reference
                };
                let expected: Vec<UserId> = org
                    .users
                    .iter()
                    .copied()
                    .filter(|u| before.check(*u, Permission::OrgInvite, None))
                    .collect();
                assert_eq!(
                    sorted(graph.lookup_org_users(Permission::OrgInvite)),
                    sorted(expected),
                    "{case}: who invites once identity's flag is off"
                );
            }
        }
    }
    assert!(checked > 100_000, "only {checked} checks compared");
}

#[test]
fn the_mapping_is_the_design_table() {
    use mailroom_access::model::{Builtin, Scope};
    let settings = Settings {
        view_mailbox_list: Audience::AdminsManagersAndSupervisors,
        modify_mailboxes: Audience::AdminsAndManagers,
        invite: Audience::AdminsManagersAndSupervisors,
        read_access_grants: ReadAccessGrants::Admins,
    };
    let roles = legacy::roles_for(settings, true, true);
    let names: Vec<&str> = roles.iter().map(|(r, _)| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Administrator",
            "Supervisor",
            "Manager",
            "Mailbox managers",
            "Inviters"
        ]
    );
    let (supervisor, to) = &roles[1];
    assert_eq!(supervisor.builtin, Some(Builtin::Supervisor));
    assert_eq!(to, &[Assignee::Heads]);
    assert_eq!(supervisor.grants.view_mailbox_list, Scope::Subordinates);
    assert_eq!(supervisor.grants.modify_mailboxes, Scope::Own);
    assert_eq!(supervisor.grants.grant_read_access, Scope::None);
    assert!(supervisor.grants.invite);
    let (manager, to) = &roles[2];
    assert_eq!(to, &[Assignee::EveryoneElse]);
    assert!(!manager.grants.invite);
    let managers = &roles[3].0;
    assert_eq!(managers.grants.view_mailbox_list, Scope::All);
    assert_eq!(managers.grants.connect_mailboxes, Scope::All);
    assert!(managers.grants.invite);
    assert!(roles
        .iter()
        .all(|(r, _)| r.builtin == Some(Builtin::Administrator) || !r.grants.manage_permissions));
    assert_eq!(legacy::roles_for(settings, false, false).len(), 3);
    assert!(!legacy::everyone_invites(settings));
}
