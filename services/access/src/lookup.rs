//! Lookups: the reverse questions, from the replica's memory. Which resources a user holds a
//! permission on ([`Access::lookup_resources`]), who holds one on a resource
//! ([`Access::lookup_subjects`]), both paged from one sorted answer per walk
//! ([`crate::pages`]), and how far a mailbox permission reaches as owners and mailboxes
//! ([`Access::lookup_mailbox_scope`], which a service applies to its own rows).

use std::sync::Arc;

use mailroom_aip as aip;
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::access::v1 as pb;
use mailroom_types::{MailboxId, Permission, UserId};
use uuid::Uuid;

use crate::error::{AccessError, Result};
use crate::pages::{self, Position};
use crate::replica::State;
use crate::service::{denied, subject_org, Access};
use crate::wire::{self, Resource};

/// The page of `ids` after `after` as strings, and the token of the next page (empty on the
/// last), which carries the answer's revision.
fn cut(
    query: &str,
    ids: &[Uuid],
    after: Option<Uuid>,
    page_size: usize,
    revision: i64,
) -> (Vec<String>, String) {
    let (page, more) = pages::page(ids, after, page_size);
    let next = match (more, page.last()) {
        (true, Some(last)) => aip::encode_page_token(
            query,
            &Position::At {
                a: *last,
                r: revision,
            },
        ),
        _ => String::new(),
    };
    (page.iter().map(Uuid::to_string).collect(), next)
}

/// The most holders one LookupSubjects page carries.
pub const SUBJECTS_MAX_PAGE: i32 = 10_000;

/// The size of a LookupSubjects page. Unset (0) is the largest page, for the callers from
/// before pages: they never set a size nor follow a token, and got every holder in one
/// answer; they still do up to [`SUBJECTS_MAX_PAGE`], with a token if more follow. A caller
/// that pages sets a size.
fn subjects_page_size(requested: i32) -> Result<usize> {
    Ok(aip::page_size(requested, SUBJECTS_MAX_PAGE, SUBJECTS_MAX_PAGE)? as usize)
}

impl Access {
    /// The mailboxes (or the organisation, for an organisation permission) on which the
    /// subject holds the permission, in id order, a page at a time.
    pub async fn lookup_resources(
        &self,
        principal: &Principal,
        req: pb::LookupResourcesRequest,
    ) -> Result<pb::LookupResourcesResponse> {
        let permission = wire::parse_permission(&req.permission)?;
        let subject = wire::parse_user_subject("subject", req.subject.as_ref())?;
        let expected = if permission.on_mailbox() {
            "mailbox"
        } else {
            "org"
        };
        if req.resource_type != expected {
            return Err(AccessError::InvalidArgument(format!(
                "`{}` is held on resources of type \"{expected}\"; set resource_type to it",
                permission.name()
            )));
        }
        let page_size = aip::page_size(req.page_size, 1_000, 50_000)? as usize;
        let query = format!("{subject}|{}|{expected}", permission.name());
        let at: Option<Position> = aip::decode_page_token(&query, &req.page_token)?;
        let asked = wire::parse_revision(req.at_least_as_fresh_as.as_ref())?;
        self.fresh_for_page(asked, at).await?;
        let (ids, revision, keep) = {
            let state = self.replica.read();
            // The caller may ask on the newest state, whichever answer the page comes from.
            let org = subject_org(principal, &state, subject)?;
            self.answer(&query, at, asked, page_size, &state, || match org {
                None => Ok(Vec::new()),
                Some(org) => match state.org(org) {
                    None => Ok(Vec::new()),
                    Some(g) if permission.on_mailbox() => Ok(g
                        .lookup_mailboxes(subject, permission)
                        .into_iter()
                        .map(MailboxId::into_uuid)
                        .collect()),
                    Some(g) => Ok(if g.check(subject, permission, None)? {
                        vec![org.into_uuid()]
                    } else {
                        Vec::new()
                    }),
                },
            })?
        };
        self.keep(keep, &query, revision, &ids);
        let (ids, next_page_token) =
            cut(&query, &ids, at.map(Position::after), page_size, revision);
        Ok(pb::LookupResourcesResponse {
            resource_ids: ids,
            next_page_token,
            looked_up_at: Some(wire::revision_token(revision)),
        })
    }

