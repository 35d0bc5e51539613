//! The sealed passwords: handing one to the sync service (the one caller that logs in to
//! mailboxes), and re-sealing them under the newest key after a key rotation.
//!
//! A password is sealed with `platform::sealed` and bound to its mailbox's id
//! (`service::seal_context`): a sealed value copied to another row does not open. Opening
//! needs the key it was sealed with, so an operator keeps an old key configured until
//! `ResealCredentials` reports nothing remaining.

use mailroom_platform::auth::Principal;
use mailroom_platform::proto::mailboxes::v1 as pb;
use secrecy::ExposeSecret;

use crate::error::{MailboxError, Result};
use crate::service::{mailbox_id, seal_context, Mailboxes};
use crate::store;

/// The sync service's client id at identity: the one caller given mailbox credentials.
pub const SYNC_CLIENT: &str = "sync";

impl Mailboxes {
    /// What a sync worker needs to log in: for the sync service's own credential only.
    #[tracing::instrument(skip_all, fields(mailbox = %mailroom_aip::shown(&req.mailbox_id)))]
    pub async fn credentials(
        &self,
        principal: &Principal,
        req: pb::GetMailboxCredentialsRequest,
    ) -> Result<pb::MailboxLogin> {
        if !matches!(principal, Principal::Service { name } if name == SYNC_CLIENT) {
            return Err(MailboxError::PermissionDenied(
                "mailbox credentials are handed to the sync service only".into(),
            ));
        }
        let id = mailbox_id(&req.mailbox_id)?;
        // The password and the server it goes to, read together: never one version's
        // password with another version's server.
        let store::SealedRow {
            row,
            password_sealed: sealed,
        } = store::get_sealed(&self.pool, None, id, false)
            .await?
            .ok_or_else(|| MailboxError::NotFound(id.to_string()))?;
        let password = self.keys.open(&sealed, &seal_context(id)).map_err(|e| {
            MailboxError::FailedPrecondition(format!(
                "mailbox `{id}`'s password cannot be opened with the configured keys ({e}); configure the key it was sealed with"
            ))
        })?;
        let imap = row.imap();
        Ok(pb::MailboxLogin {
            mailbox_id: row.id.to_string(),
            org_id: row.org_id.to_string(),
            owner_user_id: row.owner_user_id.to_string(),
            email: row.email.clone(),
            imap_host: imap.host,
            imap_port: i32::from(imap.port),
            imap_security: crate::domain::security_to_proto(imap.security) as i32,
            imap_username: imap.username,
            password: password.expose_secret().to_owned(),
            in_crm: row.in_crm,
        })
    }

    /// Re-seals up to a batch of passwords sealed under an older key: the operator's, with a
    /// service credential (`mailroom ctl mailboxes rotate-key`).
    #[tracing::instrument(skip_all)]
    pub async fn reseal(
        &self,
        principal: &Principal,
        req: pb::ResealCredentialsRequest,
    ) -> Result<pb::ResealCredentialsResponse> {
        if !matches!(principal, Principal::Service { .. }) {
            return Err(MailboxError::PermissionDenied(
                "re-sealing credentials is the operator's: call with a service credential (mailroom ctl mailboxes rotate-key)".into(),
            ));
        }
        let batch = match req.batch_size {
            n if n < 0 => {
                return Err(MailboxError::InvalidArgument(
                    "batch_size cannot be negative".into(),
                ))
            }
            0 => 500,
            n => i64::from(n.min(5_000)),
        };
        let key_id = self
            .keys
            .newest_id()
            .ok_or_else(|| MailboxError::Internal("no sealing key configured".into()))?
            .to_owned();
        let mut tx = self.pool.begin().await?;
        let stale = store::stale_sealed(&mut tx, &key_id, batch).await?;
        let mut resealed = 0i64;
        for (id, sealed) in &stale {
            let context = seal_context(*id);
            let secret = self.keys.open(sealed, &context).map_err(|e| {
                MailboxError::FailedPrecondition(format!(
                    "mailbox `{id}`'s password cannot be opened with the configured keys ({e}); keep the key it was sealed with configured until the rotation ends"
                ))
            })?;
            let fresh = self.keys.seal(secret.expose_secret(), &context)?;
            store::reseal(&mut tx, *id, &fresh, &key_id).await?;
            resealed += 1;
        }
        tx.commit().await?;
        let remaining = store::count_stale_sealed(&self.pool, &key_id).await?;
        tracing::info!(resealed, remaining, key = %key_id, "credentials re-sealed");
        Ok(pb::ResealCredentialsResponse {
            resealed,
            remaining,
            key_id,
        })
    }
}
