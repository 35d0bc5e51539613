//! Identity's client: people and organisations (`IdentityService`) and signing in
//! (`AuthService`, on the same channel).

use std::time::Duration;

use mailroom_proto::identity::v1 as pb;
use mailroom_types::{DepartmentId, OrgId, UserId};

use crate::error::{Peer, PeerError};

/// How long admitting invitees may take: well inside invitations' patience with an unfinished
/// admission (60 s).
const ADMIT_DEADLINE: Duration = Duration::from_secs(30);

crate::typed::typed_client!(
    /// Identity, called as the caller this client was made with.
    IdentityClient,
    Peer::Identity,
    pb::identity_service_client::IdentityServiceClient<crate::PeerChannel>
);

impl IdentityClient {
    /// Identity's `AuthService` on the same channel (sign in, service tokens, JWKS), for
    /// requests built with [`Self::request`].
    pub fn raw_auth(&self) -> pb::auth_service_client::AuthServiceClient<crate::PeerChannel> {
        pb::auth_service_client::AuthServiceClient::new(self.channel.clone())
    }

    /// Makes INVITED users of `invitees` in `org` (and `department`), within the seats left.
    #[tracing::instrument(skip_all, fields(invitees = invitees.len()))]
    pub async fn admit(
        &self,
        org: OrgId,
        department: Option<DepartmentId>,
        invitees: Vec<pb::Invitee>,
    ) -> Result<pb::AdmitInviteesResponse, PeerError> {
        let mut request = self
            .request(pb::AdmitInviteesRequest {
                org_id: org.to_string(),
                department_id: department.map(|d| d.to_string()).unwrap_or_default(),
                invitees,
                check_only: false,
            })
            .await?;
        request.set_timeout(ADMIT_DEADLINE);
        self.raw()
            .admit_invitees(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.refused(s))
    }

    /// Makes an INVITED user ACTIVE (they accepted, with their password).
    #[tracing::instrument(skip_all)]
    pub async fn activate(
        &self,
        message: pb::ActivateInviteeRequest,
    ) -> Result<pb::User, PeerError> {
        self.call(message, |mut raw, request| async move {
            raw.activate_invitee(request).await
        })
        .await
    }

    pub async fn organization(&self, org: OrgId) -> Result<pb::Organization, PeerError> {
        let message = pb::GetOrganizationRequest {
            org_id: org.to_string(),
        };
        self.call(message, |mut raw, request| async move {
            raw.get_organization(request).await
        })
        .await
    }

    /// A user, as the caller may see them (a person sees their own organisation).
    pub async fn user(&self, id: UserId) -> Result<pb::User, PeerError> {
        let message = pb::GetUserRequest { id: id.to_string() };
        self.call(message, |mut raw, request| async move {
            raw.get_user(request).await
        })
        .await
    }

    /// A department, as the caller may see it.
    pub async fn department(&self, id: DepartmentId) -> Result<pb::Department, PeerError> {
        let message = pb::GetDepartmentRequest { id: id.to_string() };
        self.call(message, |mut raw, request| async move {
            raw.get_department(request).await
        })
        .await
    }
}
