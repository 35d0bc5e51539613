//! GetSyncStatus: a mailbox's place in the schedule (tier, last and next sync, the last
//! error, parked or not) and each folder's checkpoint, for whoever may view the mailbox.

use mailroom_platform::auth::Principal;
use mailroom_platform::proto::sync::v1 as pb;
use mailroom_platform::wire::timestamp;

use crate::error::Result;
use crate::service::{mailbox_id, Sync};
use crate::store::folders;

impl Sync {
    #[tracing::instrument(skip_all, fields(mailbox = %req.mailbox_id))]
    pub async fn status(
        &self,
        principal: &Principal,
        req: pb::GetSyncStatusRequest,
    ) -> Result<pb::SyncStatus> {
        let id = mailbox_id(&req.mailbox_id)?;
        let row = self.visible(principal, id).await?;
        let tier = match self.activity.tier(row.owner_user_id).await {
            Ok(t) => t,
            Err(_) => row.tier(),
        };
        let folders = folders::folders(&self.pool, id)
            .await?
            .into_iter()
            .map(|f| pb::FolderStatus {
                name: f.name,
                uid_validity: u32::try_from(f.uid_validity).unwrap_or(0),
                last_uid: u32::try_from(f.last_uid).unwrap_or(0),
                highest_modseq: u64::try_from(f.highest_modseq).unwrap_or(0),
                messages: f.messages,
                unseen: f.unseen,
            })
            .collect();
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
        })
    }
}
