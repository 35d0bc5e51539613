//! The people pages (part E): the directory (`ListUsers`, filtered and paged) beside the
//! department tree with its heads; a person's page with their three kinds of address (login,
//! contact, mailboxes), the roles they hold, and an admin's actions on them: edit, dismiss
//! (after a confirm page; their console sessions end at once), rehire, make or unmake admin,
//! send a password reset link, sign out everywhere. Also `GET /people/search?q=` (JSON names
//! for a person picker). Helpers shared with `departments.rs` and `addresses.rs` live here.
//! `/people/invite` and `/people/register` belong to the invitations part.

use std::collections::{HashMap, HashSet};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use mailroom_proto::access::v1 as access_pb;
use mailroom_proto::identity::v1 as pb;
use mailroom_proto::mailboxes::v1 as mailboxes_pb;
use mailroom_types::UserId;
use serde::{Deserialize, Serialize};

use crate::auth::SignedIn;
use crate::errors::WebError;
use crate::filter::quote;
use crate::lookup::names_of;
pub(crate) use crate::lookup::{all_departments, display_name, find_by_email};
use crate::page::{render, render_status, see_other, Chrome};
use crate::state::AppState;

/// People shown on one page of the directory.
const PAGE_SIZE: i32 = 50;
/// Heads not on the directory's page, looked up at most this many.
const HEAD_LOOKUPS: usize = 100;

// ---------------------------------------------------------------------------------------
// Shared with departments.rs and addresses.rs
// ---------------------------------------------------------------------------------------

/// `value` percent-encoded for a query string.
pub(crate) fn enc(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A path segment that must be an id; anything else is a page that does not exist.
pub(crate) fn user_id(id: &str) -> Result<UserId, WebError> {
    id.parse::<UserId>().map_err(|_| WebError::NotFound)
}

/// One department in the tree, in depth-first order, with what the template needs to open
/// and close the nested lists.
#[derive(Debug, Clone)]
pub(crate) struct DeptNode {
    pub id: String,
    pub name: String,
    pub depth: usize,
    pub head_name: String,
    /// Whether sub-departments follow (the template opens a nested `<ul>`).
    pub has_children: bool,
    /// How many nested lists close after this one.
    pub closes: usize,
}

/// The departments as a tree (depth-first, siblings by name). A department whose parent is
/// unknown is shown at the top.
pub(crate) fn tree(
    departments: &[pb::Department],
    names: &HashMap<String, String>,
) -> Vec<DeptNode> {
    let ids: HashSet<&str> = departments.iter().map(|d| d.id.as_str()).collect();
    let mut children: HashMap<&str, Vec<&pb::Department>> = HashMap::new();
    for d in departments {
        let parent = if ids.contains(d.parent_id.as_str()) && d.parent_id != d.id {
            d.parent_id.as_str()
        } else {
            ""
        };
        children.entry(parent).or_default().push(d);
    }
    for list in children.values_mut() {
        list.sort_by_key(|d| d.name.to_lowercase());
    }
    let mut out: Vec<DeptNode> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut stack: Vec<(&pb::Department, usize)> = children
        .get("")
        .map(|top| top.iter().rev().map(|d| (*d, 0)).collect())
        .unwrap_or_default();
    while let Some((d, depth)) = stack.pop() {
        if !seen.insert(d.id.as_str()) {
            continue;
        }
        out.push(DeptNode {
            id: d.id.clone(),
            name: d.name.clone(),
            depth,
            head_name: names.get(&d.head_user_id).cloned().unwrap_or_default(),
            has_children: false,
            closes: 0,
        });
        if let Some(kids) = children.get(d.id.as_str()) {
            for kid in kids.iter().rev() {
                stack.push((*kid, depth + 1));
            }
        }
    }
    for i in 0..out.len() {
        let next = out.get(i + 1).map(|n| n.depth).unwrap_or(0);
        let depth = out[i].depth;
        out[i].has_children = next > depth;
        out[i].closes = depth.saturating_sub(next);
    }
    out
}

/// The names of the departments' heads: from `known` people, else looked up (at most
/// `HEAD_LOOKUPS`).
pub(crate) async fn head_names(
    signed: &SignedIn,
    departments: &[pb::Department],
    known: &[pb::User],
) -> HashMap<String, String> {
    let mut names: HashMap<String, String> = known
        .iter()
        .map(|u| (u.id.clone(), display_name(u)))
        .collect();
    let missing: HashSet<&str> = departments
        .iter()
        .map(|d| d.head_user_id.as_str())
        .filter(|id| !id.is_empty() && !names.contains_key(*id))
        .collect();
    let missing: Vec<String> = missing.into_iter().map(str::to_owned).collect();
    let found = names_of(signed, missing, HEAD_LOOKUPS).await;
    names.extend(found);
    names
}

/// A person's state as a key of people.ftl.
pub(crate) fn state_key(state: i32) -> &'static str {
    match pb::UserState::try_from(state).unwrap_or_default() {
        pb::UserState::Invited => "people-state-invited",
        pb::UserState::Active => "people-state-active",
        pb::UserState::Dismissed => "people-state-dismissed",
        pb::UserState::Unspecified => "people-state-unknown",
    }
}

