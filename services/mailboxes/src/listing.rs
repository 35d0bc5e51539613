//! Reading the registry: one mailbox (`GetMailbox`), the list ("Manage user mailboxes":
//! `ListMailboxes`, filtered, sorted and paged), and each person's saved list view.
//!
//! A list call parses its filter and order ([`crate::list`]), asks access control for the
//! caller's `mailbox.view` scope and for the read scopes of the users an `access_by` names
//! (only the organisation's own users: anyone else reads nothing here, answered alike), and
//! hands all of it to the one query ([`crate::store::list_query`]). Its page token is
//! signed and bound to the caller, organisation, filter and order, so a token cannot be
//! replayed against another question. Columns come from the read mask, else the caller's
//! saved view ([`crate::view`]).

use std::collections::HashSet;

use mailroom_aip as aip;
use mailroom_clients::PeerError;
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::mailboxes::v1 as pb;
use mailroom_types::{OrgId, Permission, UserId};

use crate::error::{MailboxError, Result};
use crate::list::{self, Cursor, DEFAULT_PAGE, MAX_PAGE};
use crate::scope::{RegistryAccess as _, Scope};
use crate::service::{Caller, Mailboxes};
use crate::store::list_query::ListQuery;
use crate::store::{self, ListViewRow};
use crate::view::{self, Columns};

/// The most users one filter may name in `access_by` (each is a question to access control).
const MAX_ACCESS_BY: usize = 8;

impl Mailboxes {
    #[tracing::instrument(skip_all)]
    pub async fn get(
        &self,
        principal: &Principal,
        req: pb::GetMailboxRequest,
    ) -> Result<pb::Mailbox> {
        let (_, row) = self
            .named(principal, &req.id, Permission::MailboxView)
            .await?;
        self.in_full(&row).await
    }

    #[tracing::instrument(skip_all, fields(filter = %aip::shown(&req.filter), order_by = %aip::shown(&req.order_by)))]
    pub async fn list(
        &self,
        principal: &Principal,
        req: pb::ListMailboxesRequest,
    ) -> Result<pb::ListMailboxesResponse> {
        let caller = Caller::of(principal);
        let org = caller.org(&req.org_id)?;
        let filter = list::parse_filter(&req.filter)?;
        let order = list::parse_order(&req.order_by)?;
        let saved = match caller.user() {
            Some(user) if req.read_mask.is_none() || req.page_size == 0 => {
                store::list_view(&self.pool, user).await?
            }
            _ => None,
        };
        let columns = match &req.read_mask {
            Some(mask) if !mask.paths.is_empty() => Columns::parse(&mask.paths)?,
            _ => Columns::parse(
                &saved
                    .as_ref()
                    .map(|v| v.columns.clone())
                    .unwrap_or_else(view::default_columns),
            )?,
        };
        let default_page = saved
            .as_ref()
            .map(|v| v.page_size)
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_PAGE);
        let page_size = aip::page_size(req.page_size, default_page, MAX_PAGE)?;
        let question = format!(
            "{}|{}|{}|{}",
            caller.key,
            org,
            req.filter.trim(),
            req.order_by.trim()
        );
        let after: Option<Cursor> = self.tokens.decode(&question, &req.page_token)?;

        let (scope, reads) = {
            let mut users = Vec::new();
            if let Some(f) = &filter {
                f.access_by_users(&mut users);
            }
            if users.len() > MAX_ACCESS_BY {
                return Err(MailboxError::InvalidArgument(format!(
                    "a filter names at most {MAX_ACCESS_BY} users in access_by"
                )));
            }
            let scope = self.scope(&caller, Permission::MailboxView, &[]);
            let reads = futures::future::try_join_all(users.iter().map(|u| async move {
                Ok::<_, MailboxError>((*u, self.reads_of(org, *u).await?))
            }));
            futures::future::try_join(scope, reads).await?
        };

