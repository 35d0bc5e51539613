//! "Manage user mailboxes" (`/mailboxes`): the list with its filter bar, saved columns (⚙),
//! sorting and keyset pages; each row's sync now, edit, transfer and disconnect; connecting
//! one mailbox or many. Everything is the registry's (`ListMailboxes` and friends) asked as
//! the signed-in person; which controls a row shows comes from the person's scopes on
//! modify, sync and read mail (`LookupMailboxScope`), asked while the registry lists — the
//! registry decides each action on the same scopes. The session keeps the last list view
//! seen, so the list is asked with it at once while the current view is fetched (and asked
//! again in the rare case the two differ).
//! The query string is the page's whole state, so every view is a link and works without
//! JavaScript; `enhance.js` swaps only `#mailbox-table` when it can.

use std::collections::{HashMap, HashSet};

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use mailroom_clients::MailboxScope;
use mailroom_proto::identity::v1 as ipb;
use mailroom_proto::mailboxes::v1 as pb;
use mailroom_types::{MailboxId, Permission, UserId};

use crate::auth::SignedIn;
use crate::errors::WebError;
use crate::filter::{self, BadField, Fields};
use crate::lookup::names_of;
use crate::page::{render, render_status, see_other, Chrome};
use crate::state::AppState;
use crate::timing::Timing;

/// Columns a person may choose, in the registry's order (`ListView.columns`).
const COLUMNS: &[&str] = &[
    "employee",
    "email",
    "name",
    "sender_name",
    "last_sync_time",
    "sync_state",
    "unread_count",
    "message_count",
    "disk_mb",
    "in_crm",
    "crm_queue",
    "access_by",
];

/// How many earlier pages "Previous" remembers.
const PREV_MAX: usize = 20;
/// At most this many mailboxes connected in one go (the registry's limit).
const MANY_MAX: usize = 100;
/// The fragment `enhance.js` asks for.
const TABLE_ID: &str = "mailbox-table";

/// A form's or query's `key=value` pairs, repeated keys kept.
#[derive(Debug, Default, Clone)]
struct Pairs(Vec<(String, String)>);

impl Pairs {
    fn parse(text: &[u8]) -> Pairs {
        Pairs(serde_urlencoded::from_bytes(text).unwrap_or_default())
    }

    fn get(&self, key: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
}

/// The filter inputs' query names, in the form's order.
const FIELD_KEYS: &[&str] = &[
    "address",
    "mailbox",
    "owner",
    "days",
    "crm",
    "disk_min",
    "disk_max",
    "sender",
    "access_by",
    "crm_queue",
    "f",
];

/// The list's state, as the query string carries it.
#[derive(Debug, Clone, Default)]
struct ListState {
    /// As typed (`access_by`, `crm_queue` may be addresses).
    fields: Fields,
    sort: String,
    page: String,
    prev: Vec<String>,
}

impl ListState {
    fn from_pairs(q: &Pairs) -> ListState {
        ListState {
            fields: Fields {
                address: q.get("address"),
                mailbox: q.get("mailbox"),
                owner: q.get("owner"),
                days: q.get("days"),
                crm: q.get("crm"),
                disk_min: q.get("disk_min"),
                disk_max: q.get("disk_max"),
                sender: q.get("sender"),
                access_by: q.get("access_by"),
                crm_queue: q.get("crm_queue"),
                advanced: q.get("f"),
            },
            sort: q.get("sort"),
            page: q.get("page"),
            prev: q.all("prev").into_iter().take(PREV_MAX).collect(),
        }
    }

    fn field_pairs(&self) -> Vec<(&'static str, String)> {
        let f = &self.fields;
        let values = [
            &f.address,
            &f.mailbox,
            &f.owner,
            &f.days,
            &f.crm,
            &f.disk_min,
            &f.disk_max,
            &f.sender,
            &f.access_by,
            &f.crm_queue,
            &f.advanced,
        ];
        FIELD_KEYS
            .iter()
            .zip(values)
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// `/mailboxes?…` with this filter, `sort`, and the page `page` reached through `prev`.
    fn href(&self, sort: &str, page: &str, prev: &[String]) -> String {
        let mut pairs = self.field_pairs();
        if !sort.is_empty() {
            pairs.push(("sort", sort.to_owned()));
        }
        if !page.is_empty() {
            pairs.push(("page", page.to_owned()));
            for p in prev {
                pairs.push(("prev", p.clone()));
            }
        }
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        if query.is_empty() {
            "/mailboxes".into()
        } else {
            format!("/mailboxes?{query}")
        }
    }
}

/// A column header: its label, and its sort link when it sorts.
struct Header {
    key: &'static str,
    label: String,
    href: Option<String>,
    /// `ascending`/`descending` on the sorted column.
    aria_sort: Option<&'static str>,
}

/// One cell of a row, by what it shows.
enum Cell {
    Owner { name: String, dismissed: bool },
    Text(String),
    Num(String),
    Synced { text: String, iso: String },
}

struct Row {
    id: String,
    email: String,
    unread: i64,
    /// "12 unread", in the page's language.
    unread_label: String,
    cells: Vec<Cell>,
    modify: bool,
    sync: bool,
    read: bool,
}

impl Row {
    fn any_action(&self) -> bool {
        self.modify || self.sync || self.read
    }
}

/// What the table block shows (the page and the fragment share it).
struct Table {
    headers: Vec<Header>,
    rows: Vec<Row>,
    /// "About 200,000 mailboxes" when the registry estimated.
    caption: String,
    next_href: Option<String>,
    prev_href: Option<String>,
    first_href: Option<String>,
    /// Where a row's forms come back to.
    back: String,
}

impl Table {
    /// Whether any row shows "Sync now" (and so the page needs the one form they submit).
    fn any_sync(&self) -> bool {
        self.rows.iter().any(|row| row.sync)
    }
}

/// A filter input with its message when it could not be used.
#[derive(Default)]
struct FieldErrors {
    days: Option<String>,
    disk_min: Option<String>,
    disk_max: Option<String>,
    access_by: Option<String>,
    crm_queue: Option<String>,
    advanced: Option<String>,
}

#[derive(Template)]
#[template(path = "mailboxes/list.html")]
struct ListPage {
    chrome: Chrome,
    state: ListState,
    errors: FieldErrors,
    table: Table,
    /// The saved columns, for the ⚙ form.
    chosen: Vec<(&'static str, String, bool)>,
    can_connect: bool,
}

#[derive(Template)]
#[template(path = "mailboxes/fragment.html")]
struct TableFragment {
    chrome: Chrome,
    table: Table,
}

fn column_label(chrome: &Chrome, key: &str) -> String {
    chrome.t(&format!("mailboxes-col-{}", key.replace('_', "-")))
}

fn sync_state_label(chrome: &Chrome, state: i32) -> String {
    let key = match pb::SyncState::try_from(state).unwrap_or(pb::SyncState::Unspecified) {
        pb::SyncState::Unspecified => return String::new(),
        pb::SyncState::Pending => "mailboxes-state-pending",
        pb::SyncState::Ok => "mailboxes-state-ok",
        pb::SyncState::Syncing => "mailboxes-state-syncing",
        pb::SyncState::AuthFailed => "mailboxes-state-auth-failed",
        pb::SyncState::Error => "mailboxes-state-error",
    };
    chrome.t(key)
}

/// A user id, or the id of the one person whose login or contact address is `text`.
async fn resolve_user(signed: &SignedIn, text: &str) -> Result<Option<String>, WebError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if uuid::Uuid::parse_str(text).is_ok() {
        return Ok(Some(text.to_owned()));
    }
    Ok(crate::lookup::find_by_email(signed, text)
        .await?
        .map(|u| u.id))
}

/// Where one of the caller's mailbox permissions reaches, ready to test rows against.
#[derive(Debug)]
enum Reach {
    Everywhere,
    Some {
        owners: HashSet<UserId>,
        mailboxes: HashSet<MailboxId>,
    },
}

impl Reach {
    fn of(scope: MailboxScope) -> Reach {
        match scope {
            MailboxScope::WholeOrganization => Reach::Everywhere,
            MailboxScope::Some { owners, mailboxes } => Reach::Some {
                owners: owners.into_iter().collect(),
                mailboxes: mailboxes.into_iter().collect(),
            },
        }
    }

