//! Addresses (part E): "where is this address used?" (`/addresses?email=` →
//! `GetEmailAddressUsage`: logins, contact fields, mailboxes, pending invitations, each with
//! its person) and moving an address away from a dismissed person (`/addresses/transfer`:
//! to another person, found by their address, as login or contact, or freed for an
//! invitation → `TransferEmailAddress`), whose result shows the tombstone address left behind.
//! Admins only; identity decides.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Form, Router};
use mailroom_proto::identity::v1 as pb;
use serde::Deserialize;

use crate::auth::SignedIn;
use crate::errors::WebError;
use crate::page::{render, render_status, Chrome};
use crate::pages::people::{display_name, enc, find_by_email, is_dismissed, state_key, user_id};
use crate::state::AppState;

/// One use of the address.
struct UseRow {
    kind_key: &'static str,
    user_id: String,
    name: String,
    state_key: &'static str,
    dismissed: bool,
    /// Whether an admin may move it away from this person here.
    transferable: bool,
}

#[derive(Template)]
#[template(path = "people/addresses.html")]
struct UsagePage {
    chrome: Chrome,
    email: String,
    /// The address as identity compares it, once asked.
    canonical: String,
    uses: Option<Vec<UseRow>>,
}

impl UsagePage {
    fn transfer_link(&self, from: &str) -> String {
        format!(
            "/addresses/transfer?email={}&from={}",
            enc(&self.canonical),
            enc(from)
        )
    }
}

fn kind_key(kind: i32) -> &'static str {
    match pb::AddressUseKind::try_from(kind).unwrap_or_default() {
        pb::AddressUseKind::Login => "people-address-login",
        pb::AddressUseKind::Contact => "people-address-contact",
        pb::AddressUseKind::Mailbox => "people-address-mailbox",
        pb::AddressUseKind::PendingInvitation => "addr-pending-invitation",
        pb::AddressUseKind::Unspecified => "people-state-unknown",
    }
}

#[derive(Deserialize, Default)]
struct UsageQuery {
    #[serde(default)]
    email: String,
}

#[tracing::instrument(skip_all)]
async fn usage(
    State(state): State<AppState>,
    signed: SignedIn,
    Query(query): Query<UsageQuery>,
) -> Result<Response, WebError> {
    let email = query.email.trim().to_owned();
    let chrome = Chrome::signed_in(&state, &signed).await;
    if email.is_empty() {
        return render(&UsagePage {
            chrome,
            email,
            canonical: String::new(),
            uses: None,
        });
    }
    let answer = signed
        .clients
        .identity
        .call(
            pb::GetEmailAddressUsageRequest {
                address: email.clone(),
            },
            |mut raw, request| async move { raw.get_email_address_usage(request).await },
        )
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    let uses = answer
        .uses
        .iter()
        .map(|u| {
            let dismissed = u.user_state == pb::UserState::Dismissed as i32;
            let kind = pb::AddressUseKind::try_from(u.kind).unwrap_or_default();
            UseRow {
                kind_key: kind_key(u.kind),
                user_id: u.user_id.clone(),
                name: u.user_display_name.clone(),
                state_key: state_key(u.user_state),
                dismissed,
                transferable: match kind {
                    pb::AddressUseKind::Login => dismissed,
                    pb::AddressUseKind::Contact => true,
                    _ => false,
                },
            }
        })
        .collect();
    render(&UsagePage {
        chrome,
        email,
        canonical: answer.address,
        uses: Some(uses),
    })
}

/// The transfer form, as filled in.
#[derive(Deserialize, Default, Clone)]
struct TransferForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    from: String,
    /// `person` or `free`.
    #[serde(default)]
    destination: String,
    #[serde(default)]
    to_email: String,
    /// `contact` or `login`.
    #[serde(default)]
    as_kind: String,
}

impl TransferForm {
    fn freeing(&self) -> bool {
        self.destination == "free"
    }
    fn as_login(&self) -> bool {
        self.as_kind == "login"
    }
}

