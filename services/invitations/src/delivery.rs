//! Sending invitation mail. The queue is the `invitations` table itself: a row whose
//! `delivery_state` is `queued` is due at `next_attempt_at`. A sender claims due rows with
//! `FOR UPDATE SKIP LOCKED` (so replicas share the work and never send one row twice at once),
//! pushes their time out by a lease (`delivery_lease_ms`), gives each a fresh link secret, sends
//! over the pooled SMTP transport, and records the outcome with its event. The lease is renewed
//! every third of its length until the outcome is recorded, and once more just before each
//! mail goes out (a row that is no longer this sender's is not sent): a server slower than the
//! lease never sees a second mail, and the link in the first stays the one that works.
//! Outcomes:
//! - accepted by the server: `sent`, `InvitationSent`;
//! - refused for good (5xx): the invitation is FAILED with the server's answer, `InvitationFailed`;
//! - anything else (4xx, server down, timeout): tried again later, doubling the delay with
//!   jitter, until the attempts run out, then FAILED likewise.
//!
//! A whole send has a deadline (`delivery_send_deadline_ms`; the SMTP timeout is per command,
//! so a tarpit answering each command just in time would otherwise hold the send, its renewed
//! claim and the round for ever): past it the send is dropped, its claim no longer renewed, and
//! the mail deferred as above. The server may have kept that mail, so it is logged as one that
//! may have gone out.
//!
//! A sender that dies mid-send (or cannot reach the database to renew for a whole lease) leaves
//! the row to come due again when its lease runs out; the invitee may then get the mail twice,
//! and only the later link works.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mailroom_platform::outbox::EventActor;
use mailroom_types::{InvitationId, OrgId};
use rand::Rng;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::domain::{Kind, Locale};
use crate::error::Result;
use crate::events::{publish, Change};
use crate::mailer::{MailError, Mailer};
use crate::service::Invitations;
use crate::store::{self, InvitationRow};
use crate::templates::{self, Fill, Purpose, Template};
use crate::token;

/// Invitation mails by `outcome`: sent, failed (for good), deferred (tried again later).
pub const MAIL_SENT: &str = "mailroom_invitation_mail_total";

/// A round's claims still held: each row with the hash of the link its mail carries.
type Held = Mutex<HashMap<InvitationId, Vec<u8>>>;

/// The longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(600);

pub struct Sender {
    pub invitations: Arc<Invitations>,
    pub mailer: Mailer,
}

