//! The invitations service's side door into identity: INVITED users made for invitees
//! ([`Identity::admit_invitees`]), made ACTIVE when they accept
//! ([`Identity::activate_invitee`]), and removed when their invitation ends
//! ([`InvitationEvents`], from `mailroom.invitations.events`).
//!
//! Seats are counted here, beside the user rows, under the organisation's row lock: every path
//! that takes a seat (CreateUser, RehireUser, an invitation) takes the same lock, so active users
//! plus pending invitations can never pass the limit, however many calls race.

use anyhow::Context as _;
use async_trait::async_trait;
use mailroom_platform::auth::Principal;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::identity::v1 as pb;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{EmailAddress, NewPassword, Text, UserState};
use crate::error::{IdentityError, Result};
use crate::service::{emit, parse_id, user_snapshot, Identity};
use crate::store;
use crate::users::{insert_user, NewUser, NAME_MAX, POSITION_MAX};

/// At most this many invitees in one call (the invitations service splits larger batches).
pub const MAX_INVITEES: usize = 5_000;

/// One invitee's outcome.
pub struct Admission {
    pub email: String,
    pub taken: Option<Taken>,
}

/// Who holds an address that was asked for.
pub struct Taken {
    pub reason: String,
    pub holder: Uuid,
    pub holder_state: UserState,
}

pub struct Admitted {
    pub admissions: Vec<Admission>,
    pub seat_limit: i32,
    pub seats_used: i64,
}

fn service_only(principal: &Principal) -> Result<()> {
    match principal {
        Principal::Service { .. } => Ok(()),
        Principal::User { .. } => Err(IdentityError::PermissionDenied(
            "this call is for the invitations service; invite people with mailroom.invitations.v1.InvitationService/CreateInvitations",
        )),
    }
}

