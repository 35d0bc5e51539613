//! SMTP: [`check`] logs in to a server a person named, over a connection dialled through the
//! destination policy, to tell them whether their settings work; [`send`] is the sender the
//! services send their own mail with, through the relay the operator configured, over the
//! connections [`pool`] keeps.

pub mod check;
pub mod pool;
pub mod send;
pub mod settings;
mod stream;

pub use check::{check_login, check_login_at, SmtpError};
pub use pool::SendError;
pub use send::{Relay, Sender, SmtpConfigError};
pub use settings::SmtpSettings;