pub(crate) fn is_dismissed(user: &pb::User) -> bool {
    user.state == pb::UserState::Dismissed as i32
}

// ---------------------------------------------------------------------------------------
// The directory
// ---------------------------------------------------------------------------------------

/// A row of the directory.
struct Row {
    id: String,
    name: String,
    position: String,
    department: String,
    email: String,
    state_key: &'static str,
    dismissed: bool,
    invited: bool,
    admin: bool,
}

#[derive(Template)]
#[template(path = "people/directory.html")]
struct DirectoryPage {
    chrome: Chrome,
    rows: Vec<Row>,
    total: i64,
    tree: Vec<DeptNode>,
    q: String,
    department: String,
    state: String,
    /// The next page's address, when there is one.
    next: Option<String>,
    /// Whether this is not the first page.
    paged: bool,
    first: String,
    admin: bool,
}

impl DirectoryPage {
    fn state_is(&self, value: &str) -> bool {
        self.state == value
    }
    fn department_is(&self, id: &str) -> bool {
        self.department == id
    }
    fn indent(&self, depth: &usize) -> String {
        "\u{2003}".repeat(*depth)
    }
}

#[derive(Deserialize, Default)]
struct DirectoryQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    department: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    page: String,
}

impl DirectoryQuery {
    fn filter(&self) -> String {
        let mut parts = Vec::new();
        let q = self.q.trim();
        if !q.is_empty() {
            if q.contains('@') {
                parts.push(format!("email : {}", quote(q)));
            } else {
                parts.push(format!("name : {}", quote(q)));
            }
        }
        let department = self.department.trim();
        if !department.is_empty() {
            parts.push(format!("department_id = {}", quote(department)));
        }
        match self.state.as_str() {
            "active" => parts.push("state = ACTIVE".into()),
            "invited" => parts.push("state = INVITED".into()),
            "dismissed" => parts.push("state = DISMISSED".into()),
            "admin" => parts.push("admin = true".into()),
            _ => {}
        }
        parts.join(" AND ")
    }

    /// This query's address with another page token.
    fn link(&self, page: &str) -> String {
        let mut link = format!(
            "/people?q={}&department={}&state={}",
            enc(&self.q),
            enc(&self.department),
            enc(&self.state)
        );
        if !page.is_empty() {
            link.push_str("&page=");
            link.push_str(&enc(page));
        }
        link
    }
}

