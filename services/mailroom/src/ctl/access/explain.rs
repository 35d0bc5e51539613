//! How `ctl access check --explain` reads: each relationship of the path that decided a check
//! as a sentence, with the names of the people and departments it mentions ("Ann Lee
//! <ann@acme.test> works in department Sales East"), or as `type:id#relation@type:id`.

use std::collections::HashMap;

use mailroom_platform::proto::access::v1 as apb;
use mailroom_platform::proto::identity::v1 as pb;

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

/// Names for the users and departments a path mentions ("Ann Lee <ann@acme.test>",
/// "Sales East"), looked up with the caller's token; an id that cannot be looked up stays
/// an id.
pub(super) async fn names_in(
    c: &mut Clients,
    path: &[apb::Relationship],
) -> HashMap<String, String> {
    let mut names = HashMap::new();
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
                        format!("{} <{}>", full.trim(), u.login_email)
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
        ("org", "mailbox_manager") => format!("{who} manages the organisation's mailboxes"),
        ("org", "inviter") if subject.relation == "member" => {
            "everyone in the organisation may invite".to_owned()
        }
        ("org", "inviter") => format!("{who} may invite people"),
        _ => describe(rel),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::ctl::access::object;
    use crate::output::Rows;

    fn rel(resource: (&str, &str), relation: &str, subject: (&str, &str)) -> apb::Relationship {
        apb::Relationship {
            resource: object(resource.0, resource.1),
            relation: relation.into(),
            subject: Some(apb::SubjectRef {
                object: object(subject.0, subject.1),
                relation: String::new(),
            }),
        }
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
