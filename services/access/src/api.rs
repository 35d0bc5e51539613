//! The gRPC handlers: each reads the caller, runs one operation, and turns its error into a
//! status through `AccessError`'s one mapping.

use std::sync::Arc;

use mailroom_platform::auth::principal;
use mailroom_platform::proto::access::v1 as pb;
use pb::access_service_server::AccessService;
use tonic::{Request, Response, Status};

use crate::service::Access;

pub struct AccessApi(pub Arc<Access>);

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AccessService for AccessApi {
    #[tracing::instrument(skip_all, fields(permission = %mailroom_aip::shown(&request.get_ref().permission)))]
    async fn check(&self, request: Request<pb::CheckRequest>) -> Reply<pb::CheckResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.check(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(checks = request.get_ref().checks.len()))]
    async fn check_bulk(
        &self,
        request: Request<pb::CheckBulkRequest>,
    ) -> Reply<pb::CheckBulkResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.check_bulk(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(permission = %mailroom_aip::shown(&request.get_ref().permission)))]
    async fn lookup_resources(
        &self,
        request: Request<pb::LookupResourcesRequest>,
    ) -> Reply<pb::LookupResourcesResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0
                .lookup_resources(&caller, request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(permission = %mailroom_aip::shown(&request.get_ref().permission)))]
    async fn lookup_subjects(
        &self,
        request: Request<pb::LookupSubjectsRequest>,
    ) -> Reply<pb::LookupSubjectsResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0
                .lookup_subjects(&caller, request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(permission = %mailroom_aip::shown(&request.get_ref().permission)))]
    async fn lookup_mailbox_scope(
        &self,
        request: Request<pb::LookupMailboxScopeRequest>,
    ) -> Reply<pb::LookupMailboxScopeResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0
                .lookup_mailbox_scope(&caller, request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(relationships = request.get_ref().relationships.len()))]
    async fn write_relationships(
        &self,
        request: Request<pb::WriteRelationshipsRequest>,
    ) -> Reply<pb::WriteRelationshipsResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0
                .write_relationships(&caller, request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(relationships = request.get_ref().relationships.len()))]
    async fn delete_relationships(
        &self,
        request: Request<pb::DeleteRelationshipsRequest>,
    ) -> Reply<pb::DeleteRelationshipsResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0
                .delete_relationships(&caller, request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_relationships(
        &self,
        request: Request<pb::ListRelationshipsRequest>,
    ) -> Reply<pb::ListRelationshipsResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0
                .list_relationships(&caller, request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_permission_settings(
        &self,
        request: Request<pb::GetPermissionSettingsRequest>,
    ) -> Reply<pb::PermissionSettings> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.get_settings(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn update_permission_settings(
        &self,
        request: Request<pb::UpdatePermissionSettingsRequest>,
    ) -> Reply<pb::PermissionSettings> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0
                .update_settings(&caller, request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Reply<pb::ListRolesResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.list_roles(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(role = %mailroom_aip::shown(&request.get_ref().id)))]
    async fn get_role(&self, request: Request<pb::GetRoleRequest>) -> Reply<pb::Role> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.get_role(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn create_role(&self, request: Request<pb::CreateRoleRequest>) -> Reply<pb::Role> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.create_role(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(paths = %request.get_ref().update_mask.as_ref().map(|m| mailroom_aip::shown(&m.paths.join(","))).unwrap_or_default()))]
    async fn update_role(&self, request: Request<pb::UpdateRoleRequest>) -> Reply<pb::Role> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.update_role(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(role = %mailroom_aip::shown(&request.get_ref().id)))]
    async fn clone_role(&self, request: Request<pb::CloneRoleRequest>) -> Reply<pb::Role> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.clone_role(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(role = %mailroom_aip::shown(&request.get_ref().id)))]
    async fn delete_role(
        &self,
        request: Request<pb::DeleteRoleRequest>,
    ) -> Reply<pb::DeleteRoleResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.delete_role(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(role = %mailroom_aip::shown(&request.get_ref().role_id)))]
    async fn assign_role(
        &self,
        request: Request<pb::AssignRoleRequest>,
    ) -> Reply<pb::RoleAssignment> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.assign_role(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(role = %mailroom_aip::shown(&request.get_ref().role_id)))]
    async fn unassign_role(
        &self,
        request: Request<pb::UnassignRoleRequest>,
    ) -> Reply<pb::UnassignRoleResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.unassign_role(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_role_assignments(
        &self,
        request: Request<pb::ListRoleAssignmentsRequest>,
    ) -> Reply<pb::ListRoleAssignmentsResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0
                .list_role_assignments(&caller, request.into_inner())
                .await?,
        ))
    }
}
