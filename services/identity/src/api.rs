//! The gRPC handlers: each reads the caller, runs one operation, converts the answer to the
//! wire. Errors become statuses through `IdentityError`'s one mapping (`error`).

use std::sync::Arc;

use mailroom_platform::auth::principal;
use mailroom_platform::proto::identity::v1 as pb;
use mailroom_platform::wire::timestamp;
use pb::auth_service_server::AuthService;
use pb::identity_service_server::IdentityService;
use tonic::{Request, Response, Status};

use crate::domain::UserState;
use crate::events::id_or_empty;
use crate::service::Identity;
use crate::signin::IssuedTokens;
use crate::store::{DepartmentRow, OrgRow, UserRow};

pub struct IdentityApi(pub Arc<Identity>);
pub struct AuthApi(pub Arc<Identity>);

type Reply<T> = Result<Response<T>, Status>;

fn state_to_proto(state: UserState) -> pb::UserState {
    match state {
        UserState::Invited => pb::UserState::Invited,
        UserState::Active => pb::UserState::Active,
        UserState::Dismissed => pb::UserState::Dismissed,
    }
}

pub fn user_to_proto(u: UserRow) -> pb::User {
    let state = state_to_proto(u.state());
    pb::User {
        id: u.id.to_string(),
        org_id: u.org_id.to_string(),
        state: state as i32,
        login_email: u.login_email,
        contact_email: u.contact_email,
        first_name: u.first_name,
        last_name: u.last_name,
        position: u.position,
        department_id: id_or_empty(u.department_id),
        admin: u.is_admin,
        create_time: Some(timestamp(u.created_at)),
        update_time: Some(timestamp(u.updated_at)),
        dismiss_time: u.dismissed_at.map(timestamp),
    }
}

fn org_to_proto(o: OrgRow) -> pb::Organization {
    pb::Organization {
        id: o.id.to_string(),
        display_name: o.display_name,
        seat_limit: o.seat_limit,
        settings: Some(pb::OrganizationSettings {
            allow_everyone_to_invite: o.allow_everyone_to_invite,
        }),
        create_time: Some(timestamp(o.created_at)),
        update_time: Some(timestamp(o.updated_at)),
        seats_used: count(o.seats_used),
        invited_users: count(o.invited_users),
    }
}

fn department_to_proto(d: DepartmentRow) -> pb::Department {
    pb::Department {
        id: d.id.to_string(),
        org_id: d.org_id.to_string(),
        name: d.name,
        parent_id: id_or_empty(d.parent_id),
        head_user_id: id_or_empty(d.head_user_id),
        create_time: Some(timestamp(d.created_at)),
        update_time: Some(timestamp(d.updated_at)),
    }
}

fn tokens_to_proto(t: IssuedTokens) -> pb::TokenPair {
    let (refresh_token, refresh_expire) = match t.refresh_token {
        Some((token, at)) => (token, Some(timestamp(at))),
        None => (String::new(), None),
    };
    pb::TokenPair {
        access_token: t.access_token,
        access_token_expire_time: Some(timestamp(t.access_expires)),
        refresh_token,
        refresh_token_expire_time: refresh_expire,
        token_type: "Bearer".into(),
    }
}

