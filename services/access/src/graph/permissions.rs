//! What a user may do, from their roles: [`OrgGraph::check`] (the hot path: the user's
//! effective grants, then at most one walk up the department tree; no allocation),
//! [`OrgGraph::explain`] (which role, through which assignment, reaching the owner how), and
//! the reverse questions — which mailboxes a user reaches ([`OrgGraph::lookup_mailboxes`],
//! [`OrgGraph::mailbox_scope`], [`OrgGraph::mailbox_scope_for`]) and who holds a permission
//! ([`OrgGraph::lookup_users`], [`OrgGraph::lookup_org_users`]).
//!
//! A mailbox permission other than reading mail is held when the scope the user's roles give it
//! ([`Grants::scope_for`](crate::model::Grants::scope_for)) reaches the mailbox's owner
//! ([`OrgGraph::reaches`]); a mailbox needs an owner. Reading mail takes the owner or a reader
//! grant on that mailbox, always: no role, not even Administrator, gives it.

use mailroom_types::{MailboxId, Permission, UserId};

use super::{Explanation, HeldRole, MailboxScope, OrgGraph, RoleGrant, Set};
use crate::model::{Assignee, Builtin, ModelError, Relationship, Scope};

/// What a permission lets its holder do, in words ("change mailbox settings").
pub(super) fn permission_words(p: Permission) -> &'static str {
    match p {
        Permission::MailboxView => "see mailboxes",
        Permission::MailboxModify | Permission::MailboxSync => "change mailbox settings",
        Permission::MailboxConnect => "connect mailboxes",
        Permission::MailboxGrantRead => "grant mail reading",
        Permission::MailboxReadMail => "read mail",
        Permission::OrgInvite => "invite people",
        Permission::OrgManagePermissions => "configure access permissions",
        Permission::OrgRegisterUsers => "register people",
    }
}

/// How a user falls under an assignment, in words ("assigned to department heads").
fn assignment_words(assignment: &Relationship) -> String {
    match assignment {
        Relationship::Assignee(_, Assignee::User(_)) => "assigned to them in person".into(),
        Relationship::Assignee(_, Assignee::Members(d)) => format!("assigned to department {d}"),
        Relationship::Assignee(_, Assignee::Tree(d)) => {
            format!("assigned to department {d} and its sub-departments")
        }
        Relationship::Assignee(_, Assignee::Heads) => "assigned to department heads".into(),
        Relationship::Assignee(_, Assignee::EveryoneElse) => {
            "assigned to everyone with no other role".into()
        }
        Relationship::Admin(_) => "held by every org admin".into(),
        _ => "assigned".into(),
    }
}

/// `path` without repeats, in order.
fn dedup(path: Vec<Relationship>) -> Vec<Relationship> {
    let mut seen = Set::default();
    path.into_iter().filter(|r| seen.insert(*r)).collect()
}

