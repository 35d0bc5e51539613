//! Changing a connected mailbox: its names, servers, password or CRM settings
//! (`UpdateMailbox`), its owner (`TransferMailbox`), disconnecting it, and asking for a sync
//! now (`SyncMailboxNow`).
//!
//! Changing takes `mailbox.modify` on the mailbox and syncing `mailbox.sync`; a transfer takes
//! `mailbox.modify` on the mailbox, `mailbox.connect` for the new owner (giving someone a
//! mailbox is connecting one for them) and `mailbox.grant_read` on the mailbox (its new owner
//! reads its mail). A transfer to oneself is for org admins only, as is granting oneself
//! reading.
//!
//! A CRM queue takes the organisation's active users only, as when connecting. Changed
//! credentials (password or either server) are checked with real logins before they
//! are saved, and un-park a mailbox the mail server had refused; every change is saved with
//! its event in one transaction, re-reading the row under a lock so a change raced by a
//! disconnect answers NOT_FOUND rather than reviving it.
//!
//! The stored password only ever goes where it was checked: moving a server (its host, port,
//! security or username) takes the password again in the same request, and that password is
//! what the new server is checked with. Without it the change is refused before any
//! connection is made, so whoever may edit a mailbox cannot point it at a server of theirs
//! and receive its owner's password.
//!
//! "Sync now" is bounded twice: per caller (a rate per minute) and per mailbox (asked again
//! within the configured interval, it queues nothing and answers with the time of the sync
//! already queued), so a flood of calls is not a flood of IMAP logins.

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
use crate::store::{self, Changes, SyncNowClaim};
use crate::view::{self, Columns};

