//! The gRPC handlers: each reads the caller, runs one operation, and turns its error into a
//! status through `MailboxError`'s one mapping. Passwords in requests never reach a span: the
//! handlers record only ids (as `aip::shown` bounds and escapes them: a caller's "id" is any
//! text) and shapes.

use std::sync::Arc;

use mailroom_aip::shown;
use mailroom_platform::auth::principal;
use mailroom_platform::proto::mailboxes::v1 as pb;
use pb::mailbox_service_server::MailboxService;
use tonic::{Request, Response, Status};

use crate::service::Mailboxes;

pub struct MailboxApi(pub Arc<Mailboxes>);

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl MailboxService for MailboxApi {
    #[tracing::instrument(skip_all, fields(validate_only = request.get_ref().validate_only))]
    async fn connect_mailbox(
        &self,
        request: Request<pb::ConnectMailboxRequest>,
    ) -> Reply<pb::Mailbox> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.connect(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(mailboxes = request.get_ref().mailboxes.len()))]
    async fn connect_mailboxes(
        &self,
        request: Request<pb::ConnectMailboxesRequest>,
    ) -> Reply<pb::ConnectMailboxesResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.connect_many(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(id = %shown(&request.get_ref().id)))]
    async fn get_mailbox(&self, request: Request<pb::GetMailboxRequest>) -> Reply<pb::Mailbox> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.get(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(page_size = request.get_ref().page_size))]
    async fn list_mailboxes(
        &self,
        request: Request<pb::ListMailboxesRequest>,
    ) -> Reply<pb::ListMailboxesResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.list(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(id = %shown(request.get_ref().mailbox.as_ref().map(|m| m.id.as_str()).unwrap_or_default())))]
    async fn update_mailbox(
        &self,
        request: Request<pb::UpdateMailboxRequest>,
    ) -> Reply<pb::Mailbox> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.update(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(id = %shown(&request.get_ref().id)))]
    async fn disconnect_mailbox(
        &self,
        request: Request<pb::DisconnectMailboxRequest>,
    ) -> Reply<()> {
        let caller = principal(&request)?.clone();
        self.0.disconnect(&caller, request.into_inner()).await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(id = %shown(&request.get_ref().id)))]
    async fn sync_mailbox_now(
        &self,
        request: Request<pb::SyncMailboxNowRequest>,
    ) -> Reply<pb::SyncMailboxNowResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.sync_now(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(id = %shown(&request.get_ref().id)))]
    async fn transfer_mailbox(
        &self,
        request: Request<pb::TransferMailboxRequest>,
    ) -> Reply<pb::Mailbox> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.transfer(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_list_view(&self, request: Request<pb::GetListViewRequest>) -> Reply<pb::ListView> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(self.0.get_view(&caller).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn update_list_view(
        &self,
        request: Request<pb::UpdateListViewRequest>,
    ) -> Reply<pb::ListView> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.update_view(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(batch_size = request.get_ref().batch_size))]
    async fn reseal_credentials(
        &self,
        request: Request<pb::ResealCredentialsRequest>,
    ) -> Reply<pb::ResealCredentialsResponse> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.reseal(&caller, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_mailbox_credentials(
        &self,
        request: Request<pb::GetMailboxCredentialsRequest>,
    ) -> Reply<pb::MailboxLogin> {
        let caller = principal(&request)?.clone();
        Ok(Response::new(
            self.0.credentials(&caller, request.into_inner()).await?,
        ))
    }
}
