//! How `ctl access check --explain` and `ctl access roles` read: each relationship of the
//! path that decided a check, or of a role assignment, as a sentence with the names of the
//! people, departments and roles it mentions ("Ann Lee <ann@acme.test> works in department
//! Sales East", "role “HR” is assigned to department Sales and its sub-departments"), or as
//! `type:id#relation@type:id`; and the role that granted a check.

use std::collections::HashMap;

use mailroom_platform::proto::access::v1 as apb;
use mailroom_platform::proto::identity::v1 as pb;

use super::roles::{role_label, scope_name};
use crate::ctl::Clients;

/// `type:id#relation@type:id` for printing.
pub(super) fn describe(r: &apb::Relationship) -> String {
    let res = r.resource.clone().unwrap_or_default();
    let sub = r.subject.clone().unwrap_or_default();
    let sub_obj = sub.object.unwrap_or_default();
    let sub_rel = if sub.relation.is_empty() {
        String::new()
    } else {
        format!("#{}", sub.relation)
    };
    format!(
        "{}:{}#{}@{}:{}{}",
        res.r#type, res.id, r.relation, sub_obj.r#type, sub_obj.id, sub_rel
    )
}

/// Names for the users, departments and roles a path mentions ("Ann Lee <ann@acme.test>",
/// "department Sales East", "role “HR”"), besides those already `known`, looked up with the
/// caller's token; an id that cannot be looked up stays an id.
pub(super) async fn names_in(
    c: &mut Clients,
    path: &[apb::Relationship],
    known: HashMap<String, String>,
) -> HashMap<String, String> {
    let mut names = known;
    for rel in path {
        let ends = [
            rel.resource.clone().unwrap_or_default(),
            rel.subject
                .clone()
                .unwrap_or_default()
                .object
                .unwrap_or_default(),
        ];
        for end in ends {
            if names.contains_key(&end.id) {
                continue;
            }
            let name = match end.r#type.as_str() {
                "user" => {
                    let request = c.request(pb::GetUserRequest { id: end.id.clone() });
                    c.identity.get_user(request).await.ok().map(|u| {
                        let u = u.into_inner();
                        let full = format!("{} {}", u.first_name, u.last_name);
                        match full.trim() {
                            "" => format!("<{}>", u.login_email),
                            name => format!("{name} <{}>", u.login_email),
                        }
                    })
                }
                "department" => {
                    let request = c.request(pb::GetDepartmentRequest { id: end.id.clone() });
                    c.identity
                        .get_department(request)
                        .await
                        .ok()
                        .map(|d| format!("department {}", d.into_inner().name))
                }
                "role" => {
                    let request = c.request(apb::GetRoleRequest { id: end.id.clone() });
                    c.access
                        .get_role(request)
                        .await
                        .ok()
                        .map(|r| role_label(&r.into_inner().display_name))
                }
                _ => None,
            };
            if let Some(name) = name {
                names.insert(end.id, name);
            }
        }
    }
    names
}

