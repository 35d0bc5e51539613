//! Mail, for those with a grant (part C, design §4.4): a mailbox's folders and messages
//! (`/mailboxes/{id}/mail`: unread first, then the rest, each paged), one message
//! (`…/{folder}/{uid}`: its headers and its body in a sandboxed frame), the frame itself
//! (`…/frame`, sanitised by [`crate::mail_render`] and served under its own strict CSP), the
//! message's inline images (`…/part/{n}`, image parts only) and "show remote images"
//! (`POST …/images`, for that one view).
//!
//! Reading needs `mailbox.read_mail` (the owner, or someone the owner's admin granted):
//! sync refuses everyone else with PERMISSION_DENIED, which becomes the 403 page "reading this
//! mailbox needs a grant from its owner" — an admin or supervisor who may only view the
//! mailbox included.
//!
//! Each GetMessageBody logs in to the mail server and sync bounds them per person (a few at
//! once, some a minute), so the page, its frame and its images share one fetch: bodies are
//! kept here for a minute per person and message ([`BodyCache`], small and bounded; a miss
//! only fetches again).
//!
//! The cache is per process and is not told of revoked grants; it is safe because an entry
//! is keyed by the session's user id (with mailbox, folder and uid), so nobody is served
//! another person's fetch, and lives at most `BODY_TTL` (60 s) from its fetch (expired
//! entries are dropped on every lookup, never refreshed by a hit). So a reader whose grant
//! was revoked can be shown a body they fetched in the last minute for at most that minute;
//! after it, sync decides again (PERMISSION_DENIED → the 403 page).
//!
//! Mailbox ids in paths must be UUIDs (anything else is the 404 page).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use mailroom_proto::mailboxes::v1 as mpb;
use mailroom_proto::sync::v1 as pb;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::auth::SignedIn;
use crate::errors::WebError;
use crate::mail_render;
use crate::page::{render, Chrome};
use crate::state::AppState;
use crate::util::hmac_b64;

/// Messages per section page.
const PAGE_SIZE: i32 = 25;

/// How long a fetched body is kept for its frame and images.
const BODY_TTL: Duration = Duration::from_secs(60);
/// Bodies kept at once (the oldest go first).
const BODY_ENTRIES: usize = 16;
/// Bodies larger than this are not kept (fetched again for their frame).
const BODY_KEEP_MAX: usize = 4 * 1024 * 1024;

/// What a path segment may carry as is; the rest is percent-encoded (a folder named
/// `Archive/2024` stays one segment).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

fn seg(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

fn query_value(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// `folder = "X"` with X quoted as AIP-160 reads it.
fn folder_filter(folder: &str) -> String {
    let quoted = folder.replace('\\', "\\\\").replace('"', "\\\"");
    format!("folder = \"{quoted}\"")
}

/// The needs-a-grant page for a refusal to read; other failures as usual.
fn read_error(signed: &SignedIn, error: mailroom_clients::PeerError) -> WebError {
    match WebError::from_peer(error, &signed.ctx.path) {
        WebError::Forbidden { .. } => WebError::Forbidden {
            message: signed.ctx.locale.t("mail-needs-grant"),
        },
        other => other,
    }
}

// ---------------------------------------------------------------------------------------
// The body cache.

type BodyKey = (String, String, String, u32);

struct Cached {
    at: Instant,
    body: Arc<tokio::sync::OnceCell<Arc<Vec<u8>>>>,
}

/// Bodies fetched in the last minute, by person and message; one fetch for concurrent
/// requests of the same message (the page, its frame, its images).
#[derive(Default)]
struct BodyCache {
    entries: Mutex<HashMap<BodyKey, Cached>>,
}

fn bodies() -> &'static BodyCache {
    static CACHE: OnceLock<BodyCache> = OnceLock::new();
    CACHE.get_or_init(BodyCache::default)
}

impl BodyCache {
    fn slot(&self, key: &BodyKey) -> Arc<tokio::sync::OnceCell<Arc<Vec<u8>>>> {
        let mut entries = match self.entries.lock() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        entries.retain(|_, c| now.duration_since(c.at) < BODY_TTL);
        if let Some(c) = entries.get(key) {
            return c.body.clone();
        }
        while entries.len() >= BODY_ENTRIES {
            let oldest = entries
                .iter()
                .min_by_key(|(_, c)| c.at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => entries.remove(&k),
                None => break,
            };
        }
        let cell = Arc::new(tokio::sync::OnceCell::new());
        entries.insert(
            key.clone(),
            Cached {
                at: now,
                body: cell.clone(),
            },
        );
        cell
    }

    fn forget(&self, key: &BodyKey) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }
}

