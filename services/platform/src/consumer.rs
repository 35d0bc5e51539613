//! Consuming Mailroom events with exactly-once effects over at-least-once delivery.
//!
//! For each record, [`run`] opens a transaction, records the event id in `processed_events`
//! (a duplicate stops there), lets the [`EventHandler`] apply the event in the same
//! transaction, commits, and only then commits the Kafka offset. A crash anywhere redelivers
//! the record, and the recorded id makes the replay change nothing.
//!
//! A failure is sorted by [`classify`]:
//! - transient (a dependency down or busy: the database, a peer, Redis, a timeout): retried
//!   with back-off for as long as it takes, never dead-lettered. Meanwhile the record's
//!   partition is paused and nothing after it on that partition is applied, while the consumer
//!   keeps polling (it stays in its group) and other partitions go on;
//! - permanent (an undecodable envelope, a bad id, a handler's [`Refusal`]): kept in
//!   `dead_letters` at once;
//! - unknown: tried at least [`MAX_ATTEMPTS`] times and for [`Options::unknown_budget`]
//!   (15 minutes), then kept in `dead_letters`.
//!
//! Each attempt is bounded by [`Options::attempt_timeout`] (a hung handler is a transient
//! failure, not a consumer stuck for ever). Records waiting for a retry are exported
//! (`mailroom_events_retrying`, `mailroom_events_oldest_retry_seconds`) and alerted on, and so is
//! how far each consumer is behind (`mailroom_events_lag_records`, `mailroom_events_lag_seconds`,
//! set every few seconds from librdkafka's cached partition ends: no broker round trip).
//!
//! Per-key order holds through dead letters: once a record of key K waits in `dead_letters`
//! (neither replayed nor discarded), every later record of K is kept there too, "held behind"
//! it, instead of being applied. A replay applies the letters of a key in id order (a held one
//! follows the one before it), so an old snapshot is never applied over a newer one; when none
//! is left, K flows again. The check is a lookup in the consumer's own transaction (indexed,
//! and right across replicas and rebalances, unlike a set kept in memory).
//!
//! Dead letters are counted (`mailroom_events_consumed_total{outcome="dead_letter"|"held"}`
//! and the gauge `mailroom_events_dead_letters`), replayed when an operator asks ([`replay`]),
//! and, once replayed or discarded, pruned by age with the `processed_events` of the consumer
//! ([`retention`]).
//!
//! [`concurrent`] is the other mode, for work rather than mirrors: many records in flight at
//! once (never two of one key), offsets committed per partition only up to the contiguous
//! prefix of finished records.

pub mod classify;
mod closing;
pub mod concurrent;
pub mod replay;
pub mod retention;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

pub use classify::{classify, Class, Refusal, Transient};

use crate::kafka::{GroupConsumer, PartitionId};
use crate::proto::events::v1::Envelope;

/// Applies events of the topics a consumer subscribes to.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Applies one event inside the consumer's transaction. Return a [`Refusal`] for an event
    /// that can never be applied; any error from a dependency that is down (database, peer,
    /// Redis) is retried until it passes.
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()>;

    /// Whether the handler acts on this event at all. Events it does not want are passed
    /// over without a transaction (a topic mostly of other events costs only its reading).
    fn wants(&self, _event: &Envelope) -> bool {
        true
    }
}

/// How many times, at least, an event failing for an unknown reason is tried before it goes to
/// `dead_letters` (and for [`Options::unknown_budget`] at least). A transient failure is
/// retried for as long as it takes; a permanent one is not retried.
pub const MAX_ATTEMPTS: u32 = 8;

/// Records of one partition a consumer holds before it pauses the partition.
const LANE_CAP: usize = 1000;

/// How often settled offsets are committed (a redelivery of what was not committed yet
/// changes nothing: `processed_events`).
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// How often a consumer's lag gauges are refreshed: well within a scrape interval, and the
/// same as a work consumer's (each refresh is a wakeup of every consumer, also at rest).
const LAG_EVERY: Duration = Duration::from_secs(5);

