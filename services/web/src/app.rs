//! The router and the frame every request passes through: the request's context (language,
//! time zone, CSRF token, client address), the CSRF check of every state change, the error
//! page in the request's language, ending sessions, and the security headers.

use std::net::SocketAddr;
use std::time::Instant;

use askama::Template;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::FutureExt;
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::auth::Ctx;
use crate::errors::{ErrorPage, WebError};
use crate::i18n::{Arg, Locale};
use crate::page::Chrome;
use crate::session::{EndSession, SessionStore};
use crate::state::AppState;
use crate::util::{cookie, hmac_b64, random_token, set_cookie};

/// The biggest form the console accepts (a hundred mailboxes to connect fit many times).
const MAX_FORM_BYTES: usize = 1024 * 1024;

/// How long a form's body may take to arrive.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The CSP of every page: scripts and styles only from this origin, no inline code, no
/// framing by others.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::pages::home::routes())
        .merge(crate::pages::auth::routes())
        .merge(crate::pages::account::routes())
        .merge(crate::pages::invite::routes())
        .merge(crate::pages::join::routes())
        .merge(crate::pages::reset::routes())
        .merge(crate::pages::mailboxes::routes())
        .merge(crate::pages::mail::routes())
        .merge(crate::pages::activity::routes())
        .merge(crate::pages::invitations::routes())
        .merge(crate::pages::people::routes())
        .merge(crate::pages::departments::routes())
        .merge(crate::pages::addresses::routes())
        .merge(crate::pages::access::routes())
        .route("/static/{hash}/{*name}", get(crate::assets::serve))
        .route("/healthz", get(healthz))
        .route("/livez", get(|| async { "ok" }))
        .fallback(|| async { WebError::NotFound })
        .route_layer(middleware::from_fn(measure))
        .layer(middleware::from_fn_with_state(state.clone(), frame))
        .with_state(state)
}

/// Ready when Redis (the sessions) answers and shutdown has not begun. What failed is logged,
/// not told to whoever asks.
async fn healthz(State(state): State<AppState>) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let ping = async {
        let mut conn = state.sessions.link().connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(mailroom_platform::redis::RedisError::from)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => "ok".into_response(),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "not ready: Redis (the sessions) does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
        }
        Err(_) => {
            tracing::warn!("not ready: Redis (the sessions) did not answer within 2 s");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
        }
    }
}

/// RED metrics by route (the matched pattern, never the raw path).
async fn measure(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("mailroom_web_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("mailroom_web_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

fn locale_of(headers: &HeaderMap) -> Locale {
    cookie(headers, "mr_lang")
        .and_then(Locale::parse)
        .or_else(|| {
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .and_then(Locale::from_accept_language)
        })
        .unwrap_or_default()
}

fn tz_of(headers: &HeaderMap) -> Option<chrono_tz::Tz> {
    cookie(headers, "mr_tz")
        .map(|v| v.replace("%2F", "/"))
        .and_then(|v| v.parse().ok())
}

/// The CSRF token of a (CSRF cookie, session cookie) pair: a page's forms carry it, and a
/// post is accepted only with the token of the cookies it came with.
pub fn csrf_token(key: &[u8], csrf_cookie: &str, session_cookie: Option<&str>) -> String {
    let session = session_cookie.map(SessionStore::key_of).unwrap_or_default();
    hmac_b64(key, format!("csrf\0{csrf_cookie}\0{session}").as_bytes())
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the browser says this request came from another site: `Sec-Fetch-Site` other
/// than same-origin, or an `Origin` other than the console's public origin (or, only when no
/// public URL is configured, than the `Host` it was sent to).
fn cross_site(headers: &HeaderMap, public_origin: &str, host_fallback: bool) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return true;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if origin == "null" {
        return true;
    }
    if origin.eq_ignore_ascii_case(public_origin) {
        return false;
    }
    if !host_fallback {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let same_host = host.is_some_and(|h| {
        origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(h))
    });
    !same_host
}

/// The `_csrf` field of a urlencoded form.
fn form_token(body: &[u8]) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "_csrf")
        .map(|(_, v)| v)
}