/// The raw message, from the cache or GetMessageBody as the person.
async fn raw_body(
    signed: &SignedIn,
    mailbox: &str,
    folder: &str,
    uid: u32,
) -> Result<Arc<Vec<u8>>, WebError> {
    let key: BodyKey = (
        signed.session.user_id.to_string(),
        mailbox.to_owned(),
        folder.to_owned(),
        uid,
    );
    let cache = bodies();
    let slot = cache.slot(&key);
    let fetched = slot
        .get_or_try_init(|| async {
            let message = pb::GetMessageBodyRequest {
                mailbox_id: mailbox.to_owned(),
                folder: folder.to_owned(),
                uid,
            };
            signed
                .clients
                .sync
                .call(message, |mut raw, request| async move {
                    raw.get_message_body(request).await
                })
                .await
                .map(|b| Arc::new(b.raw))
        })
        .await;
    match fetched {
        Ok(body) => {
            if body.len() > BODY_KEEP_MAX {
                cache.forget(&key);
            }
            Ok(body.clone())
        }
        Err(err) => {
            cache.forget(&key);
            Err(read_error(signed, err))
        }
    }
}

// ---------------------------------------------------------------------------------------
// The list.

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    folder: Option<String>,
    /// `1`: unread only.
    #[serde(default)]
    unread: Option<String>,
    /// The unread section's page token.
    #[serde(default)]
    u: Option<String>,
    /// The read section's page token.
    #[serde(default)]
    r: Option<String>,
}

struct FolderLink {
    name: String,
    href: String,
    unseen: i64,
    current: bool,
}

struct Row {
    href: String,
    from: String,
    subject: String,
    date: Option<prost_types::Timestamp>,
    unseen: bool,
}

struct Section {
    /// The element id (and the fragment a script may ask for).
    id: &'static str,
    heading_key: &'static str,
    rows: Vec<Row>,
    next_href: Option<String>,
    first_href: Option<String>,
}

#[derive(Template)]
#[template(path = "mail/list.html")]
struct ListPage {
    chrome: Chrome,
    mailbox_email: String,
    folder: String,
    folders: Vec<FolderLink>,
    unread_only: bool,
    sections: Vec<Section>,
    list_action: String,
    last_sync: Option<prost_types::Timestamp>,
}

impl ListPage {
    fn is_empty(&self) -> bool {
        self.sections.iter().all(|s| s.rows.is_empty())
    }
}

fn list_href(id: &str, folder: &str, unread_only: bool, u: &str, r: &str) -> String {
    let mut href = format!("/mailboxes/{}/mail?folder={}", seg(id), query_value(folder));
    if unread_only {
        href.push_str("&unread=1");
    }
    if !u.is_empty() {
        href.push_str(&format!("&u={}", query_value(u)));
    }
    if !r.is_empty() {
        href.push_str(&format!("&r={}", query_value(r)));
    }
    href
}

fn message_href(id: &str, folder: &str, uid: u32) -> String {
    format!("/mailboxes/{}/mail/{}/{uid}", seg(id), seg(folder))
}

