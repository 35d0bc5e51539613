//! Who is asking: [`Ctx`] (every request: language, time zone, CSRF token, address) and
//! [`SignedIn`] (a page that needs a person: their session, with an access token refreshed
//! once at a time, and the clients calling as them).

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use mailroom_clients::Bearer;
use mailroom_platform::redis::RateDecision;
use mailroom_proto::identity::v1 as pb;
use secrecy::ExposeSecret;

use crate::errors::WebError;
use crate::i18n::Locale;
use crate::session::{now, Session};
use crate::state::{AppState, Clients};

/// What the frame middleware learnt of a request before any page ran.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub locale: Locale,
    pub tz: chrono_tz::Tz,
    /// Whether the time zone came from the browser (else UTC by default).
    pub tz_known: bool,
    /// The token every form of this response carries (`_csrf`), and the `x-csrf-token` of
    /// script requests.
    pub csrf: String,
    /// Path and query, for `next` after signing in.
    pub path: String,
    pub client_ip: Option<IpAddr>,
    /// The session cookie's value, if any (not yet checked).
    pub session_cookie: Option<String>,
    /// A short id of this request, shown on error pages and logged.
    pub request_id: String,
    /// The element id a script asked to have rendered alone (`x-fragment`).
    pub fragment: Option<String>,
    /// A notice key from `?notice=` (shown translated when the key exists).
    pub notice: Option<String>,
    /// When the frame began the request.
    pub started: std::time::Instant,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, WebError> {
        parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .ok_or_else(|| WebError::Internal(anyhow::anyhow!("the frame middleware did not run")))
    }
}

/// A signed-in person: their session and the five clients calling as them.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub session: Session,
    pub clients: Clients,
    pub ctx: Ctx,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, WebError> {
        let ctx = Ctx::from_request_parts(parts, state).await?;
        let next = ctx.path.clone();
        let Some(cookie) = ctx.session_cookie.clone() else {
            return Err(WebError::SignInRequired { next });
        };
        let session = state
            .sessions
            .load(&cookie)
            .await
            .map_err(|e| WebError::Unavailable(e.to_string()))?
            .ok_or(WebError::SignInRequired { next: next.clone() })?;
        let session = fresh(state, session, &next).await?;
        let bearer = Bearer::from_token(session.access.expose_secret())
            .map_err(|e| WebError::Internal(anyhow::anyhow!(e)))?;
        Ok(SignedIn {
            clients: state.anonymous.as_person(&bearer),
            session,
            ctx,
        })
    }
}

/// How long the refresh call to identity may take; the refresh lock outlives it.
const REFRESH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(4);

/// The session with an access token good for at least a minute: refreshed by this request
/// when it takes the session's lock (after reading the session again under it, so a pair
/// another request just rotated is never sent twice), else by the request holding it (waited
/// for ≤ 5 s). A refresh token used twice makes identity revoke the whole family, so every
/// path here either rotates once or waits.
async fn fresh(state: &AppState, session: Session, next: &str) -> Result<Session, WebError> {
    if session.access_exp - now() > 60 {
        return Ok(session);
    }
    let unavailable = |e: crate::session::SessionError| WebError::Unavailable(e.to_string());
    let Some(lock) = state
        .sessions
        .lock_refresh(&session)
        .await
        .map_err(unavailable)?
    else {
        return match state
            .sessions
            .wait_refreshed(&session)
            .await
            .map_err(unavailable)?
        {
            Some(fresh) => Ok(fresh),
            None if session.access_exp > now() => Ok(session),
            // The other request is still at it (or failed): not a reason to end the session.
            None => Err(WebError::Unavailable(
                "the session's token is being renewed".into(),
            )),
        };
    };
    let result = refresh_locked(state, session, next).await;
    if let Err(err) = state.sessions.unlock_refresh(&lock).await {
        tracing::warn!(error = %err, "the refresh lock could not be released; it expires by itself");
    }
    result
}

/// The refresh itself, under the lock.
async fn refresh_locked(
    state: &AppState,
    session: Session,
    next: &str,
) -> Result<Session, WebError> {
    let unavailable = |e: crate::session::SessionError| WebError::Unavailable(e.to_string());
    // Another request may have rotated the pair between our read and the lock.
    let session = match state.sessions.reload(&session).await.map_err(unavailable)? {
        Some(current) if current.access_exp != session.access_exp => return Ok(current),
        Some(current) => current,
        None => {
            return Err(WebError::SessionEnded {
                next: next.to_owned(),
            })
        }
    };
    let identity = &state.anonymous.identity;
    let mut request = identity
        .request(pb::RefreshTokenRequest {
            refresh_token: session.refresh.expose_secret().to_owned(),
        })
        .await
        .map_err(|e| WebError::from_peer(e, next))?;
    request.set_timeout(REFRESH_DEADLINE);
    let answer = tokio::time::timeout(
        REFRESH_DEADLINE + std::time::Duration::from_millis(500),
        identity.raw_auth().refresh_token(request),
    )
    .await
    .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("identity did not answer")));
    match answer {
        Ok(pair) => {
            let mut session = session;
            // Identity has rotated the pair: keep it, trying twice, since the old one is spent.
            let mut stored = state
                .sessions
                .store_tokens(&mut session, pair.get_ref())
                .await;
            if stored.is_err() {
                stored = state
                    .sessions
                    .store_tokens(&mut session, pair.get_ref())
                    .await;
            }
            if let Err(err) = stored {
                tracing::error!(error = %err, "a rotated token pair could not be stored; the session ends");
                return Err(WebError::SessionEnded {
                    next: next.to_owned(),
                });
            }
            metrics::counter!("mailroom_web_sessions_refreshed_total").increment(1);
            Ok(session)
        }
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::Unauthenticated
                    | tonic::Code::InvalidArgument
                    | tonic::Code::NotFound
                    | tonic::Code::PermissionDenied
            ) =>
        {
            Err(WebError::SessionEnded {
                next: next.to_owned(),
            })
        }
        // Identity is down: the current token serves while it lasts.
        Err(_) if session.access_exp > now() => Ok(session),
        Err(status) => Err(WebError::from_peer(identity.refused(status), next)),
    }
}

/// Counts one anonymous form post from the browser's network; refuses past the limit.
pub async fn limit_anonymous(state: &AppState, ctx: &Ctx) -> Result<(), WebError> {
    let key = mailroom_platform::client_address::network_key(
        ctx.client_ip,
        mailroom_platform::client_address::Ipv4Network::Address,
    );
    match state.anonymous_limiter.hit(&key).await {
        Ok(RateDecision::Allowed) => Ok(()),
        Ok(RateDecision::Limited { retry_after }) => Err(WebError::TooMany {
            retry_after_secs: retry_after.as_secs().max(1),
        }),
        Err(err) => Err(WebError::Unavailable(err.to_string())),
    }
}
