//! Who is calling: access-token claims, their verification against the identity service's
//! JWKS, and the [`Principal`] that handlers read from the request.
//!
//! Tokens are EdDSA (Ed25519) JWTs issued by identity. Every service verifies them locally with
//! the public keys identity publishes (`AuthService.GetJwks`); a token signed with a key it has
//! not seen makes it fetch the set again (at most every few seconds), so key rotation needs no
//! restart.
//!
//! Service principals are least privilege. A person's token names the audience [`AUDIENCE`]
//! and reaches every service; a service's token names the one service it is for
//! (`mailroom:<service>`, [`service_audience`]) and is refused by any other
//! ([`Claims::addressed_to`]), and each service lists, in one [`ServiceCallers`] table, which
//! service principal may call which of its RPCs. The gRPC server applies both before any
//! handler runs ([`crate::grpc`]). The [`OPERATOR`] principal is the deployment's operator
//! (`mailroom ctl`), whose credential no workload holds.

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
/// The audience of a person's access token: every Mailroom service accepts it.
pub const AUDIENCE: &str = "mailroom";
/// What a service token's audience starts with; the service it is for follows.
pub const SERVICE_AUDIENCE_PREFIX: &str = "mailroom:";
/// The services a service token may be for (its audience names one).
pub const SERVICES: [&str; 5] = ["identity", "access", "mailboxes", "sync", "invitations"];
/// The operator's service principal (`mailroom ctl` run by whoever operates the deployment):
/// it alone creates organisations and changes their plans, and no workload holds its secret.
pub const OPERATOR: &str = "operator";

/// The audience of a service token for `service` (`mailroom:mailboxes`).
pub fn service_audience(service: &str) -> String {
    format!("{SERVICE_AUDIENCE_PREFIX}{service}")
}

/// A token's `aud` claim: one audience, as identity issues it, or several (RFC 7519 allows a
/// list; a token is accepted where any of them fits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "AudienceClaim", into = "AudienceClaim")]
pub struct Audience(Vec<String>);

#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum AudienceClaim {
    One(String),
    Many(Vec<String>),
}

impl From<AudienceClaim> for Audience {
    fn from(claim: AudienceClaim) -> Self {
        match claim {
            AudienceClaim::One(one) => Audience(vec![one]),
            AudienceClaim::Many(many) => Audience(many),
        }
    }
}

impl From<Audience> for AudienceClaim {
    fn from(audience: Audience) -> Self {
        let mut names = audience.0;
        if names.len() == 1 {
            AudienceClaim::One(names.remove(0))
        } else {
            AudienceClaim::Many(names)
        }
    }
}

impl From<&str> for Audience {
    fn from(one: &str) -> Self {
        Audience(vec![one.to_owned()])
    }
}

impl From<String> for Audience {
    fn from(one: String) -> Self {
        Audience(vec![one])
    }
}

impl FromIterator<String> for Audience {
    fn from_iter<I: IntoIterator<Item = String>>(names: I) -> Self {
        Audience(names.into_iter().collect())
    }
}

impl Audience {
    /// The audiences named.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|n| n == name)
    }

    /// Whether any audience named is a Mailroom one (a person's, or a service's).
    fn is_mailroom(&self) -> bool {
        self.0.iter().any(|n| {
            n == AUDIENCE
                || n.strip_prefix(SERVICE_AUDIENCE_PREFIX)
                    .is_some_and(|service| SERVICES.contains(&service))
        })
    }
}

impl std::fmt::Display for Audience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

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
    /// [`AUDIENCE`] for a person; `mailroom:<service>` for a service, the one it may call.
    pub aud: Audience,
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

    /// Whether this token may be presented to `service` (one of [`SERVICES`]): a person's
    /// token to any service, a service's token only to the service its audience names, so a
    /// service that receives a peer's token cannot replay it elsewhere.
    pub fn addressed_to(&self, service: &str) -> Result<(), AuthError> {
        let fits = if self.sub.starts_with("service:") {
            self.aud.contains(&service_audience(service))
        } else {
            self.aud.contains(AUDIENCE)
        };
        if fits {
            return Ok(());
        }
        Err(AuthError::NotForThisService {
            service: service.to_owned(),
            audience: self.aud.to_string(),
        })
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
    #[error("this token is for {audience}, not for the {service} service: ask identity for a token whose audience is `{service}` (AuthService.IssueServiceToken)")]
    NotForThisService { service: String, audience: String },
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
        // The audience is checked here for being Mailroom's, and by each service for being
        // its own (`Claims::addressed_to`): a process may host several services.
        validation.validate_aud = false;
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
            Ok(data) if data.claims.aud.is_mailroom() => Ok(Some(data.claims)),
            Ok(_) => Err(AuthError::Invalid),
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

/// Which service principals may call which RPCs of one service: the service's whole list, in
/// one table in its crate (`callers.rs`), applied once by the gRPC server's auth layer before
/// any handler runs. People are not listed here: their tokens reach every RPC, and each
/// handler decides what a person may do. A service principal, or an RPC, that is not listed
/// is refused.
#[derive(Debug, Clone, Copy)]
pub struct ServiceCallers {
    /// The service these are the callers of: the audience its service tokens name.
    pub service: &'static str,
    /// Each service principal (the client id it signs in with) and the full method paths
    /// (`/mailroom.mailboxes.v1.MailboxService/GetMailboxCredentials`) it may call.
    pub allowed: &'static [(&'static str, &'static [&'static str])],
}

impl ServiceCallers {
    /// Whether service principal `name` may call `method` (a full method path).
    pub fn permits(&self, name: &str, method: &str) -> bool {
        self.allowed
            .iter()
            .any(|(caller, methods)| *caller == name && methods.contains(&method))
    }

