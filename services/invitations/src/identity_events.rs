//! What identity says about invitees, applied to their open invitations: a user made ACTIVE
//! some other way (an admin gave them a password) has accepted; a user dismissed, or removed,
//! can no longer accept, so the invitation is revoked. Our own accept makes identity publish
//! the same ACTIVE snapshot, which then finds the invitation already accepted and changes
//! nothing; a replay changes nothing either.

use anyhow::Context as _;
use async_trait::async_trait;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::events::v1 as ev;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::events::{publish, Change};
use crate::store::{InvitationRow, INVITATION_COLUMNS};

/// The handler for `mailroom.identity.events`.
pub struct IdentityEvents;

/// What an identity event means for the user's open invitations.
enum Outcome {
    Accepted,
    Revoked(&'static str),
}

fn outcome(event: &ev::Envelope) -> Option<(&ev::UserSnapshot, Outcome)> {
    use ev::envelope::Payload;
    match &event.payload {
        Some(Payload::UserUpdated(ev::UserUpdated { user: Some(u), .. }))
            if u.state == ev::UserStateSnapshot::Active as i32 =>
        {
            Some((u, Outcome::Accepted))
        }
        Some(Payload::UserDismissed(ev::UserDismissed { user: Some(u) })) => {
            Some((u, Outcome::Revoked("the invited account was dismissed")))
        }
        Some(Payload::UserRemoved(ev::UserRemoved { user: Some(u), .. })) => {
            Some((u, Outcome::Revoked("the invited account was removed")))
        }
        _ => None,
    }
}

#[async_trait]
impl EventHandler for IdentityEvents {
    fn wants(&self, event: &ev::Envelope) -> bool {
        outcome(event).is_some()
    }

    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        let Some((user, outcome)) = outcome(event) else {
            return Ok(());
        };
        let user_id = Uuid::parse_str(&user.id).context("user.id is not a UUID")?;
        let org_id = Uuid::parse_str(&event.org_id).context("org_id is not a UUID")?;
        let (sql, change) = match outcome {
            Outcome::Accepted => (
                "UPDATE invitations SET state = 'accepted', accepted_at = now(), updated_at = now(), \
                 delivery_state = CASE WHEN delivery_state = 'queued' THEN 'not_sent' ELSE delivery_state END, \
                 next_attempt_at = NULL, failure_reason = $3 \
                 WHERE org_id = $1 AND user_id = $2 AND state IN ('pending', 'failed', 'awaiting_approval') RETURNING ",
                None,
            ),
            Outcome::Revoked(reason) => (
                "UPDATE invitations SET state = 'revoked', updated_at = now(), \
                 delivery_state = CASE WHEN delivery_state = 'queued' THEN 'not_sent' ELSE delivery_state END, \
                 next_attempt_at = NULL, failure_reason = $3 \
                 WHERE org_id = $1 AND user_id = $2 AND state IN ('pending', 'failed', 'awaiting_approval') RETURNING ",
                Some(reason),
            ),
        };
        let rows: Vec<InvitationRow> = sqlx::query_as(&format!("{sql}{INVITATION_COLUMNS}"))
            .bind(org_id)
            .bind(user_id)
            .bind(change.unwrap_or_default())
            .fetch_all(&mut *tx)
            .await?;
        for row in &rows {
            let change = if change.is_some() {
                Change::Revoked
            } else {
                Change::Accepted
            };
            publish(tx, row, &EventActor::System, change)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(())
    }
}
