//! The one place where a domain error becomes a gRPC status.
//!
//! Service crates define their errors with `thiserror` and say, through [`ApiError::kind`],
//! which [`ErrorKind`] each is. [`to_status`] turns that into a `tonic::Status`: the message of a
//! client-side error goes to the caller as it is (it must say what to do); an internal error is
//! logged in full and the caller gets a generic message, so nothing secret leaks.

use tonic::{Code, Status};

/// What kind of failure a domain error is, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    Aborted,
    Unavailable,
    Internal,
}

impl ErrorKind {
    pub fn code(self) -> Code {
        match self {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
            ErrorKind::ResourceExhausted => Code::ResourceExhausted,
            ErrorKind::Aborted => Code::Aborted,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Internal => Code::Internal,
        }
    }
}

/// A domain error that knows which kind of failure it is.
pub trait ApiError: std::error::Error {
    fn kind(&self) -> ErrorKind;
}

/// Maps a domain error to the status the caller sees.
pub fn to_status<E: ApiError>(err: E) -> Status {
    let kind = err.kind();
    match kind {
        ErrorKind::Internal => {
            tracing::error!(error = %DisplayChain(&err), "internal error");
            Status::internal("internal error; the server log has the details (search for this request's x-request-id)")
        }
        ErrorKind::Unavailable => {
            tracing::warn!(error = %DisplayChain(&err), "dependency unavailable");
            Status::unavailable(format!("{err}; retry with backoff"))
        }
        _ => Status::new(kind.code(), err.to_string()),
    }
}

/// Displays an error with its chain of sources, for logs.
pub struct DisplayChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// The two conversions every service's error enum needs, written once: a `sqlx::Error` becomes
/// its `DbUnavailable` variant when the database is down ([`is_unavailable`]) and its `Db`
/// variant otherwise, and the enum becomes a `tonic::Status` through [`to_status`]. A service
/// says `mailroom_platform::service_error!(InvitationError);` in its `error` module, shows its
/// `Db` variant with [`db_message`] and sorts it with [`db_kind`], so a database error means
/// the same in every service.
#[macro_export]
macro_rules! service_error {
    ($error:ident) => {
        impl From<sqlx::Error> for $error {
            fn from(err: sqlx::Error) -> Self {
                if $crate::error::is_unavailable(&err) {
                    $error::DbUnavailable(err)
                } else {
                    $error::Db(err)
                }
            }
        }

        impl From<$error> for tonic::Status {
            fn from(err: $error) -> Self {
                $crate::error::to_status(err)
            }
        }
    };
}

/// Whether a database error means "a dependency is down" rather than a bug: no connection,
/// or PostgreSQL says so (connection exceptions, insufficient resources, shutting down).
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(_) => matches!(
            sqlstate(err).as_deref(),
            Some(code) if code.starts_with("08")
                || code.starts_with("53")
                || matches!(code, "57P01" | "57P02" | "57P03" | "57014")
        ),
        _ => false,
    }
}

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// What a database error means to the caller, by its SQLSTATE: the one classification every
/// service's `Db` variant uses (see [`service_error!`]).
pub fn db_kind(err: &sqlx::Error) -> ErrorKind {
    if is_unavailable(err) {
        return ErrorKind::Unavailable;
    }
    match sqlstate(err).as_deref() {
        // Data exceptions (a NUL in text, text that is no number, a value out of range) and
        // limits of one statement: the caller's value, refused.
        Some(code) if code.starts_with("22") || code.starts_with("54") => {
            ErrorKind::InvalidArgument
        }
        Some("23505") => ErrorKind::AlreadyExists,
        Some("23503") => ErrorKind::FailedPrecondition,
        Some("23514") => ErrorKind::InvalidArgument,
        Some("40001" | "40P01") => ErrorKind::Aborted,
        _ => ErrorKind::Internal,
    }
}

/// What the caller is told of a database error of [`db_kind`] `kind` (an internal one is
/// never shown: [`to_status`] replaces it).
pub fn db_message(err: &sqlx::Error) -> &'static str {
    match db_kind(err) {
        ErrorKind::Unavailable => "the database is unavailable",
        ErrorKind::InvalidArgument => {
            "a value was refused by the database (a control character such as NUL in text, or \
             a number or date out of range); correct it and retry"
        }
        ErrorKind::AlreadyExists => {
            "it already exists (a concurrent call may have just created it); reload and retry"
        }
        ErrorKind::FailedPrecondition => {
            "something it refers to does not exist any more (a concurrent call may have just \
             removed it); reload and retry"
        }
        ErrorKind::Aborted => {
            "the change collided with a concurrent change and was rolled back; retry it"
        }
        _ => "database error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Sample {
        #[error("address is taken by a dismissed user; transfer it first")]
        Taken,
        #[error("db password=hunter2 failed")]
        Secret,
    }

    impl ApiError for Sample {
        fn kind(&self) -> ErrorKind {
            match self {
                Sample::Taken => ErrorKind::AlreadyExists,
                Sample::Secret => ErrorKind::Internal,
            }
        }
    }

    #[test]
    fn client_errors_keep_their_message() {
        let status = to_status(Sample::Taken);
        assert_eq!(status.code(), Code::AlreadyExists);
        assert!(status.message().contains("transfer it first"));
    }

    #[test]
    fn internal_errors_hide_their_message() {
        let status = to_status(Sample::Secret);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }
}
