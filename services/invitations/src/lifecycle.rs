//! What happens to an invitation after it is made: previewed and accepted by the invitee (the
//! token is the credential; accepting a registration through a link confirms its address and
//! only then takes its seat), read, resent, revoked, approved or rejected, deleted from the list.

use chrono::Utc;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::identity::v1 as ipb;
use mailroom_platform::proto::invitations::v1 as pb;
use mailroom_types::{InvitationId, Permission};

use crate::domain::{DeliveryState, State};
use crate::error::{InvitationError, Result};
use crate::events::{publish, Change};
use crate::links;
use crate::service::{Caller, Invitations};
use crate::store::{self, InvitationRow};
use crate::token;
use sqlx::PgConnection;

fn unknown_link() -> InvitationError {
    InvitationError::NotFound(
        "this invitation link is not valid: it may be mistyped, or replaced by a newer invitation mail; ask the person who invited you to send it again".into(),
    )
}

fn when(at: chrono::DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Why an invitation's link cannot be used now, if it cannot.
fn unusable(row: &InvitationRow) -> Option<InvitationError> {
    let said = |s: String| Some(InvitationError::LinkNotUsable(s));
    match row.state() {
        State::Pending | State::Failed if row.expires_at <= Utc::now() => said(format!(
            "this invitation expired on {}; ask {} for a new one",
            when(row.expires_at),
            who(row)
        )),
        State::Pending | State::Failed => None,
        State::Accepted => said(format!(
            "this invitation was already used{}; sign in with {}",
            row.accepted_at
                .map(|at| format!(" on {}", when(at)))
                .unwrap_or_default(),
            row.email
        )),
        State::Expired => said(format!(
            "this invitation expired on {}; ask {} for a new one",
            when(row.expires_at),
            who(row)
        )),
        State::Revoked => said(format!(
            "this invitation was revoked; ask {} if you should still join",
            who(row)
        )),
        State::Rejected => said("this registration was declined by the organisation's admin".into()),
        State::AwaitingApproval => said(
            "this registration is waiting for an admin's approval; you will get a mail when it is approved".into(),
        ),
        State::Admitting => Some(unknown_link()),
    }
}

fn who(row: &InvitationRow) -> String {
    if row.inviter_name.is_empty() {
        format!("{}'s admins", row.organization_name)
    } else {
        row.inviter_name.clone()
    }
}

impl Invitations {
    /// The invitation a presented secret opens.
    async fn by_secret(
        &self,
        conn: &mut sqlx::PgConnection,
        secret: &str,
    ) -> Result<InvitationRow> {
        if !token::well_formed(secret) {
            return Err(unknown_link());
        }
        let hash = token::hash(secret);
        let (row, stored) = store::by_token_for_update(conn, &hash)
            .await?
            .ok_or_else(unknown_link)?;
        if !token::same(&stored, &hash) {
            return Err(unknown_link());
        }
        Ok(row)
    }

    #[tracing::instrument(skip_all)]
    pub async fn preview(&self, secret: &str) -> Result<InvitationRow> {
        let mut tx = self.pool.begin().await?;
        let row = self.by_secret(&mut tx, secret).await?;
        tx.rollback().await?;
        if let Some(err) = unusable(&row) {
            return Err(err);
        }
        Ok(row)
    }

    /// Makes the invitee's INVITED user ACTIVE. Single use, and holding no lock while identity
    /// answers: the invitation is claimed for the acceptance under its row lock for a moment
    /// ([`store::claim_acceptance`]), identity is asked with nothing held, and the answer is
    /// recorded in a transaction of its own. A second acceptance meanwhile is told to wait (and
    /// identity activates an INVITED user once only, whatever reaches it). A registration
    /// through a link, whose address this confirms, gets its user and its seat first
    /// ([`Self::admit_confirmed`]). The claim carries a token of this acceptance's own and is
    /// released (only while still its own) when the acceptance fails or is cancelled
    /// ([`AcceptanceClaim`]); ACCEPTED is recorded whoever holds the claim then, since identity
    /// activated the invitee.
    #[tracing::instrument(skip_all)]
    pub async fn accept(
        &self,
        req: pb::AcceptInvitationRequest,
    ) -> Result<(InvitationRow, ipb::User)> {
        let (row, claim) = self.claim_for_acceptance(&req).await?;
        let accepted = self.accept_claimed(&row, req).await;
        if accepted.is_ok() {
            // Recorded ACCEPTED, which cleared the claim.
            claim.settled();
        } else {
            // Released before the answer goes out, so the invitee may try again at once (a
            // claim already cleared by a recorded answer, or taken over, is left as it is).
            claim.release().await;
        }
        accepted
    }

    /// Checks the link under the invitation's lock and claims the invitation for this
    /// acceptance; commits at once.
    async fn claim_for_acceptance(
        &self,
        req: &pb::AcceptInvitationRequest,
    ) -> Result<(InvitationRow, AcceptanceClaim)> {
        let mut tx = self.pool.begin().await?;
        let row = self.by_secret(&mut tx, &req.token).await?;
        if let Some(err) = unusable(&row) {
            return Err(err);
        }
        if row.first_name.is_empty() && req.first_name.trim().is_empty() {
            return Err(InvitationError::InvalidArgument(
                "`first_name` is required: how should your colleagues see you?".into(),
            ));
        }
        if store::being_accepted(&mut *tx, row.id).await? {
            return Err(being_accepted());
        }
        if row.awaits_confirmation() {
            self.check_link_uses(&mut tx, &row).await?;
        }
        let token = uuid::Uuid::new_v4();
        store::claim_acceptance(&mut *tx, row.id, token, self.acceptance_hold).await?;
        tx.commit().await?;
        let claim = AcceptanceClaim {
            pool: self.pool.clone(),
            id: row.id,
            token,
            settled: false,
        };
        Ok((row, claim))
    }

    /// Identity's part of an acceptance claimed by [`Self::claim_for_acceptance`], and its
    /// outcome recorded.
    async fn accept_claimed(
        &self,
        row: &InvitationRow,
        req: pb::AcceptInvitationRequest,
    ) -> Result<(InvitationRow, ipb::User)> {
        if row.awaits_confirmation() {
            // The user is made and holds the seat from here on, recorded at once: the person
            // trying again with the same link (should activation fail below) is not asked for a
            // second one (identity would admit the same user id once anyway), and the
            // registration's expiry removes that user if they never do. Admitted, it counts as
            // one of the link's uses (`LinkRow::uses`), so no other confirmation takes that use
            // while this one is retried.
            self.admit_confirmed(row).await?;
        }
        let activated = self
            .identity
            .activate(ipb::ActivateInviteeRequest {
                org_id: row.org_id.to_string(),
                user_id: row.user_id.to_string(),
                first_name: req.first_name,
                last_name: req.last_name,
                password: req.password,
            })
            .await
            .map_err(InvitationError::from);
        match activated {
            Ok(user) => Ok((self.record_accepted(row).await?, user)),
            // Identity says the user is no longer INVITED (an earlier answer was lost, say):
            // whatever happened, this link is spent.
            Err(InvitationError::FailedPrecondition(reason)) => {
                let row = self.record_accepted(row).await?;
                Err(InvitationError::LinkNotUsable(format!(
                    "{reason}; sign in with {}",
                    row.email
                )))
            }
            Err(InvitationError::NotFound(_)) => Err(InvitationError::LinkNotUsable(
                "this invitation has ended (its account no longer exists); ask for a new one"
                    .into(),
            )),
            Err(other) => Err(other),
        }
    }

    /// ACCEPTED, with its event, in a transaction of its own (unless identity's event about the
    /// activation closed it first). An invitation that ended otherwise while identity answered
    /// (revoked or expired once the claim ran out, the invitee dismissed) is said to be unusable.
    async fn record_accepted(&self, row: &InvitationRow) -> Result<InvitationRow> {
        let mut tx = self.pool.begin().await?;
        let Some(accepted) = mark_accepted(&mut tx, row.id).await? else {
            let now = store::invitation(&mut tx, row.org_id, row.id).await?;
            if now.state() == State::Accepted {
                // Identity's news of this very activation arrived first and closed it.
                return Ok(now);
            }
            return Err(unusable(&now).unwrap_or_else(unknown_link));
        };
        tx.commit().await?;
        Ok(accepted)
    }

    /// For a registration through a link with a maximum of uses: refused when it is used up,
    /// counted under the link's lock (held until the caller commits its claim), so two
    /// confirmations cannot both take the last use.
    async fn check_link_uses(&self, tx: &mut PgConnection, row: &InvitationRow) -> Result<()> {
        let Some(link_id) = row.registration_link_id else {
            return Ok(());
        };
        let limited = store::links::get(&mut *tx, row.org_id, link_id)
            .await?
            .is_some_and(|l| l.max_uses.is_some());
        if limited
            && store::links::lock(&mut *tx, link_id)
                .await?
                .is_some_and(|l| l.used_up())
        {
            return Err(links::used_up());
        }
        Ok(())
    }

    /// The confirmation of a registration through a link: identity asked for the user and the
    /// seat, under the organisation's lock there (the link's use was counted when the
    /// acceptance was claimed, and the claim holds it). Refused whole — nothing made at
    /// identity, the registration left as it was — when no seat is free or the address has
    /// become someone's meanwhile. Holds no lock and no connection while identity answers.
    async fn admit_confirmed(&self, row: &InvitationRow) -> Result<()> {
        let answer = self
            .identity
            .admit(
                row.org_id,
                row.department_id,
                vec![ipb::Invitee {
                    user_id: row.user_id.to_string(),
                    email: row.email.clone(),
                    first_name: row.first_name.clone(),
                    last_name: row.last_name.clone(),
                    position: row.position.clone(),
                }],
            )
            .await
            .map_err(InvitationError::from);
        let answer = match answer {
            Ok(answer) => answer,
            Err(InvitationError::Seats(_)) => {
                return Err(InvitationError::FailedPrecondition(format!(
                    "the organisation has no free seats; ask your administrator (your registration stays open until {}: this link works once a seat is free)",
                    when(row.expires_at)
                )))
            }
            Err(InvitationError::NotFound(_)) => return Err(links::department_gone()),
            Err(other) => return Err(other),
        };
        let admission = answer.admissions.first().ok_or_else(|| {
            InvitationError::Internal("identity answered no admission for one invitee".into())
        })?;
        if !admission.admitted {
            let org = &row.organization_name;
            let email = &row.email;
            // An INVITED holder is an invitee of ours, or a person an admin made without an
            // invitation (no mail with a link exists then).
            let invited_here = match admission.holder_user_id.parse::<mailroom_types::UserId>() {
                Ok(holder) => !store::admission::invitees_among(&self.pool, row.org_id, &[holder])
                    .await?
                    .is_empty(),
                Err(_) => false,
            };
            return Err(InvitationError::LinkNotUsable(
                match ipb::UserState::try_from(admission.holder_state).unwrap_or_default() {
                    ipb::UserState::Invited if invited_here => format!(
                        "{email} has been invited to {org} meanwhile: use the link in that invitation's mail"
                    ),
                    ipb::UserState::Invited => format!(
                        "{email} already belongs to an account at {org} that an admin made and that has not been activated yet; ask {org}'s admins to let you in with it"
                    ),
                    ipb::UserState::Active => {
                        format!("{email} already has an account at {org}: sign in with it")
                    }
                    _ => format!(
                        "{email} belongs to an account at {org} that cannot be used; ask its admins"
                    ),
                },
            ));
        }
        store::registrations::mark_admitted(&self.pool, row.id).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    pub async fn get(&self, caller: &Caller, id: InvitationId) -> Result<InvitationRow> {
        let row = self.read(caller, id).await?;
        self.require_manager(caller, &row).await?;
        Ok(row)
    }

    /// The caller's organisation's invitation `id`, read without a lock on a connection given
    /// back at once (access control is asked about it next, with nothing held).
    async fn read(&self, caller: &Caller, id: InvitationId) -> Result<InvitationRow> {
        let mut conn = self.pool.acquire().await?;
        store::invitation(&mut conn, caller.org_id, id).await
    }

    /// Sends a PENDING or FAILED invitation again: a new link (the old one stops working)
    /// and a new expiry; at most once per `resend_cooldown_secs` after the last mail that was
    /// sent or is being sent (a failed one may be sent again at once), and not while the invitee
    /// is accepting it. Access control and the rate limits are asked with no lock held; what
    /// they allowed is checked again under the row's lock.
    #[tracing::instrument(skip_all)]
    pub async fn resend(&self, caller: &Caller, id: InvitationId) -> Result<InvitationRow> {
        let seen = self.read(caller, id).await?;
        self.require_manager(caller, &seen).await?;
        self.resendable(&self.pool, &seen).await?;
        self.spend_invitations(caller, 1).await?;
        let mut tx = self.pool.begin().await?;
        let row = store::invitation_for_update(&mut tx, caller.org_id, id).await?;
        // One mail per cooldown: a burst of clicks must not become a burst of mail (the row
        // is locked, so concurrent resends see each other's).
        self.resendable(&mut *tx, &row).await?;
        if store::being_accepted(&mut *tx, row.id).await? {
            return Err(accepted_meanwhile());
        }
        let expires = Utc::now() + self.mailed_ttl(&row);
        let row = store::queue_mail(&mut tx, row.id, State::Pending, expires).await?;
        store::forget_token(&mut *tx, row.id).await?;
        tx.commit().await?;
        self.queued.notify_one();
        Ok(row)
    }

    /// Why `row` cannot be sent again now, if it cannot.
    async fn resendable<'e>(
        &self,
        conn: impl sqlx::PgExecutor<'e>,
        row: &InvitationRow,
    ) -> Result<()> {
        if !matches!(row.state(), State::Pending | State::Failed) {
            return Err(InvitationError::FailedPrecondition(format!(
                "only a pending or failed invitation can be sent again; this one is {}{}",
                row.state().upper(),
                if row.state() == State::Expired {
                    " — invite the address again instead"
                } else {
                    ""
                }
            )));
        }
        if row.expires_at <= Utc::now() {
            return Err(InvitationError::FailedPrecondition(
                "this invitation has expired (its seat is being freed); invite the address again"
                    .into(),
            ));
        }
        let cooldown = self.config.resend_cooldown_secs;
        if let Some(ago) = store::mailed_secs_ago(conn, row.id).await? {
            let ago = ago.max(0.0);
            if ago < cooldown as f64 {
                return Err(InvitationError::ResendTooSoon {
                    sent_secs_ago: ago as u64,
                    retry_after_secs: ((cooldown as f64 - ago).ceil() as u64).max(1),
                    cooldown_secs: cooldown,
                });
            }
        }
        Ok(())
    }

    /// Ends an open invitation; identity removes its INVITED user and frees the seat when the
    /// event reaches it. Refused while the invitee's acceptance is under way.
    #[tracing::instrument(skip_all)]
    pub async fn revoke(&self, caller: &Caller, id: InvitationId) -> Result<InvitationRow> {
        let seen = self.read(caller, id).await?;
        self.require_manager(caller, &seen).await?;
        let mut tx = self.pool.begin().await?;
        let row = store::invitation_for_update(&mut tx, caller.org_id, id).await?;
        if !row.state().is_open() {
            return Err(InvitationError::FailedPrecondition(format!(
                "this invitation is already {}; only a pending, failed or awaiting one can be revoked",
                row.state().upper()
            )));
        }
        if store::being_accepted(&mut *tx, row.id).await? {
            return Err(accepted_meanwhile());
        }
        let row = store::set_state(
            &mut tx,
            row.id,
            State::Revoked,
            Some(not_sent_unless_sent(&row)),
        )
        .await?;
        publish(&mut tx, &row, &caller.actor(), Change::Revoked).await?;
        tx.commit().await?;
        Ok(row)
    }

    #[tracing::instrument(skip_all)]
    pub async fn delete(&self, caller: &Caller, id: InvitationId) -> Result<()> {
        let seen = self.read(caller, id).await?;
        self.require_manager(caller, &seen).await?;
        let mut tx = self.pool.begin().await?;
        let row = store::invitation_for_update(&mut tx, caller.org_id, id).await?;
        if row.state().is_open() {
            return Err(InvitationError::FailedPrecondition(format!(
                "this invitation is {}; revoke it first (RevokeInvitation), then delete it",
                row.state().upper()
            )));
        }
        store::delete(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Approves a registration through a link that needs it: the person is mailed their link.
    #[tracing::instrument(skip_all)]
    pub async fn approve(&self, caller: &Caller, id: InvitationId) -> Result<InvitationRow> {
        self.decide(caller, id, true).await
    }

    #[tracing::instrument(skip_all)]
    pub async fn reject(&self, caller: &Caller, id: InvitationId) -> Result<InvitationRow> {
        self.decide(caller, id, false).await
    }

    async fn decide(
        &self,
        caller: &Caller,
        id: InvitationId,
        approve: bool,
    ) -> Result<InvitationRow> {
        self.require(caller, Permission::OrgRegisterUsers).await?;
        let mut tx = self.pool.begin().await?;
        let row = store::invitation_for_update(&mut tx, caller.org_id, id).await?;
        if row.state() != State::AwaitingApproval {
            return Err(InvitationError::FailedPrecondition(format!(
                "only a registration awaiting approval can be {}; this one is {}",
                if approve { "approved" } else { "rejected" },
                row.state().upper()
            )));
        }
        let row = if approve {
            // The approved person now has the confirmation window; the seat is taken when they
            // use the link.
            let expires = Utc::now() + self.mailed_ttl(&row);
            let row = store::queue_mail(&mut tx, row.id, State::Pending, expires).await?;
            publish(&mut tx, &row, &caller.actor(), Change::RegistrationApproved).await?;
            row
        } else {
            let row = store::set_state(
                &mut tx,
                row.id,
                State::Rejected,
                Some(DeliveryState::NotSent),
            )
            .await?;
            publish(&mut tx, &row, &caller.actor(), Change::RegistrationRejected).await?;
            row
        };
        tx.commit().await?;
        if approve {
            self.queued.notify_one();
        }
        Ok(row)
    }
}

/// ACCEPTED, with its time and its event (the invitee is the actor); `None` when the
/// invitation is no longer pending or failed.
async fn mark_accepted(
    tx: &mut sqlx::PgConnection,
    id: InvitationId,
) -> Result<Option<InvitationRow>> {
    let Some(row) = store::mark_accepted(tx, id).await? else {
        return Ok(None);
    };
    publish(tx, &row, &EventActor::User(row.user_id), Change::Accepted).await?;
    Ok(Some(row))
}

/// An acceptance's claim on its invitation, made under a token of its own. Released when the
/// acceptance fails ([`AcceptanceClaim::release`]) and, should the request be cancelled (the server's
/// request timeout, or the client went away) while identity answers, when it is dropped: the
/// release then runs as a task of its own, so the invitee can try again at once rather than
/// after the claim's hold. Only a replica that dies mid-acceptance leaves a claim to run out.
struct AcceptanceClaim {
    pool: sqlx::PgPool,
    id: InvitationId,
    token: uuid::Uuid,
    settled: bool,
}

impl AcceptanceClaim {
    /// The acceptance's outcome was recorded (ACCEPTED clears the claim): nothing to release.
    fn settled(mut self) {
        self.settled = true;
    }

    /// Releases the claim now, if it is still this acceptance's (or it runs out by itself if
    /// the database does not answer).
    async fn release(mut self) {
        // Settled only once done: cancelled mid-way, the drop releases it again (a no-op if
        // this one got through).
        release(&self.pool, self.id, self.token).await;
        self.settled = true;
    }
}

impl Drop for AcceptanceClaim {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped mid-way: the request was cancelled.
        let (pool, id, token) = (self.pool.clone(), self.id, self.token);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::info!(invitation = %id, "an acceptance was cancelled mid-way; its claim is released");
                runtime.spawn(async move { release(&pool, id, token).await });
            }
            Err(_) => {
                tracing::warn!(invitation = %id, "an acceptance's claim was not released (no runtime); it runs out by itself")
            }
        }
    }
}

/// Ends an acceptance's claim if it is still `token`'s.
async fn release(pool: &sqlx::PgPool, id: InvitationId, token: uuid::Uuid) {
    if let Err(err) = store::release_acceptance(pool, id, token).await {
        tracing::warn!(error = %err, invitation = %id, "an acceptance's claim was not released; it runs out by itself");
    }
}

/// To an admin: the invitee is accepting right now.
fn accepted_meanwhile() -> InvitationError {
    InvitationError::FailedPrecondition(
        "this invitation is being accepted at this moment; look at it again in a minute (and act on it then if it is still open)".into(),
    )
}

/// To the invitee: another acceptance of theirs is under way.
fn being_accepted() -> InvitationError {
    InvitationError::FailedPrecondition(
        "this invitation is being accepted in another window at this moment; wait a few seconds and try again".into(),
    )
}

/// A mail still queued will not be sent; one already sent stays recorded as sent.
fn not_sent_unless_sent(row: &InvitationRow) -> DeliveryState {
    match row.delivery_state() {
        DeliveryState::Queued => DeliveryState::NotSent,
        other => other,
    }
}
