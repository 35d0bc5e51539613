//! The access operations behind the gRPC API, and who may call each.
//!
//! Reads (checks and lookups) are answered from the replica's memory; a caller that passes a
//! revision first waits for the replica to reach it. Writes take the changelog lock and bring
//! the replica up to the latest committed change inside that transaction, so who may write is
//! decided on exactly the state the write lands on (a just-revoked admin cannot grant through
//! a replica that has not heard yet, nor in the instant after it has), then go to PostgreSQL
//! through a [`Writer`], emit their event through the outbox in the same transaction, and
//! wait for this replica to apply them before answering, so the writer's next read here sees
//! them too. The [`Writer`] itself refuses what must hold whatever any replica believes: a
//! mailbox belongs to one organisation, and read access needs an owner first.
//!
//! Who may call: services (service tokens) may ask and write anything except what identity
//! owns. A user may ask about themselves; an org admin about anyone in the organisation.
//! Admins write delegations, inviters and read grants; an owner may share read access to their
//! own mailbox when the organisation lets owners do so; anyone may give up their own grant.

use std::sync::Arc;

use mailroom_platform::aip;
use mailroom_platform::auth::Principal;
use mailroom_platform::kafka::ACCESS_EVENTS;
use mailroom_platform::outbox::{self, EventActor};
use mailroom_platform::proto::access::v1 as pb;
use mailroom_platform::proto::events::v1 as ev;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{AccessError, Result};
use crate::graph::OrgGraph;
use crate::model::{Permission, ReadAccessGrants, Relationship, Settings};
use crate::replica::{Replica, State};
use crate::store::{self, Change, Kind, Writer};
use crate::wire::{self, Resource};

/// Everything the access operations need.
pub struct Access {
    pub(crate) pool: PgPool,
    pub(crate) replica: Arc<Replica>,
}

/// How many checks one CheckBulk may carry.
pub const MAX_BULK: usize = 1_000;

fn denied(msg: impl Into<String>) -> AccessError {
    AccessError::PermissionDenied(msg.into())
}

/// Whether the caller may ask about `subject` in `org`.
fn may_ask_about(principal: &Principal, state: &State, subject: Uuid, org: Uuid) -> Result<()> {
    match principal {
        Principal::Service { .. } => Ok(()),
        Principal::User {
            user_id, org_id, ..
        } => {
            if org_id.into_uuid() != org {
                return Err(AccessError::NotFound(format!(
                    "user `{subject}` was not found in your organisation"
                )));
            }
            if user_id.into_uuid() == subject
                || state
                    .org(org)
                    .is_some_and(|g| g.is_admin(user_id.into_uuid()))
            {
                Ok(())
            } else {
                Err(denied(
                    "you may ask only about your own permissions; org admins may ask about anyone in their organisation",
                ))
            }
        }
    }
}

/// Why `user` does not hold `permission`, for explanations.
fn denial_reason(
    graph: &OrgGraph,
    user: Uuid,
    permission: Permission,
    mailbox: Option<Uuid>,
) -> String {
    if !graph.is_active(user) {
        return "the user is not active (dismissed, or not yet joined)".into();
    }
    match mailbox {
        Some(m) if graph.owner_of(m).is_none() && permission != Permission::MailboxReadMail => {
            "the mailbox has no owner in the user's organisation".into()
        }
        Some(_) if permission == Permission::MailboxReadMail => {
            "reading mail takes ownership of the mailbox or a reader grant on it; admins and supervisors hold neither by position".into()
        }
        _ => "no relationship or organisation setting gives the user this permission".into(),
    }
}

