//! Writing and deleting relationships through the API: read grants (and, for services,
//! what is not identity's). Role assignments go through AssignRole/UnassignRole
//! ([`crate::roles`]); the mailbox-manager and inviter relationships are roles now and refused.
//!
//! A call is authorised twice: first on what this replica knows, so a refused call never holds
//! up other writers; then, allowed, again under the changelog lock on the latest state
//! (`Access::locked_and_current`), so a just-revoked admin cannot grant through a replica
//! that has not heard yet, nor in the instant after it has. The change goes to PostgreSQL
//! through a [`Writer`] (which refuses what must hold whatever any replica believes: a mailbox
//! belongs to one organisation, and read access needs an owner first), emits its events
//! through the outbox in the same transaction, and is applied here before the call answers.
//!
//! Who may change what: services anything but what identity owns and role assignments; a
//! reader grant on a mailbox whoever holds `mailbox.grant_read` on it (a role whose
//! grant-read scope reaches its owner), never to themselves unless an org admin; anyone may
//! give up their own grant; org admins identity's "everyone may invite".

use mailroom_platform::auth::Principal;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::access::v1 as pb;
use mailroom_types::{OrgId, Permission, UserId};

use crate::error::{AccessError, Result};
use crate::events;
use crate::graph::OrgGraph;
use crate::model::Relationship;
use crate::replica::State;
use crate::service::{denied, Access, MAX_BULK};
use crate::store::{Kind, Writer};
use crate::wire;

impl Access {
    /// Adds the relationships (those already there change nothing).
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

    /// Removes the relationships (those not there change nothing).
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
        events::emit(&mut tx, &EventActor::of(principal), org, &changes, revision).await?;
        tx.commit().await?;
        self.settle(revision).await;
        Ok(revision)
    }

    /// Parses the relationships of a write or delete, works out their organisation and
    /// checks the caller may change each.
    fn authorize_changes(
        &self,
        principal: &Principal,
        rels: &[pb::Relationship],
        deleting: bool,
    ) -> Result<(OrgId, Vec<Relationship>)> {
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
        let (org, parsed) = parse_changes(principal, &state, rels, deleting)?;
        if let Principal::User { user_id, .. } = principal {
            let default_graph = OrgGraph::new();
            let graph = state.org(org).unwrap_or(&default_graph);
            user_may_change(*user_id, graph, &parsed, deleting)?;
        }
        Ok((org, parsed))
    }
}

/// The relationships of a call, and the one organisation they are in: a user's own, or the
/// one they name (an org relationship) or their users belong to. Refuses what identity owns,
/// users and mailboxes of another organisation, and a call that spans two.
fn parse_changes(
    principal: &Principal,
    state: &State,
    rels: &[pb::Relationship],
    deleting: bool,
) -> Result<(OrgId, Vec<Relationship>)> {
    let mut org: Option<OrgId> = match principal {
        Principal::User { org_id, .. } => Some(*org_id),
        Principal::Service { .. } => None,
    };
    let mut parsed = Vec::with_capacity(rels.len());
    for (i, rel) in rels.iter().enumerate() {
        let (rel, named_org) =
            wire::parse_relationship(rel).map_err(|e| e.at(&format!("relationships[{i}]")))?;
        if let Relationship::Assignee(..) = rel {
            return Err(AccessError::FailedPrecondition(format!(
                "relationships[{i}]: role assignments are made with AssignRole and removed with UnassignRole (mailroom ctl access roles assign|unassign)"
            )));
        }
        let kind = Kind::of(rel);
        if kind.from_identity() {
            return Err(AccessError::FailedPrecondition(format!(
                "relationships[{i}]: `{}` comes from identity; change it there (SetAdmin, UpdateDepartment, UpdateUser, the organisation's \"everyone may invite\") and access follows its events",
                kind.as_str()
            )));
        }
        let user: Option<UserId> = match rel {
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
        if let (Relationship::Owner(m, _) | Relationship::Reader(m, _), false) = (rel, deleting) {
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
    Ok((org, parsed))
}

/// Whether `user` (a user caller) may make each change in `graph`, their organisation's.
fn user_may_change(
    user: UserId,
    graph: &OrgGraph,
    rels: &[Relationship],
    deleting: bool,
) -> Result<()> {
    let admin = graph.is_admin(user);
    for (i, rel) in rels.iter().enumerate() {
        let at = format!("relationships[{i}]");
        match rel {
            Relationship::Owner(..) => {
                return Err(denied(format!(
                    "{at}: mailbox ownership is set by the mailbox registry when a mailbox is connected"
                )))
            }
            Relationship::EveryoneInvites if admin => {}
            Relationship::Reader(m, reader) => {
                let own_grant = *reader == user;
                if deleting && own_grant && graph.is_active(user) {
                    // Giving up one's own grant is always allowed.
                    continue;
                }
                if graph.owner_of(*m).is_none() {
                    // An admin may still clear a grant left on a mailbox without an owner.
                    if admin && deleting {
                        continue;
                    }
                    return Err(AccessError::mailbox_not_found(m).at(&at));
                }
                if !graph.check(user, Permission::MailboxGrantRead, Some(*m))? {
                    return Err(denied(format!(
                        "{at}: your roles do not let you {} read access to this mailbox (a role's \"grant read access\" must reach its owner); ask an org admin",
                        if deleting { "take away" } else { "give" }
                    )));
                }
                if own_grant && !admin && !deleting {
                    return Err(denied(format!(
                        "{at}: you may not grant yourself read access to a mailbox; ask its owner or someone else whose role may grant read access (org admins may grant themselves)"
                    )));
                }
            }
            _ => {
                return Err(denied(format!(
                    "{at}: only an org admin may change this"
                )))
            }
        }
    }
    Ok(())
}
