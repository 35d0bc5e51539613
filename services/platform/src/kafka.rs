//! Kafka clients as Mailroom configures them (plain Kafka protocol: Apache Kafka, Redpanda,
//! MSK or tansu), the topic names, and topic creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

/// Identity's events.
pub const IDENTITY_EVENTS: &str = "mailroom.identity.events";
/// Invitations' events.
pub const INVITATIONS_EVENTS: &str = "mailroom.invitations.events";
/// The mailbox registry's events.
pub const MAILBOXES_EVENTS: &str = "mailroom.mailboxes.events";
/// Sync's events.
pub const SYNC_EVENTS: &str = "mailroom.sync.events";
/// Access control's events.
pub const ACCESS_EVENTS: &str = "mailroom.access.events";
/// Token revocations (identity's `SessionsRevoked`), keyed by subject and compacted, read
/// from the beginning by every process that verifies tokens.
pub const REVOCATIONS: &str = "mailroom.identity.revocations";
/// Work for sync workers, keyed by mailbox id.
pub const SYNC_REQUESTS: &str = "mailroom.sync.requests";

/// Where and how to reach the brokers.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub idempotence: bool,
    pub partitions: i32,
    pub replication: i32,
}

impl KafkaSettings {
    pub fn from_config(config: &crate::config::PlatformConfig) -> Self {
        Self {
            brokers: config.kafka_brokers.clone(),
            idempotence: config.kafka_idempotence,
            partitions: config.kafka_partitions,
            replication: config.kafka_replication,
        }
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("socket.keepalive.enable", "true")
            .set("log_level", "4");
        config
    }

    /// A producer that waits for every in-sync replica and keeps each partition in order.
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        let mut config = self.base();
        config
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "15000")
            .set("enable.idempotence", self.idempotence.to_string());
        if !self.idempotence {
            config.set("max.in.flight.requests.per.connection", "1");
        }
        config.create()
    }

    /// A consumer in `group` that commits only what it has handled.
    pub fn consumer(&self, group: &str) -> Result<StreamConsumer, KafkaError> {
        self.base()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "10")
            // A subscribed topic that a broker lost (or that is not created yet) is looked
            // for again within seconds, not librdkafka's default five minutes.
            .set("topic.metadata.refresh.interval.ms", "5000")
            .create()
    }

    /// A consumer in `group` for slow work (the concurrent mode): it may go `max_work`
    /// between polls without leaving the group.
    pub fn work_consumer(
        &self,
        group: &str,
        max_work: Duration,
    ) -> Result<StreamConsumer, KafkaError> {
        let interval = max_work.as_millis().clamp(60_000, 3_600_000);
        self.base()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "10")
            .set("max.poll.interval.ms", interval.to_string())
            .set("topic.metadata.refresh.interval.ms", "5000")
            .create()
    }

    /// A consumer outside any group, for a process that reads a whole topic itself
    /// (assigned partitions, no commits).
    pub fn reader(&self) -> Result<StreamConsumer, KafkaError> {
        self.base()
            .set(
                "group.id",
                format!("mailroom-reader-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // An offset out of range (records compacted away) restarts at the beginning,
            // never silently at the end.
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .create()
    }

    /// Creates `topics` where missing (an existing topic is left as it is).
    pub async fn ensure_topics(&self, topics: &[&str]) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.base().create()?;
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| {
                let topic = NewTopic::new(
                    t,
                    self.partitions,
                    TopicReplication::Fixed(self.replication),
                );
                if *t == REVOCATIONS {
                    // Only the newest not-before of a subject matters.
                    topic.set("cleanup.policy", "compact")
                } else {
                    topic
                }
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&new, &options).await? {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::warn!(%topic, ?code, "topic could not be created");
                    })
                }
            }
        }
        Ok(())
    }
}