impl Sender {
    /// Sends due mail until `shutdown`: woken when mail is queued here, and every second for
    /// what other replicas queued or what came due again.
    pub async fn run(self, shutdown: CancellationToken) {
        let concurrency = self.invitations.config.delivery_concurrency.max(1);
        loop {
            // Two rows per sender at a time: the second is ready when the first is sent (the
            // round renews the claims of both while it sends).
            match self.round(concurrency * 2, concurrency).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "invitation mail could not be taken from the queue")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.invitations.queued.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One claim of up to `batch` due rows, sent `concurrency` at a time. Returns how many.
    pub async fn round(&self, batch: usize, concurrency: usize) -> Result<usize> {
        let lease = self.lease();
        let rows =
            store::mail_queue::claim_due(&self.invitations.pool, batch as i64, lease).await?;
        let n = rows.len();
        if n == 0 {
            return Ok(0);
        }
        // Each organisation's wording, read once per round.
        let mut wording: HashMap<(OrgId, Purpose, Locale), Template> = HashMap::new();
        for row in &rows {
            let key = (row.org_id, purpose(row.kind()), row.locale());
            if let std::collections::hash_map::Entry::Vacant(slot) = wording.entry(key) {
                slot.insert(self.invitations.template(key.0, key.1, key.2).await?);
            }
        }
        // Each mail gets a fresh link secret, all armed in one statement; a row revoked,
        // accepted or expired since the claim is not armed and not sent.
        let secrets: Vec<token::NewToken> = rows.iter().map(|_| token::generate()).collect();
        let ids: Vec<InvitationId> = rows.iter().map(|r| r.id).collect();
        let hashes: Vec<Vec<u8>> = secrets.iter().map(|t| t.hash.clone()).collect();
        let armed = store::mail_queue::arm(&self.invitations.pool, &ids, &hashes).await?;
        // The claims this round still holds, renewed until each mail's outcome is recorded:
        // however slow the server, no other sender takes a row this one is sending.
        let held: Held = Mutex::new(
            ids.iter()
                .zip(&hashes)
                .filter(|(id, _)| armed.contains(id))
                .map(|(id, hash)| (*id, hash.clone()))
                .collect(),
        );
        let wording = &wording;
        let held = &held;
        let work = rows
            .into_iter()
            .zip(secrets)
            .filter(|(row, _)| armed.contains(&row.id));
        let sending = futures::stream::iter(work).for_each_concurrent(
            concurrency,
            |(row, secret)| async move {
                let key = (row.org_id, purpose(row.kind()), row.locale());
                if let Some(template) = wording.get(&key) {
                    if let Err(err) = self.deliver(row, secret.secret, template, held).await {
                        tracing::warn!(error = %err, "an invitation's delivery outcome could not be recorded; it is tried again after its lease");
                    }
                }
            },
        );
        tokio::select! {
            _ = sending => {}
            _ = self.keep_claims(held, lease) => {}
        }
        Ok(n)
    }

    /// Renews the round's claims every third of `lease` while it sends (never returns).
    async fn keep_claims(&self, held: &Held, lease: Duration) {
        let every = (lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            // Held while renewing: a mail's outcome is recorded only after its claim has left
            // the set, so a renewal never lands after (and undoes) a deferral.
            let claims = held.lock().await;
            if claims.is_empty() {
                continue;
            }
            let (ids, hashes): (Vec<InvitationId>, Vec<Vec<u8>>) =
                claims.iter().map(|(id, h)| (*id, h.clone())).unzip();
            if let Err(err) =
                store::mail_queue::renew(&self.invitations.pool, &ids, &hashes, lease).await
            {
                tracing::warn!(error = %err, "invitation mail claims could not be renewed; another replica may take them when they run out");
            }
        }
    }

    /// How long a claimed row is left alone before another sender may take it.
    fn lease(&self) -> Duration {
        Duration::from_millis(self.invitations.config.delivery_lease_ms.max(1_000))
    }

    /// How long one mail's whole send may take.
    fn send_deadline(&self) -> Duration {
        Duration::from_millis(self.invitations.config.delivery_send_deadline_ms.max(1_000))
    }

    #[tracing::instrument(skip_all, fields(invitation = %row.id))]
    /// Sends one armed mail and records the outcome, only if the row still carries the
    /// secret this mail does: a resend, approval or another sender meanwhile re-armed it, and
    /// its own mail is what counts.
    async fn deliver(
        &self,
        row: InvitationRow,
        secret: String,
        template: &Template,
        held: &Held,
    ) -> Result<()> {
        let pool = &self.invitations.pool;
        let hash = token::hash(&secret);
        // Still this sender's, renewed just before it goes out: a row another sender took
        // (this claim ran out) or a resend re-armed, or that was revoked or accepted since, is
        // not sent from here.
        let ours =
            store::mail_queue::renew(pool, &[row.id], std::slice::from_ref(&hash), self.lease())
                .await
                .map(|renewed| renewed.contains(&row.id));
        if !matches!(ours, Ok(true)) {
            held.lock().await.remove(&row.id);
            return ours.map(|_| ());
        }
        let link = self.invitations.accept_link(&secret);
        let mail = templates::render(
            template,
            &Fill {
                organization: &row.organization_name,
                inviter: &row.inviter_name,
                link: &link,
                expires: row.expires_at,
                message: &row.message,
            },
            row.locale(),
        );
        // The whole send within its deadline: past it, the claim is no longer renewed and the
        // mail is deferred (the server may have kept it; a second one is then bounded by the
        // retries).
        let deadline = self.send_deadline();
        let outcome = match tokio::time::timeout(
            deadline,
            self.mailer.send(&row.email, &mail.subject, mail.body),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(
                    deadline_ms = deadline.as_millis() as u64,
                    "the mail server did not finish an invitation mail's send within its deadline; deferred, though the mail may have gone out"
                );
                Err(MailError::Transient(format!(
                    "the mail server did not finish the send within {} s (the mail may have gone out)",
                    deadline.as_secs_f64()
                )))
            }
        };
        held.lock().await.remove(&row.id);
        let attempts = row.attempts + 1;
        let max = self.invitations.config.delivery_attempts.max(1);
        let mut tx = pool.begin().await?;
        let updated = match outcome {
            Ok(()) => store::mail_queue::record_sent(&mut tx, row.id, attempts, &hash)
                .await?
                .map(|row| (row, Change::Sent)),
            Err(MailError::Transient(reason)) if attempts < max => {
                let delay = backoff(self.invitations.config.delivery_retry_ms, attempts);
                let reason = format!("attempt {attempts} of {max} failed, trying again: {reason}");
                store::mail_queue::defer(&mut tx, row.id, attempts, &reason, delay, &hash).await?;
                tx.commit().await?;
                metrics::counter!(MAIL_SENT, "outcome" => "deferred").increment(1);
                return Ok(());
            }
            Err(failure) => {
                let reason = match failure {
                    MailError::Transient(reason) => {
                        format!("gave up after {attempts} attempts: {reason}")
                    }
                    MailError::Permanent(reason) | MailError::Config(reason) => reason,
                };
                store::mail_queue::record_failed(&mut tx, row.id, attempts, &reason, &hash)
                    .await?
                    .map(|row| (row, Change::Failed(reason)))
            }
        };
        if let Some((updated, change)) = updated {
            let sent = matches!(change, Change::Sent);
            publish(&mut tx, &updated, &EventActor::System, change).await?;
            metrics::counter!(MAIL_SENT, "outcome" => if sent { "sent" } else { "failed" })
                .increment(1);
        }
        tx.commit().await?;
        Ok(())
    }
}

fn purpose(kind: Kind) -> Purpose {
    match kind {
        Kind::Email => Purpose::Invitation,
        Kind::DirectRegistration => Purpose::Registration,
        Kind::RegistrationLink => Purpose::Confirmation,
    }
}

/// `base · 2^(attempt-1)`, capped, with ±20 % jitter so a server that comes back is not hit
/// by every deferred mail in the same second.
fn backoff(base_ms: u64, attempt: i32) -> Duration {
    let exp = 2u64.saturating_pow(attempt.saturating_sub(1).clamp(0, 20) as u32);
    let ms = base_ms
        .max(1)
        .saturating_mul(exp)
        .min(MAX_DELAY.as_millis() as u64);
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    Duration::from_millis((ms as f64 * jitter) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let first = backoff(1_000, 1).as_millis();
        assert!((800..=1_200).contains(&first), "{first}");
        let third = backoff(1_000, 3).as_millis();
        assert!((3_200..=4_800).contains(&third), "{third}");
        assert!(backoff(1_000, 40) <= MAX_DELAY.mul_f64(1.2));
    }
}
