//! The owners' names and states from identity's events, mirrored into the registry's own
//! `users` table and copied into their mailboxes' rows (the owner column, its filter and
//! sort). Each event carries the user as they are after the change, so a replay changes
//! nothing. A dismissed owner's mailboxes stay, marked as the owner's state says.

use anyhow::Context as _;
use async_trait::async_trait;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_types::{OrgId, UserId};
use sqlx::PgConnection;

use crate::store::{self, Owner};

pub struct IdentityEvents;

#[async_trait]
impl EventHandler for IdentityEvents {
    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        use ev::envelope::Payload;
        let user = match &event.payload {
            Some(Payload::UserCreated(ev::UserCreated { user: Some(u) }))
            | Some(Payload::UserDismissed(ev::UserDismissed { user: Some(u) }))
            | Some(Payload::UserRehired(ev::UserRehired { user: Some(u) }))
            | Some(Payload::UserUpdated(ev::UserUpdated { user: Some(u), .. })) => u,
            _ => return Ok(()),
        };
        let org: OrgId = event.org_id.parse().context("org_id is not a UUID")?;
        let user_id: UserId = user.id.parse().context("user.id is not a UUID")?;
        let state = ev::UserStateSnapshot::try_from(user.state).unwrap_or_default();
        let owner = Owner {
            user_id,
            org_id: org,
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            dismissed: state == ev::UserStateSnapshot::Dismissed,
            active: state == ev::UserStateSnapshot::Active,
        };
        store::mirror_user(tx, &owner).await?;
        Ok(())
    }
}
