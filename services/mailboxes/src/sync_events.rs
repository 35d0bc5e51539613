//! What the sync service reports, into the registry's columns: "last synced", the message,
//! unread and disk counters, and the sync state ("auth failed" parks a mailbox until its
//! password or server is edited). Every report carries its time (a sync's `synced_at`, a
//! failure's `occurred_at`) and a report older than what a row shows changes nothing: a
//! redelivered or late event cannot move the counters back, nor park a mailbox that synced
//! since or was repaired since. A failure is judged by when its attempt began
//! (`attempt_started_at`, before the attempt read the login), not when it was reported: a
//! server that takes seconds to refuse the old password reports after the owner's repair, and
//! that refusal is of the settings the repair replaced.

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::Utc;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::wire::from_timestamp;
use mailroom_types::MailboxId;
use sqlx::PgConnection;

use crate::domain::SyncState;
use crate::store;

pub struct SyncEvents;

#[async_trait]
impl EventHandler for SyncEvents {
    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        use ev::envelope::Payload;
        match &event.payload {
            Some(Payload::MailboxSynced(synced)) => {
                let id: MailboxId = synced
                    .mailbox_id
                    .parse()
                    .context("mailbox_id is not a UUID")?;
                let at = synced
                    .synced_at
                    .as_ref()
                    .and_then(from_timestamp)
                    .or_else(|| event.occurred_at.as_ref().and_then(from_timestamp))
                    .unwrap_or_else(Utc::now);
                store::record_synced(
                    tx,
                    id,
                    at,
                    (synced.message_count, synced.unread_count, synced.disk_bytes),
                )
                .await?;
            }
            Some(Payload::MailboxSyncFailed(failed)) => {
                let id: MailboxId = failed
                    .mailbox_id
                    .parse()
                    .context("mailbox_id is not a UUID")?;
                let state = if failed.parked {
                    SyncState::AuthFailed
                } else {
                    SyncState::Error
                };
                // Bounded whatever the report holds: it is shown in every list row.
                let message =
                    crate::domain::clipped(&failed.message, crate::domain::MAX_SYNC_ERROR);
                let at = event
                    .occurred_at
                    .as_ref()
                    .and_then(from_timestamp)
                    .unwrap_or_else(Utc::now);
                // When the attempt began: its failure counts only if nothing set the state
                // since (a repair while the server took its time to refuse the old password).
                let began = failed.attempt_started_at.as_ref().and_then(from_timestamp);
                store::record_failure(&mut *tx, id, state, &message, at, began).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The registry's one consumer: identity's events and sync's, each to its handler.
pub struct RegistryEvents;

#[async_trait]
impl EventHandler for RegistryEvents {
    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        use ev::envelope::Payload;
        match &event.payload {
            Some(Payload::MailboxSynced(_)) | Some(Payload::MailboxSyncFailed(_)) => {
                SyncEvents.handle(tx, event).await
            }
            _ => {
                crate::identity_events::IdentityEvents
                    .handle(tx, event)
                    .await
            }
        }
    }
}
