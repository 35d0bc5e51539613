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
//! Structure moves later are not re-validated: a department moved out from under the caller
//! keeps its assignments.

use std::collections::HashSet;

use mailroom_types::{DepartmentId, UserId};

use super::OrgGraph;
use crate::model::{Assignee, Grants, Scope};

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
                    HashSet::from([d])
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
    use std::collections::HashSet;

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

    /// Whoever a subject covers now.
    fn covered(org: &Org, subject: Assignee) -> HashSet<UserId> {
        match subject {
            Assignee::User(u) => HashSet::from([u]),
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