/// How a consumer retries, replays and prunes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The first pause after a failure; doubled after each, up to `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How long an event failing for an unknown reason is retried (with at least
    /// [`MAX_ATTEMPTS`] tries) before it goes to `dead_letters`: longer than an outage whose
    /// errors are not recognised as one.
    pub unknown_budget: Duration,
    /// The longest one attempt (a handler's transaction) may take; past it the attempt is
    /// abandoned (its transaction rolled back) and retried as a transient failure.
    pub attempt_timeout: Duration,
    /// How often the consumer looks for dead letters an operator asked to replay.
    pub replay_every: Duration,
    /// How often the gauge of dead letters not replayed is refreshed.
    pub gauge_every: Duration,
    /// `processed_events` older than this are deleted (keep it beyond any redelivery:
    /// longer than the topics' retention, [`crate::kafka::EVENT_RETENTION`]).
    pub processed_retention: Duration,
    /// `dead_letters` replayed or discarded longer ago than this are deleted (one still
    /// waiting is kept however old).
    pub dead_letter_retention: Duration,
    /// How often the pruning runs.
    pub prune_every: Duration,
    /// Rows deleted per statement when pruning.
    pub prune_batch: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(30),
            unknown_budget: Duration::from_secs(15 * 60),
            attempt_timeout: Duration::from_secs(120),
            replay_every: Duration::from_secs(2),
            gauge_every: Duration::from_secs(30),
            processed_retention: Duration::from_secs(30 * 24 * 3600),
            dead_letter_retention: Duration::from_secs(90 * 24 * 3600),
            prune_every: Duration::from_secs(3600),
            prune_batch: 1000,
        }
    }
}

impl Options {
    /// The defaults, with the retention ages of `config`.
    pub fn from_config(config: &crate::config::PlatformConfig) -> Self {
        Self {
            processed_retention: config.processed_events_retention(),
            dead_letter_retention: config.dead_letters_retention(),
            ..Self::default()
        }
    }

    /// The pause before the attempt after one that waited `previous` (none: the first).
    fn next_backoff(&self, previous: Option<Duration>) -> Duration {
        match previous {
            None => self.retry_base,
            Some(previous) => (previous * 2).min(self.retry_cap).max(self.retry_base),
        }
    }
}

pub(crate) enum Outcome {
    Applied,
    Duplicate,
    Skipped,
    DeadLetter,
    /// Kept in `dead_letters` behind an earlier record of its key.
    Held,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Skipped => "skipped",
            Outcome::DeadLetter => "dead_letter",
            Outcome::Held => "held",
        }
    }
}

pub(crate) fn count(consumer: &str, outcome: &'static str) {
    metrics::counter!(crate::metrics::EVENTS_CONSUMED, "consumer" => consumer.to_owned(), "outcome" => outcome).increment(1);
}

