//! Access permissions (part F): the roles page (`/access/roles`: every role's grants as a
//! matrix, editable by those who configure access, read-only for everyone else), one role's
//! page (`/access/roles/{id}`: its grants, name, visibility, copy, deletion and assignments),
//! a mailbox's readers (`/mailboxes/{id}/access`) and "why can X see this?"
//! (`/access/explain`, Check with explain). Access control decides every change; its
//! refusals are shown in its own words next to the control that asked (422), and a stale
//! etag shows the role as it now is (409).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use futures::stream::{self, StreamExt};
use mailroom_clients::PeerError;
use mailroom_proto::access::v1 as apb;
use mailroom_proto::identity::v1 as ipb;
use mailroom_proto::mailboxes::v1 as mpb;
use mailroom_types::{MailboxId, RoleId};
use serde::Deserialize;
use tonic::Code;

use crate::auth::SignedIn;
use crate::errors::WebError;
use crate::i18n::Locale;
use crate::lookup::{all_departments, display_name, find_by_email, names_of};
use crate::page::{render_status, see_other, Chrome};
use crate::state::AppState;

/// One unary call on a typed client as the signed-in person: `rpc!(client, message, method)`.
macro_rules! rpc {
    ($client:expr, $message:expr, $method:ident) => {
        $client
            .call($message, |mut raw, request| async move {
                raw.$method(request).await
            })
            .await
    };
}

/// The scopes of a role's mailbox permission, narrowest first: the value, its form value and
/// its Fluent key.
const SCOPES: [(apb::Scope, &str, &str); 5] = [
    (apb::Scope::None, "none", "access-scope-none"),
    (apb::Scope::Own, "own", "access-scope-own"),
    (
        apb::Scope::Subordinates,
        "subordinates",
        "access-scope-subordinates",
    ),
    (
        apb::Scope::Department,
        "department",
        "access-scope-department",
    ),
    (apb::Scope::All, "all", "access-scope-all"),
];

/// The four scoped grants: the form field (also the last part of the mask path) and the
/// Fluent key of its name.
const SCOPED: [(&str, &str); 4] = [
    ("view_mailbox_list", "access-grant-view"),
    ("connect_mailboxes", "access-grant-connect"),
    ("modify_mailboxes", "access-grant-modify"),
    ("grant_read_access", "access-grant-read"),
];

/// The two on/off grants, as [`SCOPED`].
const FLAGS: [(&str, &str); 2] = [
    ("invite", "access-grant-invite"),
    ("manage_permissions", "access-grant-manage"),
];

/// The permissions "why can X see this?" asks about, with their Fluent keys.
const PERMISSIONS: [(&str, &str); 9] = [
    ("mailbox.view", "access-perm-view"),
    ("mailbox.read_mail", "access-perm-read-mail"),
    ("mailbox.modify", "access-perm-modify"),
    ("mailbox.sync", "access-perm-sync"),
    ("mailbox.connect", "access-perm-connect"),
    ("mailbox.grant_read", "access-perm-grant-read"),
    ("org.invite", "access-perm-invite"),
    ("org.manage_permissions", "access-perm-manage"),
    ("org.register_users", "access-perm-register"),
];

/// How many pages of a listing a page reads at most (roles: 100 custom + 3; departments and
/// assignments: far beyond a real organisation).
const MAX_PAGES: usize = 20;

/// The longest page token a query may bring; longer ones are cut (the peer then refuses them).
const MAX_PAGE_TOKEN: usize = 512;

/// A role's id from the path; anything but a role id names no role.
fn role_id(raw: &str) -> Result<String, WebError> {
    raw.parse::<RoleId>()
        .map(|id| id.to_string())
        .map_err(|_| WebError::NotFound)
}

/// A mailbox's id from the path; anything but a mailbox id names no mailbox.
fn mailbox_path_id(raw: &str) -> Result<String, WebError> {
    raw.parse::<MailboxId>()
        .map(|id| id.to_string())
        .map_err(|_| WebError::NotFound)
}

fn scope_of(p: &apb::RolePermissions, field: &str) -> apb::Scope {
    let scope = match field {
        "view_mailbox_list" => p.view_mailbox_list(),
        "connect_mailboxes" => p.connect_mailboxes(),
        "modify_mailboxes" => p.modify_mailboxes(),
        "grant_read_access" => p.grant_read_access(),
        _ => apb::Scope::None,
    };
    if scope == apb::Scope::Unspecified {
        apb::Scope::None
    } else {
        scope
    }
}

fn set_scope(p: &mut apb::RolePermissions, field: &str, scope: apb::Scope) {
    match field {
        "view_mailbox_list" => p.set_view_mailbox_list(scope),
        "connect_mailboxes" => p.set_connect_mailboxes(scope),
        "modify_mailboxes" => p.set_modify_mailboxes(scope),
        "grant_read_access" => p.set_grant_read_access(scope),
        _ => {}
    }
}

fn flag_of(p: &apb::RolePermissions, field: &str) -> bool {
    match field {
        "invite" => p.invite,
        "manage_permissions" => p.manage_permissions,
        _ => false,
    }
}

fn set_flag(p: &mut apb::RolePermissions, field: &str, on: bool) {
    match field {
        "invite" => p.invite = on,
        "manage_permissions" => p.manage_permissions = on,
        _ => {}
    }
}

/// A scope from its form value.
fn parse_scope(value: &str) -> Option<apb::Scope> {
    SCOPES.iter().find(|s| s.1 == value).map(|s| s.0)
}

/// A scope's form value and Fluent key.
fn scope_names(scope: apb::Scope) -> (&'static str, &'static str) {
    SCOPES
        .iter()
        .find(|s| s.0 == scope)
        .map(|s| (s.1, s.2))
        .unwrap_or(("none", "access-scope-none"))
}

/// Whether the page may offer changes: an org admin or a holder of `org.manage_permissions`
/// (access control decides each change anyway).
fn configures(chrome: &Chrome) -> bool {
    chrome.nav.manage_permissions || chrome.nav.admin
}

