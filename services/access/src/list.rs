//! The stored relationships of an organisation, for its admins (and services) only — a
//! configurer of access asks about the people within their reach instead (Check,
//! ListRoleAssignments by person) — role assignments and identity's "everyone may invite"
//! included: filtered by
//! resource, relation and subject as the API names them, in (kind, object, subject) order,
//! a keyset page at a time. Read from PostgreSQL, not the replica, so a page is exact.

use mailroom_aip as aip;
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::access::v1 as pb;
use uuid::Uuid;

use crate::error::Result;
use crate::service::Access;
use crate::store::{self, Kind, ListPosition};
use crate::wire;

/// Resource type, relation, subject type and subject relation of each stored kind, as the API
/// names them.
const KIND_FORMS: [(Kind, &str, &str, &str, &str); 12] = [
    (Kind::Admin, "org", "admin", "user", ""),
    (Kind::EveryoneInvites, "org", "inviter", "org", "member"),
    (Kind::Head, "department", "head", "user", ""),
    (Kind::Parent, "department", "parent", "department", ""),
    (Kind::Member, "user", "member", "department", ""),
    (Kind::Owner, "mailbox", "owner", "user", ""),
    (Kind::Reader, "mailbox", "reader", "user", ""),
    (Kind::Assignee, "role", "assignee", "user", ""),
    (
        Kind::AssigneeMembers,
        "role",
        "assignee",
        "department",
        "member",
    ),
    (
        Kind::AssigneeTree,
        "role",
        "assignee",
        "department",
        "all_members",
    ),
    (Kind::AssigneeHeads, "role", "assignee", "org", "head"),
    (
        Kind::AssigneeEveryoneElse,
        "role",
        "assignee",
        "org",
        "everyone_else",
    ),
];

impl Access {
    /// A page of the organisation's relationships that match the filter.
    pub async fn list_relationships(
        &self,
        principal: &Principal,
        req: pb::ListRelationshipsRequest,
    ) -> Result<pb::ListRelationshipsResponse> {
        let org = self.org_for_admin_call(principal, &req.org_id)?;
        let filter = req.filter.unwrap_or_default();
        let resource = filter.resource.unwrap_or_default();
        let subject = filter.subject.unwrap_or_default();
        let subject_object = subject.object.unwrap_or_default();
        // Ids of whatever kind the filter's types name: compared with the rows' own.
        let object_id: Option<Uuid> = wire::parse_optional_id("filter.resource.id", &resource.id)?;
        let subject_id: Option<Uuid> =
            wire::parse_optional_id("filter.subject.object.id", &subject_object.id)?;
        let matches = |field: &str, value: &str| field.is_empty() || field == value;
        let kinds: Vec<Kind> = KIND_FORMS
            .iter()
            .filter(|(_, r, rel, s, s_rel)| {
                matches(&resource.r#type, r)
                    && matches(&filter.relation, rel)
                    && matches(&subject_object.r#type, s)
                    && matches(&subject.relation, s_rel)
            })
            .map(|(k, ..)| *k)
            .collect();
        let page_size = aip::page_size(req.page_size, 100, 1_000)?;
        let query = format!(
            "{org}|{}|{}|{}|{}|{}|{}",
            resource.r#type,
            resource.id,
            filter.relation,
            subject_object.r#type,
            subject_object.id,
            subject.relation
        );
        let after: Option<ListPosition> = aip::decode_page_token(&query, &req.page_token)?;
        let room = page_size;
        let rows = store::relationship_page(
            &mut *self.pool.acquire().await?,
            org,
            &kinds,
            object_id,
            subject_id,
            after.as_ref(),
            room + 1,
        )
        .await?;
        let more = rows.len() as i64 > room;
        let mut relationships: Vec<pb::Relationship> = Vec::new();
        let mut last: Option<ListPosition> = None;
        for row in rows.into_iter().take(room as usize) {
            relationships.push(wire::relationship_to_proto(org, row.relationship()));
            last = Some((row.kind.as_str().to_owned(), row.object, row.subject));
        }
        let next_page_token = match (more, last) {
            (true, Some(last)) => aip::encode_page_token(&query, &last),
            _ => String::new(),
        };
        Ok(pb::ListRelationshipsResponse {
            relationships,
            next_page_token,
        })
    }
}