    /// Waits for this replica to reach the revision the caller names and the one the walk's
    /// first page was read at (a page computed here again never goes back before it).
    async fn fresh_for_page(&self, asked: Option<i64>, at: Option<Position>) -> Result<()> {
        match asked.max(at.and_then(Position::revision)) {
            Some(revision) => self.replica.wait_for(revision).await,
            None => Ok(()),
        }
    }

    /// The sorted answer a page is cut from, the revision it was computed at, and whether to
    /// keep it ([`Access::keep`], once the state's guard is released): the one the walk's
    /// first page kept (see [`crate::pages`]) unless the caller asks for a newer revision, or
    /// else computed by `compute` from `state` (to be kept when it takes more than one page
    /// and is large enough to be worth it).
    fn answer(
        &self,
        query: &str,
        at: Option<Position>,
        asked: Option<i64>,
        page_size: usize,
        state: &State,
        compute: impl FnOnce() -> Result<Vec<Uuid>>,
    ) -> Result<(Arc<[Uuid]>, i64, bool)> {
        if let Some(r) = at.and_then(Position::revision) {
            if asked.is_none_or(|asked| asked <= r) {
                if let Some(ids) = self.pages.get(query, r) {
                    return Ok((ids, r, false));
                }
            }
        }
        let revision = state.revision();
        let mut ids = compute()?;
        ids.sort_unstable();
        let ids: Arc<[Uuid]> = ids.into();
        let after = at.map(Position::after);
        let keep = self.pages.worth_keeping(ids.len()) && pages::page(&ids, after, page_size).1;
        Ok((ids, revision, keep))
    }

    /// Keeps a computed answer for the next pages, when [`Access::answer`] said to. Called
    /// after the replica's state guard is dropped, so writers never wait on the cache.
    fn keep(&self, keep: bool, query: &str, revision: i64, ids: &Arc<[Uuid]>) {
        if keep {
            self.pages.put(query.to_owned(), revision, ids.clone());
        }
    }

    /// The active users who hold the permission on a mailbox or in an organisation. A user
    /// caller sees who has access to a mailbox they may view; only an org admin sees who holds
    /// an organisation permission.
    pub async fn lookup_subjects(
        &self,
        principal: &Principal,
        req: pb::LookupSubjectsRequest,
    ) -> Result<pb::LookupSubjectsResponse> {
        let permission = wire::parse_permission(&req.permission)?;
        let resource = wire::parse_resource(permission, req.resource.as_ref())?;
        if !req.subject_type.is_empty() && req.subject_type != "user" {
            return Err(AccessError::InvalidArgument(format!(
                "permissions are held by users; subject_type must be \"user\" or empty, not `{}`",
                mailroom_aip::shown(&req.subject_type)
            )));
        }
        let page_size = subjects_page_size(req.page_size)?;
        let query = format!(
            "subjects|{}|{}|user",
            match resource {
                Resource::Org(o) => format!("org:{o}"),
                Resource::Mailbox(m) => format!("mailbox:{m}"),
            },
            permission.name()
        );
        let at: Option<Position> = aip::decode_page_token(&query, &req.page_token)?;
        let asked = wire::parse_revision(req.at_least_as_fresh_as.as_ref())?;
        self.fresh_for_page(asked, at).await?;
        let state = self.replica.read();
        let org = match resource {
            Resource::Org(org) => Some(org),
            Resource::Mailbox(m) => state.org_of_mailbox(m),
        };
        let not_found = || match resource {
            Resource::Org(o) => AccessError::NotFound(format!("organisation `{o}` was not found")),
            Resource::Mailbox(m) => AccessError::mailbox_not_found(m),
        };
        if let Principal::User {
            user_id, org_id, ..
        } = principal
        {
            if org != Some(*org_id) {
                return Err(not_found());
            }
            let graph = state.org(*org_id).ok_or_else(not_found)?;
            let allowed = graph.is_admin(*user_id)
                || match resource {
                    Resource::Mailbox(m) => {
                        graph.check(*user_id, Permission::MailboxView, Some(m))?
                    }
                    Resource::Org(_) => false,
                };
            if !allowed {
                return Err(denied(match resource {
                    Resource::Mailbox(_) => {
                        "you may see who has access to a mailbox only if you may view it"
                    }
                    Resource::Org(_) => {
                        "only org admins may list who holds an organisation permission"
                    }
                }));
            }
        }
        let (ids, revision, keep) = self.answer(&query, at, asked, page_size, &state, || {
            let ids = match org.and_then(|o| state.org(o)) {
                None => Vec::new(),
                Some(graph) => match resource {
                    Resource::Mailbox(m) => graph.lookup_users(m, permission),
                    Resource::Org(_) => graph.lookup_org_users(permission),
                },
            };
            Ok(ids.into_iter().map(UserId::into_uuid).collect())
        })?;
        drop(state);
        self.keep(keep, &query, revision, &ids);
        let (ids, next_page_token) =
            cut(&query, &ids, at.map(Position::after), page_size, revision);
        Ok(pb::LookupSubjectsResponse {
            subject_ids: ids,
            looked_up_at: Some(wire::revision_token(revision)),
            next_page_token,
        })
    }