/// A peer's refusal a person can act on (their input, or the delegation rules), as the
/// service said it; `None` for what should become an error page.
fn refusal(err: &PeerError) -> Option<String> {
    match err.code() {
        Some(
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::AlreadyExists
            | Code::NotFound
            | Code::OutOfRange,
        ) => Some(err.sentence()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Views.

/// One option of a scope `<select>`.
struct ScopeOption {
    value: &'static str,
    key: &'static str,
    selected: bool,
}

/// One scoped grant of a role.
struct ScopeCell {
    field: &'static str,
    key: &'static str,
    value_key: &'static str,
    options: Vec<ScopeOption>,
}

/// One on/off grant of a role.
struct FlagCell {
    field: &'static str,
    key: &'static str,
    on: bool,
}

/// A role as the pages show it.
struct RoleView {
    id: String,
    name: String,
    kind_key: &'static str,
    /// Who holds a default role by default (Fluent key), if it is one.
    default_holders_key: Option<&'static str>,
    custom: bool,
    administrator: bool,
    hidden: bool,
    etag: String,
    assignments: i32,
    scopes: Vec<ScopeCell>,
    flags: Vec<FlagCell>,
    /// The person may try to change it (Administrator never).
    editable: bool,
    /// A refusal of the last change, in the service's words.
    error: Option<String>,
    /// Someone changed it meanwhile: these are the current values.
    conflict: bool,
}

impl RoleView {
    fn new(role: &apb::Role, manage: bool) -> Self {
        let kind = role.kind();
        let permissions = role.permissions.unwrap_or_default();
        let (kind_key, default_holders_key) = match kind {
            apb::RoleKind::Administrator => (
                "access-kind-administrator",
                Some("access-holders-administrator"),
            ),
            apb::RoleKind::Supervisor => ("access-kind-default", Some("access-holders-supervisor")),
            apb::RoleKind::Manager => ("access-kind-default", Some("access-holders-manager")),
            _ => ("access-kind-custom", None),
        };
        let administrator = kind == apb::RoleKind::Administrator;
        let mut view = RoleView {
            id: role.id.clone(),
            name: role.display_name.clone(),
            kind_key,
            default_holders_key,
            custom: matches!(kind, apb::RoleKind::Custom | apb::RoleKind::Unspecified),
            administrator,
            hidden: role.hidden,
            etag: role.etag.clone(),
            assignments: role.assignment_count,
            scopes: Vec::new(),
            flags: Vec::new(),
            editable: manage && !administrator,
            error: None,
            conflict: false,
        };
        view.show(&permissions);
        view
    }

    /// How many assignments it has, for the plural.
    fn assignment_total(&self) -> i64 {
        i64::from(self.assignments)
    }

    /// Shows `permissions` in the controls.
    fn show(&mut self, permissions: &apb::RolePermissions) {
        self.scopes = SCOPED
            .iter()
            .map(|&(field, key)| {
                let current = scope_of(permissions, field);
                ScopeCell {
                    field,
                    key,
                    value_key: scope_names(current).1,
                    options: SCOPES
                        .iter()
                        .map(|&(scope, value, key)| ScopeOption {
                            value,
                            key,
                            selected: scope == current,
                        })
                        .collect(),
                }
            })
            .collect();
        self.flags = FLAGS
            .iter()
            .map(|&(field, key)| FlagCell {
                field,
                key,
                on: flag_of(permissions, field),
            })
            .collect();
    }
}

/// A role's assignment, described.
struct AssignmentView {
    label: String,
    subject_type: String,
    subject_id: String,
    subject_relation: String,
}

/// A department in the assign form: its path from the top.
struct DepartmentOption {
    id: String,
    label: String,
}

/// The form field a refusal belongs next to, and the refusal.
struct SlotError {
    slot: &'static str,
    message: String,
}

// ---------------------------------------------------------------------------------------
// Names of the things access control speaks of by id.

/// How many people's names one page looks up at most; beyond, a person shows as their id.
const USER_NAME_CAP: usize = 200;

/// How many name lookups one page has in flight at once.
const LOOKUP_CONCURRENCY: usize = 16;

/// How many role assignments the role's page shows at once (one ListRoleAssignments page).
const ASSIGNMENTS_PAGE: i32 = 100;

/// Names looked up once per page: people, departments, mailboxes, roles.
struct Names<'a> {
    signed: &'a SignedIn,
    /// People looked up so far (bounded by `USER_NAME_CAP`).
    user_lookups: usize,
    users: HashMap<String, String>,
    departments: HashMap<String, String>,
    mailboxes: HashMap<String, String>,
    roles: HashMap<String, String>,
}

/// "Anna Lee" (or her login, or the id when identity does not answer).
async fn user_name(signed: &SignedIn, id: &str) -> String {
    match id.parse() {
        Ok(user_id) => match signed.clients.identity.user(user_id).await {
            Ok(user) => display_name(&user),
            Err(err) => {
                tracing::debug!(error = %err, "a person's name is unknown");
                id.to_owned()
            }
        },
        Err(_) => id.to_owned(),
    }
}

impl<'a> Names<'a> {
    fn new(signed: &'a SignedIn) -> Self {
        Names {
            signed,
            user_lookups: 0,
            users: HashMap::new(),
            departments: HashMap::new(),
            mailboxes: HashMap::new(),
            roles: HashMap::new(),
        }
    }

    /// "Anna Lee" (or her login, or the id when identity does not answer).
    async fn user(&mut self, id: &str) -> String {
        if let Some(name) = self.users.get(id) {
            return name.clone();
        }
        let name = if self.user_lookups < USER_NAME_CAP {
            self.user_lookups += 1;
            user_name(self.signed, id).await
        } else {
            id.to_owned()
        };
        self.users.insert(id.to_owned(), name.clone());
        name
    }

    /// Looks up the names of the distinct people among `ids` not known yet,
    /// `LOOKUP_CONCURRENCY` at a time and no more than `USER_NAME_CAP` per page; the rest keep
    /// their id.
    async fn prefetch_users<'i>(&mut self, ids: impl IntoIterator<Item = &'i str>) -> usize {
        let mut wanted: Vec<String> = Vec::new();
        for id in ids {
            if !self.users.contains_key(id) && !wanted.iter().any(|w| w == id) {
                wanted.push(id.to_owned());
            }
        }
        let room = USER_NAME_CAP.saturating_sub(self.user_lookups);
        let over = wanted.split_off(wanted.len().min(room));
        let unnamed = over.len();
        for id in over {
            self.users.insert(id.clone(), id);
        }
        self.user_lookups += wanted.len();
        let mut found = names_of(self.signed, wanted.iter().cloned(), usize::MAX).await;
        for id in wanted {
            let name = found.remove(&id).unwrap_or_else(|| id.clone());
            self.users.insert(id, name);
        }
        unnamed
    }

    /// Looks up the names of the distinct departments among `ids` not known yet,
    /// `LOOKUP_CONCURRENCY` at a time.
    async fn prefetch_departments<'i>(&mut self, ids: impl IntoIterator<Item = &'i str>) {
        let mut wanted: Vec<String> = Vec::new();
        for id in ids {
            if !self.departments.contains_key(id) && !wanted.iter().any(|w| w == id) {
                wanted.push(id.to_owned());
            }
        }
        let signed = self.signed;
        let found: Vec<(String, String)> = stream::iter(wanted)
            .map(|id| async move {
                let name = match id.parse() {
                    Ok(department) => match signed.clients.identity.department(department).await {
                        Ok(d) => d.name,
                        Err(_) => id.clone(),
                    },
                    Err(_) => id.clone(),
                };
                (id, name)
            })
            .buffer_unordered(LOOKUP_CONCURRENCY)
            .collect()
            .await;
        self.departments.extend(found);
    }

    async fn department(&mut self, id: &str) -> String {
        if let Some(name) = self.departments.get(id) {
            return name.clone();
        }
        let name = match id.parse() {
            Ok(department) => match self.signed.clients.identity.department(department).await {
                Ok(d) => d.name,
                Err(_) => id.to_owned(),
            },
            Err(_) => id.to_owned(),
        };
        self.departments.insert(id.to_owned(), name.clone());
        name
    }

    async fn mailbox(&mut self, id: &str) -> String {
        if let Some(name) = self.mailboxes.get(id) {
            return name.clone();
        }
        let message = mpb::GetMailboxRequest { id: id.to_owned() };
        let name = match rpc!(self.signed.clients.mailboxes, message, get_mailbox) {
            Ok(mailbox) => mailbox.email,
            Err(_) => id.to_owned(),
        };
        self.mailboxes.insert(id.to_owned(), name.clone());
        name
    }

    async fn role(&mut self, id: &str) -> String {
        if let Some(name) = self.roles.get(id) {
            return name.clone();
        }
        let message = apb::GetRoleRequest { id: id.to_owned() };
        let name = match rpc!(self.signed.clients.access, message, get_role) {
            Ok(role) => role.display_name,
            Err(_) => id.to_owned(),
        };
        self.roles.insert(id.to_owned(), name.clone());
        name
    }

    /// A node of a path ("mailbox anna@example.com", "Sales", "Anna Lee").
    async fn node(&mut self, locale: Locale, object: &apb::ObjectRef) -> String {
        match object.r#type.as_str() {
            "user" => self.user(&object.id).await,
            "department" => {
                let name = self.department(&object.id).await;
                say(locale, "access-node-department", &name)
            }
            "mailbox" => {
                let name = self.mailbox(&object.id).await;
                say(locale, "access-node-mailbox", &name)
            }
            "role" => {
                let name = self.role(&object.id).await;
                say(locale, "access-node-role", &name)
            }
            "org" => locale.t("access-node-org"),
            _ => object.id.clone(),
        }
    }

    /// Whom a role is assigned to, in words.
    async fn assignee(&mut self, locale: Locale, subject: &apb::SubjectRef) -> String {
        let object = subject.object.clone().unwrap_or_default();
        match (object.r#type.as_str(), subject.relation.as_str()) {
            ("user", "") => {
                let name = self.user(&object.id).await;
                say(locale, "access-to-person", &name)
            }
            ("department", "member") => {
                let name = self.department(&object.id).await;
                say(locale, "access-to-members", &name)
            }
            ("department", "all_members") => {
                let name = self.department(&object.id).await;
                say(locale, "access-to-tree", &name)
            }
            ("org", "head") => locale.t("access-to-heads"),
            ("org", "everyone_else") => locale.t("access-to-everyone-else"),
            (kind, relation) => format!("{kind}:{}#{relation}", object.id),
        }
    }

    /// A path from the resource to the subject as a chain of names: "mailbox emil@… → owner
    /// Emil → member of department East → headed by Hanna".
    async fn chain(&mut self, locale: Locale, path: &[apb::Relationship]) -> Vec<String> {
        let mut out = Vec::new();
        let mut last: Option<(String, String)> = None;
        for rel in path {
            let resource = rel.resource.clone().unwrap_or_default();
            let subject = rel.subject.clone().unwrap_or_default();
            let object = subject.object.clone().unwrap_or_default();
            let key = (resource.r#type.clone(), resource.id.clone());
            if last.as_ref() != Some(&key) {
                out.push(self.node(locale, &resource).await);
            }
            let step = match (rel.relation.as_str(), object.r#type.as_str()) {
                ("owner", _) => say(locale, "access-rel-owner", &self.user(&object.id).await),
                ("reader", _) => say(locale, "access-rel-reader", &self.user(&object.id).await),
                ("member", _) => say(
                    locale,
                    "access-rel-member",
                    &self.department(&object.id).await,
                ),
                ("head", _) => say(locale, "access-rel-head", &self.user(&object.id).await),
                ("parent", _) => say(
                    locale,
                    "access-rel-parent",
                    &self.department(&object.id).await,
                ),
                ("admin", _) => say(locale, "access-rel-admin", &self.user(&object.id).await),
                ("assignee", _) => {
                    let whom = self.assignee(locale, &subject).await;
                    say(locale, "access-rel-assignee", &whom)
                }
                ("inviter", _) => locale.t("access-rel-everyone-invites"),
                (relation, _) => format!("{relation} {}", self.node(locale, &object).await),
            };
            out.push(step);
            last = Some((object.r#type.clone(), object.id.clone()));
        }
        out
    }
}

fn say(locale: Locale, key: &str, name: &str) -> String {
    locale.t_args(key, &[("name", crate::i18n::Arg::Str(name))])
}

// ---------------------------------------------------------------------------------------
// Calls shared by the pages.

fn peer(signed: &SignedIn) -> impl Fn(PeerError) -> WebError + '_ {
    move |e| WebError::from_peer(e, &signed.ctx.path)
}

async fn all_roles(signed: &SignedIn) -> Result<Vec<apb::Role>, WebError> {
    let mut roles = Vec::new();
    let mut page_token = String::new();
    for _ in 0..MAX_PAGES {
        let message = apb::ListRolesRequest {
            org_id: String::new(),
            page_size: 200,
            page_token,
            show_hidden: true,
        };
        let answer = rpc!(signed.clients.access, message, list_roles).map_err(peer(signed))?;
        roles.extend(answer.roles);
        if answer.next_page_token.is_empty() {
            break;
        }
        page_token = answer.next_page_token;
    }
    Ok(roles)
}

async fn get_role(signed: &SignedIn, id: &str) -> Result<apb::Role, WebError> {
    let message = apb::GetRoleRequest { id: id.to_owned() };
    rpc!(signed.clients.access, message, get_role).map_err(peer(signed))
}

/// The active person `email` names (their login or contact address; for an org admin also a
/// mailbox address identity knows), if any.
async fn person_by_email(signed: &SignedIn, email: &str) -> Result<Option<String>, WebError> {
    let email = email.trim().to_lowercase();
    if email.is_empty() || email.contains(['"', '\\']) {
        return Ok(None);
    }
    // Identity has no exact address filter: this pages (bounded) through substring matches.
    if let Some(user) = find_by_email(signed, &email).await? {
        return Ok(Some(user.id));
    }
    if !signed.session.admin {
        return Ok(None);
    }
    let message = ipb::GetEmailAddressUsageRequest {
        address: email.clone(),
    };
    match rpc!(signed.clients.identity, message, get_email_address_usage) {
        Ok(usage) => Ok(usage
            .uses
            .iter()
            .find(|u| !u.user_id.is_empty())
            .map(|u| u.user_id.clone())),
        Err(err) if refusal(&err).is_some() => Ok(None),
        Err(err) => Err(peer(signed)(err)),
    }
}

// ---------------------------------------------------------------------------------------
// The roles page.

#[derive(Template)]
#[template(path = "access/roles.html")]
struct RolesPage {
    chrome: Chrome,
    manage: bool,
    roles: Vec<RoleView>,
    /// The roles the viewer holds, described.
    mine: Vec<String>,
    create_name: String,
    create_error: Option<String>,
}

impl RolesPage {
    fn has_hidden(&self) -> bool {
        self.roles.iter().any(|r| r.hidden)
    }
}

/// The viewer's own roles and how they hold each ("Manager — everyone else").
async fn my_roles(signed: &SignedIn, names: &mut Names<'_>) -> Vec<String> {
    let message = apb::ListRoleAssignmentsRequest {
        org_id: String::new(),
        role_id: String::new(),
        user_id: signed.session.user_id.to_string(),
        page_size: 100,
        page_token: String::new(),
        at_least_as_fresh_as: None,
    };
    let locale = signed.ctx.locale;
    match rpc!(signed.clients.access, message, list_role_assignments) {
        Ok(answer) => {
            let mut out = Vec::new();
            for a in &answer.assignments {
                let how = match &a.subject {
                    _ if a.via.iter().any(|v| v.relation == "admin") => {
                        locale.t("access-holders-administrator")
                    }
                    Some(s) => names.assignee(locale, s).await,
                    None => String::new(),
                };
                out.push(format!("{} — {}", a.role_display_name, how));
            }
            out
        }
        Err(err) => {
            tracing::warn!(error = %err, "the viewer's roles are unknown");
            Vec::new()
        }
    }
}

async fn roles_page(
    state: &AppState,
    signed: &SignedIn,
    status: StatusCode,
    adjust: impl FnOnce(&mut RolesPage),
) -> Result<Response, WebError> {
    let chrome = Chrome::signed_in(state, signed).await;
    let manage = configures(&chrome);
    let roles = all_roles(signed)
        .await?
        .iter()
        .map(|r| RoleView::new(r, manage))
        .collect();
    let mut names = Names::new(signed);
    let mine = my_roles(signed, &mut names).await;
    let mut page = RolesPage {
        chrome,
        manage,
        roles,
        mine,
        create_name: String::new(),
        create_error: None,
    };
    adjust(&mut page);
    render_status(status, &page)
}

#[tracing::instrument(skip_all)]
async fn roles(State(state): State<AppState>, signed: SignedIn) -> Result<Response, WebError> {
    roles_page(&state, &signed, StatusCode::OK, |_| {}).await
}

#[derive(Deserialize)]
struct CreateForm {
    #[serde(default)]
    display_name: String,
}

#[tracing::instrument(skip_all)]
async fn create_role(
    State(state): State<AppState>,
    signed: SignedIn,
    Form(form): Form<CreateForm>,
) -> Result<Response, WebError> {
    let message = apb::CreateRoleRequest {
        role: Some(apb::Role {
            display_name: form.display_name.trim().to_owned(),
            ..Default::default()
        }),
    };
    match rpc!(signed.clients.access, message, create_role) {
        Ok(role) => Ok(see_other(&format!(
            "/access/roles/{}?notice=access-created#content",
            role.id
        ))),
        Err(err) => match refusal(&err) {
            Some(message) => {
                roles_page(&state, &signed, StatusCode::UNPROCESSABLE_ENTITY, |page| {
                    page.create_name = form.display_name.clone();
                    page.create_error = Some(message);
                })
                .await
            }
            None => Err(peer(&signed)(err)),
        },
    }
}

// ---------------------------------------------------------------------------------------
// One role's page.

#[derive(Template)]
#[template(path = "access/role.html")]
struct RolePage {
    chrome: Chrome,
    manage: bool,
    role: RoleView,
    name_value: String,
    assignments: Vec<AssignmentView>,
    /// The link to the next page of assignments, if there is one.
    next: Option<String>,
    departments: Vec<DepartmentOption>,
    heads_assigned: bool,
    everyone_else_assigned: bool,
    email_value: String,
    clone_name: String,
    error: Option<SlotError>,
}

impl RolePage {
    /// The refusal shown next to `slot`'s control, if it is there.
    fn error_for(&self, slot: &str) -> Option<&str> {
        self.error
            .as_ref()
            .filter(|e| e.slot == slot)
            .map(|e| e.message.as_str())
    }
}

/// The organisation's departments, each with its path from the top ("Sales / East").
async fn departments(signed: &SignedIn) -> Result<Vec<DepartmentOption>, WebError> {
    let all = all_departments(signed).await?;
    let by_id: HashMap<&str, &ipb::Department> = all.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut out: Vec<DepartmentOption> = all
        .iter()
        .map(|d| {
            let mut parts = vec![d.name.clone()];
            let mut at = d.parent_id.as_str();
            while let Some(parent) = by_id.get(at) {
                if parts.len() > 64 {
                    break;
                }
                parts.push(parent.name.clone());
                at = parent.parent_id.as_str();
            }
            parts.reverse();
            DepartmentOption {
                id: d.id.clone(),
                label: parts.join(" / "),
            }
        })
        .collect();
    out.sort_by_key(|a| a.label.to_lowercase());
    Ok(out)
}

/// Everything a role's page shows; `adjust` adds what the request brought (an error, the
/// values posted, the conflict).
async fn role_page(
    state: &AppState,
    signed: &SignedIn,
    id: &str,
    status: StatusCode,
    adjust: impl FnOnce(&mut RolePage),
) -> Result<Response, WebError> {
    role_page_at(state, signed, id, "", status, adjust).await
}

/// A role's page showing the page of its assignments `page_token` names (the first when
/// empty): one ListRoleAssignments page per view, with a link to the next.
async fn role_page_at(
    state: &AppState,
    signed: &SignedIn,
    id: &str,
    page_token: &str,
    status: StatusCode,
    adjust: impl FnOnce(&mut RolePage),
) -> Result<Response, WebError> {
    let chrome = Chrome::signed_in(state, signed).await;
    let manage = configures(&chrome);
    let role = get_role(signed, id).await?;
    let locale = signed.ctx.locale;
    let mut assignments = Vec::new();
    let mut departments_list = Vec::new();
    let mut next = None;
    let (mut heads_assigned, mut everyone_else_assigned) = (false, false);
    if manage && role.kind() != apb::RoleKind::Administrator {
        let mut names = Names::new(signed);
        let message = apb::ListRoleAssignmentsRequest {
            org_id: String::new(),
            role_id: role.id.clone(),
            user_id: String::new(),
            page_size: ASSIGNMENTS_PAGE,
            page_token: page_token.chars().take(MAX_PAGE_TOKEN).collect(),
            at_least_as_fresh_as: None,
        };
        let answer =
            rpc!(signed.clients.access, message, list_role_assignments).map_err(peer(signed))?;
        let subjects: Vec<apb::SubjectRef> = answer
            .assignments
            .into_iter()
            .map(|a| a.subject.unwrap_or_default())
            .collect();
        let of_type = |kind: &'static str| {
            subjects
                .iter()
                .filter_map(move |s| s.object.as_ref().filter(|o| o.r#type == kind))
                .map(|o| o.id.as_str())
        };
        let _unnamed = names.prefetch_users(of_type("user")).await;
        names.prefetch_departments(of_type("department")).await;
        for subject in &subjects {
            let object = subject.object.clone().unwrap_or_default();
            match (object.r#type.as_str(), subject.relation.as_str()) {
                ("org", "head") => heads_assigned = true,
                ("org", "everyone_else") => everyone_else_assigned = true,
                _ => {}
            }
            assignments.push(AssignmentView {
                label: names.assignee(locale, subject).await,
                subject_type: object.r#type,
                subject_id: object.id,
                subject_relation: subject.relation.clone(),
            });
        }
        if !answer.next_page_token.is_empty() {
            next = Some(format!(
                "/access/roles/{}?page={}#assignments-title",
                role.id,
                percent_encoding::utf8_percent_encode(
                    &answer.next_page_token,
                    percent_encoding::NON_ALPHANUMERIC
                )
            ));
        }
        departments_list = departments(signed).await?;
    }
    let mut page = RolePage {
        manage,
        name_value: role.display_name.clone(),
        role: RoleView::new(&role, manage),
        chrome,
        assignments,
        next,
        departments: departments_list,
        heads_assigned,
        everyone_else_assigned,
        email_value: String::new(),
        clone_name: String::new(),
        error: None,
    };
    adjust(&mut page);
    render_status(status, &page)
}

/// The page of a role's assignments asked for.
#[derive(Deserialize, Default)]
struct RoleQuery {
    #[serde(default)]
    page: String,
}

#[tracing::instrument(skip_all)]
async fn role(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    Query(query): Query<RoleQuery>,
) -> Result<Response, WebError> {
    let id = role_id(&id)?;
    role_page_at(&state, &signed, &id, &query.page, StatusCode::OK, |_| {}).await
}

/// A role's grants as posted (the matrix row or the role's page), with its etag.
#[derive(Deserialize, Default)]
struct RoleForm {
    #[serde(default)]
    etag: String,
    display_name: Option<String>,
    view_mailbox_list: Option<String>,
    connect_mailboxes: Option<String>,
    modify_mailboxes: Option<String>,
    grant_read_access: Option<String>,
    invite: Option<String>,
    manage_permissions: Option<String>,
    /// `matrix` when posted from the roles page.
    #[serde(default)]
    from: String,
}

impl RoleForm {
    fn scope(&self, field: &str) -> Option<&str> {
        match field {
            "view_mailbox_list" => self.view_mailbox_list.as_deref(),
            "connect_mailboxes" => self.connect_mailboxes.as_deref(),
            "modify_mailboxes" => self.modify_mailboxes.as_deref(),
            "grant_read_access" => self.grant_read_access.as_deref(),
            _ => None,
        }
    }

    fn flag(&self, field: &str) -> bool {
        match field {
            "invite" => self.invite.is_some(),
            "manage_permissions" => self.manage_permissions.is_some(),
            _ => false,
        }
    }

    fn is_from_matrix(&self) -> bool {
        self.from == "matrix"
    }

    /// `current` changed as the form says, and the mask of what changed. An unknown scope
    /// value is `Err` (the form was not ours).
    fn apply(&self, current: &apb::Role) -> Result<(apb::Role, Vec<String>), ()> {
        let mut wanted = current.clone();
        let mut permissions = current.permissions.unwrap_or_default();
        let mut paths = Vec::new();
        for (field, _) in SCOPED {
            if let Some(value) = self.scope(field) {
                let scope = parse_scope(value).ok_or(())?;
                if scope_of(&permissions, field) != scope {
                    set_scope(&mut permissions, field, scope);
                    paths.push(format!("permissions.{field}"));
                }
            }
        }
        for (field, _) in FLAGS {
            let on = self.flag(field);
            if flag_of(&permissions, field) != on {
                set_flag(&mut permissions, field, on);
                paths.push(format!("permissions.{field}"));
            }
        }
        if let Some(name) = &self.display_name {
            if name.trim() != current.display_name {
                wanted.display_name = name.trim().to_owned();
                paths.push("display_name".into());
            }
        }
        wanted.permissions = Some(permissions);
        wanted.etag = self.etag.clone();
        Ok((wanted, paths))
    }
}

/// Where a saved role's form goes back to.
fn back_to(is_from_matrix: bool, id: &str, notice: &str) -> String {
    if is_from_matrix {
        format!("/access/roles?notice={notice}#role-{id}")
    } else {
        format!("/access/roles/{id}?notice={notice}#content")
    }
}

/// The page a role's form came from, shown again with `message` next to its Save (and the
/// values posted, unless it is a conflict, which shows the current ones).
async fn role_form_again(
    state: &AppState,
    signed: &SignedIn,
    id: &str,
    form: &RoleForm,
    wanted: Option<&apb::Role>,
    message: String,
    conflict: bool,
) -> Result<Response, WebError> {
    let status = if conflict {
        StatusCode::CONFLICT
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let adjust_view = |view: &mut RoleView| {
        view.error = Some(message.clone());
        view.conflict = conflict;
        if let (false, Some(wanted)) = (conflict, wanted) {
            view.show(&wanted.permissions.unwrap_or_default());
        }
    };
    if form.is_from_matrix() {
        roles_page(state, signed, status, |page| {
            if let Some(view) = page.roles.iter_mut().find(|r| r.id == id) {
                adjust_view(view);
            }
        })
        .await
    } else {
        role_page(state, signed, id, status, |page| {
            adjust_view(&mut page.role);
            if let (false, Some(wanted)) = (conflict, wanted) {
                page.name_value = wanted.display_name.clone();
            }
            page.error = Some(SlotError {
                slot: "save",
                message: message.clone(),
            });
        })
        .await
    }
}

#[tracing::instrument(skip_all)]
async fn update_role(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<RoleForm>,
) -> Result<Response, WebError> {
    let id = role_id(&id)?;
    let current = get_role(&signed, &id).await?;
    let Ok((wanted, paths)) = form.apply(&current) else {
        return Err(WebError::Invalid {
            message: signed.ctx.locale.t("access-bad-form"),
        });
    };
    if paths.is_empty() {
        return Ok(see_other(&back_to(
            form.is_from_matrix(),
            &id,
            "access-unchanged",
        )));
    }
    save_role(&state, &signed, &id, &form, wanted, paths).await
}

/// UpdateRole with the form's etag; a stale one shows the current role (409), a refusal
/// shows the service's words (422).
async fn save_role(
    state: &AppState,
    signed: &SignedIn,
    id: &str,
    form: &RoleForm,
    wanted: apb::Role,
    paths: Vec<String>,
) -> Result<Response, WebError> {
    let message = apb::UpdateRoleRequest {
        role: Some(wanted.clone()),
        update_mask: Some(prost_types::FieldMask { paths }),
    };
    match rpc!(signed.clients.access, message, update_role) {
        Ok(_) => Ok(see_other(&back_to(
            form.is_from_matrix(),
            id,
            "access-saved",
        ))),
        Err(err) if err.code() == Some(Code::Aborted) => {
            let message = signed.ctx.locale.t("access-conflict");
            role_form_again(state, signed, id, form, None, message, true).await
        }
        Err(err) => match refusal(&err) {
            Some(message) => {
                role_form_again(state, signed, id, form, Some(&wanted), message, false).await
            }
            None => Err(peer(signed)(err)),
        },
    }
}

#[derive(Deserialize)]
struct VisibilityForm {
    #[serde(default)]
    etag: String,
    #[serde(default)]
    hidden: String,
}

#[tracing::instrument(skip_all)]
async fn set_visibility(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<VisibilityForm>,
) -> Result<Response, WebError> {
    let id = role_id(&id)?;
    let current = get_role(&signed, &id).await?;
    let wanted = apb::Role {
        hidden: form.hidden == "1",
        etag: form.etag.clone(),
        ..current
    };
    let role_form = RoleForm {
        etag: form.etag,
        ..RoleForm::default()
    };
    save_role(
        &state,
        &signed,
        &id,
        &role_form,
        wanted,
        vec!["hidden".into()],
    )
    .await
}

#[derive(Deserialize)]
struct CloneForm {
    #[serde(default)]
    display_name: String,
}

#[tracing::instrument(skip_all)]
async fn clone_role(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<CloneForm>,
) -> Result<Response, WebError> {
    let id = role_id(&id)?;
    let message = apb::CloneRoleRequest {
        id: id.clone(),
        display_name: form.display_name.trim().to_owned(),
    };
    match rpc!(signed.clients.access, message, clone_role) {
        Ok(role) => Ok(see_other(&format!(
            "/access/roles/{}?notice=access-cloned#content",
            role.id
        ))),
        Err(err) => match refusal(&err) {
            Some(message) => {
                role_page(
                    &state,
                    &signed,
                    &id,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    |page| {
                        page.clone_name = form.display_name.clone();
                        page.error = Some(SlotError {
                            slot: "clone",
                            message,
                        });
                    },
                )
                .await
            }
            None => Err(peer(&signed)(err)),
        },
    }
}

#[derive(Template)]
#[template(path = "access/delete.html")]
struct DeletePage {
    chrome: Chrome,
    role: RoleView,
    error: Option<String>,
}

async fn delete_page(
    state: &AppState,
    signed: &SignedIn,
    id: &str,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, WebError> {
    let chrome = Chrome::signed_in(state, signed).await;
    let manage = configures(&chrome);
    let role = get_role(signed, id).await?;
    render_status(
        status,
        &DeletePage {
            chrome,
            role: RoleView::new(&role, manage),
            error,
        },
    )
}

#[tracing::instrument(skip_all)]
async fn confirm_delete(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = role_id(&id)?;
    delete_page(&state, &signed, &id, StatusCode::OK, None).await
}

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    etag: String,
}

#[tracing::instrument(skip_all)]
async fn delete_role(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<DeleteForm>,
) -> Result<Response, WebError> {
    let id = role_id(&id)?;
    let message = apb::DeleteRoleRequest {
        id: id.clone(),
        etag: form.etag,
    };
    match rpc!(signed.clients.access, message, delete_role) {
        Ok(_) => Ok(see_other("/access/roles?notice=access-deleted")),
        Err(err) if err.code() == Some(Code::Aborted) => {
            let message = signed.ctx.locale.t("access-conflict-delete");
            delete_page(&state, &signed, &id, StatusCode::CONFLICT, Some(message)).await
        }
        Err(err) => match refusal(&err) {
            Some(message) => {
                delete_page(
                    &state,
                    &signed,
                    &id,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Some(message),
                )
                .await
            }
            None => Err(peer(&signed)(err)),
        },
    }
}

/// An assignment to make or remove.
#[derive(Deserialize, Default)]
struct AssignForm {
    /// `user`, `department`, `heads` or `everyone_else` (assign), or empty (unassign: the
    /// subject fields).
    #[serde(default)]
    to: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    department: String,
    with_sub: Option<String>,
    #[serde(default)]
    subject_type: String,
    #[serde(default)]
    subject_id: String,
    #[serde(default)]
    subject_relation: String,
}

fn subject(kind: &str, id: &str, relation: &str) -> apb::SubjectRef {
    apb::SubjectRef {
        object: Some(apb::ObjectRef {
            r#type: kind.into(),
            id: id.into(),
        }),
        relation: relation.into(),
    }
}

/// The slot of an assign form (where its refusal is shown).
fn assign_slot(to: &str) -> &'static str {
    match to {
        "user" => "user",
        "department" => "department",
        "heads" => "heads",
        "everyone_else" => "everyone_else",
        _ => "assignments",
    }
}

#[tracing::instrument(skip_all)]
async fn assign(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<AssignForm>,
) -> Result<Response, WebError> {
    let id = role_id(&id)?;
    let locale = signed.ctx.locale;
    let slot = assign_slot(&form.to);
    let org = signed.session.org_id.to_string();
    let again = |message: String| {
        let email = form.email.clone();
        role_page(
            &state,
            &signed,
            &id,
            StatusCode::UNPROCESSABLE_ENTITY,
            move |page| {
                page.email_value = email;
                page.error = Some(SlotError { slot, message });
            },
        )
    };
    let who = match slot {
        "user" => match person_by_email(&signed, &form.email).await? {
            Some(user) => subject("user", &user, ""),
            None => return again(say(locale, "access-person-unknown", form.email.trim())).await,
        },
        "department" => {
            if form.department.is_empty() {
                return again(locale.t("access-department-needed")).await;
            }
            let relation = if form.with_sub.is_some() {
                "all_members"
            } else {
                "member"
            };
            subject("department", &form.department, relation)
        }
        "heads" => subject("org", &org, "head"),
        "everyone_else" => subject("org", &org, "everyone_else"),
        _ => return Err(WebError::NotFound),
    };
    let message = apb::AssignRoleRequest {
        role_id: id.clone(),
        subject: Some(who),
    };
    match rpc!(signed.clients.access, message, assign_role) {
        Ok(_) => Ok(see_other(&format!(
            "/access/roles/{id}?notice=access-assigned#content"
        ))),
        Err(err) => match refusal(&err) {
            Some(message) => again(message).await,
            None => Err(peer(&signed)(err)),
        },
    }
}

#[tracing::instrument(skip_all)]
async fn unassign(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<AssignForm>,
) -> Result<Response, WebError> {
    let id = role_id(&id)?;
    let message = apb::UnassignRoleRequest {
        role_id: id.clone(),
        subject: Some(subject(
            &form.subject_type,
            &form.subject_id,
            &form.subject_relation,
        )),
    };
    match rpc!(signed.clients.access, message, unassign_role) {
        Ok(_) => Ok(see_other(&format!(
            "/access/roles/{id}?notice=access-unassigned#content"
        ))),
        Err(err) => match refusal(&err) {
            Some(message) => {
                role_page(
                    &state,
                    &signed,
                    &id,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    |page| {
                        page.error = Some(SlotError {
                            slot: "assignments",
                            message,
                        })
                    },
                )
                .await
            }
            None => Err(peer(&signed)(err)),
        },
    }
}

// ---------------------------------------------------------------------------------------
// A mailbox's readers.

/// Someone who may read a mailbox's mail.
struct ReaderView {
    user_id: String,
    name: String,
    owner: bool,
}

#[derive(Template)]
#[template(path = "access/readers.html")]
struct ReadersPage {
    chrome: Chrome,
    mailbox_id: String,
    email: String,
    owner_name: String,
    readers: Vec<ReaderView>,
    /// How many readers show as their id: names are looked up for `USER_NAME_CAP` people.
    unnamed: usize,
    /// The viewer may grant and take away reading (access decides each change anyway).
    may_grant: bool,
    /// The viewer may ask "why" about others.
    may_explain: bool,
    email_value: String,
    add_error: Option<String>,
    remove_error: Option<String>,
}

async fn readers_page(
    state: &AppState,
    signed: &SignedIn,
    id: &str,
    status: StatusCode,
    adjust: impl FnOnce(&mut ReadersPage),
) -> Result<Response, WebError> {
    let chrome = Chrome::signed_in(state, signed).await;
    let message = mpb::GetMailboxRequest { id: id.to_owned() };
    let mailbox = rpc!(signed.clients.mailboxes, message, get_mailbox).map_err(peer(signed))?;
    let mailbox_ref = Some(apb::ObjectRef {
        r#type: "mailbox".into(),
        id: mailbox.id.clone(),
    });
    // Every reader: the answer comes a page at a time.
    let (mut ids, mut page_token) = (Vec::new(), String::new());
    loop {
        let message = apb::LookupSubjectsRequest {
            resource: mailbox_ref.clone(),
            permission: "mailbox.read_mail".into(),
            subject_type: "user".into(),
            at_least_as_fresh_as: None,
            page_size: 10_000,
            page_token,
        };
        let page = rpc!(signed.clients.access, message, lookup_subjects).map_err(peer(signed))?;
        ids.extend(page.subject_ids);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let check = apb::CheckRequest {
        subject: Some(subject("user", &signed.session.user_id.to_string(), "")),
        permission: "mailbox.grant_read".into(),
        resource: mailbox_ref,
        at_least_as_fresh_as: None,
        explain: false,
    };
    let may_grant = match rpc!(signed.clients.access, check, check) {
        Ok(answer) => answer.allowed,
        Err(err) => {
            tracing::debug!(error = %err, "whether the viewer may grant reading is unknown");
            false
        }
    };
    let mut names = Names::new(signed);
    if !mailbox.owner_display_name.is_empty() {
        names.users.insert(
            mailbox.owner_user_id.clone(),
            mailbox.owner_display_name.clone(),
        );
    }
    let unnamed = names
        .prefetch_users(
            std::iter::once(mailbox.owner_user_id.as_str()).chain(ids.iter().map(String::as_str)),
        )
        .await;
    let mut readers = Vec::new();
    for user_id in ids {
        readers.push(ReaderView {
            name: names.user(&user_id).await,
            owner: user_id == mailbox.owner_user_id,
            user_id,
        });
    }
    readers.sort_by(|a, b| b.owner.cmp(&a.owner).then(a.name.cmp(&b.name)));
    let owner_name = names.user(&mailbox.owner_user_id).await;
    let may_explain = configures(&chrome);
    let mut page = ReadersPage {
        chrome,
        mailbox_id: mailbox.id,
        email: mailbox.email,
        owner_name,
        readers,
        unnamed,
        may_grant,
        may_explain,
        email_value: String::new(),
        add_error: None,
        remove_error: None,
    };
    adjust(&mut page);
    render_status(status, &page)
}

#[tracing::instrument(skip_all)]
async fn readers(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = mailbox_path_id(&id)?;
    readers_page(&state, &signed, &id, StatusCode::OK, |_| {}).await
}

#[derive(Deserialize)]
struct ReaderForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    user_id: String,
}

fn reader(mailbox: &str, user: &str) -> apb::Relationship {
    apb::Relationship {
        resource: Some(apb::ObjectRef {
            r#type: "mailbox".into(),
            id: mailbox.into(),
        }),
        relation: "reader".into(),
        subject: Some(subject("user", user, "")),
    }
}

#[tracing::instrument(skip_all)]
async fn add_reader(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<ReaderForm>,
) -> Result<Response, WebError> {
    let id = mailbox_path_id(&id)?;
    let again = |message: String| {
        let email = form.email.clone();
        readers_page(
            &state,
            &signed,
            &id,
            StatusCode::UNPROCESSABLE_ENTITY,
            move |page| {
                page.email_value = email;
                page.add_error = Some(message);
            },
        )
    };
    let Some(user) = person_by_email(&signed, &form.email).await? else {
        let message = say(
            signed.ctx.locale,
            "access-person-unknown",
            form.email.trim(),
        );
        return again(message).await;
    };
    let message = apb::WriteRelationshipsRequest {
        relationships: vec![reader(&id, &user)],
    };
    match rpc!(signed.clients.access, message, write_relationships) {
        Ok(_) => Ok(see_other(&format!(
            "/mailboxes/{id}/access?notice=access-reader-added#content"
        ))),
        Err(err) => match refusal(&err) {
            Some(message) => again(message).await,
            None => Err(peer(&signed)(err)),
        },
    }
}

#[tracing::instrument(skip_all)]
async fn remove_reader(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<ReaderForm>,
) -> Result<Response, WebError> {
    let id = mailbox_path_id(&id)?;
    let message = apb::DeleteRelationshipsRequest {
        relationships: vec![reader(&id, &form.user_id)],
    };
    match rpc!(signed.clients.access, message, delete_relationships) {
        Ok(_) => Ok(see_other(&format!(
            "/mailboxes/{id}/access?notice=access-reader-removed#content"
        ))),
        Err(err) => match refusal(&err) {
            Some(message) => {
                readers_page(
                    &state,
                    &signed,
                    &id,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    |page| page.remove_error = Some(message),
                )
                .await
            }
            None => Err(peer(&signed)(err)),
        },
    }
}

// ---------------------------------------------------------------------------------------
// "Why can X see this?"

#[derive(Deserialize, Default)]
struct ExplainQuery {
    #[serde(default)]
    email: String,
    /// A person by id (links from other pages).
    #[serde(default)]
    user: String,
    #[serde(default)]
    permission: String,
    /// A mailbox by id or address; empty for the organisation.
    #[serde(default)]
    mailbox: String,
}

/// One permission in the form's `<select>`.
struct PermissionOption {
    value: &'static str,
    key: &'static str,
    selected: bool,
}

/// The answer to "why".
struct Answer {
    allowed: bool,
    verdict: String,
    reason: String,
    chain: Vec<String>,
    role_id: String,
    role_name: String,
    scope_key: Option<&'static str>,
    assignment: String,
}

#[derive(Template)]
#[template(path = "access/explain.html")]
struct ExplainPage {
    chrome: Chrome,
    email: String,
    mailbox: String,
    permissions: Vec<PermissionOption>,
    error: Option<String>,
    answer: Option<Answer>,
}

/// A mailbox by id, or by its address among those the viewer may see.
async fn mailbox_id(signed: &SignedIn, given: &str) -> Result<Option<String>, WebError> {
    let given = given.trim();
    if given.parse::<uuid::Uuid>().is_ok() {
        return Ok(Some(given.to_owned()));
    }
    let address = given.to_lowercase();
    if address.is_empty() || address.contains(['"', '\\']) {
        return Ok(None);
    }
    // `email = "…"` is an exact, case-insensitive match (mailboxes.proto ListMailboxes).
    let message = mpb::ListMailboxesRequest {
        page_size: 50,
        filter: format!("email = \"{address}\""),
        ..Default::default()
    };
    match rpc!(signed.clients.mailboxes, message, list_mailboxes) {
        Ok(answer) => Ok(answer
            .mailboxes
            .into_iter()
            .find(|m| m.email.to_lowercase() == address)
            .map(|m| m.id)),
        Err(err) if refusal(&err).is_some() => Ok(None),
        Err(err) => Err(peer(signed)(err)),
    }
}

#[tracing::instrument(skip_all)]
async fn explain(
    State(state): State<AppState>,
    signed: SignedIn,
    Query(query): Query<ExplainQuery>,
) -> Result<Response, WebError> {
    let chrome = Chrome::signed_in(&state, &signed).await;
    let locale = signed.ctx.locale;
    let asked = !query.permission.is_empty();
    let permission = PERMISSIONS
        .iter()
        .find(|p| p.0 == query.permission)
        .copied();
    let mut page = ExplainPage {
        chrome,
        email: query.email.clone(),
        mailbox: query.mailbox.clone(),
        permissions: PERMISSIONS
            .iter()
            .map(|&(value, key)| PermissionOption {
                value,
                key,
                selected: value == query.permission,
            })
            .collect(),
        error: None,
        answer: None,
    };
    if !asked {
        return render_status(StatusCode::OK, &page);
    }
    let Some((permission, permission_key)) = permission else {
        page.error = Some(locale.t("access-bad-form"));
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    let user = if !query.user.is_empty() {
        Some(query.user.clone())
    } else {
        person_by_email(&signed, &query.email).await?
    };
    let Some(user) = user else {
        page.error = Some(say(locale, "access-person-unknown", query.email.trim()));
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    let resource = if permission.starts_with("org.") {
        apb::ObjectRef {
            r#type: "org".into(),
            id: signed.session.org_id.to_string(),
        }
    } else {
        if query.mailbox.trim().is_empty() {
            page.error = Some(locale.t("access-explain-mailbox-needed"));
            return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
        match mailbox_id(&signed, &query.mailbox).await? {
            Some(id) => apb::ObjectRef {
                r#type: "mailbox".into(),
                id,
            },
            None => {
                page.error = Some(say(locale, "access-mailbox-unknown", query.mailbox.trim()));
                return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
            }
        }
    };
    let message = apb::CheckRequest {
        subject: Some(subject("user", &user, "")),
        permission: permission.into(),
        resource: Some(resource.clone()),
        at_least_as_fresh_as: None,
        explain: true,
    };
    let answer = match rpc!(signed.clients.access, message, check) {
        Ok(answer) => answer,
        // Asking beyond one's reach is a refusal of the page, not of the form.
        Err(err) if err.code() == Some(Code::PermissionDenied) => {
            return Err(peer(&signed)(err));
        }
        Err(err) => match refusal(&err) {
            Some(message) => {
                page.error = Some(message);
                return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
            }
            None => return Err(peer(&signed)(err)),
        },
    };
    let mut names = Names::new(&signed);
    let person = names.user(&user).await;
    if page.email.is_empty() {
        page.email = person.clone();
    }
    let target = names.node(locale, &resource).await;
    let what = locale.t(permission_key);
    let verdict_key = if answer.allowed {
        "access-explain-yes"
    } else {
        "access-explain-no"
    };
    let verdict = locale.t_args(
        verdict_key,
        &[
            ("name", crate::i18n::Arg::Str(&person)),
            ("what", crate::i18n::Arg::Str(&what)),
            ("target", crate::i18n::Arg::Str(&target)),
        ],
    );
    let chain = names.chain(locale, &answer.path).await;
    let (role_id, role_name, scope_key, assignment) = match &answer.granted_by {
        Some(grant) => {
            let scope = apb::Scope::try_from(grant.scope).unwrap_or(apb::Scope::Unspecified);
            let scope_key = (scope != apb::Scope::Unspecified).then(|| scope_names(scope).1);
            let assignment = match &grant.assignment {
                Some(rel) if rel.relation == "admin" => locale.t("access-holders-administrator"),
                Some(rel) => match &rel.subject {
                    Some(s) => names.assignee(locale, s).await,
                    None => String::new(),
                },
                None => String::new(),
            };
            (
                grant.role_id.clone(),
                grant.role_display_name.clone(),
                scope_key,
                assignment,
            )
        }
        None => (String::new(), String::new(), None, String::new()),
    };
    page.answer = Some(Answer {
        allowed: answer.allowed,
        verdict,
        reason: answer.reason,
        chain,
        role_id,
        role_name,
        scope_key,
        assignment,
    });
    render_status(StatusCode::OK, &page)
}

#[tracing::instrument(skip_all)]
async fn access_home() -> Response {
    see_other("/access/roles")
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/access", get(access_home))
        .route("/access/roles", get(roles).post(create_role))
        .route("/access/roles/{id}", get(role).post(update_role))
        .route("/access/roles/{id}/visibility", post(set_visibility))
        .route("/access/roles/{id}/clone", post(clone_role))
        .route(
            "/access/roles/{id}/delete",
            get(confirm_delete).post(delete_role),
        )
        .route("/access/roles/{id}/assign", post(assign))
        .route("/access/roles/{id}/unassign", post(unassign))
        .route("/access/explain", get(explain))
        .route("/mailboxes/{id}/access", get(readers))
        .route("/mailboxes/{id}/access/add", post(add_reader))
        .route("/mailboxes/{id}/access/remove", post(remove_reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(permissions: apb::RolePermissions) -> apb::Role {
        apb::Role {
            id: "r1".into(),
            display_name: "Supervisor".into(),
            kind: apb::RoleKind::Supervisor as i32,
            permissions: Some(permissions),
            etag: "3".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_saved_form_names_only_what_changed() {
        let mut p = apb::RolePermissions::default();
        p.set_view_mailbox_list(apb::Scope::Subordinates);
        p.set_modify_mailboxes(apb::Scope::Own);
        let current = role(p);
        let form = RoleForm {
            etag: "3".into(),
            display_name: Some(" Supervisor ".into()),
            view_mailbox_list: Some("subordinates".into()),
            connect_mailboxes: Some("none".into()),
            modify_mailboxes: Some("department".into()),
            grant_read_access: Some("none".into()),
            invite: Some("on".into()),
            ..RoleForm::default()
        };
        let (wanted, paths) = form.apply(&current).expect("our own form");
        assert_eq!(
            paths,
            ["permissions.modify_mailboxes", "permissions.invite"]
        );
        let permissions = wanted.permissions.expect("permissions");
        assert_eq!(permissions.modify_mailboxes(), apb::Scope::Department);
        assert!(permissions.invite);
        assert_eq!(wanted.etag, "3");
    }

    #[test]
    fn a_scope_that_is_not_ours_is_refused() {
        let form = RoleForm {
            modify_mailboxes: Some("everything".into()),
            ..RoleForm::default()
        };
        assert!(form.apply(&role(apb::RolePermissions::default())).is_err());
    }

    #[test]
    fn unspecified_scopes_read_as_none_and_every_scope_has_a_name() {
        let p = apb::RolePermissions::default();
        assert_eq!(scope_of(&p, "view_mailbox_list"), apb::Scope::None);
        for (scope, value, key) in SCOPES {
            assert_eq!(parse_scope(value), Some(scope));
            assert_eq!(scope_names(scope), (value, key));
        }
    }

    #[test]
    fn every_sentence_of_the_pages_is_in_both_languages() {
        let keys = SCOPES
            .iter()
            .map(|s| s.2)
            .chain(SCOPED.iter().map(|s| s.1))
            .chain(FLAGS.iter().map(|s| s.1))
            .chain(PERMISSIONS.iter().map(|s| s.1));
        for key in keys {
            for locale in Locale::ALL {
                assert!(locale.has(key), "{key} in {locale:?}");
            }
        }
    }
}
