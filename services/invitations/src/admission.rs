//! Admission: how every way in (an email invitation, a direct registration, a
//! quick-registration link) becomes invitations, in three steps.
//!
//! 1. The rows are written as `admitting` (the partial unique index on open invitations per
//!    address settles a race between two inviters of one address).
//! 2. Identity is asked for the INVITED users in one call, which claims the addresses and
//!    counts the seats for the whole batch under the organisation's lock.
//! 3. The admitted rows become `pending` (mail queued) or `awaiting_approval`, with their
//!    events, in one transaction; the others are deleted and reported.
//!
//! A crash between 1 and 3 leaves `admitting` rows, which the sweeper ([`crate::expiry`])
//! finishes by asking identity again with the same user ids (identity admits nothing twice).

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::identity::v1 as ipb;
use mailroom_platform::proto::invitations::v1 as pb;
use mailroom_types::{InvitationId, UserId};

use crate::domain::{Batch, Delivery, DeliveryState, EmailAddress, Invitee, State};
use crate::error::{InvitationError, Result};
use crate::events::{publish_many, Change};
use crate::service::Invitations;
use crate::store::admission::Admitting;
use crate::store::{self, InvitationRow};
use crate::token;

/// An address not invited, and why.
pub struct Rejected {
    pub input: String,
    pub code: pb::RejectionReason,
    pub reason: String,
    pub user_id: Option<UserId>,
    pub user_state: String,
}

impl Rejected {
    /// An entry of a pasted list that is not an address, or repeats one.
    pub fn in_list(input: String, code: pb::RejectionReason, reason: String) -> Self {
        Self {
            input,
            code,
            reason,
            user_id: None,
            user_state: String::new(),
        }
    }

    /// The address has an open invitation already: said plainly, with the way out.
    fn already_invited(input: String, email: &EmailAddress, user: Option<UserId>) -> Self {
        Self {
            input,
            code: pb::RejectionReason::AlreadyInvited,
            reason: format!(
                "{email} already has an open invitation; resend it (ResendInvitation) or revoke it first"
            ),
            user_id: user,
            user_state: "INVITED".into(),
        }
    }
}

/// What one admission produced: the invitations (with their link secret when the caller
/// hands the link on: own mail client), and the refusals.
pub struct Admitted {
    pub invitations: Vec<(InvitationRow, Option<String>)>,
    pub rejected: Vec<Rejected>,
}

fn state_word(state: i32) -> &'static str {
    match ipb::UserState::try_from(state).unwrap_or_default() {
        ipb::UserState::Invited => "INVITED",
        ipb::UserState::Active => "ACTIVE",
        ipb::UserState::Dismissed => "DISMISSED",
        ipb::UserState::Unspecified => "",
    }
}

