//! Delegation: what someone who may configure access permissions, without being an org admin,
//! may give and to whom ([`OrgGraph::may_delegate`]). Org admins may do anything (the
//! Administrator role itself is not theirs to change either: identity's admin flag decides who
//! holds it, and the API refuses to touch it).
//!
//! For anyone else (design §6, D2–D3):
//! - they need `org.manage_permissions`;
//! - no role that itself configures access permissions, and no assignment to every department
//!   head or to everyone else: those are for org admins, so the power to configure does not
//!   spread;
//! - nothing above what they hold: each scope at most theirs, inviting only if they may invite;
//! - for each mailbox permission the role gives, the subject lies inside the caller's reach at
//!   the caller's scope for it — All: anyone; Department: the caller, or a user all of whose
//!   departments are at or below the caller's, or such a department; Subordinates: likewise
//!   under the departments the caller heads, for someone they supervise; Own: the caller
//!   only. A department subject is also checked through each person it covers now. Since a
//!   holder's reach is relative to where they sit, every recipient's reach is then within the
//!   caller's;
//! - whatever the role gives, the subject lies inside the caller's widest reach (at least the
//!   caller): roles also take away ("everyone else" stops applying to someone who is given
//!   any role), so nobody restricts people beyond their reach either.
//!
//! Taking a role away hands out something too: whoever is left with no explicit role falls
//! back to the roles of "everyone else" ([`OrgGraph::may_fall_back`]). A non-admin may unassign
//! or delete a role only if they could also have given each subject everyone else's roles (an
//! Own scope there needs only to be held: it reaches nobody but the subject).
//!
//! The same reach bounds what a configurer may ask about others ([`OrgGraph::may_ask_about`]):
//! Check, the lookups and someone's roles, only for people their widest scope reaches.
//!
//! Known limits, on purpose or for later (review S8/S10):
//! - Structure moves later are not re-validated: a department moved out from under the caller
//!   keeps its assignments.
//! - A role row the replica cannot read (a kind or grants a newer version wrote) is skipped;
//!   its holders then fall back to everyone else's roles, which fails open as far as those
//!   roles reach.
//! - Deleting a department in identity drops its assignments with it (mirrored from identity's
//!   events) without a RoleUnassigned event.
//! - Two holders of `mailbox.grant_read` over each other's mailboxes may grant each other
//!   reading: the rule "never to oneself unless an org admin" bounds each of them, not the
//!   pair.

use mailroom_types::{DepartmentId, RoleId, UserId};

use super::{OrgGraph, Set};
use crate::model::{Assignee, Grants, Relationship, RoleDef, Scope};

/// A role's scope for one of its mailbox permissions.
type Field = fn(&Grants) -> Scope;

/// The scoped permissions of a role, with their field and what they let a holder do.
const SCOPED: [(Field, &str); 4] = [
    (|g| g.view_mailbox_list, "see mailboxes in the list"),
    (|g| g.connect_mailboxes, "connect mailboxes"),
    (|g| g.modify_mailboxes, "change mailbox settings"),
    (|g| g.grant_read_access, "grant mail reading"),
];

/// How far the caller's scope reaches, in words ("your own department and below").
fn held_phrase(scope: Scope) -> &'static str {
    match scope {
        Scope::None => "nobody",
        Scope::Own => "yourself",
        Scope::Subordinates => "yourself and the people you supervise",
        Scope::Department => "your own department and below",
        Scope::All => "everyone",
    }
}

/// How far a role's scope reaches for its holders, in words.
fn granted_phrase(scope: Scope) -> &'static str {
    match scope {
        Scope::None => "nobody",
        Scope::Own => "each holder themselves",
        Scope::Subordinates => "each holder's subordinates",
        Scope::Department => "each holder's own department and below",
        Scope::All => "everyone",
    }
}

/// What `grants` gives beyond `held`, in words ("see mailboxes in the list for everyone").
fn beyond(grants: &Grants, held: &Grants) -> Vec<String> {
    let mut parts: Vec<String> = SCOPED
        .iter()
        .filter(|(field, _)| field(grants) > field(held))
        .map(|(field, words)| format!("{words} for {}", granted_phrase(field(grants))))
        .collect();
    if grants.invite && !held.invite {
        parts.push("invite people".into());
    }
    parts
}

