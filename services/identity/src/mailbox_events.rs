//! Mailbox addresses from the mailbox registry's events, for `GetEmailAddressUsage` ("mailbox
//! of Z"). Each event carries the mailbox as it is after the change, so a replay changes
//! nothing; a disconnected mailbox's address is forgotten.

use anyhow::Context as _;
use async_trait::async_trait;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::proto::events::v1 as ev;
use sqlx::PgConnection;
use uuid::Uuid;

/// The handler for `mailroom.mailboxes.events`.
pub struct MailboxEvents;

#[async_trait]
impl EventHandler for MailboxEvents {
    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        use ev::envelope::Payload;
        let org = || Uuid::parse_str(&event.org_id).context("org_id is not a UUID");
        match &event.payload {
            Some(Payload::MailboxConnected(ev::MailboxConnected { mailbox: Some(m) }))
            | Some(Payload::MailboxUpdated(ev::MailboxUpdated {
                mailbox: Some(m), ..
            }))
            | Some(Payload::MailboxTransferred(ev::MailboxTransferred {
                mailbox: Some(m), ..
            })) => {
                let id = Uuid::parse_str(&m.id).context("mailbox.id is not a UUID")?;
                let owner = Uuid::parse_str(&m.owner_user_id)
                    .context("mailbox.owner_user_id is not a UUID")?;
                sqlx::query(
                    "INSERT INTO mailbox_addresses (mailbox_id, org_id, address, owner_user_id) VALUES ($1, $2, lower($3), $4) \
                     ON CONFLICT (mailbox_id) DO UPDATE SET address = EXCLUDED.address, owner_user_id = EXCLUDED.owner_user_id",
                )
                .bind(id)
                .bind(org()?)
                .bind(&m.email)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
            }
            Some(Payload::MailboxDisconnected(d)) => {
                let id = Uuid::parse_str(&d.mailbox_id).context("mailbox_id is not a UUID")?;
                sqlx::query("DELETE FROM mailbox_addresses WHERE mailbox_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
