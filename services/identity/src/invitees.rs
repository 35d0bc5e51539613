//! The invitations service's side door into identity: INVITED users made for invitees
//! ([`Identity::admit_invitees`]: invitations, direct registrations, registration links) and
//! made ACTIVE when they accept ([`Identity::activate_invitee`]). They are removed when their
//! invitation ends (`invitation_events`).
//!
//! A batch takes its seats at once, under the organisation's lock ([`crate::seats`]): only the
//! invitees whose address could be claimed count, and the batch is refused whole when they do
//! not fit. Activation takes no seat: the INVITED user holds one already. A `check_only` call
//! (a link registration whose address is not confirmed yet) only answers which addresses are
//! free: nothing is made and no seat taken. A batch costs a constant number of statements
//! whatever its size ([`crate::store::invitees`]): claims, holders, seats, users and their
//! `UserCreated` events are each written or read for the whole batch at once.

use mailroom_platform::auth::Principal;
use mailroom_platform::kafka::Topic;
use mailroom_platform::outbox::{self, EventActor};
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::identity::v1 as pb;
use mailroom_platform::types::{DepartmentId, OrgId, UserId};

use crate::domain::{EmailAddress, NewPassword, Text, UserState, NAME_MAX, POSITION_MAX};
use crate::error::{IdentityError, Joining, Result};
use crate::events::{emit_user, id_or_empty, user_snapshot};
use crate::seats;
use crate::service::{parse_id, parse_optional_id, Identity};
use crate::store::{self, UserRow};
use ev::envelope::Payload;

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
    pub holder: UserId,
    pub holder_state: UserState,
}

pub struct Admitted {
    pub admissions: Vec<Admission>,
    pub seat_limit: i32,
    pub seats_used: i64,
}

/// An invitee as asked for, parsed.
struct Invitee {
    id: UserId,
    email: EmailAddress,
    first: Text,
    last: Text,
    position: Text,
}

