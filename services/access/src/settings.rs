//! The organisation's permission settings, replaced by roles (issue 23). The two RPCs remain
//! (deprecated) only to tell a caller where the settings went: both answer
//! FAILED_PRECONDITION pointing to ListRoles/UpdateRole.

use mailroom_platform::auth::Principal;
use mailroom_platform::proto::access::v1 as pb;

use crate::error::{AccessError, Result};
use crate::service::Access;

/// What both settings RPCs answer.
pub const MOVED: &str =
    "permission settings are roles now: use ListRoles/UpdateRole (mailroom ctl access roles)";

impl Access {
    /// Deprecated: the settings are roles now.
    pub async fn get_settings(
        &self,
        _principal: &Principal,
        _req: pb::GetPermissionSettingsRequest,
    ) -> Result<pb::PermissionSettings> {
        Err(AccessError::FailedPrecondition(MOVED.into()))
    }

    /// Deprecated: the settings are roles now.
    pub async fn update_settings(
        &self,
        _principal: &Principal,
        _req: pb::UpdatePermissionSettingsRequest,
    ) -> Result<pb::PermissionSettings> {
        Err(AccessError::FailedPrecondition(MOVED.into()))
    }
}
