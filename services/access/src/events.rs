//! Access control's events, out and in.
//!
//! Out: [`emit`] writes what an API call changed to the outbox, in the call's transaction,
//! for `mailroom.access.events`, each stamped with the change's revision: the relationships
//! written and those deleted, the roles created, updated and deleted, and the role
//! assignments made and removed (changes mirrored from other services' events, and the
//! default roles an organisation is given, are not published).
//!
//! In: [`AccessEvents`] is the one consumer handler, routing identity's events to
//! [`crate::identity_events`] and the registry's to [`crate::mailbox_events`].

use std::collections::HashSet;

use async_trait::async_trait;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::kafka::Topic;
use mailroom_platform::outbox::{self, EventActor};
use mailroom_platform::proto::events::v1 as ev;
use mailroom_types::OrgId;
use sqlx::PgConnection;

use crate::error::Result;
use crate::identity_events::IdentityEvents;
use crate::mailbox_events::MailboxEvents;
use crate::model::{Builtin, RoleDef, Scope};
use crate::store::{Change, Row};
use crate::wire;

/// The most assignments a `RoleDeleted` lists (its `removed_assignment_count` has them all):
/// a role held by tens of thousands would otherwise make an event over the broker's 1 MB.
pub const MAX_REMOVED_ASSIGNMENTS: usize = 1_000;

/// A scope as events name it: the API enum's name (`SCOPE_OWN`).
fn scope_name(s: Scope) -> String {
    wire::scope_to_proto(s).as_str_name().into()
}

/// The event form of a role.
pub fn role_record(role: &RoleDef) -> ev::RoleRecord {
    let g = role.grants;
    ev::RoleRecord {
        id: role.id.to_string(),
        display_name: role.name.clone(),
        kind: role.builtin.map_or("custom", Builtin::as_str).into(),
        hidden: role.hidden,
        view_mailbox_list: scope_name(g.view_mailbox_list),
        connect_mailboxes: scope_name(g.connect_mailboxes),
        modify_mailboxes: scope_name(g.modify_mailboxes),
        grant_read_access: scope_name(g.grant_read_access),
        invite: g.invite,
        manage_permissions: g.manage_permissions,
    }
}

/// The events of a list of changes, in the order they are published: the relationships
/// deleted, then those written (one event each, as before roles), then the role events in
/// the order of the changes. A role's assignments deleted with it are its `RoleDeleted`'s
/// `removed_assignments` (the first [`MAX_REMOVED_ASSIGNMENTS`], and their full count), not
/// `RoleUnassigned` events of their own.
pub fn payloads(org: OrgId, changes: &[Change], revision: i64) -> Vec<ev::envelope::Payload> {
    use ev::envelope::Payload;
    let token = wire::revision_token(revision).token;
    let record = |row: &Row| {
        wire::relationship_record(&wire::relationship_to_proto(org, row.relationship()))
    };
    let deleted_roles: HashSet<uuid::Uuid> = changes
        .iter()
        .filter_map(|c| match c {
            Change::RoleDeleted { role, .. } => Some(role.into_uuid()),
            _ => None,
        })
        .collect();
    let mut written = Vec::new();
    let mut deleted = Vec::new();
    let mut roles = Vec::new();
    for change in changes {
        match change {
            Change::Write(row) if row.kind.is_assignment() => {
                roles.push(Payload::RoleAssigned(ev::RoleAssigned {
                    role_id: row.object.to_string(),
                    assignment: Some(record(row)),
                    revision: token.clone(),
                }))
            }
            Change::Delete(row) if row.kind.is_assignment() => {
                if !deleted_roles.contains(&row.object) {
                    roles.push(Payload::RoleUnassigned(ev::RoleUnassigned {
                        role_id: row.object.to_string(),
                        assignment: Some(record(row)),
                        revision: token.clone(),
                    }))
                }
            }
            Change::Write(row) => written.push(record(row)),
            Change::Delete(row) => deleted.push(record(row)),
            Change::RoleCreated { role, cloned_from } => {
                roles.push(Payload::RoleCreated(ev::RoleCreated {
                    role: Some(role_record(role)),
                    cloned_from_role_id: cloned_from.map(|r| r.to_string()).unwrap_or_default(),
                    revision: token.clone(),
                }))
            }
            Change::RoleUpdated { role, paths } => {
                roles.push(Payload::RoleUpdated(ev::RoleUpdated {
                    role: Some(role_record(role)),
                    changed_paths: paths.clone(),
                    revision: token.clone(),
                }))
            }
            Change::RoleDeleted { role, name } => {
                let removed: Vec<&Row> = changes
                    .iter()
                    .filter_map(|c| match c {
                        Change::Delete(row)
                            if row.kind.is_assignment() && row.object == role.into_uuid() =>
                        {
                            Some(row)
                        }
                        _ => None,
                    })
                    .collect();
                roles.push(Payload::RoleDeleted(ev::RoleDeleted {
                    role_id: role.to_string(),
                    display_name: name.clone(),
                    removed_assignments: removed
                        .iter()
                        .take(MAX_REMOVED_ASSIGNMENTS)
                        .map(|row| record(row))
                        .collect(),
                    removed_assignment_count: i32::try_from(removed.len()).unwrap_or(i32::MAX),
                    revision: token.clone(),
                }))
            }
            // The audiences before roles: no longer written, never published again.
            Change::User { .. } | Change::Settings(_) => {}
        }
    }
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
            revision: token,
        }));
    }
    payloads.extend(roles);
    payloads
}