/// Consumes `topics` (named as `kafka` names them) in `group` with `handler` until
/// `shutdown`, forever: topics are ensured, and a consumer that fails or ends is replaced after
/// a pause. Beside it, the consumer's old `processed_events` and `dead_letters` are pruned
/// ([`retention`]). What every service's event mirror runs in the background.
pub async fn run_until_shutdown(
    kafka: crate::kafka::KafkaSettings,
    group: String,
    pool: PgPool,
    topics: Vec<crate::kafka::Topic>,
    handler: Arc<dyn EventHandler>,
    options: Options,
    shutdown: CancellationToken,
) {
    let consuming = async {
        while !shutdown.is_cancelled() {
            // Creating topics waits seconds on a broker that does not answer: not past a stop.
            let ensured = tokio::select! {
                _ = shutdown.cancelled() => return,
                ensured = kafka.ensure_topics(&topics) => ensured,
            };
            if let Err(err) = ensured {
                tracing::warn!(%err, consumer = %group, "could not ensure the topics; subscribing anyway");
            }
            let result = match kafka.consumer(&group) {
                Ok(consumer) => {
                    run_with(
                        group.clone(),
                        pool.clone(),
                        consumer,
                        kafka.topics.names(&topics),
                        handler.clone(),
                        options.clone(),
                        shutdown.clone(),
                    )
                    .await
                }
                Err(err) => Err(err),
            };
            if let Err(err) = result {
                tracing::warn!(%err, consumer = %group, "events consumer stopped; starting again");
            }
            // Whatever ended the consumer (an error, or its stream closing), pause before a new one.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    };
    tokio::join!(
        consuming,
        retention::run(&group, &pool, &options, &kafka, &topics, shutdown.clone())
    );
}

/// Consumes the topics named `topics` with `consumer` (of group `name`, which also keys
/// `processed_events` and `dead_letters`) until `shutdown` or the first stream error, with the
/// default [`Options`].
pub async fn run(
    name: String,
    pool: PgPool,
    consumer: GroupConsumer,
    topics: Vec<String>,
    handler: Arc<dyn EventHandler>,
    shutdown: CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    run_with(
        name,
        pool,
        consumer,
        topics,
        handler,
        Options::default(),
        shutdown,
    )
    .await
}

/// As [`run`], with `options`. Beside the records, it applies the dead letters an operator
/// asked to replay and keeps the dead-letter gauge ([`replay`]).
pub async fn run_with(
    name: String,
    pool: PgPool,
    consumer: GroupConsumer,
    topics: Vec<String>,
    handler: Arc<dyn EventHandler>,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    // Closed off the runtime's workers, however it ends (see [`closing`]).
    let consumer = closing::Closing::new(consumer);
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let side = shutdown.child_token();
    let replaying = replay::run(
        &name,
        &pool,
        replay::Replayer::Sequential(handler.clone()),
        &options,
        side.clone(),
    );
    let consuming = async {
        let mut sequential = Sequential {
            name: &name,
            pool: &pool,
            consumer: &consumer,
            handler: handler.as_ref(),
            options: &options,
            lanes: BTreeMap::new(),
            paused: HashSet::new(),
            cursor: None,
            next_lane: 0,
            to_commit: BTreeMap::new(),
            committed_at: Instant::now(),
            in_flight: None,
        };
        let result = sequential.run(&shutdown).await;
        side.cancel();
        result
    };
    let (result, ()) = tokio::join!(consuming, replaying);
    // A consumer that stopped is behind on nothing it owns and retries nothing; a later run
    // sets them again.
    lag_gauges(&name, 0.0, 0.0);
    retrying_gauges(&name, &[]);
    consumer.close(&name).await;
    result
}

/// The records of one partition the consumer holds, in order, and the retry state of the
/// first.
struct Lane {
    /// Tells this lane from one of an earlier assignment of the same partition.
    id: u64,
    records: VecDeque<OwnedMessage>,
    /// One past the highest offset taken: a record below it is one already held or done.
    next: i64,
    retry: Option<Retry>,
}

/// Why the first record of a lane waits, and until when.
struct Retry {
    /// When the record first failed.
    since: Instant,
    /// When it first failed for an unknown reason.
    first_unknown: Option<Instant>,
    /// Statements cancelled (57014) in a row.
    canceled: u32,
    /// Attempts that failed for an unknown reason.
    unknown: u32,
    /// Attempts that failed for a transient reason.
    transient: u32,
    backoff: Option<Duration>,
    due: Instant,
    /// The record is to be kept in `dead_letters` with this error (storing it failed so far).
    dead_letter: Option<String>,
}

/// What one attempt at a record came to.
enum Step {
    Done(Outcome),
    Failed(anyhow::Error, Class),
    /// The record is to be dead-lettered with this error, but storing it failed.
    NotStored(String, sqlx::Error),
}

struct Sequential<'a> {
    name: &'a str,
    pool: &'a PgPool,
    consumer: &'a GroupConsumer,
    handler: &'a dyn EventHandler,
    options: &'a Options,
    lanes: BTreeMap<PartitionId, Lane>,
    /// Partitions this consumer paused (a record waits, or the lane is full).
    paused: HashSet<PartitionId>,
    /// The partition served last, so that lanes take turns.
    cursor: Option<PartitionId>,
    next_lane: u64,
    /// Offsets settled and not committed yet, by partition: committed together every
    /// [`COMMIT_EVERY`], at revocation of others and at the end, not one request per record.
    to_commit: BTreeMap<PartitionId, i64>,
    committed_at: Instant,
    /// The record being tried now (taken off its lane): its partition, offset and the time
    /// it was produced, for the lag gauges.
    in_flight: Option<(PartitionId, i64, Option<i64>)>,
}

impl Sequential<'_> {
    async fn run(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let result = self.consume(shutdown).await;
        self.drop_revoked();
        self.commit(CommitMode::Sync);
        result
    }

    async fn consume(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let mut stream = self.consumer.stream();
        // The lag gauges are set every few seconds, whatever the loop is doing (waiting for
        // records, or for an attempt that takes long).
        let mut lag_tick = tokio::time::interval_at(Instant::now() + LAG_EVERY, LAG_EVERY);
        lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(partition) = self.ready() else {
                // Nothing to try now: wait for a record, the next retry, or the shutdown.
                let due = match (self.next_due(), self.to_commit.is_empty()) {
                    (due, true) => due,
                    (None, false) => Some(self.committed_at + COMMIT_EVERY),
                    (Some(due), false) => Some(due.min(self.committed_at + COMMIT_EVERY)),
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    // Revoked in a poll that handed over no record.
                    () = self.consumer.context().revocation() => self.drop_revoked(),
                    next = stream.next() => match next {
                        Some(Ok(message)) => self.take(message.detach()),
                        // A consumer is not kept across a stream error: librdkafka has crashed
                        // (SIGSEGV) when one was polled on after its broker went away and came
                        // back. The caller builds a new one, which resumes from the committed
                        // offsets.
                        Some(Err(err)) => return Err(err),
                        None => return Ok(()),
                    },
                    _ = sleep_until(due) => {}
                    _ = lag_tick.tick() => self.export_lag(),
                }
                self.reconcile_pauses();
                self.commit_due();
                continue;
            };
            self.cursor = Some(partition.clone());
            let Some(lane) = self.lanes.get_mut(&partition) else {
                continue;
            };
            let Some(message) = lane.records.pop_front() else {
                continue;
            };
            let lane_id = lane.id;
            let dead_letter = lane.retry.as_ref().and_then(|r| r.dead_letter.clone());
            self.in_flight = Some((
                partition.clone(),
                message.offset(),
                message.timestamp().to_millis(),
            ));
            // The attempt runs while the consumer goes on polling: it stays in its group
            // however long the attempt takes, and records that arrive meanwhile are held.
            let step = {
                let limit = self.options.attempt_timeout;
                let attempt = async {
                    match tokio::time::timeout(
                        limit,
                        attempt(self.name, self.pool, &message, self.handler, dead_letter),
                    )
                    .await
                    {
                        Ok(step) => step,
                        Err(elapsed) => Step::Failed(
                            anyhow::Error::new(elapsed)
                                .context(format!("the attempt took longer than {limit:?}")),
                            Class::Transient,
                        ),
                    }
                };
                tokio::pin!(attempt);
                loop {
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return Ok(()),
                        step = &mut attempt => break step,
                        () = self.consumer.context().revocation() => self.drop_revoked(),
                        _ = lag_tick.tick() => self.export_lag(),
                        next = stream.next() => match next {
                            Some(Ok(m)) => {
                                self.take(m.detach());
                                // Held records are bounded while the attempt runs too: a
                                // full lane is paused now, not after the attempt.
                                self.reconcile_pauses();
                            }
                            Some(Err(err)) => return Err(err),
                            None => return Ok(()),
                        },
                    }
                }
            };
            self.drop_revoked();
            self.in_flight = None;
            self.settle(&partition, lane_id, message, step);
            self.reconcile_pauses();
            self.commit_due();
        }
    }

    /// Sets the lag gauges (`mailroom_events_lag_records`, `mailroom_events_lag_seconds`):
    /// records from the first one not applied (the one being tried, else the front of its
    /// lane) to the partition's end as last fetched (no broker round trip; a paused partition's
    /// end is the one before its pause), and the age of the oldest record taken and not applied.
    fn export_lag(&self) {
        let owned = self.consumer.context().owned();
        let in_flight = self
            .in_flight
            .as_ref()
            .filter(|(partition, _, _)| owned.contains(partition));
        let records = records_behind(self.consumer, &owned, |partition| {
            let front = self
                .lanes
                .get(partition)
                .map(|lane| lane.records.front().map_or(lane.next, |m| m.offset()));
            match in_flight {
                Some((p, offset, _)) if p == partition => {
                    Some(front.map_or(*offset, |f| f.min(*offset)))
                }
                _ => front,
            }
        });
        let now_ms = chrono::Utc::now().timestamp_millis();
        let oldest_ms = self
            .lanes
            .iter()
            .filter(|(partition, _)| owned.contains(partition))
            .filter_map(|(_, lane)| lane.records.front())
            .filter_map(|m| m.timestamp().to_millis())
            .chain(in_flight.and_then(|(_, _, produced)| *produced))
            .min();
        let seconds = oldest_ms.map_or(0.0, |ms| (now_ms - ms).max(0) as f64 / 1000.0);
        lag_gauges(self.name, records as f64, seconds);
    }

    /// Commits the settled offsets if [`COMMIT_EVERY`] has passed since the last commit.
    fn commit_due(&mut self) {
        if !self.to_commit.is_empty() && self.committed_at.elapsed() >= COMMIT_EVERY {
            self.commit(CommitMode::Async);
        }
    }

    /// Commits the settled offsets of the partitions this consumer still owns (another
    /// owner's offset is its own).
    fn commit(&mut self, mode: CommitMode) {
        self.committed_at = Instant::now();
        let mut list = TopicPartitionList::new();
        for (partition, next) in std::mem::take(&mut self.to_commit) {
            if self.consumer.context().owns(&partition) {
                let _ = list.add_partition_offset(&partition.0, partition.1, Offset::Offset(next));
            }
        }
        if list.count() == 0 {
            return;
        }
        if let Err(err) = self.consumer.commit(&list, mode) {
            tracing::warn!(%err, consumer = self.name, "offset commit failed; the records may be redelivered (harmless)");
        }
    }

    /// A lane whose first record may be tried now, taking turns after the last one served.
    fn ready(&self) -> Option<PartitionId> {
        let now = Instant::now();
        let is_ready = |lane: &Lane| {
            !lane.records.is_empty() && lane.retry.as_ref().is_none_or(|r| r.due <= now)
        };
        let after = match &self.cursor {
            Some(cursor) => self
                .lanes
                .range::<PartitionId, _>((
                    std::ops::Bound::Excluded(cursor),
                    std::ops::Bound::Unbounded,
                ))
                .find(|(_, lane)| is_ready(lane)),
            None => None,
        };
        after
            .or_else(|| self.lanes.iter().find(|(_, lane)| is_ready(lane)))
            .map(|(partition, _)| partition.clone())
    }

    /// When the next waiting record may be tried.
    fn next_due(&self) -> Option<Instant> {
        self.lanes
            .values()
            .filter(|lane| !lane.records.is_empty())
            .filter_map(|lane| lane.retry.as_ref().map(|r| r.due))
            .min()
    }

    /// Holds a record that arrived, after forgetting what was held of partitions revoked
    /// before it.
    fn take(&mut self, message: OwnedMessage) {
        self.drop_revoked();
        let partition = (message.topic().to_owned(), message.partition());
        let offset = message.offset();
        let lane = match self.lanes.get_mut(&partition) {
            Some(lane) => lane,
            None => {
                self.next_lane += 1;
                self.lanes.entry(partition).or_insert(Lane {
                    id: self.next_lane,
                    records: VecDeque::new(),
                    next: offset,
                    retry: None,
                })
            }
        };
        // After a pause the partition is fetched again from after the last record handed
        // over, so nothing is missed; a record seen already is not taken twice.
        if offset < lane.next {
            return;
        }
        lane.next = offset + 1;
        lane.records.push_back(message);
    }

    /// Forgets the lanes of revoked partitions: what they held is the new owner's now.
    fn drop_revoked(&mut self) {
        let revoked = self.consumer.context().take_revoked();
        if revoked.is_empty() {
            return;
        }
        let mut resume = TopicPartitionList::new();
        for partition in revoked {
            // Its settled offset is lost with it: the new owner may redeliver those records,
            // which changes nothing (`processed_events`).
            self.to_commit.remove(&partition);
            if let Some(lane) = self.lanes.remove(&partition) {
                if !lane.records.is_empty() {
                    tracing::info!(consumer = self.name, topic = %partition.0, partition = partition.1, held = lane.records.len(), "partition revoked; its held records are left to the new owner");
                }
            }
            // A partition paused by the application stays paused through a new assignment:
            // resume it, so that it is not paused if it comes back.
            if self.paused.remove(&partition) {
                resume.add_partition(&partition.0, partition.1);
            }
        }
        if resume.count() > 0 {
            if let Err(err) = self.consumer.resume(&resume) {
                tracing::debug!(%err, consumer = self.name, "resuming revoked partitions failed");
            }
        }
    }

    /// Acts on what an attempt at `message` (the first record of lane `lane_id` of
    /// `partition`) came to.
    fn settle(&mut self, partition: &PartitionId, lane_id: u64, message: OwnedMessage, step: Step) {
        let current = self
            .lanes
            .get_mut(partition)
            .filter(|lane| lane.id == lane_id);
        let outcome = match step {
            Step::Done(outcome) => outcome,
            Step::Failed(err, class) => {
                // Revoked meanwhile: the record is the new owner's.
                let Some(lane) = current else { return };
                let retry = lane.retry.get_or_insert(Retry {
                    since: Instant::now(),
                    first_unknown: None,
                    canceled: 0,
                    unknown: 0,
                    transient: 0,
                    backoff: None,
                    due: Instant::now(),
                    dead_letter: None,
                });
                // A statement cancelled on every try (a `statement_timeout` the record itself
                // trips) is not an outage: after a while it counts as unknown.
                let class = if class == Class::Transient && classify::is_query_canceled(&err) {
                    retry.canceled += 1;
                    if retry.canceled > classify::QUERY_CANCELED_TRANSIENT {
                        Class::Unknown
                    } else {
                        class
                    }
                } else {
                    retry.canceled = 0;
                    class
                };
                match class {
                    Class::Permanent => {
                        retry.dead_letter = Some(format!("{err:#}"));
                        retry.due = Instant::now();
                    }
                    Class::Unknown => {
                        retry.unknown += 1;
                        let first = *retry.first_unknown.get_or_insert_with(Instant::now);
                        tracing::warn!(error = %format!("{err:#}"), consumer = self.name, attempt = retry.unknown, offset = message.offset(), "event handler failed");
                        if retry.unknown >= MAX_ATTEMPTS
                            && first.elapsed() >= self.options.unknown_budget
                        {
                            retry.dead_letter = Some(format!("{err:#}"));
                            retry.due = Instant::now();
                        } else {
                            let backoff = self.options.next_backoff(retry.backoff);
                            retry.backoff = Some(backoff);
                            retry.due = Instant::now() + backoff;
                        }
                    }
                    Class::Transient => {
                        retry.transient += 1;
                        if retry.transient == 1 || retry.transient.is_multiple_of(10) {
                            tracing::warn!(error = %format!("{err:#}"), consumer = self.name, attempts = retry.transient, topic = %partition.0, partition = partition.1, offset = message.offset(), "a dependency is unavailable; the partition waits and the record is retried");
                        }
                        let backoff = self.options.next_backoff(retry.backoff);
                        retry.backoff = Some(backoff);
                        retry.due = Instant::now() + backoff;
                    }
                }
                lane.records.push_front(message);
                return;
            }
            Step::NotStored(error, err) => {
                let Some(lane) = current else { return };
                tracing::warn!(%err, consumer = self.name, "dead letter not stored yet; retrying");
                let retry = lane.retry.get_or_insert(Retry {
                    since: Instant::now(),
                    first_unknown: None,
                    canceled: 0,
                    unknown: 0,
                    transient: 0,
                    backoff: None,
                    due: Instant::now(),
                    dead_letter: None,
                });
                retry.dead_letter = Some(error);
                let backoff = self.options.next_backoff(retry.backoff);
                retry.backoff = Some(backoff);
                retry.due = Instant::now() + backoff;
                lane.records.push_front(message);
                return;
            }
        };
        if let Some(lane) = current {
            lane.retry = None;
        }
        count(self.name, outcome.label());
        // Only for a partition this consumer still owns: another owner's offset is its own.
        if self.consumer.context().owns(partition) {
            self.to_commit
                .insert(partition.clone(), message.offset() + 1);
        }
    }

    /// Pauses the partitions whose first record waits or whose lane is full, and resumes the
    /// others this consumer paused.
    fn reconcile_pauses(&mut self) {
        let wanted: HashSet<PartitionId> = self
            .lanes
            .iter()
            .filter(|(_, lane)| {
                (lane.retry.is_some() && !lane.records.is_empty()) || lane.records.len() >= LANE_CAP
            })
            .map(|(partition, _)| partition.clone())
            .collect();
        set_paused(self.consumer, &mut self.paused, wanted, self.name);
        let waiting: Vec<Instant> = self
            .lanes
            .values()
            .filter(|lane| !lane.records.is_empty())
            .filter_map(|lane| lane.retry.as_ref().map(|r| r.since))
            .collect();
        retrying_gauges(self.name, &waiting);
    }
}

