//! The API's names for ids, relationships, permissions, roles and revisions, parsed into the
//! model once, with errors that say what a valid value looks like; and the model written back
//! in the API's and the events' forms.

use anyhow::Context as _;
use mailroom_aip::shown;
use mailroom_platform::proto::access::v1 as pb;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_types::{MailboxId, OrgId, Permission, UserId};
use uuid::Uuid;

use crate::error::{AccessError, Result};
use crate::graph::RoleGrant;
use crate::model::{Assignee, Builtin, Grants, Relationship, RoleDef, Scope};

const FORMS: &str = "org#admin@user, org#inviter@org#member, department#head@user, \
                     department#parent@department, user#member@department, mailbox#owner@user, \
                     mailbox#reader@user, role#assignee@user, role#assignee@department#member, \
                     role#assignee@department#all_members, role#assignee@org#head, \
                     role#assignee@org#everyone_else";

/// Why the relationships that stood for mailbox managers and inviters are refused.
pub const LEGACY_FORMS: &str = "mailbox managers and inviters are roles now: create a role and AssignRole it (mailroom ctl access roles …)";

/// The subject forms a role is assigned to.
const ASSIGNEE_FORMS: &str = "user:<id>, department:<id>#member, department:<id>#all_members, \
                              org:<id>#head, org:<id>#everyone_else";

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
            "unknown permission `{}`; known: mailbox.view, mailbox.modify, mailbox.sync, \
             mailbox.connect, mailbox.grant_read, mailbox.read_mail, org.invite, \
             org.register_users, org.manage_permissions",
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
        "org#mailbox_manager@user" | "org#inviter@user" => {
            return Err(AccessError::FailedPrecondition(LEGACY_FORMS.into()))
        }
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

/// The API form of a scope.
pub fn scope_to_proto(s: Scope) -> pb::Scope {
    match s {
        Scope::None => pb::Scope::None,
        Scope::Own => pb::Scope::Own,
        Scope::Subordinates => pb::Scope::Subordinates,
        Scope::Department => pb::Scope::Department,
        Scope::All => pb::Scope::All,
    }
}

/// A scope field; UNSPECIFIED is `None` (nobody's mailboxes).
pub fn scope_from_proto(field: &str, value: i32) -> Result<Scope> {
    Ok(match pb::Scope::try_from(value) {
        Ok(pb::Scope::Unspecified | pb::Scope::None) => Scope::None,
        Ok(pb::Scope::Own) => Scope::Own,
        Ok(pb::Scope::Subordinates) => Scope::Subordinates,
        Ok(pb::Scope::Department) => Scope::Department,
        Ok(pb::Scope::All) => Scope::All,
        Err(_) => {
            return Err(invalid(format!(
                "`{field}` is not a Scope value: {value}; use SCOPE_NONE, SCOPE_OWN, SCOPE_SUBORDINATES, SCOPE_DEPARTMENT or SCOPE_ALL"
            )))
        }
    })
}

pub fn permissions_to_proto(g: Grants) -> pb::RolePermissions {
    pb::RolePermissions {
        view_mailbox_list: scope_to_proto(g.view_mailbox_list) as i32,
        connect_mailboxes: scope_to_proto(g.connect_mailboxes) as i32,
        modify_mailboxes: scope_to_proto(g.modify_mailboxes) as i32,
        grant_read_access: scope_to_proto(g.grant_read_access) as i32,
        invite: g.invite,
        manage_permissions: g.manage_permissions,
    }
}

/// The grants a role's permissions name (`field` is where they are, for errors).
pub fn permissions_from_proto(field: &str, p: &pb::RolePermissions) -> Result<Grants> {
    Ok(Grants {
        view_mailbox_list: scope_from_proto(
            &format!("{field}.view_mailbox_list"),
            p.view_mailbox_list,
        )?,
        connect_mailboxes: scope_from_proto(
            &format!("{field}.connect_mailboxes"),
            p.connect_mailboxes,
        )?,
        modify_mailboxes: scope_from_proto(
            &format!("{field}.modify_mailboxes"),
            p.modify_mailboxes,
        )?,
        grant_read_access: scope_from_proto(
            &format!("{field}.grant_read_access"),
            p.grant_read_access,
        )?,
        invite: p.invite,
        manage_permissions: p.manage_permissions,
    })
}

pub fn role_kind(builtin: Option<Builtin>) -> pb::RoleKind {
    match builtin {
        Some(Builtin::Administrator) => pb::RoleKind::Administrator,
        Some(Builtin::Supervisor) => pb::RoleKind::Supervisor,
        Some(Builtin::Manager) => pb::RoleKind::Manager,
        None => pb::RoleKind::Custom,
    }
}

/// What the API shows of a role besides its definition.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoleExtras {
    pub create_time: Option<chrono::DateTime<chrono::Utc>>,
    pub update_time: Option<chrono::DateTime<chrono::Utc>>,
    pub assignment_count: i64,
    /// The revision of the write that answered with it.
    pub written_at: Option<i64>,
}

/// The API form of a role of `org`; its etag is its version.
pub fn role_to_proto(org: OrgId, role: &RoleDef, extras: RoleExtras) -> pb::Role {
    pb::Role {
        id: role.id.to_string(),
        org_id: org.to_string(),
        display_name: role.name.clone(),
        kind: role_kind(role.builtin) as i32,
        hidden: role.hidden,
        permissions: Some(permissions_to_proto(role.grants)),
        assignment_count: i32::try_from(extras.assignment_count).unwrap_or(i32::MAX),
        create_time: extras.create_time.map(mailroom_platform::wire::timestamp),
        update_time: extras.update_time.map(mailroom_platform::wire::timestamp),
        etag: role.version.to_string(),
        written_at: extras.written_at.map(revision_token),
    }
}

