//! The signed-in person's own account, `/account`: their profile, changing the login address
//! (a code mailed to the new one), changing the password (which ends every session, this one
//! too), signing out everywhere, and the time zone dates are shown in (no JavaScript needed).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use mailroom_proto::identity::v1 as pb;
use serde::Deserialize;

use crate::auth::SignedIn;
use crate::errors::WebError;
use crate::page::{render_status, see_other, Chrome};
use crate::pages::reset::{password_problem, peer_sentence, policy_sentence};
use crate::session::EndSession;
use crate::state::AppState;

/// Zones offered without JavaScript (the current one is added when it is not among them).
const ZONES: &[&str] = &[
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Kaliningrad",
    "Europe/Moscow",
    "Europe/Samara",
    "Asia/Yekaterinburg",
    "Asia/Omsk",
    "Asia/Novosibirsk",
    "Asia/Krasnoyarsk",
    "Asia/Irkutsk",
    "Asia/Yakutsk",
    "Asia/Vladivostok",
    "Asia/Magadan",
    "Asia/Kamchatka",
    "Asia/Almaty",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "Australia/Sydney",
];

/// Which section's form a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    LoginEmail,
    Code,
    Password,
}

#[derive(Template)]
#[template(path = "account/index.html")]
struct AccountPage {
    chrome: Chrome,
    user: pb::User,
    zones: Vec<&'static str>,
    /// A code was mailed to a new login address: show the code form.
    code_pending: bool,
    new_login_email: String,
    policy: String,
    error: Option<(Section, String)>,
}

impl AccountPage {
    fn name(&self) -> String {
        format!("{} {}", self.user.first_name, self.user.last_name)
            .trim()
            .to_owned()
    }

    fn error_of(&self, section: &str) -> Option<&str> {
        let wanted = match section {
            "login" => Section::LoginEmail,
            "code" => Section::Code,
            _ => Section::Password,
        };
        self.error
            .as_ref()
            .filter(|(s, _)| *s == wanted)
            .map(|(_, m)| m.as_str())
    }

    fn zone_selected(&self, zone: &str) -> bool {
        self.chrome.tz_name() == zone
    }
}

#[derive(Deserialize, Default)]
struct AccountQuery {
    #[serde(default)]
    code: Option<String>,
}

async fn page(
    state: &AppState,
    signed: &SignedIn,
    status: StatusCode,
    code_pending: bool,
    new_login_email: String,
    error: Option<(Section, String)>,
) -> Result<Response, WebError> {
    let user = signed
        .clients
        .identity
        .user(signed.session.user_id)
        .await
        .map_err(|e| WebError::from_peer(e, "/account"))?;
    let chrome = Chrome::signed_in(state, signed).await;
    let mut zones = ZONES.to_vec();
    if !zones.contains(&chrome.tz_name()) {
        zones.insert(0, chrome.tz_name());
    }
    render_status(
        status,
        &AccountPage {
            policy: policy_sentence(signed.ctx.locale),
            chrome,
            user,
            zones,
            code_pending,
            new_login_email,
            error,
        },
    )
}

#[tracing::instrument(skip_all)]
async fn account(
    State(state): State<AppState>,
    signed: SignedIn,
    Query(query): Query<AccountQuery>,
) -> Result<Response, WebError> {
    page(
        &state,
        &signed,
        StatusCode::OK,
        query.code.is_some(),
        String::new(),
        None,
    )
    .await
}

#[derive(Deserialize)]
struct LoginEmailForm {
    #[serde(default)]
    new_login_email: String,
}

#[tracing::instrument(skip_all)]
async fn request_login_email(
    State(state): State<AppState>,
    signed: SignedIn,
    Form(form): Form<LoginEmailForm>,
) -> Result<Response, WebError> {
    let email = form.new_login_email.trim().to_owned();
    let message = pb::RequestLoginEmailChangeRequest {
        new_login_email: email.clone(),
    };
    let answer = signed
        .clients
        .identity
        .call(message, |mut raw, request| async move {
            raw.request_login_email_change(request).await
        })
        .await;
    match answer {
        Ok(_) => Ok(see_other(
            "/account?code=1&notice=login-code-sent#login-code",
        )),
        Err(e)
            if matches!(
                e.code(),
                Some(
                    tonic::Code::InvalidArgument
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::AlreadyExists
                )
            ) =>
        {
            let sentence = peer_sentence(&e);
            page(
                &state,
                &signed,
                StatusCode::UNPROCESSABLE_ENTITY,
                false,
                email,
                Some((Section::LoginEmail, sentence)),
            )
            .await
        }
        Err(e) => Err(WebError::from_peer(e, "/account")),
    }
}

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    code: String,
}

