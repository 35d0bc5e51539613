//! An organisation's permission settings: who may view the mailbox list, change mailboxes and
//! invite, and whether owners may share read access. Anyone in the organisation may read them;
//! only its admins (or a service) change them, through the changelog like any other write.

use mailroom_platform::auth::Principal;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::access::v1 as pb;

use crate::error::{AccessError, Result};
use crate::events;
use crate::service::Access;
use crate::store::{self, Writer};
use crate::wire;

impl Access {
    /// The organisation's settings (the defaults until an admin changes one).
    pub async fn get_settings(
        &self,
        principal: &Principal,
        req: pb::GetPermissionSettingsRequest,
    ) -> Result<pb::PermissionSettings> {
        let org = self.org_of_call(principal, &req.org_id)?;
        let mut conn = self.pool.acquire().await?;
        let (settings, at) = store::settings(&mut conn, org).await?;
        Ok(wire::settings_to_proto(org, settings, at))
    }

    /// Changes every setting the update specifies, keeping the others.
    pub async fn update_settings(
        &self,
        principal: &Principal,
        req: pb::UpdatePermissionSettingsRequest,
    ) -> Result<pb::PermissionSettings> {
        let update = req
            .settings
            .ok_or_else(|| AccessError::InvalidArgument("`settings` is required".into()))?;
        // Refused on what this replica knows first; allowed, decided again under the lock.
        self.org_for_admin_call(principal, &update.org_id)?;
        let mut tx = self.locked_and_current().await?;
        let org = self.org_for_admin_call(principal, &update.org_id)?;
        let mut w = Writer::begin(&mut tx, org).await?;
        let (current, _) = store::settings(w.conn(), org).await?;
        let new = wire::merge_settings(current, &update)?;
        w.set_settings(new).await?;
        let changes = w.changes().to_vec();
        let revision = w.finish().await?;
        events::emit(&mut tx, &EventActor::of(principal), org, &changes, revision).await?;
        let (settings, at) = store::settings(&mut tx, org).await?;
        tx.commit().await?;
        self.settle(revision).await;
        Ok(wire::settings_to_proto(org, settings, at))
    }
}
