//! The two services invitations asks for answers it needs now: identity (INVITED users, their
//! activation, seats, and the names a mail shows) and access control (who may invite or
//! register people). Both are called with this service's own credential, except reads of the
//! caller's own profile, which carry the caller's token so identity scopes them as usual.

use mailroom_platform::proto::access::v1 as apb;
use mailroom_platform::proto::identity::v1 as ipb;
use mailroom_platform::service_auth::ServiceCredential;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::error::{InvitationError, Result};

/// The caller's bearer token, forwarded for reads of their own profile.
pub type Bearer = MetadataValue<Ascii>;

fn channel(endpoint: &str, what: &str) -> Result<Channel> {
    Ok(Channel::from_shared(endpoint.to_owned())
        .map_err(|e| InvitationError::Internal(format!("{what} endpoint `{endpoint}`: {e}")))?
        .connect_lazy())
}

/// Turns a peer's refusal into ours: its sentence is kept when it speaks to the caller's input.
fn from_status(peer: &str, status: tonic::Status) -> InvitationError {
    let message = status.message().to_owned();
    match status.code() {
        tonic::Code::InvalidArgument => InvitationError::InvalidArgument(message),
        tonic::Code::NotFound => InvitationError::NotFound(message),
        tonic::Code::FailedPrecondition => InvitationError::FailedPrecondition(message),
        tonic::Code::ResourceExhausted => InvitationError::Seats(message),
        tonic::Code::PermissionDenied => InvitationError::PermissionDenied(message),
        code => {
            InvitationError::Unavailable(format!("{peer} did not answer ({code:?}: {message})"))
        }
    }
}

#[derive(Clone)]
pub struct IdentityClient {
    client: ipb::identity_service_client::IdentityServiceClient<Channel>,
    credential: ServiceCredential,
}

impl IdentityClient {
    pub fn new(endpoint: &str, credential: ServiceCredential) -> Result<Self> {
        Ok(Self {
            client: ipb::identity_service_client::IdentityServiceClient::new(channel(
                endpoint, "identity",
            )?),
            credential,
        })
    }

    async fn as_service<T>(&self, message: T) -> Result<tonic::Request<T>> {
        self.credential
            .request(message)
            .await
            .map_err(|e| InvitationError::Unavailable(e.to_string()))
    }

    fn as_caller<T>(bearer: &Bearer, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        mailroom_platform::telemetry::inject_into_metadata(request.metadata_mut());
        request
    }

    async fn refused(&self, status: tonic::Status) -> InvitationError {
        if status.code() == tonic::Code::Unauthenticated {
            self.credential.forget().await;
        }
        from_status("identity", status)
    }

    #[tracing::instrument(skip_all, fields(invitees = invitees.len()))]
    pub async fn admit(
        &self,
        org_id: Uuid,
        department_id: Option<Uuid>,
        invitees: Vec<ipb::Invitee>,
    ) -> Result<ipb::AdmitInviteesResponse> {
        let mut request = self
            .as_service(ipb::AdmitInviteesRequest {
                org_id: org_id.to_string(),
                department_id: department_id.map(|d| d.to_string()).unwrap_or_default(),
                invitees,
            })
            .await?;
        // Well inside the sweeper's patience with an unfinished admission (60 s).
        request.set_timeout(std::time::Duration::from_secs(30));
        match self.client.clone().admit_invitees(request).await {
            Ok(answer) => Ok(answer.into_inner()),
            Err(status) => Err(self.refused(status).await),
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn activate(&self, request: ipb::ActivateInviteeRequest) -> Result<ipb::User> {
        let request = self.as_service(request).await?;
        match self.client.clone().activate_invitee(request).await {
            Ok(answer) => Ok(answer.into_inner()),
            Err(status) => Err(self.refused(status).await),
        }
    }

    pub async fn organization(&self, org_id: Uuid) -> Result<ipb::Organization> {
        let request = self
            .as_service(ipb::GetOrganizationRequest {
                org_id: org_id.to_string(),
            })
            .await?;
        match self.client.clone().get_organization(request).await {
            Ok(answer) => Ok(answer.into_inner()),
            Err(status) => Err(self.refused(status).await),
        }
    }

    /// A user of the caller's organisation, read with the caller's token.
    pub async fn user(&self, bearer: &Bearer, id: Uuid) -> Result<ipb::User> {
        let request = Self::as_caller(bearer, ipb::GetUserRequest { id: id.to_string() });
        self.client
            .clone()
            .get_user(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| from_status("identity", s))
    }

    /// A department of the caller's organisation, read with the caller's token.
    pub async fn department(&self, bearer: &Bearer, id: Uuid) -> Result<ipb::Department> {
        let request = Self::as_caller(bearer, ipb::GetDepartmentRequest { id: id.to_string() });
        self.client
            .clone()
            .get_department(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| from_status("identity", s))
    }
}

/// Organisation-wide permissions as access control names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Invite,
    RegisterUsers,
}

impl Permission {
    pub fn name(self) -> &'static str {
        match self {
            Permission::Invite => "org.invite",
            Permission::RegisterUsers => "org.register_users",
        }
    }
}

#[derive(Clone)]
pub struct AccessClient {
    client: apb::access_service_client::AccessServiceClient<Channel>,
    credential: ServiceCredential,
}

impl AccessClient {
    pub fn new(endpoint: &str, credential: ServiceCredential) -> Result<Self> {
        Ok(Self {
            client: apb::access_service_client::AccessServiceClient::new(channel(
                endpoint, "access",
            )?),
            credential,
        })
    }

    /// Whether `user` holds `permission` on their organisation.
    #[tracing::instrument(skip_all, fields(permission = permission.name()))]
    pub async fn check(&self, org_id: Uuid, user: Uuid, permission: Permission) -> Result<bool> {
        let request = self
            .credential
            .request(apb::CheckRequest {
                subject: Some(apb::SubjectRef {
                    object: Some(apb::ObjectRef {
                        r#type: "user".into(),
                        id: user.to_string(),
                    }),
                    relation: String::new(),
                }),
                permission: permission.name().into(),
                resource: Some(apb::ObjectRef {
                    r#type: "org".into(),
                    id: org_id.to_string(),
                }),
                at_least_as_fresh_as: None,
                explain: false,
            })
            .await
            .map_err(|e| InvitationError::Unavailable(e.to_string()))?;
        match self.client.clone().check(request).await {
            Ok(answer) => Ok(answer.into_inner().allowed),
            // A user access control has not heard of holds nothing yet.
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => {
                if s.code() == tonic::Code::Unauthenticated {
                    self.credential.forget().await;
                }
                Err(InvitationError::Unavailable(format!(
                    "access control did not answer ({:?}: {})",
                    s.code(),
                    s.message()
                )))
            }
        }
    }
}
