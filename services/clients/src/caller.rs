//! Who a call is made as.
//!
//! Services call each other as themselves ([`Caller::Service`]): the callee then knows which
//! service asks, and a person's token goes no further than the service it was given to. A
//! service's token names the one service it is sent to, so each call fetches (or reuses) the
//! token for its peer. The
//! exceptions forward the person's own token ([`Caller::Person`]): a service reading the
//! caller's own profile so that identity scopes it as usual, `mailroom ctl`, and the web
//! console acting for the signed-in person.

use tonic::metadata::{Ascii, MetadataValue};

use crate::credential::ServiceCredential;
use crate::error::{Peer, PeerError};

const AUTHORIZATION: &str = "authorization";

/// A person's access token, as the `authorization: Bearer …` value it travels in.
#[derive(Clone, PartialEq, Eq)]
pub struct Bearer(MetadataValue<Ascii>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer([REDACTED])")
    }
}

/// An access token that cannot travel in a gRPC header.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the access token cannot be sent: it is not printable ASCII")]
pub struct InvalidToken;

impl Bearer {
    /// The bearer value of an access token (as `AuthService.Login` issues it).
    pub fn from_token(token: &str) -> Result<Self, InvalidToken> {
        format!("Bearer {token}")
            .parse()
            .map(Self)
            .map_err(|_| InvalidToken)
    }

    /// The `authorization` value a request came with, forwarded as it is.
    pub fn from_metadata(value: MetadataValue<Ascii>) -> Self {
        Self(value)
    }

    /// The `authorization` value of `request`, if it has one.
    pub fn of_request<T>(request: &tonic::Request<T>) -> Option<Self> {
        request.metadata().get(AUTHORIZATION).cloned().map(Self)
    }

    /// `message` as a request carrying this token and the current trace context.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(AUTHORIZATION, self.0.clone());
        mailroom_platform::telemetry::inject_into_metadata(request.metadata_mut());
        request
    }
}

/// Who a client calls as.
#[derive(Clone, Debug)]
pub enum Caller {
    /// This service, with its own credential.
    Service(ServiceCredential),
    /// A person, with the token they called with or signed in with.
    Person(Bearer),
    /// Nobody: only public methods (signing in, the JWKS) answer.
    Anonymous,
}

impl Caller {
    /// `message`, to be sent to `peer`, as a request carrying this caller's credentials (a
    /// service's token for that peer) and the trace context.
    pub async fn request<T>(&self, peer: Peer, message: T) -> Result<tonic::Request<T>, PeerError> {
        match self {
            Caller::Service(credential) => {
                let bearer = credential.bearer(peer).await?;
                let mut request = tonic::Request::new(message);
                request.metadata_mut().insert(AUTHORIZATION, bearer);
                mailroom_platform::telemetry::inject_into_metadata(request.metadata_mut());
                Ok(request)
            }
            Caller::Person(bearer) => Ok(bearer.request(message)),
            Caller::Anonymous => {
                let mut request = tonic::Request::new(message);
                mailroom_platform::telemetry::inject_into_metadata(request.metadata_mut());
                Ok(request)
            }
        }
    }

    /// `status` from `peer` as a [`PeerError`]. A peer that did not accept this service's
    /// token makes the credential forget it, so the next call fetches a new one; a person's
    /// refused token is theirs to renew.
    pub fn refused(&self, peer: Peer, status: tonic::Status) -> PeerError {
        if status.code() == tonic::Code::Unauthenticated {
            if let Caller::Service(credential) = self {
                credential.forget(peer);
            }
        }
        PeerError::from_status(peer, &status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_travels_as_given_and_never_prints() {
        let bearer = Bearer::from_token("abc.def").unwrap();
        let request = bearer.request(());
        assert_eq!(
            request.metadata().get(AUTHORIZATION).unwrap(),
            "Bearer abc.def"
        );
        assert_eq!(Bearer::of_request(&request), Some(bearer.clone()));
        assert_eq!(format!("{bearer:?}"), "Bearer([REDACTED])");
        assert!(Bearer::from_token("line\nbreak").is_err());
    }
}
