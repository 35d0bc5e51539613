//! All of the invitations service's SQL, over three tables: `invitations` (which is also the
//! mail queue), `registration_links` and `invitation_templates`. Every query a person's call
//! makes is scoped by organisation; the background work (mail queue, sweeper, identity's
//! events) finds its rows by state and time.
//!
//! - this file: the rows ([`InvitationRow`], [`LinkRow`]) and the reads and state changes of
//!   one invitation (by id, by its link's secret, accept, revoke, delete, queue its mail);
//! - [`admission`]: the three steps of making invitations (rows written `admitting`, then
//!   completed or removed);
//! - [`links`]: quick-registration links;
//! - [`list`]: the invitation list's filters, orders and keyset pages, in SQL;
//! - [`mail_queue`]: claiming due mail and recording how its sending went;
//! - [`registrations`]: registrations through a link before their address is confirmed;
//! - [`sweep`]: expiry, and admissions a crash left half done;
//! - [`templates`]: an organisation's own wording of the invitation mail.

pub mod admission;
pub mod links;
pub mod list;
pub mod mail_queue;
pub mod registrations;
pub mod sweep;
pub mod templates;

use chrono::{DateTime, Utc};
use mailroom_types::{DepartmentId, InvitationId, OrgId, RegistrationLinkId, UserId};
use sqlx::{PgConnection, PgExecutor};

use crate::domain::{Delivery, DeliveryState, Kind, Locale, State};
use crate::error::{InvitationError, Result};

pub const INVITATION_COLUMNS: &str = "id, org_id, email, kind, state, delivery, delivery_state, inviter_user_id, user_id, \
     department_id, registration_link_id, message, locale, first_name, last_name, position, organization_name, \
     inviter_name, department_name, failure_reason, send_count, attempts, created_at, updated_at, expires_at, accepted_at, \
     invitee_admitted";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvitationRow {
    pub id: InvitationId,
    pub org_id: OrgId,
    pub email: String,
    pub kind: String,
    pub state: String,
    pub delivery: String,
    pub delivery_state: String,
    pub inviter_user_id: UserId,
    /// The invitee's INVITED user at identity (its id chosen by this service, v7): made when
    /// the invitation is, or, for a registration through a link, when its address is
    /// confirmed ([`Self::invitee_admitted`]).
    pub user_id: UserId,
    pub department_id: Option<DepartmentId>,
    pub registration_link_id: Option<RegistrationLinkId>,
    pub message: String,
    pub locale: String,
    pub first_name: String,
    pub last_name: String,
    pub position: String,
    pub organization_name: String,
    pub inviter_name: String,
    pub department_name: String,
    pub failure_reason: String,
    pub send_count: i32,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    /// Whether identity holds the invitee's INVITED user (and with it a seat and the address).
    /// False for a registration through a link until its address is confirmed.
    pub invitee_admitted: bool,
}

impl InvitationRow {
    pub fn state(&self) -> State {
        State::from_db(&self.state).unwrap_or(State::Pending)
    }
    pub fn kind(&self) -> Kind {
        Kind::from_db(&self.kind).unwrap_or(Kind::Email)
    }
    pub fn delivery(&self) -> Delivery {
        Delivery::from_db(&self.delivery).unwrap_or(Delivery::SystemMail)
    }
    pub fn delivery_state(&self) -> DeliveryState {
        DeliveryState::from_db(&self.delivery_state).unwrap_or(DeliveryState::NotSent)
    }
    pub fn locale(&self) -> Locale {
        Locale::from_db(&self.locale)
    }
    /// A registration through a link whose address is not confirmed yet: no user at identity,
    /// no seat.
    pub fn awaits_confirmation(&self) -> bool {
        self.kind() == Kind::RegistrationLink && !self.invitee_admitted
    }
}

