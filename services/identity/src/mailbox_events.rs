//! The handler for `mailroom.mailboxes.events`: the addresses of connected mailboxes, for
//! `GetEmailAddressUsage` ("mailbox of Z"). Each event carries the mailbox as it is after the
//! change, so a replay changes nothing; a disconnected mailbox's address is forgotten.

use anyhow::Context as _;
use async_trait::async_trait;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::types::{MailboxId, OrgId, UserId};
use sqlx::PgConnection;

use crate::store;
use ev::envelope::Payload;

pub struct MailboxEvents;

#[async_trait]
impl EventHandler for MailboxEvents {
    fn wants(&self, event: &ev::Envelope) -> bool {
        matches!(
            event.payload,
            Some(
                Payload::MailboxConnected(_)
                    | Payload::MailboxUpdated(_)
                    | Payload::MailboxTransferred(_)
                    | Payload::MailboxDisconnected(_)
            )
        )
    }

    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        match &event.payload {
            Some(Payload::MailboxConnected(ev::MailboxConnected { mailbox: Some(m) }))
            | Some(Payload::MailboxUpdated(ev::MailboxUpdated {
                mailbox: Some(m), ..
            }))
            | Some(Payload::MailboxTransferred(ev::MailboxTransferred {
                mailbox: Some(m), ..
            })) => {
                let id: MailboxId = m.id.parse().context("mailbox.id is not a UUID")?;
                let owner: UserId = m
                    .owner_user_id
                    .parse()
                    .context("mailbox.owner_user_id is not a UUID")?;
                let org_id: OrgId = event.org_id.parse().context("org_id is not a UUID")?;
                store::addresses::put_mailbox(tx, id, org_id, &m.email, owner).await?;
            }
            Some(Payload::MailboxDisconnected(d)) => {
                let id: MailboxId = d.mailbox_id.parse().context("mailbox_id is not a UUID")?;
                store::addresses::drop_mailbox(tx, id).await?;
            }
            _ => {}
        }
        Ok(())
    }
}