fn sender(m: &pb::MessageSummary) -> String {
    m.from
        .iter()
        .map(|a| {
            if a.name.trim().is_empty() {
                a.email.clone()
            } else {
                a.name.trim().to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn list_section(
    signed: &SignedIn,
    id: &str,
    folder: &str,
    unseen: bool,
    token: &str,
) -> Result<pb::ListMessagesResponse, WebError> {
    let message = pb::ListMessagesRequest {
        mailbox_id: id.to_owned(),
        page_size: PAGE_SIZE,
        page_token: token.to_owned(),
        filter: format!("{} AND unseen = {unseen}", folder_filter(folder)),
        order_by: "internal_date desc".into(),
    };
    signed
        .clients
        .sync
        .call(message, |mut raw, request| async move {
            raw.list_messages(request).await
        })
        .await
        .map_err(|e| read_error(signed, e))
}

#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, WebError> {
    let id = mailbox_id(&id)?;
    let next = signed.ctx.path.clone();
    let status_call = signed.clients.sync.call(
        pb::GetSyncStatusRequest {
            mailbox_id: id.clone(),
        },
        |mut raw, request| async move { raw.get_sync_status(request).await },
    );
    let mailbox_call = signed.clients.mailboxes.call(
        mpb::GetMailboxRequest { id: id.clone() },
        |mut raw, request| async move { raw.get_mailbox(request).await },
    );
    let (status, mailbox) = tokio::join!(status_call, mailbox_call);
    let status = status.map_err(|e| WebError::from_peer(e, &next))?;
    let mailbox = mailbox.map_err(|e| WebError::from_peer(e, &next))?;

    let folder = query
        .folder
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .unwrap_or("INBOX")
        .to_owned();
    let unread_only = query.unread.as_deref() == Some("1");
    let u = query.u.clone().unwrap_or_default();
    let r = query.r.clone().unwrap_or_default();

    // Both sections at once: neither waits for the other.
    let (unread, read) = tokio::join!(list_section(&signed, &id, &folder, true, &u), async {
        if unread_only {
            Ok(None)
        } else {
            list_section(&signed, &id, &folder, false, &r)
                .await
                .map(Some)
        }
    });
    let (unread, read) = (unread?, read?);

    let rows = |messages: &[pb::MessageSummary]| -> Vec<Row> {
        messages
            .iter()
            .map(|m| Row {
                href: message_href(&id, &m.folder, m.uid),
                from: sender(m),
                subject: m.subject.clone(),
                date: m.internal_date,
                unseen: !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")),
            })
            .collect()
    };
    let mut sections = vec![Section {
        id: "mail-unread",
        heading_key: "mail-section-unread",
        rows: rows(&unread.messages),
        next_href: (!unread.next_page_token.is_empty())
            .then(|| list_href(&id, &folder, unread_only, &unread.next_page_token, &r)),
        first_href: (!u.is_empty()).then(|| list_href(&id, &folder, unread_only, "", &r)),
    }];
    if let Some(read) = read {
        sections.push(Section {
            id: "mail-read",
            heading_key: "mail-section-read",
            rows: rows(&read.messages),
            next_href: (!read.next_page_token.is_empty())
                .then(|| list_href(&id, &folder, false, &u, &read.next_page_token)),
            first_href: (!r.is_empty()).then(|| list_href(&id, &folder, false, &u, "")),
        });
    }

    let mut folders: Vec<FolderLink> = status
        .folders
        .iter()
        .map(|f| FolderLink {
            href: list_href(&id, &f.name, unread_only, "", ""),
            current: f.name.eq_ignore_ascii_case(&folder) || f.imap_name == folder,
            unseen: f.unseen,
            name: f.name.clone(),
        })
        .collect();
    if folders.is_empty() {
        folders.push(FolderLink {
            href: list_href(&id, "INBOX", unread_only, "", ""),
            current: folder.eq_ignore_ascii_case("INBOX"),
            unseen: 0,
            name: "INBOX".into(),
        });
    }
    // INBOX first, the rest as the server lists them.
    folders.sort_by_key(|f| !f.name.eq_ignore_ascii_case("INBOX"));

    let chrome = Chrome::signed_in(&state, &signed).await;
    render(&ListPage {
        chrome,
        mailbox_email: mailbox.email,
        folder,
        folders,
        unread_only,
        sections,
        list_action: format!("/mailboxes/{}/mail", seg(&id)),
        last_sync: status.last_sync_time,
    })
}

// ---------------------------------------------------------------------------------------
// One message.

#[derive(Template)]
#[template(path = "mail/message.html")]
struct MessagePage {
    chrome: Chrome,
    back_href: String,
    folder: String,
    subject: String,
    from: String,
    to: String,
    cc: String,
    date: Option<prost_types::Timestamp>,
    frame_src: String,
    images_action: String,
    remote_images_blocked: i64,
    images_shown: bool,
}

#[derive(Debug, Deserialize)]
struct MessagePath {
    id: String,
    folder: String,
    uid: String,
}

/// A mailbox id from the path, in its canonical form; anything that is not a UUID is the
/// 404 page before any service is asked.
fn mailbox_id(raw: &str) -> Result<String, WebError> {
    uuid::Uuid::parse_str(raw)
        .map(|id| id.to_string())
        .map_err(|_| WebError::NotFound)
}

impl MessagePath {
    /// The path with its mailbox id checked ([`mailbox_id`]).
    fn checked(mut self) -> Result<Self, WebError> {
        self.id = mailbox_id(&self.id)?;
        Ok(self)
    }

    fn uid(&self) -> Result<u32, WebError> {
        self.uid.parse().map_err(|_| WebError::NotFound)
    }

    fn base(&self, uid: u32) -> String {
        message_href(&self.id, &self.folder, uid)
    }
}

/// The token that lets one frame response show remote images: bound to the session and the
/// message, so a link cannot turn them on.
fn images_token(state: &AppState, signed: &SignedIn, p: &MessagePath, uid: u32) -> String {
    hmac_b64(
        &state.csrf_key,
        format!(
            "mail-images\0{}\0{}\0{}\0{uid}",
            signed.session.key, p.id, p.folder
        )
        .as_bytes(),
    )
}

async fn message_page(
    state: &AppState,
    signed: SignedIn,
    p: MessagePath,
    show_images: bool,
) -> Result<Response, WebError> {
    let p = p.checked()?;
    let uid = p.uid()?;
    let raw = raw_body(&signed, &p.id, &p.folder, uid).await?;
    let base = p.base(uid);
    let chrome = Chrome::signed_in(state, &signed).await;
    let (headers, rendered) = match mail_render::parse(&raw) {
        Some(message) => (
            mail_render::headers(&message),
            mail_render::body(
                &message,
                &format!("{base}/part/"),
                mail_render::Options::default(),
            ),
        ),
        None => Default::default(),
    };
    let frame_src = if show_images {
        format!(
            "{base}/frame?images={}",
            query_value(&images_token(state, &signed, &p, uid))
        )
    } else {
        format!("{base}/frame")
    };
    let subject = if headers.subject.is_empty() {
        chrome.t("mail-no-subject")
    } else {
        headers.subject
    };
    render(&MessagePage {
        back_href: list_href(&p.id, &p.folder, false, "", ""),
        folder: p.folder.clone(),
        subject,
        from: headers.from.join(", "),
        to: headers.to.join(", "),
        cc: headers.cc.join(", "),
        date: headers
            .date
            .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        frame_src,
        images_action: format!("{base}/images"),
        remote_images_blocked: rendered.remote_images_blocked as i64,
        images_shown: show_images,
        chrome,
    })
}

#[tracing::instrument(skip_all)]
async fn message(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(p): Path<MessagePath>,
) -> Result<Response, WebError> {
    message_page(&state, signed, p, false).await
}

/// "Show remote images": the same page, its frame allowed to load them (this view only;
/// reloading blocks them again).
#[tracing::instrument(skip_all)]
async fn show_images(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(p): Path<MessagePath>,
) -> Result<Response, WebError> {
    message_page(&state, signed, p, true).await
}

#[derive(Debug, Default, Deserialize)]
struct FrameQuery {
    #[serde(default)]
    images: Option<String>,
}

/// A failure shown inside the frame (an error page could not be: its CSP forbids framing).
fn frame_error(signed_locale: crate::i18n::Locale, error: &WebError) -> Response {
    let key = match error {
        WebError::NotFound => "error-not-found",
        WebError::Forbidden { .. } => "mail-needs-grant",
        WebError::TooMany { .. } => "mail-frame-busy",
        WebError::SignInRequired { .. } | WebError::SessionEnded { .. } => "session-ended",
        _ => "error-unavailable",
    };
    let status = match error {
        WebError::SignInRequired { .. } | WebError::SessionEnded { .. } => StatusCode::UNAUTHORIZED,
        other => other.status(),
    };
    let text = signed_locale.t(key);
    frame_response(
        status,
        mail_render::frame_document(&format!("<p>{}</p>", mail_render::escape(&text)), &text),
        false,
    )
}

fn frame_response(status: StatusCode, html: String, images: bool) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(mail_render::frame_csp(images)),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The sanitised body, for the message page's `<iframe sandbox>`.
#[tracing::instrument(skip_all)]
async fn frame(
    State(state): State<AppState>,
    signed: Result<SignedIn, WebError>,
    Path(p): Path<MessagePath>,
    Query(q): Query<FrameQuery>,
) -> Response {
    let signed = match signed {
        Ok(s) => s,
        Err(err) => return frame_error(crate::i18n::Locale::default(), &err),
    };
    let locale = signed.ctx.locale;
    let p = match p.checked() {
        Ok(p) => p,
        Err(err) => return frame_error(locale, &err),
    };
    let uid = match p.uid() {
        Ok(uid) => uid,
        Err(err) => return frame_error(locale, &err),
    };
    let images = q.images.as_deref().is_some_and(|t| {
        bool::from(
            t.as_bytes()
                .ct_eq(images_token(&state, &signed, &p, uid).as_bytes()),
        )
    });
    let raw = match raw_body(&signed, &p.id, &p.folder, uid).await {
        Ok(raw) => raw,
        Err(err) => return frame_error(locale, &err),
    };
    let (title, body) = match mail_render::parse(&raw) {
        Some(message) => {
            let headers = mail_render::headers(&message);
            let options = mail_render::Options {
                show_remote_images: images,
                inline_images: true,
            };
            let rendered = mail_render::body(&message, &format!("{}/part/", p.base(uid)), options);
            (headers.subject, rendered.html)
        }
        None => (String::new(), String::new()),
    };
    frame_response(
        StatusCode::OK,
        mail_render::frame_document(&body, &title),
        images,
    )
}

#[derive(Debug, Deserialize)]
struct PartPath {
    id: String,
    folder: String,
    uid: String,
    n: String,
}

/// One inline image of a message (image parts only, never SVG), for the frame.
#[tracing::instrument(skip_all)]
async fn part(signed: SignedIn, Path(p): Path<PartPath>) -> Result<Response, WebError> {
    let id = mailbox_id(&p.id)?;
    let uid: u32 = p.uid.parse().map_err(|_| WebError::NotFound)?;
    let n: usize = p.n.parse().map_err(|_| WebError::NotFound)?;
    let raw = raw_body(&signed, &id, &p.folder, uid).await?;
    let message = mail_render::parse(&raw).ok_or(WebError::NotFound)?;
    let (content_type, bytes) = mail_render::image_part(&message, n).ok_or(WebError::NotFound)?;
    let content_type = HeaderValue::from_str(&content_type).map_err(|_| WebError::NotFound)?;
    let mut response = (StatusCode::OK, bytes.to_vec()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("inline"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    headers.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    Ok(response)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/mailboxes/{id}/mail", get(list))
        .route("/mailboxes/{id}/mail/{folder}/{uid}", get(message))
        .route(
            "/mailboxes/{id}/mail/{folder}/{uid}/images",
            post(show_images),
        )
        .route("/mailboxes/{id}/mail/{folder}/{uid}/frame", get(frame))
        .route("/mailboxes/{id}/mail/{folder}/{uid}/part/{n}", get(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_quoted_for_the_filter_and_kept_in_one_segment() {
        assert_eq!(folder_filter("INBOX"), r#"folder = "INBOX""#);
        assert_eq!(folder_filter(r#"a"b\c"#), r#"folder = "a\"b\\c""#);
        assert_eq!(
            message_href("m1", "Archive/2024", 7),
            "/mailboxes/m1/mail/Archive%2F2024/7"
        );
        assert_eq!(
            list_href("m1", "Sent Items", true, "T1", ""),
            "/mailboxes/m1/mail?folder=Sent%20Items&unread=1&u=T1"
        );
    }

    #[test]
    fn the_body_cache_stays_small() {
        let cache = BodyCache::default();
        for uid in 0..(BODY_ENTRIES as u32 + 5) {
            let _ = cache.slot(&("u".into(), "m".into(), "INBOX".into(), uid));
        }
        let len = cache.entries.lock().map(|e| e.len()).unwrap_or(0);
        assert!(len <= BODY_ENTRIES, "{len}");
    }
}