/// The version an etag stands for; `None` when none was given.
pub fn parse_etag(etag: &str) -> Result<Option<i64>> {
    if etag.is_empty() {
        return Ok(None);
    }
    etag.parse::<i64>().map(Some).map_err(|_| {
        invalid(format!(
            "`etag` `{}` is not one this API gave out; pass the etag of the role as read (or none)",
            shown(etag)
        ))
    })
}

/// The API form of the role that granted a permission.
pub fn role_grant_to_proto(org: OrgId, grant: &RoleGrant, name: &str) -> pb::RoleGrant {
    pb::RoleGrant {
        role_id: grant.role.to_string(),
        role_display_name: name.to_owned(),
        scope: scope_to_proto(grant.scope) as i32,
        assignment: Some(relationship_to_proto(org, grant.assignment)),
    }
}

/// The subject a role is assigned to, and the organisation it names (for `org#…` forms).
pub fn parse_assignee(
    field: &str,
    subject: Option<&pb::SubjectRef>,
) -> Result<(Assignee, Option<OrgId>)> {
    let subject = subject
        .ok_or_else(|| invalid(format!("`{field}` is required; forms: {ASSIGNEE_FORMS}")))?;
    let object = subject.object.as_ref().ok_or_else(|| {
        invalid(format!(
            "`{field}.object` is required; forms: {ASSIGNEE_FORMS}"
        ))
    })?;
    let id = || parse_id::<Uuid>(&format!("{field}.object.id"), &object.id);
    Ok(match (object.r#type.as_str(), subject.relation.as_str()) {
        ("user", "") => (Assignee::User(id()?.into()), None),
        ("department", "member") => (Assignee::Members(id()?.into()), None),
        ("department", "all_members") => (Assignee::Tree(id()?.into()), None),
        ("org", "head") => (Assignee::Heads, Some(id()?.into())),
        ("org", "everyone_else") => (Assignee::EveryoneElse, Some(id()?.into())),
        (t, r) => {
            return Err(invalid(format!(
                "`{}{}{}` is not a subject a role is assigned to; forms: {ASSIGNEE_FORMS}",
                shown(t),
                if r.is_empty() { "" } else { "#" },
                shown(r)
            )))
        }
    })
}

/// The API form of the subject of an assignment in `org`.
pub fn assignee_to_proto(org: OrgId, role: mailroom_types::RoleId, a: Assignee) -> pb::SubjectRef {
    relationship_to_proto(org, Relationship::Assignee(role, a))
        .subject
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationships_round_trip_through_the_api_form() {
        use mailroom_types::DepartmentId;
        let (org, user, department, mailbox, role) = (
            OrgId::new(),
            UserId::new(),
            DepartmentId::new(),
            MailboxId::new(),
            mailroom_types::RoleId::new(),
        );
        for rel in [
            Relationship::Admin(user),
            Relationship::EveryoneInvites,
            Relationship::Head(department, user),
            Relationship::Parent(department, DepartmentId::new()),
            Relationship::Member(user, department),
            Relationship::Owner(mailbox, user),
            Relationship::Reader(mailbox, user),
            Relationship::Assignee(role, Assignee::User(user)),
            Relationship::Assignee(role, Assignee::Members(department)),
            Relationship::Assignee(role, Assignee::Tree(department)),
            Relationship::Assignee(role, Assignee::Heads),
            Relationship::Assignee(role, Assignee::EveryoneElse),
        ] {
            let (back, named_org) = parse_relationship(&relationship_to_proto(org, rel)).unwrap();
            assert_eq!(back, rel);
            if matches!(
                rel,
                Relationship::Admin(_)
                    | Relationship::EveryoneInvites
                    | Relationship::Assignee(_, Assignee::Heads | Assignee::EveryoneElse)
            ) {
                assert_eq!(named_org, Some(org));
            }
        }
    }

    #[test]
    fn the_legacy_forms_point_to_roles() {
        let mut rel = relationship_to_proto(OrgId::new(), Relationship::Admin(UserId::new()));
        for relation in ["mailbox_manager", "inviter"] {
            rel.relation = relation.into();
            let err = parse_relationship(&rel).unwrap_err();
            assert!(matches!(err, AccessError::FailedPrecondition(_)), "{err}");
            assert!(err.to_string().contains("AssignRole"), "{err}");
        }
    }

    #[test]
    fn assignees_round_trip_through_the_api_form() {
        let (org, role) = (OrgId::new(), mailroom_types::RoleId::new());
        for a in [
            Assignee::User(UserId::new()),
            Assignee::Members(mailroom_types::DepartmentId::new()),
            Assignee::Tree(mailroom_types::DepartmentId::new()),
            Assignee::Heads,
            Assignee::EveryoneElse,
        ] {
            let (back, named) =
                parse_assignee("subject", Some(&assignee_to_proto(org, role, a))).unwrap();
            assert_eq!(back, a);
            if matches!(a, Assignee::Heads | Assignee::EveryoneElse) {
                assert_eq!(named, Some(org));
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
