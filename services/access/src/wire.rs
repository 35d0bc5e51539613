//! The API's names for ids, relationships, permissions, settings and revisions, parsed into
//! the model once, with errors that say what a valid value looks like; and the model written
//! back in the API's and the events' forms.

use anyhow::Context as _;
use mailroom_aip::shown;
use mailroom_platform::proto::access::v1 as pb;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_types::{MailboxId, OrgId, Permission, UserId};
use uuid::Uuid;

use crate::error::{AccessError, Result};
use crate::model::{Assignee, Audience, ReadAccessGrants, Relationship, Settings};

const FORMS: &str = "org#admin@user, org#mailbox_manager@user, org#inviter@user, \
                     org#inviter@org#member, department#head@user, department#parent@department, \
                     user#member@department, mailbox#owner@user, mailbox#reader@user";

fn invalid(msg: String) -> AccessError {
    AccessError::InvalidArgument(msg)
}

/// The id in the required field `field`, as the id type the caller asks for (`OrgId`,
/// `UserId`, …; a bare `Uuid` where the field's kind depends on another, as in a filter).
pub fn parse_id<Id: From<Uuid>>(field: &str, value: &str) -> Result<Id> {
    if value.is_empty() {
        return Err(invalid(format!("`{field}` is required")));
    }
    Uuid::parse_str(value)
        .map(Id::from)
        .map_err(|_| invalid(format!("`{field}` is not a valid id: `{}`", shown(value))))
}

/// The id in the optional field `field`: empty means none.
pub fn parse_optional_id<Id: From<Uuid>>(field: &str, value: &str) -> Result<Option<Id>> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse_id(field, value).map(Some)
    }
}

/// An id in a consumed event. Events come from Mailroom's own services, so a bad one is
/// their bug: the handler fails naming the field, and no caller is answered.
pub fn event_id<Id: From<Uuid>>(field: &str, value: &str) -> anyhow::Result<Id> {
    Uuid::parse_str(value)
        .map(Id::from)
        .with_context(|| format!("`{field}` is not a UUID: {value:?}"))
}

/// An optional id in a consumed event: empty means none.
pub fn optional_event_id<Id: From<Uuid>>(field: &str, value: &str) -> anyhow::Result<Option<Id>> {
    if value.is_empty() {
        Ok(None)
    } else {
        event_id(field, value).map(Some)
    }
}

pub fn parse_permission(name: &str) -> Result<Permission> {
    Permission::parse(name).ok_or_else(|| {
        invalid(format!(
            "unknown permission `{}`; known: mailbox.view, mailbox.modify, mailbox.read_mail, \
             mailbox.sync, org.invite, org.register_users, org.manage_permissions",
            shown(name)
        ))
    })
}

/// A plain user subject (`user:<id>`).
pub fn parse_user_subject(field: &str, subject: Option<&pb::SubjectRef>) -> Result<UserId> {
    let object = subject
        .and_then(|s| s.object.as_ref())
        .ok_or_else(|| invalid(format!("`{field}` is required: {{type: \"user\", id}}")))?;
    if object.r#type != "user" || !subject.is_some_and(|s| s.relation.is_empty()) {
        return Err(invalid(format!(
            "`{field}` must be a user (type \"user\", no relation), not `{}`",
            shown(&object.r#type)
        )));
    }
    parse_id(&format!("{field}.id"), &object.id)
}

/// What a permission is asked on: a mailbox, or the organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Mailbox(MailboxId),
    Org(OrgId),
}

pub fn parse_resource(
    permission: Permission,
    resource: Option<&pb::ObjectRef>,
) -> Result<Resource> {
    let r = resource.ok_or_else(|| invalid("`resource` is required".into()))?;
    match (r.r#type.as_str(), permission.on_mailbox()) {
        ("mailbox", true) => Ok(Resource::Mailbox(parse_id("resource.id", &r.id)?)),
        ("org", false) => Ok(Resource::Org(parse_id("resource.id", &r.id)?)),
        (t, true) => Err(invalid(format!(
            "`{}` is asked on a mailbox (resource type \"mailbox\"), not `{}`",
            permission.name(),
            shown(t)
        ))),
        (t, false) => Err(invalid(format!(
            "`{}` is asked on the organisation (resource type \"org\"), not `{}`",
            permission.name(),
            shown(t)
        ))),
    }
}