/// How many records of `owned` partitions are not applied yet: from the first one not applied
/// (`first_unapplied`, or the fetch position of a partition nothing was taken from since it
/// was assigned) to the partition's end as the consumer last fetched it, summed. No broker
/// round trip; a partition not fetched yet counts nothing.
pub(crate) fn records_behind(
    consumer: &GroupConsumer,
    owned: &[PartitionId],
    first_unapplied: impl Fn(&PartitionId) -> Option<i64>,
) -> i64 {
    let mut positions = None;
    let mut records = 0_i64;
    for partition in owned {
        let Some(end) = crate::kafka::cached_end_offset(consumer, &partition.0, partition.1) else {
            continue;
        };
        let first = match first_unapplied(partition) {
            Some(first) => first,
            None => match fetch_position(consumer, &mut positions, partition) {
                Some(position) => position,
                None => continue,
            },
        };
        records += (end - first).max(0);
    }
    records
}

/// The consumer's fetch position in `partition` (the next offset it will fetch), reading the
/// positions of every assigned partition once into `positions` (a call to librdkafka's main
/// thread: only when a partition needs it).
pub(crate) fn fetch_position(
    consumer: &GroupConsumer,
    positions: &mut Option<Option<TopicPartitionList>>,
    partition: &PartitionId,
) -> Option<i64> {
    let list = positions.get_or_insert_with(|| consumer.position().ok());
    match list
        .as_ref()?
        .find_partition(&partition.0, partition.1)?
        .offset()
    {
        Offset::Offset(position) => Some(position),
        _ => None,
    }
}

