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
use mailroom_platform::error::{db_kind, ErrorKind};
use mailroom_platform::outbox::EventActor;
use mailroom_types::{InvitationId, OrgId};
use rand::Rng;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::domain::{Kind, Locale};
use crate::error::{InvitationError, Result};
use crate::events::{publish_many, Change};
use crate::gather::{self, Gather};
use crate::mailer::{MailError, Mailer};
use crate::service::Invitations;
use crate::store::mail_queue::{Outcome, Recorded};
use crate::store::{self, InvitationRow};
use crate::templates::{self, Fill, Purpose, Template};
use crate::token;

/// Invitation mails by `outcome`: sent, failed (for good), deferred (tried again later).
pub const MAIL_SENT: &str = "mailroom_invitation_mail_total";

/// A pump's claims still held: each row with the hash of the link its mail carries and the
/// attempts it was claimed with.
type Held = Mutex<HashMap<InvitationId, (Vec<u8>, i32)>>;

/// One armed mail, waiting for a sender: its row, its link secret and its wording.
type Armed = (InvitationRow, String, Arc<Template>);

/// The longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(600);

/// At most this many claims checked, or outcomes recorded, in one statement.
const GROUP_MAX: usize = 256;

/// The pre-send check of one mail: (row, the hash of its link, the attempts it was claimed
/// with) → still this sender's.
type Check = Gather<(InvitationId, Vec<u8>, i32), std::result::Result<bool, String>>;

/// The first wait before a batch of outcomes whose write failed on a transient error (a
/// failover, a serialization failure) is written again; doubled each time, up to
/// [`RETRY_MAX`], for at most half a lease (the claims are renewed meanwhile).
const RETRY_FIRST: Duration = Duration::from_millis(50);

