//! The consumer's concurrent mode: a worker that does slow work per record (a mailbox sync)
//! keeps up to `max_in_flight` records in flight at once.
//!
//! - Records of one key (one mailbox) never run together: a record whose key is busy waits
//!   behind it, in order.
//! - Offsets are committed per partition only up to the contiguous prefix of finished records
//!   ([`Progress`]), so a crash or a shutdown redelivers exactly what had not finished (and
//!   perhaps some that had: handlers must be idempotent, as a sync is).
//! - A failure is sorted by [`super::classify`]: a transient one is retried with back-off for
//!   as long as it takes, holding only its key (and its partition's commit): the partition is
//!   paused meanwhile, the others go on. A permanent one is dead-lettered at once, an unknown
//!   one after [`super::MAX_ATTEMPTS`] tries and [`super::Options::unknown_budget`].
//! - The consumer polls all the time, so it stays in its group however long the work takes;
//!   when it holds `max_in_flight` records it pauses its partitions, leaving the records in the
//!   broker.
//! - When a partition is revoked, the records of it that wait are dropped and its progress is
//!   forgotten; what of it is in flight finishes but is not committed (the new owner does it
//!   again), and no offset is ever committed for a partition this consumer no longer owns.
//! - On shutdown, handlers are told through their token; what they abandon is not committed.
//!
//! Unlike [`super::run`], nothing is recorded in `processed_events`: the work is not a
//! database change to make once, and doing it twice is harmless. Dead letters an operator asks
//! to replay are run through the [`WorkHandler`] too ([`super::replay`]).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt as _, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{classify, Class, Options};

/// How often a work consumer's lag gauge is refreshed.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// How long a work consumer waits for the broker to tell a paused partition's end.
const ASK_BROKER_TIMEOUT: Duration = Duration::from_secs(2);
use crate::kafka::{GroupConsumer, PartitionId};
use crate::proto::events::v1::Envelope;

/// Does the work a record asks for.
#[async_trait]
pub trait WorkHandler: Send + Sync + 'static {
    /// Handles one event. `stop` is cancelled at shutdown: return soon after, and what was
    /// not finished is delivered again. An error is classified ([`super::classify`]): a
    /// dependency that is down is waited for, a [`super::Refusal`] is dead-lettered at once,
    /// anything else is retried a few times, then dead-lettered.
    async fn handle(&self, event: Envelope, stop: CancellationToken) -> anyhow::Result<()>;
}

/// Per partition: which offsets are in flight, and how far the commit may go.
#[derive(Debug, Default)]
pub struct Progress {
    outstanding: BTreeSet<i64>,
    /// One past the highest offset taken.
    next: i64,
    committed: i64,
}

impl Progress {
    /// A record was taken.
    pub fn start(&mut self, offset: i64) {
        if self.outstanding.is_empty() && self.next == 0 {
            self.committed = offset;
        }
        self.outstanding.insert(offset);
        self.next = self.next.max(offset + 1);
    }

    /// Whether a record at `offset` was taken already (a partition fetched again after a
    /// pause hands over nothing twice, but this makes sure).
    pub fn is_taken(&self, offset: i64) -> bool {
        offset < self.next
    }

    /// Records of a partition whose end is `end` not finished yet: those taken and running
    /// or held, and those not taken; `None` before anything was taken.
    pub fn unfinished(&self, end: i64) -> Option<i64> {
        (self.next > 0 || !self.outstanding.is_empty())
            .then(|| self.outstanding.len() as i64 + (end - self.next).max(0))
    }

    /// A record finished; returns the offset to commit if the contiguous prefix grew.
    pub fn finish(&mut self, offset: i64) -> Option<i64> {
        self.outstanding.remove(&offset);
        let upto = self.outstanding.first().copied().unwrap_or(self.next);
        if upto > self.committed {
            self.committed = upto;
            Some(upto)
        } else {
            None
        }
    }
}

/// What the consumer knows of a partition it owns, since it was assigned.
struct Owned {
    /// Tells this assignment of the partition from an earlier one.
    epoch: u64,
    progress: Progress,
    /// Records of it waiting on a transient failure: while any does, it is paused.
    stuck: usize,
}

/// A record taken, with the assignment it came in.
struct Held {
    epoch: u64,
    message: OwnedMessage,
}

impl Held {
    fn partition(&self) -> PartitionId {
        (self.message.topic().to_owned(), self.message.partition())
    }

