//! Mailroom end to end against the real stack, in one test binary (one link instead of one
//! per file): a module per area. Filter by module, e.g. `cargo nextest run -p mailroom-tests
//! addresses::` or `.ci/test invitations::seats`.

mod access;
mod addresses;
mod consumer_faults;
mod ctl_contexts;
mod ctl_tls;
mod db_errors;
mod directory;
mod echoes;
mod event_ops;
mod events;
mod grpc_tls;
mod hostile_imap;
mod invitations;
mod isolation;
mod kafka_tls;
mod key_rotation;
mod mail_servers;
mod mailbox_credentials;
mod mailboxes;
mod metrics;
mod ordering_and_locks;
mod otlp_tls;
mod overload;
mod process_exit;
mod readiness;
mod relay_handover;
mod revocation;
mod roles;
mod schema_upgrade;
mod service_principals;
mod shutdown_drain;
mod signin;
mod signin_abuse;
mod signin_limits;
mod smtp_relay;
mod sync;
mod sync_autoscaling;
mod sync_engine;
mod sync_exactly_once;
mod sync_found_by_use;
mod tls_dependencies;
mod tokens;
mod unicode;
mod web;
