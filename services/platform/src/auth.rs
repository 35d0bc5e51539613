//! Who is calling: access-token claims, their verification against the identity service's
//! JWKS, and the [`Principal`] that handlers read from the request.
//!
//! Tokens are EdDSA (Ed25519) JWTs issued by identity. Every service verifies them locally with
//! the public keys identity publishes (`AuthService.GetJwks`), fetched again in the background
//! every few minutes (`MAILROOM_JWKS_REFRESH_MS`) so a key withdrawn at identity is refused
//! everywhere within that time; a token signed with a key it has not seen makes it fetch the
//! set at once (one fetch for every caller waiting, at most one per `MAILROOM_JWKS_RETRY_MS`),
//! so key rotation needs no restart. See [`TokenVerifier`].
//!
//! Service principals are least privilege. A person's token names the audience [`AUDIENCE`]
//! and reaches every service; a service's token names the one service it is for
//! (`mailroom:<service>`, [`service_audience`]) and is refused by any other
//! ([`Claims::addressed_to`]), and each service lists, in one [`ServiceCallers`] table, which
//! service principal may call which of its RPCs. The gRPC server applies both before any
//! handler runs ([`crate::grpc`]). The [`OPERATOR`] principal is the deployment's operator
//! (`mailroom ctl`), whose credential no workload holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mailroom_types::{OrgId, UserId};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
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
    #[error("this service has not yet read the token revocations published before it started; try again in a moment")]
    RevocationsNotCaughtUp,
    #[error("this token is for {audience}, not for the {service} service: ask identity for a token whose audience is `{service}` (AuthService.IssueServiceToken)")]
    NotForThisService { service: String, audience: String },
}

/// Where public keys come from.
#[async_trait]
pub trait KeySource: Send + Sync {
    async fn fetch(&self) -> Result<Vec<pb::Jwk>, AuthError>;

    /// Takes the deployment's fetch timeout ([`KeyRefresh::timeout`]), for connecting and for
    /// each call; a source without timeouts of its own ignores it.
    fn use_timeout(&self, _timeout: Duration) {}

    /// Takes the deployment's TLS for `https://` endpoints (`MAILROOM_GRPC_TLS__*`); a source
    /// that does not connect ignores it.
    fn use_tls(&self, _tls: tonic::transport::ClientTlsConfig) {}
}

/// Fetches the key set from identity's `AuthService.GetJwks` over gRPC, on one channel kept
/// for the life of the source (connected on first use, connected again after identity went
/// away), with a connect timeout and a timeout on each call.
pub struct GrpcKeySource {
    endpoint: String,
    /// Milliseconds; changed by [`KeySource::use_timeout`] until the channel is made (connect)
    /// or on every call (call), so the deployment's `MAILROOM_JWKS_TIMEOUT_MS` applies.
    connect_timeout_ms: std::sync::atomic::AtomicU64,
    call_timeout_ms: std::sync::atomic::AtomicU64,
    /// TLS for an `https://` endpoint ([`KeySource::use_tls`]; else the public web roots).
    tls: std::sync::Mutex<Option<tonic::transport::ClientTlsConfig>>,
    channel: tokio::sync::OnceCell<tonic::transport::Channel>,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl GrpcKeySource {
    /// A source for identity at `endpoint` (`http://host:port`), with the default timeouts.
    pub fn new(endpoint: impl Into<String>) -> Self {
        let defaults = KeyRefresh::default();
        Self::with_timeouts(endpoint, defaults.timeout, defaults.timeout)
    }

    /// A source that gives up connecting after `connect_timeout` and on a call after
    /// `call_timeout`.
    pub fn with_timeouts(
        endpoint: impl Into<String>,
        connect_timeout: Duration,
        call_timeout: Duration,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            connect_timeout_ms: millis(connect_timeout).into(),
            call_timeout_ms: millis(call_timeout).into(),
            tls: std::sync::Mutex::new(None),
            channel: tokio::sync::OnceCell::new(),
        }
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms.load(Ordering::Relaxed))
    }

    /// The channel to identity, made on first use (it needs a Tokio runtime).
    async fn channel(&self) -> Result<tonic::transport::Channel, AuthError> {
        self.channel
            .get_or_try_init(|| async {
                let endpoint = tonic::transport::Endpoint::from_shared(self.endpoint.clone())
                    .map_err(|e| {
                        AuthError::KeysUnavailable(format!(
                            "identity endpoint `{}` is not a URL: {e}",
                            self.endpoint
                        ))
                    })?;
                let endpoint = if endpoint.uri().scheme_str() == Some("https") {
                    let tls = self
                        .tls
                        .lock()
                        .ok()
                        .and_then(|tls| tls.clone())
                        .unwrap_or_else(|| crate::grpc_tls::client_tls_config(None, None));
                    endpoint.tls_config(tls).map_err(|e| {
                        AuthError::KeysUnavailable(format!(
                            "TLS to identity at `{}` cannot be set up: {}",
                            self.endpoint,
                            crate::grpc_tls::chain(&e)
                        ))
                    })?
                } else {
                    endpoint
                };
                // Each call carries its own timeout (`fetch`): one set here would cap it.
                Ok(endpoint
                    .connect_timeout(Duration::from_millis(
                        self.connect_timeout_ms.load(Ordering::Relaxed),
                    ))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(10))
                    .connect_lazy())
            })
            .await
            .cloned()
    }
}

