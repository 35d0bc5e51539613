//! The sync service's client. Nothing calls the sync with typed questions yet: `ctl` and the
//! web console use [`SyncClient::raw`] on the shared channel.

use mailroom_proto::sync::v1 as pb;

use crate::error::Peer;

crate::typed::typed_client!(
    /// The sync service, called as the caller this client was made with.
    SyncClient,
    Peer::Sync,
    pb::sync_service_client::SyncServiceClient<crate::PeerChannel>
);