pub const LINK_COLUMNS: &str = "l.id, l.org_id, l.allowed_domains, l.requires_approval, l.department_id, l.department_name, \
     l.organization_name, l.created_by_user_id, l.created_by_name, l.disabled, l.created_at, l.expires_at, \
     (SELECT count(*) FROM invitations i WHERE i.registration_link_id = l.id) AS registrations, \
     l.max_uses, (SELECT count(*) FROM invitations i WHERE i.registration_link_id = l.id AND (i.state = 'accepted' \
     OR (i.invitee_admitted AND i.state IN ('pending', 'failed', 'awaiting_approval')) \
     OR (i.accepting_until > now() AND i.state IN ('pending', 'failed')))) AS uses";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkRow {
    pub id: RegistrationLinkId,
    pub org_id: OrgId,
    pub allowed_domains: Vec<String>,
    pub requires_approval: bool,
    pub department_id: Option<DepartmentId>,
    pub department_name: String,
    pub organization_name: String,
    pub created_by_user_id: UserId,
    pub created_by_name: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub registrations: i64,
    /// People who may join through it; `None`: no limit.
    pub max_uses: Option<i32>,
    /// People who joined through it, or hold a seat to (registrations confirmed: accepted,
    /// or admitted at identity and still open — an acceptance whose activation failed and
    /// will be retried keeps its use — or being confirmed right now).
    pub uses: i64,
}

impl LinkRow {
    /// Whether `max_uses` people have joined through it.
    pub fn used_up(&self) -> bool {
        self.max_uses.is_some_and(|max| self.uses >= i64::from(max))
    }
}

pub fn not_found(id: InvitationId) -> InvitationError {
    InvitationError::NotFound(format!(
        "invitation `{id}` was not found in your organisation"
    ))
}

/// One invitation, locked for the rest of the transaction.
pub async fn invitation_for_update(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: InvitationId,
) -> Result<InvitationRow> {
    find(conn, org_id, id, " FOR UPDATE").await
}

pub async fn invitation(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: InvitationId,
) -> Result<InvitationRow> {
    find(conn, org_id, id, "").await
}

