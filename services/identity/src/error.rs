//! Everything identity can refuse or fail at, and which gRPC code each is: `ApiError::kind`
//! below is the one mapping (the platform's `to_status` turns the kind into a status, logging
//! internal detail and telling the caller what to do).

use std::fmt;

use mailroom_aip::AipError;
use mailroom_platform::error::{ApiError, ErrorKind};
use mailroom_platform::types::Seats;

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
    /// Every Argon2id permit was taken for longer than the queue's deadline (`passwords`).
    #[error("the sign-in service is busy; try again in a few seconds")]
    HashingBusy,
    /// A limiter that fails closed could not reach Redis: the call is refused rather than run
    /// unlimited. Names what is unavailable ("sign-in", "password reset").
    #[error("{0} is temporarily unavailable")]
    LimiterUnavailable(&'static str),
    /// The seat rule said no (the `seats` module).
    #[error(transparent)]
    Seats(#[from] SeatShortage),
    #[error("mail could not be sent: {0}")]
    Mail(String),
    #[error("the database is unavailable")]
    DbUnavailable(#[source] sqlx::Error),
    #[error("{}", mailroom_platform::error::db_message(.0))]
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
            RateLimited { .. } | HashingBusy | Seats(_) => ErrorKind::ResourceExhausted,
            Mail(_) | DbUnavailable(_) | Redis(_) | LimiterUnavailable(_) => ErrorKind::Unavailable,
            Db(err) => mailroom_platform::error::db_kind(err),
            Internal(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = IdentityError> = std::result::Result<T, E>;

/// How the people who need seats were to be added; it picks the words of the refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joining {
    /// A new organisation's first admin.
    FirstAdmin,
    /// CreateUser.
    NewUser,
    /// RehireUser.
    Rehire,
    /// Invitees admitted for the invitations service (invitations, registrations, links).
    Invitees,
}

/// People who do not fit the organisation's seats: the seat rule's one refusal, saying how
/// many seats are left and the ways out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatShortage {
    /// The seats as counted under the organisation's lock.
    pub seats: Seats,
    pub wanted: i64,
    pub joining: Joining,
}

impl std::error::Error for SeatShortage {}

impl fmt::Display for SeatShortage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            seats,
            wanted,
            joining,
        } = *self;
        let left = seats.left().unwrap_or(0);
        let (verb, fewer) = match joining {
            Joining::FirstAdmin | Joining::NewUser => ("adding", ""),
            Joining::Rehire => ("rehiring", ""),
            Joining::Invitees => ("inviting", "invite fewer people, "),
        };
        write!(
            f,
            "not enough seats: {verb} {wanted} {} needs {wanted} {}, and {left} of the organisation's {} seats {} left \
             ({} taken by active users and pending invitations); {fewer}revoke pending invitations, dismiss someone, \
             or ask your operator to raise the plan's seat limit",
            if wanted == 1 { "person" } else { "people" },
            if wanted == 1 { "seat" } else { "seats" },
            seats.limit,
            if left == 1 { "is" } else { "are" },
            seats.used,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seat_shortage_says_how_many_are_left_and_the_way_out() {
        let batch = SeatShortage {
            seats: Seats::new(11, 11),
            wanted: 3,
            joining: Joining::Invitees,
        };
        assert_eq!(
            batch.to_string(),
            "not enough seats: inviting 3 people needs 3 seats, and 0 of the organisation's 11 seats are left \
             (11 taken by active users and pending invitations); invite fewer people, revoke pending invitations, \
             dismiss someone, or ask your operator to raise the plan's seat limit"
        );
        let one = SeatShortage {
            seats: Seats::new(5, 5),
            wanted: 1,
            joining: Joining::NewUser,
        };
        assert!(one
            .to_string()
            .starts_with("not enough seats: adding 1 person needs 1 seat, and 0 of"));
        assert_eq!(
            IdentityError::from(one).kind(),
            ErrorKind::ResourceExhausted
        );
    }
}
