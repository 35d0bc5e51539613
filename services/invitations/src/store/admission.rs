//! The SQL of an admission (see [`crate::admission`]): the open invitations that already hold
//! an address, the rows written `admitting` before identity is asked, and their completion or
//! removal once it has answered.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use mailroom_types::{InvitationId, OrgId, UserId};
use sqlx::{PgConnection, PgExecutor};

use super::{InvitationRow, INVITATION_COLUMNS};
use crate::domain::{Batch, Invitee, State};
use crate::error::Result;

/// The open invitations (not yet over) of any of `addresses` in `org` that hold the address
/// at identity: address → its invitee's user. A registration through a link whose address is
/// not confirmed yet holds nothing and is not one of them.
pub async fn open_by_address(
    conn: impl PgExecutor<'_>,
    org_id: OrgId,
    addresses: &[String],
) -> Result<HashMap<String, UserId>> {
    let open: Vec<(String, UserId)> = sqlx::query_as(
        "SELECT email, user_id FROM invitations WHERE org_id = $1 AND email = ANY($2) \
         AND state IN ('admitting', 'pending', 'failed', 'awaiting_approval') AND invitee_admitted",
    )
    .bind(org_id)
    .bind(addresses)
    .fetch_all(conn)
    .await?;
    Ok(open.into_iter().collect())
}

/// Those of `users` that are the invitee of one of `org`'s invitations, in any state.
pub async fn invitees_among(
    conn: impl PgExecutor<'_>,
    org_id: OrgId,
    users: &[UserId],
) -> Result<HashSet<UserId>> {
    let found: Vec<UserId> = sqlx::query_scalar(
        "SELECT DISTINCT user_id FROM invitations WHERE org_id = $1 AND user_id = ANY($2)",
    )
    .bind(org_id)
    .bind(users)
    .fetch_all(conn)
    .await?;
    Ok(found.into_iter().collect())
}

/// One row to write `admitting`: its id, its invitee's user to be, and who they are.
pub struct Admitting<'a> {
    pub id: InvitationId,
    pub user_id: UserId,
    pub invitee: &'a Invitee,
}

/// Writes `rows` as `admitting`; returns the ids written. A row whose address already has an
/// open invitation (another inviter won the race) is not written.
pub async fn insert(
    conn: impl PgExecutor<'_>,
    batch: &Batch,
    expires_at: DateTime<Utc>,
    rows: &[Admitting<'_>],
) -> Result<HashSet<InvitationId>> {
    let ids: Vec<InvitationId> = rows.iter().map(|r| r.id).collect();
    let users: Vec<UserId> = rows.iter().map(|r| r.user_id).collect();
    let emails: Vec<String> = rows.iter().map(|r| r.invitee.email.to_string()).collect();
    let firsts: Vec<String> = rows.iter().map(|r| r.invitee.first_name.clone()).collect();
    let lasts: Vec<String> = rows.iter().map(|r| r.invitee.last_name.clone()).collect();
    let positions: Vec<String> = rows.iter().map(|r| r.invitee.position.clone()).collect();
    let inserted: Vec<InvitationId> = sqlx::query_scalar(
        "INSERT INTO invitations (id, org_id, email, kind, state, delivery, delivery_state, inviter_user_id, user_id, \
         department_id, registration_link_id, message, locale, first_name, last_name, position, organization_name, \
         inviter_name, department_name, expires_at) \
         SELECT t.id, $1, t.email, $2, 'admitting', $3, 'not_sent', $4, t.user_id, $5, $6, $7, $8, t.first, t.last, t.position, \
         $9, $10, $11, $12 \
         FROM UNNEST($13::uuid[], $14::uuid[], $15::text[], $16::text[], $17::text[], $18::text[]) \
           AS t(id, user_id, email, first, last, position) \
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(batch.org_id)
    .bind(batch.kind.as_db())
    .bind(batch.delivery.as_db())
    .bind(batch.inviter)
    .bind(batch.department_id)
    .bind(batch.link_id)
    .bind(&batch.message)
    .bind(batch.locale.code())
    .bind(&batch.names.organization)
    .bind(&batch.names.inviter)
    .bind(&batch.names.department)
    .bind(expires_at)
    .bind(&ids)
    .bind(&users)
    .bind(&emails)
    .bind(&firsts)
    .bind(&lasts)
    .bind(&positions)
    .fetch_all(conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// Removes the rows among `ids` that are still `admitting` (identity refused them).
pub async fn remove(conn: impl PgExecutor<'_>, ids: &[InvitationId]) -> Result<()> {
    sqlx::query("DELETE FROM invitations WHERE id = ANY($1) AND state = 'admitting'")
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves the `admitting` rows among `ids` to `target`, queueing Mailroom's mail for a pending
/// one and storing `hashes[k]` as the link of `ids[k]` when the inviter sends it from their
/// own mail client. Returns the rows moved, in no particular order.
pub async fn complete(
    conn: &mut PgConnection,
    ids: &[InvitationId],
    target: State,
    hashes: &[Vec<u8>],
) -> Result<Vec<InvitationRow>> {
    Ok(sqlx::query_as(&format!(
        "UPDATE invitations i SET state = $2, \
           delivery_state = CASE WHEN $2 = 'pending' AND i.delivery = 'system_mail' THEN 'queued' ELSE 'not_sent' END, \
           next_attempt_at = CASE WHEN $2 = 'pending' AND i.delivery = 'system_mail' THEN now() END, \
           token_hash = CASE WHEN i.delivery = 'own_mail_client' THEN t.hash END, updated_at = now() \
         FROM UNNEST($1::uuid[], $3::bytea[]) AS t(id, hash) \
         WHERE i.id = t.id AND i.state = 'admitting' RETURNING {}",
        INVITATION_COLUMNS
            .split(", ")
            .map(|c| format!("i.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(ids)
    .bind(target.as_db())
    .bind(hashes)
    .fetch_all(conn)
    .await?)
}
