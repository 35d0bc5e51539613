//! The invitee's page, `/invite?token=…`: the mailed link of an invitation by email, of a
//! direct registration ("set your password") and of a confirmed quick registration. Shows
//! whose organisation it is and who invited, asks for the name and a password, accepts, and
//! signs the person in. A link that no longer works is one neutral page (410) for every reason.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Form, Router};
use mailroom_clients::PeerError;
use mailroom_proto::invitations::v1 as pb;
use serde::Deserialize;

use crate::auth::{limit_anonymous, Ctx};
use crate::errors::WebError;
use crate::page::{render, render_status, see_other, Chrome};
use crate::pages::reset::{dead_link, password_problem, peer_sentence, policy_sentence};
use crate::state::{forwarded, AppState};

#[derive(Template)]
#[template(path = "invite/accept.html")]
struct AcceptPage {
    chrome: Chrome,
    token: String,
    preview: pb::InvitationPreview,
    first_name: String,
    last_name: String,
    policy: String,
    error: Option<String>,
}

impl AcceptPage {
    /// The page's title key: a person registered by an admin only sets a password.
    fn title_key(&self) -> &'static str {
        match pb::InvitationKind::try_from(self.preview.kind).unwrap_or_default() {
            pb::InvitationKind::DirectRegistration => "accept-title-direct",
            pb::InvitationKind::RegistrationLink => "accept-title-confirm",
            _ => "accept-title",
        }
    }
}

/// What a token opens: the preview, or that the link is dead (`None`).
async fn preview(
    state: &AppState,
    ctx: &Ctx,
    token: &str,
) -> Result<Option<pb::InvitationPreview>, WebError> {
    if token.trim().is_empty() {
        return Ok(None);
    }
    let invitations = &state.anonymous.invitations;
    let request = invitations
        .request(pb::PreviewInvitationRequest {
            token: token.trim().to_owned(),
        })
        .await
        .map_err(|e| WebError::from_peer(e, "/"))?;
    match invitations
        .raw()
        .preview_invitation(forwarded(request, ctx.client_ip))
        .await
    {
        Ok(answer) => Ok(Some(answer.into_inner())),
        Err(status) => {
            let error = invitations.refused(status);
            if dead(&error) {
                Ok(None)
            } else {
                Err(WebError::from_peer(error, "/"))
            }
        }
    }
}

/// Unknown, expired, used, revoked, rejected or awaiting approval: the link cannot be used.
fn dead(error: &PeerError) -> bool {
    matches!(
        error.code(),
        Some(
            tonic::Code::NotFound
                | tonic::Code::FailedPrecondition
                | tonic::Code::InvalidArgument
                | tonic::Code::Unauthenticated
        )
    )
}

pub(crate) fn dead_invitation(ctx: &Ctx) -> Result<Response, WebError> {
    dead_link(ctx, "link-dead-invite", false)
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

#[tracing::instrument(skip_all)]
async fn accept_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<TokenQuery>,
) -> Result<Response, WebError> {
    // The preview is a public question about a secret: limited like every anonymous POST.
    if !query.token.trim().is_empty() {
        limit_anonymous(&state, &ctx).await?;
    }
    let Some(preview) = preview(&state, &ctx, &query.token).await? else {
        return dead_invitation(&ctx);
    };
    render(&AcceptPage {
        policy: policy_sentence(ctx.locale),
        chrome: Chrome::anonymous(&ctx),
        token: query.token,
        first_name: preview.first_name.clone(),
        last_name: preview.last_name.clone(),
        preview,
        error: None,
    })
}

#[derive(Deserialize)]
struct AcceptForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    repeat: String,
}

#[tracing::instrument(skip_all)]
async fn accept(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<AcceptForm>,
) -> Result<Response, WebError> {
    limit_anonymous(&state, &ctx).await?;
    let again = |preview: pb::InvitationPreview, form: AcceptForm, error: String| {
        render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &AcceptPage {
                policy: policy_sentence(ctx.locale),
                chrome: Chrome::anonymous(&ctx),
                token: form.token,
                first_name: form.first_name,
                last_name: form.last_name,
                preview,
                error: Some(error),
            },
        )
    };
    let Some(preview) = preview(&state, &ctx, &form.token).await? else {
        return dead_invitation(&ctx);
    };
    if preview.first_name.is_empty() && form.first_name.trim().is_empty() {
        let error = ctx.locale.t("accept-first-name-required");
        return again(preview, form, error);
    }
    if let Some(problem) = password_problem(ctx.locale, &form.password, &form.repeat) {
        return again(preview, form, problem);
    }
    let invitations = &state.anonymous.invitations;
    let request = invitations
        .request(pb::AcceptInvitationRequest {
            token: form.token.trim().to_owned(),
            first_name: form.first_name.trim().to_owned(),
            last_name: form.last_name.trim().to_owned(),
            password: form.password.clone(),
        })
        .await
        .map_err(|e| WebError::from_peer(e, "/"))?;
    let answer = invitations
        .raw()
        .accept_invitation(forwarded(request, ctx.client_ip))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| invitations.refused(status));
    let accepted = match answer {
        Ok(accepted) => accepted,
        Err(e) if e.code() == Some(tonic::Code::InvalidArgument) => {
            let sentence = peer_sentence(&e);
            return again(preview, form, sentence);
        }
        Err(e) if dead(&e) => {
            // A refusal that leaves the link usable (no free seat yet) is said on the form;
            // a link that ended meanwhile is the neutral page.
            return match self::preview(&state, &ctx, &form.token).await? {
                Some(preview) => {
                    let sentence = peer_sentence(&e);
                    again(preview, form, sentence)
                }
                None => dead_invitation(&ctx),
            };
        }
        Err(e) => return Err(WebError::from_peer(e, "/")),
    };
    let signed = crate::pages::auth::start_session(
        &state,
        &ctx,
        &accepted.login_email,
        &form.password,
        &accepted.org_id,
    )
    .await;
    match signed {
        Ok(response) => Ok(response),
        // The account is ready; only signing in failed (a limit, a moment's outage).
        Err(err) => {
            tracing::warn!(error = %err, "accepted, but the sign-in after it failed");
            Ok(see_other(&format!(
                "/sign-in?notice=invite-accepted&org={}",
                percent_encoding::utf8_percent_encode(
                    &accepted.org_id,
                    percent_encoding::NON_ALPHANUMERIC
                )
            )))
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/invite", get(accept_page).post(accept))
}
