//! The gRPC handlers: each reads the caller, parses the ids it was given (once, here), runs
//! one operation, and converts the answer to the wire. Errors become statuses through
//! `InvitationError`'s one mapping.

use std::sync::Arc;

use mailroom_platform::proto::invitations::v1 as pb;
use mailroom_platform::wire::timestamp;
use mailroom_types::{IdError, InvitationId, RegistrationLinkId};
use pb::invitation_service_server::InvitationService;
use tonic::{Request, Response, Status};

use crate::admission::Rejected;
use crate::client_network::ClientNetwork;
use crate::domain::{Delivery, DeliveryState, Kind, State};
use crate::error::InvitationError;
use crate::service::{Caller, Invitations};
use crate::store::{InvitationRow, LinkRow};

pub struct InvitationApi(pub Arc<Invitations>);

type Reply<T> = Result<Response<T>, Status>;

/// An id from the request, or the status that says which field is wrong.
fn parsed<T>(id: Result<T, IdError>) -> Result<T, Status> {
    id.map_err(|e| InvitationError::from(e).into())
}

pub fn invitation_to_proto(r: InvitationRow) -> pb::Invitation {
    let state = match r.state() {
        State::Admitting | State::Pending => pb::InvitationState::Pending,
        State::Accepted => pb::InvitationState::Accepted,
        State::Expired => pb::InvitationState::Expired,
        State::Revoked => pb::InvitationState::Revoked,
        State::Failed => pb::InvitationState::Failed,
        State::AwaitingApproval => pb::InvitationState::AwaitingApproval,
        State::Rejected => pb::InvitationState::Rejected,
    };
    let kind = match r.kind() {
        Kind::Email => pb::InvitationKind::Email,
        Kind::DirectRegistration => pb::InvitationKind::DirectRegistration,
        Kind::RegistrationLink => pb::InvitationKind::RegistrationLink,
    };
    let delivery = match r.delivery() {
        Delivery::SystemMail => pb::DeliveryMethod::SystemMail,
        Delivery::OwnMailClient => pb::DeliveryMethod::OwnMailClient,
    };
    let delivery_state = match r.delivery_state() {
        DeliveryState::Queued => pb::DeliveryState::Queued,
        DeliveryState::Sent => pb::DeliveryState::Sent,
        DeliveryState::Failed => pb::DeliveryState::Failed,
        DeliveryState::NotSent => pb::DeliveryState::NotSent,
    };
    pb::Invitation {
        id: r.id.to_string(),
        org_id: r.org_id.to_string(),
        email: r.email,
        department_id: r.department_id.map(|d| d.to_string()).unwrap_or_default(),
        state: state as i32,
        delivery: delivery as i32,
        inviter_user_id: r.inviter_user_id.to_string(),
        // No user exists for a link registration until its address is confirmed.
        user_id: if r.invitee_admitted {
            r.user_id.to_string()
        } else {
            String::new()
        },
        message: r.message,
        failure_reason: r.failure_reason,
        create_time: Some(timestamp(r.created_at)),
        expire_time: Some(timestamp(r.expires_at)),
        accept_time: r.accepted_at.map(timestamp),
        send_count: r.send_count,
        kind: kind as i32,
        delivery_state: delivery_state as i32,
        locale: r.locale,
        first_name: r.first_name,
        last_name: r.last_name,
        registration_link_id: r
            .registration_link_id
            .map(|l| l.to_string())
            .unwrap_or_default(),
    }
}

fn link_to_proto(l: LinkRow, url: String) -> pb::RegistrationLink {
    pb::RegistrationLink {
        id: l.id.to_string(),
        org_id: l.org_id.to_string(),
        url,
        allowed_domains: l.allowed_domains,
        requires_approval: l.requires_approval,
        department_id: l.department_id.map(|d| d.to_string()).unwrap_or_default(),
        disabled: l.disabled,
        create_time: Some(timestamp(l.created_at)),
        expire_time: l.expires_at.map(timestamp),
        created_by_user_id: l.created_by_user_id.to_string(),
        registrations: i32::try_from(l.registrations).unwrap_or(i32::MAX),
        max_uses: l.max_uses,
        uses: i32::try_from(l.uses).unwrap_or(i32::MAX),
    }
}

