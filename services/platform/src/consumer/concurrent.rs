//! The consumer's concurrent mode: a worker that does slow work per record (a mailbox sync)
//! keeps up to `max_in_flight` records in flight at once.
//!
//! - Records of one key (one mailbox) never run together: a record whose key is busy waits
//!   behind it, in order.
//! - Offsets are committed per partition only up to the contiguous prefix of finished records
//!   ([`Progress`]), so a crash or a shutdown redelivers exactly what had not finished (and
//!   perhaps some that had: handlers must be idempotent, as a sync is).
//! - On shutdown, handlers are told through their token; what they abandon is not committed.
//! - Poll only when there is room, so a full worker leaves records in the broker for others;
//!   the consumer's `max.poll.interval.ms` must exceed the longest piece of work.
//!
//! Unlike [`super::run`], nothing is recorded in `processed_events`: the work is not a
//! database change to make once, and doing it twice is harmless.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt as _, StreamExt};
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::proto::events::v1::Envelope;

/// Does the work a record asks for.
#[async_trait]
pub trait WorkHandler: Send + Sync + 'static {
    /// Handles one event. `stop` is cancelled at shutdown: return soon after, and what was
    /// not finished is delivered again. An error is retried with backoff, then dead-lettered.
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

type PartitionId = (String, i32);

struct Finished {
    partition: PartitionId,
    offset: i64,
    key: Vec<u8>,
    /// False when the handler gave up at shutdown: not committed.
    done: bool,
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
    shutdown: CancellationToken,
) {
    let owned_names = kafka.topics.names(&topics);
    let names: Vec<&str> = owned_names.iter().map(String::as_str).collect();
    while !shutdown.is_cancelled() {
        if let Err(err) = kafka.ensure_topics(&topics).await {
            tracing::warn!(%err, consumer = %group, "could not ensure the topics; subscribing anyway");
        }
        let result = match kafka.work_consumer(&group, max_work) {
            Ok(consumer) => {
                run(
                    &group,
                    &pool,
                    consumer,
                    &names,
                    handler.clone(),
                    max_in_flight.max(1),
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
}

/// Consumes the topics named `topics` in `group`, up to `max_in_flight` records at once, until `shutdown`.
pub async fn run(
    group: &str,
    pool: &PgPool,
    consumer: StreamConsumer,
    topics: &[&str],
    handler: Arc<dyn WorkHandler>,
    max_in_flight: usize,
    shutdown: CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    consumer.subscribe(topics)?;
    let stop = shutdown.child_token();
    let mut stream = consumer.stream();
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    let mut progress: HashMap<PartitionId, Progress> = HashMap::new();
    let mut busy: HashSet<Vec<u8>> = HashSet::new();
    let mut waiting: HashMap<Vec<u8>, VecDeque<OwnedMessage>> = HashMap::new();
    let mut waiting_count = 0usize;
    let result = loop {
        let room = tasks.len() + waiting_count < max_in_flight;
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let finished = match joined {
                    Ok(f) => f,
                    Err(err) => {
                        // A handler panicked: its record is not committed and comes back
                        // with the next consumer. Start that one now.
                        tracing::error!(%err, consumer = group, "work handler panicked");
                        break Ok(());
                    }
                };
                if finished.done {
                    if let Some(offset) = progress.entry(finished.partition.clone()).or_default().finish(finished.offset) {
                        commit(&consumer, &finished.partition, offset, group);
                    }
                }
                // The next record of the same key, if one waits.
                let next = waiting.get_mut(&finished.key).and_then(VecDeque::pop_front);
                match next {
                    Some(message) => {
                        waiting_count -= 1;
                        spawn(&mut tasks, group, pool, handler.clone(), message, stop.clone());
                    }
                    None => {
                        waiting.remove(&finished.key);
                        busy.remove(&finished.key);
                    }
                }
            }
            next = stream.next(), if room => {
                let message = match next {
                    Some(Ok(m)) => m.detach(),
                    // As in the sequential mode: never keep a consumer across a stream error.
                    Some(Err(err)) => break Err(err),
                    None => break Ok(()),
                };
                let partition = (message.topic().to_owned(), message.partition());
                progress.entry(partition).or_default().start(message.offset());
                let key = message.key().unwrap_or_default().to_vec();
                if busy.contains(&key) {
                    waiting.entry(key).or_default().push_back(message);
                    waiting_count += 1;
                } else {
                    busy.insert(key);
                    spawn(&mut tasks, group, pool, handler.clone(), message, stop.clone());
                }
            }
        }
    };
    // Hand back: tell the handlers, wait for them (they return soon), commit what finished.
    stop.cancel();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(finished) = joined {
            if finished.done {
                if let Some(offset) = progress
                    .entry(finished.partition.clone())
                    .or_default()
                    .finish(finished.offset)
                {
                    commit(&consumer, &finished.partition, offset, group);
                }
            }
        }
    }
    result
}

fn commit(consumer: &StreamConsumer, partition: &PartitionId, offset: i64, group: &str) {
    let mut list = TopicPartitionList::new();
    if list
        .add_partition_offset(&partition.0, partition.1, Offset::Offset(offset))
        .is_err()
    {
        return;
    }
    if let Err(err) = consumer.commit(&list, CommitMode::Async) {
        // After a rebalance the partition may be another member's: it redelivers (harmless).
        tracing::debug!(%err, consumer = group, "offset commit refused; records may be redelivered");
    }
}

fn spawn(
    tasks: &mut JoinSet<Finished>,
    group: &str,
    pool: &PgPool,
    handler: Arc<dyn WorkHandler>,
    message: OwnedMessage,
    stop: CancellationToken,
) {
    let group = group.to_owned();
    let pool = pool.clone();
    tasks.spawn(async move {
        let partition = (message.topic().to_owned(), message.partition());
        let offset = message.offset();
        let key = message.key().unwrap_or_default().to_vec();
        let done = work(&group, &pool, handler.as_ref(), &message, &stop).await;
        Finished {
            partition,
            offset,
            key,
            done,
        }
    });
}

/// Runs one record to the end (handled, or dead-lettered); false if abandoned at shutdown.
async fn work(
    group: &str,
    pool: &PgPool,
    handler: &dyn WorkHandler,
    message: &OwnedMessage,
    stop: &CancellationToken,
) -> bool {
    let envelope = match Envelope::decode(message.payload().unwrap_or_default()) {
        Ok(env) => env,
        Err(err) => {
            return super::store_dead_letter(
                group,
                pool,
                message,
                &format!("undecodable envelope: {err}"),
                stop,
            )
            .await
            .is_some();
        }
    };
    let span = tracing::info_span!("work", consumer = group, event.id = %envelope.id, event.type = %envelope.r#type);
    crate::telemetry::set_parent_from(
        &span,
        &crate::telemetry::MapExtractor(&envelope.trace_context),
    );
    let mut attempt = 0u32;
    let mut backoff = Duration::from_millis(200);
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
        match result {
            Ok(()) => {
                metrics::counter!(crate::metrics::EVENTS_CONSUMED, "consumer" => group.to_owned(), "outcome" => "applied").increment(1);
                return true;
            }
            Err(err) => {
                attempt += 1;
                tracing::warn!(error = %format!("{err:#}"), consumer = group, attempt, "work failed");
                if attempt >= super::MAX_ATTEMPTS {
                    return super::store_dead_letter(
                        group,
                        pool,
                        message,
                        &format!("{err:#}"),
                        stop,
                    )
                    .await
                    .is_some();
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return false,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
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
}
