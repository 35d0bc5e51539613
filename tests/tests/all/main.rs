//! Mailroom end to end against the real stack, in one test binary (one link instead of one
//! per file): a module per area. Filter by module, e.g. `cargo nextest run -p mailroom-tests
//! addresses::` or `.ci/test invitations::seats`.

mod access;
mod addresses;
mod db_errors;
mod directory;
mod echoes;
mod events;
mod hostile_imap;
mod invitations;
mod isolation;
mod mail_servers;
mod mailbox_credentials;
mod mailboxes;
mod metrics;
mod revocation;
mod service_principals;
mod signin;
mod signin_abuse;
mod signin_limits;
mod sync;
mod sync_engine;
mod sync_found_by_use;
mod tokens;
mod unicode;
