//! What access control says the caller may do, in a form the registry applies to its own rows.
//!
//! The permission rules live in access control only. The registry asks it, as itself (its
//! service token, through `mailroom_clients::AccessClient`), for the caller's *scope* on a
//! permission — the whole organisation, or the mailboxes of a set of owners plus a set of
//! mailboxes — and applies that inside its SQL (`owner_user_id = ANY($owners) OR id =
//! ANY($mailboxes)`, in [`crate::store::list_query`]). Asking for a scope rather than for
//! the list of mailbox ids (LookupResources) keeps the answer small (owners, not their
//! mailboxes), lets PostgreSQL filter, sort and page in one query, and works for a mailbox
//! the registry connected a moment ago, before access control has heard of it: the owner
//! column is the registry's own.
//!
//! [`RegistryAccess`] asks those questions in the registry's terms (its rows' ids).

use std::collections::HashMap;

use mailroom_clients::{AccessClient, MailboxScope};
use mailroom_types::{MailboxId, Permission, UserId};

use crate::error::Result;

/// Where a permission reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    WholeOrganization,
    Some {
        owners: Vec<UserId>,
        mailboxes: Vec<MailboxId>,
    },
}

impl Scope {
    pub fn nothing() -> Scope {
        Scope::Some {
            owners: Vec::new(),
            mailboxes: Vec::new(),
        }
    }

    /// Whether a mailbox with this id and owner is in scope.
    pub fn covers(&self, mailbox: MailboxId, owner: UserId) -> bool {
        match self {
            Scope::WholeOrganization => true,
            Scope::Some { owners, mailboxes } => {
                owners.contains(&owner) || mailboxes.contains(&mailbox)
            }
        }
    }
}

impl From<MailboxScope> for Scope {
    fn from(scope: MailboxScope) -> Self {
        match scope {
            MailboxScope::WholeOrganization => Scope::WholeOrganization,
            MailboxScope::Some { owners, mailboxes } => Scope::Some { owners, mailboxes },
        }
    }
}

/// The registry's two questions to access control, over its rows' ids.
pub(crate) trait RegistryAccess {
    /// The user's scope on `permission` in their organisation; `only` narrows the owners to
    /// those named (a check for one or a few owners).
    async fn scope(&self, user: UserId, permission: Permission, only: &[UserId]) -> Result<Scope>;

    /// Who may read each `(mailbox, owner)`'s mail (the "access by" column).
    async fn mail_readers(
        &self,
        mailboxes: &[(MailboxId, UserId)],
    ) -> Result<HashMap<MailboxId, Vec<UserId>>>;
}

impl RegistryAccess for AccessClient {
    async fn scope(&self, user: UserId, permission: Permission, only: &[UserId]) -> Result<Scope> {
        Ok(self.mailbox_scope(user, permission, only).await?.into())
    }

    async fn mail_readers(
        &self,
        mailboxes: &[(MailboxId, UserId)],
    ) -> Result<HashMap<MailboxId, Vec<UserId>>> {
        Ok(self.readers(mailboxes).await?)
    }
}