/// Sets `mailroom_events_lag_records{consumer}` and `mailroom_events_lag_seconds{consumer}`.
pub(crate) fn lag_gauges(name: &str, records: f64, seconds: f64) {
    metrics::gauge!(crate::metrics::EVENTS_LAG_RECORDS, "consumer" => name.to_owned()).set(records);
    metrics::gauge!(crate::metrics::EVENTS_LAG_SECONDS, "consumer" => name.to_owned()).set(seconds);
}

/// Sets `mailroom_events_retrying{consumer}` and `mailroom_events_oldest_retry_seconds` from
/// the first-failure times of the records waiting for a retry.
pub(crate) fn retrying_gauges(name: &str, waiting: &[Instant]) {
    metrics::gauge!(crate::metrics::EVENTS_RETRYING, "consumer" => name.to_owned())
        .set(waiting.len() as f64);
    let oldest = waiting
        .iter()
        .map(|since| since.elapsed().as_secs_f64())
        .fold(0.0, f64::max);
    metrics::gauge!(crate::metrics::EVENTS_RETRY_AGE, "consumer" => name.to_owned()).set(oldest);
}

/// Pauses the partitions in `wanted` not paused yet and resumes those in `paused` not wanted.
pub(crate) fn set_paused(
    consumer: &GroupConsumer,
    paused: &mut HashSet<PartitionId>,
    wanted: HashSet<PartitionId>,
    name: &str,
) {
    let mut pause = TopicPartitionList::new();
    for partition in wanted.difference(paused) {
        pause.add_partition(&partition.0, partition.1);
    }
    let mut resume = TopicPartitionList::new();
    for partition in paused.difference(&wanted) {
        resume.add_partition(&partition.0, partition.1);
    }
    // Only what librdkafka did is recorded: a failed pause or resume is tried again at the
    // next reconciliation, instead of leaving a partition paused for good.
    if pause.count() > 0 {
        match consumer.pause(&pause) {
            Ok(()) => {
                tracing::debug!(consumer = name, partitions = ?pause, "paused");
                paused.extend(partitions_of(&pause));
            }
            Err(err) => tracing::warn!(%err, consumer = name, "pausing partitions failed"),
        }
    }
    if resume.count() > 0 {
        match consumer.resume(&resume) {
            Ok(()) => {
                tracing::debug!(consumer = name, partitions = ?resume, "resumed");
                for partition in partitions_of(&resume) {
                    paused.remove(&partition);
                }
            }
            Err(err) => tracing::warn!(%err, consumer = name, "resuming partitions failed"),
        }
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<PartitionId> {
    list.elements()
        .into_iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// One attempt at a record: decode it, apply it (or store it as a dead letter when it was
/// decided so before).
async fn attempt(
    name: &str,
    pool: &PgPool,
    message: &OwnedMessage,
    handler: &dyn EventHandler,
    dead_letter: Option<String>,
) -> Step {
    if let Some(error) = dead_letter {
        return match store_dead_letter(name, pool, message, &error).await {
            Ok(()) => Step::Done(Outcome::DeadLetter),
            Err(err) => Step::NotStored(error, err),
        };
    }
    let envelope = match decode(message.payload().unwrap_or_default()) {
        Ok(envelope) => envelope,
        Err(refusal) => return Step::Failed(refusal.into(), Class::Permanent),
    };
    let (envelope, event_id) = envelope;
    if !handler.wants(&envelope) {
        return Step::Done(Outcome::Skipped);
    }
    // The handling continues the trace of the request that caused the event.
    let span = tracing::info_span!("consume", consumer = name, event.id = %envelope.id, event.type = %envelope.r#type);
    crate::telemetry::set_parent_from(
        &span,
        &crate::telemetry::MapExtractor(&envelope.trace_context),
    );
    match apply_or_hold(name, pool, message, event_id, &envelope, handler)
        .instrument(span)
        .await
    {
        Ok(Applied::Fresh) => Step::Done(Outcome::Applied),
        Ok(Applied::Duplicate) => Step::Done(Outcome::Duplicate),
        Ok(Applied::Held(before)) => {
            tracing::warn!(
                consumer = name,
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                dead_letter = before,
                "record held in dead_letters behind an earlier record of its key"
            );
            Step::Done(Outcome::Held)
        }
        Err(failure) => {
            let class = failure.class();
            Step::Failed(failure.into_error(), class)
        }
    }
}

/// Decodes a record's envelope and its event id; a record that has neither is refused.
pub(crate) fn decode(payload: &[u8]) -> Result<(Envelope, Uuid), Refusal> {
    let envelope = Envelope::decode(payload)
        .map_err(|err| Refusal::new(format!("undecodable envelope: {err}")))?;
    let event_id =
        Uuid::parse_str(&envelope.id).map_err(|_| Refusal::new("envelope id is not a UUID"))?;
    Ok((envelope, event_id))
}

/// Why an application failed: in the consumer's own bookkeeping (always waited out: the
/// record is not at fault), or in the handler or at commit (classified).
pub(crate) enum ApplyFailure {
    Bookkeeping(sqlx::Error),
    Handler(anyhow::Error),
}

impl ApplyFailure {
    pub(crate) fn class(&self) -> Class {
        match self {
            ApplyFailure::Bookkeeping(_) => Class::Transient,
            ApplyFailure::Handler(err) => classify(err),
        }
    }

    pub(crate) fn into_error(self) -> anyhow::Error {
        match self {
            ApplyFailure::Bookkeeping(err) => {
                anyhow::Error::from(err).context("recording the event as processed")
            }
            ApplyFailure::Handler(err) => err,
        }
    }
}

/// What [`apply_or_hold`] did with a record.
pub(crate) enum Applied {
    Fresh,
    Duplicate,
    /// Kept in `dead_letters` behind dead letter `.0`, the first of its key still waiting.
    Held(i64),
}

/// The first dead letter of consumer `name` and the key of `message` still waiting (neither
/// replayed nor discarded), as the transaction `conn` sees it, and whether one of those
/// waiting is `message` itself (a redelivery of a record set aside already).
pub(crate) async fn waiting_of_key(
    conn: &mut PgConnection,
    name: &str,
    key: &[u8],
    message: &OwnedMessage,
) -> Result<(Option<i64>, bool), sqlx::Error> {
    let (first, itself): (Option<i64>, Option<bool>) = sqlx::query_as(
        "SELECT min(id), bool_or(topic = $3 AND partition = $4 AND \"offset\" = $5) \
         FROM dead_letters \
         WHERE consumer = $1 AND record_key = $2 AND replayed_at IS NULL AND discarded_at IS NULL",
    )
    .bind(name)
    .bind(key)
    .bind(message.topic())
    .bind(message.partition())
    .bind(message.offset())
    .fetch_one(conn)
    .await?;
    Ok((first, itself.unwrap_or(false)))
}

/// Applies the record `message` (`envelope`) once, in one transaction of its own (see
/// [`apply_in`]), unless an earlier record of its key waits in `dead_letters`: then it is kept
/// there too, behind that one, in the same transaction.
///
/// No lock is needed against a replay of the key running meanwhile: this transaction sees a
/// letter as waiting until the replay that applied it committed, so either this record is held
/// (and the replay, which walks the key's letters in id order, applies it next) or the
/// earlier letters are applied already.
pub(crate) async fn apply_or_hold(
    name: &str,
    pool: &PgPool,
    message: &OwnedMessage,
    event_id: Uuid,
    envelope: &Envelope,
    handler: &dyn EventHandler,
) -> Result<Applied, ApplyFailure> {
    let mut tx = pool.begin().await.map_err(ApplyFailure::Bookkeeping)?;
    if let Some(key) = message.key() {
        let (before, itself) = waiting_of_key(&mut tx, name, key, message)
            .await
            .map_err(ApplyFailure::Bookkeeping)?;
        if itself {
            // Redelivered (its offset was not committed yet): it waits there already.
            return Ok(Applied::Duplicate);
        }
        if let Some(before) = before {
            insert_dead_letter(
                &mut tx,
                name,
                message,
                &format!("held behind dead letter {before} of the same key"),
                Some(before),
            )
            .await
            .map_err(ApplyFailure::Bookkeeping)?;
            tx.commit().await.map_err(ApplyFailure::Bookkeeping)?;
            return Ok(Applied::Held(before));
        }
    }
    let fresh = apply_in(&mut tx, name, event_id, envelope, handler).await?;
    if !fresh {
        return Ok(Applied::Duplicate);
    }
    tx.commit()
        .await
        .map_err(|err| ApplyFailure::Handler(err.into()))?;
    Ok(Applied::Fresh)
}

/// Inside transaction `tx`: records the event id in `processed_events` and, if it was not
/// there yet, lets `handler` apply the event. Returns whether it was applied now.
pub(crate) async fn apply_in(
    tx: &mut PgConnection,
    name: &str,
    event_id: Uuid,
    envelope: &Envelope,
    handler: &dyn EventHandler,
) -> Result<bool, ApplyFailure> {
    let fresh = sqlx::query(
        "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .bind(event_id)
    .execute(&mut *tx)
    .await
    .map_err(ApplyFailure::Bookkeeping)?
    .rows_affected()
        == 1;
    if fresh {
        handler
            .handle(tx, envelope)
            .await
            .map_err(ApplyFailure::Handler)?;
    }
    Ok(fresh)
}

/// Inserts `message` into `dead_letters` with `error` (and the letter it is held behind).
async fn insert_dead_letter<M: Message>(
    conn: &mut PgConnection,
    name: &str,
    message: &M,
    error: &str,
    held_behind: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (consumer, topic, partition, \"offset\", record_key, payload, error, held_behind) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(name)
    .bind(message.topic())
    .bind(message.partition())
    .bind(message.offset())
    .bind(message.key())
    .bind(message.payload())
    .bind(error)
    .bind(held_behind)
    .execute(conn)
    .await?;
    Ok(())
}

/// Keeps `message` in `dead_letters` with `error` (one try).
pub(crate) async fn store_dead_letter<M: Message>(
    name: &str,
    pool: &PgPool,
    message: &M,
    error: &str,
) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    insert_dead_letter(&mut conn, name, message, error, None).await?;
    tracing::error!(consumer = name, topic = message.topic(), partition = message.partition(), offset = message.offset(), %error, "record kept in dead_letters");
    Ok(())
}