#[async_trait]
impl KeySource for GrpcKeySource {
    async fn fetch(&self) -> Result<Vec<pb::Jwk>, AuthError> {
        let mut client = pb::auth_service_client::AuthServiceClient::new(self.channel().await?);
        let mut request = tonic::Request::new(pb::GetJwksRequest {});
        request.set_timeout(self.call_timeout());
        crate::telemetry::inject_into_metadata(request.metadata_mut());
        // The endpoint is logged where the failure is (`fetch_shared`), never sent to callers
        // (the gRPC layer answers a generic UNAVAILABLE).
        let jwks = client
            .get_jwks(request)
            .await
            .map_err(|e| AuthError::KeysUnavailable(format!("{}: {}", self.endpoint, e.message())))?
            .into_inner();
        Ok(jwks.keys)
    }

    fn use_timeout(&self, timeout: Duration) {
        self.connect_timeout_ms
            .store(millis(timeout), Ordering::Relaxed);
        self.call_timeout_ms
            .store(millis(timeout), Ordering::Relaxed);
    }

    fn use_tls(&self, tls: tonic::transport::ClientTlsConfig) {
        if let Ok(mut current) = self.tls.lock() {
            *current = Some(tls);
        }
    }
}

/// How a verifier keeps identity's keys fresh (`MAILROOM_JWKS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRefresh {
    /// The set is fetched again, in the background, this long after the last fetch that
    /// succeeded: a key withdrawn at identity is refused within it.
    pub every: Duration,
    /// At most one fetch per this interval for tokens naming a key not in the set, and how
    /// long a failed fetch is remembered (and retried in the background after).
    pub retry: Duration,
    /// How long one fetch may take, connecting included.
    pub timeout: Duration,
    /// How long the set may go unconfirmed (no fetch succeeding) before every failed fetch
    /// is logged as an error and `mailroom_auth_jwks_stale` says 1: a key withdrawn at
    /// identity meanwhile is still trusted here.
    pub max_stale: Duration,
}

/// The shortest retry interval used, whatever is configured: a failed fetch is never tried
/// again at once (the configuration refuses less, [`crate::config::PlatformConfig::validate`]).
pub const MIN_KEY_RETRY: Duration = Duration::from_millis(100);

impl Default for KeyRefresh {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(300),
            retry: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            max_stale: Duration::from_secs(3600),
        }
    }
}

impl KeyRefresh {
    pub fn from_config(config: &crate::config::PlatformConfig) -> Self {
        Self {
            every: Duration::from_millis(config.jwks_refresh_ms.max(1)),
            retry: Duration::from_millis(config.jwks_retry_ms).max(MIN_KEY_RETRY),
            timeout: Duration::from_millis(config.jwks_timeout_ms.max(1)),
            max_stale: Duration::from_millis(config.jwks_max_stale_ms.max(1)),
        }
    }
}

/// One published key: its public part as published (to tell a changed key) and decoded.
#[derive(Clone)]
struct Key {
    x: String,
    decoding: DecodingKey,
}

type KeySet = Arc<HashMap<String, Key>>;

/// The key set as last fetched and what became of the fetches. Every decision about
/// fetching is made here, from the time it is given (no clock, no I/O), and tested so.
#[derive(Default)]
struct KeyState {
    /// The last set fetched successfully (or given); a failed fetch leaves it as it is.
    keys: KeySet,
    /// When the set was last fetched successfully.
    fetched_at: Option<Instant>,
    /// When the last fetch ended, and its error if it failed.
    last: Option<(Instant, Option<AuthError>)>,
    /// Fetches ended so far. A caller that waited for another's fetch takes its outcome.
    fetches: u64,
    /// Bumped whenever a key is withdrawn or changed: a verification begun under an older
    /// generation is not remembered, and the remembered ones are forgotten.
    generation: u64,
}