fn subject_words(subject: Assignee) -> String {
    match subject {
        Assignee::User(u) => format!("user {u}"),
        Assignee::Members(d) => format!("department {d}"),
        Assignee::Tree(d) => format!("department {d} and its sub-departments"),
        Assignee::Heads => "every department head".into(),
        Assignee::EveryoneElse => "everyone else".into(),
    }
}

impl OrgGraph {
    /// Whether `caller` may create, change, assign or remove a role giving `grants`, to or
    /// from `subject` (`None` when the role is not being assigned or unassigned). `Err` is a
    /// sentence for the caller saying what is missing. See the module documentation for the
    /// rules.
    pub fn may_delegate(
        &self,
        caller: UserId,
        grants: Grants,
        subject: Option<Assignee>,
    ) -> Result<(), String> {
        if self.is_admin(caller) {
            return Ok(());
        }
        let held = self.effective(caller);
        if !held.manage_permissions {
            return Err(
                "your roles do not let you configure access permissions; ask an org admin".into(),
            );
        }
        if grants.manage_permissions {
            return Err("only an org admin may create, change, assign or remove a role that lets its holders configure access permissions".into());
        }
        if let Some(s @ (Assignee::Heads | Assignee::EveryoneElse)) = subject {
            return Err(format!(
                "only an org admin may assign roles to {} or remove them from them",
                subject_words(s)
            ));
        }
        for (field, words) in SCOPED {
            let (want, have) = (field(&grants), field(&held));
            if want > have {
                return Err(format!(
                    "you cannot grant more than you hold: your roles let you {words} for {} only, and this role gives it for {}",
                    held_phrase(have),
                    granted_phrase(want)
                ));
            }
        }
        if grants.invite && !held.invite {
            return Err(
                "you cannot grant inviting people: your roles do not let you invite".into(),
            );
        }
        let Some(subject) = subject else {
            return Ok(());
        };
        for (field, words) in SCOPED {
            let have = field(&held);
            if field(&grants) > Scope::None {
                if let Err(outside) = self.subject_inside(caller, have, subject) {
                    return Err(format!(
                        "your roles let you {words} for {} only; {outside} is outside it",
                        held_phrase(have)
                    ));
                }
            }
        }
        let widest = SCOPED
            .iter()
            .map(|(field, _)| field(&held))
            .max()
            .unwrap_or(Scope::None)
            .max(Scope::Own);
        if let Err(outside) = self.subject_inside(caller, widest, subject) {
            return Err(format!(
                "you may assign roles only to people within your reach ({}); {outside} is outside it",
                held_phrase(widest)
            ));
        }
        Ok(())
    }

    /// The widest scope of `user`'s four mailbox grants: as far as they reach at all.
    pub fn widest_reach(&self, user: UserId) -> Scope {
        let held = self.effective(user);
        SCOPED
            .iter()
            .map(|(field, _)| field(&held))
            .max()
            .unwrap_or(Scope::None)
    }

    /// Whether `caller` may ask about `subject`'s permissions and roles (Check, the lookups,
    /// someone's role assignments): about themselves always, an org admin about anyone, a
    /// holder of `org.manage_permissions` about whoever their widest scope reaches
    /// ([`OrgGraph::reaches`]). `Err` is a sentence for the caller saying why not.
    pub fn may_ask_about(&self, caller: UserId, subject: UserId) -> Result<(), String> {
        if caller == subject || self.is_admin(caller) {
            return Ok(());
        }
        if !self.effective(caller).manage_permissions {
            return Err("you may ask only about your own permissions; org admins may ask about anyone in the organisation, and those whose role configures access permissions about the people within their reach".into());
        }
        let widest = self.widest_reach(caller);
        if self.reaches(caller, widest, subject) {
            Ok(())
        } else {
            Err(format!(
                "your roles let you ask only about people within your reach ({}); user {subject} is outside it",
                held_phrase(widest.max(Scope::Own))
            ))
        }
    }