impl Access {
    pub fn new(pool: PgPool, replica: Arc<Replica>) -> Self {
        Self { pool, replica }
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    async fn fresh_enough(&self, token: Option<&pb::Revision>) -> Result<()> {
        if let Some(revision) = wire::parse_revision(token)? {
            self.replica.wait_for(revision).await?;
        }
        Ok(())
    }

    pub async fn check(
        &self,
        principal: &Principal,
        req: pb::CheckRequest,
    ) -> Result<pb::CheckResponse> {
        self.fresh_enough(req.at_least_as_fresh_as.as_ref()).await?;
        let state = self.replica.read();
        check_one(principal, &state, &req)
    }

    pub async fn check_bulk(
        &self,
        principal: &Principal,
        req: pb::CheckBulkRequest,
    ) -> Result<pb::CheckBulkResponse> {
        if req.checks.len() > MAX_BULK {
            return Err(AccessError::InvalidArgument(format!(
                "at most {MAX_BULK} checks per call, not {}",
                req.checks.len()
            )));
        }
        // One wait, for the freshest revision any check asks for.
        let mut freshest = wire::parse_revision(req.at_least_as_fresh_as.as_ref())?;
        for (i, c) in req.checks.iter().enumerate() {
            let wanted = wire::parse_revision(c.at_least_as_fresh_as.as_ref())
                .map_err(|e| e.at(&format!("checks[{i}]")))?;
            freshest = freshest.max(wanted);
        }
        if let Some(revision) = freshest {
            self.replica.wait_for(revision).await?;
        }
        let state = self.replica.read();
        let results = req
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                check_one(principal, &state, c).map_err(|e| e.at(&format!("checks[{i}]")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(pb::CheckBulkResponse { results })
    }

    pub async fn lookup_resources(
        &self,
        principal: &Principal,
        req: pb::LookupResourcesRequest,
    ) -> Result<pb::LookupResourcesResponse> {
        let permission = wire::parse_permission(&req.permission)?;
        let subject = wire::parse_user_subject("subject", req.subject.as_ref())?;
        let expected = if permission.on_mailbox() {
            "mailbox"
        } else {
            "org"
        };
        if req.resource_type != expected {
            return Err(AccessError::InvalidArgument(format!(
                "`{}` is held on resources of type \"{expected}\"; set resource_type to it",
                permission.name()
            )));
        }
        let page_size = aip::page_size(req.page_size, 1_000, 50_000)? as usize;
        let query = format!("{subject}|{}|{expected}", permission.name());
        let after: Option<Uuid> = aip::decode_page_token(&query, &req.page_token)?;
        self.fresh_enough(req.at_least_as_fresh_as.as_ref()).await?;
        let (mut ids, revision) = {
            let state = self.replica.read();
            let revision = state.revision();
            match state.org_of_user(subject) {
                // A user caller learns nothing about users outside their organisation, known
                // or not; a service, or a user asking about themselves, gets an empty answer.
                None => {
                    if let Principal::User { user_id, .. } = principal {
                        if user_id.into_uuid() != subject {
                            return Err(AccessError::NotFound(format!(
                                "user `{subject}` was not found in your organisation"
                            )));
                        }
                    }
                    (Vec::new(), revision)
                }
                Some(org) => {
                    may_ask_about(principal, &state, subject, org)?;
                    let graph = state.org(org);
                    let ids = match graph {
                        None => Vec::new(),
                        Some(g) if permission.on_mailbox() => {
                            g.lookup_mailboxes(subject, permission)
                        }
                        Some(g) => {
                            if g.check(subject, permission, None)? {
                                vec![org]
                            } else {
                                Vec::new()
                            }
                        }
                    };
                    (ids, revision)
                }
            }
        };
        if let Some(after) = after {
            ids.retain(|id| *id > after);
        }
        let more = ids.len() > page_size;
        if more {
            ids.select_nth_unstable(page_size);
            ids.truncate(page_size);
        }
        ids.sort_unstable();
        let next_page_token = match (more, ids.last()) {
            (true, Some(last)) => aip::encode_page_token(&query, last),
            _ => String::new(),
        };
        Ok(pb::LookupResourcesResponse {
            resource_ids: ids.iter().map(Uuid::to_string).collect(),
            next_page_token,
            looked_up_at: Some(wire::revision_token(revision)),
        })
    }

    pub async fn lookup_subjects(
        &self,
        principal: &Principal,
        req: pb::LookupSubjectsRequest,
    ) -> Result<pb::LookupSubjectsResponse> {
        let permission = wire::parse_permission(&req.permission)?;
        let resource = wire::parse_resource(permission, req.resource.as_ref())?;
        if !req.subject_type.is_empty() && req.subject_type != "user" {
            return Err(AccessError::InvalidArgument(format!(
                "permissions are held by users; subject_type must be \"user\" or empty, not `{}`",
                req.subject_type
            )));
        }
        self.fresh_enough(req.at_least_as_fresh_as.as_ref()).await?;
        let state = self.replica.read();
        let org = match resource {
            Resource::Org(org) => Some(org),
            Resource::Mailbox(m) => state.org_of_mailbox(m),
        };
        let not_found = || match resource {
            Resource::Org(o) => AccessError::NotFound(format!("organisation `{o}` was not found")),
            Resource::Mailbox(m) => AccessError::mailbox_not_found(m),
        };
        if let Principal::User {
            user_id, org_id, ..
        } = principal
        {
            if org != Some(org_id.into_uuid()) {
                return Err(not_found());
            }
            let graph = state.org(org_id.into_uuid()).ok_or_else(not_found)?;
            let allowed = graph.is_admin(user_id.into_uuid())
                || match resource {
                    Resource::Mailbox(m) => {
                        graph.check(user_id.into_uuid(), Permission::MailboxView, Some(m))?
                    }
                    Resource::Org(_) => false,
                };
            if !allowed {
                return Err(denied(match resource {
                    Resource::Mailbox(_) => {
                        "you may see who has access to a mailbox only if you may view it"
                    }
                    Resource::Org(_) => {
                        "only org admins may list who holds an organisation permission"
                    }
                }));
            }
        }
        let mut ids = match org.and_then(|o| state.org(o)) {
            None => Vec::new(),
            Some(graph) => match resource {
                Resource::Mailbox(m) => graph.lookup_users(m, permission),
                Resource::Org(_) => graph.lookup_org_users(permission),
            },
        };
        ids.sort_unstable();
        Ok(pb::LookupSubjectsResponse {
            subject_ids: ids.iter().map(Uuid::to_string).collect(),
            looked_up_at: Some(wire::revision_token(state.revision())),
        })
    }

    /// Where a mailbox permission reaches for the subject. The subject's own organisation
    /// only: a user caller asking about someone outside it, known or not, is told that user
    /// was not found there.
    pub async fn lookup_mailbox_scope(
        &self,
        principal: &Principal,
        req: pb::LookupMailboxScopeRequest,
    ) -> Result<pb::LookupMailboxScopeResponse> {
        let permission = wire::parse_permission(&req.permission)?;
        if !permission.on_mailbox() {
            return Err(AccessError::InvalidArgument(format!(
                "`{}` is not a mailbox permission; ask for mailbox.view, mailbox.modify, mailbox.sync or mailbox.read_mail",
                permission.name()
            )));
        }
        let subject = wire::parse_user_subject("subject", req.subject.as_ref())?;
        let only: Option<std::collections::HashSet<Uuid>> = if req.only_owner_user_ids.is_empty() {
            None
        } else {
            Some(
                req.only_owner_user_ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        Uuid::parse_str(id).map_err(|_| {
                            AccessError::InvalidArgument(format!(
                                "only_owner_user_ids[{i}] is not a user id: {id:?}"
                            ))
                        })
                    })
                    .collect::<Result<_>>()?,
            )
        };
        self.fresh_enough(req.at_least_as_fresh_as.as_ref()).await?;
        let state = self.replica.read();
        let revision = Some(wire::revision_token(state.revision()));
        let Some(org) = state.org_of_user(subject) else {
            if let Principal::User { user_id, .. } = principal {
                if user_id.into_uuid() != subject {
                    return Err(AccessError::NotFound(format!(
                        "user `{subject}` was not found in your organisation"
                    )));
                }
            }
            return Ok(pb::LookupMailboxScopeResponse {
                looked_up_at: revision,
                ..Default::default()
            });
        };
        may_ask_about(principal, &state, subject, org)?;
        let scope = state
            .org(org)
            .map(|g| g.mailbox_scope(subject, permission))
            .unwrap_or_default();
        let mut owners: Vec<Uuid> = match &only {
            Some(only) => scope.owners.intersection(only).copied().collect(),
            None => scope.owners.into_iter().collect(),
        };
        owners.sort_unstable();
        let mut mailboxes: Vec<Uuid> = scope.mailboxes.into_iter().collect();
        mailboxes.sort_unstable();
        Ok(pb::LookupMailboxScopeResponse {
            org_id: org.to_string(),
            whole_organization: scope.whole_organization,
            owner_user_ids: owners.iter().map(Uuid::to_string).collect(),
            mailbox_ids: mailboxes.iter().map(Uuid::to_string).collect(),
            looked_up_at: revision,
        })
    }

    /// Parses the relationships of a write or delete, works out their organisation and
    /// checks the caller may change each.
    fn authorize_changes(
        &self,
        principal: &Principal,
        rels: &[pb::Relationship],
        deleting: bool,
    ) -> Result<(Uuid, Vec<Relationship>)> {
        if rels.is_empty() {
            return Err(AccessError::InvalidArgument(
                "name at least one relationship".into(),
            ));
        }
        if rels.len() > MAX_BULK {
            return Err(AccessError::InvalidArgument(format!(
                "at most {MAX_BULK} relationships per call, not {}",
                rels.len()
            )));
        }
        let state = self.replica.read();
        let mut org: Option<Uuid> = match principal {
            Principal::User { org_id, .. } => Some(org_id.into_uuid()),
            Principal::Service { .. } => None,
        };
        let mut parsed = Vec::with_capacity(rels.len());
        for (i, rel) in rels.iter().enumerate() {
            let (rel, named_org) = wire::parse_relationship(rel)
                .map_err(|e| AccessError::InvalidArgument(format!("relationships[{i}]: {e}")))?;
            if let Some(kind) = store::Row::of(Uuid::nil(), rel).map(|r| r.kind) {
                if kind.from_identity() {
                    return Err(AccessError::FailedPrecondition(format!(
                        "relationships[{i}]: `{}` comes from identity; change it there (SetAdmin, UpdateDepartment, UpdateUser) and access follows its events",
                        kind.as_str()
                    )));
                }
            }
            let user = match rel {
                Relationship::MailboxManager(u) | Relationship::Inviter(u) => Some(u),
                Relationship::Owner(_, u) | Relationship::Reader(_, u) => Some(u),
                _ => None,
            };
            let rel_org = match (named_org, user) {
                (Some(o), _) => Some(o),
                (None, Some(u)) => Some(state.org_of_user(u).ok_or_else(|| match principal {
                    // A user learns nothing of users outside their organisation.
                    Principal::User { .. } => AccessError::NotFound(format!(
                        "relationships[{i}]: user `{u}` was not found in your organisation (one added a moment ago reaches access control shortly)"
                    )),
                    // A service may be writing right after identity created the user.
                    Principal::Service { .. } => AccessError::Unavailable(format!(
                        "relationships[{i}]: user `{u}` is not known to access control yet (it learns users from identity's events); retry in a moment"
                    )),
                })?),
                (None, None) => None,
            };
            if let (Some(a), Some(b)) = (org, rel_org) {
                if a != b {
                    return Err(match principal {
                        // Said exactly as of a user or organisation that does not exist.
                        Principal::User { .. } => AccessError::NotFound(match (named_org, user) {
                            (Some(o), _) if o != a => format!(
                                "relationships[{i}]: organisation `{o}` was not found"
                            ),
                            (_, Some(u)) => format!(
                                "relationships[{i}]: user `{u}` was not found in your organisation (one added a moment ago reaches access control shortly)"
                            ),
                            _ => format!("relationships[{i}]: it names an organisation that was not found"),
                        }),
                        Principal::Service { .. } => AccessError::InvalidArgument(format!(
                            "relationships[{i}]: one call changes one organisation; this one names two"
                        )),
                    });
                }
            }
            org = org.or(rel_org);
            if let Some(u) = user {
                if state.org_of_user(u) != org {
                    return Err(AccessError::FailedPrecondition(format!(
                        "relationships[{i}]: user `{u}` is not a user of this organisation"
                    )));
                }
            }
            // Deleting in this organisation touches only its own rows, so another
            // organisation's mailbox is, like an unknown one, simply not there to delete.
            if let (Relationship::Owner(m, _) | Relationship::Reader(m, _), false) = (rel, deleting)
            {
                if let Some(mailbox_org) = state.org_of_mailbox(m) {
                    if Some(mailbox_org) != org {
                        return Err(
                            AccessError::mailbox_not_found(m).at(&format!("relationships[{i}]"))
                        );
                    }
                }
            }
            parsed.push(rel);
        }
        let org = org.ok_or_else(|| {
            AccessError::InvalidArgument("the relationships do not name an organisation".into())
        })?;
        if let Principal::User { user_id, .. } = principal {
            let default_graph = OrgGraph::new();
            let graph = state.org(org).unwrap_or(&default_graph);
            let admin = graph.is_admin(user_id.into_uuid());
            for (i, rel) in parsed.iter().enumerate() {
                let allowed = match rel {
                    Relationship::Owner(..) => {
                        return Err(denied(format!(
                            "relationships[{i}]: mailbox ownership is set by the mailbox registry when a mailbox is connected"
                        )))
                    }
                    Relationship::MailboxManager(_)
                    | Relationship::Inviter(_)
                    | Relationship::EveryoneInvites => admin,
                    Relationship::Reader(m, reader) => {
                        let owner = graph.owner_of(*m);
                        let own_grant = deleting && *reader == user_id.into_uuid();
                        if owner.is_none() && !admin && !own_grant {
                            return Err(AccessError::mailbox_not_found(m)
                                .at(&format!("relationships[{i}]")));
                        }
                        admin
                            || (owner == Some(user_id.into_uuid())
                                && graph.is_active(user_id.into_uuid())
                                && graph.settings().read_access_grants
                                    == ReadAccessGrants::AdminsAndOwners)
                            || (own_grant && graph.is_active(user_id.into_uuid()))
                    }
                    _ => false,
                };
                if !allowed {
                    return Err(denied(format!(
                        "relationships[{i}]: only an org admin may change this{}",
                        if matches!(rel, Relationship::Reader(..)) {
                            " (owners may share read access to their own mailbox when the organisation lets them)"
                        } else {
                            ""
                        }
                    )));
                }
            }
        }
        Ok((org, parsed))
    }

    pub async fn write_relationships(
        &self,
        principal: &Principal,
        req: pb::WriteRelationshipsRequest,
    ) -> Result<pb::WriteRelationshipsResponse> {
        let revision = self.change(principal, &req.relationships, false).await?;
        Ok(pb::WriteRelationshipsResponse {
            written_at: Some(wire::revision_token(revision)),
        })
    }

    pub async fn delete_relationships(
        &self,
        principal: &Principal,
        req: pb::DeleteRelationshipsRequest,
    ) -> Result<pb::DeleteRelationshipsResponse> {
        let revision = self.change(principal, &req.relationships, true).await?;
        Ok(pb::DeleteRelationshipsResponse {
            deleted_at: Some(wire::revision_token(revision)),
        })
    }

    /// Opens a transaction holding the changelog lock and brings this replica up to date
    /// through it: whatever is authorised next is decided on the latest committed state, and
    /// nothing can commit before this transaction does.
    async fn locked_and_current(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        // READ COMMITTED whatever the database's default: each read after the lock must see
        // every change committed before it, which a snapshot taken earlier would not.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *tx)
            .await?;
        store::lock_changelog(&mut tx).await?;
        self.replica.catch_up_in(&mut tx).await?;
        Ok(tx)
    }

    /// Authorises and makes one write or delete call.
    async fn change(
        &self,
        principal: &Principal,
        requested: &[pb::Relationship],
        deleting: bool,
    ) -> Result<i64> {
        // Refused on what this replica knows, a call never holds up other writers; allowed,
        // it is decided again under the lock on the latest state.
        self.authorize_changes(principal, requested, deleting)?;
        let mut tx = self.locked_and_current().await?;
        let (org, rels) = self.authorize_changes(principal, requested, deleting)?;
        let mut w = Writer::begin(&mut tx, org).await?;
        for (i, rel) in rels.iter().enumerate() {
            let done = if deleting {
                w.delete(*rel).await
            } else {
                w.write(*rel).await
            };
            done.map_err(|e| e.at(&format!("relationships[{i}]")))?;
        }
        let changes = w.changes().to_vec();
        let revision = w.finish().await?;
        emit(&mut tx, principal, org, &changes, revision).await?;
        tx.commit().await?;
        self.settle(revision).await;
        Ok(revision)
    }

    /// Waits for this replica to apply a write it just made, so the writer reads it here.
    async fn settle(&self, revision: i64) {
        if let Err(err) = self.replica.wait_for(revision).await {
            tracing::warn!(error = %err, revision, "a committed write is not applied here yet");
        }
    }

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
        let optional_id = |field: &str, v: &str| -> Result<Option<Uuid>> {
            if v.is_empty() {
                Ok(None)
            } else {
                wire::parse_id(field, v).map(Some)
            }
        };
        let object_id = optional_id("filter.resource.id", &resource.id)?;
        let subject_id = optional_id("filter.subject.object.id", &subject_object.id)?;
        let matches = |field: &str, value: &str| field.is_empty() || field == value;
        let kinds: Vec<&'static str> = KIND_FORMS
            .iter()
            .filter(|(_, r, rel, s)| {
                matches(&resource.r#type, r)
                    && matches(&filter.relation, rel)
                    && matches(&subject_object.r#type, s)
                    && subject.relation.is_empty()
            })
            .map(|(k, ..)| k.as_str())
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
        let after: Option<(String, Uuid, Uuid)> = aip::decode_page_token(&query, &req.page_token)?;
        let (after_kind, after_object, after_subject) = match &after {
            Some((k, o, s)) => (Some(k.clone()), Some(*o), Some(*s)),
            None => (None, None, None),
        };
        // The invite setting, seen as a relationship (`org#inviter@org#member`), heads the
        // first page when it holds and matches the filter; it takes one of the page's places.
        let everyone_leads = after.is_none()
            && (subject.relation.is_empty() || subject.relation == "member")
            && matches(&resource.r#type, "org")
            && matches(&filter.relation, "inviter")
            && matches(&subject_object.r#type, "org")
            && object_id.is_none_or(|o| o == org)
            && subject_id.is_none_or(|s| s == org)
            && {
                let state = self.replica.read();
                state
                    .org(org)
                    .is_some_and(|g| g.settings().invite == crate::model::Audience::Everyone)
            };
        let room = page_size - i64::from(everyone_leads);
        let rows: Vec<(String, Uuid, Uuid)> = sqlx::query_as(
            "SELECT kind, object_id, subject_id FROM relationships \
             WHERE org_id = $1 AND kind = ANY($2) \
               AND ($3::uuid IS NULL OR object_id = $3) AND ($4::uuid IS NULL OR subject_id = $4) \
               AND ($5::text IS NULL OR (kind, object_id, subject_id) > ($5, $6, $7)) \
             ORDER BY kind, object_id, subject_id LIMIT $8",
        )
        .bind(org)
        .bind(&kinds)
        .bind(object_id)
        .bind(subject_id)
        .bind(after_kind)
        .bind(after_object)
        .bind(after_subject)
        .bind(room + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() as i64 > room;
        let mut relationships: Vec<pb::Relationship> = Vec::new();
        // A page that holds only the setting continues from before every stored row.
        let mut last = None;
        if everyone_leads {
            relationships.push(wire::relationship_to_proto(
                org,
                Relationship::EveryoneInvites,
            ));
            last = Some((String::new(), Uuid::nil(), Uuid::nil()));
        }
        for (kind, object, subject) in rows.into_iter().take(room as usize) {
            let Some(k) = Kind::parse(&kind) else {
                continue;
            };
            let rel = store::Row {
                kind: k,
                object,
                subject,
            }
            .relationship();
            relationships.push(wire::relationship_to_proto(org, rel));
            last = Some((kind, object, subject));
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

    /// The organisation of a call that names one optionally: a user's own (another is not
    /// found), or the one a service names.
    fn org_of_call(&self, principal: &Principal, requested: &str) -> Result<Uuid> {
        match principal {
            Principal::User { org_id, .. } => {
                if !requested.is_empty() && requested != org_id.to_string() {
                    return Err(AccessError::NotFound(format!(
                        "organisation `{requested}` was not found"
                    )));
                }
                Ok(org_id.into_uuid())
            }
            Principal::Service { .. } => {
                if requested.is_empty() {
                    return Err(AccessError::InvalidArgument(
                        "`org_id` is required when calling with a service token".into(),
                    ));
                }
                wire::parse_id("org_id", requested)
            }
        }
    }

    fn org_for_admin_call(&self, principal: &Principal, requested: &str) -> Result<Uuid> {
        let org = self.org_of_call(principal, requested)?;
        if let Principal::User { user_id, .. } = principal {
            let state = self.replica.read();
            if !state
                .org(org)
                .is_some_and(|g| g.is_admin(user_id.into_uuid()))
            {
                return Err(denied("only an org admin may do this"));
            }
        }
        Ok(org)
    }

    pub async fn get_settings(
        &self,
        principal: &Principal,
        req: pb::GetPermissionSettingsRequest,
    ) -> Result<pb::PermissionSettings> {
        let org = self.org_of_call(principal, &req.org_id)?;
        let mut conn = self.pool.acquire().await?;
        let (settings, at) = store::settings(&mut conn, org).await?;
        Ok(settings_to_proto(org, settings, at))
    }

    pub async fn update_settings(
        &self,
        principal: &Principal,
        req: pb::UpdatePermissionSettingsRequest,
    ) -> Result<pb::PermissionSettings> {
        let update = req
            .settings
            .ok_or_else(|| AccessError::InvalidArgument("`settings` is required".into()))?;
        self.org_for_admin_call(principal, &update.org_id)?;
        let mut tx = self.locked_and_current().await?;
        let org = self.org_for_admin_call(principal, &update.org_id)?;
        let mut w = Writer::begin(&mut tx, org).await?;
        let (current, _) = store::settings(w.conn(), org).await?;
        let new = wire::merge_settings(current, &update)?;
        w.set_settings(new).await?;
        let changes = w.changes().to_vec();
        let revision = w.finish().await?;
        emit(&mut tx, principal, org, &changes, revision).await?;
        let (settings, at) = store::settings(&mut tx, org).await?;
        tx.commit().await?;
        self.settle(revision).await;
        Ok(settings_to_proto(org, settings, at))
    }
}

/// Resource type, relation and subject type of each stored kind, as the API names them.
const KIND_FORMS: [(Kind, &str, &str, &str); 8] = [
    (Kind::Admin, "org", "admin", "user"),
    (Kind::MailboxManager, "org", "mailbox_manager", "user"),
    (Kind::Inviter, "org", "inviter", "user"),
    (Kind::Head, "department", "head", "user"),
    (Kind::Parent, "department", "parent", "department"),
    (Kind::Member, "user", "member", "department"),
    (Kind::Owner, "mailbox", "owner", "user"),
    (Kind::Reader, "mailbox", "reader", "user"),
];

fn settings_to_proto(
    org: Uuid,
    s: Settings,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> pb::PermissionSettings {
    pb::PermissionSettings {
        org_id: org.to_string(),
        view_mailbox_list: wire::audience_to_proto(s.view_mailbox_list) as i32,
        modify_mailboxes: wire::audience_to_proto(s.modify_mailboxes) as i32,
        invite: wire::audience_to_proto(s.invite) as i32,
        update_time: at.map(|at| prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: at.timestamp_subsec_nanos() as i32,
        }),
        read_access_grants: wire::grants_to_proto(s.read_access_grants) as i32,
    }
}

fn check_one(
    principal: &Principal,
    state: &State,
    req: &pb::CheckRequest,
) -> Result<pb::CheckResponse> {
    let permission = wire::parse_permission(&req.permission)?;
    let subject = wire::parse_user_subject("subject", req.subject.as_ref())?;
    let resource = wire::parse_resource(permission, req.resource.as_ref())?;
    let checked_at = Some(wire::revision_token(state.revision()));
    let no = |reason: String| pb::CheckResponse {
        allowed: false,
        path: Vec::new(),
        checked_at: checked_at.clone(),
        reason: if req.explain { reason } else { String::new() },
    };
    let Some(org) = state.org_of_user(subject) else {
        if let Principal::User { user_id, .. } = principal {
            if user_id.into_uuid() != subject {
                return Err(AccessError::NotFound(format!(
                    "user `{subject}` was not found in your organisation"
                )));
            }
        }
        return Ok(no(
            "access control has not heard of this user (it learns users from identity's events)"
                .into(),
        ));
    };
    may_ask_about(principal, state, subject, org)?;
    let Some(graph) = state.org(org) else {
        return Ok(no("the user's organisation has no relationships yet".into()));
    };
    let mailbox = match resource {
        Resource::Mailbox(m) if state.org_of_mailbox(m) != Some(org) => {
            return Ok(no(
                "the mailbox is not one of the user's organisation's mailboxes".into(),
            ));
        }
        Resource::Mailbox(m) => Some(m),
        Resource::Org(o) if o != org => {
            return Ok(no("the user belongs to another organisation".into()));
        }
        Resource::Org(_) => None,
    };
    if !req.explain {
        return Ok(pb::CheckResponse {
            allowed: graph.check(subject, permission, mailbox)?,
            path: Vec::new(),
            checked_at,
            reason: String::new(),
        });
    }
    Ok(match graph.explain(subject, permission, mailbox)? {
        Some(why) => pb::CheckResponse {
            allowed: true,
            path: why
                .path
                .into_iter()
                .map(|r| wire::relationship_to_proto(org, r))
                .collect(),
            checked_at,
            reason: why.reason.into(),
        },
        None => no(denial_reason(graph, subject, permission, mailbox)),
    })
}

fn actor(principal: &Principal) -> EventActor {
    match principal {
        Principal::User { user_id, .. } => EventActor::User(user_id.into_uuid()),
        Principal::Service { name } => EventActor::Service(name.clone()),
    }
}

/// Writes the events of an API change into the outbox: what was written, what was deleted,
/// and the settings if they changed.
async fn emit(
    conn: &mut sqlx::PgConnection,
    principal: &Principal,
    org: Uuid,
    changes: &[Change],
    revision: i64,
) -> Result<()> {
    use ev::envelope::Payload;
    let token = wire::revision_token(revision).token;
    let record = |row: &store::Row| {
        wire::relationship_record(&wire::relationship_to_proto(org, row.relationship()))
    };
    let written: Vec<_> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Write(row) => Some(record(row)),
            _ => None,
        })
        .collect();
    let deleted: Vec<_> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Delete(row) => Some(record(row)),
            _ => None,
        })
        .collect();
    let settings = changes.iter().rev().find_map(|c| match c {
        Change::Settings(s) => Some(*s),
        _ => None,
    });
    let mut payloads = Vec::new();
    if !deleted.is_empty() {
        payloads.push(Payload::RelationshipsDeleted(ev::RelationshipsDeleted {
            relationships: deleted,
            revision: token.clone(),
        }));
    }
    if !written.is_empty() {
        payloads.push(Payload::RelationshipsWritten(ev::RelationshipsWritten {
            relationships: written,
            revision: token.clone(),
        }));
    }
    if let Some(s) = settings {
        payloads.push(Payload::PermissionSettingsChanged(
            ev::PermissionSettingsChanged {
                view_mailbox_list: wire::audience_to_proto(s.view_mailbox_list)
                    .as_str_name()
                    .into(),
                modify_mailboxes: wire::audience_to_proto(s.modify_mailboxes)
                    .as_str_name()
                    .into(),
                invite: wire::audience_to_proto(s.invite).as_str_name().into(),
                read_access_grants: wire::grants_to_proto(s.read_access_grants)
                    .as_str_name()
                    .into(),
                revision: token.clone(),
            },
        ));
    }
    for payload in payloads {
        outbox::enqueue(
            conn,
            ACCESS_EVENTS,
            org,
            &org.to_string(),
            &actor(principal),
            payload,
        )
        .await?;
    }
    Ok(())
}