/// What a fetch did to the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetched {
    Unchanged,
    /// Keys were added, none withdrawn.
    Added,
    /// A key was withdrawn (or its public part changed).
    Withdrawn,
}

impl Fetched {
    fn label(self) -> &'static str {
        match self {
            Fetched::Unchanged => "unchanged",
            Fetched::Added | Fetched::Withdrawn => "changed",
        }
    }
}

impl KeyState {
    /// When the background refresher should fetch next: at once if the set was never
    /// fetched, `retry` after a failure, else `every` after the last success.
    fn next_refresh(&self, now: Instant, policy: &KeyRefresh) -> Instant {
        match (&self.last, self.fetched_at) {
            (Some((at, Some(_))), _) => *at + policy.retry.min(policy.every).max(MIN_KEY_RETRY),
            (_, Some(at)) => at + policy.every,
            (_, None) => now,
        }
    }

    /// For a token naming a key not in the set: `None` to fetch now, or the answer to give
    /// without fetching, when a fetch ended less than `retry` ago (its error if it failed;
    /// if it succeeded, the key is not identity's).
    fn refusal_for_unknown_key(&self, now: Instant, policy: &KeyRefresh) -> Option<AuthError> {
        match &self.last {
            Some((at, failed)) if now.saturating_duration_since(*at) < policy.retry => {
                Some(failed.clone().unwrap_or(AuthError::UnknownKey))
            }
            _ => None,
        }
    }

    /// Takes a fetched set.
    fn fetched(&mut self, now: Instant, keys: HashMap<String, Key>) -> Fetched {
        let withdrawn = self
            .keys
            .iter()
            .any(|(kid, old)| keys.get(kid).is_none_or(|new| new.x != old.x));
        let added = keys.keys().any(|kid| !self.keys.contains_key(kid));
        self.keys = Arc::new(keys);
        self.fetched_at = Some(now);
        self.last = Some((now, None));
        self.fetches += 1;
        if withdrawn {
            self.generation += 1;
            Fetched::Withdrawn
        } else if added {
            Fetched::Added
        } else {
            Fetched::Unchanged
        }
    }

    /// Notes a failed fetch; the set stays as it was.
    fn failed(&mut self, now: Instant, error: AuthError) {
        self.last = Some((now, Some(error)));
        self.fetches += 1;
    }

    /// How long the set has gone without a successful fetch (since `now`), if it was ever
    /// fetched.
    fn unconfirmed_for(&self, now: Instant) -> Option<Duration> {
        self.fetched_at.map(|at| now.saturating_duration_since(at))
    }

    /// The outcome of the last fetch.
    fn last_outcome(&self) -> Result<(), AuthError> {
        match &self.last {
            Some((_, Some(error))) => Err(error.clone()),
            _ => Ok(()),
        }
    }
}

/// The keys a verifier trusts, where they come from, and the tokens verified with them.
struct KeyStore {
    source: Option<Arc<dyn KeySource>>,
    refresh: std::sync::RwLock<KeyRefresh>,
    state: std::sync::RwLock<KeyState>,
    /// Held while fetching: one fetch at a time, shared by whoever asked meanwhile.
    fetching: tokio::sync::Mutex<()>,
    refresher_started: AtomicBool,
    /// Claims of tokens already verified, by token (see [`TokenVerifier`]).
    verified: std::sync::Mutex<HashMap<String, Claims>>,
}

impl KeyStore {
    fn policy(&self) -> KeyRefresh {
        self.refresh.read().map(|p| *p).unwrap_or_default()
    }

    fn keys(&self) -> KeySet {
        self.state
            .read()
            .map(|s| s.keys.clone())
            .unwrap_or_default()
    }

    fn generation(&self) -> u64 {
        self.state.read().map(|s| s.generation).unwrap_or(u64::MAX)
    }

    fn forget_verified(&self) {
        if let Ok(mut verified) = self.verified.lock() {
            verified.clear();
        }
    }

    /// A token names `kid`, which is not in the set: fetch the set (unless one ended less
    /// than the retry interval ago), sharing a fetch already under way.
    async fn refresh_for_unknown_key(&self) -> Result<(), AuthError> {
        let (refusal, seen) = {
            let state = self.state.read().map_err(|_| poisoned())?;
            (
                state.refusal_for_unknown_key(Instant::now(), &self.policy()),
                state.fetches,
            )
        };
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        self.fetch_shared(seen, "unknown_key").await
    }

