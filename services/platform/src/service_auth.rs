//! A service calling another service as itself: a service token from identity
//! (`AuthService.IssueServiceToken` with the client id and secret from configuration), kept
//! until shortly before it expires and shared by every call.
//!
//! Services call each other with their own credential, never by forwarding a user's token:
//! the callee then knows which service asks, and a user's token never travels further than
//! the service it was given to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tonic::metadata::MetadataValue;

use crate::proto::identity::v1 as pb;

/// A token is renewed when less than this is left of it.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ServiceAuthError {
    #[error("this service has no credential configured (client id and secret) to call other services with")]
    NotConfigured,
    #[error("identity at {endpoint} is unreachable for a service token: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("identity refused this service's credential: {0}")]
    Refused(String),
}

struct Cached {
    bearer: MetadataValue<tonic::metadata::Ascii>,
    renew_at: Instant,
}

/// One service's credential and the token it last got.
#[derive(Clone)]
pub struct ServiceCredential {
    identity_endpoint: String,
    client_id: String,
    client_secret: SecretString,
    cached: Arc<Mutex<Option<Cached>>>,
}

impl std::fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCredential")
            .field("identity_endpoint", &self.identity_endpoint)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ServiceCredential {
    pub fn new(
        identity_endpoint: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        Self {
            identity_endpoint: identity_endpoint.into(),
            client_id: client_id.into(),
            client_secret,
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// The `authorization` value to send, renewing the token when it is about to expire.
    pub async fn bearer(&self) -> Result<MetadataValue<tonic::metadata::Ascii>, ServiceAuthError> {
        if self.client_id.is_empty() || self.client_secret.expose_secret().is_empty() {
            return Err(ServiceAuthError::NotConfigured);
        }
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.renew_at {
                return Ok(c.bearer.clone());
            }
        }
        let unreachable = |reason: String| ServiceAuthError::Unreachable {
            endpoint: self.identity_endpoint.clone(),
            reason,
        };
        let mut client =
            pb::auth_service_client::AuthServiceClient::connect(self.identity_endpoint.clone())
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        let mut request = tonic::Request::new(pb::IssueServiceTokenRequest {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.expose_secret().to_owned(),
        });
        crate::telemetry::inject_into_metadata(request.metadata_mut());
        let tokens = client
            .issue_service_token(request)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    ServiceAuthError::Refused(s.message().to_owned())
                }
                _ => unreachable(s.message().to_owned()),
            })?
            .into_inner();
        let lifetime = tokens
            .access_token_expire_time
            .map(|t| {
                let now = chrono::Utc::now().timestamp();
                Duration::from_secs(u64::try_from(t.seconds - now).unwrap_or(0))
            })
            .unwrap_or(Duration::from_secs(300));
        let bearer: MetadataValue<_> =
            format!("Bearer {}", tokens.access_token)
                .parse()
                .map_err(|_| {
                    ServiceAuthError::Refused("identity issued a token that is not ASCII".into())
                })?;
        *cached = Some(Cached {
            bearer: bearer.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(RENEW_BEFORE).max(lifetime / 2),
        });
        Ok(bearer)
    }

    /// `message` as a request carrying this service's token and the current trace context.
    pub async fn request<T>(&self, message: T) -> Result<tonic::Request<T>, ServiceAuthError> {
        let bearer = self.bearer().await?;
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", bearer);
        crate::telemetry::inject_into_metadata(request.metadata_mut());
        Ok(request)
    }

    /// Forgets the token (after a callee said it is no longer valid).
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }
}
