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

    // Part C (roles API) replaces this stub.
    async fn list_roles(
        &self,
        _request: Request<pb::ListRolesRequest>,
    ) -> Reply<pb::ListRolesResponse> {
        Err(Status::unimplemented("roles are not served yet"))
    }

    // Part C (roles API) replaces this stub.
    async fn get_role(&self, _request: Request<pb::GetRoleRequest>) -> Reply<pb::Role> {
        Err(Status::unimplemented("roles are not served yet"))
    }

    // Part C (roles API) replaces this stub.
    async fn create_role(&self, _request: Request<pb::CreateRoleRequest>) -> Reply<pb::Role> {
        Err(Status::unimplemented("roles are not served yet"))
    }

    // Part C (roles API) replaces this stub.
    async fn update_role(&self, _request: Request<pb::UpdateRoleRequest>) -> Reply<pb::Role> {
        Err(Status::unimplemented("roles are not served yet"))
    }

    // Part C (roles API) replaces this stub.
    async fn clone_role(&self, _request: Request<pb::CloneRoleRequest>) -> Reply<pb::Role> {
        Err(Status::unimplemented("roles are not served yet"))
    }

    // Part C (roles API) replaces this stub.
    async fn delete_role(
        &self,
        _request: Request<pb::DeleteRoleRequest>,
    ) -> Reply<pb::DeleteRoleResponse> {
        Err(Status::unimplemented("roles are not served yet"))
    }

    // Part C (roles API) replaces this stub.
    async fn assign_role(
        &self,
        _request: Request<pb::AssignRoleRequest>,
    ) -> Reply<pb::RoleAssignment> {
        Err(Status::unimplemented("roles are not served yet"))
    }

    // Part C (roles API) replaces this stub.
    async fn unassign_role(
        &self,
        _request: Request<pb::UnassignRoleRequest>,
    ) -> Reply<pb::UnassignRoleResponse> {
        Err(Status::unimplemented("roles are not served yet"))
    }

    // Part C (roles API) replaces this stub.
    async fn list_role_assignments(
        &self,
        _request: Request<pb::ListRoleAssignmentsRequest>,
    ) -> Reply<pb::ListRoleAssignmentsResponse> {
        Err(Status::unimplemented("roles are not served yet"))
    }
}