    fn covers(&self, mailbox: Option<MailboxId>, owner: Option<UserId>) -> bool {
        match self {
            Reach::Everywhere => true,
            Reach::Some { owners, mailboxes } => {
                owner.is_some_and(|o| owners.contains(&o))
                    || mailbox.is_some_and(|m| mailboxes.contains(&m))
            }
        }
    }
}

/// What each row may offer: the caller's scopes on `mailbox.modify`, `mailbox.sync` and
/// `mailbox.read_mail`, asked of access control while the registry lists (they depend on
/// no row). A row offers an action when its mailbox is in the scope — the test the registry
/// itself makes, on its own owner column, when the action is asked for. A scope access
/// control does not give offers nothing; the services decide every action anyway.
#[derive(Debug, Default)]
struct RowScopes {
    modify: Option<Reach>,
    sync: Option<Reach>,
    read: Option<Reach>,
}

impl RowScopes {
    async fn ask(signed: &SignedIn) -> RowScopes {
        let user = signed.session.user_id;
        let ask = |permission: Permission| async move {
            match signed
                .clients
                .access
                .mailbox_scope(user, permission, &[])
                .await
            {
                Ok(scope) => Some(Reach::of(scope)),
                Err(err) => {
                    tracing::warn!(error = %err, permission = permission.name(), "row permissions unknown; offering none");
                    None
                }
            }
        };
        let (modify, sync, read) = futures::join!(
            ask(Permission::MailboxModify),
            ask(Permission::MailboxSync),
            ask(Permission::MailboxReadMail)
        );
        RowScopes { modify, sync, read }
    }

    /// `(modify, sync, read_mail)` on a listed mailbox (listed with its owner).
    fn of_row(&self, m: &pb::Mailbox) -> (bool, bool, bool) {
        let id = m.id.parse::<MailboxId>().ok();
        let owner = m.owner_user_id.parse::<UserId>().ok();
        let covers = |reach: &Option<Reach>| reach.as_ref().is_some_and(|r| r.covers(id, owner));
        (covers(&self.modify), covers(&self.sync), covers(&self.read))
    }
}

async fn list_view(signed: &SignedIn) -> Result<pb::ListView, WebError> {
    signed
        .clients
        .mailboxes
        .call(pb::GetListViewRequest {}, |mut raw, request| async move {
            raw.get_list_view(request).await
        })
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))
}

/// A list view as the session keeps it (the last one the page saw), to list with while the
/// current one is asked for.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct KeptView {
    columns: Vec<String>,
    filter: String,
    order_by: String,
    page_size: i32,
}

impl KeptView {
    fn encode(view: &pb::ListView) -> Option<String> {
        serde_json::to_string(&KeptView {
            columns: view.columns.clone(),
            filter: view.filter.clone(),
            order_by: view.order_by.clone(),
            page_size: view.page_size,
        })
        .ok()
    }

    fn decode(text: &str) -> Option<pb::ListView> {
        let kept: KeptView = serde_json::from_str(text).ok()?;
        Some(pb::ListView {
            columns: kept.columns,
            filter: kept.filter,
            order_by: kept.order_by,
            page_size: kept.page_size,
        })
    }
}

/// Keeps `view` in the session for the next visit's guess (a failure only costs that guess).
async fn keep_view(state: &AppState, signed: &SignedIn, view: &pb::ListView) {
    let Some(text) = KeptView::encode(view) else {
        return;
    };
    if let Err(err) = state.sessions.store_list_view(&signed.session, &text).await {
        tracing::warn!(error = %err, "the list view was not kept in the session");
    }
}

fn known_columns(columns: &[String]) -> Vec<&'static str> {
    // The address is each row's header, so it comes first.
    std::iter::once("email")
        .chain(
            COLUMNS
                .iter()
                .copied()
                .filter(|c| *c != "email" && columns.iter().any(|x| x == c)),
        )
        .collect()
}

/// What the rows always need besides the chosen columns: the address, the unread badge, the
/// sync time, and the owner (whose mailboxes a permission's scope names).
const ROW_FIELDS: [&str; 4] = ["email", "unread_count", "last_sync_time", "owner_user_id"];