/// One relationship as a person reads it, with the names known for its ends.
pub(super) fn sentence(rel: &apb::Relationship, names: &HashMap<String, String>) -> String {
    let resource = rel.resource.clone().unwrap_or_default();
    let subject = rel.subject.clone().unwrap_or_default();
    let subject_object = subject.object.unwrap_or_default();
    let name = |o: &apb::ObjectRef| {
        names
            .get(&o.id)
            .cloned()
            .unwrap_or_else(|| format!("{} {}", o.r#type, o.id))
    };
    let (what, who) = (name(&resource), name(&subject_object));
    match (resource.r#type.as_str(), rel.relation.as_str()) {
        ("mailbox", "owner") => format!("{what} is owned by {who}"),
        ("mailbox", "reader") => format!("{who} was granted reading {what}"),
        ("user", "member") => format!("{what} works in {who}"),
        ("department", "parent") => format!("{what} is part of {who}"),
        ("department", "head") => format!("{what} is headed by {who}"),
        ("org", "admin") => format!("{who} is an admin of the organisation"),
        ("org", "inviter") if subject.relation == "member" => {
            "everyone in the organisation may invite".to_owned()
        }
        ("role", "assignee") => match (subject_object.r#type.as_str(), subject.relation.as_str()) {
            ("user", "") => format!("{what} is assigned to {who}"),
            ("department", "member") => format!("{what} is assigned to the members of {who}"),
            ("department", "all_members") => {
                format!("{what} is assigned to {who} and its sub-departments")
            }
            ("org", "head") => format!("{what} is assigned to everyone who heads a department"),
            ("org", "everyone_else") => {
                format!("{what} is assigned to everyone else (whoever holds no other role)")
            }
            _ => describe(rel),
        },
        _ => describe(rel),
    }
}

/// The role that granted a check, its scope (for a mailbox permission) and the assignment
/// through which the user holds it, in words: `role “Supervisor” at scope subordinates,
/// because role “Supervisor” is assigned to everyone who heads a department
/// (role:r-1#assignee@org:o-1#head)`.
pub(super) fn granted_by(g: &apb::RoleGrant, names: &HashMap<String, String>) -> String {
    let mut names = names.clone();
    names.insert(g.role_id.clone(), role_label(&g.role_display_name));
    // An organisation permission (invite, configure) has no scope.
    let head = match scope_name(g.scope).as_str() {
        "" | "none" | "unspecified" => role_label(&g.role_display_name),
        scope => format!("{} at scope {scope}", role_label(&g.role_display_name)),
    };
    match &g.assignment {
        Some(a) => format!("{head}, because {} ({})", sentence(a, &names), describe(a)),
        None => head,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::ctl::access::object;
    use crate::output::Rows;

    fn rel(resource: (&str, &str), relation: &str, subject: (&str, &str)) -> apb::Relationship {
        set(resource, relation, subject, "")
    }

    fn set(
        resource: (&str, &str),
        relation: &str,
        subject: (&str, &str),
        subject_relation: &str,
    ) -> apb::Relationship {
        apb::Relationship {
            resource: object(resource.0, resource.1),
            relation: relation.into(),
            subject: Some(apb::SubjectRef {
                object: object(subject.0, subject.1),
                relation: subject_relation.into(),
            }),
        }
    }

    #[test]
    fn each_kind_of_role_assignment_reads_as_a_sentence() {
        let names: HashMap<String, String> = [
            ("r-hr", "role “HR”"),
            ("u-ann", "Ann Lee <ann@acme.test>"),
            ("d-sales", "department Sales"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let hr = ("role", "r-hr");
        let lines: Vec<String> = [
            set(hr, "assignee", ("user", "u-ann"), ""),
            set(hr, "assignee", ("department", "d-sales"), "member"),
            set(hr, "assignee", ("department", "d-sales"), "all_members"),
            set(hr, "assignee", ("org", "o-1"), "head"),
            set(hr, "assignee", ("org", "o-1"), "everyone_else"),
            set(("org", "o-1"), "inviter", ("org", "o-1"), "member"),
        ]
        .iter()
        .map(|r| sentence(r, &names))
        .collect();
        assert_eq!(
            lines,
            [
                "role “HR” is assigned to Ann Lee <ann@acme.test>",
                "role “HR” is assigned to the members of department Sales",
                "role “HR” is assigned to department Sales and its sub-departments",
                "role “HR” is assigned to everyone who heads a department",
                "role “HR” is assigned to everyone else (whoever holds no other role)",
                "everyone in the organisation may invite",
            ]
        );
    }

    #[test]
    fn the_role_that_granted_a_check_is_named_with_its_scope_and_assignment() {
        let grant = apb::RoleGrant {
            role_id: "r-sup".into(),
            role_display_name: "Supervisor".into(),
            scope: apb::Scope::Subordinates as i32,
            assignment: Some(set(("role", "r-sup"), "assignee", ("org", "o-1"), "head")),
        };
        assert_eq!(
            granted_by(&grant, &HashMap::new()),
            "role “Supervisor” at scope subordinates, because role “Supervisor” is assigned to \
             everyone who heads a department (role:r-sup#assignee@org:o-1#head)"
        );
        let admin = apb::RoleGrant {
            role_id: "r-adm".into(),
            role_display_name: "Administrator".into(),
            scope: apb::Scope::All as i32,
            assignment: Some(rel(("org", "o-1"), "admin", ("user", "u-ann"))),
        };
        let invite = apb::RoleGrant {
            scope: apb::Scope::None as i32,
            ..admin.clone()
        };
        let names = HashMap::from([("u-ann".to_owned(), "Ann Lee <ann@acme.test>".to_owned())]);
        assert_eq!(
            granted_by(&admin, &names),
            "role “Administrator” at scope all, because Ann Lee <ann@acme.test> is an admin of \
             the organisation (org:o-1#admin@user:u-ann)"
        );
        assert!(
            granted_by(&invite, &names).starts_with("role “Administrator”, because Ann Lee"),
            "{}",
            granted_by(&invite, &names)
        );
    }

    #[test]
    fn an_explanation_reads_one_relationship_a_line_with_names() {
        let names: HashMap<String, String> = [
            ("u-ann", "Ann Lee <ann@acme.test>"),
            ("d-east", "department Sales East"),
            ("d-sales", "department Sales"),
            ("u-olivia", "Olivia Chen <olivia@acme.test>"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let path = [
            rel(("mailbox", "m-1"), "owner", ("user", "u-ann")),
            rel(("user", "u-ann"), "member", ("department", "d-east")),
            rel(
                ("department", "d-east"),
                "parent",
                ("department", "d-sales"),
            ),
            rel(("department", "d-sales"), "head", ("user", "u-olivia")),
        ];
        let lines: Vec<String> = path.iter().map(|r| sentence(r, &names)).collect();
        assert_eq!(
            lines,
            [
                "mailbox m-1 is owned by Ann Lee <ann@acme.test>",
                "Ann Lee <ann@acme.test> works in department Sales East",
                "department Sales East is part of department Sales",
                "department Sales is headed by Olivia Chen <olivia@acme.test>",
            ]
        );
        let mut rows = Rows::one(vec!["allowed"], vec![json!(true)]);
        rows.footer.push((
            "because",
            Value::Array(lines.iter().map(|l| json!(l)).collect()),
        ));
        let json: Value =
            serde_json::from_str(&rows.render(crate::output::Format::Json)).expect("JSON");
        assert_eq!(json["because"][3], lines[3].as_str());
        let table = rows.render(crate::output::Format::Table);
        assert!(
            table
                .contains("because:\n  mailbox m-1 is owned by Ann Lee <ann@acme.test>\n  Ann Lee"),
            "{table}"
        );
    }
}
