//! Reading back from the end of partitions: how a newly elected outbox relay learns which of
//! its unpublished rows the leader before it had already published.
//!
//! Every record the relay publishes carries a header ([`OUTBOX_HEADER`]) naming the relay
//! (its election domain, [`crate::outbox`]) and the outbox row. A leader records a round as
//! published only after the broker has it, so one that stopped in between (killed, paused
//! past its lease, its connection lost) leaves rows that are in Kafka and unpublished in
//! PostgreSQL. Its successor first fences it off (a transactional producer with the same id),
//! then reads each partition back from its end until a record of the same relay whose row is
//! *not* among the unpublished ones — a round recorded as published, and every round before it
//! was too — and records the rows it found as published instead of sending them again.

use std::collections::HashSet;
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

/// The header's value for row `seq` of `relay`.
pub fn outbox_header(relay: &str, seq: i64) -> String {
    format!("{relay}:{seq}")
}

/// The row of `relay` that a header's value names, if it is one of `relay`'s.
fn row_of(value: &[u8], relay: &str) -> Option<i64> {
    let value = std::str::from_utf8(value).ok()?;
    let seq = value.strip_prefix(relay)?.strip_prefix(':')?;
    seq.parse().ok()
}

/// Which of `unpublished` (rows of `relay`) the records at the end of `topics` carry; see the
/// module's header. Blocking: call it from a blocking thread.
pub fn published_by(
    consumer: &BaseConsumer<ReaderContext>,
    topics: &[String],
    relay: &str,
    unpublished: &HashSet<i64>,
    timeout: Duration,
) -> Result<HashSet<i64>, TailError> {
    let mut found = HashSet::new();
    if unpublished.is_empty() {
        return Ok(found);
    }
    for topic in topics {
        let kafka = |source| TailError::Kafka {
            topic: topic.clone(),
            source,
        };
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(kafka)?;
        let Some(described) = metadata.topics().first() else {
            continue;
        };
        // A topic not created yet holds nothing of anyone's.
        if described.error().is_some() {
            continue;
        }
        for partition in described.partitions() {
            read_back(
                consumer,
                topic,
                partition.id(),
                relay,
                unpublished,
                timeout,
                &mut found,
            )?;
        }
    }
    Ok(found)
}

/// One partition of [`published_by`].
fn read_back(
    consumer: &BaseConsumer<ReaderContext>,
    topic: &str,
    partition: i32,
    relay: &str,
    unpublished: &HashSet<i64>,
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
        let rows = read_range(consumer, topic, partition, start, end, relay, timeout)?;
        for seq in rows.iter().rev() {
            if unpublished.contains(seq) {
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

/// The rows of `relay` that the records at offsets `[start, end)` of one partition carry, in
/// order.
fn read_range(
    consumer: &BaseConsumer<ReaderContext>,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
    relay: &str,
    timeout: Duration,
) -> Result<Vec<i64>, TailError> {
    let kafka = |source| TailError::Kafka {
        topic: topic.to_owned(),
        source,
    };
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(start))
        .map_err(kafka)?;
    consumer.assign(&assignment).map_err(kafka)?;
    let deadline = Instant::now() + timeout;
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
                let seq = message.headers().and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key == OUTBOX_HEADER)
                        .and_then(|h| h.value)
                        .and_then(|value| row_of(value, relay))
                });
                if let Some(seq) = seq {
                    rows.push(seq);
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
    fn a_header_names_its_relay_and_row_and_no_other_relays() {
        let value = outbox_header("mailroom.sync.0a1b2c3d", 42);
        assert_eq!(row_of(value.as_bytes(), "mailroom.sync.0a1b2c3d"), Some(42));
        // Another relay's, one whose name begins like it, and nonsense.
        assert_eq!(row_of(value.as_bytes(), "mailroom.sync.0a1b"), None);
        assert_eq!(row_of(value.as_bytes(), "mailroom.identity.0a1b2c3d"), None);
        assert_eq!(
            row_of(b"mailroom.sync.0a1b2c3d:x", "mailroom.sync.0a1b2c3d"),
            None
        );
        assert_eq!(row_of(&[0xff, 0xfe], "mailroom.sync.0a1b2c3d"), None);
    }
}