/// The organisation's invitation `id` (one still `admitting` is not there yet).
async fn find(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: InvitationId,
    lock: &str,
) -> Result<InvitationRow> {
    sqlx::query_as(&format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE org_id = $1 AND id = $2 AND state <> 'admitting'{lock}"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found(id))
}

/// The invitation a link's secret opens, locked, with its stored hash.
pub async fn by_token_for_update(
    conn: &mut PgConnection,
    hash: &[u8],
) -> Result<Option<(InvitationRow, Vec<u8>)>> {
    let row: Option<(Vec<u8>, InvitationId)> =
        sqlx::query_as("SELECT token_hash, id FROM invitations WHERE token_hash = $1 FOR UPDATE")
            .bind(hash)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((stored, id)) = row else {
        return Ok(None);
    };
    let invitation: InvitationRow = sqlx::query_as(&format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(Some((invitation, stored)))
}

/// Moves an invitation to `state`, returning it as it is now.
pub async fn set_state(
    conn: &mut PgConnection,
    id: InvitationId,
    state: State,
    delivery_state: Option<DeliveryState>,
) -> Result<InvitationRow> {
    Ok(sqlx::query_as(&format!(
        "UPDATE invitations SET state = $2, delivery_state = COALESCE($3, delivery_state), \
         next_attempt_at = CASE WHEN COALESCE($3, delivery_state) = 'queued' THEN next_attempt_at ELSE NULL END, \
         updated_at = now() WHERE id = $1 RETURNING {INVITATION_COLUMNS}"
    ))
    .bind(id)
    .bind(state.as_db())
    .bind(delivery_state.map(DeliveryState::as_db))
    .fetch_one(conn)
    .await?)
}

/// Queues an invitation's mail for now, with a fresh expiry (sending again, or approved). A
/// link registration's registrant asking again waits `registration_resend_interval_secs` from
/// now.
pub async fn queue_mail(
    conn: &mut PgConnection,
    id: InvitationId,
    state: State,
    expires_at: DateTime<Utc>,
) -> Result<InvitationRow> {
    Ok(sqlx::query_as(&format!(
        "UPDATE invitations SET state = $2, delivery = 'system_mail', delivery_state = 'queued', attempts = 0, \
         next_attempt_at = now(), failure_reason = '', expires_at = $3, updated_at = now(), \
         confirmation_requested_at = now(), mailed_at = now() WHERE id = $1 RETURNING {INVITATION_COLUMNS}"
    ))
    .bind(id)
    .bind(state.as_db())
    .bind(expires_at)
    .fetch_one(conn)
    .await?)
}

/// How many seconds ago Mailroom last queued or sent the invitation's mail, when that mail
/// was sent or is still being sent: what ResendInvitation's cooldown counts from. `None`: no
/// such mail (never mailed by Mailroom, or the last one failed).
pub async fn mailed_secs_ago(conn: impl PgExecutor<'_>, id: InvitationId) -> Result<Option<f64>> {
    Ok(sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM now() - mailed_at)::float8 FROM invitations \
         WHERE id = $1 AND mailed_at IS NOT NULL AND delivery_state IN ('queued', 'sent')",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Stops the invitation's current link from working (a new one goes with the next mail).
pub async fn forget_token(conn: impl PgExecutor<'_>, id: InvitationId) -> Result<()> {
    sqlx::query("UPDATE invitations SET token_hash = NULL WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// ACCEPTED now, and the acceptance's claim cleared; a mail still queued will not be sent.
/// `None` when the invitation is no longer pending or failed (it ended meanwhile).
pub async fn mark_accepted(
    conn: &mut PgConnection,
    id: InvitationId,
) -> Result<Option<InvitationRow>> {
    Ok(sqlx::query_as(&format!(
        "UPDATE invitations SET state = 'accepted', accepted_at = now(), updated_at = now(), \
         delivery_state = CASE WHEN delivery_state = 'queued' THEN 'not_sent' ELSE delivery_state END, \
         next_attempt_at = NULL, accepting_until = NULL, accepting_token = NULL \
         WHERE id = $1 AND state IN ('pending', 'failed') RETURNING {INVITATION_COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Whether an acceptance of the invitation is under way (its claim has not run out).
pub async fn being_accepted(conn: impl PgExecutor<'_>, id: InvitationId) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT accepting_until IS NOT NULL AND accepting_until > now() FROM invitations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?
    .unwrap_or(false))
}

/// Claims the invitation for an acceptance for `hold`, under `token` (the acceptance's own;
/// the caller holds the row lock and has checked [`being_accepted`]): what identity is then
/// asked is asked with no lock held.
pub async fn claim_acceptance(
    conn: impl PgExecutor<'_>,
    id: InvitationId,
    token: uuid::Uuid,
    hold: std::time::Duration,
) -> Result<()> {
    sqlx::query(
        "UPDATE invitations SET accepting_until = now() + make_interval(secs => $2), \
         accepting_token = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(hold.as_secs_f64())
    .bind(token)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends an acceptance's claim without accepting (identity refused, or did not answer, or the
/// request was cancelled), only if the claim is still the one `token` made: a claim that ran
/// out and was taken by another acceptance is that one's. Whether it was released.
pub async fn release_acceptance(
    conn: impl PgExecutor<'_>,
    id: InvitationId,
    token: uuid::Uuid,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE invitations SET accepting_until = NULL, accepting_token = NULL \
         WHERE id = $1 AND accepting_token = $2",
    )
    .bind(id)
    .bind(token)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn delete(conn: impl PgExecutor<'_>, id: InvitationId) -> Result<()> {
    sqlx::query("DELETE FROM invitations WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// How identity's news of an invitee closes their open invitations.
#[derive(Debug, Clone, Copy)]
pub enum Closing {
    /// The user became ACTIVE some other way.
    Accepted,
    /// The user was dismissed or removed; the reason is recorded.
    Revoked(&'static str),
}

/// Closes `user`'s open invitations in `org` as `closing` says, returning those it closed.
pub async fn close_open_of_user(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
    closing: Closing,
) -> Result<Vec<InvitationRow>> {
    let (sql, reason) = match closing {
        Closing::Accepted => (
            "UPDATE invitations SET state = 'accepted', accepted_at = now(), updated_at = now(), \
             delivery_state = CASE WHEN delivery_state = 'queued' THEN 'not_sent' ELSE delivery_state END, \
             next_attempt_at = NULL, failure_reason = $3 \
             WHERE org_id = $1 AND user_id = $2 AND state IN ('pending', 'failed', 'awaiting_approval') RETURNING ",
            "",
        ),
        Closing::Revoked(reason) => (
            "UPDATE invitations SET state = 'revoked', updated_at = now(), \
             delivery_state = CASE WHEN delivery_state = 'queued' THEN 'not_sent' ELSE delivery_state END, \
             next_attempt_at = NULL, failure_reason = $3 \
             WHERE org_id = $1 AND user_id = $2 AND state IN ('pending', 'failed', 'awaiting_approval') RETURNING ",
            reason,
        ),
    };
    Ok(sqlx::query_as(&format!("{sql}{INVITATION_COLUMNS}"))
        .bind(org_id)
        .bind(user_id)
        .bind(reason)
        .fetch_all(conn)
        .await?)
}
