//! The [`Sync`] value every API operation hangs off, and who may call them. The operations
//! live one use case a file: [`crate::heartbeats`] (any signed-in person, for themselves),
//! [`crate::status`] (a mailbox's sync status: whoever may view the mailbox) and
//! [`crate::messages`] (reading mail: only with `mailbox.read_mail`, the owner or someone
//! granted; an admin or a supervisor who may merely view gets PERMISSION_DENIED).
//!
//! Another organisation's mailbox, an unknown one and one the caller may not view all get
//! the same NOT_FOUND.

use mailroom_aip::token::PageTokenKey;
use mailroom_platform::auth::Principal;
use mailroom_types::{MailboxId, OrgId, Permission, UserId};
use sqlx::PgPool;

use crate::activity::Activity;
use crate::engine::Engine;
use crate::error::{Result, SyncError};
use crate::peers::Peers;
use crate::store::schedule::{self, ScheduleRow};

pub struct Sync {
    pub pool: PgPool,
    pub activity: Activity,
    pub peers: Peers,
    pub engine: Engine,
    pub tokens: PageTokenKey,
    pub max_body_bytes: u64,
    /// GetMessageBody's bounds per person and per mail server.
    pub body_reads: crate::body_reads::BodyReads,
}

/// The mailbox a request names in `mailbox_id`.
pub(crate) fn mailbox_id(value: &str) -> Result<MailboxId> {
    MailboxId::parse("mailbox_id", value.trim()).map_err(|_| {
        SyncError::InvalidArgument(format!(
            "mailbox_id `{}` is not a mailbox id (a UUID)",
            mailroom_aip::shown(value)
        ))
    })
}

impl Sync {
    /// The schedule row, if the caller may see this mailbox at all.
    pub(crate) async fn visible(
        &self,
        principal: &Principal,
        id: MailboxId,
    ) -> Result<ScheduleRow> {
        let row = schedule::schedule_row(&self.pool, id)
            .await?
            .ok_or_else(|| SyncError::NotFound(id.to_string()))?;
        self.may_view(principal, id, row.org_id, row.owner_user_id)
            .await?;
        Ok(row)
    }

    /// Whether the caller may see mailbox `id` of organisation `org`, owned by `owner`: the
    /// same NOT_FOUND as for an unknown mailbox when not.
    pub(crate) async fn may_view(
        &self,
        principal: &Principal,
        id: MailboxId,
        org: OrgId,
        owner: UserId,
    ) -> Result<()> {
        let allowed = match principal {
            Principal::Service { .. } => true,
            Principal::User {
                user_id, org_id, ..
            } if org == *org_id => {
                self.peers
                    .allowed(*user_id, Permission::MailboxView, id, owner)
                    .await?
            }
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(SyncError::NotFound(id.to_string()))
        }
    }

    /// As [`Sync::visible`], and the caller may read the mailbox's mail.
    pub(crate) async fn readable(
        &self,
        principal: &Principal,
        id: MailboxId,
    ) -> Result<ScheduleRow> {
        let row = self.visible(principal, id).await?;
        let allowed = match principal {
            Principal::User { user_id, .. } => {
                self.peers
                    .allowed(*user_id, Permission::MailboxReadMail, id, row.owner_user_id)
                    .await?
            }
            Principal::Service { .. } => false,
        };
        if !allowed {
            return Err(SyncError::PermissionDenied(format!(
                "reading mailbox `{id}`'s mail needs mailbox.read_mail: its owner has it, anyone else needs a grant (access control's WriteRelationships mailbox#reader, made by an admin)"
            )));
        }
        Ok(row)
    }
}
