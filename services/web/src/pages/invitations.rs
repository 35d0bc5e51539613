//! Inviting people, the inviter's side (part D): the invite form (`/people/invite`) and its
//! result (`mailto:` links for one's own mail client), the invitations list with its row
//! actions (`/invitations`), quick-registration links (`/invitations/links`), direct
//! registration (`/people/register`) and the organisation's "allow everyone to invite"
//! setting (`/settings`). The navigation hides what a person cannot use; the services decide
//! every call, and their refusal is the 403 page.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use mailroom_clients::PeerError;
use mailroom_proto::identity::v1 as ipb;
use mailroom_proto::invitations::v1 as pb;
use mailroom_types::{InvitationId, RegistrationLinkId};
use serde::Deserialize;

use crate::auth::{Ctx, SignedIn};
use crate::errors::WebError;
use crate::i18n::{Arg, Locale};
use crate::lookup::names_of;
use crate::page::{render, render_status, see_other, Chrome};
use crate::state::AppState;

/// Rows of the invitations list per page.
const PAGE_SIZE: i32 = 25;
/// How many pages back "Previous" remembers.
const MAX_PREV: usize = 20;

// ---------------------------------------------------------------------------------------
// Shared pieces

/// One `<option>` of a select.
#[derive(Debug, Clone)]
struct Opt {
    value: String,
    label: String,
    selected: bool,
}

/// The organisation's departments as a tree-ordered list (`— ` per level) and by id.
struct Departments {
    ordered: Vec<(String, String)>,
    names: HashMap<String, String>,
}

impl Departments {
    fn options(&self, chosen: &str, none_label: String) -> Vec<Opt> {
        let mut options = vec![Opt {
            value: String::new(),
            label: none_label,
            selected: chosen.is_empty(),
        }];
        options.extend(self.ordered.iter().map(|(id, label)| Opt {
            value: id.clone(),
            label: label.clone(),
            selected: id == chosen,
        }));
        options
    }

    fn name(&self, id: &str) -> String {
        if id.is_empty() {
            return String::new();
        }
        self.names.get(id).cloned().unwrap_or_else(|| id.to_owned())
    }
}

/// Every department, ordered as the tree.
async fn departments(signed: &SignedIn) -> Result<Departments, WebError> {
    let all = crate::lookup::all_departments(signed).await?;
    Ok(tree(all))
}

