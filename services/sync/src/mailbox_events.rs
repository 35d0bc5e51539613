//! The registry's events, into the schedule: a connected mailbox is due at once; a new
//! password or IMAP server un-parks a mailbox whose login failed and syncs it now; a transfer
//! moves it to its new owner's tier; a disconnected mailbox leaves the schedule and the index.

use anyhow::Context as _;
use async_trait::async_trait;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::proto::events::v1 as ev;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store;

pub struct MailboxEvents;

fn id(what: &str, value: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(value).with_context(|| format!("{what} `{value}` is not a UUID"))
}

async fn describe(
    tx: &mut PgConnection,
    org: Uuid,
    mailbox: &ev::MailboxSnapshot,
) -> anyhow::Result<Uuid> {
    let mailbox_id = id("mailbox id", &mailbox.id)?;
    let owner = id("owner_user_id", &mailbox.owner_user_id)?;
    store::upsert_mailbox(tx, mailbox_id, org, owner, mailbox.in_crm).await?;
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
                describe(tx, id("org_id", &event.org_id)?, m).await?;
            }
            Payload::MailboxUpdated(ev::MailboxUpdated {
                mailbox: Some(m),
                changed_fields,
            }) => {
                let mailbox = describe(tx, id("org_id", &event.org_id)?, m).await?;
                if changed_fields
                    .iter()
                    .any(|f| matches!(f.as_str(), "password" | "imap"))
                {
                    store::unpark(tx, mailbox).await?;
                }
            }
            Payload::MailboxDisconnected(d) => {
                store::forget_mailbox(tx, id("mailbox_id", &d.mailbox_id)?).await?;
            }
            _ => {}
        }
        Ok(())
    }
}
