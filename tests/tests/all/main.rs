//! Temporary: measuring one binary.
#[path = "../access.rs"]
mod access;
#[path = "../addresses.rs"]
mod addresses;
#[path = "../directory.rs"]
mod directory;
#[path = "../events.rs"]
mod events;
#[path = "../invitations.rs"]
mod invitations;
#[path = "../isolation.rs"]
mod isolation;
#[path = "../mail_servers.rs"]
mod mail_servers;
#[path = "../mailbox_credentials.rs"]
mod mailbox_credentials;
#[path = "../mailboxes.rs"]
mod mailboxes;
#[path = "../metrics.rs"]
mod metrics;
#[path = "../revocation.rs"]
mod revocation;
#[path = "../signin.rs"]
mod signin;
#[path = "../sync.rs"]
mod sync;
#[path = "../sync_engine.rs"]
mod sync_engine;
#[path = "../tokens.rs"]
mod tokens;
#[path = "../unicode.rs"]
mod unicode;