/// Departments in tree order: each parent followed by its children, by name.
fn tree(all: Vec<ipb::Department>) -> Departments {
    let names: HashMap<String, String> =
        all.iter().map(|d| (d.id.clone(), d.name.clone())).collect();
    let mut children: HashMap<String, Vec<&ipb::Department>> = HashMap::new();
    for d in &all {
        // A parent we cannot see makes a top-level entry.
        let parent = if names.contains_key(&d.parent_id) {
            d.parent_id.clone()
        } else {
            String::new()
        };
        children.entry(parent).or_default().push(d);
    }
    for list in children.values_mut() {
        list.sort_by_key(|a| a.name.to_lowercase());
    }
    let mut ordered = Vec::with_capacity(all.len());
    let mut stack: Vec<(&ipb::Department, usize)> = children
        .get("")
        .map(|top| top.iter().rev().map(|d| (*d, 0)).collect())
        .unwrap_or_default();
    while let Some((d, depth)) = stack.pop() {
        if ordered.len() > all.len() {
            break; // a cycle the service should never allow
        }
        ordered.push((d.id.clone(), format!("{}{}", "— ".repeat(depth), d.name)));
        if let Some(kids) = children.get(&d.id) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    Departments { ordered, names }
}

/// The language options (`en`, `ru`), `chosen` selected.
fn languages(chrome: &Chrome, chosen: &str) -> Vec<Opt> {
    ["en", "ru"]
        .iter()
        .map(|tag| Opt {
            value: (*tag).to_owned(),
            label: chrome.t(&format!("lang-{tag}")),
            selected: *tag == chosen,
        })
        .collect()
}

/// "12 of 50 seats used, 38 left" (or "12 seats used; no limit").
struct Seats {
    line: String,
    left: i64,
    /// "Not enough free seats: only 3 are left."
    short_line: String,
}

async fn seats(signed: &SignedIn) -> Result<Seats, WebError> {
    let usage = signed
        .clients
        .invitations
        .call(pb::GetSeatUsageRequest {}, |mut raw, request| async move {
            raw.get_seat_usage(request).await
        })
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    Ok(seats_line(signed.ctx.locale, &usage))
}

fn seats_line(locale: Locale, usage: &pb::SeatUsage) -> Seats {
    let used = i64::from(usage.active_users) + i64::from(usage.pending_invitations);
    let line = if usage.seat_limit <= 0 {
        locale.t_args("inv-seats-unlimited", &[("used", Arg::Num(used))])
    } else {
        locale.t_args(
            "inv-seats-line",
            &[
                ("used", Arg::Num(used)),
                ("limit", Arg::Num(i64::from(usage.seat_limit))),
                ("left", Arg::Num(i64::from(usage.seats_left.max(0)))),
            ],
        )
    };
    let left = i64::from(usage.seats_left);
    Seats {
        line,
        left,
        short_line: locale.t_args("inv-not-enough-seats", &[("left", Arg::Num(left.max(0)))]),
    }
}

/// A refusal a person can fix in the form (their input, a full organisation, a department
/// gone): the service's sentence; anything else is an error page.
fn fixable(err: PeerError, path: &str) -> Result<(String, bool), WebError> {
    use tonic::Code;
    match err.code() {
        Some(
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::AlreadyExists
            | Code::NotFound,
        ) => Ok((err.sentence(), false)),
        Some(Code::ResourceExhausted) => Ok((err.sentence(), true)),
        _ => Err(WebError::from_peer(err, path)),
    }
}

fn ts_text(ctx: &Ctx, ts: &Option<prost_types::Timestamp>) -> String {
    crate::timefmt::format(ts.as_ref(), ctx.tz, ctx.locale)
}

fn ts_iso(ts: &Option<prost_types::Timestamp>) -> String {
    crate::timefmt::iso(ts.as_ref())
}

/// The page's language tag for a new invitation's default.
fn locale_tag(ctx: &Ctx) -> String {
    ctx.locale.tag().to_owned()
}

// ---------------------------------------------------------------------------------------
// /people/invite

#[derive(Deserialize, Default, Clone)]
struct InviteForm {
    #[serde(default)]
    emails: String,
    #[serde(default)]
    department_id: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    locale: String,
    #[serde(default)]
    delivery: String,
}

#[derive(Template)]
#[template(path = "invitations/invite.html")]
struct InvitePage {
    chrome: Chrome,
    seats: Seats,
    departments: Vec<Opt>,
    languages: Vec<Opt>,
    form: InviteForm,
    own_client: bool,
    error: Option<String>,
    exhausted: bool,
    preview_subject: String,
    preview_body: String,
}

impl InvitePage {
    fn seats_full(&self) -> bool {
        self.seats.left == 0
    }
}

async fn invite_page_with(
    state: &AppState,
    signed: &SignedIn,
    form: InviteForm,
    error: Option<String>,
    exhausted: bool,
) -> Result<InvitePage, WebError> {
    let chrome = Chrome::signed_in(state, signed).await;
    if !chrome.nav.invite {
        return Err(WebError::Forbidden {
            message: String::new(),
        });
    }
    let (seats, departments) = tokio::join!(seats(signed), departments(signed));
    let (seats, departments) = (seats?, departments?);
    let locale = if form.locale.is_empty() {
        locale_tag(&signed.ctx)
    } else {
        form.locale.clone()
    };
    let template = signed
        .clients
        .invitations
        .call(
            pb::GetInvitationTemplateRequest {
                locale: signed.ctx.locale.tag().to_owned(),
            },
            |mut raw, request| async move { raw.get_invitation_template(request).await },
        )
        .await;
    let (preview_subject, preview_body) = match template {
        Ok(t) => (t.subject, t.body),
        Err(err) => {
            tracing::warn!(error = %err, "the invitation mail's text is not shown");
            (String::new(), String::new())
        }
    };
    Ok(InvitePage {
        departments: departments.options(&form.department_id, chrome.t("inv-no-department")),
        languages: languages(&chrome, &locale),
        own_client: chrome.nav.register_users,
        chrome,
        seats,
        form: InviteForm { locale, ..form },
        error,
        exhausted,
        preview_subject,
        preview_body,
    })
}

#[tracing::instrument(skip_all)]
async fn invite_page(
    State(state): State<AppState>,
    signed: SignedIn,
) -> Result<Response, WebError> {
    let page = invite_page_with(&state, &signed, InviteForm::default(), None, false).await?;
    render(&page)
}

/// One invitee the inviter sends from their own mail client.
struct ComposedRow {
    email: String,
    mailto: String,
    link: String,
}

#[derive(Template)]
#[template(path = "invitations/invite_result.html")]
struct InviteResultPage {
    chrome: Chrome,
    invited: Vec<String>,
    rejected: Vec<RejectedRow>,
    own_client: bool,
    headline: String,
    subject: String,
    body: String,
    composed: Vec<ComposedRow>,
}

struct RejectedRow {
    input: String,
    why: String,
    detail: String,
}

fn rejection_key(code: i32) -> &'static str {
    match pb::RejectionReason::try_from(code) {
        Ok(pb::RejectionReason::Malformed) => "inv-rejected-malformed",
        Ok(pb::RejectionReason::AlreadyAUser) => "inv-rejected-user",
        Ok(pb::RejectionReason::AlreadyInvited) => "inv-rejected-invited",
        Ok(pb::RejectionReason::Duplicate) => "inv-rejected-duplicate",
        _ => "inv-rejected-other",
    }
}

