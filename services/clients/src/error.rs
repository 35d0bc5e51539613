//! What calling a peer can end in, said once for every caller.
//!
//! [`PeerError`] names the peer and the kind of answer — a refusal of what was sent (invalid
//! argument, not found, failed precondition, resource exhausted, permission denied) or no
//! usable answer (unavailable, timed out, or any other status) — and keeps the peer's own
//! sentence. A caller decides, in its `error.rs`, which refusals speak to its own caller's
//! input (pass the sentence on) and which are the peer failing it (unavailable).

use std::fmt;

pub use mailroom_platform::consumer::Transient;

/// The five services, as a sentence names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    Identity,
    Access,
    Mailboxes,
    Sync,
    Invitations,
}

impl Peer {
    /// The service's name as a service token's audience names it (`mailroom:<service>`).
    pub const fn service(self) -> &'static str {
        match self {
            Peer::Identity => "identity",
            Peer::Access => "access",
            Peer::Mailboxes => "mailboxes",
            Peer::Sync => "sync",
            Peer::Invitations => "invitations",
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Peer::Identity => "identity",
            Peer::Access => "access control",
            Peer::Mailboxes => "the mailbox registry",
            Peer::Sync => "the sync service",
            Peer::Invitations => "the invitations service",
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of a peer's error, in the terms a caller maps to its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerErrorKind {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    ResourceExhausted,
    PermissionDenied,
    /// No usable answer: unreachable, timed out, overloaded, not signed in, or any status
    /// that says the peer failed rather than refused.
    Unavailable,
}

impl PeerErrorKind {
    pub fn of(code: tonic::Code) -> Self {
        match code {
            tonic::Code::InvalidArgument => PeerErrorKind::InvalidArgument,
            tonic::Code::NotFound => PeerErrorKind::NotFound,
            tonic::Code::FailedPrecondition => PeerErrorKind::FailedPrecondition,
            tonic::Code::ResourceExhausted => PeerErrorKind::ResourceExhausted,
            tonic::Code::PermissionDenied => PeerErrorKind::PermissionDenied,
            _ => PeerErrorKind::Unavailable,
        }
    }
}

/// A call to a peer that did not give the answer asked for.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// The peer refused what was sent; `message` is its sentence.
    #[error("{peer} refused ({code:?}): {message}")]
    Refused {
        peer: Peer,
        kind: PeerErrorKind,
        code: tonic::Code,
        message: String,
    },
    /// The peer gave no usable answer. `status` is kept as the source, so a consumer that
    /// classifies failures sees a peer that was down (retried) apart from one that failed.
    #[error("{peer} did not answer ({code:?}: {message})")]
    Unavailable {
        peer: Peer,
        code: tonic::Code,
        message: String,
        #[source]
        status: tonic::Status,
    },
    /// The peer answered, but has not heard yet of what was asked about: it learns of it from
    /// events, a moment after it was made. Retrying shortly helps: `transient` says so to a
    /// consumer that classifies failures.
    #[error("{message}")]
    NotYetKnown {
        peer: Peer,
        message: String,
        #[source]
        transient: Transient,
    },
    /// This service could not get a token to call with.
    #[error(transparent)]
    Credential(#[from] CredentialError),
}

impl PeerError {
    /// `status` from `peer`, sorted into a refusal or a failure.
    pub fn from_status(peer: Peer, status: &tonic::Status) -> Self {
        let code = status.code();
        let message = status.message().to_owned();
        match PeerErrorKind::of(code) {
            PeerErrorKind::Unavailable => PeerError::Unavailable {
                peer,
                code,
                message,
                status: status.clone(),
            },
            kind => PeerError::Refused {
                peer,
                kind,
                code,
                message,
            },
        }
    }

    /// The peer that did not answer as asked (identity, for the service's own credential).
    pub fn peer(&self) -> Peer {
        match self {
            PeerError::Refused { peer, .. }
            | PeerError::Unavailable { peer, .. }
            | PeerError::NotYetKnown { peer, .. } => *peer,
            PeerError::Credential(_) => Peer::Identity,
        }
    }

