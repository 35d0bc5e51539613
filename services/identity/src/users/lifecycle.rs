//! DismissUser and RehireUser. A dismissed person keeps their row and addresses (so history
//! still names them and nobody else takes their address unnoticed), loses every session and
//! heads no department; rehiring takes a seat again.

use mailroom_platform::auth::Principal;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::types::UserId;

use super::{ensure_another_admin, lock_for_change};
use crate::domain::UserState;
use crate::error::{IdentityError, Joining, Result};
use crate::events::{emit_department, emit_user, id_or_empty};
use crate::revocation::revoke_sessions;
use crate::seats;
use crate::service::{caller_org, parse_id, Identity};
use crate::store::{self, UserRow};
use ev::envelope::Payload;

impl Identity {
    #[tracing::instrument(skip_all)]
    pub async fn dismiss_user(&self, principal: &Principal, id: &str) -> Result<UserRow> {
        let org_id = caller_org(principal)?;
        let id: UserId = parse_id("id", id)?;
        let mut tx = self.pool.begin().await?;
        let (org, user) = lock_for_change(&mut tx, principal, org_id, id).await?;
        if user.state() == UserState::Dismissed {
            return Err(IdentityError::FailedPrecondition(format!(
                "{} is already dismissed",
                user.display_name()
            )));
        }
        if user.is_admin && user.state() == UserState::Active {
            ensure_another_admin(&mut tx, &org, id).await?;
        }
        store::users::dismiss(&mut tx, id).await?;
        let revoked = revoke_sessions(
            &mut tx,
            org_id,
            id,
            principal,
            ev::RevocationReason::Dismissed,
        )
        .await?;
        // A dismissed person supervises no one: their departments lose their head.
        for d in store::departments::drop_head(&mut tx, org_id, id).await? {
            emit_department(&mut tx, principal, &d, |department| {
                Payload::DepartmentUpdated(ev::DepartmentUpdated {
                    department,
                    previous_parent_id: id_or_empty(d.parent_id),
                    previous_head_user_id: id.to_string(),
                })
            })
            .await?;
        }
        let user = store::users::get(&mut tx, org_id, id).await?;
        emit_user(&mut tx, principal, &user, |user| {
            Payload::UserDismissed(ev::UserDismissed { user })
        })
        .await?;
        tx.commit().await?;
        revoked.apply(self);
        Ok(user)
    }

    #[tracing::instrument(skip_all)]
    pub async fn rehire_user(&self, principal: &Principal, id: &str) -> Result<UserRow> {
        let org_id = caller_org(principal)?;
        let id: UserId = parse_id("id", id)?;
        let mut tx = self.pool.begin().await?;
        let (org, user) = lock_for_change(&mut tx, principal, org_id, id).await?;
        if user.state() != UserState::Dismissed {
            return Err(IdentityError::FailedPrecondition(format!(
                "{} is {}, not dismissed; only dismissed users can be rehired",
                user.display_name(),
                user.state().describe()
            )));
        }
        seats::take(&mut tx, &org, 1, Joining::Rehire).await?;
        store::users::rehire(&mut tx, id).await?;
        let user = store::users::get(&mut tx, org_id, id).await?;
        emit_user(&mut tx, principal, &user, |user| {
            Payload::UserRehired(ev::UserRehired { user })
        })
        .await?;
        tx.commit().await?;
        Ok(user)
    }
}
