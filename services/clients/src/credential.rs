//! A service calling another as itself: a service token from identity
//! (`AuthService.IssueServiceToken` with the client id and secret from configuration) for each
//! service it calls — a token names the one service it is for (its audience), so a peer that
//! receives it cannot replay it to another — each kept until shortly before it expires and
//! shared by every call to that service.
//!
//! Invariants, per target service: at most one fetch is under way at a time — callers arriving
//! meanwhile wait for that one fetch and share its answer, token or error (single flight); no
//! lock is held while the fetch crosses the network (the lock guards only the slot's swap); a
//! fetch gives up after `token_timeout`; the fetch goes over the process's channel to identity.
//!
//! On failure every waiter gets the same error and the slot is emptied, so the next call tries
//! again. A peer that refuses the token (UNAUTHENTICATED) makes its client call
//! [`ServiceCredential::forget`] for that peer, and the next call fetches a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, FutureExt, Shared};
use mailroom_proto::identity::v1 as pb;
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::{Ascii, MetadataValue};

use crate::channel::PeerChannel;
pub use crate::error::CredentialError;
use crate::error::Peer;

/// A token is renewed when less than this is left of it.
const RENEW_BEFORE: Duration = Duration::from_secs(60);
/// A token whose expiry identity did not say is kept this long.
const UNSAID_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Clone)]
struct Token {
    bearer: MetadataValue<Ascii>,
    renew_at: Instant,
}

type Fetch = Shared<BoxFuture<'static, Result<Token, CredentialError>>>;

enum Slot {
    Empty,
    /// The one fetch under way; `id` tells it from a later one.
    Fetching {
        id: u64,
        fetch: Fetch,
    },
    Ready(Token),
}

struct Inner {
    auth: pb::auth_service_client::AuthServiceClient<PeerChannel>,
    endpoint: String,
    client_id: String,
    client_secret: SecretString,
    timeout: Duration,
    /// Per target service: its token (or the fetch of one), and the id of its last fetch.
    slots: Mutex<HashMap<Peer, (Slot, u64)>>,
}

