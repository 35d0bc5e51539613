//! The SQL of registrations through a link before their address is confirmed (see
//! [`crate::links`]): rows of `invitations` of kind `registration_link` with no user at
//! identity yet (`invitee_admitted = false`); one open per address and link; the confirmation
//! mail asked for again; the row marked admitted when the confirmation takes its seat.

use chrono::{DateTime, Utc};
use mailroom_types::{InvitationId, RegistrationLinkId, UserId};
use sqlx::{PgConnection, PgExecutor};

use super::{InvitationRow, LinkRow, INVITATION_COLUMNS};
use crate::domain::{Invitee, Locale, State};
use crate::error::Result;

/// A registration to write: pending (its confirmation mail queued now) or awaiting approval.
pub struct NewRegistration<'a> {
    pub id: InvitationId,
    /// The user identity will be asked to make once the address is confirmed.
    pub user_id: UserId,
    pub link: &'a LinkRow,
    pub invitee: &'a Invitee,
    pub locale: Locale,
    pub target: State,
    pub expires_at: DateTime<Utc>,
}

/// The open registration of `email` through `link`, if there is one.
pub async fn open_of(
    conn: impl PgExecutor<'_>,
    link: RegistrationLinkId,
    email: &str,
) -> Result<Option<InvitationRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE registration_link_id = $1 AND email = $2 \
         AND kind = 'registration_link' AND state IN ('admitting', 'pending', 'failed', 'awaiting_approval')"
    ))
    .bind(link)
    .bind(email)
    .fetch_optional(conn)
    .await?)
}

/// Writes the registration, with no user at identity; `None` when the address has an open
/// registration through this link already (a concurrent call wrote it).
pub async fn insert(
    conn: &mut PgConnection,
    new: &NewRegistration<'_>,
) -> Result<Option<InvitationRow>> {
    let link = new.link;
    Ok(sqlx::query_as(&format!(
        "INSERT INTO invitations (id, org_id, email, kind, state, delivery, delivery_state, inviter_user_id, user_id, \
         department_id, registration_link_id, locale, first_name, last_name, organization_name, inviter_name, \
         department_name, expires_at, next_attempt_at, invitee_admitted, confirmation_requested_at) \
         VALUES ($1, $2, $3, 'registration_link', $4::text, 'system_mail', \
           CASE WHEN $4::text = 'pending' THEN 'queued' ELSE 'not_sent' END, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
           $15, CASE WHEN $4::text = 'pending' THEN now() END, false, CASE WHEN $4::text = 'pending' THEN now() END) \
         ON CONFLICT DO NOTHING RETURNING {INVITATION_COLUMNS}"
    ))
    .bind(new.id)
    .bind(link.org_id)
    .bind(new.invitee.email.as_str())
    .bind(new.target.as_db())
    .bind(link.created_by_user_id)
    .bind(new.user_id)
    .bind(link.department_id)
    .bind(link.id)
    .bind(new.locale.code())
    .bind(&new.invitee.first_name)
    .bind(&new.invitee.last_name)
    .bind(&link.organization_name)
    .bind(&link.created_by_name)
    .bind(&link.department_name)
    .bind(new.expires_at)
    .fetch_optional(conn)
    .await?)
}

/// The registrant asked again: queues the confirmation mail once more (open until
/// `expires_at`) unless it was asked for less than `interval_secs` ago, or the registration
/// still awaits an admin. Returns the row when the mail was queued. The link already mailed
/// keeps working until the new mail is sent.
pub async fn request_again(
    conn: impl PgExecutor<'_>,
    id: InvitationId,
    interval_secs: f64,
    expires_at: DateTime<Utc>,
) -> Result<Option<InvitationRow>> {
    Ok(sqlx::query_as(&format!(
        "UPDATE invitations SET state = 'pending', delivery_state = 'queued', attempts = 0, next_attempt_at = now(), \
         failure_reason = '', expires_at = GREATEST(expires_at, $3), confirmation_requested_at = now(), updated_at = now() \
         WHERE id = $1 AND state IN ('pending', 'failed') AND delivery = 'system_mail' \
           AND (confirmation_requested_at IS NULL OR confirmation_requested_at <= now() - make_interval(secs => $2)) \
         RETURNING {INVITATION_COLUMNS}"
    ))
    .bind(id)
    .bind(interval_secs)
    .bind(expires_at)
    .fetch_optional(conn)
    .await?)
}

/// Identity made the registrant's user (the confirmation took its seat).
pub async fn mark_admitted(conn: impl PgExecutor<'_>, id: InvitationId) -> Result<()> {
    sqlx::query("UPDATE invitations SET invitee_admitted = true, updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