/// A relationship, and the organisation it names when it is on the org itself.
pub fn parse_relationship(rel: &pb::Relationship) -> Result<(Relationship, Option<OrgId>)> {
    let resource = rel
        .resource
        .as_ref()
        .ok_or_else(|| invalid(format!("a relationship needs a resource; forms: {FORMS}")))?;
    let subject = rel
        .subject
        .as_ref()
        .ok_or_else(|| invalid(format!("a relationship needs a subject; forms: {FORMS}")))?;
    let subject_object = subject
        .object
        .as_ref()
        .ok_or_else(|| invalid(format!("a relationship needs a subject; forms: {FORMS}")))?;
    let form = format!(
        "{}#{}@{}{}",
        resource.r#type,
        rel.relation,
        subject_object.r#type,
        if subject.relation.is_empty() {
            String::new()
        } else {
            format!("#{}", subject.relation)
        }
    );
    // Each id is parsed once here and typed by the position the form gives it.
    let r = || parse_id::<Uuid>("relationship.resource.id", &resource.id);
    let s = || parse_id::<Uuid>("relationship.subject.id", &subject_object.id);
    Ok(match form.as_str() {
        "org#admin@user" => (Relationship::Admin(s()?.into()), Some(r()?.into())),
        "org#mailbox_manager@user" => {
            (Relationship::MailboxManager(s()?.into()), Some(r()?.into()))
        }
        "org#inviter@user" => (Relationship::Inviter(s()?.into()), Some(r()?.into())),
        "org#inviter@org#member" => {
            let org = r()?;
            if s()? != org {
                return Err(invalid(
                    "org#inviter@org#member names one organisation on both sides".into(),
                ));
            }
            (Relationship::EveryoneInvites, Some(org.into()))
        }
        "department#head@user" => (Relationship::Head(r()?.into(), s()?.into()), None),
        "department#parent@department" => (Relationship::Parent(r()?.into(), s()?.into()), None),
        "user#member@department" => (Relationship::Member(r()?.into(), s()?.into()), None),
        "mailbox#owner@user" => (Relationship::Owner(r()?.into(), s()?.into()), None),
        "mailbox#reader@user" => (Relationship::Reader(r()?.into(), s()?.into()), None),
        "role#assignee@user" => (
            Relationship::Assignee(r()?.into(), Assignee::User(s()?.into())),
            None,
        ),
        "role#assignee@department#member" => (
            Relationship::Assignee(r()?.into(), Assignee::Members(s()?.into())),
            None,
        ),
        "role#assignee@department#all_members" => (
            Relationship::Assignee(r()?.into(), Assignee::Tree(s()?.into())),
            None,
        ),
        "role#assignee@org#head" => (
            Relationship::Assignee(r()?.into(), Assignee::Heads),
            Some(s()?.into()),
        ),
        "role#assignee@org#everyone_else" => (
            Relationship::Assignee(r()?.into(), Assignee::EveryoneElse),
            Some(s()?.into()),
        ),
        other => {
            return Err(invalid(format!(
                "`{}` is not a relationship access knows; forms: {FORMS}",
                shown(other)
            )))
        }
    })
}

fn object(kind: &str, id: impl ToString) -> pb::ObjectRef {
    pb::ObjectRef {
        r#type: kind.into(),
        id: id.to_string(),
    }
}

