//! The handler for `mailroom.invitations.events`: an invitation that ended without being
//! accepted (expired, revoked, its registration rejected) takes its INVITED user with it,
//! which frees the seat and the address. A user who is no longer INVITED (they accepted
//! meanwhile) is left alone, so a replay or a late event changes nothing.

use anyhow::Context as _;
use async_trait::async_trait;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::types::{OrgId, UserId};
use sqlx::PgConnection;

use crate::domain::UserState;
use crate::error::IdentityError;
use crate::events::{emit_as, user_snapshot};
use crate::store;
use ev::envelope::Payload;

pub struct InvitationEvents;

#[async_trait]
impl EventHandler for InvitationEvents {
    fn wants(&self, event: &ev::Envelope) -> bool {
        matches!(
            event.payload,
            Some(
                Payload::InvitationExpired(_)
                    | Payload::InvitationRevoked(_)
                    | Payload::RegistrationRejected(_)
            )
        )
    }

    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        let (invitation, reason) = match &event.payload {
            Some(Payload::InvitationExpired(e)) => (&e.invitation, "the invitation expired"),
            Some(Payload::InvitationRevoked(e)) => (&e.invitation, "the invitation was revoked"),
            Some(Payload::RegistrationRejected(e)) => {
                (&e.invitation, "the registration was rejected")
            }
            _ => return Ok(()),
        };
        let Some(invitation) = invitation else {
            anyhow::bail!("{} arrived without its invitation", event.r#type);
        };
        if invitation.user_id.is_empty() {
            return Ok(());
        }
        let org_id: OrgId = event.org_id.parse().context("org_id is not a UUID")?;
        let user_id: UserId = invitation
            .user_id
            .parse()
            .context("invitation.user_id is not a UUID")?;
        remove_invited(tx, org_id, user_id, reason).await
    }
}

/// Removes the INVITED user of an invitation that ended, freeing their addresses and seat.
async fn remove_invited(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
    reason: &str,
) -> anyhow::Result<()> {
    let user = match store::users::lock(conn, org_id, user_id).await {
        Ok(user) => user,
        // Removed already, or another organisation's event on the shared topic.
        Err(IdentityError::NotFound { .. }) => return Ok(()),
        Err(other) => return Err(other.into()),
    };
    if user.state() != UserState::Invited {
        return Ok(());
    }
    store::users::remove(conn, org_id, user_id).await?;
    let mut snapshot = user_snapshot(&user);
    snapshot.state = ev::UserStateSnapshot::Dismissed as i32;
    emit_as(
        conn,
        org_id,
        user_id,
        &EventActor::System,
        Payload::UserRemoved(ev::UserRemoved {
            user: Some(snapshot),
            reason: reason.to_owned(),
        }),
    )
    .await?;
    Ok(())
}