#[tracing::instrument(skip_all)]
async fn confirm_login_email(
    State(state): State<AppState>,
    signed: SignedIn,
    Form(form): Form<CodeForm>,
) -> Result<Response, WebError> {
    let message = pb::ConfirmLoginEmailChangeRequest {
        code: form.code.trim().to_owned(),
    };
    let answer = signed
        .clients
        .identity
        .call(message, |mut raw, request| async move {
            raw.confirm_login_email_change(request).await
        })
        .await;
    match answer {
        Ok(_) => Ok(see_other("/account?notice=login-email-changed")),
        Err(e)
            if matches!(
                e.code(),
                Some(tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition)
            ) =>
        {
            let sentence = peer_sentence(&e);
            page(
                &state,
                &signed,
                StatusCode::UNPROCESSABLE_ENTITY,
                true,
                String::new(),
                Some((Section::Code, sentence)),
            )
            .await
        }
        Err(e) => Err(WebError::from_peer(e, "/account")),
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    repeat: String,
}

#[tracing::instrument(skip_all)]
async fn change_password(
    State(state): State<AppState>,
    signed: SignedIn,
    Form(form): Form<PasswordForm>,
) -> Result<Response, WebError> {
    let locale = signed.ctx.locale;
    let wrong = |sentence: String| (Section::Password, sentence);
    if form.current.is_empty() {
        let error = wrong(locale.t("account-current-required"));
        return page(
            &state,
            &signed,
            StatusCode::UNPROCESSABLE_ENTITY,
            false,
            String::new(),
            Some(error),
        )
        .await;
    }
    if let Some(problem) = password_problem(locale, &form.password, &form.repeat) {
        return page(
            &state,
            &signed,
            StatusCode::UNPROCESSABLE_ENTITY,
            false,
            String::new(),
            Some(wrong(problem)),
        )
        .await;
    }
    let message = pb::ChangePasswordRequest {
        current_password: form.current,
        new_password: form.password,
    };
    let auth = signed.clients.identity.raw_auth();
    let answer = signed
        .clients
        .identity
        .call(message, |_, request| async move {
            let mut auth = auth;
            auth.change_password(request).await
        })
        .await;
    match answer {
        Ok(()) => {
            let mut response = see_other("/sign-in?notice=password-changed");
            response.extensions_mut().insert(EndSession);
            Ok(response)
        }
        // A wrong current password is UNAUTHENTICATED too; the session still works then.
        Err(e) if e.code() == Some(tonic::Code::Unauthenticated) => {
            match signed.clients.identity.user(signed.session.user_id).await {
                Ok(_) => {
                    let error = wrong(locale.t("account-current-wrong"));
                    page(
                        &state,
                        &signed,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        false,
                        String::new(),
                        Some(error),
                    )
                    .await
                }
                Err(e) => Err(WebError::from_peer(e, "/account")),
            }
        }
        Err(e)
            if matches!(
                e.code(),
                Some(tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition)
            ) =>
        {
            let error = wrong(peer_sentence(&e));
            page(
                &state,
                &signed,
                StatusCode::UNPROCESSABLE_ENTITY,
                false,
                String::new(),
                Some(error),
            )
            .await
        }
        Err(e) => Err(WebError::from_peer(e, "/account")),
    }
}

#[tracing::instrument(skip_all)]
async fn sign_out_everywhere(signed: SignedIn) -> Result<Response, WebError> {
    let auth = signed.clients.identity.raw_auth();
    signed
        .clients
        .identity
        .call(
            pb::SignOutEverywhereRequest {
                user_id: String::new(),
            },
            |_, request| async move {
                let mut auth = auth;
                auth.sign_out_everywhere(request).await
            },
        )
        .await
        .map_err(|e| WebError::from_peer(e, "/account"))?;
    let mut response = see_other("/sign-in?notice=signed-out-everywhere");
    response.extensions_mut().insert(EndSession);
    Ok(response)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/account", get(account))
        .route("/account/login-email", post(request_login_email))
        .route("/account/login-email/confirm", post(confirm_login_email))
        .route("/account/password", post(change_password))
        .route("/sign-out/everywhere", post(sign_out_everywhere))
}
