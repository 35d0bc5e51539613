//! People and departments as pages look them up, once: a person's display name, every
//! department (bounded paging), a person by exact address, and the names of many people at
//! once (concurrent, capped). Errors come back as `WebError`; a page that wants its own
//! wording maps them itself.

use std::collections::{HashMap, HashSet};

use futures::stream::{self, StreamExt};
use mailroom_proto::identity::v1 as pb;
use mailroom_types::UserId;

use crate::auth::SignedIn;
use crate::errors::WebError;
use crate::filter::quote;

/// Departments asked for at once, and at most this many pages of them.
const DEPARTMENT_PAGE: i32 = 1000;
const DEPARTMENT_PAGES: usize = 20;
/// How many pages of `email : "…"` matches an exact-address lookup reads at most: identity's
/// ListUsers has only a substring filter on addresses, so the exact match may be further on.
const EMAIL_LOOKUP_PAGES: usize = 5;
/// How many `GetUser` calls a names lookup keeps in flight.
const NAME_LOOKUPS_AT_ONCE: usize = 16;

/// "Ann Lee", or the login address when the person has no name yet.
pub fn display_name(user: &pb::User) -> String {
    let name = format!("{} {}", user.first_name, user.last_name)
        .trim()
        .to_owned();
    if name.is_empty() {
        user.login_email.clone()
    } else {
        name
    }
}

/// Every department of the organisation the person may see (a few pages at most).
pub async fn all_departments(signed: &SignedIn) -> Result<Vec<pb::Department>, WebError> {
    let mut departments = Vec::new();
    let mut page_token = String::new();
    for _ in 0..DEPARTMENT_PAGES {
        let message = pb::ListDepartmentsRequest {
            page_size: DEPARTMENT_PAGE,
            page_token: page_token.clone(),
            filter: String::new(),
        };
        let answer = signed
            .clients
            .identity
            .call(message, |mut raw, request| async move {
                raw.list_departments(request).await
            })
            .await
            .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
        departments.extend(answer.departments);
        if answer.next_page_token.is_empty() {
            break;
        }
        page_token = answer.next_page_token;
    }
    Ok(departments)
}

/// The person whose login or contact address is `email` (case-insensitive), if any. A login
/// match wins over a contact match.
pub async fn find_by_email(signed: &SignedIn, email: &str) -> Result<Option<pb::User>, WebError> {
    let wanted = email.trim().to_lowercase();
    if wanted.is_empty() {
        return Ok(None);
    }
    let mut by_contact = None;
    let mut page_token = String::new();
    for _ in 0..EMAIL_LOOKUP_PAGES {
        let message = pb::ListUsersRequest {
            page_size: 100,
            page_token,
            filter: format!("email : {}", quote(&wanted)),
            order_by: String::new(),
        };
        let answer = signed
            .clients
            .identity
            .call(message, |mut raw, request| async move {
                raw.list_users(request).await
            })
            .await
            .map_err(|e| WebError::from_peer(e, &signed.ctx.path))?;
        for user in answer.users {
            if user.login_email.to_lowercase() == wanted {
                return Ok(Some(user));
            }
            if by_contact.is_none() && user.contact_email.to_lowercase() == wanted {
                by_contact = Some(user);
            }
        }
        if answer.next_page_token.is_empty() {
            break;
        }
        page_token = answer.next_page_token;
    }
    Ok(by_contact)
}

/// The display names of the distinct user `ids` (empty ones skipped, at most `cap` looked
/// up), one `GetUser` each, [`NAME_LOOKUPS_AT_ONCE`] in flight. Whoever is not found (or
/// not an id) is left out; the caller decides what to show instead.
pub async fn names_of(
    signed: &SignedIn,
    ids: impl IntoIterator<Item = String>,
    cap: usize,
) -> HashMap<String, String> {
    let mut seen = HashSet::new();
    let wanted: Vec<(String, UserId)> = ids
        .into_iter()
        .filter(|id| !id.is_empty() && seen.insert(id.clone()))
        .filter_map(|id| id.parse::<UserId>().ok().map(|uid| (id, uid)))
        .take(cap)
        .collect();
    stream::iter(wanted)
        .map(|(id, uid)| async move {
            match signed.clients.identity.user(uid).await {
                Ok(user) => Some((id, display_name(&user))),
                Err(err) => {
                    tracing::debug!(error = %err, "a person's name is unknown");
                    None
                }
            }
        })
        .buffer_unordered(NAME_LOOKUPS_AT_ONCE)
        .filter_map(|found| async move { found })
        .collect()
        .await
}