    /// What is wrong with the table, if anything: a service Mailroom does not have, or a
    /// method that is not one of `served` (full gRPC service names) or that no proto declares.
    /// A typo would otherwise refuse a caller that should pass, at run time.
    pub fn mistakes(&self, served: &[&str]) -> Vec<String> {
        let mut mistakes = Vec::new();
        if !SERVICES.contains(&self.service) {
            mistakes.push(format!("`{}` is not a Mailroom service", self.service));
        }
        let declared = declared_methods();
        for (caller, methods) in self.allowed {
            for method in *methods {
                let service = method
                    .strip_prefix('/')
                    .and_then(|m| m.split_once('/'))
                    .map(|(service, _)| service);
                if !service.is_some_and(|s| served.contains(&s)) {
                    mistakes.push(format!(
                        "{caller}: `{method}` is not a method of {}",
                        served.join(", ")
                    ));
                } else if !declared.contains(*method) {
                    mistakes.push(format!("{caller}: `{method}` is declared by no proto"));
                }
            }
        }
        mistakes
    }
}

/// Whether `path` is a method the protos declare (computed once per process).
pub(crate) fn is_declared_method(path: &str) -> bool {
    static DECLARED: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    DECLARED.get_or_init(declared_methods).contains(path)
}

/// Every method path the protos declare (`/package.Service/Method`).
fn declared_methods() -> std::collections::HashSet<String> {
    use prost::Message;
    let Ok(set) = prost_types::FileDescriptorSet::decode(mailroom_proto::FILE_DESCRIPTOR_SET)
    else {
        return Default::default();
    };
    set.file
        .iter()
        .flat_map(|file| {
            file.service.iter().flat_map(move |service| {
                service.method.iter().map(move |method| {
                    format!("/{}.{}/{}", file.package(), service.name(), method.name())
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, aud: Audience) -> Claims {
        Claims {
            sub: sub.into(),
            org: None,
            admin: false,
            iss: ISSUER.into(),
            aud,
            iat: 0,
            exp: 0,
            jti: String::new(),
            iat_ms: None,
        }
    }

    #[test]
    fn a_service_token_reaches_only_the_service_it_names() {
        let sync_for_mailboxes = claims("service:sync", service_audience("mailboxes").into());
        assert!(sync_for_mailboxes.addressed_to("mailboxes").is_ok());
        let refused = sync_for_mailboxes.addressed_to("identity").unwrap_err();
        assert!(matches!(refused, AuthError::NotForThisService { .. }));
        assert!(
            refused.to_string().contains("audience is `identity`"),
            "{refused}"
        );
        // A service token in the old form (every service's audience) reaches none.
        let old = claims("service:sync", AUDIENCE.into());
        assert!(SERVICES.iter().all(|s| old.addressed_to(s).is_err()));
        // A person's token reaches every service; one addressed to a service reaches none.
        let person = claims(&Uuid::new_v4().to_string(), AUDIENCE.into());
        assert!(SERVICES.iter().all(|s| person.addressed_to(s).is_ok()));
        let odd = claims(
            &Uuid::new_v4().to_string(),
            service_audience("access").into(),
        );
        assert!(odd.addressed_to("access").is_err());
    }

    #[test]
    fn the_audience_is_one_name_or_a_list() {
        let one: Claims = serde_json::from_value(serde_json::json!({
            "sub": "service:sync", "iss": ISSUER, "aud": "mailroom:mailboxes",
            "iat": 0, "exp": 0, "jti": "j"
        }))
        .unwrap();
        assert_eq!(one.aud.names(), ["mailroom:mailboxes"]);
        assert_eq!(
            serde_json::to_value(&one.aud).unwrap(),
            serde_json::json!("mailroom:mailboxes")
        );
        let many: Claims = serde_json::from_value(serde_json::json!({
            "sub": "service:operator", "iss": ISSUER, "aud": ["mailroom:identity", "mailroom:access"],
            "iat": 0, "exp": 0, "jti": "j"
        }))
        .unwrap();
        assert!(many.addressed_to("access").is_ok());
        assert!(many.addressed_to("sync").is_err());
        assert!(many.aud.is_mailroom());
        assert!(!Audience::from("elsewhere").is_mailroom());
        assert!(!Audience::from("mailroom:elsewhere").is_mailroom());
    }

    #[test]
    fn a_callers_table_admits_only_what_it_lists_and_names_real_methods() {
        const CALLERS: ServiceCallers = ServiceCallers {
            service: "mailboxes",
            allowed: &[(
                "sync",
                &["/mailroom.mailboxes.v1.MailboxService/GetMailboxCredentials"],
            )],
        };
        let served = ["mailroom.mailboxes.v1.MailboxService"];
        assert!(CALLERS.mistakes(&served).is_empty());
        assert!(CALLERS.permits(
            "sync",
            "/mailroom.mailboxes.v1.MailboxService/GetMailboxCredentials"
        ));
        assert!(!CALLERS.permits(
            "invitations",
            "/mailroom.mailboxes.v1.MailboxService/GetMailboxCredentials"
        ));
        assert!(!CALLERS.permits("sync", "/mailroom.mailboxes.v1.MailboxService/GetMailbox"));

        const TYPO: ServiceCallers = ServiceCallers {
            service: "mailbox",
            allowed: &[(
                "sync",
                &[
                    "/mailroom.mailboxes.v1.MailboxService/GetMailboxCredential",
                    "/mailroom.identity.v1.IdentityService/GetUser",
                ],
            )],
        };
        assert_eq!(
            TYPO.mistakes(&served).len(),
            3,
            "{:?}",
            TYPO.mistakes(&served)
        );
    }
}