    /// Fetches the set, unless a fetch has ended since the caller looked (`seen` fetches had
    /// ended then): then that fetch's outcome is the caller's too. So however many callers
    /// ask at once, identity is asked once.
    async fn fetch_shared(&self, seen: u64, reason: &'static str) -> Result<(), AuthError> {
        let _one_at_a_time = self.fetching.lock().await;
        {
            let state = self.state.read().map_err(|_| poisoned())?;
            if state.fetches != seen {
                return state.last_outcome();
            }
        }
        let Some(source) = &self.source else {
            return Ok(());
        };
        let policy = self.policy();
        let fetched = match tokio::time::timeout(policy.timeout, source.fetch()).await {
            Ok(Ok(keys)) => Ok(decode_published(&keys)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(AuthError::KeysUnavailable(format!(
                "no answer within {} ms",
                policy.timeout.as_millis()
            ))),
        };
        let mut state = self.state.write().map_err(|_| poisoned())?;
        let was_failing = matches!(state.last, Some((_, Some(_))));
        match fetched {
            Ok(keys) => {
                let count = keys.len();
                let outcome = state.fetched(Instant::now(), keys);
                drop(state);
                metrics::gauge!(crate::metrics::JWKS_STALE).set(0.0);
                metrics::counter!(crate::metrics::JWKS_FETCHES, "outcome" => outcome.label())
                    .increment(1);
                if outcome == Fetched::Withdrawn {
                    self.forget_verified();
                    tracing::info!(keys = count, reason, "signing keys withdrawn at identity; tokens signed with them are refused from now on");
                } else if was_failing {
                    tracing::info!(
                        keys = count,
                        reason,
                        "signing keys fetched from identity again"
                    );
                }
                Ok(())
            }
            Err(error) => {
                let now = Instant::now();
                state.failed(now, error.clone());
                let known = state.keys.len();
                let unconfirmed = state.unconfirmed_for(now);
                drop(state);
                metrics::counter!(crate::metrics::JWKS_FETCHES, "outcome" => "failed").increment(1);
                if let Some(age) = unconfirmed.filter(|age| *age >= policy.max_stale) {
                    metrics::gauge!(crate::metrics::JWKS_STALE).set(1.0);
                    tracing::error!(
                        %error,
                        known,
                        unconfirmed_s = age.as_secs(),
                        max_stale_s = policy.max_stale.as_secs(),
                        "signing keys not confirmed by identity for longer than allowed: a key withdrawn there is still trusted here"
                    );
                } else if was_failing {
                    tracing::debug!(%error, known, reason, "signing keys still cannot be fetched");
                } else {
                    tracing::warn!(%error, known, reason, "signing keys cannot be fetched from identity; verifying with the keys fetched last");
                }
                Err(error)
            }
        }
    }

    /// Starts the background refresh, once, if keys come from a source and a Tokio runtime
    /// is at hand. It holds the store only while fetching, and ends once every verifier
    /// sharing it is gone.
    fn start_refresher(self: &Arc<Self>) {
        if self.source.is_none() || self.refresher_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.refresher_started.swap(true, Ordering::SeqCst) {
            runtime.spawn(refresh_in_background(Arc::downgrade(self)));
        }
    }
}

/// Fetches the key set whenever it is due (see [`KeyState::next_refresh`]), until the store
/// is dropped.
async fn refresh_in_background(store: std::sync::Weak<KeyStore>) {
    loop {
        let (due, seen) = {
            let Some(store) = store.upgrade() else { return };
            let Ok(state) = store.state.read() else {
                return;
            };
            (
                state.next_refresh(Instant::now(), &store.policy()),
                state.fetches,
            )
        };
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
            continue;
        }
        let Some(store) = store.upgrade() else { return };
        // The outcome is logged and counted by the fetch; a failure is retried when due.
        let _ = store.fetch_shared(seen, "schedule").await;
    }
}

fn poisoned() -> AuthError {
    AuthError::KeysUnavailable("the key cache lock was poisoned".into())
}

/// Verifies access tokens. Cheap to clone; every clone shares the keys and what they know.
///
/// Keys come from identity ([`TokenVerifier::from_identity`]) or are given
/// ([`TokenVerifier::from_jwks`], identity's own). Fetched keys are kept fresh in the
/// background, every [`KeyRefresh::every`] after the last fetch that succeeded, so a key
/// withdrawn at identity is refused within that time; a token naming a key not in the set
/// makes the verifier fetch the set at once — at most once per [`KeyRefresh::retry`], and
/// however many such tokens arrive together, one fetch shared by all. A failed fetch keeps
/// the set fetched last (tokens signed with known keys go on verifying while identity is
/// down) and is remembered for [`KeyRefresh::retry`], so callers do not each try again.
///
/// A token's signature is checked once: the claims of tokens already verified are kept (up
/// to [`VERIFIED_CAPACITY`], keyed by the whole token) until they expire, so a caller that
/// sends the same token thousands of times a second costs one Ed25519 verification, not
/// thousands. A key withdrawn empties the memo.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<KeyStore>,
    validation: Arc<Validation>,
    /// Subjects whose older tokens are refused, checked on every call (remembered or not).
    revocations: Revocations,
    /// Set once the revocations topic is followed: from then on no token is accepted before
    /// the topic has been read to where it ended when following began.
    following: Arc<AtomicBool>,
}