fn rejected_to_proto(r: Rejected) -> pb::RejectedAddress {
    pb::RejectedAddress {
        input: r.input,
        reason: r.reason,
        code: r.code as i32,
        user_id: r.user_id.map(|u| u.to_string()).unwrap_or_default(),
        user_state: r.user_state,
    }
}

#[tonic::async_trait]
impl InvitationService for InvitationApi {
    #[tracing::instrument(skip_all)]
    async fn create_invitations(
        &self,
        req: Request<pb::CreateInvitationsRequest>,
    ) -> Reply<pb::CreateInvitationsResponse> {
        let caller = Caller::from_request(&req)?;
        let (admitted, composed) = self.0.create_invitations(&caller, req.into_inner()).await?;
        Ok(Response::new(pb::CreateInvitationsResponse {
            invitations: admitted
                .invitations
                .into_iter()
                .map(|(row, _)| invitation_to_proto(row))
                .collect(),
            rejected: admitted
                .rejected
                .into_iter()
                .map(rejected_to_proto)
                .collect(),
            composed,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_invitation(
        &self,
        req: Request<pb::GetInvitationRequest>,
    ) -> Reply<pb::Invitation> {
        let caller = Caller::from_request(&req)?;
        let id = parsed(InvitationId::parse("id", &req.get_ref().id))?;
        let row = self.0.get(&caller, id).await?;
        Ok(Response::new(invitation_to_proto(row)))
    }

    #[tracing::instrument(skip_all)]
    async fn preview_invitation(
        &self,
        req: Request<pb::PreviewInvitationRequest>,
    ) -> Reply<pb::InvitationPreview> {
        let row = self.0.preview(&req.get_ref().token).await?;
        let kind = invitation_to_proto(row.clone()).kind;
        Ok(Response::new(pb::InvitationPreview {
            org_id: row.org_id.to_string(),
            organization_name: row.organization_name,
            inviter_name: row.inviter_name,
            department_name: row.department_name,
            email: row.email,
            expire_time: Some(timestamp(row.expires_at)),
            kind,
            first_name: row.first_name,
            last_name: row.last_name,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_invitations(
        &self,
        req: Request<pb::ListInvitationsRequest>,
    ) -> Reply<pb::ListInvitationsResponse> {
        let caller = Caller::from_request(&req)?;
        let (rows, next_page_token, total) = self.0.list(&caller, req.into_inner()).await?;
        Ok(Response::new(pb::ListInvitationsResponse {
            invitations: rows.into_iter().map(invitation_to_proto).collect(),
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn resend_invitation(
        &self,
        req: Request<pb::ResendInvitationRequest>,
    ) -> Reply<pb::Invitation> {
        let caller = Caller::from_request(&req)?;
        let id = parsed(InvitationId::parse("id", &req.get_ref().id))?;
        let row = self.0.resend(&caller, id).await?;
        Ok(Response::new(invitation_to_proto(row)))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_invitation(
        &self,
        req: Request<pb::RevokeInvitationRequest>,
    ) -> Reply<pb::Invitation> {
        let caller = Caller::from_request(&req)?;
        let id = parsed(InvitationId::parse("id", &req.get_ref().id))?;
        let row = self.0.revoke(&caller, id).await?;
        Ok(Response::new(invitation_to_proto(row)))
    }

    #[tracing::instrument(skip_all)]
    async fn accept_invitation(
        &self,
        req: Request<pb::AcceptInvitationRequest>,
    ) -> Reply<pb::AcceptInvitationResponse> {
        let (row, user) = self.0.accept(req.into_inner()).await?;
        Ok(Response::new(pb::AcceptInvitationResponse {
            user_id: row.user_id.to_string(),
            org_id: row.org_id.to_string(),
            login_email: user.login_email,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn register_user(&self, req: Request<pb::RegisterUserRequest>) -> Reply<pb::Invitation> {
        let caller = Caller::from_request(&req)?;
        let row = self.0.register_user(&caller, req.into_inner()).await?;
        Ok(Response::new(invitation_to_proto(row)))
    }

    #[tracing::instrument(skip_all)]
    async fn create_registration_link(
        &self,
        req: Request<pb::CreateRegistrationLinkRequest>,
    ) -> Reply<pb::RegistrationLink> {
        let caller = Caller::from_request(&req)?;
        let (link, url) = self.0.create_link(&caller, req.into_inner()).await?;
        Ok(Response::new(link_to_proto(link, url)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_registration_links(
        &self,
        req: Request<pb::ListRegistrationLinksRequest>,
    ) -> Reply<pb::ListRegistrationLinksResponse> {
        let caller = Caller::from_request(&req)?;
        let (links, next_page_token) = self.0.list_links(&caller, req.into_inner()).await?;
        Ok(Response::new(pb::ListRegistrationLinksResponse {
            links: links
                .into_iter()
                .map(|l| link_to_proto(l, String::new()))
                .collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn disable_registration_link(
        &self,
        req: Request<pb::DisableRegistrationLinkRequest>,
    ) -> Reply<pb::RegistrationLink> {
        let caller = Caller::from_request(&req)?;
        let id = parsed(RegistrationLinkId::parse("id", &req.get_ref().id))?;
        let link = self.0.disable_link(&caller, id).await?;
        Ok(Response::new(link_to_proto(link, String::new())))
    }

    #[tracing::instrument(skip_all)]
    async fn register_with_link(
        &self,
        req: Request<pb::RegisterWithLinkRequest>,
    ) -> Reply<pb::RegisterWithLinkResponse> {
        let network = ClientNetwork::of(self.0.trusted_proxies.client_ip(&req));
        Ok(Response::new(
            self.0
                .register_with_link(&network, req.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn preview_registration_link(
        &self,
        req: Request<pb::PreviewRegistrationLinkRequest>,
    ) -> Reply<pb::RegistrationLinkPreview> {
        Ok(Response::new(
            self.0.preview_link(&req.get_ref().link_token).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn approve_registration(
        &self,
        req: Request<pb::ApproveRegistrationRequest>,
    ) -> Reply<pb::Invitation> {
        let caller = Caller::from_request(&req)?;
        let id = parsed(InvitationId::parse(
            "invitation_id",
            &req.get_ref().invitation_id,
        ))?;
        let row = self.0.approve(&caller, id).await?;
        Ok(Response::new(invitation_to_proto(row)))
    }

    #[tracing::instrument(skip_all)]
    async fn reject_registration(
        &self,
        req: Request<pb::RejectRegistrationRequest>,
    ) -> Reply<pb::Invitation> {
        let caller = Caller::from_request(&req)?;
        let id = parsed(InvitationId::parse(
            "invitation_id",
            &req.get_ref().invitation_id,
        ))?;
        let row = self.0.reject(&caller, id).await?;
        Ok(Response::new(invitation_to_proto(row)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_invitation_template(
        &self,
        req: Request<pb::GetInvitationTemplateRequest>,
    ) -> Reply<pb::InvitationTemplate> {
        let caller = Caller::from_request(&req)?;
        Ok(Response::new(
            self.0.get_template(&caller, &req.get_ref().locale).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn update_invitation_template(
        &self,
        req: Request<pb::UpdateInvitationTemplateRequest>,
    ) -> Reply<pb::InvitationTemplate> {
        let caller = Caller::from_request(&req)?;
        Ok(Response::new(
            self.0.update_template(&caller, req.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_seat_usage(&self, req: Request<pb::GetSeatUsageRequest>) -> Reply<pb::SeatUsage> {
        let caller = Caller::from_request(&req)?;
        Ok(Response::new(self.0.seat_usage(&caller).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_invitation(&self, req: Request<pb::DeleteInvitationRequest>) -> Reply<()> {
        let caller = Caller::from_request(&req)?;
        let id = parsed(InvitationId::parse("id", &req.get_ref().id))?;
        self.0.delete(&caller, id).await?;
        Ok(Response::new(()))
    }
}
