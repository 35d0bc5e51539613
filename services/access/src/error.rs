//! Everything access control can refuse or fail at, and which gRPC code each is (the mapping
//! itself is the platform's `to_status`, the one place for every service).

use mailroom_aip::AipError;
use mailroom_platform::error::{ApiError, ErrorKind};

use crate::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Aip(#[from] AipError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A role name already taken in the organisation.
    #[error("{0}")]
    AlreadyExists(String),
    /// A stale etag: the resource changed since it was read.
    #[error("{0}")]
    Aborted(String),
    /// Something this service is waiting to learn (from identity's events, say); retrying
    /// shortly is the fix.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("this replica has applied revision {have} and did not reach the requested {wanted} within {waited_ms} ms; retry")]
    NotYetAt {
        wanted: i64,
        have: i64,
        waited_ms: u64,
    },
    #[error("the database is unavailable")]
    DbUnavailable(#[source] sqlx::Error),
    #[error("{}", mailroom_platform::error::db_message(.0))]
    Db(#[source] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

mailroom_platform::service_error!(AccessError);

impl ApiError for AccessError {
    fn kind(&self) -> ErrorKind {
        use AccessError::*;
        match self {
            Aip(_) | InvalidArgument(_) => ErrorKind::InvalidArgument,
            Model(ModelError::NeedsMailbox(_)) => ErrorKind::InvalidArgument,
            Model(ModelError::Cycle(_)) => ErrorKind::FailedPrecondition,
            PermissionDenied(_) => ErrorKind::PermissionDenied,
            NotFound(_) => ErrorKind::NotFound,
            FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            AlreadyExists(_) => ErrorKind::AlreadyExists,
            Aborted(_) => ErrorKind::Aborted,
            NotYetAt { .. } | DbUnavailable(_) | Unavailable(_) => ErrorKind::Unavailable,
            Db(err) => mailroom_platform::error::db_kind(err),
            Internal(_) => ErrorKind::Internal,
        }
    }
}

impl AccessError {
    /// A mailbox this organisation does not have: unknown, not yet owned, or another
    /// organisation's — one answer for all three, so no caller learns which.
    pub fn mailbox_not_found(mailbox: impl std::fmt::Display) -> AccessError {
        AccessError::NotFound(format!(
            "mailbox `{mailbox}` was not found in your organisation (access control knows a mailbox once the mailbox registry has recorded its owner)"
        ))
    }

    /// A user this organisation does not have, known elsewhere or not: a user caller learns
    /// nothing about users outside their organisation.
    pub fn user_not_found(user: impl std::fmt::Display) -> AccessError {
        AccessError::NotFound(format!("user `{user}` was not found in your organisation"))
    }

    /// The same error with `at` (which item of a batch, say) before its message.
    pub fn at(self, at: &str) -> AccessError {
        use AccessError::*;
        match self {
            InvalidArgument(m) => InvalidArgument(format!("{at}: {m}")),
            PermissionDenied(m) => PermissionDenied(format!("{at}: {m}")),
            NotFound(m) => NotFound(format!("{at}: {m}")),
            FailedPrecondition(m) => FailedPrecondition(format!("{at}: {m}")),
            Unavailable(m) => Unavailable(format!("{at}: {m}")),
            Aip(e) => InvalidArgument(format!("{at}: {e}")),
            Model(e @ ModelError::NeedsMailbox(_)) => InvalidArgument(format!("{at}: {e}")),
            Model(e @ ModelError::Cycle(_)) => FailedPrecondition(format!("{at}: {e}")),
            other => other,
        }
    }
}

pub type Result<T, E = AccessError> = std::result::Result<T, E>;
