//! Who is calling: access-token claims, their verification against the identity service's
//! JWKS, and the [`Principal`] that handlers read from the request.
//!
//! Tokens are EdDSA (Ed25519) JWTs issued by identity. Every service verifies them locally with
//! the public keys identity publishes (`AuthService.GetJwks`); a token signed with a key it has
//! not seen makes it fetch the set again (at most every few seconds), so key rotation needs no
//! restart.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mailroom_types::{OrgId, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::kafka::KafkaSettings;
use crate::proto::identity::v1 as pb;
use crate::revocation::Revocations;
use tokio_util::sync::CancellationToken;

/// The issuer every Mailroom token names.
pub const ISSUER: &str = "mailroom-identity";
/// The audience every Mailroom access token names.
pub const AUDIENCE: &str = "mailroom";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// A user id, or `service:<name>` for internal callers.
    pub sub: String,
    /// The user's organisation; absent for service tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Uuid>,
    #[serde(default)]
    pub admin: bool,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// When the token was issued, in Unix milliseconds: revocation compares it with a
    /// not-before time, and whole seconds would let a token issued in the same second as a
    /// dismissal survive it. Tokens without it count as issued at the start of `iat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_ms: Option<i64>,
}

impl Claims {
    /// When the token was issued, in Unix milliseconds.
    pub fn issued_at_ms(&self) -> i64 {
        self.iat_ms.unwrap_or(self.iat.saturating_mul(1000))
    }
}

/// The caller of a request, as its verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User {
        user_id: UserId,
        org_id: OrgId,
        admin: bool,
    },
    Service {
        name: String,
    },
}

impl Principal {
    pub fn from_claims(claims: &Claims) -> Result<Self, AuthError> {
        if let Some(name) = claims.sub.strip_prefix("service:") {
            return Ok(Principal::Service {
                name: name.to_owned(),
            });
        }
        let user_id = claims
            .sub
            .parse::<UserId>()
            .map_err(|_| AuthError::Malformed)?;
        let org_id = OrgId::from_uuid(claims.org.ok_or(AuthError::Malformed)?);
        Ok(Principal::User {
            user_id,
            org_id,
            admin: claims.admin,
        })
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing `authorization: Bearer <token>` metadata; sign in with AuthService.Login")]
    Missing,
    #[error("access token is malformed")]
    Malformed,
    #[error("access token has expired; refresh it with AuthService.RefreshToken")]
    Expired,
    #[error("access token is not signed by a key this deployment trusts")]
    UnknownKey,
    #[error("access token signature or claims are invalid")]
    Invalid,
    #[error("access token was revoked (dismissal, lost admin rights, a password change or a sign-out everywhere); refresh it (AuthService.RefreshToken) or sign in again")]
    Revoked,
    #[error("cannot fetch signing keys from identity: {0}")]
    KeysUnavailable(String),
}

/// Where public keys come from.
#[async_trait]
pub trait KeySource: Send + Sync {
    async fn fetch(&self) -> Result<Vec<pb::Jwk>, AuthError>;
}

/// Fetches the key set from identity's `AuthService.GetJwks` over gRPC.
pub struct GrpcKeySource {
    endpoint: String,
}

impl GrpcKeySource {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
        }
    }
}

#[async_trait]
impl KeySource for GrpcKeySource {
    async fn fetch(&self) -> Result<Vec<pb::Jwk>, AuthError> {
        let mut client = pb::auth_service_client::AuthServiceClient::connect(self.endpoint.clone())
            .await
            .map_err(|e| AuthError::KeysUnavailable(e.to_string()))?;
        let mut request = tonic::Request::new(pb::GetJwksRequest {});
        crate::telemetry::inject_into_metadata(request.metadata_mut());
        let jwks = client
            .get_jwks(request)
            .await
            .map_err(|e| AuthError::KeysUnavailable(e.message().to_owned()))?
            .into_inner();
        Ok(jwks.keys)
    }
}

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

/// Verifies access tokens. Cheap to clone.
///
/// A token's signature is checked once: the claims of tokens already verified are kept (up
/// to [`VERIFIED_CAPACITY`], keyed by the whole token) until they expire, so a caller that
/// sends the same token thousands of times a second costs one Ed25519 verification, not
/// thousands. A changed key set empties the memo.
#[derive(Clone)]
pub struct TokenVerifier {
    cache: Arc<RwLock<KeyCache>>,
    source: Option<Arc<dyn KeySource>>,
    validation: Arc<Validation>,
    verified: Arc<std::sync::Mutex<HashMap<String, Claims>>>,
    /// Bumped on every key refresh: a verification that began under an older key set is not
    /// remembered, so a token signed by a just-withdrawn key cannot slip into the memo.
    key_generation: Arc<std::sync::atomic::AtomicU64>,
    /// Subjects whose older tokens are refused, checked on every call (remembered or not).
    revocations: Revocations,
    following: Arc<std::sync::atomic::AtomicBool>,
}

/// How many verified tokens are remembered (emptied when full).
pub const VERIFIED_CAPACITY: usize = 10_000;

const REFETCH_AFTER: Duration = Duration::from_secs(5);