    /// Whether `caller` may take `role` away from `subject` (`deleting`: the whole role; else
    /// this one assignment) as far as what follows: whoever is left without an explicit role
    /// falls back to the roles of everyone else, and the caller must have been able to give
    /// `subject` those: [`OrgGraph::may_delegate`] of their joined grants, except that an Own
    /// scope needs only to be held, not to reach the subject (it reaches nobody but them).
    /// Org admins may; a user who keeps another explicit role, or is an admin, falls back to
    /// nothing. A department is judged as a whole, its future members included. `Err` is a
    /// sentence for the caller. Asked on top of [`OrgGraph::may_delegate`] for the role itself.
    pub fn may_fall_back(
        &self,
        caller: UserId,
        role: RoleId,
        subject: Assignee,
        deleting: bool,
    ) -> Result<(), String> {
        if self.is_admin(caller) {
            return Ok(());
        }
        if let Assignee::User(v) = subject {
            if self.is_admin(v) || self.keeps_an_explicit_role(v, role, deleting) {
                return Ok(());
            }
        }
        let mut roles: Vec<&RoleDef> = self
            .roles
            .everyone_else
            .iter()
            .filter_map(|r| self.roles.assignable(r))
            .collect();
        roles.sort_by_cached_key(|r| (r.name.to_lowercase(), r.id));
        let grants = roles.iter().fold(Grants::NONE, |g, r| g.join(r.grants));
        // Own reaches only the subject's own mailboxes: what everyone else's roles are for,
        // nobody else's. Every wider scope must reach no one the caller does not.
        let mut reaching = grants;
        for scope in [
            &mut reaching.view_mailbox_list,
            &mut reaching.connect_mailboxes,
            &mut reaching.modify_mailboxes,
            &mut reaching.grant_read_access,
        ] {
            if *scope == Scope::Own {
                *scope = Scope::None;
            }
        }
        let held = self.effective(caller);
        let over = !beyond(&grants, &held).is_empty();
        let reason = match self.may_delegate(caller, reaching, Some(subject)) {
            Ok(()) if !over => return Ok(()),
            Ok(()) => String::new(),
            Err(reason) => reason,
        };
        let action = if deleting {
            "deleting this role"
        } else {
            "unassigning this role"
        };
        let who = subject_words(subject);
        let more: Vec<String> = roles
            .iter()
            .filter_map(|r| {
                let parts = beyond(&r.grants, &held);
                (!parts.is_empty()).then(|| format!("{}: {}", r.name, parts.join(", ")))
            })
            .collect();
        if more.is_empty() {
            let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
            Err(format!(
                "{action} would leave {who} with the roles of everyone else ({}), which you may not give them: {reason}",
                names.join(", ")
            ))
        } else {
            Err(format!(
                "{action} would leave {who} with the roles of everyone else ({}), more than you hold; ask an org admin",
                more.join("; ")
            ))
        }
    }

    /// Whether `user` still holds a role explicitly (not as everyone else) once `role` is
    /// deleted (`deleting`) or its assignment to them directly is removed.
    fn keeps_an_explicit_role(&self, user: UserId, role: RoleId, deleting: bool) -> bool {
        self.held_roles(user).iter().any(|h| match h.assignment {
            Relationship::Assignee(r, who) => {
                who != Assignee::EveryoneElse
                    && if deleting {
                        r != role
                    } else {
                        (r, who) != (role, Assignee::User(user))
                    }
            }
            _ => false,
        })
    }

