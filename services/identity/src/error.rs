//! Everything identity can refuse or fail at, and which gRPC code each is (the mapping itself
//! is the platform's `to_status`, the one place for every service).

use mailroom_platform::aip::AipError;
use mailroom_platform::error::{ApiError, ErrorKind};

use crate::domain::ParseError;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Aip(#[from] AipError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{what} `{id}` was not found in your organisation")]
    NotFound { what: &'static str, id: String },
    #[error("{address} is already the {uses} of {holder} ({state}); {way_out}")]
    AddressTaken {
        address: String,
        uses: String,
        holder: String,
        state: &'static str,
        way_out: &'static str,
    },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(&'static str),
    #[error("email or password is incorrect")]
    BadCredentials,
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("too many attempts; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the organisation has used all {limit} of its seats; dismiss someone or raise the seat limit")]
    SeatLimit { limit: i32 },
    /// A batch of invitees that does not fit the seats left; the sentence says how many are.
    #[error("{0}")]
    Seats(String),
    #[error("mail could not be sent: {0}")]
    Mail(String),
    #[error("the database is unavailable")]
    DbUnavailable(#[source] sqlx::Error),
    #[error("database error")]
    Db(#[source] sqlx::Error),
    #[error("Redis is unavailable")]
    Redis(#[from] mailroom_platform::redis::RedisError),
    #[error("{0}")]
    Internal(String),
}

mailroom_platform::service_error!(IdentityError);

impl ApiError for IdentityError {
    fn kind(&self) -> ErrorKind {
        use IdentityError::*;
        match self {
            Parse(_) | Aip(_) | InvalidArgument(_) => ErrorKind::InvalidArgument,
            NotFound { .. } => ErrorKind::NotFound,
            AddressTaken { .. } => ErrorKind::AlreadyExists,
            FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            PermissionDenied(_) => ErrorKind::PermissionDenied,
            BadCredentials | Unauthenticated(_) => ErrorKind::Unauthenticated,
            RateLimited { .. } | SeatLimit { .. } | Seats(_) => ErrorKind::ResourceExhausted,
            Mail(_) | DbUnavailable(_) | Redis(_) => ErrorKind::Unavailable,
            Db(_) | Internal(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = IdentityError> = std::result::Result<T, E>;
