//! The gRPC handlers: each reads the caller, runs one operation, and turns its error into a
//! status through `SyncError`'s one mapping.

use std::sync::Arc;

use mailroom_platform::auth::principal;
use mailroom_platform::proto::sync::v1 as pb;
use pb::sync_service_server::SyncService;
use tonic::{Request, Response, Status};

use crate::service::Sync;

pub struct SyncApi(pub Arc<Sync>);

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl SyncService for SyncApi {
    #[tracing::instrument(skip_all, fields(client = request.get_ref().client))]
    async fn record_activity(
        &self,
        request: Request<pb::RecordActivityRequest>,
    ) -> Reply<pb::RecordActivityResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0
                .record_activity(&caller, request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_sync_status(
        &self,
        request: Request<pb::GetSyncStatusRequest>,
    ) -> Reply<pb::SyncStatus> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.status(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Reply<pb::ListMessagesResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.list_messages(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_message_body(
        &self,
        request: Request<pb::GetMessageBodyRequest>,
    ) -> Reply<pb::MessageBody> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.message_body(&caller, request.into_inner()).await?,
        ))
    }
}