/// Writes the events of an API change into the outbox (see [`payloads`]), keyed by the
/// organisation, with the caller as actor.
pub async fn emit(
    conn: &mut PgConnection,
    actor: &EventActor,
    org: OrgId,
    changes: &[Change],
    revision: i64,
) -> Result<()> {
    for payload in payloads(org, changes, revision) {
        outbox::enqueue(
            conn,
            Topic::AccessEvents,
            org,
            &org.to_string(),
            actor,
            payload,
        )
        .await?;
    }
    Ok(())
}

/// Identity's and the registry's events through one consumer: each handler takes what is its
/// own and passes over the rest.
pub struct AccessEvents;

#[async_trait]
impl EventHandler for AccessEvents {
    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        IdentityEvents.handle(tx, event).await?;
        MailboxEvents.handle(tx, event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Assignee, Grants, Relationship};
    use ev::envelope::Payload;
    use mailroom_types::{MailboxId, RoleId, UserId};

    fn role(name: &str) -> RoleDef {
        RoleDef {
            id: RoleId::new(),
            builtin: None,
            name: name.into(),
            hidden: false,
            grants: Grants {
                view_mailbox_list: Scope::Department,
                ..Grants::NONE
            },
            version: 1,
        }
    }

    #[test]
    fn role_changes_are_role_events_and_a_deleted_roles_assignments_go_with_it() {
        let org = OrgId::new();
        let (hr, gone) = (role("HR"), role("Old"));
        let (user, mailbox) = (UserId::new(), MailboxId::new());
        let row = |rel| Row::of(org, rel);
        let changes = vec![
            Change::RoleCreated {
                role: hr.clone(),
                cloned_from: Some(gone.id),
            },
            Change::Write(row(Relationship::Assignee(hr.id, Assignee::User(user)))),
            Change::Delete(row(Relationship::Assignee(hr.id, Assignee::Heads))),
            Change::Write(row(Relationship::Owner(mailbox, user))),
            Change::Delete(row(Relationship::Assignee(gone.id, Assignee::User(user)))),
            Change::RoleDeleted {
                role: gone.id,
                name: gone.name.clone(),
            },
            Change::Settings(crate::legacy::Settings::default()),
        ];
        let payloads = payloads(org, &changes, 7);
        let names: Vec<_> = payloads
            .iter()
            .map(mailroom_platform::outbox::payload_type)
            .collect();
        assert_eq!(
            names,
            [
                "mailroom.events.v1.RelationshipsWritten",
                "mailroom.events.v1.RoleCreated",
                "mailroom.events.v1.RoleAssigned",
                "mailroom.events.v1.RoleUnassigned",
                "mailroom.events.v1.RoleDeleted",
            ]
        );
        let Payload::RoleCreated(created) = &payloads[1] else {
            unreachable!()
        };
        let record = created.role.as_ref().expect("role");
        assert_eq!(record.kind, "custom");
        assert_eq!(record.view_mailbox_list, "SCOPE_DEPARTMENT");
        assert_eq!(record.connect_mailboxes, "SCOPE_NONE");
        assert_eq!(created.cloned_from_role_id, gone.id.to_string());
        let Payload::RoleUnassigned(unassigned) = &payloads[3] else {
            unreachable!()
        };
        let assignment = unassigned.assignment.as_ref().expect("assignment");
        assert_eq!(
            (
                assignment.subject_type.as_str(),
                assignment.subject_relation.as_str()
            ),
            ("org", "head")
        );
        let Payload::RoleDeleted(deleted) = &payloads[4] else {
            unreachable!()
        };
        assert_eq!(deleted.display_name, "Old");
        assert_eq!(deleted.removed_assignments.len(), 1);
        assert_eq!(deleted.removed_assignment_count, 1);
        assert_eq!(deleted.removed_assignments[0].subject_id, user.to_string());
        assert!(payloads
            .iter()
            .all(|p| !matches!(p, Payload::PermissionSettingsChanged(_))));
    }

    #[test]
    fn a_deleted_roles_event_lists_at_most_a_thousand_assignments_and_counts_them_all() {
        let org = OrgId::new();
        let gone = role("Everyone, one by one");
        let mut changes: Vec<Change> = (0..2_500)
            .map(|_| {
                Change::Delete(Row::of(
                    org,
                    Relationship::Assignee(gone.id, Assignee::User(UserId::new())),
                ))
            })
            .collect();
        changes.push(Change::RoleDeleted {
            role: gone.id,
            name: gone.name.clone(),
        });
        let payloads = payloads(org, &changes, 9);
        assert_eq!(
            payloads.len(),
            1,
            "no RoleUnassigned for a deleted role's assignments"
        );
        let Payload::RoleDeleted(deleted) = &payloads[0] else {
            unreachable!()
        };
        assert_eq!(deleted.removed_assignments.len(), MAX_REMOVED_ASSIGNMENTS);
        assert_eq!(deleted.removed_assignment_count, 2_500);
    }
}