    fn key(&self) -> Vec<u8> {
        self.message.key().unwrap_or_default().to_vec()
    }
}

struct Finished {
    partition: PartitionId,
    epoch: u64,
    offset: i64,
    key: Vec<u8>,
    /// False when the handler gave up at shutdown: not committed.
    done: bool,
    /// Whether it waited on a transient failure (and was counted as stuck).
    stuck: bool,
}

/// As [`super::run_until_shutdown`], in the concurrent mode.
#[allow(clippy::too_many_arguments)]
pub async fn run_until_shutdown(
    kafka: crate::kafka::KafkaSettings,
    group: String,
    pool: PgPool,
    topics: Vec<crate::kafka::Topic>,
    handler: Arc<dyn WorkHandler>,
    max_in_flight: usize,
    max_work: Duration,
    options: Options,
    shutdown: CancellationToken,
) {
    let owned_names = kafka.topics.names(&topics);
    let names: Vec<&str> = owned_names.iter().map(String::as_str).collect();
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
            let result = match kafka.work_consumer(&group, max_work) {
                Ok(consumer) => {
                    run_with(
                        &group,
                        &pool,
                        consumer,
                        &names,
                        handler.clone(),
                        max_in_flight.max(1),
                        options.clone(),
                        shutdown.clone(),
                    )
                    .await
                }
                Err(err) => Err(err),
            };
            if let Err(err) = result {
                tracing::warn!(%err, consumer = %group, "work consumer stopped; starting again");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    };
    tokio::join!(
        consuming,
        super::retention::run(&group, &pool, &options, &kafka, &topics, shutdown.clone())
    );
}

/// Consumes the topics named `topics` in `group`, up to `max_in_flight` records at once, until
/// `shutdown`, with the default [`Options`].
pub async fn run(
    group: &str,
    pool: &PgPool,
    consumer: GroupConsumer,
    topics: &[&str],
    handler: Arc<dyn WorkHandler>,
    max_in_flight: usize,
    shutdown: CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    run_with(
        group,
        pool,
        consumer,
        topics,
        handler,
        max_in_flight,
        Options::default(),
        shutdown,
    )
    .await
}

/// As [`run`], with `options`; beside the records, it runs the dead letters an operator asked
/// to replay and keeps the dead-letter gauge ([`super::replay`]).
#[allow(clippy::too_many_arguments)]
pub async fn run_with(
    group: &str,
    pool: &PgPool,
    consumer: GroupConsumer,
    topics: &[&str],
    handler: Arc<dyn WorkHandler>,
    max_in_flight: usize,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    // Closed off the runtime's workers, however it ends (see [`super::closing`]).
    let consumer = super::closing::Closing::new(consumer);
    consumer.subscribe(topics)?;
    let side = shutdown.child_token();
    let replaying = super::replay::run(
        group,
        pool,
        super::replay::Replayer::Work(handler.clone()),
        &options,
        side.clone(),
    );
    let (signals, stuck) = mpsc::unbounded_channel();
    let mut worker = Concurrent {
        group,
        pool,
        consumer: &consumer,
        handler,
        options: &options,
        max_in_flight: max_in_flight.max(1),
        stop: shutdown.child_token(),
        tasks: JoinSet::new(),
        owned: HashMap::new(),
        next_epoch: 0,
        busy: HashSet::new(),
        waiting: HashMap::new(),
        overflow: VecDeque::new(),
        held: 0,
        paused: HashSet::new(),
        signals,
        shared: consumer.shared(),
        told: Arc::default(),
        asking: None,
    };
    let consuming = async {
        let result = worker.run(&shutdown, stuck).await;
        side.cancel();
        result
    };
    let (result, ()) = tokio::join!(consuming, replaying);
    if let Some(asking) = worker.asking.take() {
        let _ = asking.await;
    }
    drop(worker);
    // A consumer that stopped holds no backlog; a later run sets it again.
    metrics::gauge!(crate::metrics::EVENTS_LAG_RECORDS, "consumer" => group.to_owned()).set(0.0);
    consumer.close(group).await;
    result
}