/// The list as one view shows it: the state the query string and the view make, the
/// filter's errors, and the registry's answer.
struct Listed {
    view: pb::ListView,
    state: ListState,
    columns: Vec<&'static str>,
    errors: FieldErrors,
    order: Option<(String, bool)>,
    order_by: String,
    answer: pb::ListMailboxesResponse,
}

/// Lists with `view` (the saved filter and order on a first visit, its columns and page size
/// always) and the query string's `pairs`.
async fn list_with(
    signed: &SignedIn,
    pairs: &Pairs,
    view: pb::ListView,
) -> Result<Listed, WebError> {
    let locale = signed.ctx.locale;
    let mut list_state = ListState::from_pairs(pairs);
    // A first visit opens the saved view's filter and order.
    let fresh = !FIELD_KEYS.iter().any(|k| pairs.has(k)) && !pairs.has("sort");
    if fresh {
        list_state.fields.advanced = view.filter.clone();
        list_state.sort = view.order_by.clone();
    }
    let columns = known_columns(&view.columns);
    let mut errors = FieldErrors::default();

    // People typed by address become ids.
    let mut resolved = list_state.fields.clone();
    let nobody = || Some(locale.t("mailboxes-filter-nobody"));
    match resolve_user(signed, &list_state.fields.access_by).await? {
        Some(id) => resolved.access_by = id,
        None if !list_state.fields.access_by.trim().is_empty() => errors.access_by = nobody(),
        None => {}
    }
    match resolve_user(signed, &list_state.fields.crm_queue).await? {
        Some(id) => resolved.crm_queue = id,
        None if !list_state.fields.crm_queue.trim().is_empty() => errors.crm_queue = nobody(),
        None => {}
    }
    let composed = match resolved.compose() {
        Ok(f) => Some(f),
        Err(bad) => {
            let message = Some(locale.t("mailboxes-filter-number"));
            match bad {
                BadField::Days => errors.days = message,
                BadField::DiskMin => errors.disk_min = message,
                BadField::DiskMax => errors.disk_max = message,
                BadField::Advanced => {
                    errors.advanced = Some(locale.t("mailboxes-filter-parentheses"))
                }
            }
            None
        }
    };
    let order = filter::order_by(&list_state.sort);
    let order_by = order
        .as_ref()
        .map(|(k, d)| if *d { format!("{k} desc") } else { k.clone() })
        .unwrap_or_default();

    let mut answer = pb::ListMailboxesResponse::default();
    let blocked = errors.access_by.is_some() || errors.crm_queue.is_some();
    if let (Some(filter_text), false) = (composed, blocked) {
        let mut mask: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
        mask.extend(ROW_FIELDS.map(String::from));
        let message = pb::ListMailboxesRequest {
            page_size: if view.page_size > 0 {
                view.page_size
            } else {
                50
            },
            page_token: list_state.page.clone(),
            filter: filter_text,
            order_by: order_by.clone(),
            read_mask: Some(prost_types::FieldMask { paths: mask }),
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
            Ok(a) => answer = a,
            Err(e) if e.code() == Some(tonic::Code::InvalidArgument) => {
                errors.advanced = Some(e.sentence());
            }
            Err(e) => return Err(WebError::from_peer(e, &signed.ctx.path)),
        }
    }
    Ok(Listed {
        view,
        state: list_state,
        columns,
        errors,
        order,
        order_by,
        answer,
    })
}

/// The list with the person's current view. With the view the session kept from the last
/// visit, the registry is asked with it at once while the current view is asked for; when
/// the two differ (saved elsewhere meanwhile) the list is asked again with the current one.
/// Returns whether the view differs from the one kept.
async fn list_current(signed: &SignedIn, pairs: &Pairs) -> Result<(Listed, bool), WebError> {
    let kept = signed
        .session
        .list_view
        .as_deref()
        .and_then(KeptView::decode);
    match kept {
        Some(guess) => {
            let (current, guessed) =
                futures::join!(list_view(signed), list_with(signed, pairs, guess.clone()));
            let current = current?;
            if current == guess {
                Ok((guessed?, false))
            } else {
                Ok((list_with(signed, pairs, current).await?, true))
            }
        }
        None => {
            let current = list_view(signed).await?;
            Ok((list_with(signed, pairs, current).await?, true))
        }
    }
}

/// `future`'s output and how long it took.
async fn timed<T>(future: impl std::future::Future<Output = T>) -> (T, std::time::Duration) {
    let started = std::time::Instant::now();
    let out = future.await;
    (out, started.elapsed())
}

