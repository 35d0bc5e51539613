//! The registry's events, into the schedule: a connected mailbox is due at once; a new
//! password or IMAP server un-parks a mailbox whose login failed and syncs it now; a transfer
//! moves it to its new owner's tier; a disconnected mailbox leaves the schedule and the index.

use anyhow::Context as _;
use async_trait::async_trait;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_types::{MailboxId, OrgId, UserId};
use sqlx::PgConnection;

use crate::store::schedule;

/// The consumer of `mailroom.mailboxes.events`.
pub struct MailboxEvents;

fn org_of(event: &ev::Envelope) -> anyhow::Result<OrgId> {
    OrgId::parse("org_id", &event.org_id).context("a registry event without its organisation")
}

async fn describe(
    tx: &mut PgConnection,
    org: OrgId,
    mailbox: &ev::MailboxSnapshot,
) -> anyhow::Result<MailboxId> {
    let mailbox_id = MailboxId::parse("mailbox.id", &mailbox.id)
        .context("a registry event's mailbox without its id")?;
    let owner = UserId::parse("mailbox.owner_user_id", &mailbox.owner_user_id)
        .context("a registry event's mailbox without its owner")?;
    schedule::upsert_mailbox(tx, mailbox_id, org, owner, mailbox.in_crm).await?;
    Ok(mailbox_id)
}

#[async_trait]
impl EventHandler for MailboxEvents {
    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        use ev::envelope::Payload;
        let Some(payload) = &event.payload else {
            return Ok(());
        };
        match payload {
            Payload::MailboxConnected(ev::MailboxConnected { mailbox: Some(m) })
            | Payload::MailboxTransferred(ev::MailboxTransferred {
                mailbox: Some(m), ..
            }) => {
                describe(tx, org_of(event)?, m).await?;
            }
            Payload::MailboxUpdated(ev::MailboxUpdated {
                mailbox: Some(m),
                changed_fields,
            }) => {
                let mailbox = describe(tx, org_of(event)?, m).await?;
                if changed_fields
                    .iter()
                    .any(|f| matches!(f.as_str(), "password" | "imap"))
                {
                    schedule::unpark(tx, mailbox).await?;
                }
            }
            Payload::MailboxDisconnected(d) => {
                let mailbox = MailboxId::parse("mailbox_id", &d.mailbox_id)
                    .context("a MailboxDisconnected without its mailbox id")?;
                schedule::forget_mailbox(tx, mailbox).await?;
            }
            _ => {}
        }
        Ok(())
    }
}
