//! Forgotten passwords: asking for a reset link (`/reset-password/request`) and the mailed
//! link's page (`/reset-password?token=`), which sets the new password. Also the password
//! rule every "new password" form shows and checks before it is sent ([`password_problem`]).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Form, Router};
use mailroom_proto::identity::v1 as pb;
use mailroom_types::PasswordPolicy;
use serde::Deserialize;

use crate::auth::{limit_anonymous, Ctx};
use crate::errors::WebError;
use crate::i18n::{Arg, Locale};
use crate::page::{render, render_status, see_other, Chrome};
use crate::state::{forwarded, AppState};

/// "8 to 256 characters; a passphrase is best", in `locale`.
pub(crate) fn policy_sentence(locale: Locale) -> String {
    locale.t_args(
        "pw-policy",
        &[
            ("min", Arg::Num(PasswordPolicy::MIN as i64)),
            ("max", Arg::Num(PasswordPolicy::MAX as i64)),
        ],
    )
}

/// What is wrong with a new password and its repetition, if anything (checked here so a
/// person learns it before the service is asked).
pub(crate) fn password_problem(locale: Locale, password: &str, repeat: &str) -> Option<String> {
    if !PasswordPolicy::allows(password) {
        return Some(locale.t_args(
            "pw-policy-broken",
            &[
                ("min", Arg::Num(PasswordPolicy::MIN as i64)),
                ("max", Arg::Num(PasswordPolicy::MAX as i64)),
            ],
        ));
    }
    if password != repeat {
        return Some(locale.t("pw-repeat-differs"));
    }
    None
}

/// The sentence of a peer's refusal, for a form shown again: capitalised and ended, as the
/// page's own sentences are (the services speak English only).
pub(crate) fn peer_sentence(error: &mailroom_clients::PeerError) -> String {
    as_sentence(&error.sentence())
}

fn as_sentence(text: &str) -> String {
    let text = text.trim();
    let mut chars = text.chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let mut out: String = first.to_uppercase().chain(chars).collect();
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[derive(Template)]
#[template(path = "reset/request.html")]
struct RequestPage {
    chrome: Chrome,
    email: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "reset/sent.html")]
struct SentPage {
    chrome: Chrome,
}

#[derive(Template)]
#[template(path = "reset/form.html")]
struct ResetPage {
    chrome: Chrome,
    token: String,
    policy: String,
    error: Option<String>,
}

/// The one page of a link that no longer works (reset, invitation, registration): 410, and
/// nothing about whose it was.
#[derive(Template)]
#[template(path = "invite/dead.html")]
pub(crate) struct DeadLinkPage {
    pub chrome: Chrome,
    /// The key of the sentence saying what to do.
    pub sentence: &'static str,
    /// Offer to ask for a new reset link.
    pub reset: bool,
}

pub(crate) fn dead_link(
    ctx: &Ctx,
    sentence: &'static str,
    reset: bool,
) -> Result<Response, WebError> {
    render_status(
        StatusCode::GONE,
        &DeadLinkPage {
            chrome: Chrome::anonymous(ctx),
            sentence,
            reset,
        },
    )
}

#[tracing::instrument(skip_all)]
async fn request_page(ctx: Ctx) -> Result<Response, WebError> {
    render(&RequestPage {
        chrome: Chrome::anonymous(&ctx),
        email: String::new(),
        error: None,
    })
}

#[derive(Deserialize)]
struct RequestForm {
    #[serde(default)]
    email: String,
}

#[tracing::instrument(skip_all)]
async fn request_reset(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<RequestForm>,
) -> Result<Response, WebError> {
    limit_anonymous(&state, &ctx).await?;
    let email = form.email.trim().to_owned();
    if email.is_empty() {
        return render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &RequestPage {
                error: Some(ctx.locale.t("field-required")),
                chrome: Chrome::anonymous(&ctx),
                email,
            },
        );
    }
    let identity = &state.anonymous.identity;
    let request = identity
        .request(pb::RequestPasswordResetRequest {
            login_email: email.clone(),
        })
        .await
        .map_err(|e| WebError::from_peer(e, "/reset-password/request"))?;
    let answer = identity
        .raw_auth()
        .request_password_reset(forwarded(request, ctx.client_ip))
        .await
        .map_err(|status| identity.refused(status));
    match answer {
        Ok(_) => render(&SentPage {
            chrome: Chrome::anonymous(&ctx),
        }),
        Err(e) if e.code() == Some(tonic::Code::InvalidArgument) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &RequestPage {
                error: Some(ctx.locale.t("reset-email-malformed")),
                chrome: Chrome::anonymous(&ctx),
                email,
            },
        ),
        Err(e) => Err(WebError::from_peer(e, "/reset-password/request")),
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

#[tracing::instrument(skip_all)]
async fn reset_page(ctx: Ctx, Query(query): Query<TokenQuery>) -> Result<Response, WebError> {
    if query.token.trim().is_empty() {
        return dead_link(&ctx, "link-dead-reset", true);
    }
    render(&ResetPage {
        policy: policy_sentence(ctx.locale),
        chrome: Chrome::anonymous(&ctx),
        token: query.token,
        error: None,
    })
}

#[derive(Deserialize)]
struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    repeat: String,
}

#[tracing::instrument(skip_all)]
async fn reset(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<ResetForm>,
) -> Result<Response, WebError> {
    limit_anonymous(&state, &ctx).await?;
    let again = |ctx: &Ctx, token: String, error: String| {
        render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &ResetPage {
                policy: policy_sentence(ctx.locale),
                chrome: Chrome::anonymous(ctx),
                token,
                error: Some(error),
            },
        )
    };
    if form.token.trim().is_empty() {
        return dead_link(&ctx, "link-dead-reset", true);
    }
    if let Some(problem) = password_problem(ctx.locale, &form.password, &form.repeat) {
        return again(&ctx, form.token, problem);
    }
    let identity = &state.anonymous.identity;
    let request = identity
        .request(pb::ResetPasswordRequest {
            token: form.token.trim().to_owned(),
            new_password: form.password,
        })
        .await
        .map_err(|e| WebError::from_peer(e, "/reset-password/request"))?;
    let answer = identity
        .raw_auth()
        .reset_password(forwarded(request, ctx.client_ip))
        .await
        .map_err(|status| identity.refused(status));
    match answer {
        Ok(_) => Ok(see_other("/sign-in?notice=password-reset")),
        // Unknown, used or expired: the link is spent, whatever the reason.
        Err(e) if e.code() == Some(tonic::Code::Unauthenticated) => {
            dead_link(&ctx, "link-dead-reset", true)
        }
        Err(e) if e.code() == Some(tonic::Code::InvalidArgument) => {
            again(&ctx, form.token, peer_sentence(&e))
        }
        Err(e) => Err(WebError::from_peer(e, "/reset-password/request")),
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/reset-password/request",
            get(request_page).post(request_reset),
        )
        .route("/reset-password", get(reset_page).post(reset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_password_is_checked_before_it_is_sent() {
        assert!(password_problem(Locale::En, "short", "short").is_some());
        assert!(password_problem(Locale::En, "long enough", "long enougH").is_some());
        assert_eq!(password_problem(Locale::Ru, "пароль12", "пароль12"), None);
    }

    #[test]
    fn a_services_words_read_as_a_sentence() {
        assert_eq!(
            as_sentence("this link accepts addresses at a.test only"),
            "This link accepts addresses at a.test only."
        );
        assert_eq!(as_sentence("Done."), "Done.");
        assert_eq!(as_sentence(""), "");
    }
}
