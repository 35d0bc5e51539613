//! Mirrors identity's events into relationships: org admins, department heads and parents,
//! membership, who is active, and whether everyone may invite.
//!
//! Each event carries the entity as it is after the change, so the handler makes the stored
//! rows match that snapshot instead of replaying a delta: a replay, or a duplicate the
//! platform's consumer did not catch, changes nothing. The one exception is the invite flag,
//! which moves the `everyone_invites` row only when it differs from the flag last recorded.
//! Every organisation gets its default roles with its first event ([`Writer::begin`] makes
//! them). The platform consumer runs this in the transaction that records the event id.

use async_trait::async_trait;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_types::{DepartmentId, OrgId, UserId};
use sqlx::PgConnection;

use crate::model::Relationship;
use crate::store::{self, Writer};
use crate::wire::{event_id as id, optional_event_id as optional_id};

/// The handler for `mailroom.identity.events`.
pub struct IdentityEvents;

async fn mirror_user(w: &mut Writer<'_>, user: &ev::UserSnapshot) -> anyhow::Result<()> {
    let user_id: UserId = id("user.id", &user.id)?;
    let active = user.state == ev::UserStateSnapshot::Active as i32;
    w.set_user(user_id, active).await?;
    mirror_admin(w, user_id, user.admin).await?;
    let department = optional_id("user.department_id", &user.department_id)?;
    w.set_department(user_id, department).await?;
    Ok(())
}

async fn mirror_admin(w: &mut Writer<'_>, user: UserId, admin: bool) -> anyhow::Result<()> {
    if admin {
        w.write(Relationship::Admin(user)).await?;
    } else {
        w.delete(Relationship::Admin(user)).await?;
    }
    Ok(())
}

async fn mirror_department(
    w: &mut Writer<'_>,
    department: &ev::DepartmentSnapshot,
) -> anyhow::Result<()> {
    let department_id: DepartmentId = id("department.id", &department.id)?;
    let parent = optional_id("department.parent_id", &department.parent_id)?;
    let head = optional_id("department.head_user_id", &department.head_user_id)?;
    w.set_parent(department_id, parent).await?;
    w.set_head(department_id, head).await?;
    Ok(())
}

/// identity's "everyone may invite" flag is the `everyone_invites` row here
/// (`org#inviter@org#member`). Only a change of the flag moves the row: on, it is written;
/// off, deleted (inviting is back to the roles that allow it). Any other organisation update
/// (a rename) leaves the row as it is. An update for an organisation whose flag was never
/// recorded only records it: with no earlier value there is no change to follow.
async fn mirror_invite_flag(
    w: &mut Writer<'_>,
    everyone: bool,
    created: bool,
) -> anyhow::Result<()> {
    let org = w.org();
    let previous = store::invite_flag(w.conn(), org).await?;
    if previous == Some(everyone) {
        return Ok(());
    }
    let follow = created || previous.is_some();
    store::record_invite_flag(w.conn(), org, everyone).await?;
    if !follow {
        return Ok(());
    }
    if everyone {
        w.write(Relationship::EveryoneInvites).await?;
    } else if previous == Some(true) {
        w.delete(Relationship::EveryoneInvites).await?;
    }
    Ok(())
}

#[async_trait]
impl EventHandler for IdentityEvents {
    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        use ev::envelope::Payload;
        let Some(payload) = &event.payload else {
            return Ok(());
        };
        // Only what shapes access; address events and the like pass untouched.
        let relevant = matches!(
            payload,
            Payload::OrganizationCreated(_)
                | Payload::OrganizationUpdated(_)
                | Payload::UserCreated(_)
                | Payload::UserUpdated(_)
                | Payload::UserDismissed(_)
                | Payload::UserRehired(_)
                | Payload::UserRemoved(_)
                | Payload::AdminChanged(_)
                | Payload::DepartmentCreated(_)
                | Payload::DepartmentUpdated(_)
                | Payload::DepartmentDeleted(_)
        );
        if !relevant {
            return Ok(());
        }
        let org: OrgId = id("org_id", &event.org_id)?;
        let mut w = Writer::begin(tx, org).await?;
        match payload {
            Payload::OrganizationCreated(o) => {
                mirror_invite_flag(&mut w, o.allow_everyone_to_invite, true).await?
            }
            Payload::OrganizationUpdated(o) => {
                mirror_invite_flag(&mut w, o.allow_everyone_to_invite, false).await?
            }
            Payload::UserCreated(ev::UserCreated { user: Some(user) })
            | Payload::UserDismissed(ev::UserDismissed { user: Some(user) })
            | Payload::UserRehired(ev::UserRehired { user: Some(user) })
            | Payload::UserRemoved(ev::UserRemoved {
                user: Some(user), ..
            }) => mirror_user(&mut w, user).await?,
            Payload::UserUpdated(ev::UserUpdated {
                user: Some(user), ..
            }) => mirror_user(&mut w, user).await?,
            Payload::AdminChanged(a) => {
                mirror_admin(&mut w, id("user_id", &a.user_id)?, a.admin).await?
            }
            Payload::DepartmentCreated(ev::DepartmentCreated {
                department: Some(d),
            }) => mirror_department(&mut w, d).await?,
            Payload::DepartmentUpdated(ev::DepartmentUpdated {
                department: Some(d),
                ..
            }) => mirror_department(&mut w, d).await?,
            Payload::DepartmentDeleted(d) => {
                w.delete_department(id("department_id", &d.department_id)?)
                    .await?
            }
            other => anyhow::bail!(
                "{} arrived without its snapshot",
                mailroom_platform::outbox::payload_type(other)
            ),
        }
        let changes = w.changes().len();
        let revision = w.finish().await?;
        tracing::debug!(event = %event.r#type, changes, revision, "identity event mirrored");
        Ok(())
    }
}