/// A `UserCreated` event for each of `users` (all of `org_id`), in one statement.
async fn emit_users_created(
    conn: &mut sqlx::PgConnection,
    principal: &Principal,
    org_id: OrgId,
    users: &[UserRow],
) -> Result<()> {
    outbox::enqueue_many(
        conn,
        Topic::IdentityEvents,
        org_id,
        &EventActor::of(principal),
        users.iter().map(|user| {
            (
                user.id.to_string(),
                Payload::UserCreated(ev::UserCreated {
                    user: Some(user_snapshot(user)),
                }),
            )
        }),
    )
    .await?;
    Ok(())
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
        let org_id: OrgId = parse_id("org_id", &req.org_id)?;
        let department_id: Option<DepartmentId> =
            parse_optional_id("department_id", &req.department_id)?;
        if req.invitees.len() > MAX_INVITEES {
            return Err(IdentityError::InvalidArgument(format!(
                "at most {MAX_INVITEES} invitees per call; split the batch"
            )));
        }
        let invitees = req
            .invitees
            .iter()
            .map(|i| {
                Ok(Invitee {
                    id: parse_id("invitees.user_id", &i.user_id)?,
                    email: EmailAddress::parse("invitees.email", &i.email)?,
                    first: Text::parse("invitees.first_name", &i.first_name, NAME_MAX, false)?,
                    last: Text::parse("invitees.last_name", &i.last_name, NAME_MAX, false)?,
                    position: Text::parse("invitees.position", &i.position, POSITION_MAX, false)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;

        let mut tx = self.pool.begin().await?;
        let org = store::orgs::lock(&mut tx, org_id).await?;
        if let Some(d) = department_id {
            store::departments::get(&mut tx, org_id, d).await?;
        }
        // The whole batch in a few statements, whatever its size: which users a retried call
        // made already, the other addresses claimed (in the batch's order), then the holders
        // of those someone else holds.
        let ids: Vec<UserId> = invitees.iter().map(|i| i.id).collect();
        let addresses: Vec<String> = invitees.iter().map(|i| i.email.to_string()).collect();
        let claims = store::invitees::claim_all(&mut tx, org_id, &ids, &addresses).await?;
        if claims.len() != invitees.len() {
            return Err(IdentityError::Internal(format!(
                "{} claims answered for {} invitees",
                claims.len(),
                invitees.len()
            )));
        }
        let held: Vec<String> = invitees
            .iter()
            .zip(&claims)
            .filter(|(_, c)| **c == store::invitees::Claim::Held)
            .map(|(i, _)| i.email.to_string())
            .collect();
        let (holders, holder_rows) = if held.is_empty() {
            Default::default()
        } else {
            let holders = store::invitees::holders(&mut tx, org_id, &held).await?;
            let others: Vec<UserId> = holders.values().copied().collect();
            let rows = store::invitees::users(&mut tx, org_id, &others).await?;
            (holders, rows)
        };
        let mut admissions = Vec::with_capacity(invitees.len());
        let mut new_users = Vec::new();
        for (invitee, claim) in invitees.iter().zip(claims) {
            let email = invitee.email.to_string();
            match claim {
                // A retried call: the user made the first time counts as admitted again.
                store::invitees::Claim::MadeBefore => {}
                store::invitees::Claim::Claimed => new_users.push(invitee),
                store::invitees::Claim::Held => {
                    let holder = *holders.get(invitee.email.as_str()).ok_or_else(|| {
                        IdentityError::Internal(format!(
                            "{} could not be claimed, and nobody holds it",
                            invitee.email
                        ))
                    })?;
                    if holder == invitee.id {
                        new_users.push(invitee);
                    } else {
                        let holder_row = holder_rows
                            .get(&holder)
                            .ok_or_else(|| store::not_found("user", holder))?;
                        admissions.push(Admission {
                            email,
                            taken: Some(Taken {
                                reason: store::addresses::taken_by(&invitee.email, holder_row)
                                    .to_string(),
                                holder,
                                holder_state: holder_row.state(),
                            }),
                        });
                        continue;
                    }
                }
            }
            admissions.push(Admission { email, taken: None });
        }
        if req.check_only {
            // Only asked (a link registration not yet confirmed): the claims are undone, no
            // user is made and no seat taken.
            let used = store::orgs::seats_in_use(&mut tx, org_id).await?;
            tx.rollback().await?;
            return Ok(Admitted {
                admissions,
                seat_limit: org.seat_limit,
                seats_used: used,
            });
        }
        let seats = seats::take(&mut tx, &org, new_users.len() as i64, Joining::Invitees).await?;
        let made: Vec<store::invitees::NewInvitee<'_>> = new_users
            .iter()
            .map(|i| store::invitees::NewInvitee {
                id: i.id,
                email: i.email.as_str(),
                first_name: i.first.as_str(),
                last_name: i.last.as_str(),
                position: i.position.as_str(),
            })
            .collect();
        if !made.is_empty() {
            let users =
                store::invitees::insert_invited(&mut tx, org_id, department_id, &made).await?;
            emit_users_created(&mut tx, principal, org_id, &users).await?;
        }
        tx.commit().await?;
        Ok(Admitted {
            admissions,
            seat_limit: seats.limit,
            seats_used: seats.used,
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn activate_invitee(
        &self,
        principal: &Principal,
        req: pb::ActivateInviteeRequest,
    ) -> Result<UserRow> {
        service_only(principal)?;
        let org_id: OrgId = parse_id("org_id", &req.org_id)?;
        let user_id: UserId = parse_id("user_id", &req.user_id)?;
        let first = Text::parse("first_name", &req.first_name, NAME_MAX, false)?;
        let last = Text::parse("last_name", &req.last_name, NAME_MAX, false)?;
        let password = NewPassword::parse(&req.password)?;
        let hash = self.hashing.hash(password.expose().to_owned()).await?;
        let mut tx = self.pool.begin().await?;
        let before = store::users::lock(&mut tx, org_id, user_id).await?;
        if before.state() != UserState::Invited {
            return Err(IdentityError::FailedPrecondition(format!(
                "the account is {}, not invited: this invitation has already been used",
                before.state().describe()
            )));
        }
        let user = store::users::activate(
            &mut tx,
            org_id,
            user_id,
            hash,
            first.as_str(),
            last.as_str(),
        )
        .await?;
        let mut changed_fields = vec!["state".to_owned()];
        if user.first_name != before.first_name {
            changed_fields.push("first_name".into());
        }
        if user.last_name != before.last_name {
            changed_fields.push("last_name".into());
        }
        emit_user(&mut tx, principal, &user, |snapshot| {
            Payload::UserUpdated(ev::UserUpdated {
                user: snapshot,
                changed_fields,
                previous_department_id: id_or_empty(user.department_id),
            })
        })
        .await?;
        tx.commit().await?;
        Ok(user)
    }
}