#[tracing::instrument(skip_all)]
async fn directory(
    State(state): State<AppState>,
    signed: SignedIn,
    Query(query): Query<DirectoryQuery>,
) -> Result<Response, WebError> {
    let message = pb::ListUsersRequest {
        page_size: PAGE_SIZE,
        page_token: query.page.clone(),
        filter: query.filter(),
        order_by: "last_name".into(),
    };
    let answer = signed
        .clients
        .identity
        .call(message, |mut raw, request| async move {
            raw.list_users(request).await
        })
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    let departments = all_departments(&signed).await?;
    let department_names: HashMap<&str, &str> = departments
        .iter()
        .map(|d| (d.id.as_str(), d.name.as_str()))
        .collect();
    let rows = answer
        .users
        .iter()
        .map(|u| Row {
            id: u.id.clone(),
            name: display_name(u),
            position: u.position.clone(),
            department: department_names
                .get(u.department_id.as_str())
                .map(|n| (*n).to_owned())
                .unwrap_or_default(),
            email: u.login_email.clone(),
            state_key: state_key(u.state),
            dismissed: is_dismissed(u),
            invited: u.state == pb::UserState::Invited as i32,
            admin: u.admin,
        })
        .collect();
    let names = head_names(&signed, &departments, &answer.users).await;
    let chrome = Chrome::signed_in(&state, &signed).await;
    let next = (!answer.next_page_token.is_empty()).then(|| query.link(&answer.next_page_token));
    render(&DirectoryPage {
        admin: chrome.nav.admin,
        chrome,
        rows,
        total: i64::from(answer.total_size),
        tree: tree(&departments, &names),
        first: query.link(""),
        paged: !query.page.is_empty(),
        next,
        q: query.q,
        department: query.department,
        state: query.state,
    })
}

// ---------------------------------------------------------------------------------------
// The person picker's names
// ---------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

#[derive(Serialize)]
struct Found {
    id: String,
    name: String,
    email: String,
    dismissed: bool,
}

/// `GET /people/search?q=ann`: up to 10 people whose name (or, with `@`, address) matches.
#[tracing::instrument(skip_all)]
async fn search(signed: SignedIn, Query(query): Query<SearchQuery>) -> Result<Response, WebError> {
    let q = query.q.trim();
    if q.chars().count() < 2 {
        return Ok(Json(Vec::<Found>::new()).into_response());
    }
    let field = if q.contains('@') { "email" } else { "name" };
    let message = pb::ListUsersRequest {
        page_size: 10,
        page_token: String::new(),
        filter: format!("{field} : {}", quote(q)),
        order_by: "last_name".into(),
    };
    let answer = signed
        .clients
        .identity
        .call(message, |mut raw, request| async move {
            raw.list_users(request).await
        })
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    let found: Vec<Found> = answer
        .users
        .iter()
        .map(|u| Found {
            id: u.id.clone(),
            name: display_name(u),
            email: u.login_email.clone(),
            dismissed: is_dismissed(u),
        })
        .collect();
    Ok(Json(found).into_response())
}

// ---------------------------------------------------------------------------------------
// A person's page
// ---------------------------------------------------------------------------------------

/// One address a person holds.
struct Address {
    kind_key: &'static str,
    email: String,
    /// For a mailbox: its name.
    label: String,
    /// Whether an admin may move it away from this (dismissed) person.
    transferable: bool,
}

/// A role the person holds, and how.
struct RoleHeld {
    name: String,
    via: String,
}

/// An option of the department `<select>`.
struct DeptOption {
    id: String,
    label: String,
}

#[derive(Template)]
#[template(path = "people/person.html")]
struct PersonPage {
    chrome: Chrome,
    user: pb::User,
    name: String,
    department: String,
    state_key: &'static str,
    dismissed: bool,
    addresses: Vec<Address>,
    /// None when the viewer may not see them.
    roles: Option<Vec<RoleHeld>>,
    /// None when the viewer may not see them.
    mailboxes_known: bool,
    admin: bool,
    is_self: bool,
    departments: Vec<DeptOption>,
    /// A form error from the service, shown above the edit form.
    error: Option<String>,
    form: EditForm,
}

impl PersonPage {
    fn dept_selected(&self, id: &str) -> bool {
        self.form.department_id == id
    }
    fn usage_link(&self, email: &str) -> String {
        format!("/addresses?email={}", enc(email))
    }
    fn transfer_link(&self, email: &str) -> String {
        format!(
            "/addresses/transfer?email={}&from={}",
            enc(email),
            enc(&self.user.id)
        )
    }
}