impl Identity {
    #[tracing::instrument(skip_all, fields(invitees = req.invitees.len()))]
    pub async fn admit_invitees(
        &self,
        principal: &Principal,
        req: pb::AdmitInviteesRequest,
    ) -> Result<Admitted> {
        service_only(principal)?;
        let org_id = parse_id("org_id", &req.org_id)?;
        let department_id = if req.department_id.is_empty() {
            None
        } else {
            Some(parse_id("department_id", &req.department_id)?)
        };
        if req.invitees.len() > MAX_INVITEES {
            return Err(IdentityError::InvalidArgument(format!(
                "at most {MAX_INVITEES} invitees per call; split the batch"
            )));
        }
        struct Parsed {
            id: Uuid,
            email: EmailAddress,
            first: Text,
            last: Text,
            position: Text,
        }
        let mut parsed = Vec::with_capacity(req.invitees.len());
        for i in &req.invitees {
            parsed.push(Parsed {
                id: parse_id("invitees.user_id", &i.user_id)?,
                email: EmailAddress::parse("invitees.email", &i.email)?,
                first: Text::parse("invitees.first_name", &i.first_name, NAME_MAX, false)?,
                last: Text::parse("invitees.last_name", &i.last_name, NAME_MAX, false)?,
                position: Text::parse("invitees.position", &i.position, POSITION_MAX, false)?,
            });
        }

        let mut tx = self.pool.begin().await?;
        let org = store::org_for_update(&mut tx, org_id).await?;
        if let Some(d) = department_id {
            store::department(&mut tx, org_id, d).await?;
        }
        let mut admissions = Vec::with_capacity(parsed.len());
        let mut new_users = Vec::new();
        for p in &parsed {
            // A retried call: the user made the first time counts as admitted again.
            let existing: Option<String> =
                sqlx::query_scalar("SELECT login_email FROM users WHERE org_id = $1 AND id = $2")
                    .bind(org_id)
                    .bind(p.id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if existing.as_deref() == Some(p.email.as_str()) {
                admissions.push(Admission {
                    email: p.email.to_string(),
                    taken: None,
                });
                continue;
            }
            match store::claim(&mut tx, org_id, &p.email, p.id).await {
                Ok(()) => {
                    admissions.push(Admission {
                        email: p.email.to_string(),
                        taken: None,
                    });
                    new_users.push(p);
                }
                Err(err @ IdentityError::AddressTaken { .. }) => {
                    let holder: Uuid = sqlx::query_scalar(
                        "SELECT user_id FROM address_claims WHERE org_id = $1 AND address = $2",
                    )
                    .bind(org_id)
                    .bind(p.email.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                    let holder_row = store::user(&mut tx, org_id, holder).await?;
                    admissions.push(Admission {
                        email: p.email.to_string(),
                        taken: Some(Taken {
                            reason: err.to_string(),
                            holder,
                            holder_state: holder_row.state(),
                        }),
                    });
                }
                Err(other) => return Err(other),
            }
        }
        let used = store::seats_in_use(&mut tx, org_id).await?;
        let wanted = new_users.len() as i64;
        if wanted > 0 && org.seat_limit > 0 && used + wanted > i64::from(org.seat_limit) {
            let left = (i64::from(org.seat_limit) - used).max(0);
            return Err(IdentityError::Seats(format!(
                "not enough seats: inviting {wanted} {} needs {wanted} {}, and {left} of the organisation's {} seats {} left \
                 ({used} taken by active users and pending invitations); invite fewer people, revoke pending invitations, \
                 dismiss someone, or ask your operator to raise the plan's seat limit",
                if wanted == 1 { "person" } else { "people" },
                if wanted == 1 { "seat" } else { "seats" },
                org.seat_limit,
                if left == 1 { "is" } else { "are" },
            )));
        }
        for p in new_users {
            let user = insert_user(
                &mut tx,
                NewUser {
                    id: p.id,
                    org_id,
                    state: UserState::Invited,
                    login: &p.email,
                    contact: &p.email,
                    first_name: p.first.as_str(),
                    last_name: p.last.as_str(),
                    position: p.position.as_str(),
                    department_id,
                    admin: false,
                    password_hash: None,
                },
            )
            .await?;
            emit(
                &mut tx,
                org_id,
                p.id,
                principal,
                ev::envelope::Payload::UserCreated(ev::UserCreated {
                    user: Some(user_snapshot(&user)),
                }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Admitted {
            admissions,
            seat_limit: org.seat_limit,
            seats_used: used + wanted,
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn activate_invitee(
        &self,
        principal: &Principal,
        req: pb::ActivateInviteeRequest,
    ) -> Result<store::UserRow> {
        service_only(principal)?;
        let org_id = parse_id("org_id", &req.org_id)?;
        let user_id = parse_id("user_id", &req.user_id)?;
        let first = Text::parse("first_name", &req.first_name, NAME_MAX, false)?;
        let last = Text::parse("last_name", &req.last_name, NAME_MAX, false)?;
        let password = NewPassword::parse(&req.password)?;
        let hash = crate::passwords::hash(password.expose().to_owned()).await?;
        let mut tx = self.pool.begin().await?;
        let before = store::user_for_update(&mut tx, org_id, user_id).await?;
        if before.state() != UserState::Invited {
            return Err(IdentityError::FailedPrecondition(format!(
                "the account is {}, not invited: this invitation has already been used",
                before.state().describe()
            )));
        }
        let user: store::UserRow = sqlx::query_as(&format!(
            "UPDATE users SET state = 'active', password_hash = $3, \
             first_name = CASE WHEN $4 = '' THEN first_name ELSE $4 END, \
             last_name = CASE WHEN $5 = '' THEN last_name ELSE $5 END, updated_at = now() \
             WHERE org_id = $1 AND id = $2 RETURNING {}",
            store::USER_COLUMNS
        ))
        .bind(org_id)
        .bind(user_id)
        .bind(hash)
        .bind(first.as_str())
        .bind(last.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let mut changed = vec!["state".to_owned()];
        if user.first_name != before.first_name {
            changed.push("first_name".into());
        }
        if user.last_name != before.last_name {
            changed.push("last_name".into());
        }
        emit(
            &mut tx,
            org_id,
            user_id,
            principal,
            ev::envelope::Payload::UserUpdated(ev::UserUpdated {
                user: Some(user_snapshot(&user)),
                changed_fields: changed,
                previous_department_id: user
                    .department_id
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }
}

/// Removes the INVITED user of an invitation that ended, freeing their addresses and seat.
/// A user who is no longer INVITED (they accepted meanwhile) is left alone, so a replay or a
/// late event changes nothing.
async fn remove_invited(
    conn: &mut PgConnection,
    org_id: Uuid,
    user_id: Uuid,
    reason: &str,
) -> anyhow::Result<()> {
    let user = match store::user_for_update(conn, org_id, user_id).await {
        Ok(user) => user,
        // Removed already, or another organisation's event on the shared topic.
        Err(IdentityError::NotFound { .. }) => return Ok(()),
        Err(other) => return Err(other.into()),
    };
    if user.state() != UserState::Invited {
        return Ok(());
    }
    sqlx::query(
        "UPDATE departments SET head_user_id = NULL WHERE org_id = $1 AND head_user_id = $2",
    )
    .bind(org_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM address_claims WHERE org_id = $1 AND user_id = $2")
        .bind(org_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM login_email_changes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM users WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    let mut snapshot = user_snapshot(&user);
    snapshot.state = ev::UserStateSnapshot::Dismissed as i32;
    mailroom_platform::outbox::enqueue(
        conn,
        mailroom_platform::kafka::IDENTITY_EVENTS,
        org_id,
        &user_id.to_string(),
        &mailroom_platform::outbox::EventActor::System,
        ev::envelope::Payload::UserRemoved(ev::UserRemoved {
            user: Some(snapshot),
            reason: reason.to_owned(),
        }),
    )
    .await?;
    Ok(())
}

/// The handler for `mailroom.invitations.events`: an invitation that ended without being
/// accepted takes its INVITED user with it.
pub struct InvitationEvents;

fn ends_an_invitation(event: &ev::Envelope) -> bool {
    use ev::envelope::Payload;
    matches!(
        event.payload,
        Some(
            Payload::InvitationExpired(_)
                | Payload::InvitationRevoked(_)
                | Payload::RegistrationRejected(_)
        )
    )
}

fn names_a_mailbox(event: &ev::Envelope) -> bool {
    use ev::envelope::Payload;
    matches!(
        event.payload,
        Some(
            Payload::MailboxConnected(_)
                | Payload::MailboxUpdated(_)
                | Payload::MailboxTransferred(_)
                | Payload::MailboxDisconnected(_)
        )
    )
}

#[async_trait]
impl EventHandler for InvitationEvents {
    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        use ev::envelope::Payload;
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
        let org_id = Uuid::parse_str(&event.org_id).context("org_id is not a UUID")?;
        let user_id =
            Uuid::parse_str(&invitation.user_id).context("invitation.user_id is not a UUID")?;
        remove_invited(tx, org_id, user_id, reason).await
    }
}

/// Everything identity follows: the registry's mailbox addresses and the invitations' ends.
pub struct Followed;

#[async_trait]
impl EventHandler for Followed {
    fn wants(&self, event: &ev::Envelope) -> bool {
        ends_an_invitation(event) || names_a_mailbox(event)
    }

    async fn handle(&self, tx: &mut PgConnection, event: &ev::Envelope) -> anyhow::Result<()> {
        crate::mailbox_events::MailboxEvents
            .handle(tx, event)
            .await?;
        InvitationEvents.handle(tx, event).await
    }
}