        let query = ListQuery {
            org,
            scope: &scope,
            filter: filter.as_ref(),
            reads: &reads,
            order,
        };
        let page = query.page(&self.pool, after.as_ref(), page_size).await?;
        let next_page_token = match &page.next {
            Some(cursor) => self.tokens.encode(&question, cursor),
            None => String::new(),
        };
        let readers = if columns.access_by {
            let pairs: Vec<_> = page
                .rows
                .iter()
                .map(|r| (r.row.id, r.row.owner_user_id))
                .collect();
            Some(self.access.mail_readers(&pairs).await?)
        } else {
            None
        };
        Ok(pb::ListMailboxesResponse {
            mailboxes: page
                .rows
                .iter()
                .map(|r| view::to_proto(&r.row, &columns, readers.as_ref()))
                .collect(),
            next_page_token,
            total_size: i32::try_from(page.total).unwrap_or(i32::MAX),
            total_size_is_estimate: page.estimated,
        })
    }

    /// Whose mailboxes `user` may read, for a filter's `access_by`: a user of `org` as access
    /// control answers; anyone else — another organisation's user or admin, or an id that is
    /// nobody's — reads nothing here, in the same answer (OK, no rows), without asking access
    /// control about them. A user of `org` access control has not heard of yet reads nothing
    /// yet.
    async fn reads_of(&self, org: OrgId, user: UserId) -> Result<Scope> {
        if store::owner(&self.pool, org, user).await?.is_none() {
            return Ok(Scope::nothing());
        }
        match self
            .access
            .mailbox_scope(user, Permission::MailboxReadMail, &[])
            .await
        {
            Ok(scope) => Ok(scope.into()),
            Err(PeerError::NotYetKnown { .. }) => Ok(Scope::nothing()),
            Err(err) => Err(err.into()),
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn get_view(&self, principal: &Principal) -> Result<pb::ListView> {
        let user = view_owner(principal)?;
        let saved = store::list_view(&self.pool, user).await?;
        Ok(view::view_to_proto(saved))
    }

    #[tracing::instrument(skip_all)]
    pub async fn update_view(
        &self,
        principal: &Principal,
        req: pb::UpdateListViewRequest,
    ) -> Result<pb::ListView> {
        let user = view_owner(principal)?;
        let Principal::User { org_id, .. } = principal else {
            return Err(MailboxError::InvalidArgument(
                "list views belong to people".into(),
            ));
        };
        let v = req.view.unwrap_or_default();
        let columns = if v.columns.is_empty() {
            view::default_columns()
        } else {
            Columns::parse(&v.columns)?;
            let mut seen = HashSet::new();
            for c in &v.columns {
                if !seen.insert(c) {
                    return Err(MailboxError::InvalidArgument(format!(
                        "column `{}` appears twice",
                        aip::shown(c)
                    )));
                }
            }
            v.columns.clone()
        };
        list::parse_filter(&v.filter)?;
        list::parse_order(&v.order_by)?;
        aip::page_size(v.page_size, DEFAULT_PAGE, MAX_PAGE)?;
        if v.page_size > MAX_PAGE {
            return Err(MailboxError::InvalidArgument(format!(
                "page_size is at most {MAX_PAGE}"
            )));
        }
        let row = ListViewRow {
            columns,
            filter: v.filter.trim().to_owned(),
            order_by: v.order_by.trim().to_owned(),
            page_size: v.page_size,
        };
        store::save_list_view(&self.pool, user, *org_id, &row).await?;
        Ok(view::view_to_proto(Some(row)))
    }
}

/// Whose list view a call reads or saves: a person's own; services have none.
fn view_owner(principal: &Principal) -> Result<UserId> {
    match principal {
        Principal::User { user_id, .. } => Ok(*user_id),
        Principal::Service { .. } => Err(MailboxError::InvalidArgument(
            "list views belong to people; a service passes its columns in read_mask".into(),
        )),
    }
}