/// A person as the viewer may see them, with everything their page shows.
async fn person_page(
    state: &AppState,
    signed: &SignedIn,
    id: UserId,
    error: Option<String>,
    form: Option<EditForm>,
) -> Result<PersonPage, WebError> {
    let user = signed
        .clients
        .identity
        .user(id)
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    let departments = all_departments(signed).await?;
    let names: HashMap<String, String> = HashMap::new();
    let nodes = tree(&departments, &names);
    let department = departments
        .iter()
        .find(|d| d.id == user.department_id)
        .map(|d| d.name.clone())
        .unwrap_or_default();
    let dismissed = is_dismissed(&user);
    let chrome = Chrome::signed_in(state, signed).await;
    let admin = chrome.nav.admin;

    let mut addresses = vec![Address {
        kind_key: "people-address-login",
        email: user.login_email.clone(),
        label: String::new(),
        transferable: dismissed,
    }];
    if !user.contact_email.is_empty() {
        addresses.push(Address {
            kind_key: "people-address-contact",
            email: user.contact_email.clone(),
            label: String::new(),
            transferable: true,
        });
    }
    let mailboxes = mailboxes_of(signed, &user.id).await;
    let mailboxes_known = mailboxes.is_some();
    for mailbox in mailboxes.unwrap_or_default() {
        addresses.push(Address {
            kind_key: "people-address-mailbox",
            email: mailbox.email,
            label: mailbox.name,
            transferable: false,
        });
    }
    let roles = roles_of(signed, &user.id).await;
    let form = form.unwrap_or_else(|| EditForm {
        first_name: user.first_name.clone(),
        last_name: user.last_name.clone(),
        position: user.position.clone(),
        department_id: user.department_id.clone(),
        contact_email: user.contact_email.clone(),
    });
    Ok(PersonPage {
        name: display_name(&user),
        department,
        state_key: state_key(user.state),
        dismissed,
        addresses,
        roles,
        mailboxes_known,
        admin,
        is_self: user.id == signed.session.user_id.to_string(),
        departments: nodes
            .iter()
            .map(|n| DeptOption {
                id: n.id.clone(),
                label: format!("{}{}", "\u{2003}".repeat(n.depth), n.name),
            })
            .collect(),
        error,
        form,
        user,
        chrome,
    })
}

/// The mailboxes `owner` owns that the viewer may see; None when the registry refused.
async fn mailboxes_of(signed: &SignedIn, owner: &str) -> Option<Vec<mailboxes_pb::Mailbox>> {
    let message = mailboxes_pb::ListMailboxesRequest {
        page_size: 100,
        page_token: String::new(),
        filter: format!("owner_user_id = {}", quote(owner)),
        order_by: "email".into(),
        read_mask: Some(prost_types::FieldMask {
            paths: vec!["email".into(), "name".into()],
        }),
        org_id: String::new(),
    };
    match signed
        .clients
        .mailboxes
        .call(message, |mut raw, request| async move {
            raw.list_mailboxes(request).await
        })
        .await
    {
        Ok(answer) => Some(answer.mailboxes),
        Err(err) => {
            tracing::debug!(error = %err, "a person's mailboxes are not shown");
            None
        }
    }
}