#[derive(Template)]
#[template(path = "people/transfer.html")]
struct TransferPage {
    chrome: Chrome,
    from_name: String,
    from_dismissed: bool,
    form: TransferForm,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "people/transferred.html")]
struct TransferredPage {
    chrome: Chrome,
    address: String,
    from_id: String,
    from_name: String,
    tombstone: String,
    /// The receiver's id and name, unless the address was freed.
    to: Option<(String, String)>,
    as_login: bool,
}

async fn transfer_page(
    state: &AppState,
    signed: &SignedIn,
    form: TransferForm,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let from = signed
        .clients
        .identity
        .user(user_id(&form.from)?)
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    render_status(
        status,
        &TransferPage {
            chrome: Chrome::signed_in(state, signed).await,
            from_name: display_name(&from),
            from_dismissed: is_dismissed(&from),
            form,
            error,
        },
    )
}

#[tracing::instrument(skip_all)]
async fn transfer_form(
    State(state): State<AppState>,
    signed: SignedIn,
    Query(mut form): Query<TransferForm>,
) -> Result<Response, WebError> {
    if form.destination.is_empty() {
        form.destination = "person".into();
    }
    if form.as_kind.is_empty() {
        form.as_kind = "contact".into();
    }
    transfer_page(&state, &signed, form, None, StatusCode::OK).await
}

#[tracing::instrument(skip_all)]
async fn transfer(
    State(state): State<AppState>,
    signed: SignedIn,
    Form(form): Form<TransferForm>,
) -> Result<Response, WebError> {
    use pb::transfer_email_address_request::Destination;
    let from = user_id(&form.from)?;
    let destination = if form.freeing() {
        Destination::Release(true)
    } else {
        match find_by_email(&signed, &form.to_email).await? {
            Some(to) => Destination::ToUserId(to.id),
            None => {
                let sentence = if form.to_email.trim().is_empty() {
                    signed.ctx.locale.t("addr-recipient-required")
                } else {
                    signed.ctx.locale.t_args(
                        "dept-no-such-person",
                        &[("email", crate::i18n::Arg::Str(form.to_email.trim()))],
                    )
                };
                return transfer_page(
                    &state,
                    &signed,
                    form,
                    Some(sentence),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
        }
    };
    let as_kind = if form.as_login() {
        pb::AddressUseKind::Login
    } else {
        pb::AddressUseKind::Contact
    };
    let message = pb::TransferEmailAddressRequest {
        address: form.email.trim().to_owned(),
        from_user_id: from.to_string(),
        destination: Some(destination),
        as_kind: as_kind as i32,
    };
    let answer = signed
        .clients
        .identity
        .call(message, |mut raw, request| async move {
            raw.transfer_email_address(request).await
        })
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => {
            return match WebError::from_peer(err, &signed.ctx.path) {
                WebError::Invalid { message } | WebError::Conflict { message } => {
                    transfer_page(
                        &state,
                        &signed,
                        form,
                        Some(message),
                        StatusCode::UNPROCESSABLE_ENTITY,
                    )
                    .await
                }
                other => Err(other),
            }
        }
    };
    let from_user = answer.from_user.unwrap_or_default();
    let tombstone = [&from_user.login_email, &from_user.contact_email]
        .into_iter()
        .find(|a| a.ends_with("@tombstone.invalid"))
        .cloned()
        .unwrap_or_default();
    render(&TransferredPage {
        chrome: Chrome::signed_in(&state, &signed).await,
        address: form.email.trim().to_lowercase(),
        from_id: from.to_string(),
        from_name: display_name(&from_user),
        tombstone,
        to: answer.to_user.map(|u| (u.id.clone(), display_name(&u))),
        as_login: form.as_login(),
    })
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/addresses", get(usage))
        .route("/addresses/transfer", get(transfer_form).post(transfer))
}
