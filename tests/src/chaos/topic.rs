//! Reading what the services published: a whole topic from its start (as a new consumer
//! group), and the sync feed's messages counted per message.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mailroom_proto::events::v1::envelope::Payload;
use mailroom_proto::events::v1::Envelope;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message as _;

/// A consumer of `topic` from its start, in a group of its own.
pub fn consumer(brokers: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("chaos-reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("fetch.wait.max.ms", "10")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("a test consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Every envelope on `topic` from its start, read until `enough` says the list is complete
/// or nothing new arrived for `quiet` (after at least one record), or `timeout` passes.
pub async fn read_all(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    quiet: Duration,
    enough: impl Fn(&[Envelope]) -> bool,
) -> Vec<Envelope> {
    let consumer = consumer(brokers, topic);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut last = Instant::now();
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(250), consumer.recv()).await {
            Ok(Ok(message)) => {
                if let Some(envelope) = message.payload().and_then(|p| Envelope::decode(p).ok()) {
                    out.push(envelope);
                    last = Instant::now();
                }
            }
            _ => {
                if enough(&out) || (!out.is_empty() && last.elapsed() >= quiet) {
                    break;
                }
            }
        }
    }
    out
}

/// How often each (folder, UID) of `mailbox` appears in the NewMessages of `events`.
pub fn fed_messages(events: &[Envelope], mailbox: &str) -> BTreeMap<(String, u32), usize> {
    let mut fed = BTreeMap::new();
    for event in events {
        if let Some(Payload::NewMessages(feed)) = &event.payload {
            if feed.mailbox_id == mailbox {
                for m in &feed.messages {
                    *fed.entry((feed.folder.clone(), m.uid)).or_insert(0) += 1;
                }
            }
        }
    }
    fed
}

/// The MailboxSynced events of `mailbox` in `events`.
pub fn synced_count(events: &[Envelope], mailbox: &str) -> usize {
    events
        .iter()
        .filter(
            |e| matches!(&e.payload, Some(Payload::MailboxSynced(s)) if s.mailbox_id == mailbox),
        )
        .count()
}

/// How many events of each type `events` holds about `aggregate` (a mailbox, a person).
pub fn kinds_of(events: &[Envelope], aggregate: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events.iter().filter(|e| e.aggregate_id == aggregate) {
        let kind = e.r#type.rsplit('.').next().unwrap_or_default().to_owned();
        *out.entry(kind).or_insert(0) += 1;
    }
    out
}