#[tracing::instrument(skip_all)]
async fn invite(
    State(state): State<AppState>,
    signed: SignedIn,
    Form(form): Form<InviteForm>,
) -> Result<Response, WebError> {
    let own_client = form.delivery == "own";
    let message = pb::CreateInvitationsRequest {
        emails: form.emails.clone(),
        department_id: form.department_id.clone(),
        message: form.message.clone(),
        delivery: if own_client {
            pb::DeliveryMethod::OwnMailClient as i32
        } else {
            pb::DeliveryMethod::SystemMail as i32
        },
        locale: if form.locale == "ru" { "ru" } else { "en" }.to_owned(),
    };
    let answer = signed
        .clients
        .invitations
        .call(message, |mut raw, request| async move {
            raw.create_invitations(request).await
        })
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => {
            let (sentence, exhausted) = fixable(err, &signed.ctx.path)?;
            let page = invite_page_with(&state, &signed, form, Some(sentence), exhausted).await?;
            return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    let chrome = Chrome::signed_in(&state, &signed).await;
    let rejected = answer
        .rejected
        .iter()
        .map(|r| RejectedRow {
            input: r.input.clone(),
            why: chrome.t(rejection_key(r.code)),
            detail: r.reason.clone(),
        })
        .collect();
    let invited: Vec<String> = answer.invitations.iter().map(|i| i.email.clone()).collect();
    let (subject, body, composed) = match answer.composed {
        Some(c) => {
            let rows = invited
                .iter()
                .zip(c.mailto_links.iter().zip(c.invitation_links.iter()))
                .map(|(email, (mailto, link))| ComposedRow {
                    email: email.clone(),
                    mailto: mailto.clone(),
                    link: link.clone(),
                })
                .collect();
            (c.subject, c.body, rows)
        }
        None => (String::new(), String::new(), Vec::new()),
    };
    let count = invited.len() as i64;
    let headline = if own_client {
        chrome.tn("inv-result-own", "count", count)
    } else {
        chrome.tn("inv-result-sent", "count", count)
    };
    render(&InviteResultPage {
        chrome,
        headline,
        invited,
        rejected,
        own_client,
        subject,
        body,
        composed,
    })
}

// ---------------------------------------------------------------------------------------
// /invitations

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    page: String,
    #[serde(default)]
    prev: String,
}

/// The status filter's values, with the filter text and label key of each.
const STATES: &[(&str, &str)] = &[
    ("pending", "PENDING"),
    ("awaiting", "AWAITING_APPROVAL"),
    ("accepted", "ACCEPTED"),
    ("expired", "EXPIRED"),
    ("revoked", "REVOKED"),
    ("failed", "FAILED"),
    ("rejected", "REJECTED"),
];

fn state_key(state: i32) -> &'static str {
    match pb::InvitationState::try_from(state) {
        Ok(pb::InvitationState::Pending) => "inv-state-pending",
        Ok(pb::InvitationState::Accepted) => "inv-state-accepted",
        Ok(pb::InvitationState::Expired) => "inv-state-expired",
        Ok(pb::InvitationState::Revoked) => "inv-state-revoked",
        Ok(pb::InvitationState::Failed) => "inv-state-failed",
        Ok(pb::InvitationState::AwaitingApproval) => "inv-state-awaiting",
        Ok(pb::InvitationState::Rejected) => "inv-state-rejected",
        _ => "inv-state-unknown",
    }
}

fn kind_key(kind: i32) -> &'static str {
    match pb::InvitationKind::try_from(kind) {
        Ok(pb::InvitationKind::DirectRegistration) => "inv-kind-direct",
        Ok(pb::InvitationKind::RegistrationLink) => "inv-kind-link",
        _ => "inv-kind-email",
    }
}

/// The longest page token `prev` may carry; longer ones are cut (the peer then refuses them).
const MAX_PREV_TOKEN: usize = 512;

/// The previous pages' tokens, oldest first (`.` before each; the first page's is empty): the
/// newest `MAX_PREV` of them, each at most `MAX_PREV_TOKEN` characters.
fn decode_prev(prev: &str) -> Vec<String> {
    match prev.strip_prefix('.') {
        None => Vec::new(),
        Some(rest) => {
            let mut tokens: Vec<&str> = rest.rsplit('.').take(MAX_PREV).collect();
            tokens.reverse();
            tokens
                .into_iter()
                .map(|t| t.chars().take(MAX_PREV_TOKEN).collect())
                .collect()
        }
    }
}

fn encode_prev(tokens: &[String]) -> String {
    tokens.iter().map(|t| format!(".{t}")).collect()
}

