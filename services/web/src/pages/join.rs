//! Joining with a quick-registration link, `/join?link=…`: whose organisation it is, which
//! addresses it takes and whether an administrator approves (`PreviewRegistrationLink`); the
//! person's address and name (`RegisterWithLink`); then "check your mail", or "waiting for an
//! administrator's approval". The mailed confirmation opens `/invite?token=…`. A link that no
//! longer works is the same neutral page (410) as a dead invitation.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Form, Router};
use mailroom_proto::invitations::v1 as pb;
use serde::Deserialize;

use crate::auth::{limit_anonymous, Ctx};
use crate::errors::WebError;
use crate::page::{render, render_status, Chrome};
use crate::pages::invite::dead_invitation;
use crate::pages::reset::peer_sentence;
use crate::state::{forwarded, AppState};

#[derive(Template)]
#[template(path = "join/form.html")]
struct JoinPage {
    chrome: Chrome,
    link: String,
    preview: pb::RegistrationLinkPreview,
    /// The allowed domains, as one sentence's part.
    domains: String,
    email: String,
    first_name: String,
    last_name: String,
    error: Option<String>,
}

impl JoinPage {
    fn new(
        chrome: Chrome,
        link: String,
        preview: pb::RegistrationLinkPreview,
        form: Option<JoinForm>,
        error: Option<String>,
    ) -> Self {
        let form = form.unwrap_or_default();
        JoinPage {
            chrome,
            link,
            domains: preview.allowed_domains.join(", "),
            preview,
            email: form.email,
            first_name: form.first_name,
            last_name: form.last_name,
            error,
        }
    }
}

#[derive(Template)]
#[template(path = "join/done.html")]
struct DonePage {
    chrome: Chrome,
    awaiting_approval: bool,
    email: String,
}

/// What a link opens, or `None` when it no longer works.
async fn preview(
    state: &AppState,
    ctx: &Ctx,
    link: &str,
) -> Result<Option<pb::RegistrationLinkPreview>, WebError> {
    if link.trim().is_empty() {
        return Ok(None);
    }
    let invitations = &state.anonymous.invitations;
    let request = invitations
        .request(pb::PreviewRegistrationLinkRequest {
            link_token: link.trim().to_owned(),
        })
        .await
        .map_err(|e| WebError::from_peer(e, "/"))?;
    match invitations
        .raw()
        .preview_registration_link(forwarded(request, ctx.client_ip))
        .await
    {
        Ok(answer) => Ok(Some(answer.into_inner())),
        Err(status) => {
            let error = invitations.refused(status);
            match error.code() {
                Some(
                    tonic::Code::NotFound
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::InvalidArgument,
                ) => Ok(None),
                _ => Err(WebError::from_peer(error, "/")),
            }
        }
    }
}

#[derive(Deserialize)]
struct LinkQuery {
    #[serde(default)]
    link: String,
}

#[tracing::instrument(skip_all)]
async fn join_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<LinkQuery>,
) -> Result<Response, WebError> {
    // The preview is a public question about a secret: limited like every anonymous POST.
    if !query.link.trim().is_empty() {
        limit_anonymous(&state, &ctx).await?;
    }
    let Some(preview) = preview(&state, &ctx, &query.link).await? else {
        return dead_invitation(&ctx);
    };
    render(&JoinPage::new(
        Chrome::anonymous(&ctx),
        query.link,
        preview,
        None,
        None,
    ))
}

#[derive(Deserialize, Default)]
struct JoinForm {
    #[serde(default)]
    link: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
}

#[tracing::instrument(skip_all)]
async fn join(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<JoinForm>,
) -> Result<Response, WebError> {
    limit_anonymous(&state, &ctx).await?;
    let Some(preview) = preview(&state, &ctx, &form.link).await? else {
        return dead_invitation(&ctx);
    };
    let again = |preview: pb::RegistrationLinkPreview, form: JoinForm, error: String| {
        render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &JoinPage::new(
                Chrome::anonymous(&ctx),
                form.link.clone(),
                preview,
                Some(form),
                Some(error),
            ),
        )
    };
    if form.email.trim().is_empty() || form.first_name.trim().is_empty() {
        let error = ctx.locale.t("joining-fill-in");
        return again(preview, form, error);
    }
    let invitations = &state.anonymous.invitations;
    let request = invitations
        .request(pb::RegisterWithLinkRequest {
            link_token: form.link.trim().to_owned(),
            email: form.email.trim().to_owned(),
            first_name: form.first_name.trim().to_owned(),
            last_name: form.last_name.trim().to_owned(),
            locale: ctx.locale.tag().to_owned(),
        })
        .await
        .map_err(|e| WebError::from_peer(e, "/"))?;
    let answer = invitations
        .raw()
        .register_with_link(forwarded(request, ctx.client_ip))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| invitations.refused(status));
    match answer {
        Ok(answer) => render(&DonePage {
            chrome: Chrome::anonymous(&ctx),
            awaiting_approval: answer.awaiting_approval,
            email: form.email.trim().to_owned(),
        }),
        // Another domain, a malformed address, a name too long: the form, with why.
        Err(e) if e.code() == Some(tonic::Code::InvalidArgument) => {
            let sentence = peer_sentence(&e);
            again(preview, form, sentence)
        }
        // Disabled, expired or used up since the page was opened.
        Err(e)
            if matches!(
                e.code(),
                Some(tonic::Code::NotFound | tonic::Code::FailedPrecondition)
            ) =>
        {
            dead_invitation(&ctx)
        }
        // RESOURCE_EXHAUSTED is either a rate limit (it names a retry time: the 429 page,
        // through `from_peer`, which reads the same time) or "no free seats" (links.rs
        // `no_free_seats`, no retry time), which is something to tell the person.
        Err(e)
            if e.code() == Some(tonic::Code::ResourceExhausted)
                && crate::errors::retry_after(&peer_sentence(&e)).is_none() =>
        {
            let sentence = peer_sentence(&e);
            again(preview, form, sentence)
        }
        Err(e) => Err(WebError::from_peer(e, "/")),
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/join", get(join_page).post(join))
}