struct Concurrent<'a> {
    group: &'a str,
    pool: &'a PgPool,
    consumer: &'a GroupConsumer,
    handler: Arc<dyn WorkHandler>,
    options: &'a Options,
    max_in_flight: usize,
    /// Tells the handlers to stop (at shutdown).
    stop: CancellationToken,
    tasks: JoinSet<Finished>,
    owned: HashMap<PartitionId, Owned>,
    next_epoch: u64,
    /// Keys with a record running.
    busy: HashSet<Vec<u8>>,
    /// Records waiting behind the running one of their key, in order.
    waiting: HashMap<Vec<u8>, VecDeque<Held>>,
    /// Records whose key is free, waiting for a slot, in order.
    overflow: VecDeque<Held>,
    /// Records in `waiting` and `overflow`.
    held: usize,
    paused: HashSet<PartitionId>,
    /// A task tells through this that its record waits on a transient failure.
    signals: mpsc::UnboundedSender<(PartitionId, u64)>,
    /// The consumer, for asking the broker about partitions it does not fetch.
    shared: Arc<GroupConsumer>,
    /// What the broker last told of paused (or not yet fetched) partitions: a paused
    /// partition is not fetched, so librdkafka's own end stops at the pause.
    told: Arc<std::sync::Mutex<HashMap<PartitionId, Told>>>,
    /// The broker round trip for [`Self::told`] under way, if any (awaited before the
    /// consumer is closed, so that closing it is what leaves the group).
    asking: Option<tokio::task::JoinHandle<()>>,
}

/// A partition as the broker told it.
#[derive(Debug, Clone, Copy, Default)]
struct Told {
    /// One past its last record.
    end: Option<i64>,
    /// The group's committed offset (where this worker starts), for a partition nothing was
    /// taken from yet.
    committed: Option<i64>,
}

