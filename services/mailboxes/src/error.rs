//! Everything the registry can refuse or fail at, and which gRPC code each is (the mapping
//! itself is the platform's `to_status`, the one place for every service).

use mailroom_aip::AipError;
use mailroom_platform::error::{ApiError, ErrorKind};

use crate::domain::ParseError;
use crate::probe::ProbeError;

#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Aip(#[from] AipError),
    #[error("{0}")]
    InvalidArgument(String),
    /// Unknown, another organisation's, or not visible to the caller: one answer for all.
    #[error("mailbox `{0}` was not found")]
    NotFound(String),
    #[error("{0}")]
    UserNotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    AlreadyConnected(String),
    /// A login check failed: IMAP, SMTP or both, each with its cause.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Login(Vec<ProbeError>),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Too many calls of one kind from one caller: `what` names them.
    #[error("too many {what}; try again in {retry_after_secs} s")]
    RateLimited {
        what: &'static str,
        retry_after_secs: u64,
    },
    /// A configured limit reached (mailboxes per organisation, login checks at once): the
    /// message names the limit.
    #[error("{0}")]
    LimitReached(String),
    /// The mailbox changed under a change that was checked against it: read it, try again.
    #[error("{0}")]
    ChangedMeanwhile(String),
    /// Access control (or identity, for the registry's own token) did not answer.
    #[error("{0}")]
    Unavailable(String),
    #[error("the database is unavailable")]
    DbUnavailable(#[source] sqlx::Error),
    #[error("{}", mailroom_platform::error::db_message(.0))]
    Db(#[source] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

mailroom_platform::service_error!(MailboxError);

impl From<mailroom_platform::sealed::SealError> for MailboxError {
    fn from(err: mailroom_platform::sealed::SealError) -> Self {
        MailboxError::Internal(format!("credential sealing failed: {err}"))
    }
}

/// The registry asks access control only its own questions (a scope, who reads a mailbox),
/// never with the caller's input: whatever it answers other than that is it failing us.
impl From<mailroom_clients::PeerError> for MailboxError {
    fn from(err: mailroom_clients::PeerError) -> Self {
        MailboxError::Unavailable(err.to_string())
    }
}

impl ApiError for MailboxError {
    fn kind(&self) -> ErrorKind {
        use MailboxError::*;
        match self {
            Parse(_) | Aip(_) | InvalidArgument(_) => ErrorKind::InvalidArgument,
            NotFound(_) | UserNotFound(_) => ErrorKind::NotFound,
            PermissionDenied(_) => ErrorKind::PermissionDenied,
            AlreadyConnected(_) => ErrorKind::AlreadyExists,
            Login(_) | FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            RateLimited { .. } | LimitReached(_) => ErrorKind::ResourceExhausted,
            ChangedMeanwhile(_) => ErrorKind::Aborted,
            Unavailable(_) | DbUnavailable(_) => ErrorKind::Unavailable,
            Db(err) => mailroom_platform::error::db_kind(err),
            Internal(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = MailboxError> = std::result::Result<T, E>;
