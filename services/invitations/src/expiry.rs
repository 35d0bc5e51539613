//! The sweeper: applies expiry without anyone asking (an expired invitation's event makes
//! identity remove its INVITED user, which frees the seat and the address), and finishes
//! admissions a crash left half done. Replicas may all sweep: rows are taken with
//! `FOR UPDATE SKIP LOCKED`, and an admission is finished idempotently.

use std::sync::Arc;

use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::identity::v1 as ipb;
use mailroom_types::InvitationId;
use tokio_util::sync::CancellationToken;

use crate::domain::State;
use crate::error::{InvitationError, Result};
use crate::events::{publish, Change};
use crate::service::Invitations;
use crate::store::{self, InvitationRow};

/// Rows expired per transaction.
const BATCH: i64 = 500;
/// An admission older than this is taken to be abandoned by a process that died.
const ABANDONED_AFTER_SECS: f64 = 60.0;
/// Abandoned admissions finished per round.
const ABANDONED_BATCH: i64 = 200;

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
        let rows = store::sweep::expire(&mut *tx, BATCH).await?;
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
    let rows =
        store::sweep::abandoned(&invitations.pool, ABANDONED_AFTER_SECS, ABANDONED_BATCH).await?;
    for row in &rows {
        if let Err(err) = finish_one(invitations, row).await {
            // One row that cannot be finished now does not hold up the rest.
            tracing::warn!(invitation = %row.id, error = %err, "an unfinished invitation could not be finished; trying again next round");
        }
    }
    Ok(rows.len())
}

async fn finish_one(invitations: &Invitations, row: &InvitationRow) -> Result<()> {
    let answer = invitations
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
    let admitted = match answer {
        Ok(a) => a.admissions.first().is_some_and(|a| a.admitted),
        // No seat any more, or the department is gone: the invitation cannot be made.
        Err(InvitationError::Seats(_))
        | Err(InvitationError::NotFound(_))
        | Err(InvitationError::InvalidArgument(_)) => false,
        Err(other) => return Err(other),
    };
    let target = match row.registration_link_id {
        Some(link) if store::links::requires_approval(&invitations.pool, link).await? => {
            State::AwaitingApproval
        }
        _ => State::Pending,
    };
    let (ok, refused): (Vec<InvitationId>, Vec<InvitationId>) = if admitted {
        (vec![row.id], Vec::new())
    } else {
        (Vec::new(), vec![row.id])
    };
    invitations
        .finish_admission(&ok, &refused, target, &EventActor::System)
        .await?;
    tracing::info!(invitation = %row.id, admitted, "an unfinished invitation was finished");
    Ok(())
}
