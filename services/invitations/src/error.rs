//! Everything the invitations service can refuse or fail at, and which gRPC code each is (the
//! mapping itself is the platform's `to_status`, the one place for every service).

use mailroom_aip::AipError;
use mailroom_clients::{Peer, PeerError, PeerErrorKind};
use mailroom_platform::error::{ApiError, ErrorKind};
use mailroom_types::IdError;

use crate::domain::ParseError;

#[derive(Debug, thiserror::Error)]
pub enum InvitationError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Aip(#[from] AipError),
    /// An id from the wire that is missing or not one.
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("{0}")]
    InvalidArgument(String),
    /// Unknown, another organisation's, or not the caller's to see: one answer for all.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// A link that expired, was revoked or was used already: the sentence says which.
    #[error("{0}")]
    LinkNotUsable(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Not enough seats (identity's sentence, with how many are left).
    #[error("{0}")]
    Seats(String),
    #[error("too many invitations; try again in {retry_after_secs} s ({what})")]
    RateLimited {
        retry_after_secs: u64,
        what: &'static str,
    },
    /// ResendInvitation within the cooldown after the last mail.
    #[error("this invitation was sent {sent_secs_ago} s ago; resend it after {retry_after_secs} s (one mail per {cooldown_secs} s, so the invitee is not flooded)")]
    ResendTooSoon {
        sent_secs_ago: u64,
        retry_after_secs: u64,
        cooldown_secs: u64,
    },
    /// Registrations through links beyond a limit (`what`: per link, per client network).
    #[error("too many registrations {what}; try again in {retry_after_secs} s")]
    RegistrationsLimited {
        retry_after_secs: u64,
        what: &'static str,
    },
    /// Identity or access control did not answer.
    #[error("{0}")]
    Unavailable(String),
    #[error("the database is unavailable")]
    DbUnavailable(#[source] sqlx::Error),
    #[error("{}", mailroom_platform::error::db_message(.0))]
    Db(#[source] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

mailroom_platform::service_error!(InvitationError);

/// A peer's answer in our terms. Identity's refusals speak to what the caller sent (the
/// addresses, the department, the seats left) and keep its sentence; anything else — and any
/// refusal by access control, which is asked only this service's own questions — is the peer
/// failing us.
impl From<PeerError> for InvitationError {
    fn from(err: PeerError) -> Self {
        if err.peer() != Peer::Identity {
            return InvitationError::Unavailable(err.to_string());
        }
        match err.kind() {
            PeerErrorKind::InvalidArgument => InvitationError::InvalidArgument(err.sentence()),
            PeerErrorKind::NotFound => InvitationError::NotFound(err.sentence()),
            PeerErrorKind::FailedPrecondition => {
                InvitationError::FailedPrecondition(err.sentence())
            }
            PeerErrorKind::ResourceExhausted => InvitationError::Seats(err.sentence()),
            PeerErrorKind::PermissionDenied => InvitationError::PermissionDenied(err.sentence()),
            PeerErrorKind::Unavailable => InvitationError::Unavailable(err.to_string()),
        }
    }
}

impl ApiError for InvitationError {
    fn kind(&self) -> ErrorKind {
        use InvitationError::*;
        match self {
            Parse(_) | Aip(_) | Id(_) | InvalidArgument(_) => ErrorKind::InvalidArgument,
            NotFound(_) => ErrorKind::NotFound,
            PermissionDenied(_) => ErrorKind::PermissionDenied,
            Unauthenticated(_) => ErrorKind::Unauthenticated,
            LinkNotUsable(_) | FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Seats(_) | RateLimited { .. } | ResendTooSoon { .. } | RegistrationsLimited { .. } => {
                ErrorKind::ResourceExhausted
            }
            Unavailable(_) | DbUnavailable(_) => ErrorKind::Unavailable,
            Db(err) => mailroom_platform::error::db_kind(err),
            Internal(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = InvitationError> = std::result::Result<T, E>;