fn list_href(state: &str, email: &str, page: &str, prev: &[String]) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if !state.is_empty() {
        pairs.push(("state", state.to_owned()));
    }
    if !email.is_empty() {
        pairs.push(("email", email.to_owned()));
    }
    if !page.is_empty() {
        pairs.push(("page", page.to_owned()));
    }
    if !prev.is_empty() {
        pairs.push(("prev", encode_prev(prev)));
    }
    if pairs.is_empty() {
        return "/invitations".into();
    }
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    format!("/invitations?{query}")
}

/// The AIP-160 filter of the list's query: a known state and an address fragment (quoted).
fn list_filter(query: &ListQuery) -> String {
    let mut parts = Vec::new();
    if let Some((_, value)) = STATES.iter().find(|(k, _)| *k == query.state) {
        parts.push(format!("state = {value}"));
    }
    let email = query.email.trim();
    if !email.is_empty() {
        parts.push(format!("email : {}", crate::filter::quote(email)));
    }
    parts.join(" AND ")
}

struct InvitationRow {
    id: String,
    email: String,
    name: String,
    state_key: &'static str,
    kind_key: &'static str,
    department: String,
    inviter: String,
    created: String,
    created_iso: String,
    expires: String,
    expires_iso: String,
    failure: String,
    /// "sent 3 times" when sent more than once.
    sent_line: String,
    can_resend: bool,
    can_revoke: bool,
    can_delete: bool,
    can_approve: bool,
}

fn invitation_row(
    ctx: &Ctx,
    i: &pb::Invitation,
    departments: &Departments,
    people: &HashMap<String, String>,
    approver: bool,
) -> InvitationRow {
    use pb::InvitationState as S;
    let state = S::try_from(i.state).unwrap_or(S::Unspecified);
    InvitationRow {
        id: i.id.clone(),
        email: i.email.clone(),
        name: format!("{} {}", i.first_name, i.last_name)
            .trim()
            .to_owned(),
        state_key: state_key(i.state),
        kind_key: kind_key(i.kind),
        department: departments.name(&i.department_id),
        inviter: people.get(&i.inviter_user_id).cloned().unwrap_or_default(),
        created: ts_text(ctx, &i.create_time),
        created_iso: ts_iso(&i.create_time),
        expires: ts_text(ctx, &i.expire_time),
        expires_iso: ts_iso(&i.expire_time),
        failure: i.failure_reason.clone(),
        sent_line: if i.send_count > 1 {
            ctx.locale.t_args(
                "inv-sent-times",
                &[("count", Arg::Num(i64::from(i.send_count)))],
            )
        } else {
            String::new()
        },
        can_resend: matches!(state, S::Pending | S::Failed),
        can_revoke: matches!(state, S::Pending | S::Failed),
        can_delete: matches!(
            state,
            S::Accepted | S::Expired | S::Revoked | S::Failed | S::Rejected
        ),
        can_approve: approver && state == S::AwaitingApproval,
    }
}

#[derive(Template)]
#[template(path = "invitations/list.html")]
struct ListPage {
    chrome: Chrome,
    states: Vec<Opt>,
    email: String,
    rows: Vec<InvitationRow>,
    total: String,
    next_href: Option<String>,
    prev_href: Option<String>,
    back: String,
}

/// A page of invitations as the person sees them, with names resolved.
async fn invitation_rows(
    signed: &SignedIn,
    filter: String,
    page_size: i32,
    page_token: String,
    approver: bool,
) -> Result<(Vec<InvitationRow>, String, i32), WebError> {
    let message = pb::ListInvitationsRequest {
        page_size,
        page_token,
        filter,
        order_by: "create_time desc".into(),
    };
    let (answer, departments) = tokio::join!(
        signed
            .clients
            .invitations
            .call(message, |mut raw, request| async move {
                raw.list_invitations(request).await
            }),
        departments(signed)
    );
    let answer = answer.map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    let departments = departments?;
    let people = names_of(
        signed,
        answer.invitations.iter().map(|i| i.inviter_user_id.clone()),
        PAGE_SIZE as usize,
    )
    .await;
    let rows = answer
        .invitations
        .iter()
        .map(|i| invitation_row(&signed.ctx, i, &departments, &people, approver))
        .collect();
    Ok((rows, answer.next_page_token, answer.total_size))
}

#[tracing::instrument(skip_all)]
async fn list_page(
    State(state): State<AppState>,
    signed: SignedIn,
    Query(query): Query<ListQuery>,
) -> Result<Response, WebError> {
    let chrome = Chrome::signed_in(&state, &signed).await;
    let (rows, next, total) = invitation_rows(
        &signed,
        list_filter(&query),
        PAGE_SIZE,
        query.page.clone(),
        chrome.nav.register_users,
    )
    .await?;
    let prev = decode_prev(&query.prev);
    let next_href = (!next.is_empty()).then(|| {
        let mut stack = prev.clone();
        stack.push(query.page.clone());
        let start = stack.len().saturating_sub(MAX_PREV);
        list_href(&query.state, &query.email, &next, &stack[start..])
    });
    let prev_href = prev
        .split_last()
        .map(|(last, rest)| list_href(&query.state, &query.email, last, rest));
    let mut states = vec![Opt {
        value: String::new(),
        label: chrome.t("inv-filter-all"),
        selected: query.state.is_empty(),
    }];
    states.extend(STATES.iter().map(|(k, _)| Opt {
        value: (*k).to_owned(),
        label: chrome.t(&format!("inv-state-{k}")),
        selected: query.state == *k,
    }));
    let total = chrome.tn("inv-total", "count", i64::from(total));
    let back = list_href(&query.state, &query.email, &query.page, &prev);
    render(&ListPage {
        chrome,
        states,
        email: query.email,
        rows,
        total,
        next_href,
        prev_href,
        back,
    })
}

