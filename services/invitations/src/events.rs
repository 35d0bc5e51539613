//! What the service publishes on `mailroom.invitations.events` (through the outbox, in the
//! transaction that made the change), each with the invitation as it is after it.

use mailroom_platform::kafka::Topic;
use mailroom_platform::outbox::{self, EventActor};
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::wire::timestamp;
use mailroom_types::OrgId;
use sqlx::PgConnection;

use crate::domain::Delivery;
use crate::error::Result;
use crate::store::InvitationRow;

/// The invitation as events carry it.
pub fn snapshot(row: &InvitationRow) -> ev::InvitationSnapshot {
    ev::InvitationSnapshot {
        id: row.id.to_string(),
        email: row.email.clone(),
        state: row.state().upper().into(),
        kind: row.kind().upper().into(),
        delivery: match row.delivery() {
            Delivery::SystemMail => "SYSTEM_MAIL".into(),
            Delivery::OwnMailClient => "OWN_MAIL_CLIENT".into(),
        },
        inviter_user_id: row.inviter_user_id.to_string(),
        user_id: row.user_id.to_string(),
        department_id: row.department_id.map(|d| d.to_string()).unwrap_or_default(),
        expire_time: Some(timestamp(row.expires_at)),
        registration_link_id: row
            .registration_link_id
            .map(|l| l.to_string())
            .unwrap_or_default(),
    }
}

/// Which event a change is.
pub enum Change {
    Created,
    Sent,
    Failed(String),
    Accepted,
    Revoked,
    Expired,
    RegistrationRequested,
    RegistrationApproved,
    RegistrationRejected,
}

/// The event of `change` of `row`.
fn payload(row: &InvitationRow, change: Change) -> ev::envelope::Payload {
    use ev::envelope::Payload;
    let invitation = Some(snapshot(row));
    match change {
        Change::Created => Payload::InvitationCreated(ev::InvitationCreated { invitation }),
        Change::Sent => Payload::InvitationSent(ev::InvitationSent {
            invitation,
            send_count: row.send_count,
        }),
        Change::Failed(reason) => {
            Payload::InvitationFailed(ev::InvitationFailed { invitation, reason })
        }
        Change::Accepted => Payload::InvitationAccepted(ev::InvitationAccepted { invitation }),
        Change::Revoked => Payload::InvitationRevoked(ev::InvitationRevoked { invitation }),
        Change::Expired => Payload::InvitationExpired(ev::InvitationExpired { invitation }),
        Change::RegistrationRequested => {
            Payload::RegistrationRequested(ev::RegistrationRequested { invitation })
        }
        Change::RegistrationApproved => {
            Payload::RegistrationApproved(ev::RegistrationApproved { invitation })
        }
        Change::RegistrationRejected => {
            Payload::RegistrationRejected(ev::RegistrationRejected { invitation })
        }
    }
}

/// Enqueues `change` of `row` on the outbox, in the transaction `conn` made it in.
pub async fn publish(
    conn: &mut PgConnection,
    row: &InvitationRow,
    actor: &EventActor,
    change: Change,
) -> Result<()> {
    outbox::enqueue(
        conn,
        Topic::InvitationsEvents,
        row.org_id,
        &row.id.to_string(),
        actor,
        payload(row, change),
    )
    .await?;
    Ok(())
}

/// As [`publish`] for many changes at once, one statement per organisation among them
/// (a batch of a thousand invitations writes its thousand events in one): each of `changes`
/// is a row and what happened to it, enqueued in their order.
pub async fn publish_many(
    conn: &mut PgConnection,
    changes: Vec<(&InvitationRow, Change)>,
    actor: &EventActor,
) -> Result<()> {
    let mut by_org: Vec<(OrgId, Vec<(String, ev::envelope::Payload)>)> = Vec::new();
    for (row, change) in changes {
        let event = (row.id.to_string(), payload(row, change));
        match by_org.iter_mut().find(|(org, _)| *org == row.org_id) {
            Some((_, events)) => events.push(event),
            None => by_org.push((row.org_id, vec![event])),
        }
    }
    for (org_id, events) in by_org {
        outbox::enqueue_many(conn, Topic::InvitationsEvents, org_id, actor, events).await?;
    }
    Ok(())
}
