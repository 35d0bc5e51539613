//! Token revocation: a not-before time per subject, learnt by every process from identity.
//!
//! Access tokens are verified locally and live for minutes, so a dismissed user (or a demoted
//! admin, a changed password, "sign out everywhere") would keep a working token until it
//! expired. Identity therefore writes a [`SessionsRevoked`](crate::proto::events::v1::SessionsRevoked)
//! event for the subject through its outbox onto [`Topic::Revocations`], a
//! topic keyed by subject and compacted, so the newest not-before of every subject stays in it.
//!
//! Every process that verifies tokens runs one [`follow`] task: it reads that topic from the
//! beginning (so a replica that was down during a dismissal learns of it when it comes back),
//! then tails it, and its [`TokenVerifier`](crate::auth::TokenVerifier) refuses any token of a
//! revoked subject issued before the not-before — also tokens it had already remembered as
//! valid. The topic is read without a consumer group (every process needs every record) and no
//! offsets are committed.
//!
//! Until the follower has read every partition up to where it ended when following began
//! ([`Revocations::is_caught_up`]), the verifier accepts no token at all (UNAVAILABLE): the
//! wait at start (`MAILROOM_REVOCATIONS_CATCH_UP_MS`) only says how long the server holds off
//! before it answers, and a replica whose wait ran out (a loaded broker, a long topic) used to
//! serve at once and accept a token revoked while it was down.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::kafka::{KafkaSettings, ReaderContext, Topic};
use crate::proto::events::v1::{envelope::Payload, Envelope};

/// Revoked subjects and the time (Unix milliseconds) before which their tokens are refused.
#[derive(Clone, Default)]
pub struct Revocations {
    not_before: Arc<RwLock<HashMap<String, i64>>>,
    caught_up: Arc<watch::Sender<bool>>,
}

impl Revocations {
    /// An empty set, not caught up. The process-wide caught-up gauge is left alone: only a
    /// follower ([`follow`]) sets it, so building a verifier (one per hosted service, a test's
    /// helper) cannot report 0 for a process whose follower has caught up.
    pub fn new() -> Self {
        Self {
            not_before: Arc::default(),
            caught_up: Arc::new(watch::channel(false).0),
        }
    }

    /// Records that `subject`'s tokens issued before `not_before_ms` are void. A later
    /// not-before wins; an older one (a record replayed out of order) changes nothing.
    pub fn revoke(&self, subject: &str, not_before_ms: i64) {
        if let Ok(mut map) = self.not_before.write() {
            let entry = map.entry(subject.to_owned()).or_insert(not_before_ms);
            if *entry < not_before_ms {
                *entry = not_before_ms;
            }
        }
        metrics::gauge!(crate::metrics::REVOKED_SUBJECTS).set(self.len() as f64);
    }

    /// Whether a token of `subject` issued at `issued_at_ms` has been revoked.
    pub fn is_revoked(&self, subject: &str, issued_at_ms: i64) -> bool {
        match self.not_before.read() {
            Ok(map) => map.get(subject).is_some_and(|nbf| issued_at_ms < *nbf),
            // A poisoned lock means a writer panicked; refuse rather than guess.
            Err(_) => true,
        }
    }