async fn frame(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let headers = &parts.headers;
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    // Every x-forwarded-for line, in order: a proxy that adds a line of its own must not
    // leave a client's forged first line to be believed.
    let forwarded_for: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded_for = (!forwarded_for.is_empty()).then(|| forwarded_for.join(","));
    let client_ip = state.client_ip(peer, forwarded_for.as_deref());
    let existing_csrf = cookie(headers, state.public.csrf_cookie()).map(str::to_owned);
    let csrf_cookie = existing_csrf.clone().unwrap_or_else(random_token);
    let session_cookie = cookie(headers, state.public.session_cookie())
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let tz = tz_of(headers);
    let query_notice = parts.uri.query().and_then(|q| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == "notice")
            .map(|(_, v)| v)
            .filter(|v| v.len() <= 40 && v.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
    });
    let ctx = Ctx {
        locale: locale_of(headers),
        tz: tz.unwrap_or(chrono_tz::UTC),
        tz_known: tz.is_some(),
        csrf: csrf_token(&state.csrf_key, &csrf_cookie, session_cookie.as_deref()),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into()),
        client_ip,
        session_cookie: session_cookie.clone(),
        request_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        fragment: headers
            .get("x-fragment")
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                v.len() <= 64
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
            .map(str::to_owned),
        notice: query_notice,
        started,
    };
    let span = tracing::info_span!("page", method = %parts.method, path = %parts.uri.path(), request_id = %ctx.request_id);

    // Every state change: from this site, with the token of its cookies.
    let mut body = Body::new(body);
    if is_unsafe(&parts.method) {
        let from_here = existing_csrf.is_some()
            && !cross_site(
                &parts.headers,
                &state.public.origin,
                state.public.host_fallback,
            );
        if !from_here {
            return refuse(&state, &ctx, &parts, WebError::Csrf, "csrf", started).await;
        }
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_FORM_BYTES) {
            return refuse(
                &state,
                &ctx,
                &parts,
                WebError::TooLarge,
                "too_large",
                started,
            )
            .await;
        }
        let header_token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let token = match header_token {
            Some(token) => Some(token),
            None => match tokio::time::timeout(
                BODY_DEADLINE,
                axum::body::to_bytes(body, MAX_FORM_BYTES),
            )
            .await
            {
                Ok(Ok(bytes)) => {
                    let token = form_token(&bytes);
                    body = Body::from(bytes);
                    token
                }
                Ok(Err(_)) | Err(_) => {
                    return refuse(
                        &state,
                        &ctx,
                        &parts,
                        WebError::TooLarge,
                        "too_large",
                        started,
                    )
                    .await
                }
            },
        };
        let ok = token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(ctx.csrf.as_bytes())));
        if !ok {
            return refuse(&state, &ctx, &parts, WebError::Csrf, "csrf", started).await;
        }
    }
    // Beyond the pages the process may work on at once, a person is told to try again at once
    // rather than queued behind everyone.
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        return refuse(
            &state,
            &ctx,
            &parts,
            WebError::Unavailable("too many pages at once".into()),
            "overloaded",
            started,
        )
        .await;
    };
    parts.extensions.insert(ctx.clone());
    let request = Request::from_parts(parts, body);
    // A panic in a page is a 500 page, not a dropped connection; a page that takes longer than
    // any service may is a 503 page.
    let deadline = state.request_deadline;
    let run = std::panic::AssertUnwindSafe(next.run(request).instrument(span)).catch_unwind();
    let response = match tokio::time::timeout(deadline, run).await {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => {
            tracing::error!("a page panicked");
            metrics::counter!("mailroom_web_panics_total").increment(1);
            WebError::Internal(anyhow::anyhow!("a page panicked")).into_response()
        }
        Err(_) => {
            tracing::warn!("a page took longer than the request deadline");
            WebError::Unavailable("the page took too long".into()).into_response()
        }
    };
    let new_csrf = existing_csrf.is_none().then_some(csrf_cookie);
    finish(&state, &ctx, new_csrf, response, started).await
}