impl Concurrent<'_> {
    async fn run(
        &mut self,
        shutdown: &CancellationToken,
        mut stuck: mpsc::UnboundedReceiver<(PartitionId, u64)>,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let mut stream = self.consumer.stream();
        // The first tick after a whole period: a gauge set before the first assignment would
        // read 0 for a consumer that restarted behind.
        let mut lag_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + LAG_EVERY, LAG_EVERY);
        lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            self.drop_revoked();
            self.reconcile_pauses();
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = lag_tick.tick() => self.export_lag(),
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match joined {
                        Ok(finished) => self.finished(finished),
                        Err(err) => {
                            // A handler panicked outside its guard: its record is not
                            // committed and comes back with the next consumer. Start that one.
                            tracing::error!(%err, consumer = self.group, "work task failed");
                            break Ok(());
                        }
                    }
                }
                // Revoked in a poll that handed over no record.
                () = self.consumer.context().revocation() => self.drop_revoked(),
                Some((partition, epoch)) = stuck.recv() => {
                    if let Some(owned) = self.owned.get_mut(&partition).filter(|o| o.epoch == epoch) {
                        owned.stuck += 1;
                    }
                }
                // Polled all the time: the consumer stays in its group however long the work
                // takes. When full, its partitions are paused (see `reconcile_pauses`).
                next = stream.next() => match next {
                    Some(Ok(message)) => {
                        self.drop_revoked();
                        self.take(message.detach());
                    }
                    // As in the sequential mode: never keep a consumer across a stream error.
                    Some(Err(err)) => break Err(err),
                    None => break Ok(()),
                },
            }
        };
        // Hand back: tell the handlers, wait for them (they return soon), commit what finished.
        self.stop.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok(finished) = joined {
                self.record(&finished);
            }
        }
        result
    }

    /// Sets `mailroom_events_lag_records{consumer=<group>}`: the records of its partitions not
    /// finished yet (running, held, or not taken), a worker backlog an autoscaler reads. The
    /// end of a partition is librdkafka's last fetched one, or for a paused partition (not
    /// fetched while the worker is full) the broker's, asked off the runtime's threads and
    /// used from the next tick on.
    fn export_lag(&mut self) {
        let owned = self.consumer.context().owned();
        let told = {
            let mut told = match self.told.lock() {
                Ok(told) => told,
                Err(poisoned) => poisoned.into_inner(),
            };
            told.retain(|partition, _| owned.contains(partition));
            told.clone()
        };
        let mut ask = Vec::new();
        let mut positions = None;
        let mut records = 0_i64;
        for partition in &owned {
            let told = told.get(partition).copied().unwrap_or_default();
            let fetched = crate::kafka::cached_end_offset(self.consumer, &partition.0, partition.1);
            let progress = self.owned.get(partition).map(|o| &o.progress);
            let taken = progress.is_some_and(|p| p.unfinished(0).is_some());
            if fetched.is_none() || self.paused.contains(partition) {
                ask.push((partition.clone(), !taken));
            }
            let Some(end) = fetched.max(told.end) else {
                continue;
            };
            let unfinished = match progress.and_then(|p| p.unfinished(end)) {
                Some(unfinished) => unfinished,
                None => match super::fetch_position(self.consumer, &mut positions, partition)
                    .or(told.committed)
                {
                    Some(start) => (end - start).max(0),
                    None => continue,
                },
            };
            records += unfinished;
        }
        metrics::gauge!(crate::metrics::EVENTS_LAG_RECORDS, "consumer" => self.group.to_owned())
            .set(records as f64);
        if ask.is_empty() || self.asking.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let (consumer, known, stop) = (
            Arc::clone(&self.shared),
            Arc::clone(&self.told),
            self.stop.clone(),
        );
        self.asking = Some(tokio::task::spawn_blocking(move || {
            let mut asked = HashMap::new();
            let mut starts = TopicPartitionList::new();
            for (partition, nothing_taken) in ask {
                if stop.is_cancelled() {
                    return;
                }
                let mut told = Told::default();
                if let Ok((_, high)) =
                    consumer.fetch_watermarks(&partition.0, partition.1, ASK_BROKER_TIMEOUT)
                {
                    told.end = Some(high);
                }
                if nothing_taken {
                    starts.add_partition(&partition.0, partition.1);
                }
                asked.insert(partition, told);
            }
            if starts.count() > 0 && !stop.is_cancelled() {
                if let Ok(committed) = consumer.committed_offsets(starts, ASK_BROKER_TIMEOUT) {
                    for element in committed.elements() {
                        if let (Offset::Offset(offset), Some(told)) = (
                            element.offset(),
                            asked.get_mut(&(element.topic().to_owned(), element.partition())),
                        ) {
                            told.committed = Some(offset);
                        }
                    }
                }
            }
            // Merged: a partition the broker did not answer for keeps what it told before.
            if let Ok(mut known) = known.lock() {
                for (partition, told) in asked {
                    let entry = known.entry(partition).or_default();
                    entry.end = told.end.or(entry.end);
                    entry.committed = told.committed.or(entry.committed);
                }
            }
        }));
    }

    /// Takes a record that arrived: runs it, or holds it behind its key or for a slot.
    fn take(&mut self, message: OwnedMessage) {
        let partition = (message.topic().to_owned(), message.partition());
        let owned = self.owned.entry(partition).or_insert_with(|| {
            self.next_epoch += 1;
            Owned {
                epoch: self.next_epoch,
                progress: Progress::default(),
                stuck: 0,
            }
        });
        if owned.progress.is_taken(message.offset()) {
            return;
        }
        owned.progress.start(message.offset());
        let held = Held {
            epoch: owned.epoch,
            message,
        };
        let key = held.key();
        if self.busy.contains(&key) {
            self.waiting.entry(key).or_default().push_back(held);
            self.held += 1;
        } else {
            self.overflow.push_back(held);
            self.held += 1;
            self.fill();
        }
    }

    /// Starts records waiting for a slot, in order, while there are slots.
    fn fill(&mut self) {
        while self.tasks.len() < self.max_in_flight {
            let Some(held) = self.overflow.pop_front() else {
                return;
            };
            let key = held.key();
            if self.busy.contains(&key) {
                self.waiting.entry(key).or_default().push_back(held);
            } else {
                self.held -= 1;
                self.busy.insert(key);
                self.spawn(held);
            }
        }
    }

    /// A record finished: commit what may be, start the next of its key and fill the slots.
    fn finished(&mut self, finished: Finished) {
        self.record(&finished);
        match self
            .waiting
            .get_mut(&finished.key)
            .and_then(VecDeque::pop_front)
        {
            Some(next) => {
                self.held -= 1;
                self.spawn(next);
            }
            None => {
                self.waiting.remove(&finished.key);
                self.busy.remove(&finished.key);
            }
        }
        self.fill();
    }

    /// Records a finished record in its partition's progress, and commits the offset that
    /// allows, if the partition is still this consumer's, in the same assignment.
    fn record(&mut self, finished: &Finished) {
        let Some(owned) = self
            .owned
            .get_mut(&finished.partition)
            .filter(|o| o.epoch == finished.epoch)
        else {
            // Revoked since: its new owner does it again; nothing is committed for it here.
            return;
        };
        if finished.stuck {
            owned.stuck = owned.stuck.saturating_sub(1);
        }
        if !finished.done {
            return;
        }
        if let Some(offset) = owned.progress.finish(finished.offset) {
            if self.consumer.context().owns(&finished.partition) {
                commit(self.consumer, &finished.partition, offset, self.group);
            }
        }
    }

    /// Forgets revoked partitions: their progress, and their records that wait (the new owner
    /// takes them from its committed offset). Their records in flight finish uncommitted.
    fn drop_revoked(&mut self) {
        let revoked = self.consumer.context().take_revoked();
        if revoked.is_empty() {
            return;
        }
        let mut resume = TopicPartitionList::new();
        for partition in revoked {
            let Some(owned) = self.owned.remove(&partition) else {
                if self.paused.remove(&partition) {
                    resume.add_partition(&partition.0, partition.1);
                }
                continue;
            };
            let of_it = |held: &Held| held.epoch == owned.epoch && held.partition() == partition;
            let mut dropped = 0;
            for queue in self.waiting.values_mut() {
                let before = queue.len();
                queue.retain(|held| !of_it(held));
                dropped += before - queue.len();
            }
            self.waiting.retain(|_, queue| !queue.is_empty());
            let before = self.overflow.len();
            self.overflow.retain(|held| !of_it(held));
            dropped += before - self.overflow.len();
            self.held -= dropped;
            tracing::info!(consumer = self.group, topic = %partition.0, partition = partition.1, dropped, "partition revoked; its waiting records are left to the new owner");
            // A partition paused by the application stays paused through a new assignment:
            // resume it, so that it is not paused if it comes back.
            if self.paused.remove(&partition) {
                resume.add_partition(&partition.0, partition.1);
            }
        }
        if resume.count() > 0 {
            if let Err(err) = self.consumer.resume(&resume) {
                tracing::debug!(%err, consumer = self.group, "resuming revoked partitions failed");
            }
        }
    }

    /// Pauses every partition while the consumer holds `max_in_flight` records, else those
    /// with a record waiting on a transient failure; resumes the rest.
    fn reconcile_pauses(&mut self) {
        let wanted: HashSet<PartitionId> = if self.tasks.len() + self.held >= self.max_in_flight {
            self.consumer.context().owned().into_iter().collect()
        } else {
            self.owned
                .iter()
                .filter(|(_, owned)| owned.stuck > 0)
                .map(|(partition, _)| partition.clone())
                .collect()
        };
        if wanted != self.paused {
            super::set_paused(self.consumer, &mut self.paused, wanted, self.group);
        }
    }

    fn spawn(&mut self, held: Held) {
        let group = self.group.to_owned();
        let pool = self.pool.clone();
        let handler = self.handler.clone();
        let stop = self.stop.clone();
        let options = self.options.clone();
        let signals = self.signals.clone();
        self.tasks.spawn(async move {
            let partition = held.partition();
            let key = held.key();
            let offset = held.message.offset();
            let mut stuck = false;
            let done = work(
                &group,
                &pool,
                handler.as_ref(),
                &held.message,
                &stop,
                &options,
                || {
                    if !stuck {
                        stuck = true;
                        let _ = signals.send((partition.clone(), held.epoch));
                    }
                },
            )
            .await;
            Finished {
                partition,
                epoch: held.epoch,
                offset,
                key,
                done,
                stuck,
            }
        });
    }
}

