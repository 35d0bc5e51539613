//! Reading back from the end of partitions: how a newly elected outbox relay learns which of
//! its unpublished rows the leader before it had already published.
//!
//! Every record the relay publishes carries a header ([`OUTBOX_HEADER`]) naming the relay
//! (its election domain, [`crate::outbox`]), the outbox row and its event id; a record counts
//! only when both match an unpublished row (a database restored to an earlier point reuses
//! row numbers, and nobody who can write to a topic can guess an event id). A leader records a round as
//! published only after the broker has it, so one that stopped in between (killed, paused
//! past its lease, its connection lost) leaves rows that are in Kafka and unpublished in
//! PostgreSQL. Its successor first fences it off (a transactional producer with the same id),
//! then reads each partition back from its end until a record of the same relay whose row is
//! *not* among the unpublished ones — a round recorded as published, and every round before it
//! was too — and records the rows it found as published instead of sending them again.
//!
//! It is best effort: a partition that cannot be read (no READ permission on the topic, a
//! broker that does not answer within the deadline) is left out with a warning, and the rows
//! whose records sit there are sent again (at least once, as without it).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::ReaderContext;

/// The header that names the relay and the outbox row a record was published from.
pub const OUTBOX_HEADER: &str = "mailroom-outbox";

/// The first window read back from a partition's end, in records; each next one is four
/// times larger, up to [`MAX_BACK`].
const FIRST_WINDOW: i64 = 256;
/// The farthest back a partition is read: other writers of the topic (another schema's relay)
/// may have written this much since the predecessor stopped before its rows are given up
/// on (and sent again).
const MAX_BACK: i64 = 16_384;

/// Why the end of a partition could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("reading back from the end of {topic}: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("reading back from the end of {topic} [{partition}] took longer than {timeout:?}")]
    TimedOut {
        topic: String,
        partition: i32,
        timeout: Duration,
    },
}

/// The header's value for row `seq` (event `event_id`) of `relay`.
pub fn outbox_header(relay: &str, seq: i64, event_id: &str) -> String {
    format!("{relay}:{seq}:{event_id}")
}

/// The row of `relay` (its number and event id) that a header's value names, if it is one of
/// `relay`'s.
fn row_of<'v>(value: &'v [u8], relay: &str) -> Option<(i64, &'v str)> {
    let value = std::str::from_utf8(value).ok()?;
    let (seq, event_id) = value
        .strip_prefix(relay)?
        .strip_prefix(':')?
        .split_once(':')?;
    Some((seq.parse().ok()?, event_id))
}

/// Which of `unpublished` (rows of `relay`: number → event id) the records at the end of
/// `topics` carry; see the module's header. A partition that could not be read is left out,
/// its error logged. Blocking: call it from a blocking thread; each partition (and each
/// topic's description) takes `timeout` at most.
pub fn published_by(
    consumer: &BaseConsumer<ReaderContext>,
    topics: &[String],
    relay: &str,
    unpublished: &HashMap<i64, String>,
    timeout: Duration,
) -> HashSet<i64> {
    let mut found = HashSet::new();
    if unpublished.is_empty() {
        return found;
    }
    for topic in topics {
        let metadata = match consumer.fetch_metadata(Some(topic), timeout) {
            Ok(metadata) => metadata,
            Err(source) => {
                skipped(&TailError::Kafka {
                    topic: topic.clone(),
                    source,
                });
                continue;
            }
        };
        let Some(described) = metadata.topics().first() else {
            continue;
        };
        // A topic not created yet holds nothing of anyone's.
        if described.error().is_some() {
            continue;
        }
        for partition in described.partitions() {
            let read = read_back(
                consumer,
                topic,
                partition.id(),
                relay,
                unpublished,
                Instant::now() + timeout,
                timeout,
                &mut found,
            );
            if let Err(err) = read {
                skipped(&err);
            }
        }
    }
    found
}

fn skipped(err: &TailError) {
    tracing::warn!(%err, "outbox relay could not read back a partition (does it have READ on its own topics?); rows the previous leader published there without recording it are sent again");
}

/// One partition of [`published_by`].
#[allow(clippy::too_many_arguments)]
fn read_back(
    consumer: &BaseConsumer<ReaderContext>,
    topic: &str,
    partition: i32,
    relay: &str,
    unpublished: &HashMap<i64, String>,
    deadline: Instant,
    timeout: Duration,
    found: &mut HashSet<i64>,
) -> Result<(), TailError> {
    let kafka = |source| TailError::Kafka {
        topic: topic.to_owned(),
        source,
    };
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, timeout)
        .map_err(kafka)?;
    let mut window = FIRST_WINDOW;
    let mut end = high;
    while end > low {
        let start = (high - window).max(low);
        // The rows of `relay` in [start, end), in partition order.
        let rows = read_range(
            consumer, topic, partition, start, end, relay, deadline, timeout,
        )?;
        for (seq, event_id) in rows.iter().rev() {
            if unpublished.get(seq) == Some(event_id) {
                found.insert(*seq);
            } else {
                // A round recorded as published: the rounds before it were too.
                return Ok(());
            }
        }
        if start == low {
            return Ok(());
        }
        if high - start >= MAX_BACK {
            tracing::warn!(
                topic,
                partition,
                records = high - start,
                "the end of the partition read back this far without reaching a round recorded as published; rows of the previous leader farther back, if any, are sent again"
            );
            return Ok(());
        }
        end = start;
        window = (window * 4).min(MAX_BACK);
    }
    Ok(())
}

/// The rows of `relay` (number, event id) that the records at offsets `[start, end)` of one
/// partition carry, in order; by `deadline`.
#[allow(clippy::too_many_arguments)]
fn read_range(
    consumer: &BaseConsumer<ReaderContext>,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
    relay: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<(i64, String)>, TailError> {
    let kafka = |source| TailError::Kafka {
        topic: topic.to_owned(),
        source,
    };
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(start))
        .map_err(kafka)?;
    consumer.assign(&assignment).map_err(kafka)?;
    let mut rows = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TailError::TimedOut {
                topic: topic.to_owned(),
                partition,
                timeout,
            });
        }
        match consumer.poll(left) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(err)) => return Err(kafka(err)),
            Some(Ok(message)) => {
                if message.offset() >= end {
                    break;
                }
                let row = message.headers().and_then(|headers| {
                    headers
                        .iter()
                        .filter(|h| h.key == OUTBOX_HEADER)
                        .find_map(|h| h.value.and_then(|value| row_of(value, relay)))
                        .map(|(seq, event_id)| (seq, event_id.to_owned()))
                });
                if let Some(row) = row {
                    rows.push(row);
                }
                if message.offset() + 1 >= end {
                    break;
                }
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_names_its_relay_row_and_event_and_no_other_relays() {
        let relay = "mailroom.outbox.sync.0a1b2c3d";
        let value = outbox_header(relay, 42, "01a2-e");
        assert_eq!(row_of(value.as_bytes(), relay), Some((42, "01a2-e")));
        // Another relay's, one whose name begins like it, and nonsense.
        assert_eq!(row_of(value.as_bytes(), "mailroom.outbox.sync.0a1b"), None);
        assert_eq!(
            row_of(value.as_bytes(), "mailroom.outbox.identity.0a1b2c3d"),
            None
        );
        assert_eq!(row_of(b"mailroom.outbox.sync.0a1b2c3d:x:e", relay), None);
        assert_eq!(row_of(b"mailroom.outbox.sync.0a1b2c3d:42", relay), None);
        assert_eq!(row_of(&[0xff, 0xfe], relay), None);
    }
}