/// The longest wait between two writes of one batch of outcomes.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The recording of one mail's outcome → recorded (or why not).
type Record = Gather<Outcome, std::result::Result<(), String>>;

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
            match self.pump(concurrency, &shutdown).await {
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

    /// Sends due mail, `concurrency` at a time, until none is due (or `shutdown`, after the
    /// mails already claimed); returns how many rows it claimed. Rows are claimed (and armed) `concurrency` at a time whenever the senders
    /// have no more than that many waiting, so at most twice `concurrency` are held: the next
    /// mail is ready when one is sent, and no sender waits for the slowest mail of a batch.
    /// The claims are renewed while they are held; each mail's pre-send check and its outcome
    /// are written together with those of the other senders at that moment
    /// ([`crate::gather`]), so a thousand mails cost tens of statements, not thousands.
    pub async fn pump(&self, concurrency: usize, shutdown: &CancellationToken) -> Result<usize> {
        let lease = self.lease();
        let held: Held = Mutex::new(HashMap::new());
        let held = &held;
        let (work_tx, mut work_rx) = mpsc::channel::<Armed>(concurrency);
        let (check, checks) = gather::channel();
        let (record, records) = gather::channel();
        let feeding = async {
            // Dropped when feeding ends, however it ends: the senders then finish what is
            // waiting and stop.
            let work_tx = work_tx;
            let mut claimed = 0;
            loop {
                // Room for a whole batch: claimed only when the senders are about to need it.
                let permits = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    permits = work_tx.reserve_many(concurrency) => permits,
                };
                let Ok(permits) = permits else { break };
                if shutdown.is_cancelled() {
                    break;
                }
                let armed = self.claim(concurrency, lease, held).await?;
                if armed.is_empty() {
                    break;
                }
                claimed += armed.len();
                for (mail, permit) in armed.into_iter().zip(permits) {
                    permit.send(mail);
                }
            }
            Ok::<usize, InvitationError>(claimed)
        };
        let sending = async {
            let (check, record) = (check, record);
            futures::stream::poll_fn(|cx| work_rx.poll_recv(cx))
                .for_each_concurrent(concurrency, |(row, secret, template)| {
                    let (check, record) = (&check, &record);
                    async move {
                        if let Err(err) = self
                            .deliver(row, secret, &template, held, check, record)
                            .await
                        {
                            tracing::warn!(error = %err, "an invitation's delivery outcome could not be recorded; it is tried again after its lease");
                        }
                    }
                })
                .await;
        };
        let checking = gather::serve(checks, GROUP_MAX, |asked| self.check_claims(asked, lease));
        let recording = gather::serve(records, GROUP_MAX, |outcomes| self.record(outcomes, lease));
        tokio::select! {
            (claimed, (), (), ()) = async { tokio::join!(feeding, sending, checking, recording) } => claimed,
            _ = self.keep_claims(held, lease) => unreachable!("keep_claims never returns"),
        }
    }

    /// Claims up to `batch` due rows, reads their wording, and arms them, each with a fresh
    /// link secret, in one statement; a row revoked, accepted or expired since the claim is
    /// not armed and not sent. The armed ones join `held`.
    async fn claim(&self, batch: usize, lease: Duration, held: &Held) -> Result<Vec<Armed>> {
        let rows =
            store::mail_queue::claim_due(&self.invitations.pool, batch as i64, lease).await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // Each organisation's wording, read once per batch.
        let mut wording: HashMap<(OrgId, Purpose, Locale), Arc<Template>> = HashMap::new();
        for row in &rows {
            let key = (row.org_id, purpose(row.kind()), row.locale());
            if let std::collections::hash_map::Entry::Vacant(slot) = wording.entry(key) {
                slot.insert(Arc::new(
                    self.invitations.template(key.0, key.1, key.2).await?,
                ));
            }
        }
        let secrets: Vec<token::NewToken> = rows.iter().map(|_| token::generate()).collect();
        let ids: Vec<InvitationId> = rows.iter().map(|r| r.id).collect();
        let hashes: Vec<Vec<u8>> = secrets.iter().map(|t| t.hash.clone()).collect();
        let armed = store::mail_queue::arm(&self.invitations.pool, &ids, &hashes).await?;
        held.lock().await.extend(
            rows.iter()
                .zip(&hashes)
                .filter(|(row, _)| armed.contains(&row.id))
                .map(|(row, hash)| (row.id, (hash.clone(), row.attempts))),
        );
        Ok(rows
            .into_iter()
            .zip(secrets)
            .filter(|(row, _)| armed.contains(&row.id))
            .filter_map(|(row, secret)| {
                let key = (row.org_id, purpose(row.kind()), row.locale());
                let template = wording.get(&key)?.clone();
                Some((row, secret.secret, template))
            })
            .collect())
    }

    /// Renews the pump's claims every third of `lease` while it sends (never returns).
    async fn keep_claims(&self, held: &Held, lease: Duration) {
        let every = (lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            // A claim stays in the set until its outcome is recorded (however long that
            // write takes); a renewal that lands after a deferral does not undo its delay, as
            // the deferral counted its attempt and a renewal is only for the attempts claimed.
            let claims = held.lock().await;
            if claims.is_empty() {
                continue;
            }
            let mut ids = Vec::with_capacity(claims.len());
            let mut hashes = Vec::with_capacity(claims.len());
            let mut attempts = Vec::with_capacity(claims.len());
            for (id, (hash, tried)) in claims.iter() {
                ids.push(*id);
                hashes.push(hash.clone());
                attempts.push(*tried);
            }
            drop(claims);
            if let Err(err) =
                store::mail_queue::renew(&self.invitations.pool, &ids, &hashes, &attempts, lease)
                    .await
            {
                tracing::warn!(error = %err, "invitation mail claims could not be renewed; another replica may take them when they run out");
            }
        }
    }

    /// The pre-send checks of the mails about to go out, in one statement: each claim renewed
    /// for a whole lease if its row still carries the link of its mail and is still queued.
    async fn check_claims(
        &self,
        asked: Vec<(InvitationId, Vec<u8>, i32)>,
        lease: Duration,
    ) -> Vec<std::result::Result<bool, String>> {
        let mut ids = Vec::with_capacity(asked.len());
        let mut hashes = Vec::with_capacity(asked.len());
        let mut attempts = Vec::with_capacity(asked.len());
        for (id, hash, tried) in asked {
            ids.push(id);
            hashes.push(hash);
            attempts.push(tried);
        }
        match store::mail_queue::renew(&self.invitations.pool, &ids, &hashes, &attempts, lease)
            .await
        {
            Ok(renewed) => ids.iter().map(|id| Ok(renewed.contains(id))).collect(),
            Err(err) => {
                let err = err.to_string();
                ids.iter().map(|_| Err(err.clone())).collect()
            }
        }
    }

    /// Records `outcomes` with the events of those sent or failed, in one transaction, written
    /// again on a transient error (a failover, a serialization failure) with doubling waits for
    /// up to half of `lease`; the claims of these mails are renewed meanwhile, so no other
    /// sender takes them and mails them again. A batch refused for good (one bad row) is
    /// written again one outcome at a time, so the others are still recorded.
    async fn record(
        &self,
        outcomes: Vec<Outcome>,
        lease: Duration,
    ) -> Vec<std::result::Result<(), String>> {
        let n = outcomes.len();
        match retry(lease / 2, is_transient, || self.write_outcomes(&outcomes)).await {
            Ok(()) => vec![Ok(()); n],
            Err(err) if n == 1 || is_transient(&err) => {
                tracing::warn!(error = %err, outcomes = n, "invitation mail outcomes could not be recorded; their mails are claimed again when their leases run out");
                let err = err.to_string();
                vec![Err(err); n]
            }
            Err(err) => {
                tracing::warn!(error = %err, outcomes = n, "a batch of invitation mail outcomes was refused; recording each on its own");
                let mut answers = Vec::with_capacity(n);
                for outcome in &outcomes {
                    let written = self.write_outcomes(std::slice::from_ref(outcome)).await;
                    if let Err(err) = &written {
                        tracing::warn!(error = %err, invitation = %outcome.id, "an invitation mail outcome could not be recorded; its mail is claimed again when its lease runs out");
                    }
                    answers.push(written.map_err(|err| err.to_string()));
                }
                answers
            }
        }
    }

    /// Writes `outcomes` with their events in one transaction, and counts them once committed.
    async fn write_outcomes(&self, outcomes: &[Outcome]) -> Result<()> {
        let mut tx = self.invitations.pool.begin().await?;
        let rows = store::mail_queue::record(&mut tx, outcomes).await?;
        let changes = rows
            .sent
            .iter()
            .map(|row| (row, Change::Sent))
            .chain(
                rows.failed
                    .iter()
                    .map(|(row, reason)| (row, Change::Failed(reason.clone()))),
            )
            .collect();
        publish_many(&mut tx, changes, &EventActor::System).await?;
        tx.commit().await?;
        let deferred = outcomes
            .iter()
            .filter(|o| matches!(o.result, Recorded::Deferred { .. }))
            .count();
        metrics::counter!(MAIL_SENT, "outcome" => "sent").increment(rows.sent.len() as u64);
        metrics::counter!(MAIL_SENT, "outcome" => "failed").increment(rows.failed.len() as u64);
        metrics::counter!(MAIL_SENT, "outcome" => "deferred").increment(deferred as u64);
        Ok(())
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
        check: &Check,
        record: &Record,
    ) -> Result<()> {
        let hash = token::hash(&secret);
        // Still this sender's, renewed just before it goes out: a row another sender took
        // (this claim ran out) or a resend re-armed, or that was revoked or accepted since, is
        // not sent from here.
        let ours = check
            .ask((row.id, hash.clone(), row.attempts))
            .await
            .unwrap_or_else(|| Err("the claim check stopped".into()));
        if !matches!(ours, Ok(true)) {
            held.lock().await.remove(&row.id);
            return ours.map(|_| ()).map_err(InvitationError::Unavailable);
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
        let attempts = row.attempts + 1;
        let max = self.invitations.config.delivery_attempts.max(1);
        let result = match outcome {
            Ok(()) => Recorded::Sent,
            Err(MailError::Transient(reason)) if attempts < max => Recorded::Deferred {
                reason: format!("attempt {attempts} of {max} failed, trying again: {reason}"),
                delay: backoff(self.invitations.config.delivery_retry_ms, attempts),
            },
            Err(failure) => Recorded::Failed {
                reason: match failure {
                    MailError::Transient(reason) => {
                        format!("gave up after {attempts} attempts: {reason}")
                    }
                    MailError::Permanent(reason) | MailError::Config(reason) => reason,
                },
            },
        };
        // The claim is renewed until the outcome is recorded (or could not be), however long
        // the write takes: no other sender takes the row meanwhile and mails it again.
        let recorded = record
            .ask(Outcome {
                id: row.id,
                attempts,
                hash,
                result,
            })
            .await
            .unwrap_or_else(|| Err("the outcome recorder stopped".into()));
        held.lock().await.remove(&row.id);
        recorded.map_err(InvitationError::Unavailable)
    }
}

