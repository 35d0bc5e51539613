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

/// The session with an access token good for at least a minute: refreshed by this request
/// when it takes the session's lock, else by the request holding it (waited for ≤ 5 s).
async fn fresh(state: &AppState, session: Session, next: &str) -> Result<Session, WebError> {
    if session.access_exp - now() > 60 {
        return Ok(session);
    }
    let unavailable = |e: crate::session::SessionError| WebError::Unavailable(e.to_string());
    if !state
        .sessions
        .lock_refresh(&session)
        .await
        .map_err(unavailable)?
    {
        return match state
            .sessions
            .wait_refreshed(&session)
            .await
            .map_err(unavailable)?
        {
            Some(fresh) => Ok(fresh),
            None if session.access_exp > now() => Ok(session),
            None => Err(WebError::SessionEnded {
                next: next.to_owned(),
            }),
        };
    }
    let locked = session.clone();
    let identity = &state.anonymous.identity;
    let request = identity
        .request(pb::RefreshTokenRequest {
            refresh_token: session.refresh.expose_secret().to_owned(),
        })
        .await
        .map_err(|e| WebError::from_peer(e, next))?;
    let answer = identity.raw_auth().refresh_token(request).await;
    let result = match answer {
        Ok(pair) => {
            let mut session = session;
            state
                .sessions
                .store_tokens(&mut session, pair.get_ref())
                .await
                .map_err(unavailable)?;
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
    };
    if let Err(err) = state.sessions.unlock_refresh(&locked).await {
        tracing::warn!(error = %err, "the refresh lock could not be released; it expires in 5 s");
    }
    result
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
