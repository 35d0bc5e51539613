//! GetSyncStatus: a mailbox's place in the schedule (its state, tier, last and next sync, the
//! last error, parked or not) and each folder's checkpoint, for whoever may view the mailbox.
//!
//! A mailbox the registry has connected but whose event has not reached the schedule yet
//! (a moment after ConnectMailbox) is PENDING, not NOT_FOUND: the registry is asked whose it
//! is, and the caller is held to the same visibility as for any other mailbox.

use chrono::Utc;
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::sync::v1 as pb;
use mailroom_platform::wire::timestamp;
use mailroom_types::MailboxId;

use crate::domain::Tier;
use crate::error::{Result, SyncError};
use crate::service::{mailbox_id, Sync};
use crate::store::folders;
use crate::store::schedule::{self, ScheduleRow};

/// Where the schedule says a mailbox's sync stands.
fn state_of(row: &ScheduleRow) -> pb::SyncState {
    if row.parked {
        pb::SyncState::Parked
    } else if !row.last_error_kind.is_empty() && row.last_error_kind != schedule::NOTE_KIND {
        pb::SyncState::Error
    } else if row.last_sync.is_some() {
        pb::SyncState::Ok
    } else {
        pb::SyncState::Pending
    }
}

impl Sync {
    #[tracing::instrument(skip_all, fields(mailbox = %mailroom_aip::shown(&req.mailbox_id)))]
    pub async fn status(
        &self,
        principal: &Principal,
        req: pb::GetSyncStatusRequest,
    ) -> Result<pb::SyncStatus> {
        let id = mailbox_id(&req.mailbox_id)?;
        let Some(row) = schedule::schedule_row(&self.pool, id).await? else {
            return self.pending(principal, id).await;
        };
        self.may_view(principal, id, row.org_id, row.owner_user_id)
            .await?;
        let tier = match self.activity.tier(row.owner_user_id).await {
            Ok(t) => t,
            Err(_) => row.tier(),
        };
        let folders = folders::folders(&self.pool, id)
            .await?
            .into_iter()
            .map(|f| pb::FolderStatus {
                name: f.display_name(),
                uid_validity: u32::try_from(f.uid_validity).unwrap_or(0),
                last_uid: u32::try_from(f.last_uid).unwrap_or(0),
                highest_modseq: u64::try_from(f.highest_modseq).unwrap_or(0),
                messages: f.messages,
                unseen: f.unseen,
                imap_name: f.name,
            })
            .collect();
        let state = state_of(&row);
        let last_error = if row.parked {
            format!(
                "parked (no retries until the password or server is updated): {}",
                row.last_error
            )
        } else {
            row.last_error
        };
        Ok(pb::SyncStatus {
            mailbox_id: id.to_string(),
            tier: tier.to_proto() as i32,
            last_sync_time: row.last_sync.map(timestamp),
            next_sync_time: (!row.parked).then(|| timestamp(row.next_due)),
            last_error,
            folders,
            state: state as i32,
        })
    }

    /// The status of a mailbox the schedule has not heard of: PENDING when the registry has
    /// it and the caller may see it (it is due at once when its event arrives), else the
    /// NOT_FOUND every unknown or invisible mailbox gets.
    async fn pending(&self, principal: &Principal, id: MailboxId) -> Result<pb::SyncStatus> {
        // Only a person's own organisation's mailboxes are looked up.
        if !matches!(principal, Principal::User { .. }) {
            return Err(SyncError::NotFound(id.to_string()));
        }
        let Some(known) = self.peers.registered(id).await? else {
            return Err(SyncError::NotFound(id.to_string()));
        };
        self.may_view(principal, id, known.org_id, known.owner_user_id)
            .await?;
        let tier = self
            .activity
            .tier(known.owner_user_id)
            .await
            .unwrap_or(Tier::Dormant);
        Ok(pb::SyncStatus {
            mailbox_id: id.to_string(),
            tier: tier.to_proto() as i32,
            last_sync_time: None,
            next_sync_time: Some(timestamp(Utc::now())),
            last_error: String::new(),
            folders: Vec::new(),
            state: pb::SyncState::Pending as i32,
        })
    }
}