/// Whether a failed write may succeed if tried again: the database unreachable or failing
/// over, or the transaction aborted (serialization failure, deadlock).
fn is_transient(err: &InvitationError) -> bool {
    match err {
        InvitationError::DbUnavailable(_) => true,
        InvitationError::Db(err) => matches!(db_kind(err), ErrorKind::Aborted),
        _ => false,
    }
}

/// Runs `attempt` until it succeeds, fails for good (`transient` says no), or `budget` has
/// passed since the first try; the waits between tries double from [`RETRY_FIRST`] up to
/// [`RETRY_MAX`], and never reach past the budget. Returns the last error.
async fn retry<T, E, F, Fut>(
    budget: Duration,
    transient: impl Fn(&E) -> bool,
    mut attempt: F,
) -> std::result::Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
{
    let until = tokio::time::Instant::now() + budget;
    let mut wait = RETRY_FIRST;
    loop {
        let err = match attempt().await {
            Ok(done) => return Ok(done),
            Err(err) => err,
        };
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if !transient(&err) || left.is_zero() {
            return Err(err);
        }
        tokio::time::sleep(wait.min(left)).await;
        wait = (wait * 2).min(RETRY_MAX);
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

    /// A write that fails on transient errors is tried again until it succeeds.
    #[tokio::test]
    async fn a_transient_failure_is_tried_again_until_it_succeeds() {
        let tries = std::sync::atomic::AtomicUsize::new(0);
        let done = retry(
            Duration::from_secs(10),
            |err: &&str| *err == "transient",
            || async {
                match tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                    0 | 1 => Err("transient"),
                    n => Ok(n),
                }
            },
        )
        .await;
        assert_eq!(done, Ok(2));
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    /// A failure for good is answered at once; transient ones stop once the budget is spent.
    #[tokio::test]
    async fn a_lasting_failure_is_answered_at_once_and_transient_ones_within_the_budget() {
        let tries = std::sync::atomic::AtomicUsize::new(0);
        let done: std::result::Result<(), &str> = retry(
            Duration::from_secs(10),
            |err: &&str| *err == "transient",
            || async {
                tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err("bad row")
            },
        )
        .await;
        assert_eq!(done, Err("bad row"));
        assert_eq!(tries.swap(0, std::sync::atomic::Ordering::SeqCst), 1);

        let budget = Duration::from_millis(400);
        let started = std::time::Instant::now();
        let done: std::result::Result<(), &str> = retry(
            budget,
            |_: &&str| true,
            || async {
                tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err("transient")
            },
        )
        .await;
        let took = started.elapsed();
        assert_eq!(done, Err("transient"));
        assert!(took >= budget, "gave up after {took:?}");
        assert!(took < budget + Duration::from_secs(2), "took {took:?}");
        let tries = tries.load(std::sync::atomic::Ordering::SeqCst);
        // 50, 100, 200 ms waits, then the last 50 ms of the budget: about five tries.
        assert!((3..=8).contains(&tries), "{tries} tries");
    }
}
