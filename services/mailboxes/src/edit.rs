//! Changing a connected mailbox: its names, servers, password or CRM settings
//! (`UpdateMailbox`), its owner (`TransferMailbox`), disconnecting it, and asking for a sync
//! now (`SyncMailboxNow`).
//!
//! Changed credentials (password or either server) are checked with real logins before they
//! are saved, and un-park a mailbox the mail server had refused; every change is saved with
//! its event in one transaction, re-reading the row under a lock so a change raced by a
//! disconnect answers NOT_FOUND rather than reviving it.

use mailroom_platform::auth::Principal;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::mailboxes::v1 as pb;
use mailroom_platform::wire;
use mailroom_types::Permission;
use secrecy::{ExposeSecret, SecretString};

use crate::domain::{self, Crm, Protocol, ServerSettings, SyncState};
use crate::error::{MailboxError, Result};
use crate::events;
use crate::service::{mailbox_id, seal_context, Caller, Mailboxes};
use crate::store::{self, Changes};
use crate::view::{self, Columns};

impl Mailboxes {
    #[tracing::instrument(skip_all, fields(paths = ?req.update_mask.as_ref().map(|m| &m.paths)))]
    pub async fn update(
        &self,
        principal: &Principal,
        req: pb::UpdateMailboxRequest,
    ) -> Result<pb::Mailbox> {
        let caller = Caller::of(principal);
        let mailbox = req.mailbox.unwrap_or_default();
        let id = mailbox_id(&mailbox.id)?;
        let paths: Vec<String> = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(MailboxError::InvalidArgument(
                "name what to change in update_mask: name, sender_name, imap, smtp, password, crm"
                    .into(),
            ));
        }
        let row = self
            .authorized(&caller, id, Permission::MailboxModify)
            .await?;
        let mut changes = Changes::default();
        let mut changed: Vec<String> = Vec::new();
        let mut new_password: Option<SecretString> = None;
        for path in &paths {
            match path.as_str() {
                "name" => changes.name = Some(domain::name("mailbox.name", &mailbox.name)?),
                "sender_name" => {
                    changes.sender_name =
                        Some(domain::name("mailbox.sender_name", &mailbox.sender_name)?)
                }
                "imap" => {
                    changes.imap = Some(ServerSettings::parse(
                        "mailbox.imap",
                        Protocol::Imap,
                        mailbox.imap.as_ref(),
                        &row.email,
                    )?)
                }
                "smtp" => {
                    changes.smtp = Some(ServerSettings::parse(
                        "mailbox.smtp",
                        Protocol::Smtp,
                        mailbox.smtp.as_ref(),
                        &row.email,
                    )?)
                }
                "crm" => changes.crm = Some(Crm::parse(mailbox.crm.as_ref())?),
                "password" => new_password = Some(domain::password("password", &req.password)?),
                other => {
                    return Err(MailboxError::InvalidArgument(format!(
                        "`{other}` cannot be changed; update_mask takes name, sender_name, imap, smtp, password, crm (transfer the owner with TransferMailbox)"
                    )))
                }
            }
            if !changed.contains(path) {
                changed.push(path.clone());
            }
        }
        let credentials_changed =
            new_password.is_some() || changes.imap.is_some() || changes.smtp.is_some();
        if credentials_changed {
            let password = match &new_password {
                Some(p) => p.clone(),
                None => {
                    let mut conn = self.pool.acquire().await?;
                    let sealed = store::sealed_password(&mut conn, id).await?;
                    self.keys.open(&sealed, &seal_context(id))?
                }
            };
            let imap = changes.imap.clone().unwrap_or_else(|| row.imap());
            let smtp = changes.smtp.clone().unwrap_or_else(|| row.smtp());
            self.rate_limit(&caller).await?;
            self.prober
                .check_both(&imap, &smtp, &password)
                .await
                .map_err(MailboxError::Login)?;
            if let Some(p) = &new_password {
                let sealed = self.keys.seal(p.expose_secret(), &seal_context(id))?;
                changes.sealed_password =
                    Some((sealed, self.keys.newest_id().unwrap_or_default().to_owned()));
            }
            changes.reset_state = true;
        }
        let mut tx = self.pool.begin().await?;
        if store::get(&mut *tx, row.org_id, id, true).await?.is_none() {
            return Err(MailboxError::NotFound(id.to_string()));
        }
        let updated = store::update(&mut tx, id, &changes).await?;
        events::publish(
            &mut tx,
            &updated,
            &caller.actor,
            ev::envelope::Payload::MailboxUpdated(ev::MailboxUpdated {
                mailbox: Some(events::snapshot(&updated)),
                changed_fields: changed,
            }),
        )
        .await?;
        if credentials_changed {
            events::request_sync(
                &mut tx,
                &updated,
                &caller.actor,
                ev::SyncPriority::High,
                "credentials_changed",
            )
            .await?;
        }
        tx.commit().await?;
        self.in_full(&updated).await
    }

    #[tracing::instrument(skip_all)]
    pub async fn disconnect(
        &self,
        principal: &Principal,
        req: pb::DisconnectMailboxRequest,
    ) -> Result<()> {
        let (caller, row) = self
            .named(principal, &req.id, Permission::MailboxModify)
            .await?;
        let id = row.id;
        let mut tx = self.pool.begin().await?;
        if store::get(&mut *tx, row.org_id, id, true).await?.is_none() {
            return Err(MailboxError::NotFound(id.to_string()));
        }
        store::delete(&mut tx, id).await?;
        events::publish(
            &mut tx,
            &row,
            &caller.actor,
            ev::envelope::Payload::MailboxDisconnected(ev::MailboxDisconnected {
                mailbox_id: row.id.to_string(),
                owner_user_id: row.owner_user_id.to_string(),
                email: row.email.clone(),
            }),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(mailbox = %id, "mailbox disconnected");
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    pub async fn sync_now(
        &self,
        principal: &Principal,
        req: pb::SyncMailboxNowRequest,
    ) -> Result<pb::SyncMailboxNowResponse> {
        let (caller, row) = self
            .named(principal, &req.id, Permission::MailboxSync)
            .await?;
        if row.state() == SyncState::AuthFailed {
            return Err(MailboxError::FailedPrecondition(format!(
                "the mail server refused this mailbox's password ({}); it is parked until the password or server settings are edited (UpdateMailbox)",
                row.sync_error
            )));
        }
        let mut tx = self.pool.begin().await?;
        events::request_sync(
            &mut tx,
            &row,
            &caller.actor,
            ev::SyncPriority::High,
            "sync_now",
        )
        .await?;
        tx.commit().await?;
        Ok(pb::SyncMailboxNowResponse {
            queued_time: Some(wire::timestamp(chrono::Utc::now())),
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn transfer(
        &self,
        principal: &Principal,
        req: pb::TransferMailboxRequest,
    ) -> Result<pb::Mailbox> {
        let caller = Caller::of(principal);
        let id = mailbox_id(&req.id)?;
        let to = domain::user_id("new_owner_user_id", &req.new_owner_user_id)?;
        let row = self
            .authorized(&caller, id, Permission::MailboxModify)
            .await?;
        if row.owner_user_id == to {
            return Err(MailboxError::FailedPrecondition(
                "the mailbox already belongs to that user".into(),
            ));
        }
        if !self.may_modify_for(&caller, to).await? {
            return Err(MailboxError::PermissionDenied(
                "you may give a mailbox only to someone whose mailboxes you may change".into(),
            ));
        }
        let owner = self.owner(row.org_id, to).await?;
        if !owner.active {
            return Err(MailboxError::FailedPrecondition(format!(
                "user `{to}` is not active; a mailbox goes to an active user"
            )));
        }
        let mut tx = self.pool.begin().await?;
        let current = store::get(&mut *tx, row.org_id, id, true)
            .await?
            .ok_or_else(|| MailboxError::NotFound(id.to_string()))?;
        let moved = store::transfer(&mut tx, id, &owner).await?;
        events::publish(
            &mut tx,
            &moved,
            &caller.actor,
            ev::envelope::Payload::MailboxTransferred(ev::MailboxTransferred {
                mailbox: Some(events::snapshot(&moved)),
                previous_owner_user_id: current.owner_user_id.to_string(),
            }),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(mailbox = %id, from = %current.owner_user_id, to = %to, "mailbox transferred");
        Ok(view::to_proto(&moved, &Columns::all(), None))
    }
}