/// One service's credential and the tokens it last got, one per service it calls. Clones
/// share the tokens.
#[derive(Clone)]
pub struct ServiceCredential {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCredential")
            .field("identity", &self.inner.endpoint)
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

impl ServiceCredential {
    /// The credential `client_id`/`client_secret`, exchanged for tokens at identity over
    /// `identity` (the process's channel to it), each exchange within `timeout`.
    pub fn new(
        identity: PeerChannel,
        client_id: impl Into<String>,
        client_secret: SecretString,
        timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoint: identity.endpoint().to_owned(),
                auth: pb::auth_service_client::AuthServiceClient::new(identity),
                client_id: client_id.into(),
                client_secret,
                timeout,
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<Peer, (Slot, u64)>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The `authorization` value to send to `target`: the token for it held, or the one being
    /// fetched, or a new fetch when neither is usable.
    pub async fn bearer(&self, target: Peer) -> Result<MetadataValue<Ascii>, CredentialError> {
        let inner = &self.inner;
        if inner.client_id.is_empty() || inner.client_secret.expose_secret().is_empty() {
            return Err(CredentialError::NotConfigured);
        }
        let (id, fetch) = {
            let mut slots = self.slots();
            let (slot, last_id) = slots.entry(target).or_insert((Slot::Empty, 0));
            match slot {
                Slot::Ready(token) if Instant::now() < token.renew_at => {
                    return Ok(token.bearer.clone());
                }
                Slot::Fetching { id, fetch } => (*id, fetch.clone()),
                _ => {
                    *last_id += 1;
                    let fetch = fetch(
                        inner.auth.clone(),
                        inner.endpoint.clone(),
                        inner.client_id.clone(),
                        inner.client_secret.clone(),
                        target,
                        inner.timeout,
                    )
                    .boxed()
                    .shared();
                    *slot = Slot::Fetching {
                        id: *last_id,
                        fetch: fetch.clone(),
                    };
                    (*last_id, fetch)
                }
            }
        };
        let answer = fetch.await;
        {
            let mut slots = self.slots();
            let slot = &mut slots.entry(target).or_insert((Slot::Empty, 0)).0;
            // Only the fetch still in the slot settles it (not one a `forget` replaced).
            if matches!(slot, Slot::Fetching { id: current, .. } if *current == id) {
                *slot = match &answer {
                    Ok(token) => Slot::Ready(token.clone()),
                    Err(_) => Slot::Empty,
                };
            }
        }
        answer.map(|token| token.bearer)
    }

    /// Forgets the token held for `target` (after it said the token is no longer valid). A
    /// fetch under way is left to finish: its token is new.
    pub fn forget(&self, target: Peer) {
        if let Some((slot, _)) = self.slots().get_mut(&target) {
            if matches!(slot, Slot::Ready(_)) {
                *slot = Slot::Empty;
            }
        }
    }
}

/// One `IssueServiceToken` exchange for a token to call `target`, within `timeout`.
async fn fetch(
    mut auth: pb::auth_service_client::AuthServiceClient<PeerChannel>,
    endpoint: String,
    client_id: String,
    client_secret: SecretString,
    target: Peer,
    timeout: Duration,
) -> Result<Token, CredentialError> {
    let unreachable = |reason: String| CredentialError::Unreachable {
        endpoint: endpoint.clone(),
        reason,
        transient: crate::error::Transient,
    };
    let mut request = tonic::Request::new(pb::IssueServiceTokenRequest {
        client_id,
        client_secret: client_secret.expose_secret().to_owned(),
        audience: target.service().to_owned(),
    });
    request.set_timeout(timeout);
    mailroom_platform::telemetry::inject_into_metadata(request.metadata_mut());
    let tokens = match tokio::time::timeout(timeout, auth.issue_service_token(request)).await {
        Ok(Ok(answer)) => answer.into_inner(),
        Ok(Err(status)) => {
            return Err(match status.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    CredentialError::Refused(status.message().to_owned())
                }
                _ => unreachable(status.message().to_owned()),
            })
        }
        Err(_) => {
            return Err(unreachable(format!(
                "no answer within {} s",
                timeout.as_secs_f32()
            )))
        }
    };
    let lifetime = tokens
        .access_token_expire_time
        .map(|t| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            Duration::from_secs(u64::try_from(t.seconds).unwrap_or(0).saturating_sub(now))
        })
        .unwrap_or(UNSAID_LIFETIME);
    let bearer: MetadataValue<Ascii> =
        format!("Bearer {}", tokens.access_token)
            .parse()
            .map_err(|_| {
                CredentialError::Refused("identity issued a token that is not ASCII".into())
            })?;
    Ok(Token {
        bearer,
        renew_at: Instant::now() + lifetime.saturating_sub(RENEW_BEFORE).max(lifetime / 2),
    })
}

#[cfg(test)]
mod tests {
    //! Against a real tonic server on loopback that counts the tokens it issues.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use pb::auth_service_server::{AuthService, AuthServiceServer};
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::error::Peer;
    use crate::settings::Settings;

    #[derive(Clone)]
    struct FakeIdentity {
        issued: Arc<AtomicUsize>,
        delay: Duration,
        refuse: bool,
    }

    type Answer<T> = Result<Response<T>, Status>;