impl OrgGraph {
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
        Ok(match permission {
            Permission::MailboxReadMail => mailbox.is_some_and(|m| {
                self.owner.get(&m) == Some(&user)
                    || self.readers.get(&m).is_some_and(|r| r.contains(&user))
            }),
            Permission::OrgInvite => self.effective_of_active(user).invite,
            Permission::OrgManagePermissions => self.effective_of_active(user).manage_permissions,
            Permission::OrgRegisterUsers => self.admins.contains(&user),
            Permission::MailboxView
            | Permission::MailboxModify
            | Permission::MailboxSync
            | Permission::MailboxConnect
            | Permission::MailboxGrantRead => match mailbox.and_then(|m| self.owner.get(&m)) {
                None => false,
                Some(owner) => self.reaches(
                    user,
                    self.effective_of_active(user).scope_for(permission),
                    *owner,
                ),
            },
        })
    }

    /// The Administrator role's grant to an org admin, if the role is stored.
    fn admin_grant(&self, user: UserId, scope: Scope) -> Option<RoleGrant> {
        self.builtin_role(Builtin::Administrator)
            .map(|r| RoleGrant {
                role: r.id,
                scope,
                assignment: Relationship::Admin(user),
            })
    }

    /// "holds role “Supervisor” (change mailbox settings: own), assigned to department heads"
    fn role_reason(&self, held: &HeldRole, permission: Permission, scope: Scope) -> String {
        let name = self.role(held.role).map_or("?", |r| r.name.as_str());
        let what = permission_words(permission);
        let grant = if permission.on_mailbox() {
            format!("{what}: {}", scope.describe())
        } else {
            what.to_string()
        };
        format!(
            "holds role “{name}” ({grant}), {}",
            assignment_words(&held.assignment)
        )
    }

    /// Why `user` holds `permission`: the relationships that grant it, from the resource to
    /// the subject, a sentence, and the role that granted it. `None` when the user does not
    /// hold it.
    ///
    /// For a mailbox permission the path is the mailbox's owner, how the role's scope reaches
    /// that owner (the supervision chain, or the owner's departments up to the holder's), then
    /// how the holder falls under the role's assignment and the assignment itself. Of the
    /// roles that reach, the one with the narrowest scope is named.
    pub fn explain(
        &self,
        user: UserId,
        permission: Permission,
        mailbox: Option<MailboxId>,
    ) -> Result<Option<Explanation>, ModelError> {
        if !self.check(user, permission, mailbox)? {
            return Ok(None);
        }
        let explanation = |path: Vec<Relationship>, reason: String, granted_by| {
            Ok(Some(Explanation {
                path: dedup(path),
                reason,
                granted_by,
            }))
        };
        let admin = self.admins.contains(&user);
        match permission {
            Permission::MailboxReadMail => {
                let m = mailbox.ok_or(ModelError::NeedsMailbox(permission.name()))?;
                if self.owner.get(&m) == Some(&user) {
                    explanation(
                        vec![Relationship::Owner(m, user)],
                        "owns the mailbox".into(),
                        None,
                    )
                } else {
                    explanation(
                        vec![Relationship::Reader(m, user)],
                        "was granted read access to the mailbox".into(),
                        None,
                    )
                }
            }
            Permission::OrgRegisterUsers => explanation(
                vec![Relationship::Admin(user)],
                "is an org admin".into(),
                None,
            ),
            Permission::OrgInvite | Permission::OrgManagePermissions => {
                if admin {
                    return explanation(
                        vec![Relationship::Admin(user)],
                        "is an org admin".into(),
                        self.admin_grant(user, Scope::None),
                    );
                }
                let held = self.held_roles(user);
                let granting = held.iter().find(|h| {
                    self.role(h.role).is_some_and(|r| match permission {
                        Permission::OrgInvite => r.grants.invite,
                        _ => r.grants.manage_permissions,
                    })
                });
                match granting {
                    Some(h) => {
                        let mut path = h.via.clone();
                        path.push(h.assignment);
                        explanation(
                            path,
                            self.role_reason(h, permission, Scope::None),
                            Some(RoleGrant {
                                role: h.role,
                                scope: Scope::None,
                                assignment: h.assignment,
                            }),
                        )
                    }
                    // Only inviting is given to everyone, by identity's flag.
                    None => explanation(
                        vec![Relationship::EveryoneInvites],
                        "everyone in the organisation may invite people".into(),
                        None,
                    ),
                }
            }
            Permission::MailboxView
            | Permission::MailboxModify
            | Permission::MailboxSync
            | Permission::MailboxConnect
            | Permission::MailboxGrantRead => {
                let Some((m, o)) =
                    mailbox.and_then(|m| self.owner.get(&m).copied().map(|o| (m, o)))
                else {
                    return Ok(None);
                };
                let own = Relationship::Owner(m, o);
                let owns = o == user;
                if admin {
                    return explanation(
                        vec![own, Relationship::Admin(user)],
                        if owns {
                            "owns the mailbox, and is an org admin".into()
                        } else {
                            "is an org admin".into()
                        },
                        self.admin_grant(user, Scope::All),
                    );
                }
                let held = self.held_roles(user);
                let best = held
                    .iter()
                    .filter_map(|h| {
                        let scope = self.role(h.role)?.grants.scope_for(permission);
                        self.reaches(user, scope, o).then_some((scope, h))
                    })
                    .min_by_key(|(scope, _)| *scope);
                let Some((scope, h)) = best else {
                    return Ok(None);
                };
                let mut path = vec![own];
                if !owns {
                    let reach = match scope {
                        Scope::Subordinates => self.supervision_chain(user, o),
                        Scope::Department => self.department_chain(user, o),
                        _ => None,
                    };
                    path.extend(reach.into_iter().flatten());
                }
                path.extend(h.via.iter().copied());
                path.push(h.assignment);
                let reason = self.role_reason(h, permission, scope);
                explanation(
                    path,
                    if owns {
                        format!("owns the mailbox, and {reason}")
                    } else {
                        reason
                    },
                    Some(RoleGrant {
                        role: h.role,
                        scope,
                        assignment: h.assignment,
                    }),
                )
            }
        }
    }

    /// The roles `user` holds, each with what it gives for `permission`, for a denial:
    /// "Supervisor (change mailbox settings: own), Manager (change mailbox settings: own)",
    /// "Inviters (invite people: yes)", or "no role".
    pub fn describe_roles(&self, user: UserId, permission: Permission) -> String {
        let mut seen = Set::default();
        let mut out: Vec<String> = Vec::new();
        if self.is_admin(user) && self.builtin_role(Builtin::Administrator).is_none() {
            out.push("org admin".into());
        }
        for h in self.held_roles(user) {
            if !seen.insert(h.role) {
                continue;
            }
            let Some(r) = self.role(h.role) else {
                continue;
            };
            let what = permission_words(permission);
            out.push(match permission {
                Permission::MailboxReadMail | Permission::OrgRegisterUsers => r.name.clone(),
                Permission::OrgInvite => {
                    let yes = r.grants.invite;
                    format!("{} ({what}: {})", r.name, if yes { "yes" } else { "no" })
                }
                Permission::OrgManagePermissions => {
                    let yes = r.grants.manage_permissions;
                    format!("{} ({what}: {})", r.name, if yes { "yes" } else { "no" })
                }
                p => format!("{} ({what}: {})", r.name, r.grants.scope_for(p).describe()),
            });
        }
        if out.is_empty() {
            "no role".into()
        } else {
            out.join(", ")
        }
    }

    /// The mailboxes on which `user` holds `permission`, in no particular order.
    pub fn lookup_mailboxes(&self, user: UserId, permission: Permission) -> Vec<MailboxId> {
        if !self.active(&user) || !permission.on_mailbox() {
            return Vec::new();
        }
        let owned_by = |u: &UserId| self.owned.get(u).into_iter().flatten().copied();
        let scope = match permission {
            Permission::MailboxReadMail => {
                let mut out: Set<MailboxId> = owned_by(&user).collect();
                out.extend(self.reads.get(&user).into_iter().flatten().copied());
                return out.into_iter().collect();
            }
            p => self.effective(user).scope_for(p),
        };
        match scope {
            Scope::None => Vec::new(),
            Scope::Own => owned_by(&user).collect(),
            Scope::Subordinates => {
                let mut out: Vec<MailboxId> = owned_by(&user).collect();
                for sub in self.subordinates(user) {
                    out.extend(owned_by(&sub));
                }
                out
            }
            Scope::Department => self
                .department_reach(user)
                .iter()
                .flat_map(owned_by)
                .collect(),
            Scope::All => self.owner.keys().copied().collect(),
        }
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
        if permission == Permission::MailboxReadMail {
            scope.owners.insert(user);
            scope
                .mailboxes
                .extend(self.reads.get(&user).into_iter().flatten().copied());
            return scope;
        }
        match self.effective(user).scope_for(permission) {
            Scope::None => {}
            Scope::Own => {
                scope.owners.insert(user);
            }
            Scope::Subordinates => {
                scope.owners.insert(user);
                scope.owners.extend(self.subordinates(user));
            }
            Scope::Department => scope.owners = self.department_reach(user),
            Scope::All => scope.whole_organization = true,
        }
        scope
    }

    /// [`OrgGraph::mailbox_scope`] restricted to the owners in `only`: the same
    /// `whole_organization` and `mailboxes`, and `owners` = those of `only` it reaches. Costs
    /// O(|only| × depth) rather than a walk of the holder's whole reach, for a service asking
    /// about one owner-to-be. An empty `only` names nobody.
    pub fn mailbox_scope_for(
        &self,
        user: UserId,
        permission: Permission,
        only: &[UserId],
    ) -> MailboxScope {
        let mut scope = MailboxScope::default();
        if !self.active(&user) || !permission.on_mailbox() {
            return scope;
        }
        if permission == Permission::MailboxReadMail {
            if only.contains(&user) {
                scope.owners.insert(user);
            }
            scope
                .mailboxes
                .extend(self.reads.get(&user).into_iter().flatten().copied());
            return scope;
        }
        match self.effective(user).scope_for(permission) {
            Scope::All => scope.whole_organization = true,
            s => scope
                .owners
                .extend(only.iter().copied().filter(|o| self.reaches(user, s, *o))),
        }
        scope
    }

    /// The active users who hold `permission` on `mailbox`. The candidates are those some
    /// role could reach the owner from (the owner, admins, the owner's supervisors, the members
    /// and heads of the owner's departments and above, or everyone, as far as the widest role
    /// goes); each is then checked.
    pub fn lookup_users(&self, mailbox: MailboxId, permission: Permission) -> Vec<UserId> {
        let owner = self.owner.get(&mailbox).copied();
        let mut out: Set<UserId> = Set::default();
        if permission == Permission::MailboxReadMail {
            out.extend(owner);
            out.extend(self.readers.get(&mailbox).into_iter().flatten().copied());
            out.retain(|u| self.active(u));
            return out.into_iter().collect();
        }
        let Some(o) = owner.filter(|_| permission.on_mailbox()) else {
            return Vec::new();
        };
        out.insert(o);
        out.extend(self.admins.iter().copied());
        // Candidates by the scopes roles give: the holders of a role reaching everyone
        // (expanded from its assignments), and by position for narrower scopes. Each is then
        // checked, so a candidate too many costs a check and never a wrong answer.
        let (mut by_supervision, mut by_department) = (false, false);
        for role in self.roles.defs.values() {
            if role.builtin == Some(Builtin::Administrator) {
                continue;
            }
            match role.grants.scope_for(permission) {
                Scope::All => self.expand_assignees(role.id, &mut out),
                // A role given to named people: those people (fewer than a walk finds).
                Scope::Department
                    if self
                        .assignees(role.id)
                        .all(|a| matches!(a, Assignee::User(_))) =>
                {
                    self.expand_assignees(role.id, &mut out)
                }
                Scope::Department => by_department = true,
                Scope::Subordinates => by_supervision = true,
                Scope::None | Scope::Own => {}
            }
        }
        if by_department {
            // Members and heads of the owner's departments and those above them: every
            // Department holder reaching the owner, and every supervisor of the owner.
            for d in self.home(o) {
                for a in self.ancestors_or_self(d) {
                    out.extend(self.members.get(&a).into_iter().flatten().copied());
                    out.extend(self.heads.get(&a).into_iter().flatten().copied());
                }
            }
        } else if by_supervision {
            out.extend(self.supervisors(o));
        }
        out.retain(|u| self.check(*u, permission, Some(mailbox)).unwrap_or(false));
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
}