    pub fn kind(&self) -> PeerErrorKind {
        match self {
            PeerError::Refused { kind, .. } => *kind,
            PeerError::Unavailable { .. }
            | PeerError::NotYetKnown { .. }
            | PeerError::Credential(_) => PeerErrorKind::Unavailable,
        }
    }

    /// The gRPC status code the peer answered with, when it answered at all (a refusal, or
    /// a failure it reported); `None` for what never reached it or it has not heard of yet.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            PeerError::Refused { code, .. } | PeerError::Unavailable { code, .. } => Some(*code),
            PeerError::NotYetKnown { .. } | PeerError::Credential(_) => None,
        }
    }

    /// The sentence to pass on: a refusal's own (it speaks to what was sent), else this
    /// error's, which names the peer.
    pub fn sentence(&self) -> String {
        match self {
            PeerError::Refused { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// A peer's endpoint that cannot be called.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{peer}'s endpoint `{endpoint}` is not usable: {reason} (expected a URL such as http://host:port)")]
pub struct ChannelError {
    pub peer: Peer,
    pub endpoint: String,
    pub reason: String,
}

/// Why this service has no token to call with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    #[error("this service has no credential configured (client id and secret) to call other services with")]
    NotConfigured,
    /// Identity gave no usable answer; `transient` tells a consumer to retry, not give up.
    #[error("identity at {endpoint} is unreachable for a service token: {reason}")]
    Unreachable {
        endpoint: String,
        reason: String,
        #[source]
        transient: Transient,
    },
    #[error("identity refused this service's credential: {0}")]
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_the_peers_sentence_and_a_failure_names_the_peer() {
        let refused = PeerError::from_status(
            Peer::Identity,
            &tonic::Status::resource_exhausted("only 2 seats are left"),
        );
        assert_eq!(refused.kind(), PeerErrorKind::ResourceExhausted);
        assert_eq!(refused.sentence(), "only 2 seats are left");

        let failed = PeerError::from_status(Peer::Access, &tonic::Status::internal("boom"));
        assert_eq!(failed.kind(), PeerErrorKind::Unavailable);
        assert_eq!(
            failed.sentence(),
            "access control did not answer (Internal: boom)"
        );
        assert_eq!(failed.peer(), Peer::Access);
    }

    #[test]
    fn the_peers_code_is_kept_for_refusals_and_failures() {
        let refused = PeerError::from_status(Peer::Mailboxes, &tonic::Status::not_found("gone"));
        assert_eq!(refused.code(), Some(tonic::Code::NotFound));
        let signed_out = PeerError::from_status(
            Peer::Identity,
            &tonic::Status::unauthenticated("token expired"),
        );
        assert_eq!(signed_out.kind(), PeerErrorKind::Unavailable);
        assert_eq!(signed_out.code(), Some(tonic::Code::Unauthenticated));
        let no_token = PeerError::Credential(CredentialError::NotConfigured);
        assert_eq!(no_token.code(), None);
    }

    #[test]
    fn a_consumer_retries_a_peer_that_was_down_and_gives_up_on_one_that_failed() {
        use mailroom_platform::consumer::{classify, Class};
        let down = PeerError::from_status(Peer::Access, &tonic::Status::unavailable("restarting"));
        assert_eq!(classify(&anyhow::Error::new(down)), Class::Transient);
        let failed = PeerError::from_status(Peer::Access, &tonic::Status::internal("boom"));
        assert_eq!(classify(&anyhow::Error::new(failed)), Class::Unknown);
        let not_yet = PeerError::NotYetKnown {
            peer: Peer::Access,
            message: "not heard of yet".into(),
            transient: Transient,
        };
        assert_eq!(classify(&anyhow::Error::new(not_yet)), Class::Transient);
        let no_token = PeerError::Credential(CredentialError::Unreachable {
            endpoint: "http://identity".into(),
            reason: "connection refused".into(),
            transient: Transient,
        });
        assert_eq!(classify(&anyhow::Error::new(no_token)), Class::Transient);
    }
}