fn commit(consumer: &GroupConsumer, partition: &PartitionId, offset: i64, group: &str) {
    let mut list = TopicPartitionList::new();
    if list
        .add_partition_offset(&partition.0, partition.1, Offset::Offset(offset))
        .is_err()
    {
        return;
    }
    if let Err(err) = consumer.commit(&list, CommitMode::Async) {
        tracing::debug!(%err, consumer = group, "offset commit refused; records may be redelivered");
    }
}

/// Runs one record to the end (handled, or dead-lettered); false if abandoned at shutdown.
/// `stuck` is called when it first waits on a transient failure.
async fn work(
    group: &str,
    pool: &PgPool,
    handler: &dyn WorkHandler,
    message: &OwnedMessage,
    stop: &CancellationToken,
    options: &Options,
    mut stuck: impl FnMut(),
) -> bool {
    let envelope = match super::decode(message.payload().unwrap_or_default()) {
        Ok((envelope, _)) => envelope,
        Err(refusal) => {
            return dead_letter(group, pool, message, &refusal.to_string(), stop, options).await;
        }
    };
    let span = tracing::info_span!("work", consumer = group, event.id = %envelope.id, event.type = %envelope.r#type);
    crate::telemetry::set_parent_from(
        &span,
        &crate::telemetry::MapExtractor(&envelope.trace_context),
    );
    let mut unknown = 0u32;
    let mut first_unknown: Option<tokio::time::Instant> = None;
    let mut transient = 0u32;
    let mut backoff = None;
    loop {
        // A handler that panics on a record is a failure like any other (retried, then
        // dead-lettered), not a consumer that restarts on the same record for ever.
        let result = std::panic::AssertUnwindSafe(
            handler
                .handle(envelope.clone(), stop.clone())
                .instrument(span.clone()),
        )
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the work handler panicked on this record")));
        if stop.is_cancelled() {
            return result.is_ok();
        }
        let err = match result {
            Ok(()) => {
                super::count(group, "applied");
                return true;
            }
            Err(err) => err,
        };
        match classify(&err) {
            Class::Permanent => {
                return dead_letter(group, pool, message, &format!("{err:#}"), stop, options).await;
            }
            Class::Unknown => {
                unknown += 1;
                tracing::warn!(error = %format!("{err:#}"), consumer = group, attempt = unknown, "work failed");
                let first = *first_unknown.get_or_insert_with(tokio::time::Instant::now);
                if unknown >= super::MAX_ATTEMPTS && first.elapsed() >= options.unknown_budget {
                    return dead_letter(group, pool, message, &format!("{err:#}"), stop, options)
                        .await;
                }
            }
            Class::Transient => {
                transient += 1;
                stuck();
                if transient == 1 || transient.is_multiple_of(10) {
                    tracing::warn!(error = %format!("{err:#}"), consumer = group, attempts = transient, topic = message.topic(), partition = message.partition(), offset = message.offset(), "a dependency is unavailable; the record is retried and its partition waits");
                }
            }
        }
        let pause = options.next_backoff(backoff);
        backoff = Some(pause);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return false,
        }
    }
}

