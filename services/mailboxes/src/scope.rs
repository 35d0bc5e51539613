//! What access control says the caller may do, in a form the registry applies to its own rows.
//!
//! The permission rules live in access control only. The registry asks it, as itself (its
//! service token, through `mailroom_clients::AccessClient`), for the caller's *scope* on a
//! permission — the whole organisation, or the mailboxes of a set of owners plus a set of
//! mailboxes — and applies that inside its SQL (`owner_user_id = ANY($owners) OR id =
//! ANY($mailboxes)`, in [`crate::list`]). Asking for a scope rather than for the list of
//! mailbox ids (LookupResources) keeps the answer small (owners, not their mailboxes), lets
//! PostgreSQL filter, sort and page in one query, and works for a mailbox the registry
//! connected a moment ago, before access control has heard of it: the owner column is the
//! registry's own.
//!
//! [`RegistryAccess`] asks those questions in the registry's terms (its rows' ids).

use std::collections::HashMap;

use mailroom_clients::{AccessClient, MailboxScope};
use mailroom_types::{MailboxId, Permission, UserId};
use uuid::Uuid;

use crate::error::Result;

/// Where a permission reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    WholeOrganization,
    Some {
        owners: Vec<Uuid>,
        mailboxes: Vec<Uuid>,
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
    pub fn covers(&self, mailbox: Uuid, owner: Uuid) -> bool {
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
            MailboxScope::Some { owners, mailboxes } => Scope::Some {
                owners: UserId::uuids(&owners),
                mailboxes: MailboxId::uuids(&mailboxes),
            },
        }
    }
}

/// The registry's two questions to access control, over its rows' ids.
pub(crate) trait RegistryAccess {
    /// The user's scope on `permission` in their organisation; `only` narrows the owners to
    /// those named (a check for one or a few owners).
    async fn scope(&self, user: Uuid, permission: Permission, only: &[Uuid]) -> Result<Scope>;

    /// Who may read each `(mailbox, owner)`'s mail (the "access by" column).
    async fn mail_readers(&self, mailboxes: &[(Uuid, Uuid)]) -> Result<HashMap<Uuid, Vec<Uuid>>>;
}

impl RegistryAccess for AccessClient {
    async fn scope(&self, user: Uuid, permission: Permission, only: &[Uuid]) -> Result<Scope> {
        let only: Vec<UserId> = only.iter().copied().map(UserId::from_uuid).collect();
        Ok(self
            .mailbox_scope(UserId::from_uuid(user), permission, &only)
            .await?
            .into())
    }

    async fn mail_readers(&self, mailboxes: &[(Uuid, Uuid)]) -> Result<HashMap<Uuid, Vec<Uuid>>> {
        let typed: Vec<(MailboxId, UserId)> = mailboxes
            .iter()
            .map(|&(mailbox, owner)| (MailboxId::from_uuid(mailbox), UserId::from_uuid(owner)))
            .collect();
        Ok(self
            .readers(&typed)
            .await?
            .into_iter()
            .map(|(mailbox, readers)| (mailbox.into_uuid(), UserId::uuids(&readers)))
            .collect())
    }
}
