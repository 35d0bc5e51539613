//! A service's wiring for calling its peers as itself, in one value: the channel to identity,
//! the service credential fetched over it, and a client of each peer it calls.
//!
//! Each `start()` makes one `ServicePeers` and asks it once for each peer's client, so the
//! process keeps one channel per peer; the clients are cheap to clone.

use secrecy::SecretString;

use crate::caller::Caller;
use crate::channel::PeerChannel;
use crate::credential::ServiceCredential;
use crate::error::{ChannelError, Peer};
use crate::settings::Settings;
use crate::{AccessClient, IdentityClient, InvitationsClient, MailboxesClient, SyncClient};

#[derive(Clone, Debug)]
pub struct ServicePeers {
    settings: Settings,
    identity: PeerChannel,
    credential: ServiceCredential,
}

impl ServicePeers {
    /// This service's credential (`client_id`, `client_secret`) at identity on
    /// `identity_endpoint`.
    pub fn new(
        identity_endpoint: &str,
        client_id: impl Into<String>,
        client_secret: SecretString,
        settings: Settings,
    ) -> Result<Self, ChannelError> {
        let identity = PeerChannel::new(Peer::Identity, identity_endpoint, &settings)?;
        let credential = ServiceCredential::new(
            identity.clone(),
            client_id,
            client_secret,
            settings.token_timeout,
        );
        Ok(Self {
            settings,
            identity,
            credential,
        })
    }

    pub fn credential(&self) -> &ServiceCredential {
        &self.credential
    }

    fn caller(&self) -> Caller {
        Caller::Service(self.credential.clone())
    }

    /// Identity, on the channel the credential uses.
    pub fn identity(&self) -> IdentityClient {
        IdentityClient::new(self.identity.clone(), self.caller())
    }

    fn channel(&self, peer: Peer, endpoint: &str) -> Result<PeerChannel, ChannelError> {
        PeerChannel::new(peer, endpoint, &self.settings)
    }

    pub fn access(&self, endpoint: &str) -> Result<AccessClient, ChannelError> {
        Ok(AccessClient::new(
            self.channel(Peer::Access, endpoint)?,
            self.caller(),
        ))
    }

    pub fn mailboxes(&self, endpoint: &str) -> Result<MailboxesClient, ChannelError> {
        Ok(MailboxesClient::new(
            self.channel(Peer::Mailboxes, endpoint)?,
            self.caller(),
        ))
    }

    pub fn sync(&self, endpoint: &str) -> Result<SyncClient, ChannelError> {
        Ok(SyncClient::new(
            self.channel(Peer::Sync, endpoint)?,
            self.caller(),
        ))
    }

    pub fn invitations(&self, endpoint: &str) -> Result<InvitationsClient, ChannelError> {
        Ok(InvitationsClient::new(
            self.channel(Peer::Invitations, endpoint)?,
            self.caller(),
        ))
    }
}