/// The API form of a relationship in `org`.
pub fn relationship_to_proto(org: OrgId, rel: Relationship) -> pb::Relationship {
    let (resource, relation, subject, subject_relation) = match rel {
        Relationship::Admin(u) => (object("org", org), "admin", object("user", u), ""),
        Relationship::MailboxManager(u) => {
            (object("org", org), "mailbox_manager", object("user", u), "")
        }
        Relationship::Inviter(u) => (object("org", org), "inviter", object("user", u), ""),
        Relationship::EveryoneInvites => {
            (object("org", org), "inviter", object("org", org), "member")
        }
        Relationship::Head(d, u) => (object("department", d), "head", object("user", u), ""),
        Relationship::Parent(c, p) => (
            object("department", c),
            "parent",
            object("department", p),
            "",
        ),
        Relationship::Member(u, d) => (object("user", u), "member", object("department", d), ""),
        Relationship::Owner(m, u) => (object("mailbox", m), "owner", object("user", u), ""),
        Relationship::Reader(m, u) => (object("mailbox", m), "reader", object("user", u), ""),
        Relationship::Assignee(r, a) => {
            let (subject, subject_relation) = match a {
                Assignee::User(u) => (object("user", u), ""),
                Assignee::Members(d) => (object("department", d), "member"),
                Assignee::Tree(d) => (object("department", d), "all_members"),
                Assignee::Heads => (object("org", org), "head"),
                Assignee::EveryoneElse => (object("org", org), "everyone_else"),
            };
            (object("role", r), "assignee", subject, subject_relation)
        }
    };
    pb::Relationship {
        resource: Some(resource),
        relation: relation.into(),
        subject: Some(pb::SubjectRef {
            object: Some(subject),
            relation: subject_relation.into(),
        }),
    }
}

/// The event form of a relationship.
pub fn relationship_record(rel: &pb::Relationship) -> ev::RelationshipRecord {
    let resource = rel.resource.clone().unwrap_or_default();
    let subject = rel.subject.clone().unwrap_or_default();
    let subject_object = subject.object.unwrap_or_default();
    ev::RelationshipRecord {
        resource_type: resource.r#type,
        resource_id: resource.id,
        relation: rel.relation.clone(),
        subject_type: subject_object.r#type,
        subject_id: subject_object.id,
        subject_relation: subject.relation,
    }
}

pub fn revision_token(revision: i64) -> pb::Revision {
    pb::Revision {
        token: format!("r{revision}"),
    }
}

/// The revision a token stands for; `None` when no token was given.
pub fn parse_revision(token: Option<&pb::Revision>) -> Result<Option<i64>> {
    let Some(token) = token.map(|t| t.token.as_str()).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    token
        .strip_prefix('r')
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .map(Some)
        .ok_or_else(|| {
            invalid(format!(
                "`{}` is not a revision token; pass one a write or check returned (e.g. \"r42\")",
                shown(token)
            ))
        })
}

pub fn audience_to_proto(a: Audience) -> pb::Audience {
    match a {
        Audience::Admins => pb::Audience::Admins,
        Audience::AdminsAndManagers => pb::Audience::AdminsAndManagers,
        Audience::AdminsManagersAndSupervisors => pb::Audience::AdminsManagersAndSupervisors,
        Audience::Everyone => pb::Audience::Everyone,
    }
}

/// `None` for UNSPECIFIED (keep the current value).
pub fn audience_from_proto(field: &str, value: i32) -> Result<Option<Audience>> {
    Ok(match pb::Audience::try_from(value) {
        Ok(pb::Audience::Unspecified) => None,
        Ok(pb::Audience::Admins) => Some(Audience::Admins),
        Ok(pb::Audience::AdminsAndManagers) => Some(Audience::AdminsAndManagers),
        Ok(pb::Audience::AdminsManagersAndSupervisors) => {
            Some(Audience::AdminsManagersAndSupervisors)
        }
        Ok(pb::Audience::Everyone) => Some(Audience::Everyone),
        Err(_) => {
            return Err(invalid(format!(
                "`{field}` is not an Audience value: {value}"
            )))
        }
    })
}

pub fn grants_to_proto(g: ReadAccessGrants) -> pb::ReadAccessGrants {
    match g {
        ReadAccessGrants::Admins => pb::ReadAccessGrants::Admins,
        ReadAccessGrants::AdminsAndOwners => pb::ReadAccessGrants::AdminsAndOwners,
    }
}

