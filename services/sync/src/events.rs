//! What the sync publishes, written to the outbox in the caller's transaction (so an event
//! goes out exactly when the change it reports commits), keyed by mailbox, as the service
//! `sync`:
//! - on `mailroom.sync.requests`: [`sync_requested`], the scheduler's work for the workers,
//!   at normal priority (people's "sync now" and new passwords come from the registry, high);
//! - on `mailroom.sync.events`: [`new_messages`] (the CRM's feed, written by the engine in
//!   the transaction of each batch of messages it indexes, so a message goes to the feed
//!   exactly when it enters the index, whatever fails afterwards), [`synced`] (MailboxSynced)
//!   and [`sync_failed`] (MailboxSyncFailed).
//!
//! What the sync consumes: the registry's topic (`mailbox_events`) and its own requests (the
//! worker).

use chrono::{DateTime, Utc};
use mailroom_platform::kafka::Topic;
use mailroom_platform::outbox::{self, EventActor};
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::wire::timestamp;
use mailroom_types::{MailboxId, OrgId};
use sqlx::PgConnection;

use crate::engine::SyncReport;
use crate::error::SyncFailure;

/// The service's name as an event actor.
pub const SERVICE: &str = "sync";

/// The `reason` of the requests the scheduler issues (for people reading the topic; the
/// worker goes by the priority).
const SCHEDULED: &str = "scheduled";

fn actor() -> EventActor {
    EventActor::Service(SERVICE.into())
}

async fn emit(
    conn: &mut PgConnection,
    topic: Topic,
    org: OrgId,
    mailbox: MailboxId,
    payload: ev::envelope::Payload,
) -> sqlx::Result<()> {
    outbox::enqueue(conn, topic, org, &mailbox.to_string(), &actor(), payload).await?;
    Ok(())
}

/// A due mailbox handed to the workers.
pub async fn sync_requested(
    conn: &mut PgConnection,
    org: OrgId,
    mailbox: MailboxId,
) -> sqlx::Result<()> {
    let request = ev::SyncRequested {
        mailbox_id: mailbox.to_string(),
        priority: ev::SyncPriority::Normal as i32,
        reason: SCHEDULED.into(),
    };
    let payload = ev::envelope::Payload::SyncRequested(request);
    emit(conn, Topic::SyncRequests, org, mailbox, payload).await
}

/// New messages for the CRM's feed (at most [`crate::engine::FEED_CHUNK`] in one event), in
/// the transaction that indexes them.
pub async fn new_messages(
    conn: &mut PgConnection,
    org: OrgId,
    mailbox: MailboxId,
    feed: ev::NewMessages,
) -> sqlx::Result<()> {
    let payload = ev::envelope::Payload::NewMessages(feed);
    emit(conn, Topic::SyncEvents, org, mailbox, payload).await
}

/// A finished sync: its figures (its new messages went to the feed as they were indexed).
pub async fn synced(
    conn: &mut PgConnection,
    org: OrgId,
    mailbox: MailboxId,
    synced_at: DateTime<Utc>,
    report: SyncReport,
) -> sqlx::Result<()> {
    let synced = ev::MailboxSynced {
        mailbox_id: mailbox.to_string(),
        message_count: report.message_count,
        unread_count: report.unread_count,
        disk_bytes: report.disk_bytes,
        duration_ms: report.duration_ms(),
        new_messages: report.new_messages,
        synced_at: Some(timestamp(synced_at)),
    };
    let payload = ev::envelope::Payload::MailboxSynced(synced);
    emit(conn, Topic::SyncEvents, org, mailbox, payload).await
}

/// A failed sync, with the failures in a row so far, whether the mailbox is now parked, and
/// when the attempt began (before it read the mailbox's login).
pub async fn sync_failed(
    conn: &mut PgConnection,
    org: OrgId,
    mailbox: MailboxId,
    failure: SyncFailure,
    parked: bool,
    failures: i32,
    attempt_started_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    let failed = ev::MailboxSyncFailed {
        mailbox_id: mailbox.to_string(),
        kind: failure.kind.to_proto() as i32,
        message: failure.message,
        parked,
        failures,
        attempt_started_at: Some(timestamp(attempt_started_at)),
    };
    let payload = ev::envelope::Payload::MailboxSyncFailed(failed);
    emit(conn, Topic::SyncEvents, org, mailbox, payload).await
}
