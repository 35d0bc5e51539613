//! The events the registry publishes (a contract: `proto/mailroom/events/v1/mailboxes.proto`).
//! Each carries the mailbox as it is after the change — never a password or any credential.

use mailroom_platform::kafka::Topic;
use mailroom_platform::outbox::{self, EventActor};
use mailroom_platform::proto::events::v1 as ev;
use sqlx::PgConnection;

use crate::store::MailboxRow;

/// The mailbox as events carry it.
pub fn snapshot(m: &MailboxRow) -> ev::MailboxSnapshot {
    ev::MailboxSnapshot {
        id: m.id.to_string(),
        owner_user_id: m.owner_user_id.to_string(),
        email: m.email.clone(),
        name: m.name.clone(),
        sender_name: m.sender_name.clone(),
        imap_host: m.imap_host.clone(),
        imap_port: m.imap_port,
        smtp_host: m.smtp_host.clone(),
        smtp_port: m.smtp_port,
        in_crm: m.in_crm,
        crm_queue_user_ids: m.crm_queue.iter().map(ToString::to_string).collect(),
        sync_state: m.state().to_proto().as_str_name().to_owned(),
    }
}

/// Writes a mailbox event into the outbox, in the caller's transaction.
pub async fn publish(
    conn: &mut PgConnection,
    m: &MailboxRow,
    actor: &EventActor,
    payload: ev::envelope::Payload,
) -> Result<(), sqlx::Error> {
    outbox::enqueue(
        conn,
        Topic::MailboxesEvents,
        m.org_id,
        &m.id.to_string(),
        actor,
        payload,
    )
    .await?;
    Ok(())
}

/// Asks the sync service to sync a mailbox: on `mailroom.sync.requests` for the workers, and
/// on the registry's own topic for anyone following mailboxes.
pub async fn request_sync(
    conn: &mut PgConnection,
    m: &MailboxRow,
    actor: &EventActor,
    priority: ev::SyncPriority,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let request = ev::SyncRequested {
        mailbox_id: m.id.to_string(),
        priority: priority as i32,
        reason: reason.to_owned(),
    };
    let key = m.id.to_string();
    outbox::enqueue(
        conn,
        Topic::SyncRequests,
        m.org_id,
        &key,
        actor,
        ev::envelope::Payload::SyncRequested(request.clone()),
    )
    .await?;
    outbox::enqueue(
        conn,
        Topic::MailboxesEvents,
        m.org_id,
        &key,
        actor,
        ev::envelope::Payload::SyncRequested(request),
    )
    .await?;
    Ok(())
}
