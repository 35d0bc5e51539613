//! Mailroom's one mail-protocol layer: every connection to a mail server that a person named
//! (the registry's login check, the sync) and every mail the services send go through here.
//!
//! - [`dial`]: the destination policy. A host is resolved once, refused when any address is
//!   on this machine or its link (unless local servers are allowed), and connected to at the
//!   very addresses that were checked: nothing here resolves a name a second time.
//! - [`tls`]: the one rustls client configuration (web PKI roots) and the TLS handshake.
//! - [`login`]: [`Security`] and [`Login`], where and as whom to log in.
//! - [`failure`]: [`FailureKind`], the sorting of a failure into what a person can act on.
//! - [`connector`]: [`Connector`], the policy, the TLS trust and the deadline a process
//!   connects with.
//! - [`imap`]: connect (TCP, then TLS, STARTTLS or neither) and LOGIN.
//! - [`smtp`]: the SMTP login check over a dialled stream, and the pooled [`smtp::Sender`]
//!   the services send their own mail with.
//! - [`text`]: [`one_line`], a server's words made safe for one line of a message.
//!
//! Errors are `thiserror` enums with a `kind()`; each service words them for its callers in
//! its own `error.rs`.

pub mod connector;
pub mod dial;
pub mod failure;
pub mod imap;
pub mod login;
pub mod smtp;
pub mod text;
pub mod tls;

#[cfg(test)]
mod testing;

pub use connector::Connector;
pub use failure::FailureKind;
pub use login::{Login, Security};
pub use text::one_line;
