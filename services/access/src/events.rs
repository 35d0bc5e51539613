//! Access control's events, out and in.
//!
//! Out: [`emit`] writes what an API call changed to the outbox, in the call's transaction,
//! for `mailroom.access.events` — the relationships written, those deleted, and the settings
//! when they changed, each stamped with the change's revision. (Changes mirrored from other
//! services' events are not published again.)
//!
//! In: [`AccessEvents`] is the one consumer handler, routing identity's events to
//! [`crate::identity_events`] and the registry's to [`crate::mailbox_events`].

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
use crate::store::{Change, Row};
use crate::wire;

/// Writes the events of an API change into the outbox: what was written, what was deleted,
/// and the settings if they changed.
pub async fn emit(
    conn: &mut PgConnection,
    actor: &EventActor,
    org: OrgId,
    changes: &[Change],
    revision: i64,
) -> Result<()> {
    use ev::envelope::Payload;
    let token = wire::revision_token(revision).token;
    let record = |row: &Row| {
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