#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    signed: SignedIn,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let mut timing = Timing::new(state.config.server_timing, signed.ctx.started);
    timing.mark("session");
    let pairs = Pairs::parse(query.unwrap_or_default().as_bytes());
    // The list, the row scopes and the page's frame need nothing of each other.
    let ((listed, list_took), (scopes, scopes_took), (chrome, chrome_took)) = futures::join!(
        timed(list_current(&signed, &pairs)),
        timed(RowScopes::ask(&signed)),
        timed(Chrome::signed_in(&state, &signed)),
    );
    timing.mark("lists");
    timing.add("list", list_took);
    timing.add("scopes", scopes_took);
    timing.add("chrome", chrome_took);
    let (listed, changed) = listed?;
    if changed {
        keep_view(&state, &signed, &listed.view).await;
        timing.mark("keep");
    }
    let Listed {
        view: _,
        state: list_state,
        columns,
        errors,
        order,
        order_by,
        answer,
    } = listed;
    let failed = errors.days.is_some()
        || errors.disk_min.is_some()
        || errors.disk_max.is_some()
        || errors.access_by.is_some()
        || errors.crm_queue.is_some()
        || errors.advanced.is_some();

    // Names of the people the access-by and CRM-queue columns show: an owner's as the
    // registry listed it, anyone else's asked of identity.
    let mut known: HashMap<String, String> = HashMap::new();
    let people: Vec<String> = {
        let mut set: Vec<String> = Vec::new();
        if columns.contains(&"access_by") || columns.contains(&"crm_queue") {
            for m in &answer.mailboxes {
                if !m.owner_user_id.is_empty() && !m.owner_display_name.is_empty() {
                    known.insert(m.owner_user_id.clone(), m.owner_display_name.clone());
                }
            }
            for m in &answer.mailboxes {
                let queue = m.crm.as_ref().map(|c| c.queue_user_ids.as_slice());
                for id in m.access_by_user_ids.iter().chain(queue.unwrap_or_default()) {
                    if !known.contains_key(id) && !set.contains(id) {
                        set.push(id.clone());
                    }
                }
            }
        }
        set
    };
    let names = if people.is_empty() {
        HashMap::new()
    } else {
        names_of(&signed, people, 200).await
    };
    timing.mark("names");
    let name_of = |id: &String| {
        known
            .get(id)
            .or_else(|| names.get(id))
            .cloned()
            .unwrap_or_else(|| id.clone())
    };

    let rows: Vec<Row> = answer
        .mailboxes
        .iter()
        .map(|m| {
            let (modify, sync, read) = scopes.of_row(m);
            let cells = columns
                .iter()
                .filter(|c| **c != "email")
                .map(|c| match *c {
                    "employee" => Cell::Owner {
                        name: m.owner_display_name.clone(),
                        dismissed: m.owner_dismissed,
                    },
                    "name" => Cell::Text(m.name.clone()),
                    "sender_name" => Cell::Text(m.sender_name.clone()),
                    "last_sync_time" => Cell::Synced {
                        text: chrome.time(&m.last_sync_time),
                        iso: chrome.time_iso(&m.last_sync_time),
                    },
                    "sync_state" => Cell::Text(sync_state_label(&chrome, m.sync_state)),
                    "unread_count" => Cell::Num(m.unread_count.to_string()),
                    "message_count" => Cell::Num(m.message_count.to_string()),
                    "disk_mb" => Cell::Num(format!("{:.1}", m.disk_mb)),
                    "in_crm" => Cell::Text(if m.crm.as_ref().is_some_and(|c| c.in_crm) {
                        chrome.t("mailboxes-yes")
                    } else {
                        chrome.t("mailboxes-no")
                    }),
                    "crm_queue" => Cell::Text(
                        m.crm
                            .as_ref()
                            .map(|c| {
                                c.queue_user_ids
                                    .iter()
                                    .map(name_of)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .unwrap_or_default(),
                    ),
                    "access_by" => Cell::Text(
                        m.access_by_user_ids
                            .iter()
                            .map(name_of)
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    _ => Cell::Text(String::new()),
                })
                .collect();
            Row {
                id: m.id.clone(),
                email: m.email.clone(),
                unread: m.unread_count,
                unread_label: chrome.tn("mailboxes-unread", "count", m.unread_count),
                cells,
                modify,
                sync,
                read,
            }
        })
        .collect();

    let headers = columns
        .iter()
        .map(|c| {
            let key = filter::sort_key(c);
            let (href, aria_sort) = match key {
                Some(key) => {
                    let current = order.as_ref().filter(|(k, _)| k == key);
                    let (next, aria) = match current {
                        Some((_, false)) => (format!("{key} desc"), Some("ascending")),
                        Some((_, true)) => (key.to_owned(), Some("descending")),
                        None => (key.to_owned(), None),
                    };
                    (Some(list_state.href(&next, "", &[])), aria)
                }
                None => (None, None),
            };
            Header {
                key: c,
                label: column_label(&chrome, c),
                href,
                aria_sort,
            }
        })
        .collect();

    let sort_for_links = order_by.clone();
    let next_href = (!answer.next_page_token.is_empty()).then(|| {
        let mut prev = list_state.prev.clone();
        prev.push(list_state.page.clone());
        if prev.len() > PREV_MAX {
            prev.remove(0);
        }
        list_state.href(&sort_for_links, &answer.next_page_token, &prev)
    });
    let prev_href = (!list_state.page.is_empty()).then(|| {
        let mut prev = list_state.prev.clone();
        let page = prev.pop().unwrap_or_default();
        list_state.href(&sort_for_links, &page, &prev)
    });
    let first_href = (list_state.prev.len() > 1
        || (list_state.prev.is_empty() && !list_state.page.is_empty()))
    .then(|| list_state.href(&sort_for_links, "", &[]));
    let can_connect = signed.session.admin
        || rows.iter().any(|r| r.modify)
        || (rows.is_empty() && composed_is_empty(&list_state) && list_state.page.is_empty());
    let table = Table {
        headers,
        rows,
        caption: if answer.total_size_is_estimate {
            chrome.tn("mailboxes-total-about", "count", answer.total_size)
        } else {
            chrome.tn("mailboxes-total", "count", answer.total_size)
        },
        next_href,
        prev_href,
        first_href,
        back: list_state.href(&sort_for_links, &list_state.page, &list_state.prev),
    };
    let status = if failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    timing.mark("rows");
    if signed.ctx.fragment.as_deref() == Some(TABLE_ID) && !failed {
        let response = render(&TableFragment { chrome, table })?;
        timing.mark("render");
        return Ok(timing.apply(response));
    }
    let chosen = COLUMNS
        .iter()
        .map(|c| (*c, column_label(&chrome, c), columns.contains(c)))
        .collect();
    let response = render_status(
        status,
        &ListPage {
            chrome,
            state: list_state,
            errors,
            table,
            chosen,
            can_connect,
        },
    )?;
    timing.mark("render");
    Ok(timing.apply(response))
}

fn composed_is_empty(state: &ListState) -> bool {
    state.field_pairs().is_empty()
}

/// A local `/mailboxes…` address to come back to, else the list.
fn back_of(form: &Pairs) -> String {
    let back = form.get("back");
    match crate::util::safe_next(&back) {
        Some(b) if b == "/mailboxes" || b.starts_with("/mailboxes?") => b.to_owned(),
        _ => "/mailboxes".into(),
    }
}

/// `back` with `?notice=key` (any earlier notice dropped).
fn with_notice(back: &str, key: &str) -> String {
    let (path, query) = back.split_once('?').unwrap_or((back, ""));
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    pairs.retain(|(k, _)| k != "notice");
    pairs.push(("notice".into(), key.into()));
    format!(
        "{path}?{}",
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    )
}

#[tracing::instrument(skip_all)]
async fn save_view(
    State(state): State<AppState>,
    signed: SignedIn,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = Pairs::parse(&body);
    let back = back_of(&form);
    let mut view = list_view(&signed).await?;
    let picked = form.all("col");
    let mut columns: Vec<String> = COLUMNS
        .iter()
        .filter(|c| picked.iter().any(|p| p == *c))
        .map(|c| (*c).to_owned())
        .collect();
    if !columns.iter().any(|c| c == "email") {
        columns.insert(0, "email".into());
    }
    view.columns = columns;
    let saved = signed
        .clients
        .mailboxes
        .call(
            pb::UpdateListViewRequest { view: Some(view) },
            |mut raw, request| async move { raw.update_list_view(request).await },
        )
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    keep_view(&state, &signed, &saved).await;
    Ok(see_other(&with_notice(&back, "columns-saved")))
}

#[tracing::instrument(skip_all)]
async fn sync_now(
    signed: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    request_sync(signed, id, body).await
}

/// "Sync now" from the list: the one form of the table, the row's id in `id`.
#[tracing::instrument(skip_all)]
async fn sync_now_of_row(signed: SignedIn, body: Bytes) -> Result<Response, WebError> {
    let id = Pairs::parse(&body).get("id");
    request_sync(signed, id, body).await
}

async fn request_sync(signed: SignedIn, id: String, body: Bytes) -> Result<Response, WebError> {
    let form = Pairs::parse(&body);
    let back = back_of(&form);
    signed
        .clients
        .mailboxes
        .call(
            pb::SyncMailboxNowRequest { id },
            |mut raw, request| async move { raw.sync_mailbox_now(request).await },
        )
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    Ok(see_other(&with_notice(&back, "sync-queued")))
}

async fn get_mailbox(signed: &SignedIn, id: &str) -> Result<pb::Mailbox, WebError> {
    signed
        .clients
        .mailboxes
        .call(
            pb::GetMailboxRequest { id: id.to_owned() },
            |mut raw, request| async move { raw.get_mailbox(request).await },
        )
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))
}