fn count(total: i64) -> i32 {
    i32::try_from(total).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    #[tracing::instrument(skip_all)]
    async fn create_organization(
        &self,
        req: Request<pb::CreateOrganizationRequest>,
    ) -> Reply<pb::Organization> {
        // Writes users: GetUser's read model starts again when this call ends.
        let _writing = self.0.user_cache.writing();
        let p = principal(&req)?.clone();
        let org = self.0.create_organization(&p, req.into_inner()).await?;
        Ok(Response::new(org_to_proto(org)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_organization(
        &self,
        req: Request<pb::GetOrganizationRequest>,
    ) -> Reply<pb::Organization> {
        let p = principal(&req)?.clone();
        let org = self.0.get_organization(&p, &req.get_ref().org_id).await?;
        Ok(Response::new(org_to_proto(org)))
    }

    #[tracing::instrument(skip_all)]
    async fn update_organization(
        &self,
        req: Request<pb::UpdateOrganizationRequest>,
    ) -> Reply<pb::Organization> {
        let p = principal(&req)?.clone();
        let org = self.0.update_organization(&p, req.into_inner()).await?;
        Ok(Response::new(org_to_proto(org)))
    }

    #[tracing::instrument(skip_all)]
    async fn create_user(&self, req: Request<pb::CreateUserRequest>) -> Reply<pb::User> {
        // Writes users: GetUser's read model starts again when this call ends.
        let _writing = self.0.user_cache.writing();
        let p = principal(&req)?.clone();
        let user = self.0.create_user(&p, req.into_inner()).await?;
        Ok(Response::new(user_to_proto(user)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> Reply<pb::User> {
        let p = principal(&req)?.clone();
        let user = self.0.get_user(&p, &req.get_ref().id).await?;
        Ok(Response::new(user_to_proto(user)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_users(&self, req: Request<pb::ListUsersRequest>) -> Reply<pb::ListUsersResponse> {
        let p = principal(&req)?.clone();
        let (users, next_page_token, total) = self.0.list_users(&p, req.into_inner()).await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(user_to_proto).collect(),
            next_page_token,
            total_size: count(total),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_user(&self, req: Request<pb::UpdateUserRequest>) -> Reply<pb::User> {
        // Writes users: GetUser's read model starts again when this call ends.
        let _writing = self.0.user_cache.writing();
        let p = principal(&req)?.clone();
        let user = self.0.update_user(&p, req.into_inner()).await?;
        Ok(Response::new(user_to_proto(user)))
    }

    #[tracing::instrument(skip_all)]
    async fn dismiss_user(&self, req: Request<pb::DismissUserRequest>) -> Reply<pb::User> {
        // Writes users: GetUser's read model starts again when this call ends.
        let _writing = self.0.user_cache.writing();
        let p = principal(&req)?.clone();
        let user = self.0.dismiss_user(&p, &req.get_ref().id).await?;
        Ok(Response::new(user_to_proto(user)))
    }

    #[tracing::instrument(skip_all)]
    async fn rehire_user(&self, req: Request<pb::RehireUserRequest>) -> Reply<pb::User> {
        // Writes users: GetUser's read model starts again when this call ends.
        let _writing = self.0.user_cache.writing();
        let p = principal(&req)?.clone();
        let user = self.0.rehire_user(&p, &req.get_ref().id).await?;
        Ok(Response::new(user_to_proto(user)))
    }

    #[tracing::instrument(skip_all)]
    async fn set_admin(&self, req: Request<pb::SetAdminRequest>) -> Reply<pb::User> {
        // Writes users: GetUser's read model starts again when this call ends.
        let _writing = self.0.user_cache.writing();
        let p = principal(&req)?.clone();
        let user = self.0.set_admin(&p, req.into_inner()).await?;
        Ok(Response::new(user_to_proto(user)))
    }

    #[tracing::instrument(skip_all)]
    async fn create_department(
        &self,
        req: Request<pb::CreateDepartmentRequest>,
    ) -> Reply<pb::Department> {
        let p = principal(&req)?.clone();
        let d = self.0.create_department(&p, req.into_inner()).await?;
        Ok(Response::new(department_to_proto(d)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_department(
        &self,
        req: Request<pb::GetDepartmentRequest>,
    ) -> Reply<pb::Department> {
        let p = principal(&req)?.clone();
        let d = self.0.get_department(&p, &req.get_ref().id).await?;
        Ok(Response::new(department_to_proto(d)))
    }

    #[tracing::instrument(skip_all)]
    async fn update_department(
        &self,
        req: Request<pb::UpdateDepartmentRequest>,
    ) -> Reply<pb::Department> {
        let p = principal(&req)?.clone();
        let d = self.0.update_department(&p, req.into_inner()).await?;
        Ok(Response::new(department_to_proto(d)))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_department(&self, req: Request<pb::DeleteDepartmentRequest>) -> Reply<()> {
        let p = principal(&req)?.clone();
        self.0.delete_department(&p, &req.get_ref().id).await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all)]
    async fn list_departments(
        &self,
        req: Request<pb::ListDepartmentsRequest>,
    ) -> Reply<pb::ListDepartmentsResponse> {
        let p = principal(&req)?.clone();
        let (rows, next_page_token) = self.0.list_departments(&p, req.into_inner()).await?;
        Ok(Response::new(pb::ListDepartmentsResponse {
            departments: rows.into_iter().map(department_to_proto).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_subordinates(
        &self,
        req: Request<pb::ListSubordinatesRequest>,
    ) -> Reply<pb::ListSubordinatesResponse> {
        let p = principal(&req)?.clone();
        let (users, next_page_token, total) =
            self.0.list_subordinates(&p, req.into_inner()).await?;
        Ok(Response::new(pb::ListSubordinatesResponse {
            users: users.into_iter().map(user_to_proto).collect(),
            next_page_token,
            total_size: count(total),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_supervisors(
        &self,
        req: Request<pb::ListSupervisorsRequest>,
    ) -> Reply<pb::ListSupervisorsResponse> {
        let p = principal(&req)?.clone();
        let users = self.0.list_supervisors(&p, &req.get_ref().user_id).await?;
        Ok(Response::new(pb::ListSupervisorsResponse {
            supervisors: users.into_iter().map(user_to_proto).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_email_address_usage(
        &self,
        req: Request<pb::GetEmailAddressUsageRequest>,
    ) -> Reply<pb::EmailAddressUsage> {
        let p = principal(&req)?.clone();
        let (address, uses) = self.0.address_usage(&p, &req.get_ref().address).await?;
        Ok(Response::new(pb::EmailAddressUsage {
            address: address.to_string(),
            uses: uses
                .into_iter()
                .map(|u| pb::AddressUse {
                    kind: u.kind as i32,
                    user_id: u.user.id.to_string(),
                    user_state: user_to_proto(u.user.clone()).state,
                    user_display_name: u.user.display_name(),
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn transfer_email_address(
        &self,
        req: Request<pb::TransferEmailAddressRequest>,
    ) -> Reply<pb::TransferEmailAddressResponse> {
        // Writes users: GetUser's read model starts again when this call ends.
        let _writing = self.0.user_cache.writing();
        let p = principal(&req)?.clone();
        let transfer = self.0.transfer_address(&p, req.into_inner()).await?;
        Ok(Response::new(pb::TransferEmailAddressResponse {
            from_user: Some(user_to_proto(transfer.from)),
            to_user: transfer.to.map(user_to_proto),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn request_login_email_change(
        &self,
        req: Request<pb::RequestLoginEmailChangeRequest>,
    ) -> Reply<pb::RequestLoginEmailChangeResponse> {
        let p = principal(&req)?.clone();
        let expires = self
            .0
            .request_login_change(&p, &req.get_ref().new_login_email)
            .await?;
        Ok(Response::new(pb::RequestLoginEmailChangeResponse {
            expire_time: Some(timestamp(expires)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn confirm_login_email_change(
        &self,
        req: Request<pb::ConfirmLoginEmailChangeRequest>,
    ) -> Reply<pb::User> {
        // Writes users: GetUser's read model starts again when this call ends.
        let _writing = self.0.user_cache.writing();
        let p = principal(&req)?.clone();
        let user = self.0.confirm_login_change(&p, &req.get_ref().code).await?;
        Ok(Response::new(user_to_proto(user)))
    }

    #[tracing::instrument(skip_all)]
    async fn send_password_reset_link(
        &self,
        req: Request<pb::SendPasswordResetLinkRequest>,
    ) -> Reply<()> {
        let p = principal(&req)?.clone();
        self.0
            .send_password_reset_link(&p, &req.get_ref().user_id)
            .await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all)]
    async fn admit_invitees(
        &self,
        req: Request<pb::AdmitInviteesRequest>,
    ) -> Reply<pb::AdmitInviteesResponse> {
        // Writes users: GetUser's read model starts again when this call ends.
        let _writing = self.0.user_cache.writing();
        let p = principal(&req)?.clone();
        let admitted = self.0.admit_invitees(&p, req.into_inner()).await?;
        Ok(Response::new(pb::AdmitInviteesResponse {
            admissions: admitted
                .admissions
                .into_iter()
                .map(|a| match a.taken {
                    None => pb::Admission {
                        email: a.email,
                        admitted: true,
                        ..Default::default()
                    },
                    Some(t) => pb::Admission {
                        email: a.email,
                        admitted: false,
                        reason: t.reason,
                        holder_user_id: t.holder.to_string(),
                        holder_state: state_to_proto(t.holder_state) as i32,
                    },
                })
                .collect(),
            seat_limit: admitted.seat_limit,
            seats_used: count(admitted.seats_used),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn activate_invitee(&self, req: Request<pb::ActivateInviteeRequest>) -> Reply<pb::User> {
        // Writes users: GetUser's read model starts again when this call ends.
        let _writing = self.0.user_cache.writing();
        let p = principal(&req)?.clone();
        let user = self.0.activate_invitee(&p, req.into_inner()).await?;
        Ok(Response::new(user_to_proto(user)))
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    #[tracing::instrument(skip_all)]
    async fn login(&self, req: Request<pb::LoginRequest>) -> Reply<pb::TokenPair> {
        let client = self.0.trusted_proxies.client_ip(&req);
        let tokens = self.0.login(req.into_inner(), client).await?;
        Ok(Response::new(tokens_to_proto(tokens)))
    }

    #[tracing::instrument(skip_all)]
    async fn refresh_token(&self, req: Request<pb::RefreshTokenRequest>) -> Reply<pb::TokenPair> {
        let tokens = self.0.refresh(&req.get_ref().refresh_token).await?;
        Ok(Response::new(tokens_to_proto(tokens)))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_refresh_token(&self, req: Request<pb::RevokeRefreshTokenRequest>) -> Reply<()> {
        self.0.revoke_refresh(&req.get_ref().refresh_token).await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all)]
    async fn change_password(&self, req: Request<pb::ChangePasswordRequest>) -> Reply<()> {
        // Writes users: GetUser's read model starts again when this call ends.
        let _writing = self.0.user_cache.writing();
        let p = principal(&req)?.clone();
        self.0.change_password(&p, req.into_inner()).await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all)]
    async fn sign_out_everywhere(&self, req: Request<pb::SignOutEverywhereRequest>) -> Reply<()> {
        let p = principal(&req)?.clone();
        self.0
            .sign_out_everywhere(&p, &req.get_ref().user_id)
            .await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all)]
    async fn request_password_reset(
        &self,
        req: Request<pb::RequestPasswordResetRequest>,
    ) -> Reply<()> {
        self.0
            .request_password_reset(&req.get_ref().login_email)
            .await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all)]
    async fn reset_password(&self, req: Request<pb::ResetPasswordRequest>) -> Reply<()> {
        let req = req.into_inner();
        self.0.reset_password(&req.token, &req.new_password).await?;
        // Wrote a user: GetUser's read model starts again (only now: a caller without a valid
        // token, this method being public, must not be able to empty it).
        drop(self.0.user_cache.writing());
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all)]
    async fn issue_service_token(
        &self,
        req: Request<pb::IssueServiceTokenRequest>,
    ) -> Reply<pb::TokenPair> {
        let tokens = self.0.service_token(req.into_inner())?;
        Ok(Response::new(tokens_to_proto(tokens)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_jwks(&self, _req: Request<pb::GetJwksRequest>) -> Reply<pb::Jwks> {
        Ok(Response::new(self.0.keys().jwks()))
    }
}