/// Keeps `message` in `dead_letters`, trying until it is stored; false if abandoned at
/// shutdown first.
async fn dead_letter(
    group: &str,
    pool: &PgPool,
    message: &OwnedMessage,
    error: &str,
    stop: &CancellationToken,
    options: &Options,
) -> bool {
    let mut backoff = None;
    loop {
        match super::store_dead_letter(group, pool, message, error).await {
            Ok(()) => {
                super::count(group, "dead_letter");
                return true;
            }
            Err(err) => {
                tracing::warn!(%err, consumer = group, "dead letter not stored yet; retrying");
                let pause = options.next_backoff(backoff);
                backoff = Some(pause);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => return false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn commits_only_the_contiguous_prefix() {
        let mut p = Progress::default();
        for offset in 10..15 {
            p.start(offset);
        }
        // 11 and 12 finish first: 10 is still running, nothing may be committed.
        assert_eq!(p.finish(11), None);
        assert_eq!(p.finish(12), None);
        // 10 finishes: everything before 13 is done, so the next to read is 13.
        assert_eq!(p.finish(10), Some(13));
        assert_eq!(p.finish(14), None);
        assert_eq!(p.finish(13), Some(15));
    }

    #[test]
    fn a_partition_starting_mid_log_commits_from_there() {
        let mut p = Progress::default();
        p.start(500);
        assert_eq!(p.finish(500), Some(501));
    }

    #[test]
    fn unfinished_counts_what_runs_and_what_is_not_taken_not_what_finished_out_of_order() {
        let mut p = Progress::default();
        assert_eq!(p.unfinished(100), None, "nothing taken yet");
        for offset in 10..15 {
            p.start(offset);
        }
        // 11..=14 finish while 10 runs long: the commit stays at 10, yet only 10 is left of
        // what was taken, and 15..20 are not taken.
        for offset in 11..15 {
            p.finish(offset);
        }
        assert_eq!(p.unfinished(20), Some(1 + 5));
        p.finish(10);
        assert_eq!(p.unfinished(20), Some(5));
        assert_eq!(p.unfinished(15), Some(0));
    }

    #[test]
    fn a_record_taken_is_not_taken_twice() {
        let mut p = Progress::default();
        assert!(!p.is_taken(0));
        p.start(0);
        p.start(1);
        assert!(p.is_taken(1));
        assert!(!p.is_taken(2));
    }
}
