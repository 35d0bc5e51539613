//! The invitations service's client. Nothing calls invitations with typed questions yet:
//! `ctl`, `mailroom dev` and the web console use [`InvitationsClient::raw`] on the shared
//! channel.

use mailroom_proto::invitations::v1 as pb;

use crate::error::Peer;

crate::typed::typed_client!(
    /// The invitations service, called as the caller this client was made with.
    InvitationsClient,
    Peer::Invitations,
    pb::invitation_service_client::InvitationServiceClient<crate::PeerChannel>
);