    /// Whether every person `subject` covers, now and (for a department) later, lies inside
    /// what `scope` reaches from `caller`; `Err` names what does not.
    fn subject_inside(
        &self,
        caller: UserId,
        scope: Scope,
        subject: Assignee,
    ) -> Result<(), String> {
        let tops = |d: DepartmentId| match scope {
            Scope::Subordinates => self.headed_by.get(&caller).is_some_and(|h| h.contains(&d)),
            Scope::Department => self.is_home(caller, d),
            _ => false,
        };
        let user_inside = |v: UserId| match scope {
            Scope::None => false,
            Scope::Own => v == caller,
            Scope::Subordinates | Scope::Department => {
                v == caller
                    || ((scope == Scope::Department || self.supervises(caller, v))
                        && self.home(v).next().is_some()
                        && self.home(v).all(|d| self.under(d, tops)))
            }
            Scope::All => true,
        };
        let covered = match subject {
            Assignee::User(v) => {
                return if user_inside(v) {
                    Ok(())
                } else {
                    Err(subject_words(subject))
                };
            }
            Assignee::Members(d) | Assignee::Tree(d) => {
                if scope == Scope::All {
                    return Ok(());
                }
                if !matches!(scope, Scope::Subordinates | Scope::Department) || !self.under(d, tops)
                {
                    return Err(subject_words(subject));
                }
                if matches!(subject, Assignee::Tree(_)) {
                    self.subtree([d])
                } else {
                    Set::from_iter([d])
                }
            }
            Assignee::Heads | Assignee::EveryoneElse => {
                return if scope == Scope::All {
                    Ok(())
                } else {
                    Err(subject_words(subject))
                };
            }
        };
        for dep in covered {
            for v in self.members.get(&dep).into_iter().flatten() {
                if !user_inside(*v) {
                    return Err(format!(
                        "user {v}, a member of department {dep}, also belongs to a department that"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Set;

    use mailroom_types::UserId;

    use super::SCOPED;
    use crate::graph::fixture::{scoped, Org, PEOPLE};
    use crate::model::{Assignee, Grants, Relationship, Scope};

    /// The org with a "Configurators" role (configure access, the scopes given) for `who`.
    fn configurator(who: &str, grants: Grants) -> Org {
        let mut org = Org::new();
        let grants = Grants {
            manage_permissions: true,
            ..grants
        };
        org.role("Configurators", grants, &[Assignee::User(org.user[who])]);
        org.graph.refresh();
        org
    }

    fn department_wide() -> Grants {
        scoped(
            Scope::Department,
            Scope::Department,
            Scope::Department,
            Scope::Own,
        )
    }

    #[test]
    fn admins_may_do_anything_and_others_need_the_permission() {
        let org = Org::new();
        let anything = Grants::ALL;
        assert_eq!(
            org.graph
                .may_delegate(org.user["ada"], anything, Some(Assignee::EveryoneElse)),
            Ok(())
        );
        let refused = org
            .graph
            .may_delegate(org.user["hanna"], Grants::NONE, None)
            .unwrap_err();
        assert_eq!(
            refused,
            "your roles do not let you configure access permissions; ask an org admin"
        );
    }

    #[test]
    fn the_power_to_configure_and_organisation_wide_assignments_stay_with_admins() {
        let org = configurator("hanna", department_wide());
        let hanna = org.user["hanna"];
        let err = org
            .graph
            .may_delegate(
                hanna,
                Grants {
                    manage_permissions: true,
                    ..Grants::NONE
                },
                None,
            )
            .unwrap_err();
        assert!(err.starts_with("only an org admin may"), "{err}");
        for s in [Assignee::Heads, Assignee::EveryoneElse] {
            let err = org
                .graph
                .may_delegate(hanna, Grants::NONE, Some(s))
                .unwrap_err();
            assert!(
                err.starts_with("only an org admin may assign roles to"),
                "{err}"
            );
        }
    }

    #[test]
    fn nobody_grants_more_than_they_hold() {
        let org = configurator("hanna", department_wide());
        let hanna = org.user["hanna"];
        assert_eq!(
            org.graph.may_delegate(hanna, department_wide(), None),
            Ok(())
        );
        let err = org
            .graph
            .may_delegate(
                hanna,
                scoped(Scope::None, Scope::All, Scope::None, Scope::None),
                None,
            )
            .unwrap_err();
        assert_eq!(
            err,
            "you cannot grant more than you hold: your roles let you connect mailboxes for your own department and below only, and this role gives it for everyone"
        );
        let err = org
            .graph
            .may_delegate(
                hanna,
                Grants {
                    invite: true,
                    ..Grants::NONE
                },
                None,
            )
            .unwrap_err();
        assert_eq!(
            err,
            "you cannot grant inviting people: your roles do not let you invite"
        );
    }

    #[test]
    fn subjects_must_lie_within_the_callers_reach() {
        let mut org = configurator("hanna", department_wide());
        let hanna = org.user["hanna"];
        let connect = scoped(Scope::None, Scope::Department, Scope::None, Scope::None);
        for ok in [
            Assignee::User(org.user["emil"]),
            Assignee::User(hanna),
            Assignee::Members(org.dept["east"]),
            Assignee::Tree(org.dept["east"]),
        ] {
            assert_eq!(
                org.graph.may_delegate(hanna, connect, Some(ok)),
                Ok(()),
                "{ok:?}"
            );
        }
        let sales = org.dept["sales"];
        let err = org
            .graph
            .may_delegate(hanna, connect, Some(Assignee::Members(sales)))
            .unwrap_err();
        assert_eq!(
            err,
            format!("your roles let you connect mailboxes for your own department and below only; department {sales} is outside it")
        );
        let olga = org.user["olga"];
        let err = org
            .graph
            .may_delegate(hanna, connect, Some(Assignee::User(olga)))
            .unwrap_err();
        assert!(
            err.ends_with(&format!("user {olga} is outside it")),
            "{err}"
        );
        // Even a role that gives nothing (it takes "everyone else" away) needs the subject in
        // reach.
        let err = org
            .graph
            .may_delegate(hanna, Grants::NONE, Some(Assignee::User(olga)))
            .unwrap_err();
        assert!(
            err.starts_with("you may assign roles only to people within your reach"),
            "{err}"
        );

        // Emil also belongs to Other: East as a whole is no longer within Hanna's reach.
        org.graph
            .write(Relationship::Member(org.user["emil"], org.dept["other"]))
            .unwrap();
        let err = org
            .graph
            .may_delegate(hanna, connect, Some(Assignee::Members(org.dept["east"])))
            .unwrap_err();
        assert!(err.contains(&format!("user {}", org.user["emil"])), "{err}");
    }

    #[test]
    fn own_scope_means_only_oneself() {
        let org = configurator(
            "emil",
            scoped(Scope::Own, Scope::Own, Scope::Own, Scope::Own),
        );
        let emil = org.user["emil"];
        let own = scoped(Scope::None, Scope::Own, Scope::None, Scope::None);
        assert_eq!(
            org.graph
                .may_delegate(emil, own, Some(Assignee::User(emil))),
            Ok(())
        );
        let err = org
            .graph
            .may_delegate(emil, own, Some(Assignee::Members(org.dept["east"])))
            .unwrap_err();
        assert!(
            err.starts_with("your roles let you connect mailboxes for yourself only"),
            "{err}"
        );
    }

    #[test]
    fn configurers_ask_only_about_people_within_their_widest_reach() {
        let org = configurator("hanna", department_wide());
        let u = |p: &str| org.user[p];
        let g = &org.graph;
        assert_eq!(g.widest_reach(u("hanna")), Scope::Department);
        for within in ["hanna", "emil"] {
            assert_eq!(g.may_ask_about(u("hanna"), u(within)), Ok(()), "{within}");
        }
        let err = g.may_ask_about(u("hanna"), u("olga")).unwrap_err();
        assert_eq!(
            err,
            format!(
                "your roles let you ask only about people within your reach (your own department and below); user {} is outside it",
                u("olga")
            )
        );
        // Admins ask about anyone; people who configure nothing only about themselves.
        assert_eq!(g.may_ask_about(u("ada"), u("walt")), Ok(()));
        assert_eq!(g.may_ask_about(u("emil"), u("emil")), Ok(()));
        let err = g.may_ask_about(u("emil"), u("hanna")).unwrap_err();
        assert!(
            err.starts_with("you may ask only about your own permissions"),
            "{err}"
        );

        // A configurer whose grants reach only themselves asks only about themselves.
        let own = configurator(
            "emil",
            scoped(Scope::Own, Scope::None, Scope::Own, Scope::None),
        );
        let err = own
            .graph
            .may_ask_about(own.user["emil"], own.user["hanna"])
            .unwrap_err();
        assert!(err.contains("within your reach (yourself)"), "{err}");
    }

    #[test]
    fn taking_a_role_away_may_not_leave_people_with_more_than_the_caller_holds() {
        let mut org = configurator("hanna", department_wide());
        let (hanna, emil, olga) = (org.user["hanna"], org.user["emil"], org.user["olga"]);
        let extra = org.role("Extra", Grants::NONE, &[Assignee::User(emil)]);
        let east = Assignee::Members(org.dept["east"]);
        // Manager (everyone else) gives each their own: within Hanna's grants.
        assert_eq!(
            org.graph
                .may_fall_back(hanna, extra, Assignee::User(emil), false),
            Ok(())
        );
        // Olga is outside Hanna's reach: even Manager is not Hanna's to give her.
        let err = org
            .graph
            .may_fall_back(hanna, extra, Assignee::User(olga), false)
            .unwrap_err();
        assert!(
            err.starts_with(&format!("unassigning this role would leave user {olga} with the roles of everyone else (Manager), which you may not give them: you may assign roles only to people within your reach")),
            "{err}"
        );
        // The admin widens Manager to see every mailbox in the list.
        let manager = org.builtin(crate::model::Builtin::Manager);
        let mut def = org.graph.role(manager).cloned().expect("Manager");
        def.grants.view_mailbox_list = Scope::All;
        org.graph.put_role(def);
        org.graph.refresh();
        let err = org
            .graph
            .may_fall_back(hanna, extra, Assignee::User(emil), false)
            .unwrap_err();
        assert_eq!(
            err,
            format!("unassigning this role would leave user {emil} with the roles of everyone else (Manager: see mailboxes in the list for everyone), more than you hold; ask an org admin")
        );
        let err = org
            .graph
            .may_fall_back(hanna, extra, east, true)
            .unwrap_err();
        assert!(
            err.starts_with("deleting this role would leave department"),
            "{err}"
        );
        // Someone who keeps another explicit role falls back to nothing; admins may anyway.
        let kept = org.role("Kept", Grants::NONE, &[Assignee::User(emil)]);
        assert_eq!(
            org.graph
                .may_fall_back(hanna, extra, Assignee::User(emil), false),
            Ok(())
        );
        let err = org
            .graph
            .may_fall_back(hanna, kept, Assignee::User(emil), true)
            .map(|_| ())
            .err();
        assert_eq!(err, None, "Extra stays");
        assert_eq!(
            org.graph
                .may_fall_back(org.user["ada"], extra, Assignee::User(olga), false),
            Ok(())
        );
        // Out of reach: the reason is the delegation's.
        let err = org
            .graph
            .may_fall_back(hanna, extra, Assignee::User(olga), false)
            .unwrap_err();
        assert!(
            err.contains(&format!("user {olga}")) && err.contains("more than you hold"),
            "{err}"
        );
    }

    /// Whoever a subject covers now.
    fn covered(org: &Org, subject: Assignee) -> Set<UserId> {
        match subject {
            Assignee::User(u) => Set::from_iter([u]),
            Assignee::Members(d) => org.graph.members.get(&d).cloned().unwrap_or_default(),
            Assignee::Tree(d) => org
                .graph
                .subtree([d])
                .iter()
                .flat_map(|x| org.graph.members.get(x).cloned().unwrap_or_default())
                .collect(),
            Assignee::Heads | Assignee::EveryoneElse => {
                PEOPLE.iter().map(|p| org.user[p]).collect()
            }
        }
    }

    /// Whenever a delegation is allowed, each person it covers reaches, for every permission
    /// the role gives, no one the caller does not.
    #[test]
    fn what_is_allowed_never_reaches_beyond_the_caller() {
        let mut allowed = 0;
        for (who, tangled) in ["hanna", "ceo", "hilda", "emil", "walt"]
            .into_iter()
            .flat_map(|w| [(w, false), (w, true)])
        {
            for held in Scope::ALL {
                let mut org =
                    configurator(who, scoped(held, held, Scope::Own, Scope::Subordinates));
                if tangled {
                    // People in two places: Emil also in Other, Olga heads Night shift.
                    let (emil, olga) = (org.user["emil"], org.user["olga"]);
                    let (other, night) = (org.dept["other"], org.dept["night"]);
                    org.graph.write(Relationship::Member(emil, other)).unwrap();
                    org.graph.write(Relationship::Head(night, olga)).unwrap();
                }
                let caller = org.user[who];
                let have = org.graph.effective(caller);
                let mut subjects: Vec<Assignee> =
                    PEOPLE.iter().map(|p| Assignee::User(org.user[p])).collect();
                for d in org.dept.values() {
                    subjects.push(Assignee::Members(*d));
                    subjects.push(Assignee::Tree(*d));
                }
                for want in Scope::ALL {
                    for grants in [
                        scoped(want, Scope::None, Scope::None, Scope::None),
                        scoped(Scope::None, want, Scope::None, Scope::None),
                        scoped(
                            want,
                            want,
                            want.min(Scope::Own),
                            want.min(Scope::Subordinates),
                        ),
                    ] {
                        for s in &subjects {
                            if org.graph.may_delegate(caller, grants, Some(*s)).is_err() {
                                continue;
                            }
                            allowed += 1;
                            for v in covered(&org, *s) {
                                for (field, words) in SCOPED {
                                    for o in PEOPLE.iter().map(|p| org.user[p]) {
                                        if org.graph.reaches(v, field(&grants), o) {
                                            assert!(
                                                org.graph.reaches(caller, field(&have), o),
                                                "{who} holding {held:?} gave {s:?} {words} at {:?}",
                                                field(&grants)
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(allowed > 100, "the test allows something ({allowed})");
    }
}