/// A server's settings as the forms show them.
#[derive(Debug, Clone, Default, PartialEq)]
struct ServerForm {
    host: String,
    port: String,
    security: String,
    username: String,
}

impl ServerForm {
    fn of(s: Option<&pb::ServerSettings>) -> ServerForm {
        let Some(s) = s else {
            return ServerForm::default();
        };
        ServerForm {
            host: s.host.clone(),
            port: if s.port > 0 {
                s.port.to_string()
            } else {
                String::new()
            },
            security: match pb::Security::try_from(s.security).unwrap_or(pb::Security::Tls) {
                pb::Security::None => "none",
                pb::Security::Starttls => "starttls",
                _ => "tls",
            }
            .into(),
            username: s.username.clone(),
        }
    }

    fn from_form(form: &Pairs, prefix: &str) -> ServerForm {
        ServerForm {
            host: form.get(&format!("{prefix}_host")).trim().to_owned(),
            port: form.get(&format!("{prefix}_port")).trim().to_owned(),
            security: form.get(&format!("{prefix}_security")),
            username: form.get(&format!("{prefix}_username")).trim().to_owned(),
        }
    }

    fn defaults(port: &str) -> ServerForm {
        ServerForm {
            port: port.into(),
            security: "tls".into(),
            ..Default::default()
        }
    }

    fn to_proto(&self) -> pb::ServerSettings {
        pb::ServerSettings {
            host: self.host.clone(),
            port: self.port.parse().unwrap_or(0),
            security: match self.security.as_str() {
                "none" => pb::Security::None,
                "starttls" => pb::Security::Starttls,
                _ => pb::Security::Tls,
            } as i32,
            username: self.username.clone(),
        }
    }

    fn is(&self, value: &str) -> bool {
        self.security == value
    }
}

#[derive(Template)]
#[template(path = "mailboxes/edit.html")]
struct EditPage {
    chrome: Chrome,
    id: String,
    email: String,
    name: String,
    sender_name: String,
    imap: ServerForm,
    smtp: ServerForm,
    in_crm: bool,
    queue: String,
    error: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn edit_page(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let m = get_mailbox(&signed, &id).await?;
    let queue_ids = m
        .crm
        .as_ref()
        .map(|c| c.queue_user_ids.clone())
        .unwrap_or_default();
    let queue = queue_emails(&signed, &queue_ids).await.join("\n");
    let chrome = Chrome::signed_in(&state, &signed).await;
    render(&EditPage {
        chrome,
        id,
        email: m.email.clone(),
        name: m.name.clone(),
        sender_name: m.sender_name.clone(),
        imap: ServerForm::of(m.imap.as_ref()),
        smtp: ServerForm::of(m.smtp.as_ref()),
        in_crm: m.crm.as_ref().is_some_and(|c| c.in_crm),
        queue,
        error: None,
    })
}

/// The queue's people by login address (their id when identity does not answer).
async fn queue_emails(signed: &SignedIn, ids: &[String]) -> Vec<String> {
    let lookups = ids.iter().map(|id| async move {
        let message = ipb::GetUserRequest { id: id.clone() };
        signed
            .clients
            .identity
            .call(message, |mut raw, request| async move {
                raw.get_user(request).await
            })
            .await
            .map(|u| u.login_email)
            .unwrap_or_else(|_| id.clone())
    });
    futures::future::join_all(lookups).await
}

#[tracing::instrument(skip_all)]
async fn edit(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = Pairs::parse(&body);
    let current = get_mailbox(&signed, &id).await?;
    let name = form.get("name").trim().to_owned();
    let sender_name = form.get("sender_name").trim().to_owned();
    let imap = ServerForm::from_form(&form, "imap");
    let smtp = ServerForm::from_form(&form, "smtp");
    let password = form.get("password");
    let in_crm = form.get("in_crm") == "on";
    let queue_text = form.get("queue");
    let chrome = Chrome::signed_in(&state, &signed).await;
    let again = |chrome: Chrome, error: String| EditPage {
        chrome,
        id: id.clone(),
        email: current.email.clone(),
        name: name.clone(),
        sender_name: sender_name.clone(),
        imap: imap.clone(),
        smtp: smtp.clone(),
        in_crm,
        queue: queue_text.clone(),
        error: Some(error),
    };
    let mut queue = Vec::new();
    for line in queue_text
        .split(['\n', ','])
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        match resolve_user(&signed, line).await? {
            Some(uid) => queue.push(uid),
            None => {
                let message = chrome.ts("mailboxes-nobody-with", "address", line);
                return render_status(StatusCode::UNPROCESSABLE_ENTITY, &again(chrome, message));
            }
        }
    }
    let mut mask = Vec::new();
    if name != current.name {
        mask.push("name");
    }
    if sender_name != current.sender_name {
        mask.push("sender_name");
    }
    if imap != ServerForm::of(current.imap.as_ref()) {
        mask.push("imap");
    }
    if smtp != ServerForm::of(current.smtp.as_ref()) {
        mask.push("smtp");
    }
    if !password.is_empty() {
        mask.push("password");
    }
    let old_crm = current.crm.clone().unwrap_or_default();
    if old_crm.in_crm != in_crm || old_crm.queue_user_ids != queue {
        mask.push("crm");
    }
    if mask.is_empty() {
        return Ok(see_other("/mailboxes?notice=nothing-changed"));
    }
    let message = pb::UpdateMailboxRequest {
        mailbox: Some(pb::Mailbox {
            id: id.clone(),
            name: name.clone(),
            sender_name: sender_name.clone(),
            imap: Some(imap.to_proto()),
            smtp: Some(smtp.to_proto()),
            crm: Some(pb::CrmSettings {
                in_crm,
                queue_user_ids: queue,
            }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: mask.iter().map(|p| (*p).to_owned()).collect(),
        }),
        password,
    };
    match signed
        .clients
        .mailboxes
        .call(message, |mut raw, request| async move {
            raw.update_mailbox(request).await
        })
        .await
    {
        Ok(_) => Ok(see_other("/mailboxes?notice=mailbox-saved")),
        Err(e) if is_fixable(&e) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &again(chrome, e.sentence()),
        ),
        Err(e) => Err(WebError::from_peer(e, &signed.ctx.path)),
    }
}

