//! The sweeper: applies expiry without anyone asking (an expired invitation's event makes
//! identity remove its INVITED user, which frees the seat and the address), and finishes
//! admissions a crash left half done. Replicas may all sweep: rows are taken with
//! `FOR UPDATE SKIP LOCKED`, and an admission is finished idempotently.

use std::sync::Arc;

use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::identity::v1 as ipb;
use mailroom_types::{DepartmentId, OrgId};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::State;
use crate::error::Result;
use crate::events::{publish, Change};
use crate::service::Invitations;
use crate::store::{InvitationRow, INVITATION_COLUMNS};

/// Rows expired per transaction.
const BATCH: i64 = 500;
/// An admission older than this is taken to be abandoned by a process that died.
const ABANDONED_AFTER_SECS: f64 = 60.0;

pub async fn run(invitations: Arc<Invitations>, shutdown: CancellationToken) {
    let every = invitations.sweep_interval();
    loop {
        if let Err(err) = expire(&invitations).await {
            tracing::warn!(error = %err, "expiry could not be applied; trying again next round");
        }
        if let Err(err) = finish_abandoned(&invitations).await {
            tracing::warn!(error = %err, "unfinished invitations could not be finished; trying again next round");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Marks every open invitation past its expiry EXPIRED, with its event. Returns how many.
pub async fn expire(invitations: &Invitations) -> Result<usize> {
    let mut total = 0;
    loop {
        let mut tx = invitations.pool.begin().await?;
        let rows: Vec<InvitationRow> = sqlx::query_as(&format!(
            "UPDATE invitations SET state = 'expired', next_attempt_at = NULL, updated_at = now(), \
             delivery_state = CASE WHEN delivery_state = 'queued' THEN 'not_sent' ELSE delivery_state END \
             WHERE id IN (SELECT id FROM invitations WHERE state IN ('pending', 'failed', 'awaiting_approval') \
               AND expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING {INVITATION_COLUMNS}"
        ))
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            publish(&mut tx, row, &EventActor::System, Change::Expired).await?;
        }
        tx.commit().await?;
        total += rows.len();
        if (rows.len() as i64) < BATCH {
            if total > 0 {
                tracing::info!(expired = total, "invitations expired");
            }
            return Ok(total);
        }
    }
}

/// Asks identity again for the users of admissions left `admitting`, and finishes them.
pub async fn finish_abandoned(invitations: &Invitations) -> Result<usize> {
    let rows: Vec<InvitationRow> = sqlx::query_as(&format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE state = 'admitting' \
         AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT 200"
    ))
    .bind(ABANDONED_AFTER_SECS)
    .fetch_all(&invitations.pool)
    .await?;
    for row in &rows {
        if let Err(err) = finish_one(invitations, row).await {
            // One row that cannot be finished now does not hold up the rest.
            tracing::warn!(invitation = %row.id, error = %err, "an unfinished invitation could not be finished; trying again next round");
        }
    }
    Ok(rows.len())
}

async fn finish_one(invitations: &Invitations, row: &InvitationRow) -> Result<()> {
    {
        let answer = invitations
            .identity
            .admit(
                OrgId::from_uuid(row.org_id),
                row.department_id.map(DepartmentId::from_uuid),
                vec![ipb::Invitee {
                    user_id: row.user_id.to_string(),
                    email: row.email.clone(),
                    first_name: row.first_name.clone(),
                    last_name: row.last_name.clone(),
                    position: row.position.clone(),
                }],
            )
            .await
            .map_err(crate::error::InvitationError::from);
        let admitted = match answer {
            Ok(a) => a.admissions.first().is_some_and(|a| a.admitted),
            // No seat any more, or the department is gone: the invitation cannot be made.
            Err(crate::error::InvitationError::Seats(_))
            | Err(crate::error::InvitationError::NotFound(_))
            | Err(crate::error::InvitationError::InvalidArgument(_)) => false,
            Err(other) => return Err(other),
        };
        let target = match row.registration_link_id {
            Some(link) if requires_approval(invitations, link).await? => State::AwaitingApproval,
            _ => State::Pending,
        };
        let (ok, refused): (Vec<Uuid>, Vec<Uuid>) = if admitted {
            (vec![row.id], Vec::new())
        } else {
            (Vec::new(), vec![row.id])
        };
        invitations
            .finish_admission(&ok, &refused, target, &EventActor::System)
            .await?;
        tracing::info!(invitation = %row.id, admitted, "an unfinished invitation was finished");
    }
    Ok(())
}

async fn requires_approval(invitations: &Invitations, link: Uuid) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT requires_approval FROM registration_links WHERE id = $1")
            .bind(link)
            .fetch_optional(&invitations.pool)
            .await?
            .unwrap_or(false),
    )
}