    /// Where a mailbox permission reaches for the subject. The subject's own organisation
    /// only: a user caller asking about someone outside it, known or not, is told that user
    /// was not found there.
    pub async fn lookup_mailbox_scope(
        &self,
        principal: &Principal,
        req: pb::LookupMailboxScopeRequest,
    ) -> Result<pb::LookupMailboxScopeResponse> {
        let permission = wire::parse_permission(&req.permission)?;
        if !permission.on_mailbox() {
            return Err(AccessError::InvalidArgument(format!(
                "`{}` is not a mailbox permission; ask for mailbox.view, mailbox.modify, mailbox.sync, mailbox.connect, mailbox.grant_read or mailbox.read_mail",
                permission.name()
            )));
        }
        let subject = wire::parse_user_subject("subject", req.subject.as_ref())?;
        let only: Vec<UserId> = req
            .only_owner_user_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                Uuid::parse_str(id).map(UserId::from_uuid).map_err(|_| {
                    AccessError::InvalidArgument(format!(
                        "only_owner_user_ids[{i}] is not a user id: `{}`",
                        mailroom_aip::shown(id)
                    ))
                })
            })
            .collect::<Result<_>>()?;
        self.fresh_enough(req.at_least_as_fresh_as.as_ref()).await?;
        let state = self.replica.read();
        let revision = Some(wire::revision_token(state.revision()));
        let Some(org) = subject_org(principal, &state, subject)? else {
            return Ok(pb::LookupMailboxScopeResponse {
                looked_up_at: revision,
                ..Default::default()
            });
        };
        // Narrowed to named owners, each is tested on its own rather than the whole reach
        // walked and intersected.
        let scope = state
            .org(org)
            .map(|g| {
                if only.is_empty() {
                    g.mailbox_scope(subject, permission)
                } else {
                    g.mailbox_scope_for(subject, permission, &only)
                }
            })
            .unwrap_or_default();
        let mut owners: Vec<UserId> = scope.owners.into_iter().collect();
        owners.sort_unstable();
        let mut mailboxes: Vec<MailboxId> = scope.mailboxes.into_iter().collect();
        mailboxes.sort_unstable();
        let mut answer = pb::LookupMailboxScopeResponse {
            org_id: org.to_string(),
            whole_organization: scope.whole_organization,
            looked_up_at: revision,
            ..Default::default()
        };
        if req.packed_ids {
            answer.packed_owner_user_ids = owners
                .iter()
                .flat_map(|id| *id.as_uuid().as_bytes())
                .collect();
            answer.packed_mailbox_ids = mailboxes
                .iter()
                .flat_map(|id| *id.as_uuid().as_bytes())
                .collect();
        } else {
            answer.owner_user_ids = owners.iter().map(UserId::to_string).collect();
            answer.mailbox_ids = mailboxes.iter().map(MailboxId::to_string).collect();
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_subjects_page_size_is_the_whole_answer_up_to_the_maximum() {
        assert_eq!(subjects_page_size(0).ok(), Some(10_000));
        assert_eq!(subjects_page_size(4).ok(), Some(4));
        assert_eq!(subjects_page_size(50_000).ok(), Some(10_000));
        assert!(subjects_page_size(-1).is_err());
    }
}