    #[tonic::async_trait]
    impl AuthService for FakeIdentity {
        async fn issue_service_token(
            &self,
            request: Request<pb::IssueServiceTokenRequest>,
        ) -> Answer<pb::TokenPair> {
            let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            let request = request.into_inner();
            if self.refuse || request.client_secret != "secret" {
                return Err(Status::unauthenticated("unknown client"));
            }
            Ok(Response::new(pb::TokenPair {
                access_token: format!("token-{n}-for-{}", request.audience),
                access_token_expire_time: Some(prost_types::Timestamp {
                    seconds: i64::try_from(
                        SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap()
                            .as_secs(),
                    )
                    .unwrap()
                        + 900,
                    nanos: 0,
                }),
                ..Default::default()
            }))
        }
        async fn login(&self, _: Request<pb::LoginRequest>) -> Answer<pb::TokenPair> {
            Err(Status::unimplemented(""))
        }
        async fn refresh_token(
            &self,
            _: Request<pb::RefreshTokenRequest>,
        ) -> Answer<pb::TokenPair> {
            Err(Status::unimplemented(""))
        }
        async fn revoke_refresh_token(
            &self,
            _: Request<pb::RevokeRefreshTokenRequest>,
        ) -> Answer<()> {
            Err(Status::unimplemented(""))
        }
        async fn change_password(&self, _: Request<pb::ChangePasswordRequest>) -> Answer<()> {
            Err(Status::unimplemented(""))
        }
        async fn sign_out_everywhere(
            &self,
            _: Request<pb::SignOutEverywhereRequest>,
        ) -> Answer<()> {
            Err(Status::unimplemented(""))
        }
        async fn request_password_reset(
            &self,
            _: Request<pb::RequestPasswordResetRequest>,
        ) -> Answer<()> {
            Err(Status::unimplemented(""))
        }
        async fn reset_password(&self, _: Request<pb::ResetPasswordRequest>) -> Answer<()> {
            Err(Status::unimplemented(""))
        }
        async fn get_jwks(&self, _: Request<pb::GetJwksRequest>) -> Answer<pb::Jwks> {
            Err(Status::unimplemented(""))
        }
    }

