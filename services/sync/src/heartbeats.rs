//! RecordActivity: a heartbeat from a signed-in person's open tab, desktop or mobile app. It
//! costs one Redis round trip ([`crate::activity`]); only when it raises the person's tier
//! are their mailboxes' next syncs pulled in, at once.

use chrono::Utc;
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::sync::v1 as pb;

use crate::domain::ClientKind;
use crate::error::{Result, SyncError};
use crate::metrics;
use crate::service::Sync;
use crate::store::schedule;

impl Sync {
    /// A heartbeat: the caller is here now. An owner who was less than active has their
    /// mailboxes' next sync pulled in at once.
    #[tracing::instrument(skip_all)]
    pub async fn record_activity(
        &self,
        principal: &Principal,
        req: pb::RecordActivityRequest,
    ) -> Result<pb::RecordActivityResponse> {
        let Principal::User { user_id, .. } = principal else {
            return Err(SyncError::PermissionDenied(
                "heartbeats come from a signed-in person, not a service".into(),
            ));
        };
        let client = ClientKind::parse(req.client).map_err(SyncError::InvalidArgument)?;
        ::metrics::counter!(metrics::HEARTBEATS, "client" => client.name()).increment(1);
        let now = Utc::now();
        let beat = self.activity.record(*user_id, now).await?;
        if beat.before != beat.now {
            let moved = schedule::pull_in_owner(&self.pool, *user_id, now, beat.now).await?;
            tracing::debug!(from = beat.before.name(), moved, "owner became active");
        }
        Ok(pb::RecordActivityResponse {
            tier: beat.now.to_proto() as i32,
        })
    }
}