/// How many verified tokens are remembered (emptied when full).
pub const VERIFIED_CAPACITY: usize = 10_000;

impl TokenVerifier {
    /// A verifier that trusts exactly these keys (identity uses its own).
    pub fn from_jwks(keys: &[pb::Jwk]) -> Result<Self, AuthError> {
        let verifier = Self::new(None);
        let decoded = decode_keys(keys)?;
        if let Ok(mut state) = verifier.keys.state.write() {
            state.keys = Arc::new(decoded);
        }
        Ok(verifier)
    }

    /// A verifier that fetches keys from `source`: on first use, for a key id it does not
    /// know, and in the background to keep them fresh.
    pub fn from_source(source: Arc<dyn KeySource>) -> Self {
        Self::new(Some(source))
    }

    /// A verifier with identity's keys, fetched over gRPC from `identity_endpoint`: what every
    /// service but identity verifies with. The default [`KeyRefresh`] applies until the host
    /// sets the deployment's ([`TokenVerifier::refresh_keys_with`]).
    pub fn from_identity(identity_endpoint: impl Into<String>) -> Self {
        Self::from_identity_with(identity_endpoint, KeyRefresh::default())
    }

    /// As [`TokenVerifier::from_identity`], keeping the keys fresh as `refresh` says.
    pub fn from_identity_with(identity_endpoint: impl Into<String>, refresh: KeyRefresh) -> Self {
        let source =
            GrpcKeySource::with_timeouts(identity_endpoint, refresh.timeout, refresh.timeout);
        let verifier = Self::from_source(Arc::new(source));
        verifier.refresh_keys_with(refresh);
        verifier
    }