/// A request refused before any page ran, counted by reason.
async fn refuse(
    state: &AppState,
    ctx: &Ctx,
    parts: &axum::http::request::Parts,
    error: WebError,
    reason: &'static str,
    started: Instant,
) -> Response {
    tracing::debug!(path = %parts.uri.path(), reason, "a request was refused before any page ran");
    metrics::counter!("mailroom_web_refused_total", "reason" => reason).increment(1);
    finish(state, ctx, None, error.into_response(), started).await
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorView {
    chrome: Chrome,
    sentence: String,
    detail: Option<String>,
}

/// The error page, session end, CSRF cookie and headers of a response.
async fn finish(
    state: &AppState,
    ctx: &Ctx,
    new_csrf: Option<String>,
    mut response: Response,
    started: Instant,
) -> Response {
    if let Some(page) = response.extensions_mut().remove::<ErrorPage>() {
        let status = response.status();
        let retry = response.headers().get(header::RETRY_AFTER).cloned();
        let sentence = match page.retry_after_secs {
            Some(secs) => ctx
                .locale
                .t_args(page.key, &[("seconds", Arg::Num(secs as i64))]),
            None => ctx.locale.t(page.key),
        };
        let view = ErrorView {
            chrome: Chrome::anonymous(ctx),
            sentence,
            detail: page.message,
        };
        response = match view.render() {
            Ok(html) => (status, axum::response::Html(html)).into_response(),
            Err(err) => {
                tracing::error!(error = %err, "the error page did not render");
                status.into_response()
            }
        };
        if let Some(retry) = retry {
            response.headers_mut().insert(header::RETRY_AFTER, retry);
        }
    }
    if response.extensions().get::<EndSession>().is_some() {
        if let Some(cookie) = &ctx.session_cookie {
            if let Err(err) = state
                .sessions
                .delete_key(&SessionStore::key_of(cookie))
                .await
            {
                tracing::warn!(error = %err, "a session could not be deleted; it idles out");
            }
        }
        let clear = set_cookie(
            state.public.session_cookie(),
            "",
            state.public.secure,
            true,
            Some(0),
        );
        if let Ok(value) = HeaderValue::from_str(&clear) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    if let Some(csrf) = new_csrf {
        // As long as a session may live, so a restored tab's forms still post.
        let value = set_cookie(
            state.public.csrf_cookie(),
            &csrf,
            state.public.secure,
            true,
            Some(state.config.session_max_secs as i64),
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    security_headers(response.headers_mut(), state.public.secure);
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{:.1}ms",
        started.elapsed().as_secs_f64() * 1000.0
    )) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-response-time"), value);
    }
    response
}

/// The headers of every response; a route that set its own CSP or framing (the mail
/// frame) keeps them.
pub fn security_headers(headers: &mut HeaderMap, https: bool) {
    let mut set = |name: HeaderName, value: &'static str| {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::CONTENT_SECURITY_POLICY, PAGE_CSP);
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "same-origin");
    set(
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=()",
    );
    if https {
        set(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        );
    }
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_posts_are_recognised() {
        let base = "http://127.0.0.1:8080";
        let mut h = HeaderMap::new();
        assert!(!cross_site(&h, base, false));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&h, base, false));
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(cross_site(&h, base, true));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(!cross_site(&h, base, false));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(cross_site(&h, base, false));
        // A name that resolves here (DNS rebinding) is not the configured origin.
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://rebound.example"),
        );
        h.insert(header::HOST, HeaderValue::from_static("rebound.example"));
        assert!(cross_site(&h, base, false));
        assert!(!cross_site(&h, base, true));
    }

    #[test]
    fn the_csrf_token_is_bound_to_both_cookies() {
        let key = b"k";
        let a = csrf_token(key, "c1", None);
        assert_ne!(a, csrf_token(key, "c2", None));
        assert_ne!(a, csrf_token(key, "c1", Some("s")));
        assert_eq!(a, csrf_token(key, "c1", None));
    }
}
