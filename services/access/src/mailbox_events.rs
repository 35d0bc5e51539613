//! Mailbox ownership from the mailbox registry's events: the registry is the one writer of
//! `mailbox#owner`.
//!
//! A connected or transferred mailbox gets its owner; one whose snapshot names another owner
//! (an update) is corrected to it; a disconnected one loses its owner and every reader grant,
//! so a mailbox connected again later starts with no readers. Events are keyed by mailbox, so
//! they arrive in order; a mailbox connected while access was down gets its owner when access
//! comes back and reads the topic from where its consumer group left off.

use async_trait::async_trait;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_types::{MailboxId, OrgId, UserId};
use sqlx::PgConnection;

use crate::model::Relationship;
use crate::store::Writer;
use crate::wire::event_id as id;

/// The handler for `mailroom.mailboxes.events`.
pub struct MailboxEvents;

async fn own(w: &mut Writer<'_>, mailbox: &ev::MailboxSnapshot) -> anyhow::Result<()> {
    let mailbox_id: MailboxId = id("mailbox.id", &mailbox.id)?;
    let owner: UserId = id("mailbox.owner_user_id", &mailbox.owner_user_id)?;
    w.write(Relationship::Owner(mailbox_id, owner)).await?;
    Ok(())
}

#[async_trait]
impl EventHandler for MailboxEvents {
    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        use ev::envelope::Payload;
        let Some(payload) = &event.payload else {
            return Ok(());
        };
        if !matches!(
            payload,
            Payload::MailboxConnected(_)
                | Payload::MailboxUpdated(_)
                | Payload::MailboxTransferred(_)
                | Payload::MailboxDisconnected(_)
        ) {
            return Ok(());
        }
        let org: OrgId = id("org_id", &event.org_id)?;
        let mut w = Writer::begin(tx, org).await?;
        match payload {
            Payload::MailboxConnected(ev::MailboxConnected { mailbox: Some(m) })
            | Payload::MailboxUpdated(ev::MailboxUpdated {
                mailbox: Some(m), ..
            })
            | Payload::MailboxTransferred(ev::MailboxTransferred {
                mailbox: Some(m), ..
            }) => own(&mut w, m).await?,
            Payload::MailboxDisconnected(d) => {
                w.disconnect_mailbox(id("mailbox_id", &d.mailbox_id)?)
                    .await?
            }
            other => anyhow::bail!(
                "{} arrived without its mailbox snapshot",
                mailroom_platform::outbox::payload_type(other)
            ),
        }
        let changes = w.changes().len();
        let revision = w.finish().await?;
        tracing::debug!(event = %event.r#type, changes, revision, "mailbox event mirrored");
        Ok(())
    }
}