/// A refusal the person can act on in the same form.
fn is_fixable(e: &mailroom_clients::PeerError) -> bool {
    matches!(
        e.code(),
        Some(
            tonic::Code::InvalidArgument
                | tonic::Code::FailedPrecondition
                | tonic::Code::AlreadyExists
                | tonic::Code::OutOfRange
        )
    )
}

#[derive(Template)]
#[template(path = "mailboxes/transfer.html")]
struct TransferPage {
    chrome: Chrome,
    id: String,
    email: String,
    owner: String,
    new_owner: String,
    error: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn transfer_page(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let m = get_mailbox(&signed, &id).await?;
    let chrome = Chrome::signed_in(&state, &signed).await;
    render(&TransferPage {
        chrome,
        id,
        email: m.email,
        owner: m.owner_display_name,
        new_owner: String::new(),
        error: None,
    })
}

#[tracing::instrument(skip_all)]
async fn transfer(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = Pairs::parse(&body);
    let new_owner = form.get("new_owner").trim().to_owned();
    let m = get_mailbox(&signed, &id).await?;
    let chrome = Chrome::signed_in(&state, &signed).await;
    let again = |chrome: Chrome, error: String| TransferPage {
        chrome,
        id: id.clone(),
        email: m.email.clone(),
        owner: m.owner_display_name.clone(),
        new_owner: new_owner.clone(),
        error: Some(error),
    };
    let Some(user) = resolve_user(&signed, &new_owner).await? else {
        let message = chrome.ts("mailboxes-nobody-with", "address", &new_owner);
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &again(chrome, message));
    };
    let message = pb::TransferMailboxRequest {
        id: id.clone(),
        new_owner_user_id: user,
    };
    match signed
        .clients
        .mailboxes
        .call(message, |mut raw, request| async move {
            raw.transfer_mailbox(request).await
        })
        .await
    {
        Ok(_) => Ok(see_other("/mailboxes?notice=transferred")),
        Err(e) if is_fixable(&e) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &again(chrome, e.sentence()),
        ),
        Err(e) => Err(WebError::from_peer(e, &signed.ctx.path)),
    }
}

#[derive(Template)]
#[template(path = "mailboxes/disconnect.html")]
struct DisconnectPage {
    chrome: Chrome,
    id: String,
    email: String,
}

#[tracing::instrument(skip_all)]
async fn disconnect_page(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let m = get_mailbox(&signed, &id).await?;
    let chrome = Chrome::signed_in(&state, &signed).await;
    render(&DisconnectPage {
        chrome,
        id,
        email: m.email,
    })
}

#[tracing::instrument(skip_all)]
async fn disconnect(signed: SignedIn, Path(id): Path<String>) -> Result<Response, WebError> {
    signed
        .clients
        .mailboxes
        .call(
            pb::DisconnectMailboxRequest { id },
            |mut raw, request| async move { raw.disconnect_mailbox(request).await },
        )
        .await
        .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
    Ok(see_other("/mailboxes?notice=disconnected"))
}

#[derive(Template)]
#[template(path = "mailboxes/connect.html")]
struct ConnectPage {
    chrome: Chrome,
    email: String,
    owner: String,
    name: String,
    sender_name: String,
    imap: ServerForm,
    smtp: ServerForm,
    error: Option<String>,
    checked: bool,
}

#[tracing::instrument(skip_all)]
async fn connect_page(
    State(state): State<AppState>,
    signed: SignedIn,
) -> Result<Response, WebError> {
    let chrome = Chrome::signed_in(&state, &signed).await;
    render(&ConnectPage {
        chrome,
        email: String::new(),
        owner: String::new(),
        name: String::new(),
        sender_name: String::new(),
        imap: ServerForm::defaults("993"),
        smtp: ServerForm::defaults("465"),
        error: None,
        checked: false,
    })
}