    /// Serves `identity` on a loopback port; returns its endpoint and the issue count.
    async fn serve(delay: Duration, refuse: bool) -> (String, Arc<AtomicUsize>) {
        let issued = Arc::new(AtomicUsize::new(0));
        let service = FakeIdentity {
            issued: issued.clone(),
            delay,
            refuse,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AuthServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (endpoint, issued)
    }

    fn credential(endpoint: &str, secret: &str, timeout: Duration) -> ServiceCredential {
        let channel = PeerChannel::new(Peer::Identity, endpoint, &Settings::default()).unwrap();
        ServiceCredential::new(channel, "mailboxes", SecretString::from(secret), timeout)
    }

    async fn many(credential: &ServiceCredential, n: usize) -> Vec<Result<String, String>> {
        many_to(credential, Peer::Access, n).await
    }

    async fn many_to(
        credential: &ServiceCredential,
        target: Peer,
        n: usize,
    ) -> Vec<Result<String, String>> {
        let calls = (0..n).map(|_| {
            let credential = credential.clone();
            async move {
                credential
                    .bearer(target)
                    .await
                    .map(|b| b.to_str().unwrap().to_owned())
                    .map_err(|e| e.to_string())
            }
        });
        futures::future::join_all(calls).await
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let (endpoint, issued) = serve(Duration::from_millis(200), false).await;
        let credential = credential(&endpoint, "secret", Duration::from_secs(5));

        let answers = many(&credential, 32).await;
        assert_eq!(issued.load(Ordering::SeqCst), 1, "one fetch for 32 callers");
        assert!(
            answers
                .iter()
                .all(|a| a.as_deref() == Ok("Bearer token-1-for-access")),
            "{answers:?}"
        );

        // Held: no fetch at all.
        assert_eq!(
            many(&credential, 8).await[0].as_deref(),
            Ok("Bearer token-1-for-access")
        );
        assert_eq!(issued.load(Ordering::SeqCst), 1);

        // Forgotten: one new fetch for everyone.
        credential.forget(Peer::Access);
        let answers = many(&credential, 16).await;
        assert_eq!(issued.load(Ordering::SeqCst), 2);
        assert!(
            answers
                .iter()
                .all(|a| a.as_deref() == Ok("Bearer token-2-for-access")),
            "{answers:?}"
        );
    }

    /// The lock is not held across the fetch: a caller cancelled mid-fetch leaves the fetch
    /// to the others, and the slot stays usable.
    #[tokio::test]
    async fn a_cancelled_caller_does_not_stall_the_others() {
        let (endpoint, issued) = serve(Duration::from_millis(200), false).await;
        let credential = credential(&endpoint, "secret", Duration::from_secs(5));
        let first =
            tokio::time::timeout(Duration::from_millis(20), credential.bearer(Peer::Access)).await;
        assert!(first.is_err(), "gave up before the answer");
        let answers = many(&credential, 8).await;
        assert!(
            answers
                .iter()
                .all(|a| a.as_deref() == Ok("Bearer token-1-for-access")),
            "{answers:?}"
        );
        assert_eq!(issued.load(Ordering::SeqCst), 1);
    }

    /// Each service called gets its own token, addressed to it, fetched once; forgetting one
    /// keeps the others.
    #[tokio::test]
    async fn each_target_has_its_own_token() {
        let (endpoint, issued) = serve(Duration::from_millis(100), false).await;
        let credential = credential(&endpoint, "secret", Duration::from_secs(5));
        let (access, sync) = tokio::join!(
            many_to(&credential, Peer::Access, 8),
            many_to(&credential, Peer::Sync, 8)
        );
        assert_eq!(issued.load(Ordering::SeqCst), 2, "one fetch per target");
        let audience_of = |answers: &[Result<String, String>]| {
            let first = answers[0].clone().unwrap();
            assert!(
                answers.iter().all(|a| a.as_ref() == Ok(&first)),
                "{answers:?}"
            );
            first.rsplit("-for-").next().unwrap().to_owned()
        };
        assert_eq!(audience_of(&access), "access");
        assert_eq!(audience_of(&sync), "sync");

        credential.forget(Peer::Sync);
        let _ = many_to(&credential, Peer::Access, 4).await;
        assert_eq!(issued.load(Ordering::SeqCst), 2, "access's token is kept");
        let again = many_to(&credential, Peer::Sync, 4).await;
        assert_eq!(issued.load(Ordering::SeqCst), 3);
        assert_eq!(audience_of(&again), "sync");
    }

    #[tokio::test]
    async fn a_refusal_reaches_every_waiter_once_and_is_not_kept() {
        let (endpoint, issued) = serve(Duration::from_millis(100), true).await;
        let credential = credential(&endpoint, "secret", Duration::from_secs(5));
        let answers = many(&credential, 16).await;
        assert_eq!(issued.load(Ordering::SeqCst), 1);
        assert!(
            answers
                .iter()
                .all(|a| a.as_ref().is_err_and(|e| e.starts_with("identity refused"))),
            "{answers:?}"
        );
        let _ = many(&credential, 1).await;
        assert_eq!(
            issued.load(Ordering::SeqCst),
            2,
            "the next call tries again"
        );
    }

    #[tokio::test]
    async fn a_slow_identity_times_the_fetch_out() {
        let (endpoint, _) = serve(Duration::from_secs(5), false).await;
        let credential = credential(&endpoint, "secret", Duration::from_millis(200));
        let started = Instant::now();
        let err = credential.bearer(Peer::Access).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(err, CredentialError::Unreachable { .. }), "{err}");
    }

    #[tokio::test]
    async fn no_secret_no_fetch() {
        let (endpoint, issued) = serve(Duration::ZERO, false).await;
        let credential = credential(&endpoint, "", Duration::from_secs(1));
        assert!(matches!(
            credential.bearer(Peer::Access).await,
            Err(CredentialError::NotConfigured)
        ));
        assert_eq!(issued.load(Ordering::SeqCst), 0);
    }
}