/// The roles `user` holds, when the viewer may see them.
async fn roles_of(signed: &SignedIn, user: &str) -> Option<Vec<RoleHeld>> {
    let message = access_pb::ListRoleAssignmentsRequest {
        org_id: signed.session.org_id.to_string(),
        role_id: String::new(),
        user_id: user.to_owned(),
        page_size: 100,
        page_token: String::new(),
        at_least_as_fresh_as: None,
    };
    match signed
        .clients
        .access
        .call(message, |mut raw, request| async move {
            raw.list_role_assignments(request).await
        })
        .await
    {
        Ok(answer) => Some(
            answer
                .assignments
                .into_iter()
                .map(|a| RoleHeld {
                    name: a.role_display_name,
                    via: a
                        .via
                        .iter()
                        .map(|r| {
                            let resource =
                                r.resource.as_ref().map(|o| o.r#type.as_str()).unwrap_or("");
                            format!("{resource}#{}", r.relation)
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                })
                .collect(),
        ),
        Err(err) => {
            tracing::debug!(error = %err, "a person's roles are not shown");
            None
        }
    }
}

#[tracing::instrument(skip_all)]
async fn person(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = user_id(&id)?;
    render(&person_page(&state, &signed, id, None, None).await?)
}

/// The admin's edit of a person (`UpdateUser`).
#[derive(Deserialize, Default, Clone)]
struct EditForm {
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    position: String,
    #[serde(default)]
    department_id: String,
    #[serde(default)]
    contact_email: String,
}

#[tracing::instrument(skip_all)]
async fn edit(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<EditForm>,
) -> Result<Response, WebError> {
    let uid = user_id(&id)?;
    let message = pb::UpdateUserRequest {
        user: Some(pb::User {
            id: uid.to_string(),
            first_name: form.first_name.trim().to_owned(),
            last_name: form.last_name.trim().to_owned(),
            position: form.position.trim().to_owned(),
            department_id: form.department_id.trim().to_owned(),
            contact_email: form.contact_email.trim().to_owned(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: [
                "first_name",
                "last_name",
                "position",
                "department_id",
                "contact_email",
            ]
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        }),
    };
    let answer = signed
        .clients
        .identity
        .call(message, |mut raw, request| async move {
            raw.update_user(request).await
        })
        .await;
    match answer {
        Ok(_) => Ok(see_other(&format!("/people/{uid}?notice=people-saved"))),
        Err(err) => match WebError::from_peer(err, &signed.ctx.path) {
            WebError::Invalid { message } | WebError::Conflict { message } => {
                let page = person_page(&state, &signed, uid, Some(message), Some(form)).await?;
                render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
            }
            other => Err(other),
        },
    }
}

#[derive(Template)]
#[template(path = "people/dismiss.html")]
struct DismissPage {
    chrome: Chrome,
    id: String,
    name: String,
    email: String,
}

/// The confirm page before dismissing.
#[tracing::instrument(skip_all)]
async fn dismiss_page(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let uid = user_id(&id)?;
    let user = signed
        .clients
        .identity
        .user(uid)
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    if is_dismissed(&user) {
        return Ok(see_other(&format!("/people/{uid}")));
    }
    render(&DismissPage {
        chrome: Chrome::signed_in(&state, &signed).await,
        id: uid.to_string(),
        name: display_name(&user),
        email: user.login_email,
    })
}

/// Ends every console session of `user` at once (the services refuse their tokens too).
async fn end_console_sessions(state: &AppState, user: UserId) {
    if let Err(err) = state.sessions.delete_all_of(user).await {
        tracing::warn!(error = %err, "console sessions not ended; they end at their next call");
    }
}

#[tracing::instrument(skip_all)]
async fn dismiss(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let uid = user_id(&id)?;
    signed
        .clients
        .identity
        .call(
            pb::DismissUserRequest {
                id: uid.to_string(),
            },
            |mut raw, request| async move { raw.dismiss_user(request).await },
        )
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    end_console_sessions(&state, uid).await;
    Ok(see_other(&format!("/people/{uid}?notice=people-dismissed")))
}

#[tracing::instrument(skip_all)]
async fn rehire(signed: SignedIn, Path(id): Path<String>) -> Result<Response, WebError> {
    let uid = user_id(&id)?;
    signed
        .clients
        .identity
        .call(
            pb::RehireUserRequest {
                id: uid.to_string(),
            },
            |mut raw, request| async move { raw.rehire_user(request).await },
        )
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    Ok(see_other(&format!("/people/{uid}?notice=people-rehired")))
}

#[derive(Deserialize)]
struct AdminForm {
    #[serde(default)]
    admin: String,
}

#[tracing::instrument(skip_all)]
async fn set_admin(
    signed: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<AdminForm>,
) -> Result<Response, WebError> {
    let uid = user_id(&id)?;
    let admin = form.admin == "true";
    signed
        .clients
        .identity
        .call(
            pb::SetAdminRequest {
                id: uid.to_string(),
                admin,
            },
            |mut raw, request| async move { raw.set_admin(request).await },
        )
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    let notice = if admin {
        "people-admin-on"
    } else {
        "people-admin-off"
    };
    Ok(see_other(&format!("/people/{uid}?notice={notice}")))
}

#[tracing::instrument(skip_all)]
async fn reset_link(signed: SignedIn, Path(id): Path<String>) -> Result<Response, WebError> {
    let uid = user_id(&id)?;
    signed
        .clients
        .identity
        .call(
            pb::SendPasswordResetLinkRequest {
                user_id: uid.to_string(),
            },
            |mut raw, request| async move { raw.send_password_reset_link(request).await },
        )
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    Ok(see_other(&format!(
        "/people/{uid}?notice=people-reset-sent"
    )))
}

#[tracing::instrument(skip_all)]
async fn sign_out_everywhere(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let uid = user_id(&id)?;
    let auth = signed.clients.identity.raw_auth();
    signed
        .clients
        .identity
        .call(
            pb::SignOutEverywhereRequest {
                user_id: uid.to_string(),
            },
            |_, request| async move {
                let mut auth = auth;
                auth.sign_out_everywhere(request).await
            },
        )
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    end_console_sessions(&state, uid).await;
    Ok(see_other(&format!(
        "/people/{uid}?notice=people-signed-out"
    )))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/people", get(directory))
        .route("/people/search", get(search))
        .route("/people/{id}", get(person).post(edit))
        .route("/people/{id}/dismiss", get(dismiss_page).post(dismiss))
        .route("/people/{id}/rehire", post(rehire))
        .route("/people/{id}/admin", post(set_admin))
        .route("/people/{id}/reset-link", post(reset_link))
        .route(
            "/people/{id}/sign-out-everywhere",
            post(sign_out_everywhere),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dept(id: &str, name: &str, parent: &str) -> pb::Department {
        pb::Department {
            id: id.into(),
            name: name.into(),
            parent_id: parent.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_tree_nests_and_closes_its_lists() {
        let departments = vec![
            dept("s", "Sales", ""),
            dept("e", "Engineering", ""),
            dept("w", "West", "s"),
            dept("n", "North", "w"),
            dept("b", "Backend", "e"),
        ];
        let nodes = tree(&departments, &HashMap::new());
        let order: Vec<(&str, usize, bool, usize)> = nodes
            .iter()
            .map(|n| (n.name.as_str(), n.depth, n.has_children, n.closes))
            .collect();
        assert_eq!(
            order,
            vec![
                ("Engineering", 0, true, 0),
                ("Backend", 1, false, 1),
                ("Sales", 0, true, 0),
                ("West", 1, true, 0),
                ("North", 2, false, 2),
            ]
        );
    }

    #[test]
    fn a_cycle_or_unknown_parent_does_not_lose_a_department() {
        let departments = vec![dept("a", "A", "zzz"), dept("b", "B", "b")];
        let nodes = tree(&departments, &HashMap::new());
        assert_eq!(nodes.len(), 2);
        assert!(nodes.iter().all(|n| n.depth == 0));
    }

    #[test]
    fn directory_filter_cannot_break_out_of_the_literal() {
        let sneaky = DirectoryQuery {
            q: " ann\" OR admin = true ".into(),
            department: String::new(),
            state: String::new(),
            page: String::new(),
        };
        assert_eq!(sneaky.filter(), r#"name : "ann\" OR admin = true""#);
        let query = DirectoryQuery {
            q: "ann".into(),
            department: "d1".into(),
            state: "dismissed".into(),
            page: String::new(),
        };
        assert_eq!(
            query.filter(),
            "name : \"ann\" AND department_id = \"d1\" AND state = DISMISSED"
        );
    }
}
