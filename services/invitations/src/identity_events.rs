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
use mailroom_types::{OrgId, UserId};
use sqlx::PgConnection;

use crate::events::{publish, Change};
use crate::store::{self, Closing};

/// The handler for `mailroom.identity.events`.
pub struct IdentityEvents;

/// What an identity event means for the user's open invitations.
fn outcome(event: &ev::Envelope) -> Option<(&ev::UserSnapshot, Closing)> {
    use ev::envelope::Payload;
    match &event.payload {
        Some(Payload::UserUpdated(ev::UserUpdated { user: Some(u), .. }))
            if u.state == ev::UserStateSnapshot::Active as i32 =>
        {
            Some((u, Closing::Accepted))
        }
        Some(Payload::UserDismissed(ev::UserDismissed { user: Some(u) })) => {
            Some((u, Closing::Revoked("the invited account was dismissed")))
        }
        Some(Payload::UserRemoved(ev::UserRemoved { user: Some(u), .. })) => {
            Some((u, Closing::Revoked("the invited account was removed")))
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
        let user_id: UserId = user.id.parse().context("user.id is not a UUID")?;
        let org_id: OrgId = event.org_id.parse().context("org_id is not a UUID")?;
        let rows = store::close_open_of_user(tx, org_id, user_id, outcome).await?;
        let change = || match outcome {
            Closing::Accepted => Change::Accepted,
            Closing::Revoked(_) => Change::Revoked,
        };
        for row in &rows {
            publish(tx, row, &EventActor::System, change()).await?;
        }
        Ok(())
    }
}
