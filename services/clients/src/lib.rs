//! How anything calls a Mailroom service: the services calling each other, `mailroom ctl`, and
//! the web console calling on a signed-in person's behalf. One crate, so that a fix to how a
//! peer is reached, authenticated or misunderstood lands once.
//!
//! A tour, from the wire up:
//!
//! - [`PeerChannel`] ([`channel`]): one channel per peer, connected lazily (a service starts
//!   before its peers answer), with a connect timeout, HTTP/2 keepalive and a deadline on every
//!   call. A peer named by DNS is balanced across every address its name resolves to, resolved
//!   again periodically ([`resolve`]), so calls spread over its pods instead of sticking to one.
//! - [`Caller`] ([`caller`]): who a call is made as — this service ([`ServiceCredential`], a
//!   token per peer, each addressed to that peer alone and fetched once at a time over the
//!   identity channel, [`credential`]), a person
//!   ([`Bearer`], their token forwarded as given), or nobody (public methods).
//! - [`PeerError`] ([`error`]): one mapping of a peer's status to an error that names the peer
//!   and the kind of answer. Each calling service turns it into its own error, once, in its
//!   `error.rs`.
//! - The typed clients, one per service: [`AccessClient`], [`IdentityClient`],
//!   [`MailboxesClient`], [`SyncClient`], [`InvitationsClient`]. Each has typed methods for what
//!   services ask (ids from `mailroom-types`), and `raw()` plus `request()` for the generated
//!   client on the same configured channel with the caller's credentials attached (what `ctl`
//!   and the console use for the many RPCs a person can make).
//! - [`ServicePeers`] ([`service`]): a service's wiring in one value — the identity channel,
//!   its credential, and the clients of the peers it calls.

pub mod access;
pub mod caller;
pub mod channel;
pub mod credential;
pub mod error;
pub mod identity;
pub mod invitations;
pub mod mailboxes;
pub mod resolve;
pub mod service;
pub mod settings;
pub mod sync;
pub mod tls;
mod typed;

pub use access::{AccessClient, MailboxScope};
pub use caller::{Bearer, Caller, InvalidToken};
pub use channel::PeerChannel;
pub use credential::{CredentialError, ServiceCredential};
pub use error::{ChannelError, Peer, PeerError, PeerErrorKind};
pub use identity::IdentityClient;
pub use invitations::InvitationsClient;
pub use mailboxes::{MailboxLogin, MailboxesClient};
pub use service::ServicePeers;
pub use settings::Settings;
pub use sync::SyncClient;
pub use tls::{ClientTls, TlsFileError};