#[tracing::instrument(skip_all)]
async fn connect(
    State(state): State<AppState>,
    signed: SignedIn,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = Pairs::parse(&body);
    let chrome = Chrome::signed_in(&state, &signed).await;
    let check_only = form.get("check") == "1";
    let mut page = ConnectPage {
        chrome,
        email: form.get("email").trim().to_owned(),
        owner: form.get("owner").trim().to_owned(),
        name: form.get("name").trim().to_owned(),
        sender_name: form.get("sender_name").trim().to_owned(),
        imap: ServerForm::from_form(&form, "imap"),
        smtp: ServerForm::from_form(&form, "smtp"),
        error: None,
        checked: false,
    };
    let owner = match resolve_user(&signed, &page.owner).await? {
        Some(id) => id,
        None if page.owner.is_empty() => String::new(),
        None => {
            page.error = Some(
                page.chrome
                    .ts("mailboxes-nobody-with", "address", &page.owner),
            );
            return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    let message = pb::ConnectMailboxRequest {
        mailbox: Some(pb::Mailbox {
            email: page.email.clone(),
            owner_user_id: owner,
            name: page.name.clone(),
            sender_name: page.sender_name.clone(),
            imap: Some(page.imap.to_proto()),
            smtp: Some(page.smtp.to_proto()),
            ..Default::default()
        }),
        password: form.get("password"),
        validate_only: check_only,
    };
    match signed
        .clients
        .mailboxes
        .call(message, |mut raw, request| async move {
            raw.connect_mailbox(request).await
        })
        .await
    {
        Ok(_) if check_only => {
            page.checked = true;
            render(&page)
        }
        Ok(_) => Ok(see_other("/mailboxes?notice=connected")),
        Err(e) if is_fixable(&e) || e.code() == Some(tonic::Code::PermissionDenied) => {
            page.error = Some(e.sentence());
            render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(e) => Err(WebError::from_peer(e, &signed.ctx.path)),
    }
}

/// One line's outcome of connecting several.
struct ManyResult {
    email: String,
    ok: bool,
    step: String,
    error: String,
}

#[derive(Template)]
#[template(path = "mailboxes/connect_many.html")]
struct ConnectManyPage {
    chrome: Chrome,
    lines: String,
    imap: ServerForm,
    smtp: ServerForm,
    error: Option<String>,
    results: Vec<ManyResult>,
    checked: bool,
    /// The lines were written back without their passwords: ask for them again.
    passwords_cleared: bool,
}

/// `text`'s lines as written back into the page: address and owner, never the password
/// (the second word), so no password ever reaches the HTML.
fn lines_without_passwords(text: &str) -> String {
    text.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words.as_slice() {
                [] => None,
                [email] | [email, _] => Some((*email).to_owned()),
                [email, _, owner, ..] => Some(format!("{email} {owner}")),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConnectManyPage {
    /// Shows the page again with the passwords taken out of the lines.
    fn without_passwords(&mut self) {
        self.passwords_cleared = !self.lines.trim().is_empty();
        self.lines = lines_without_passwords(&self.lines);
    }

    fn summary(&self) -> String {
        let connected = self.results.iter().filter(|r| r.ok).count() as i64;
        let key = if self.checked {
            "mailboxes-many-would"
        } else {
            "mailboxes-many-done"
        };
        self.chrome.tn(key, "count", connected)
    }
}

#[tracing::instrument(skip_all)]
async fn connect_many_page(
    State(state): State<AppState>,
    signed: SignedIn,
) -> Result<Response, WebError> {
    let chrome = Chrome::signed_in(&state, &signed).await;
    render(&ConnectManyPage {
        chrome,
        lines: String::new(),
        imap: ServerForm::defaults("993"),
        smtp: ServerForm::defaults("465"),
        error: None,
        results: Vec::new(),
        checked: false,
        passwords_cleared: false,
    })
}

fn step_label(chrome: &Chrome, step: i32) -> String {
    match pb::ConnectStep::try_from(step).unwrap_or(pb::ConnectStep::Unspecified) {
        pb::ConnectStep::Imap => "IMAP".into(),
        pb::ConnectStep::Smtp => "SMTP".into(),
        pb::ConnectStep::Request => chrome.t("mailboxes-step-request"),
        pb::ConnectStep::Unspecified => String::new(),
    }
}

#[tracing::instrument(skip_all)]
async fn connect_many(
    State(state): State<AppState>,
    signed: SignedIn,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = Pairs::parse(&body);
    let chrome = Chrome::signed_in(&state, &signed).await;
    let check_only = form.get("check") == "1";
    let mut page = ConnectManyPage {
        chrome,
        lines: form.get("lines"),
        imap: ServerForm::from_form(&form, "imap"),
        smtp: ServerForm::from_form(&form, "smtp"),
        error: None,
        results: Vec::new(),
        checked: check_only,
        passwords_cleared: false,
    };
    let lines: Vec<Vec<String>> = page
        .lines
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|w| !w.is_empty())
        .collect();
    let bad_line = lines.iter().position(|w| w.len() < 2 || w.len() > 3);
    if lines.is_empty() || lines.len() > MANY_MAX || bad_line.is_some() {
        page.error = Some(match bad_line {
            Some(i) => page
                .chrome
                .tn("mailboxes-many-bad-line", "line", i as i64 + 1),
            None => page
                .chrome
                .tn("mailboxes-many-count", "max", MANY_MAX as i64),
        });
        page.without_passwords();
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    let mut owners: HashMap<String, String> = HashMap::new();
    let mut mailboxes = Vec::with_capacity(lines.len());
    for words in &lines {
        let owner = match words.get(2) {
            Some(text) => match owners.get(text) {
                Some(id) => id.clone(),
                None => match resolve_user(&signed, text).await? {
                    Some(id) => {
                        owners.insert(text.clone(), id.clone());
                        id
                    }
                    None => {
                        page.error = Some(page.chrome.ts("mailboxes-nobody-with", "address", text));
                        page.without_passwords();
                        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
                    }
                },
            },
            None => String::new(),
        };
        mailboxes.push(pb::MailboxCredentials {
            email: words[0].clone(),
            password: words[1].clone(),
            owner_user_id: owner,
            name: String::new(),
            sender_name: String::new(),
        });
    }
    let message = pb::ConnectMailboxesRequest {
        imap: Some(page.imap.to_proto()),
        smtp: Some(page.smtp.to_proto()),
        mailboxes,
        validate_only: check_only,
    };
    match signed
        .clients
        .mailboxes
        .call(message, |mut raw, request| async move {
            raw.connect_mailboxes(request).await
        })
        .await
    {
        Ok(answer) => {
            page.results = answer
                .results
                .into_iter()
                .map(|r| ManyResult {
                    ok: r.error.is_empty() && r.mailbox.is_some(),
                    step: step_label(&page.chrome, r.failed_step),
                    email: r.email,
                    error: r.error,
                })
                .collect();
            // The passwords are never written back into the page.
            page.lines = String::new();
            render(&page)
        }
        Err(e) if is_fixable(&e) || e.code() == Some(tonic::Code::PermissionDenied) => {
            page.error = Some(e.sentence());
            page.without_passwords();
            render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(e) => Err(WebError::from_peer(e, &signed.ctx.path)),
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/mailboxes", get(list))
        .route("/mailboxes/view", post(save_view))
        .route("/mailboxes/connect", get(connect_page).post(connect))
        .route(
            "/mailboxes/connect/many",
            get(connect_many_page).post(connect_many),
        )
        .route("/mailboxes/sync", post(sync_now_of_row))
        .route("/mailboxes/{id}/sync", post(sync_now))
        .route("/mailboxes/{id}/edit", get(edit_page).post(edit))
        .route(
            "/mailboxes/{id}/transfer",
            get(transfer_page).post(transfer),
        )
        .route(
            "/mailboxes/{id}/disconnect",
            get(disconnect_page).post(disconnect),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_written_back_never_hold_a_password() {
        let text = "anna@example.com s3cret boss@example.com\n\n  boris@example.com hunter2  \nbad\nx@example.com p owner@example.com extra";
        let back = lines_without_passwords(text);
        assert_eq!(
            back,
            "anna@example.com boss@example.com\nboris@example.com\nbad\nx@example.com owner@example.com"
        );
        assert!(!back.contains("s3cret") && !back.contains("hunter2"));
    }

    #[test]
    fn the_query_is_the_state_and_links_keep_it() {
        let q = Pairs::parse(b"address=ann&crm=yes&sort=email+desc&page=T2&prev=&prev=T1");
        let s = ListState::from_pairs(&q);
        assert_eq!(s.fields.address, "ann");
        assert_eq!(s.sort, "email desc");
        assert_eq!(s.prev, vec!["".to_owned(), "T1".to_owned()]);
        assert_eq!(
            s.href("email", "", &[]),
            "/mailboxes?address=ann&crm=yes&sort=email"
        );
        assert_eq!(
            s.href("email", "T3", &["".into(), "T1".into()]),
            "/mailboxes?address=ann&crm=yes&sort=email&page=T3&prev=&prev=T1"
        );
        assert_eq!(ListState::default().href("", "", &[]), "/mailboxes");
    }

    #[test]
    fn the_previous_stack_is_bounded() {
        let mut query = String::from("page=X");
        for i in 0..50 {
            query.push_str(&format!("&prev=P{i}"));
        }
        let s = ListState::from_pairs(&Pairs::parse(query.as_bytes()));
        assert_eq!(s.prev.len(), PREV_MAX);
    }

    #[test]
    fn forms_come_back_only_to_the_list() {
        let back = |v: &str| back_of(&Pairs(vec![("back".into(), v.into())]));
        assert_eq!(back("/mailboxes?sort=email"), "/mailboxes?sort=email");
        assert_eq!(back("//evil.example/mailboxes"), "/mailboxes");
        assert_eq!(back("/people"), "/mailboxes");
        assert_eq!(back("/mailboxesx"), "/mailboxes");
        assert_eq!(
            with_notice("/mailboxes?sort=email&notice=old", "sync-queued"),
            "/mailboxes?sort=email&notice=sync-queued"
        );
        assert_eq!(
            with_notice("/mailboxes", "sync-queued"),
            "/mailboxes?notice=sync-queued"
        );
    }

    #[test]
    fn the_address_column_is_always_shown() {
        assert_eq!(
            known_columns(&["disk_mb".into(), "bogus".into(), "employee".into()]),
            vec!["email", "employee", "disk_mb"]
        );
    }

    #[test]
    fn the_unread_badge_speaks_russian_plurals() {
        use crate::i18n::{Arg, Locale};
        let ru = |n: i64| Locale::Ru.t_args("mailboxes-unread", &[("count", Arg::Num(n))]);
        assert_eq!(ru(1), "1 непрочитанное письмо");
        assert_eq!(ru(3), "3 непрочитанных письма");
        assert_eq!(ru(12), "12 непрочитанных писем");
        assert_eq!(ru(21), "21 непрочитанное письмо");
        let en = Locale::En.t_args("mailboxes-unread", &[("count", Arg::Num(12))]);
        assert_eq!(en, "12 unread");
        let total = Locale::Ru.t_args("mailboxes-total-about", &[("count", Arg::Num(200_000))]);
        assert!(total.starts_with("Около"), "{total}");
    }

    #[test]
    fn a_kept_view_comes_back_as_it_was_and_rubbish_is_no_guess() {
        let view = pb::ListView {
            columns: vec!["email".into(), "disk_mb".into()],
            filter: r#"name = "a\"b""#.into(),
            order_by: "email desc".into(),
            page_size: 25,
        };
        let text = KeptView::encode(&view).unwrap();
        assert_eq!(KeptView::decode(&text), Some(view));
        assert_eq!(KeptView::decode("{not json"), None);
    }

    #[test]
    fn a_row_offers_what_its_scope_covers() {
        let (me, other) = (UserId::new(), UserId::new());
        let (mine, granted, theirs) = (MailboxId::new(), MailboxId::new(), MailboxId::new());
        let row = |id: MailboxId, owner: UserId| pb::Mailbox {
            id: id.to_string(),
            owner_user_id: owner.to_string(),
            ..Default::default()
        };
        let scopes = RowScopes {
            modify: Some(Reach::of(MailboxScope::Some {
                owners: vec![me],
                mailboxes: vec![],
            })),
            sync: Some(Reach::of(MailboxScope::WholeOrganization)),
            read: Some(Reach::of(MailboxScope::Some {
                owners: vec![me],
                mailboxes: vec![granted],
            })),
        };
        assert_eq!(scopes.of_row(&row(mine, me)), (true, true, true));
        assert_eq!(scopes.of_row(&row(granted, other)), (false, true, true));
        assert_eq!(scopes.of_row(&row(theirs, other)), (false, true, false));
        // A scope access control did not give offers nothing.
        let unknown = RowScopes::default();
        assert_eq!(unknown.of_row(&row(mine, me)), (false, false, false));
    }

    #[test]
    fn templates_have_no_inline_script_or_style() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/mailboxes");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.contains("style="), "{path:?}");
            assert!(!text.contains("<script"), "{path:?}");
        }
    }
}