    fn new(source: Option<Arc<dyn KeySource>>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        // The audience is checked here for being Mailroom's, and by each service for being
        // its own (`Claims::addressed_to`): a process may host several services.
        validation.validate_aud = false;
        validation.leeway = 5;
        Self {
            keys: Arc::new(KeyStore {
                source,
                refresh: std::sync::RwLock::new(KeyRefresh::default()),
                state: std::sync::RwLock::new(KeyState::default()),
                fetching: tokio::sync::Mutex::new(()),
                refresher_started: AtomicBool::new(false),
                verified: std::sync::Mutex::new(HashMap::new()),
            }),
            validation: Arc::new(validation),
            revocations: Revocations::new(),
            following: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sets how fetched keys are kept fresh, for this verifier and every clone of it (the
    /// host applies the deployment's settings, [`KeyRefresh::from_config`], before serving).
    pub fn refresh_keys_with(&self, refresh: KeyRefresh) {
        if let Ok(mut current) = self.keys.refresh.write() {
            *current = refresh;
        }
        if let Some(source) = &self.keys.source {
            source.use_timeout(refresh.timeout);
        }
    }

    /// Sets the TLS the keys are fetched with from an `https://` identity endpoint, for this
    /// verifier and every clone of it (the host applies `MAILROOM_GRPC_TLS__*` before serving).
    pub fn use_grpc_tls(&self, tls: tonic::transport::ClientTlsConfig) {
        if let Some(source) = &self.keys.source {
            source.use_tls(tls);
        }
    }

    /// How many times this verifier has fetched keys (successfully or not).
    pub fn key_fetches(&self) -> u64 {
        self.keys.state.read().map(|s| s.fetches).unwrap_or(0)
    }

    /// The revocations this verifier applies.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Starts following the revocations topic (once per verifier, however many services of
    /// the process share it) and waits, at most `catch_up`, until it has read the topic to its
    /// end. Until it has, every token is refused with [`AuthError::RevocationsNotCaughtUp`]
    /// (UNAVAILABLE): a replica that starts while a dismissal is on the topic never accepts
    /// the dismissed user's token, however long reading the topic takes.
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
                "revocations topic not read to its end yet; serving, and refusing tokens (UNAVAILABLE) until it is"
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
        let verified = self.keys.verified.lock().ok()?;
        verified
            .get(token)
            .filter(|c| c.exp + self.validation.leeway as i64 > now)
            .cloned()
    }

    fn remember(&self, token: &str, claims: &Claims, generation: u64) {
        if let Ok(mut verified) = self.keys.verified.lock() {
            if self.keys.generation() != generation {
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
        if self.following.load(Ordering::SeqCst) && !self.revocations.is_caught_up() {
            return Err(AuthError::RevocationsNotCaughtUp);
        }
        if let Some(claims) = self.remembered(token) {
            return self.refuse_revoked(claims);
        }
        let generation = self.keys.generation();
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
        self.keys.start_refresher();
        if let Some(claims) = self.verify_with(&self.keys.keys(), &kid, token)? {
            return Ok(claims);
        }
        if self.keys.source.is_none() {
            return Err(AuthError::UnknownKey);
        }
        self.keys.refresh_for_unknown_key().await?;
        self.verify_with(&self.keys.keys(), &kid, token)?
            .ok_or(AuthError::UnknownKey)
    }

    fn verify_with(
        &self,
        keys: &KeySet,
        kid: &str,
        token: &str,
    ) -> Result<Option<Claims>, AuthError> {
        let Some(key) = keys.get(kid) else {
            return Ok(None);
        };
        match jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation) {
            Ok(data) if data.claims.aud.is_mailroom() => Ok(Some(data.claims)),
            Ok(_) => Err(AuthError::Invalid),
            Err(err) => Err(match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            }),
        }
    }
}

/// The Ed25519 keys of a published set, by key id (other kinds are not Mailroom's).
fn decode_each(keys: &[pb::Jwk]) -> impl Iterator<Item = (&str, Result<Key, AuthError>)> {
    keys.iter()
        .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
        .map(|k| {
            let decoded = DecodingKey::from_ed_components(&k.x)
                .map(|decoding| Key {
                    x: k.x.clone(),
                    decoding,
                })
                .map_err(|e| {
                    AuthError::KeysUnavailable(format!("key {} cannot be read: {e}", k.kid))
                });
            (k.kid.as_str(), decoded)
        })
}

/// Every key of a set that must be whole (identity's own): one that cannot be read is an error.
fn decode_keys(keys: &[pb::Jwk]) -> Result<HashMap<String, Key>, AuthError> {
    decode_each(keys)
        .map(|(kid, key)| key.map(|key| (kid.to_owned(), key)))
        .collect()
}

/// The keys of a fetched set; one that cannot be read is left out (and said), so the rest —
/// and the withdrawal of any key no longer published — still apply.
fn decode_published(keys: &[pb::Jwk]) -> HashMap<String, Key> {
    decode_each(keys)
        .filter_map(|(kid, key)| match key {
            Ok(key) => Some((kid.to_owned(), key)),
            Err(error) => {
                tracing::warn!(%error, "a published signing key is left out");
                None
            }
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
    use std::sync::atomic::AtomicU64;

    fn jwk(kid: &str, byte: u8) -> pb::Jwk {
        use base64::Engine;
        pb::Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([byte; 32]),
            kid: kid.into(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        }
    }

    fn set(keys: &[(&str, u8)]) -> HashMap<String, Key> {
        let published: Vec<_> = keys.iter().map(|(kid, b)| jwk(kid, *b)).collect();
        decode_published(&published)
    }

    const POLICY: KeyRefresh = KeyRefresh {
        every: Duration::from_secs(60),
        retry: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        max_stale: Duration::from_secs(600),
    };

    #[test]
    fn a_fresh_cache_fetches_at_once_and_then_on_its_schedule() {
        let t0 = Instant::now();
        let mut state = KeyState::default();
        assert_eq!(state.next_refresh(t0, &POLICY), t0);
        assert_eq!(state.refusal_for_unknown_key(t0, &POLICY), None);
        assert_eq!(state.fetched(t0, set(&[("a", 1)])), Fetched::Added);
        assert_eq!(state.next_refresh(t0, &POLICY), t0 + POLICY.every);
        // An unknown key id right after a fetch is not identity's: no fetch for it.
        let soon = t0 + Duration::from_secs(1);
        assert_eq!(
            state.refusal_for_unknown_key(soon, &POLICY),
            Some(AuthError::UnknownKey)
        );
        assert_eq!(
            state.refusal_for_unknown_key(t0 + POLICY.retry, &POLICY),
            None
        );
    }

    #[test]
    fn a_failed_fetch_is_never_retried_at_once_and_its_age_is_known() {
        let t0 = Instant::now();
        let mut state = KeyState::default();
        assert_eq!(state.unconfirmed_for(t0), None);
        state.fetched(t0, set(&[("a", 1)]));
        let t1 = t0 + Duration::from_secs(90);
        state.failed(t1, AuthError::KeysUnavailable("down".into()));
        let spinning = KeyRefresh {
            retry: Duration::ZERO,
            ..POLICY
        };
        assert_eq!(state.next_refresh(t1, &spinning), t1 + MIN_KEY_RETRY);
        assert_eq!(state.unconfirmed_for(t1), Some(Duration::from_secs(90)));
    }

    #[test]
    fn a_failed_fetch_keeps_the_last_set_is_remembered_and_retried_sooner() {
        let t0 = Instant::now();
        let mut state = KeyState::default();
        state.fetched(t0, set(&[("a", 1)]));
        let t1 = t0 + Duration::from_secs(60);
        let down = AuthError::KeysUnavailable("connection refused".into());
        state.failed(t1, down.clone());
        assert!(state.keys.contains_key("a"), "the last good set is kept");
        assert_eq!(state.last_outcome(), Err(down.clone()));
        // Callers within the retry interval get the failure without fetching.
        assert_eq!(
            state.refusal_for_unknown_key(t1 + Duration::from_secs(1), &POLICY),
            Some(down)
        );
        assert_eq!(
            state.refusal_for_unknown_key(t1 + POLICY.retry, &POLICY),
            None
        );
        // The background tries again after the retry interval, not a whole period later.
        assert_eq!(state.next_refresh(t1, &POLICY), t1 + POLICY.retry);
        // A failure before any success: there are no keys, and the same holds.
        let mut empty = KeyState::default();
        empty.failed(t0, AuthError::KeysUnavailable("x".into()));
        assert!(empty.keys.is_empty());
        assert_eq!(empty.next_refresh(t0, &POLICY), t0 + POLICY.retry);
    }

    #[test]
    fn a_withdrawn_or_changed_key_bumps_the_generation_and_an_added_one_does_not() {
        let t = Instant::now();
        let mut state = KeyState::default();
        state.fetched(t, set(&[("a", 1)]));
        let g = state.generation;
        assert_eq!(state.fetched(t, set(&[("a", 1)])), Fetched::Unchanged);
        assert_eq!(state.fetched(t, set(&[("b", 2), ("a", 1)])), Fetched::Added);
        assert_eq!(state.generation, g);
        // Retirement of `a`, after a failure in between: the withdrawal applies once a fetch
        // succeeds.
        state.failed(t, AuthError::KeysUnavailable("down".into()));
        assert!(state.keys.contains_key("a"));
        assert_eq!(state.fetched(t, set(&[("b", 2)])), Fetched::Withdrawn);
        assert!(!state.keys.contains_key("a"));
        assert_eq!(state.generation, g + 1);
        // The same key id with another key is a withdrawal too.
        assert_eq!(state.fetched(t, set(&[("b", 3)])), Fetched::Withdrawn);
        assert_eq!(state.generation, g + 2);
    }

    #[test]
    fn a_published_key_that_cannot_be_read_is_left_out_but_identitys_own_must_all_read() {
        let mut bad = jwk("bad", 0);
        bad.x = "not base64 !".into();
        let published = vec![jwk("good", 1), bad];
        let keys = decode_published(&published);
        assert!(keys.contains_key("good") && !keys.contains_key("bad"));
        assert!(decode_keys(&published).is_err());
    }

    /// A key set held in memory, counting how often it is asked for; it answers after
    /// `delay`, or never.
    struct Counted {
        calls: AtomicU64,
        answer: std::sync::Mutex<Option<Result<Vec<pb::Jwk>, AuthError>>>,
        delay: Duration,
    }

    impl Counted {
        fn new(keys: Vec<pb::Jwk>, delay: Duration) -> Arc<Self> {
            Arc::new(Self {
                calls: AtomicU64::new(0),
                answer: std::sync::Mutex::new(Some(Ok(keys))),
                delay,
            })
        }
        fn answer(&self, answer: Option<Result<Vec<pb::Jwk>, AuthError>>) {
            *self.answer.lock().unwrap() = answer;
        }
        fn calls(&self) -> u64 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl KeySource for Counted {
        async fn fetch(&self) -> Result<Vec<pb::Jwk>, AuthError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            let answer = self.answer.lock().unwrap().clone();
            match answer {
                Some(answer) => answer,
                None => futures::future::pending().await,
            }
        }
    }

    fn verifier_over(source: Arc<Counted>) -> TokenVerifier {
        let verifier = TokenVerifier::from_source(source);
        verifier.refresh_keys_with(POLICY);
        verifier
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_lookups_of_unknown_keys_share_one_fetch_and_then_wait_the_retry_interval() {
        let source = Counted::new(vec![jwk("a", 1)], Duration::from_millis(100));
        let verifier = verifier_over(source.clone());
        let lookups = (0..200).map(|_| verifier.keys.refresh_for_unknown_key());
        let outcomes = futures::future::join_all(lookups).await;
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert_eq!(source.calls(), 1);
        assert!(verifier.keys.keys().contains_key("a"));
        // More made-up key ids right after: refused without a fetch.
        for _ in 0..50 {
            assert_eq!(
                verifier.keys.refresh_for_unknown_key().await,
                Err(AuthError::UnknownKey)
            );
        }
        assert_eq!(source.calls(), 1);
        tokio::time::advance(POLICY.retry).await;
        assert_eq!(verifier.keys.refresh_for_unknown_key().await, Ok(()));
        assert_eq!(source.calls(), 2);
        assert_eq!(verifier.key_fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_remembered_a_hung_source_times_out_and_the_keys_stay() {
        let source = Counted::new(vec![jwk("a", 1)], Duration::ZERO);
        let verifier = verifier_over(source.clone());
        verifier.keys.refresh_for_unknown_key().await.unwrap();
        tokio::time::advance(POLICY.retry).await;

        source.answer(Some(Err(AuthError::KeysUnavailable("refused".into()))));
        let failed = verifier.keys.refresh_for_unknown_key().await;
        assert!(matches!(failed, Err(AuthError::KeysUnavailable(_))));
        for _ in 0..20 {
            assert_eq!(verifier.keys.refresh_for_unknown_key().await, failed);
        }
        assert_eq!(
            source.calls(),
            2,
            "the failure was not retried by every caller"
        );
        assert!(verifier.keys.keys().contains_key("a"), "keys kept");

        // A source that never answers costs a caller the timeout, no more.
        tokio::time::advance(POLICY.retry).await;
        source.answer(None);
        let started = Instant::now();
        let hung = verifier.keys.refresh_for_unknown_key().await;
        assert!(
            matches!(hung, Err(AuthError::KeysUnavailable(_))),
            "{hung:?}"
        );
        assert_eq!(started.elapsed(), POLICY.timeout);
        assert!(verifier.keys.keys().contains_key("a"), "keys kept");
    }

    #[tokio::test(start_paused = true)]
    async fn the_background_refresh_withdraws_a_retired_key_and_forgets_what_it_verified() {
        let source = Counted::new(vec![jwk("a", 1), jwk("b", 2)], Duration::ZERO);
        let verifier = verifier_over(source.clone());
        verifier.keys.start_refresher();
        // The refresher fetches at once (nothing fetched yet), then every period.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(source.calls(), 1);
        let generation = verifier.keys.generation();
        let remembered = claims("service:x", AUDIENCE.into());
        verifier.remember("token", &remembered, generation);
        assert!(verifier.keys.verified.lock().unwrap().contains_key("token"));

        source.answer(Some(Ok(vec![jwk("b", 2)])));
        tokio::time::sleep(POLICY.every + Duration::from_millis(1)).await;
        assert_eq!(source.calls(), 2);
        assert!(!verifier.keys.keys().contains_key("a"), "withdrawn");
        assert!(verifier.keys.keys().contains_key("b"));
        assert!(
            verifier.keys.verified.lock().unwrap().is_empty(),
            "tokens verified with the old set are verified again"
        );
        // A verification begun before the withdrawal is not remembered after it.
        verifier.remember("late", &remembered, generation);
        assert!(verifier.keys.verified.lock().unwrap().is_empty());

        // Identity down: the background retries after the retry interval and keeps `b`.
        source.answer(Some(Err(AuthError::KeysUnavailable("down".into()))));
        tokio::time::sleep(POLICY.every + Duration::from_millis(1)).await;
        assert_eq!(source.calls(), 3);
        tokio::time::sleep(POLICY.retry + Duration::from_millis(1)).await;
        assert_eq!(source.calls(), 4);
        assert!(verifier.keys.keys().contains_key("b"));

        // Once every verifier is gone, so is the refresher.
        drop(verifier);
        tokio::time::sleep(POLICY.every * 3).await;
        assert_eq!(source.calls(), 4);
    }

    #[tokio::test]
    async fn no_token_is_accepted_before_the_revocations_are_read() {
        let verifier = TokenVerifier::from_jwks(&[]).unwrap();
        verifier.following.store(true, Ordering::SeqCst);
        assert_eq!(
            verifier.verify("anything").await,
            Err(AuthError::RevocationsNotCaughtUp)
        );
    }

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