#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    back: String,
}

/// Where to return after a row action: a page of ours, without its old notice.
fn back_to(back: &str, fallback: &str, notice: &str) -> String {
    let path = crate::util::safe_next(back)
        .filter(|b| b.starts_with("/invitations"))
        .unwrap_or(fallback);
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let kept: Vec<(String, String)> = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != "notice")
        .chain(std::iter::once(("notice".to_owned(), notice.to_owned())))
        .collect();
    format!(
        "{base}?{}",
        serde_urlencoded::to_string(&kept).unwrap_or_default()
    )
}

/// The row actions: `resend`, `revoke`, `delete`, `approve`, `reject`.
#[tracing::instrument(skip_all)]
async fn row_action(
    signed: SignedIn,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Result<Response, WebError> {
    let id = id
        .parse::<InvitationId>()
        .map_err(|_| WebError::NotFound)?
        .to_string();
    let client = &signed.clients.invitations;
    let result: Result<(), PeerError> = match action.as_str() {
        "resend" => client
            .call(
                pb::ResendInvitationRequest { id },
                |mut raw, request| async move { raw.resend_invitation(request).await },
            )
            .await
            .map(drop),
        "revoke" => client
            .call(
                pb::RevokeInvitationRequest { id },
                |mut raw, request| async move { raw.revoke_invitation(request).await },
            )
            .await
            .map(drop),
        "delete" => client
            .call(
                pb::DeleteInvitationRequest { id },
                |mut raw, request| async move { raw.delete_invitation(request).await },
            )
            .await
            .map(drop),
        "approve" => client
            .call(
                pb::ApproveRegistrationRequest { invitation_id: id },
                |mut raw, request| async move { raw.approve_registration(request).await },
            )
            .await
            .map(drop),
        "reject" => client
            .call(
                pb::RejectRegistrationRequest { invitation_id: id },
                |mut raw, request| async move { raw.reject_registration(request).await },
            )
            .await
            .map(drop),
        _ => return Err(WebError::NotFound),
    };
    // A refusal about the row as it is now (mailed a moment ago, changed meanwhile) is said
    // on the list itself, which then shows the row's current state.
    let notice = match result {
        Ok(()) => format!("inv-{action}"),
        Err(err) => match err.code() {
            Some(tonic::Code::ResourceExhausted) if action == "resend" => "inv-too-soon".into(),
            Some(tonic::Code::FailedPrecondition) => "inv-changed".into(),
            _ => return Err(WebError::from_peer(err, &signed.ctx.path)),
        },
    };
    Ok(see_other(&back_to(&form.back, "/invitations", &notice)))
}

// ---------------------------------------------------------------------------------------
// /invitations/links

#[derive(Deserialize, Default, Clone)]
struct LinkForm {
    #[serde(default)]
    domains: String,
    #[serde(default)]
    requires_approval: Option<String>,
    #[serde(default)]
    department_id: String,
    #[serde(default)]
    max_uses: String,
    #[serde(default)]
    valid_days: String,
}

struct LinkRow {
    id: String,
    domains: String,
    approval: bool,
    department: String,
    disabled: bool,
    created: String,
    created_iso: String,
    expires: String,
    expires_iso: String,
    uses: String,
    /// "4 registrations".
    registrations: String,
}

#[derive(Template)]
#[template(path = "invitations/links.html")]
struct LinksPage {
    chrome: Chrome,
    links: Vec<LinkRow>,
    more: Option<String>,
    /// Registrations awaiting approval.
    rows: Vec<InvitationRow>,
    awaiting_caption: String,
    back: String,
    departments: Vec<Opt>,
    form: LinkForm,
    created: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
struct LinksQuery {
    #[serde(default)]
    page: String,
}

async fn links_page_with(
    state: &AppState,
    signed: &SignedIn,
    page: String,
    form: LinkForm,
    created: Option<String>,
    error: Option<String>,
) -> Result<LinksPage, WebError> {
    let chrome = Chrome::signed_in(state, signed).await;
    let message = pb::ListRegistrationLinksRequest {
        page_size: 50,
        page_token: page,
    };
    let (links, departments) = tokio::join!(
        signed
            .clients
            .invitations
            .call(message, |mut raw, request| async move {
                raw.list_registration_links(request).await
            }),
        departments(signed)
    );
    let links = links.map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    let departments = departments?;
    let (awaiting, _, _) = invitation_rows(
        signed,
        "state = AWAITING_APPROVAL".into(),
        50,
        String::new(),
        true,
    )
    .await?;
    let ctx = &signed.ctx;
    let rows = links
        .links
        .iter()
        .map(|l| LinkRow {
            id: l.id.clone(),
            domains: if l.allowed_domains.is_empty() {
                chrome.t("inv-links-any-domain")
            } else {
                l.allowed_domains.join(", ")
            },
            approval: l.requires_approval,
            department: departments.name(&l.department_id),
            disabled: l.disabled,
            created: ts_text(ctx, &l.create_time),
            created_iso: ts_iso(&l.create_time),
            expires: if l.expire_time.is_some() {
                ts_text(ctx, &l.expire_time)
            } else {
                chrome.t("inv-links-no-expiry")
            },
            expires_iso: ts_iso(&l.expire_time),
            uses: match l.max_uses {
                Some(max) => ctx.locale.t_args(
                    "inv-links-uses-of",
                    &[
                        ("uses", Arg::Num(i64::from(l.uses))),
                        ("max", Arg::Num(i64::from(max))),
                    ],
                ),
                None => l.uses.to_string(),
            },
            registrations: chrome.tn(
                "inv-links-registrations",
                "count",
                i64::from(l.registrations),
            ),
        })
        .collect();
    let more = (!links.next_page_token.is_empty()).then(|| {
        format!(
            "/invitations/links?{}",
            serde_urlencoded::to_string([("page", &links.next_page_token)]).unwrap_or_default()
        )
    });
    let awaiting_caption = chrome.tn("inv-total", "count", awaiting.len() as i64);
    Ok(LinksPage {
        departments: departments.options(&form.department_id, chrome.t("inv-no-department")),
        chrome,
        links: rows,
        more,
        awaiting_caption,
        rows: awaiting,
        back: "/invitations/links".into(),
        form,
        created,
        error,
    })
}

#[tracing::instrument(skip_all)]
async fn links_page(
    State(state): State<AppState>,
    signed: SignedIn,
    Query(query): Query<LinksQuery>,
) -> Result<Response, WebError> {
    let form = LinkForm {
        valid_days: "30".into(),
        ..LinkForm::default()
    };
    let page = links_page_with(&state, &signed, query.page, form, None, None).await?;
    render(&page)
}

/// `example.com, example.org; shop.example` → the domains.
fn split_list(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tracing::instrument(skip_all)]
async fn link_create(
    State(state): State<AppState>,
    signed: SignedIn,
    Form(form): Form<LinkForm>,
) -> Result<Response, WebError> {
    let invalid = |key: &str| Some(signed.ctx.locale.t(key));
    let max_uses = match form.max_uses.trim() {
        "" => Ok(None),
        n => n
            .parse::<i32>()
            .map(Some)
            .map_err(|_| invalid("inv-links-bad-number")),
    };
    let valid_days = match form.valid_days.trim() {
        "" => Ok(0),
        n => n
            .parse::<i32>()
            .map_err(|_| invalid("inv-links-bad-number")),
    };
    let (max_uses, valid_days) = match (max_uses, valid_days) {
        (Ok(m), Ok(v)) => (m, v),
        (Err(error), _) | (_, Err(error)) => {
            let page = links_page_with(&state, &signed, String::new(), form, None, error).await?;
            return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    let message = pb::CreateRegistrationLinkRequest {
        allowed_domains: split_list(&form.domains),
        requires_approval: form.requires_approval.is_some(),
        department_id: form.department_id.clone(),
        valid_days,
        max_uses,
    };
    let answer = signed
        .clients
        .invitations
        .call(message, |mut raw, request| async move {
            raw.create_registration_link(request).await
        })
        .await;
    match answer {
        // The link's address is shown this once: the service keeps only its hash.
        Ok(link) => {
            let fresh = LinkForm {
                valid_days: "30".into(),
                ..LinkForm::default()
            };
            let page = links_page_with(&state, &signed, String::new(), fresh, Some(link.url), None)
                .await?;
            render(&page)
        }
        Err(err) => {
            let (sentence, _) = fixable(err, &signed.ctx.path)?;
            let page =
                links_page_with(&state, &signed, String::new(), form, None, Some(sentence)).await?;
            render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
    }
}

#[tracing::instrument(skip_all)]
async fn link_disable(signed: SignedIn, Path(id): Path<String>) -> Result<Response, WebError> {
    let id = id
        .parse::<RegistrationLinkId>()
        .map_err(|_| WebError::NotFound)?
        .to_string();
    signed
        .clients
        .invitations
        .call(
            pb::DisableRegistrationLinkRequest { id },
            |mut raw, request| async move { raw.disable_registration_link(request).await },
        )
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    Ok(see_other("/invitations/links?notice=inv-link-disabled"))
}

// ---------------------------------------------------------------------------------------
// /people/register

#[derive(Deserialize, Default, Clone)]
struct RegisterForm {
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    position: String,
    #[serde(default)]
    department_id: String,
    #[serde(default)]
    locale: String,
}

#[derive(Template)]
#[template(path = "invitations/register.html")]
struct RegisterPage {
    chrome: Chrome,
    form: RegisterForm,
    departments: Vec<Opt>,
    languages: Vec<Opt>,
    error: Option<String>,
}

async fn register_page_with(
    state: &AppState,
    signed: &SignedIn,
    form: RegisterForm,
    error: Option<String>,
) -> Result<RegisterPage, WebError> {
    let chrome = Chrome::signed_in(state, signed).await;
    if !chrome.nav.register_users {
        return Err(WebError::Forbidden {
            message: String::new(),
        });
    }
    let departments = departments(signed).await?;
    let locale = if form.locale.is_empty() {
        locale_tag(&signed.ctx)
    } else {
        form.locale.clone()
    };
    Ok(RegisterPage {
        departments: departments.options(&form.department_id, chrome.t("inv-no-department")),
        languages: languages(&chrome, &locale),
        chrome,
        form,
        error,
    })
}

#[tracing::instrument(skip_all)]
async fn register_page(
    State(state): State<AppState>,
    signed: SignedIn,
) -> Result<Response, WebError> {
    let page = register_page_with(&state, &signed, RegisterForm::default(), None).await?;
    render(&page)
}

#[tracing::instrument(skip_all)]
async fn register(
    State(state): State<AppState>,
    signed: SignedIn,
    Form(form): Form<RegisterForm>,
) -> Result<Response, WebError> {
    let message = pb::RegisterUserRequest {
        email: form.email.trim().to_owned(),
        first_name: form.first_name.clone(),
        last_name: form.last_name.clone(),
        position: form.position.clone(),
        department_id: form.department_id.clone(),
        locale: if form.locale == "ru" { "ru" } else { "en" }.to_owned(),
    };
    let answer = signed
        .clients
        .invitations
        .call(message, |mut raw, request| async move {
            raw.register_user(request).await
        })
        .await;
    match answer {
        Ok(_) => Ok(see_other("/people/register?notice=inv-registered")),
        Err(err) => {
            let (sentence, _) = fixable(err, &signed.ctx.path)?;
            let page = register_page_with(&state, &signed, form, Some(sentence)).await?;
            render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
    }
}

// ---------------------------------------------------------------------------------------
// /settings

#[derive(Template)]
#[template(path = "invitations/settings.html")]
struct SettingsPage {
    chrome: Chrome,
    organization: String,
    seats: String,
    allow_everyone: bool,
}

async fn organization(signed: &SignedIn) -> Result<ipb::Organization, WebError> {
    signed
        .clients
        .identity
        .call(
            ipb::GetOrganizationRequest::default(),
            |mut raw, request| async move { raw.get_organization(request).await },
        )
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))
}

#[tracing::instrument(skip_all)]
async fn settings_page(
    State(state): State<AppState>,
    signed: SignedIn,
) -> Result<Response, WebError> {
    if !signed.session.admin {
        return Err(WebError::Forbidden {
            message: String::new(),
        });
    }
    let org = organization(&signed).await?;
    let chrome = Chrome::signed_in(&state, &signed).await;
    let usage = pb::SeatUsage {
        seat_limit: org.seat_limit,
        active_users: org.seats_used - org.invited_users,
        pending_invitations: org.invited_users,
        seats_left: if org.seat_limit <= 0 {
            -1
        } else {
            (org.seat_limit - org.seats_used).max(0)
        },
    };
    render(&SettingsPage {
        seats: seats_line(chrome.locale, &usage).line,
        allow_everyone: org.settings.is_some_and(|s| s.allow_everyone_to_invite),
        organization: org.display_name,
        chrome,
    })
}

#[derive(Deserialize)]
struct SettingsForm {
    #[serde(default)]
    allow_everyone_to_invite: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn settings_save(
    signed: SignedIn,
    Form(form): Form<SettingsForm>,
) -> Result<Response, WebError> {
    let message = ipb::UpdateOrganizationRequest {
        organization: Some(ipb::Organization {
            settings: Some(ipb::OrganizationSettings {
                allow_everyone_to_invite: form.allow_everyone_to_invite.is_some(),
            }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["settings.allow_everyone_to_invite".into()],
        }),
    };
    signed
        .clients
        .identity
        .call(message, |mut raw, request| async move {
            raw.update_organization(request).await
        })
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    Ok(see_other("/settings?notice=inv-settings-saved"))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/people/invite", get(invite_page).post(invite))
        .route("/people/register", get(register_page).post(register))
        .route("/invitations", get(list_page))
        .route("/invitations/{id}/{action}", post(row_action))
        .route("/invitations/links", get(links_page).post(link_create))
        .route("/invitations/links/{id}/disable", post(link_disable))
        .route("/settings", get(settings_page).post(settings_save))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dept(id: &str, name: &str, parent: &str) -> ipb::Department {
        ipb::Department {
            id: id.into(),
            name: name.into(),
            parent_id: parent.into(),
            ..Default::default()
        }
    }

    #[test]
    fn departments_are_listed_as_their_tree() {
        let tree = tree(vec![
            dept("3", "Support", "1"),
            dept("1", "Sales", ""),
            dept("2", "Accounting", ""),
            dept("4", "Orphan", "gone"),
        ]);
        let labels: Vec<&str> = tree.ordered.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["Accounting", "Orphan", "Sales", "— Support"]);
        assert_eq!(tree.name("3"), "Support");
        assert_eq!(tree.name(""), "");
    }

    #[test]
    fn the_email_filter_is_quoted() {
        let query = ListQuery {
            state: "pending".into(),
            email: "a\" OR state = ACCEPTED".into(),
            ..Default::default()
        };
        assert_eq!(
            list_filter(&query),
            "state = PENDING AND email : \"a\\\" OR state = ACCEPTED\""
        );
        let unknown = ListQuery {
            state: "sleeping".into(),
            ..Default::default()
        };
        assert_eq!(list_filter(&unknown), "");
    }

    #[test]
    fn previous_pages_round_trip() {
        let stack = vec![String::new(), "abc".to_owned()];
        assert_eq!(decode_prev(&encode_prev(&stack)), stack);
        assert_eq!(decode_prev(&encode_prev(&[String::new()])), [String::new()]);
        assert!(decode_prev("").is_empty());
        let many: Vec<String> = (0..MAX_PREV + 5).map(|i| i.to_string()).collect();
        let kept = decode_prev(&encode_prev(&many));
        assert_eq!(kept, &many[5..]);
        let long = decode_prev(&format!(".{}", "a".repeat(MAX_PREV_TOKEN * 4)));
        assert_eq!(long[0].len(), MAX_PREV_TOKEN);
    }

    #[test]
    fn back_stays_on_the_invitations_pages() {
        assert_eq!(
            back_to(
                "/invitations?state=pending&notice=old",
                "/invitations",
                "inv-resend"
            ),
            "/invitations?state=pending&notice=inv-resend"
        );
        assert_eq!(
            back_to("//evil.example/", "/invitations", "inv-revoke"),
            "/invitations?notice=inv-revoke"
        );
        assert_eq!(
            back_to("/mailboxes", "/invitations/links", "inv-approve"),
            "/invitations/links?notice=inv-approve"
        );
    }

    #[test]
    fn seats_say_used_limit_and_left_in_both_languages() {
        let usage = pb::SeatUsage {
            seat_limit: 50,
            active_users: 10,
            pending_invitations: 2,
            seats_left: 38,
        };
        assert_eq!(
            seats_line(Locale::En, &usage).line,
            "12 of 50 seats used, 38 left"
        );
        assert_eq!(
            seats_line(Locale::Ru, &usage).line,
            "Занято 12 из 50 мест, осталось 38 мест"
        );
        let one = pb::SeatUsage {
            seat_limit: 21,
            active_users: 20,
            pending_invitations: 0,
            seats_left: 1,
        };
        assert_eq!(
            seats_line(Locale::Ru, &one).line,
            "Занято 20 из 21 места, осталось 1 место"
        );
        let unlimited = pb::SeatUsage {
            seat_limit: 0,
            active_users: 3,
            pending_invitations: 0,
            seats_left: -1,
        };
        assert_eq!(
            seats_line(Locale::En, &unlimited).line,
            "3 seats used; no limit"
        );
    }

    #[test]
    fn templates_have_no_inline_script_or_style_and_every_key_exists() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/invitations");
        let entries = std::fs::read_dir(dir).expect("the templates directory");
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).expect("a template");
            let name = entry.path().display().to_string();
            assert!(!text.contains("style="), "{name} has a style attribute");
            assert!(!text.contains("<script"), "{name} has a script");
            for piece in text.split("chrome.t(\"").skip(1) {
                let key = piece.split('"').next().unwrap_or("");
                for locale in Locale::ALL {
                    assert!(locale.has(key), "{name}: {key} missing in {locale:?}");
                }
            }
        }
        for key in [
            "notice-inv-resend",
            "notice-inv-revoke",
            "notice-inv-delete",
            "notice-inv-approve",
            "notice-inv-reject",
        ] {
            assert!(Locale::Ru.has(key) && Locale::En.has(key), "{key}");
        }
    }

    #[test]
    fn domains_split_on_any_separator() {
        assert_eq!(
            split_list("a.example, b.example;c.example\nd.example"),
            ["a.example", "b.example", "c.example", "d.example"]
        );
    }
}