impl Invitations {
    /// The three steps in the module docs.
    #[tracing::instrument(skip_all, fields(invitees = invitees.len()))]
    pub async fn admit(&self, batch: &Batch, invitees: Vec<Invitee>) -> Result<Admitted> {
        let mut rejected = Vec::new();
        let addresses: Vec<String> = invitees.iter().map(|i| i.email.to_string()).collect();

        // Already invited (and not yet over).
        let open = store::admission::open_by_address(&self.pool, batch.org_id, &addresses).await?;
        let mut fresh = Vec::with_capacity(invitees.len());
        for invitee in invitees {
            match open.get(invitee.email.as_str()) {
                Some(user) => rejected.push(Rejected::already_invited(
                    invitee.input,
                    &invitee.email,
                    Some(*user),
                )),
                None => fresh.push(invitee),
            }
        }

        // 1. The rows, as `admitting`.
        let rows: Vec<Admitting<'_>> = fresh
            .iter()
            .map(|invitee| Admitting {
                id: InvitationId::new(),
                user_id: UserId::new(),
                invitee,
            })
            .collect();
        let expires = Utc::now() + self.ttl();
        let inserted = store::admission::insert(&self.pool, batch, expires, &rows).await?;
        let written: Vec<(InvitationId, UserId)> = rows.iter().map(|r| (r.id, r.user_id)).collect();
        let mut asked = Vec::new();
        for ((id, user), invitee) in written.into_iter().zip(fresh) {
            if inserted.contains(&id) {
                asked.push((id, user, invitee));
            } else {
                // Another inviter's invitation of the same address won the race.
                rejected.push(Rejected::already_invited(
                    invitee.input,
                    &invitee.email,
                    None,
                ));
            }
        }
        if asked.is_empty() {
            return Ok(Admitted {
                invitations: Vec::new(),
                rejected,
            });
        }

        // 2. Identity: the INVITED users and the seats, for the whole batch at once.
        let request: Vec<ipb::Invitee> = asked
            .iter()
            .map(|(_, user, i)| ipb::Invitee {
                user_id: user.to_string(),
                email: i.email.to_string(),
                first_name: i.first_name.clone(),
                last_name: i.last_name.clone(),
                position: i.position.clone(),
            })
            .collect();
        let asked_ids: Vec<InvitationId> = asked.iter().map(|(id, _, _)| *id).collect();
        let answer = match self
            .identity
            .admit(batch.org_id, batch.department_id, request)
            .await
            .map_err(InvitationError::from)
        {
            Ok(answer) => answer,
            // Identity said no: nothing was made there; the rows go.
            Err(
                err @ (InvitationError::Seats(_)
                | InvitationError::InvalidArgument(_)
                | InvitationError::NotFound(_)
                | InvitationError::PermissionDenied(_)
                | InvitationError::FailedPrecondition(_)),
            ) => {
                store::admission::remove(&self.pool, &asked_ids).await?;
                return Err(err);
            }
            // No answer: identity may have made the users. The rows stay `admitting` and the
            // sweeper finishes them (asking again with the same ids admits nothing twice).
            Err(err) => {
                return Err(InvitationError::Unavailable(format!(
                    "{err}; the invitations are completed once identity answers (see ListInvitations before inviting again)"
                )))
            }
        };
        if answer.admissions.len() != asked.len() {
            return Err(InvitationError::Internal(format!(
                "identity answered {} admissions for {} invitees",
                answer.admissions.len(),
                asked.len()
            )));
        }

        // 3. Pending (or awaiting approval), with their events; the refused ones go.
        let mut admitted_ids = Vec::new();
        let mut refused_ids = Vec::new();
        // INVITED holders without an open invitation here: the invitee of one that has just
        // ended (identity removes them shortly), or a person an admin made without one.
        let invited_holders: Vec<UserId> = asked
            .iter()
            .zip(&answer.admissions)
            .filter(|((_, _, invitee), a)| {
                !a.admitted
                    && state_word(a.holder_state) == "INVITED"
                    && !open.contains_key(invitee.email.as_str())
            })
            .filter_map(|(_, a)| a.holder_user_id.parse::<UserId>().ok())
            .collect();
        let closing = if invited_holders.is_empty() {
            HashSet::new()
        } else {
            store::admission::invitees_among(&self.pool, batch.org_id, &invited_holders).await?
        };
        for ((id, _, invitee), admission) in asked.into_iter().zip(answer.admissions) {
            if admission.admitted {
                admitted_ids.push(id);
                continue;
            }
            refused_ids.push(id);
            let holder = admission.holder_user_id.parse::<UserId>().ok();
            let state = state_word(admission.holder_state);
            rejected.push(if state == "INVITED" && open.contains_key(invitee.email.as_str()) {
                Rejected::already_invited(invitee.input, &invitee.email, holder)
            } else if state == "INVITED" && holder.is_some_and(|h| closing.contains(&h)) {
                Rejected {
                    input: invitee.input,
                    code: pb::RejectionReason::AlreadyInvited,
                    reason: format!(
                        "{} belongs to the invitee of an invitation that has just ended and is still being closed: try again in a few seconds",
                        invitee.email
                    ),
                    user_id: holder,
                    user_state: state.into(),
                }
            } else {
                // Held by a user (an active, dismissed, or INVITED one an admin made without an
                // invitation): identity's sentence names them and the way out.
                Rejected {
                    input: invitee.input,
                    code: pb::RejectionReason::AlreadyAUser,
                    reason: admission.reason,
                    user_id: holder,
                    user_state: state.into(),
                }
            });
        }
        let invitations = self
            .finish_admission(&admitted_ids, &refused_ids, batch.target, &batch.actor)
            .await?;
        Ok(Admitted {
            invitations,
            rejected,
        })
    }

    /// Step 3 for rows identity admitted (and removal of the ones it refused). Returns the
    /// invitations with the link secret of those the caller hands on themselves.
    pub async fn finish_admission(
        &self,
        admitted: &[InvitationId],
        refused: &[InvitationId],
        target: State,
        actor: &EventActor,
    ) -> Result<Vec<(InvitationRow, Option<String>)>> {
        let mut tx = self.pool.begin().await?;
        if !refused.is_empty() {
            store::admission::remove(&mut *tx, refused).await?;
        }
        // Own-mail-client invitations get their secret now (the inviter sends the link);
        // Mailroom's own mail gets one when it is sent.
        let secrets: Vec<(InvitationId, token::NewToken)> =
            admitted.iter().map(|id| (*id, token::generate())).collect();
        let hashes: Vec<Vec<u8>> = secrets.iter().map(|(_, t)| t.hash.clone()).collect();
        let rows = store::admission::complete(&mut tx, admitted, target, &hashes).await?;
        let change = || match target {
            State::AwaitingApproval => Change::RegistrationRequested,
            _ => Change::Created,
        };
        publish_many(
            &mut tx,
            rows.iter().map(|row| (row, change())).collect(),
            actor,
        )
        .await?;
        tx.commit().await?;
        if rows
            .iter()
            .any(|r| r.delivery_state() == DeliveryState::Queued)
        {
            self.queued.notify_one();
        }
        let mut secrets: HashMap<InvitationId, String> =
            secrets.into_iter().map(|(id, t)| (id, t.secret)).collect();
        let mut by_id: HashMap<InvitationId, InvitationRow> =
            rows.into_iter().map(|r| (r.id, r)).collect();
        // In the order asked for.
        Ok(admitted
            .iter()
            .filter_map(|id| by_id.remove(id))
            .map(|row| {
                let secret = (row.delivery() == Delivery::OwnMailClient)
                    .then(|| secrets.remove(&row.id))
                    .flatten();
                (row, secret)
            })
            .collect())
    }
}
