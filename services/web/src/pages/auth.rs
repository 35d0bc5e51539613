//! Signing in and out, and the two settings a visitor chooses for themselves: language and
//! time zone (cookies, so they hold before signing in too).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use mailroom_clients::Bearer;
use mailroom_proto::identity::v1 as pb;
use serde::Deserialize;

use crate::auth::{limit_anonymous, Ctx, SignedIn};
use crate::errors::WebError;
use crate::i18n::Locale;
use crate::page::{render, render_status, see_other, Chrome};
use crate::state::{forwarded, AppState};
use crate::util::{safe_next, set_cookie};

#[derive(Template)]
#[template(path = "auth/sign_in.html")]
struct SignInPage {
    chrome: Chrome,
    next: String,
    org: String,
    email: String,
    error: Option<String>,
    ended: bool,
}

#[derive(Deserialize, Default)]
struct SignInQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    org: String,
    #[serde(default)]
    ended: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn sign_in_page(ctx: Ctx, Query(query): Query<SignInQuery>) -> Result<Response, WebError> {
    render(&SignInPage {
        chrome: Chrome::anonymous(&ctx),
        next: safe_next(&query.next).unwrap_or("/").to_owned(),
        org: query.org,
        email: String::new(),
        error: None,
        ended: query.ended.is_some(),
    })
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    org: String,
}

/// Signs in with identity and starts a session; 303 to `next`.
pub async fn start_session(
    state: &AppState,
    ctx: &Ctx,
    email: &str,
    password: &str,
    org: &str,
) -> Result<Response, WebError> {
    let identity = &state.anonymous.identity;
    let request = identity
        .request(pb::LoginRequest {
            login_email: email.trim().to_owned(),
            password: password.to_owned(),
            org_id: org.trim().to_owned(),
        })
        .await
        .map_err(|e| WebError::from_peer(e, "/"))?;
    let pair = identity
        .raw_auth()
        .login(forwarded(request, ctx.client_ip))
        .await
        .map_err(|status| identity.refused(status))
        .map_err(|e| WebError::from_peer(e, "/"))?
        .into_inner();
    end_previous_session(state, ctx).await;
    session_response(state, &pair).await
}

/// Signing in again in a browser ends the session it had: its refresh token is revoked and
/// its Redis entry deleted, so nothing of it outlives the new one.
async fn end_previous_session(state: &AppState, ctx: &Ctx) {
    use secrecy::ExposeSecret;
    let Some(cookie) = &ctx.session_cookie else {
        return;
    };
    let Ok(Some(previous)) = state.sessions.load(cookie).await else {
        return;
    };
    let identity = &state.anonymous.identity;
    let message = pb::RevokeRefreshTokenRequest {
        refresh_token: previous.refresh.expose_secret().to_owned(),
    };
    if let Ok(request) = identity.request(message).await {
        if let Err(status) = identity.raw_auth().revoke_refresh_token(request).await {
            tracing::debug!(code = ?status.code(), "the previous session's refresh token was not revoked");
        }
    }
    if let Err(err) = state.sessions.delete_key(&previous.key).await {
        tracing::warn!(error = %err, "the previous session could not be deleted; it idles out");
    }
}

/// A new session for `pair`: its cookie set on a 303 to `/`.
pub async fn session_response(
    state: &AppState,
    pair: &pb::TokenPair,
) -> Result<Response, WebError> {
    // The person's name for the header, read as them.
    let bearer = Bearer::from_token(&pair.access_token)
        .map_err(|e| WebError::Internal(anyhow::anyhow!(e)))?;
    let person = state.anonymous.identity.as_person(bearer);
    let (cookie, session) = state
        .sessions
        .create(pair, "")
        .await
        .map_err(|e| WebError::Unavailable(e.to_string()))?;
    let name = match person.user(session.user_id).await {
        Ok(user) => format!("{} {}", user.first_name, user.last_name)
            .trim()
            .to_owned(),
        Err(_) => String::new(),
    };
    if !name.is_empty() {
        if let Err(err) = state.sessions.set_name(&session, &name).await {
            tracing::warn!(error = %err, "the name was not kept in the session");
        }
    }
    let mut response = see_other("/");
    let value = set_cookie(
        state.public.session_cookie(),
        &cookie,
        state.public.secure,
        true,
        Some(state.config.session_max_secs as i64),
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[tracing::instrument(skip_all)]
async fn sign_in(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<SignInForm>,
) -> Result<Response, WebError> {
    limit_anonymous(&state, &ctx).await?;
    let next = safe_next(&form.next).unwrap_or("/").to_owned();
    match start_session(&state, &ctx, &form.email, &form.password, &form.org).await {
        Ok(mut response) => {
            if let Ok(location) = HeaderValue::from_str(&next) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
        // One sentence for a wrong password, an unknown address, a dismissed person: the
        // page says nothing about which.
        Err(
            WebError::SessionEnded { .. }
            | WebError::Invalid { .. }
            | WebError::NotFound
            | WebError::Forbidden { .. },
        ) => render_status(
            StatusCode::UNAUTHORIZED,
            &SignInPage {
                chrome: Chrome::anonymous(&ctx),
                next,
                org: form.org,
                email: form.email,
                error: Some(ctx.locale.t("sign-in-wrong")),
                ended: false,
            },
        ),
        Err(other) => Err(other),
    }
}

#[tracing::instrument(skip_all)]
async fn sign_out(signed: SignedIn) -> Result<Response, WebError> {
    use secrecy::ExposeSecret;
    let auth = signed.clients.identity.raw_auth();
    let message = pb::RevokeRefreshTokenRequest {
        refresh_token: signed.session.refresh.expose_secret().to_owned(),
    };
    if let Err(err) = signed
        .clients
        .identity
        .call(message, |_, request| async move {
            let mut auth = auth;
            auth.revoke_refresh_token(request).await
        })
        .await
    {
        tracing::warn!(error = %err, "the refresh token was not revoked; the session ends anyway");
    }
    let mut response = see_other("/sign-in?notice=signed-out");
    response.extensions_mut().insert(crate::session::EndSession);
    Ok(response)
}

#[derive(Deserialize)]
struct LangForm {
    lang: String,
    #[serde(default)]
    next: String,
}

#[tracing::instrument(skip_all)]
async fn set_lang(State(state): State<AppState>, Form(form): Form<LangForm>) -> Response {
    let locale = Locale::parse(&form.lang).unwrap_or_default();
    let mut response = see_other(safe_next(&form.next).unwrap_or("/"));
    let cookie = set_cookie(
        "mr_lang",
        locale.tag(),
        state.public.secure,
        false,
        Some(365 * 24 * 3600),
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct TzForm {
    tz: String,
    #[serde(default)]
    next: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn set_tz(State(state): State<AppState>, Form(form): Form<TzForm>) -> Response {
    let Ok(tz) = form.tz.parse::<chrono_tz::Tz>() else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "unknown time zone").into_response();
    };
    let mut response = match form.next.as_deref().and_then(safe_next) {
        Some(next) => see_other(next),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    let cookie = set_cookie(
        "mr_tz",
        &tz.name().replace('/', "%2F"),
        state.public.secure,
        false,
        Some(365 * 24 * 3600),
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/session/lang", post(set_lang))
        .route("/session/tz", post(set_tz))
}