impl Mailboxes {
    #[tracing::instrument(skip_all, fields(paths = %req.update_mask.as_ref().map(|m| mailroom_aip::shown(&m.paths.join(","))).unwrap_or_default()))]
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
                        "`{}` cannot be changed; update_mask takes name, sender_name, imap, smtp, password, crm (transfer the owner with TransferMailbox)",
                        mailroom_aip::shown(other)
                    )))
                }
            }
            if !changed.contains(path) {
                changed.push(path.clone());
            }
        }
        if let Some(crm) = &changes.crm {
            let wire = mailbox
                .crm
                .as_ref()
                .map(|crm| crm.queue_user_ids.as_slice())
                .unwrap_or_default();
            self.check_queue(row.org_id, crm, wire).await?;
        }
        let credentials_changed =
            new_password.is_some() || changes.imap.is_some() || changes.smtp.is_some();
        let (stored_imap, stored_smtp) = (row.imap(), row.smtp());
        // The sealed password a check used, when it was the stored one.
        let mut stored_sealed: Option<Vec<u8>> = None;
        if credentials_changed {
            // The stored password goes only to the servers it was checked with: a server
            // that moves is checked with a password given now, or not at all.
            let moved: Vec<&str> = [
                (
                    "imap",
                    changes.imap.as_ref().is_some_and(|s| *s != stored_imap),
                ),
                (
                    "smtp",
                    changes.smtp.as_ref().is_some_and(|s| *s != stored_smtp),
                ),
            ]
            .into_iter()
            .filter_map(|(name, moved)| moved.then_some(name))
            .collect();
            if !moved.is_empty() && new_password.is_none() {
                tracing::warn!(mailbox = %id, actor = ?caller.actor, moved = ?moved, "server change without the password refused");
                return Err(MailboxError::InvalidArgument(format!(
                    "give the mailbox password again to change the server: changing {}'s host, port, security or username changes where the password is sent, and the stored one is only ever sent to the server it was checked with; set `password` and add \"password\" to update_mask",
                    moved.join(" and ")
                )));
            }
            let password = match &new_password {
                Some(p) => p.clone(),
                None => {
                    // Both servers are as stored: the stored password goes back to them —
                    // read with them, so it is the one checked with these very servers.
                    let current = store::get_sealed(&self.pool, Some(row.org_id), id, false)
                        .await?
                        .ok_or_else(|| MailboxError::NotFound(id.to_string()))?;
                    if current.row.imap() != stored_imap || current.row.smtp() != stored_smtp {
                        return Err(changed_meanwhile());
                    }
                    stored_sealed = Some(current.password_sealed);
                    let sealed = stored_sealed.as_deref().unwrap_or_default();
                    self.keys.open(sealed, &seal_context(id))?
                }
            };
            let imap = changes.imap.clone().unwrap_or_else(|| stored_imap.clone());
            let smtp = changes.smtp.clone().unwrap_or_else(|| stored_smtp.clone());
            self.rate_limit(&caller).await?;
            let _slot = self.login_slot().await?;
            self.prober
                .check_both(&imap, &smtp, &password)
                .await
                .map_err(|failures| {
                    // Not silent: who tried which servers for whose mailbox.
                    tracing::warn!(
                        mailbox = %id,
                        actor = ?caller.actor,
                        imap = %format_args!("{}:{}", imap.host, imap.port),
                        smtp = %format_args!("{}:{}", smtp.host, smtp.port),
                        failed = ?failures.iter().map(|f| f.step.name()).collect::<Vec<_>>(),
                        "login check failed on update; nothing saved"
                    );
                    MailboxError::Login(failures)
                })?;
            if let Some(p) = &new_password {
                let sealed = self.keys.seal(p.expose_secret(), &seal_context(id))?;
                changes.sealed_password =
                    Some((sealed, self.keys.newest_id().unwrap_or_default().to_owned()));
            }
            changes.reset_state = true;
        }
        let mut tx = self.pool.begin().await?;
        let current = store::get_sealed(&mut *tx, Some(row.org_id), id, true)
            .await?
            .ok_or_else(|| MailboxError::NotFound(id.to_string()))?;
        // What was checked still stands: neither server nor the stored password changed
        // meanwhile (else saving would pair one change's password with another's server).
        if credentials_changed
            && (current.row.imap() != stored_imap
                || current.row.smtp() != stored_smtp
                || stored_sealed
                    .as_ref()
                    .is_some_and(|s| *s != current.password_sealed))
        {
            return Err(changed_meanwhile());
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
                domain::clipped(&row.sync_error, 300)
            )));
        }
        self.rate_limit_sync_now(&caller).await?;
        let mut tx = self.pool.begin().await?;
        let queued = match store::claim_sync_now(&mut tx, row.id, self.sync_now_interval).await? {
            SyncNowClaim::Gone => return Err(MailboxError::NotFound(row.id.to_string())),
            SyncNowClaim::AlreadyQueued(at) => {
                // The sync already asked for is the one that runs: its time is the answer.
                tx.rollback().await?;
                tracing::debug!(mailbox = %row.id, queued_at = %at, "sync already queued; not asked again");
                return Ok(pb::SyncMailboxNowResponse {
                    queued_time: Some(wire::timestamp(at)),
                });
            }
            SyncNowClaim::Claimed(at) => at,
        };
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
            queued_time: Some(wire::timestamp(queued)),
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
        // The new owner reads its mail: as only an org admin grants themselves reading, only
        // an org admin gives themselves a mailbox.
        if caller.user() == Some(to) && !caller.is_admin() {
            return Err(MailboxError::PermissionDenied(
                "you may not transfer a mailbox to yourself: its owner reads its mail, and only an org admin may give themselves that; ask an admin".into(),
            ));
        }
        // Giving a mailbox to someone is connecting one for them.
        if !self.may_connect_for(&caller, to).await? {
            return Err(self.connect_refused(&caller, row.org_id, to, true).await?);
        }
        // And it gives them its mail.
        if !self.may_grant_read(&caller, &row).await? {
            return Err(MailboxError::PermissionDenied(
                "transferring gives the new owner its mail, so it needs the right to grant mail reading on this mailbox (mailbox.grant_read), which your roles do not give you; ask an admin".into(),
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

/// A change checked against a mailbox that another change altered before it was saved.
fn changed_meanwhile() -> MailboxError {
    MailboxError::ChangedMeanwhile(
        "the mailbox's servers or password changed while this update was being checked; read the mailbox again and retry".into(),
    )
}