    pub fn len(&self) -> usize {
        self.not_before.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the topic has been read up to where it stood when following began.
    pub fn is_caught_up(&self) -> bool {
        *self.caught_up.borrow()
    }

    /// Waits until caught up, at most `timeout`; returns whether it is.
    pub async fn wait_caught_up(&self, timeout: Duration) -> bool {
        let mut rx = self.caught_up.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn set_caught_up(&self) {
        self.caught_up.send_replace(true);
        metrics::gauge!(crate::metrics::REVOCATIONS_CAUGHT_UP).set(1.0);
    }

    /// Applies one record of the topic; anything that is not a revocation is ignored.
    pub fn apply(&self, payload: &[u8]) {
        let Ok(envelope) = Envelope::decode(payload) else {
            tracing::warn!("undecodable record on the revocations topic; skipped");
            return;
        };
        if let Some(Payload::SessionsRevoked(revoked)) = envelope.payload {
            self.revoke(&revoked.subject, revoked.not_before_unix_ms);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("revocations consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the revocations topic is not in the brokers' metadata yet")]
    NotYetVisible,
    #[error("the revocations topic now has {0} partitions; assigning them all")]
    PartitionsChanged(usize),
    #[error("a blocking Kafka call failed: {0}")]
    Blocking(String),
}

/// Follows the revocations topic into `revocations` until `shutdown`. Broker outages are
/// retried with backoff; the map is kept across them.
pub async fn follow(kafka: KafkaSettings, revocations: Revocations, shutdown: CancellationToken) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(200);
    if !revocations.is_caught_up() {
        metrics::gauge!(crate::metrics::REVOCATIONS_CAUGHT_UP).set(0.0);
    }
    let mut backoff = FIRST_BACKOFF;
    loop {
        let was_caught_up = revocations.is_caught_up();
        // Stopped wherever it waits: creating the topic or asking the brokers where the
        // partitions end takes seconds when they do not answer.
        let followed = tokio::select! {
            _ = shutdown.cancelled() => return,
            followed = follow_once(&kafka, &revocations, &shutdown) => followed,
        };
        match followed {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(%err, "revocations topic cannot be read; reading it again from the start");
                // A follower that had caught up starts again without the long wait.
                if was_caught_up || revocations.is_caught_up() {
                    backoff = FIRST_BACKOFF;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// How often the follower looks for partitions added to the topic.
const PARTITION_CHECK: Duration = Duration::from_secs(30);

/// The topic's partitions. librdkafka's metadata call blocks its thread until the broker
/// answers, so it runs on the blocking pool, never on a runtime worker.
async fn partitions_of(
    consumer: &Arc<StreamConsumer<ReaderContext>>,
    name: &str,
) -> Result<Vec<i32>, FollowError> {
    let consumer = consumer.clone();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let metadata = consumer.fetch_metadata(Some(&name), Duration::from_secs(10))?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            // Just created, a topic can take a moment to show in the brokers' metadata.
            .ok_or(FollowError::NotYetVisible)?;
        Ok(topic.partitions().iter().map(|p| p.id()).collect())
    })
    .await
    .map_err(|e| FollowError::Blocking(e.to_string()))?
}

/// Where a partition ends now (a blocking broker call, run on the blocking pool).
async fn high_watermark(
    consumer: &Arc<StreamConsumer<ReaderContext>>,
    name: &str,
    partition: i32,
) -> Result<(i64, i64), FollowError> {
    let consumer = consumer.clone();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        Ok(consumer.fetch_watermarks(&name, partition, Duration::from_secs(10))?)
    })
    .await
    .map_err(|e| FollowError::Blocking(e.to_string()))?
}

async fn follow_once(
    kafka: &KafkaSettings,
    revocations: &Revocations,
    shutdown: &CancellationToken,
) -> Result<(), FollowError> {
    // Creating the topic is a courtesy: a cluster where topics are made by its operators
    // refuses CreateTopics (no ACL for it), and the topic is there all the same. Only a topic
    // missing from the metadata (below) is waited for.
    if let Err(err) = kafka.ensure_topics(&[Topic::Revocations]).await {
        tracing::warn!(%err, "the revocations topic could not be created; reading it anyway");
    }
    let name = kafka.topics.name(Topic::Revocations);
    let consumer: Arc<StreamConsumer<ReaderContext>> = Arc::new(kafka.reader()?);
    let partitions = partitions_of(&consumer, &name).await?;
    // Where each partition ends now: having read that far is "caught up". Asked of every
    // partition at once: a loaded broker answering one at a time would hold the start up.
    let ends = futures::future::try_join_all(
        partitions
            .iter()
            .map(|partition| high_watermark(&consumer, &name, *partition)),
    )
    .await?;
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for (partition, (low, high)) in partitions.iter().zip(ends) {
        if high > low {
            remaining.insert(*partition, high);
        }
        assignment.add_partition_offset(&name, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut check = tokio::time::interval(Duration::from_millis(200));
    let mut partition_check = tokio::time::interval(PARTITION_CHECK);
    partition_check.reset();
    let mut stream = consumer.stream();
    let mut caught_up = false;
    loop {
        if !caught_up {
            // Caught up once the next offset to read has reached where each partition ended.
            if let Ok(positions) = consumer.position() {
                remaining.retain(|partition, end| {
                    positions
                        .find_partition(&name, *partition)
                        .and_then(|p| p.offset().to_raw())
                        .is_none_or(|next| next < *end)
                });
            }
            if remaining.is_empty() {
                revocations.set_caught_up();
                caught_up = true;
            }
        }
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = check.tick() => continue,
            _ = partition_check.tick() => {
                let now = partitions_of(&consumer, &name).await?;
                if now.len() != partitions.len() {
                    return Err(FollowError::PartitionsChanged(now.len()));
                }
                continue;
            }
            next = stream.next() => match next {
                Some(Ok(m)) => m,
                // The fetch reached the end of a partition (the reader asks to be told): done
                // with it, even where its last offsets hold no record to deliver (compacted
                // away, control batches), which the position alone would never pass.
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    remaining.remove(&partition);
                    continue;
                }
                Some(Err(err)) => return Err(err.into()),
                None => return Ok(()),
            },
        };
        revocations.apply(message.payload().unwrap_or_default());
        if let Some(end) = remaining.get(&message.partition()) {
            if message.offset() + 1 >= *end {
                remaining.remove(&message.partition());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_not_before_wins_and_only_older_tokens_are_refused() {
        let r = Revocations::new();
        assert!(!r.is_revoked("u1", 1_000));
        r.revoke("u1", 2_000);
        r.revoke("u1", 1_500);
        assert!(r.is_revoked("u1", 1_999));
        assert!(!r.is_revoked("u1", 2_000));
        assert!(!r.is_revoked("u2", 1));
        assert_eq!(r.len(), 1);
    }
}
