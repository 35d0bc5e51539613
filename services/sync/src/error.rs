//! What the sync can fail at: [`SyncFailure`] is a mailbox's sync failing against its mail
//! server (reported as MailboxSyncFailed, never a gRPC error); [`SyncError`] is what the API
//! refuses or fails at, mapped to gRPC codes here and only here (through the platform's
//! `to_status`).

use mailroom_platform::error::{ApiError, ErrorKind};
use mailroom_platform::proto::events::v1 as ev;

/// Why a mailbox's sync failed, in the terms the registry shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The server refused the login: park the mailbox until its settings change.
    AuthFailed,
    Unreachable,
    Tls,
    Timeout,
    /// The server said something the sync could not use.
    Protocol,
    /// The server refused one command (a folder it will not open for this account): that
    /// folder is skipped, the rest of the mailbox synced.
    Refused,
}

impl FailureKind {
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::AuthFailed => "auth_failed",
            FailureKind::Unreachable => "unreachable",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Protocol => "protocol",
            FailureKind::Refused => "refused",
        }
    }

    pub fn to_proto(self) -> ev::SyncFailureKind {
        match self {
            FailureKind::AuthFailed => ev::SyncFailureKind::AuthFailed,
            FailureKind::Unreachable => ev::SyncFailureKind::Unreachable,
            FailureKind::Tls => ev::SyncFailureKind::Tls,
            FailureKind::Timeout => ev::SyncFailureKind::Timeout,
            FailureKind::Protocol | FailureKind::Refused => ev::SyncFailureKind::Protocol,
        }
    }
}

/// A sync that failed against the mail server, with a sentence for a person (never a
/// credential).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SyncFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl SyncFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn protocol(err: impl std::fmt::Display) -> Self {
        Self::new(FailureKind::Protocol, err.to_string())
    }
}

impl From<async_imap::error::Error> for SyncFailure {
    fn from(err: async_imap::error::Error) -> Self {
        use async_imap::error::Error;
        match &err {
            Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                SyncFailure::new(FailureKind::Timeout, err.to_string())
            }
            Error::Io(_) | Error::ConnectionLost => {
                SyncFailure::new(FailureKind::Unreachable, err.to_string())
            }
            Error::No(text) => SyncFailure::new(
                FailureKind::Refused,
                format!("the server refused: {}", crate::imap::one_line(text)),
            ),
            _ => SyncFailure::protocol(err),
        }
    }
}

/// How one sync run ended when it did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Failed(#[from] SyncFailure),
    /// The index could not be written: nothing is reported, the work is retried.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Told to stop (shutdown, or the lease was lost): what was committed stays.
    #[error("stopped before the end")]
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    InvalidArgument(String),
    /// Unknown, another organisation's, or not visible to the caller: one answer for all.
    #[error("mailbox `{0}` was not found")]
    NotFound(String),
    #[error("{0}")]
    MessageNotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("the database is unavailable")]
    DbUnavailable(#[source] sqlx::Error),
    #[error("database error")]
    Db(#[source] sqlx::Error),
    #[error("Redis is unavailable: {0}")]
    Redis(String),
    #[error("{0}")]
    Internal(String),
}

mailroom_platform::service_error!(SyncError);

impl From<redis::RedisError> for SyncError {
    fn from(err: redis::RedisError) -> Self {
        SyncError::Redis(err.to_string())
    }
}

impl ApiError for SyncError {
    fn kind(&self) -> ErrorKind {
        use SyncError::*;
        match self {
            InvalidArgument(_) => ErrorKind::InvalidArgument,
            NotFound(_) | MessageNotFound(_) => ErrorKind::NotFound,
            PermissionDenied(_) => ErrorKind::PermissionDenied,
            FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Unavailable(_) | DbUnavailable(_) | Redis(_) => ErrorKind::Unavailable,
            Db(_) | Internal(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = SyncError> = std::result::Result<T, E>;