#[cfg(test)]
mod tests {
    use crate::graph::Set;

    use mailroom_types::{MailboxId, Permission, UserId};

    use crate::graph::fixture::{scoped, Org, PEOPLE};
    use crate::model::{Assignee, Builtin, Grants, Relationship, Scope};

    const MAILBOX_PERMISSIONS: [Permission; 6] = [
        Permission::MailboxView,
        Permission::MailboxModify,
        Permission::MailboxReadMail,
        Permission::MailboxSync,
        Permission::MailboxConnect,
        Permission::MailboxGrantRead,
    ];

    /// Every answer the graph gives, for every user, permission and mailbox.
    fn answers(org: &Org) -> Vec<(UserId, Permission, Option<MailboxId>, bool)> {
        let mut out = Vec::new();
        for p in PEOPLE {
            let u = org.user[p];
            for perm in Permission::ALL {
                if perm.on_mailbox() {
                    for m in org.mailbox.values() {
                        out.push((
                            u,
                            perm,
                            Some(*m),
                            org.graph.check(u, perm, Some(*m)).unwrap(),
                        ));
                    }
                } else {
                    out.push((u, perm, None, org.graph.check(u, perm, None).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    /// The lookups and explanations agree with `check`, and refreshing changes nothing.
    fn assert_consistent(org: &mut Org) {
        org.graph.roles.derived = None;
        let slow = answers(org);
        org.graph.refresh();
        assert_eq!(slow, answers(org), "refresh changed an answer");
        let g = &org.graph;
        let everyone: Vec<UserId> = PEOPLE.iter().map(|p| org.user[p]).collect();
        for (u, p, m, allowed) in &slow {
            let why = g.explain(*u, *p, *m).unwrap();
            assert_eq!(why.is_some(), *allowed, "explain {p} for {u}");
            let Some(why) = why else { continue };
            if let Some(grant) = why.granted_by {
                let role = g.role(grant.role).expect("granting role defined");
                assert_eq!(role.grants.scope_for(*p), grant.scope);
                if let Some(m) = m {
                    assert!(g.reaches(*u, grant.scope, g.owner_of(*m).unwrap()));
                }
            }
            if *p == Permission::MailboxReadMail {
                let m = m.unwrap();
                assert_eq!(
                    *allowed,
                    g.owner_of(m) == Some(*u) || g.readers.get(&m).is_some_and(|r| r.contains(u)),
                    "read_mail is owner or reader, never a role"
                );
            }
        }
        for u in &everyone {
            for p in MAILBOX_PERMISSIONS {
                let allowed: Set<MailboxId> = slow
                    .iter()
                    .filter(|(x, q, _, a)| x == u && *q == p && *a)
                    .filter_map(|(_, _, m, _)| *m)
                    .collect();
                let looked: Vec<MailboxId> = g.lookup_mailboxes(*u, p);
                assert_eq!(
                    looked.len(),
                    allowed.len(),
                    "duplicates in lookup_mailboxes"
                );
                assert_eq!(looked.into_iter().collect::<Set<_>>(), allowed, "{p}");
                let scope = g.mailbox_scope(*u, p);
                let scoped: Set<MailboxId> = org
                    .mailbox
                    .values()
                    .copied()
                    .filter(|m| {
                        scope.whole_organization
                            || scope.mailboxes.contains(m)
                            || g.owner_of(*m).is_some_and(|o| scope.owners.contains(&o))
                    })
                    .collect();
                assert_eq!(scoped, allowed, "mailbox_scope {p}");
                let only = g.mailbox_scope_for(*u, p, &everyone);
                assert_eq!(only.whole_organization, scope.whole_organization);
                assert_eq!(only.mailboxes, scope.mailboxes);
                assert_eq!(only.owners, scope.owners, "mailbox_scope_for {p}");
                let just_olga = g.mailbox_scope_for(*u, p, &[org.user["olga"]]);
                assert!(just_olga
                    .owners
                    .is_subset(&Set::from_iter([org.user["olga"]])));
            }
        }
        for m in org.mailbox.values() {
            for p in MAILBOX_PERMISSIONS {
                let holders: Set<UserId> = slow
                    .iter()
                    .filter(|(_, q, x, a)| *q == p && *x == Some(*m) && *a)
                    .map(|(u, ..)| *u)
                    .collect();
                let looked: Set<UserId> = g.lookup_users(*m, p).into_iter().collect();
                assert_eq!(looked, holders, "lookup_users {p}");
            }
        }
        for p in [
            Permission::OrgInvite,
            Permission::OrgManagePermissions,
            Permission::OrgRegisterUsers,
        ] {
            let holders: Set<UserId> = slow
                .iter()
                .filter(|(_, q, _, a)| *q == p && *a)
                .map(|(u, ..)| *u)
                .collect();
            assert_eq!(
                g.lookup_org_users(p).into_iter().collect::<Set<_>>(),
                holders
            );
        }
    }

    #[test]
    fn a_supervisor_sees_the_team_but_changes_nothing_and_reads_nothing() {
        let mut org = Org::new();
        assert!(org.may("hanna", Permission::MailboxView, "emil"));
        assert!(!org.may("hanna", Permission::MailboxView, "olga"));
        assert!(!org.may("hanna", Permission::MailboxModify, "emil"));
        assert!(!org.may("hanna", Permission::MailboxReadMail, "emil"));
        assert!(org.may("emil", Permission::MailboxModify, "emil"));
        assert!(org.may("ceo", Permission::MailboxView, "walt"));
        assert!(org.may("ada", Permission::MailboxModify, "walt"));
        assert!(!org.may("ada", Permission::MailboxReadMail, "walt"));

        let why = org
            .graph
            .explain(
                org.user["hanna"],
                Permission::MailboxView,
                Some(org.mailbox["emil"]),
            )
            .unwrap()
            .expect("allowed");
        let supervisor = org.builtin(Builtin::Supervisor);
        assert_eq!(
            why.path,
            vec![
                Relationship::Owner(org.mailbox["emil"], org.user["emil"]),
                Relationship::Member(org.user["emil"], org.dept["east"]),
                Relationship::Head(org.dept["east"], org.user["hanna"]),
                Relationship::Assignee(supervisor, Assignee::Heads),
            ]
        );
        assert_eq!(
            why.reason,
            "holds role “Supervisor” (see mailboxes: subordinates), assigned to department heads"
        );
        let grant = why.granted_by.expect("a role granted it");
        assert_eq!((grant.role, grant.scope), (supervisor, Scope::Subordinates));
        assert_eq!(
            org.graph
                .describe_roles(org.user["hanna"], Permission::MailboxModify),
            "Supervisor (change mailbox settings: own)"
        );
        assert_consistent(&mut org);
    }

    #[test]
    fn department_heads_connect_for_their_department_and_explain_names_the_narrowest_role() {
        let mut org = Org::new();
        assert!(!org.may("hanna", Permission::MailboxConnect, "emil"));
        let dh = org.role(
            "Department heads",
            scoped(
                Scope::Department,
                Scope::Department,
                Scope::Department,
                Scope::Own,
            ),
            &[Assignee::Heads],
        );
        assert!(org.may("hanna", Permission::MailboxConnect, "emil"));
        assert!(org.may("hanna", Permission::MailboxModify, "emil"));
        assert!(!org.may("hanna", Permission::MailboxConnect, "olga"));
        assert!(!org.may("hanna", Permission::MailboxReadMail, "emil"));
        assert!(org.may("ceo", Permission::MailboxConnect, "walt"));

        let why = org
            .graph
            .explain(
                org.user["hanna"],
                Permission::MailboxConnect,
                Some(org.mailbox["emil"]),
            )
            .unwrap()
            .expect("allowed");
        let grant = why.granted_by.expect("role");
        assert_eq!((grant.role, grant.scope), (dh, Scope::Department));
        assert_eq!(
            why.reason,
            "holds role “Department heads” (connect mailboxes: own department and below), assigned to department heads"
        );
        // Viewing is granted by both; Supervisor's subordinates is the narrower.
        let why = org
            .graph
            .explain(
                org.user["hanna"],
                Permission::MailboxView,
                Some(org.mailbox["emil"]),
            )
            .unwrap()
            .expect("allowed");
        assert_eq!(
            why.granted_by.expect("role").role,
            org.builtin(Builtin::Supervisor)
        );
        // The department chain goes from the owner up to the holder's department.
        let why = org
            .graph
            .explain(
                org.user["ceo"],
                Permission::MailboxModify,
                Some(org.mailbox["walt"]),
            )
            .unwrap()
            .expect("allowed");
        assert_eq!(
            why.path,
            vec![
                Relationship::Owner(org.mailbox["walt"], org.user["walt"]),
                Relationship::Member(org.user["walt"], org.dept["night"]),
                Relationship::Parent(org.dept["night"], org.dept["warehouse"]),
                Relationship::Parent(org.dept["warehouse"], org.dept["company"]),
                Relationship::Head(org.dept["company"], org.user["ceo"]),
                Relationship::Assignee(dh, Assignee::Heads),
            ]
        );
        assert_consistent(&mut org);
    }

    #[test]
    fn no_mail_takes_even_ones_own_mailbox_and_hr_sees_everything_but_changes_and_reads_nothing() {
        let mut org = Org::new();
        let no_mail = org.role(
            "No mail",
            Grants::NONE,
            &[Assignee::Tree(org.dept["warehouse"])],
        );
        org.role(
            "HR",
            scoped(Scope::All, Scope::Own, Scope::Own, Scope::Own),
            &[Assignee::User(org.user["hilda"])],
        );
        assert!(!org.may("walt", Permission::MailboxView, "walt"));
        assert!(!org.may("vera", Permission::MailboxConnect, "vera"));
        assert!(org.may("walt", Permission::MailboxReadMail, "walt"));
        assert!(org
            .graph
            .lookup_mailboxes(org.user["walt"], Permission::MailboxView)
            .is_empty());
        assert_eq!(
            org.graph
                .describe_roles(org.user["vera"], Permission::MailboxConnect),
            "No mail (connect mailboxes: none)"
        );
        assert!(org.may("hilda", Permission::MailboxView, "walt"));
        assert!(!org.may("hilda", Permission::MailboxModify, "emil"));
        assert!(!org.may("hilda", Permission::MailboxReadMail, "emil"));
        assert!(
            org.graph
                .mailbox_scope(org.user["hilda"], Permission::MailboxView)
                .whole_organization
        );
        assert_consistent(&mut org);

        // A head who also holds "No mail" keeps Supervisor (a union), but not Manager.
        org.graph
            .write(Relationship::Assignee(
                no_mail,
                Assignee::User(org.user["hanna"]),
            ))
            .unwrap();
        assert!(org.may("hanna", Permission::MailboxView, "emil"));
        assert_consistent(&mut org);

        // Vera moves to Sales: no explicit role any more, so Manager again.
        org.graph.delete(Relationship::Member(
            org.user["vera"],
            org.dept["warehouse"],
        ));
        org.graph
            .write(Relationship::Member(org.user["vera"], org.dept["sales"]))
            .unwrap();
        assert!(org.may("vera", Permission::MailboxConnect, "vera"));
        assert_consistent(&mut org);
    }

    #[test]
    fn an_all_powerful_custom_role_still_cannot_read_mail() {
        let mut org = Org::new();
        let mut everything = Grants::ALL;
        everything.manage_permissions = false;
        org.role(
            "Everything",
            everything,
            &[Assignee::Members(org.dept["east"])],
        );
        assert!(org.may("emil", Permission::MailboxModify, "olga"));
        assert!(!org.may("emil", Permission::MailboxReadMail, "olga"));
        org.graph
            .write(Relationship::Reader(org.mailbox["olga"], org.user["emil"]))
            .unwrap();
        assert!(org.may("emil", Permission::MailboxReadMail, "olga"));
        let why = org
            .graph
            .explain(
                org.user["emil"],
                Permission::MailboxReadMail,
                Some(org.mailbox["olga"]),
            )
            .unwrap()
            .expect("reader");
        assert_eq!(
            why.path,
            vec![Relationship::Reader(org.mailbox["olga"], org.user["emil"])]
        );
        assert_eq!(why.granted_by, None);
        assert_consistent(&mut org);
    }

    #[test]
    fn organisation_permissions_come_from_roles_and_identitys_flag() {
        let mut org = Org::new();
        let users = org.user.clone();
        let u = |p: &str| users[p];
        assert!(!org
            .graph
            .check(u("emil"), Permission::OrgInvite, None)
            .unwrap());
        let inviters = org.role(
            "Inviters",
            Grants {
                invite: true,
                ..Builtin::Manager.default_grants()
            },
            &[Assignee::User(u("emil"))],
        );
        let configurators = org.role(
            "Configurators",
            Grants {
                manage_permissions: true,
                ..Builtin::Manager.default_grants()
            },
            &[Assignee::User(u("olga"))],
        );
        let g = &org.graph;
        assert!(g.check(u("emil"), Permission::OrgInvite, None).unwrap());
        let why = g
            .explain(u("emil"), Permission::OrgInvite, None)
            .unwrap()
            .expect("role");
        assert_eq!(
            why.path,
            vec![Relationship::Assignee(inviters, Assignee::User(u("emil")))]
        );
        assert_eq!(
            why.reason,
            "holds role “Inviters” (invite people), assigned to them in person"
        );
        assert!(g
            .check(u("olga"), Permission::OrgManagePermissions, None)
            .unwrap());
        assert_eq!(
            g.explain(u("olga"), Permission::OrgManagePermissions, None)
                .unwrap()
                .and_then(|w| w.granted_by)
                .map(|r| r.role),
            Some(configurators)
        );
        assert!(!g
            .check(u("olga"), Permission::OrgRegisterUsers, None)
            .unwrap());
        assert!(g
            .check(u("ada"), Permission::OrgRegisterUsers, None)
            .unwrap());
        assert_eq!(
            g.describe_roles(u("olga"), Permission::OrgInvite),
            "Configurators (invite people: no)"
        );
        assert_consistent(&mut org);

        org.graph.write(Relationship::EveryoneInvites).unwrap();
        let why = org
            .graph
            .explain(org.user["walt"], Permission::OrgInvite, None)
            .unwrap()
            .expect("everyone");
        assert_eq!(why.path, vec![Relationship::EveryoneInvites]);
        assert_consistent(&mut org);
    }

    #[test]
    fn admins_are_explained_as_admins_with_the_administrator_role() {
        let org = Org::new();
        let why = org
            .graph
            .explain(
                org.user["ada"],
                Permission::MailboxModify,
                Some(org.mailbox["walt"]),
            )
            .unwrap()
            .expect("admin");
        assert_eq!(why.reason, "is an org admin");
        let grant = why.granted_by.expect("Administrator");
        assert_eq!(grant.role, org.builtin(Builtin::Administrator));
        assert_eq!(grant.assignment, Relationship::Admin(org.user["ada"]));
        assert_eq!(grant.scope, Scope::All);
        assert_eq!(
            org.graph
                .describe_roles(org.user["ada"], Permission::MailboxModify),
            "Administrator (change mailbox settings: everyone)"
        );
        assert_eq!(
            org.graph
                .describe_roles(UserId::new(), Permission::MailboxModify),
            "no role"
        );
    }

    #[test]
    fn a_department_member_role_and_edited_defaults_stay_consistent() {
        let mut org = Org::new();
        let manager = org.builtin(Builtin::Manager);
        let mut def = org.graph.role(manager).cloned().unwrap();
        def.grants = scoped(
            Scope::Department,
            Scope::Subordinates,
            Scope::Own,
            Scope::None,
        );
        org.graph.put_role(def);
        org.role(
            "Sales desk",
            scoped(
                Scope::Subordinates,
                Scope::Department,
                Scope::All,
                Scope::Department,
            ),
            &[
                Assignee::Members(org.dept["company"]),
                Assignee::Tree(org.dept["sales"]),
            ],
        );
        org.graph
            .write(Relationship::Reader(org.mailbox["walt"], org.user["olga"]))
            .unwrap();
        org.graph.set_user(org.user["olga"], false);
        assert_consistent(&mut org);
        org.graph
            .write(Relationship::Head(org.dept["night"], org.user["emil"]))
            .unwrap();
        assert_consistent(&mut org);
    }
}