pub fn grants_from_proto(value: i32) -> Result<Option<ReadAccessGrants>> {
    Ok(match pb::ReadAccessGrants::try_from(value) {
        Ok(pb::ReadAccessGrants::Unspecified) => None,
        Ok(pb::ReadAccessGrants::Admins) => Some(ReadAccessGrants::Admins),
        Ok(pb::ReadAccessGrants::AdminsAndOwners) => Some(ReadAccessGrants::AdminsAndOwners),
        Err(_) => {
            return Err(invalid(format!(
                "`read_access_grants` is not a ReadAccessGrants value: {value}"
            )))
        }
    })
}

/// The API form of an organisation's settings, and when they last changed (`None`: never).
pub fn settings_to_proto(
    org: OrgId,
    s: Settings,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> pb::PermissionSettings {
    pb::PermissionSettings {
        org_id: org.to_string(),
        view_mailbox_list: audience_to_proto(s.view_mailbox_list) as i32,
        modify_mailboxes: audience_to_proto(s.modify_mailboxes) as i32,
        invite: audience_to_proto(s.invite) as i32,
        update_time: at.map(mailroom_platform::wire::timestamp),
        read_access_grants: grants_to_proto(s.read_access_grants) as i32,
    }
}

/// The settings with every field the update specifies replaced.
pub fn merge_settings(current: Settings, update: &pb::PermissionSettings) -> Result<Settings> {
    Ok(Settings {
        view_mailbox_list: audience_from_proto("view_mailbox_list", update.view_mailbox_list)?
            .unwrap_or(current.view_mailbox_list),
        modify_mailboxes: audience_from_proto("modify_mailboxes", update.modify_mailboxes)?
            .unwrap_or(current.modify_mailboxes),
        invite: audience_from_proto("invite", update.invite)?.unwrap_or(current.invite),
        read_access_grants: grants_from_proto(update.read_access_grants)?
            .unwrap_or(current.read_access_grants),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationships_round_trip_through_the_api_form() {
        use mailroom_types::DepartmentId;
        let (org, user, department, mailbox) = (
            OrgId::new(),
            UserId::new(),
            DepartmentId::new(),
            MailboxId::new(),
        );
        for rel in [
            Relationship::Admin(user),
            Relationship::MailboxManager(user),
            Relationship::Inviter(user),
            Relationship::EveryoneInvites,
            Relationship::Head(department, user),
            Relationship::Parent(department, DepartmentId::new()),
            Relationship::Member(user, department),
            Relationship::Owner(mailbox, user),
            Relationship::Reader(mailbox, user),
        ] {
            let (back, named_org) = parse_relationship(&relationship_to_proto(org, rel)).unwrap();
            assert_eq!(back, rel);
            if matches!(
                rel,
                Relationship::Admin(_)
                    | Relationship::MailboxManager(_)
                    | Relationship::Inviter(_)
                    | Relationship::EveryoneInvites
            ) {
                assert_eq!(named_org, Some(org));
            }
        }
    }

    #[test]
    fn a_wrong_form_is_refused_with_the_forms_that_exist() {
        let mut rel = relationship_to_proto(
            OrgId::default(),
            Relationship::Reader(MailboxId::default(), UserId::default()),
        );
        rel.relation = "writer".into();
        let err = parse_relationship(&rel).unwrap_err().to_string();
        assert!(err.contains("mailbox#writer@user"), "{err}");
        assert!(err.contains("mailbox#reader@user"), "{err}");
    }

    #[test]
    fn revision_tokens_parse_or_say_what_they_should_be() {
        assert_eq!(parse_revision(Some(&revision_token(42))).unwrap(), Some(42));
        assert_eq!(parse_revision(None).unwrap(), None);
        let bad = pb::Revision { token: "42".into() };
        assert!(parse_revision(Some(&bad)).is_err());
        let negative = pb::Revision {
            token: "r-1".into(),
        };
        assert!(parse_revision(Some(&negative)).is_err());
    }
}