impl TokenVerifier {
    /// A verifier that trusts exactly these keys (identity uses its own).
    pub fn from_jwks(keys: &[pb::Jwk]) -> Result<Self, AuthError> {
        let verifier = Self::new(None);
        let decoded = decode_keys(keys)?;
        // A fresh lock is never contended.
        if let Ok(mut cache) = verifier.cache.try_write() {
            cache.keys = decoded;
        }
        Ok(verifier)
    }

    /// A verifier that fetches keys from `source` on first use and on an unknown key id.
    pub fn from_source(source: Arc<dyn KeySource>) -> Self {
        Self::new(Some(source))
    }

    /// A verifier with identity's keys, fetched over gRPC from `identity_endpoint`: what every
    /// service but identity verifies with.
    pub fn from_identity(identity_endpoint: impl Into<String>) -> Self {
        Self::from_source(Arc::new(GrpcKeySource::new(identity_endpoint)))
    }

    fn new(source: Option<Arc<dyn KeySource>>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = 5;
        Self {
            cache: Arc::new(RwLock::new(KeyCache {
                keys: HashMap::new(),
                fetched_at: None,
            })),
            source,
            validation: Arc::new(validation),
            verified: Arc::new(std::sync::Mutex::new(HashMap::new())),
            key_generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            revocations: Revocations::new(),
            following: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// The revocations this verifier applies.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Starts following the revocations topic (once per verifier, however many services of
    /// the process share it) and waits, at most `catch_up`, until it has read the topic to its
    /// end, so a restarted replica refuses a token revoked while it was down before it serves.
    pub async fn follow_revocations(
        &self,
        kafka: KafkaSettings,
        catch_up: Duration,
        shutdown: CancellationToken,
    ) {
        if !self.following.swap(true, Ordering::SeqCst) {
            tokio::spawn(crate::revocation::follow(
                kafka,
                self.revocations.clone(),
                shutdown,
            ));
        }
        if !self.revocations.wait_caught_up(catch_up).await {
            tracing::warn!(
                waited_ms = catch_up.as_millis() as u64,
                "revocations topic not read to its end yet; serving, and revocations apply as they arrive"
            );
        }
    }

    fn refuse_revoked(&self, claims: Claims) -> Result<Claims, AuthError> {
        if self
            .revocations
            .is_revoked(&claims.sub, claims.issued_at_ms())
        {
            metrics::counter!(crate::metrics::TOKENS_REVOKED).increment(1);
            return Err(AuthError::Revoked);
        }
        Ok(claims)
    }

    fn remembered(&self, token: &str) -> Option<Claims> {
        let now = chrono::Utc::now().timestamp();
        let verified = self.verified.lock().ok()?;
        verified
            .get(token)
            .filter(|c| c.exp + self.validation.leeway as i64 > now)
            .cloned()
    }

    fn remember(&self, token: &str, claims: &Claims, generation: u64) {
        if let Ok(mut verified) = self.verified.lock() {
            if self.key_generation.load(Ordering::SeqCst) != generation {
                return;
            }
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
            verified.insert(token.to_owned(), claims.clone());
        }
    }

    /// Verifies a bearer token and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if let Some(claims) = self.remembered(token) {
            return self.refuse_revoked(claims);
        }
        let generation = self.key_generation.load(Ordering::SeqCst);
        let claims = self.verify_signature(token).await?;
        self.remember(token, &claims, generation);
        self.refuse_revoked(claims)
    }

    async fn verify_signature(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Invalid);
        }
        let kid = header.kid.ok_or(AuthError::Malformed)?;
        if let Some(claims) = self.verify_with_cached(&kid, token).await? {
            return Ok(claims);
        }
        self.refresh().await?;
        self.verify_with_cached(&kid, token)
            .await?
            .ok_or(AuthError::UnknownKey)
    }

    async fn verify_with_cached(
        &self,
        kid: &str,
        token: &str,
    ) -> Result<Option<Claims>, AuthError> {
        let cache = self.cache.read().await;
        let Some(key) = cache.keys.get(kid) else {
            return Ok(None);
        };
        match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
            Ok(data) => Ok(Some(data.claims)),
            Err(err) => Err(match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            }),
        }
    }

    async fn refresh(&self) -> Result<(), AuthError> {
        let Some(source) = &self.source else {
            return Ok(());
        };
        {
            let cache = self.cache.read().await;
            if cache
                .fetched_at
                .is_some_and(|at| at.elapsed() < REFETCH_AFTER)
            {
                return Ok(());
            }
        }
        let keys = decode_keys(&source.fetch().await?)?;
        let mut cache = self.cache.write().await;
        cache.keys = keys;
        cache.fetched_at = Some(Instant::now());
        self.key_generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut verified) = self.verified.lock() {
            verified.clear();
        }
        Ok(())
    }
}

fn decode_keys(keys: &[pb::Jwk]) -> Result<HashMap<String, DecodingKey>, AuthError> {
    keys.iter()
        .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
        .map(|k| {
            DecodingKey::from_ed_components(&k.x)
                .map(|key| (k.kid.clone(), key))
                .map_err(|e| {
                    AuthError::KeysUnavailable(format!("key {} cannot be read: {e}", k.kid))
                })
        })
        .collect()
}

/// Reads the principal the auth layer attached to a request.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<&Principal, tonic::Status> {
    request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| tonic::Status::unauthenticated(AuthError::Missing.to_string()))
}
