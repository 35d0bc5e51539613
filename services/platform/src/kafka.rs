//! Kafka clients as Mailroom configures them (plain Kafka protocol: Apache Kafka, Redpanda,
//! MSK or tansu), the topics and their names, and topic creation.
//!
//! A topic is named `<prefix>.<what it carries>`: [`Topic`] says what it carries, [`Topics`]
//! holds the prefix from configuration (`kafka_topic_prefix`, `mailroom` unless set, which
//! gives the names production, the chart's autoscaler and the alerts use). A test runs under a
//! prefix of its own, so it never sees another test's events nor replays the broker's history.
//!
//! A group consumer ([`KafkaSettings::consumer`], [`KafkaSettings::work_consumer`]) carries a
//! [`GroupContext`] that tracks which partitions it owns through rebalances (cooperative-sticky
//! assignment: a member joining or leaving moves only the partitions it must), so the
//! consumer drops what it holds of a revoked partition and never commits for one it has lost.
//!
//! Every client is built from [`KafkaSettings`], which applies the librdkafka properties from
//! configuration ([`KafkaProperties`]: TLS, SASL, tuning) after Mailroom's defaults, so one
//! setting reaches the producer, the group consumers, the readers and the admin client alike.
//!
//! **Fetching at rest.** A consumer's fetch waits at the broker up to `fetch.wait.max.ms` for a
//! record (`fetch.min.bytes` = 1). A broker that answers a waiting fetch as soon as a record
//! arrives (Apache Kafka, Redpanda, MSK: long polling) lets it wait long, [`FETCH_WAIT`]: an
//! idle consumer sends two fetches a second instead of a hundred, and latency is unchanged.
//! tansu (0.6, the local stack's broker) cannot: it looks at its storage when a fetch comes
//! and again when its wait is over (for waits of 250 ms and more, also at half of what is
//! left), so there the wait bounds the latency (a record waits up to one wait) and consumers
//! wait [`POLLING_BROKER_FETCH_WAIT`]. Which broker it is, is
//! learnt from its cluster id when topics are ensured ([`KafkaSettings::ensure_topics`], which
//! every consumer and relay does first); until then, the short wait. A `fetch.wait.max.ms` in
//! configuration (`MAILROOM_KAFKA_PROPERTY_FETCH_WAIT_MAX_MS`) wins over both.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

pub use crate::config::{valid_topic_prefix, DEFAULT_TOPIC_PREFIX};

mod producer;
mod properties;
pub mod tail;

pub use producer::{Delivery, DeliveryOutcome, RelayProducer};
pub use properties::{
    env_name, is_secret, properties_from_env, properties_from_process_env, InsecureTls,
    InsecureTlsProperty, KafkaProperties, KafkaPropertyError, ALLOW_INSECURE_TLS_ENV, INSECURE_TLS,
    PROPERTY_ENV_PREFIX, RESERVED,
};

/// How long the topics Mailroom creates keep their records (all but the compacted
/// revocations): a redelivery, or a new consumer group reading from the start, sees nothing
/// older, so `processed_events` need be kept only somewhat longer (see
/// [`crate::config::PlatformConfig::processed_events_retention_days`]).
pub const EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long the broker lets a relay's transaction stay open before aborting it (a leader
/// that died mid-round): a minute, well over a round and the 15 s a record may wait.
const TRANSACTION_TIMEOUT_MS: &str = "60000";

/// How consumers in a group share partitions: incrementally, so a member joining or leaving
/// moves only the partitions it must, and the others go on with theirs.
pub const ASSIGNMENT_STRATEGY: &str = "cooperative-sticky";

/// A topic and one of its partitions.
pub type PartitionId = (String, i32);

/// How long a consumer's fetch waits at a broker that answers it as soon as a record arrives
/// (long polling: Apache Kafka, Redpanda, MSK): the wait costs no latency there, only the
/// empty fetches an idle consumer sends (two a second per broker).
pub const FETCH_WAIT: Duration = Duration::from_millis(500);

/// How long a consumer's fetch waits at a broker that cannot wake a waiting fetch (tansu, or
/// a broker not known yet): a record arriving during the wait is given at its end, so the
/// wait bounds what it adds to the latency; this keeps outbox → consumer p99 under 100 ms
/// while an idle consumer sends about 17 fetches a second instead of 100
/// (`.ci/bench at-rest` measures both).
pub const POLLING_BROKER_FETCH_WAIT: Duration = Duration::from_millis(60);

/// Cluster ids of brokers known to answer a fetch only at the end of its wait: tansu's
/// default (`--cluster-id`).
pub const POLLING_BROKER_CLUSTER_IDS: &[&str] = &["tansu_cluster"];

/// Whether the brokers of each bootstrap list answer a waiting fetch at once (`true`), as
/// learnt from their cluster id ([`KafkaSettings::ensure_topics`]).
static LONG_POLLING: Mutex<Option<HashMap<String, bool>>> = Mutex::new(None);

fn long_polling(brokers: &str) -> Option<bool> {
    LONG_POLLING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .as_ref()
        .and_then(|known| known.get(brokers).copied())
}

/// Whether a broker whose cluster id is `cluster_id` answers a waiting fetch as soon as a
/// record arrives.
pub fn long_polls(cluster_id: &str) -> bool {
    !POLLING_BROKER_CLUSTER_IDS.contains(&cluster_id)
}

/// A consumer in a group, with the [`GroupContext`] that tracks what it owns.
pub type GroupConsumer = StreamConsumer<GroupContext>;

/// Tracks, through rebalances, which partitions a group consumer owns, and which it lost since
/// it last asked. The callbacks run inside the consumer's poll, so by the time a poll returns a
/// record, every revocation before it is recorded here.
#[derive(Debug, Default)]
pub struct GroupContext {
    state: Mutex<GroupState>,
    /// Wakes the consumer's loop when partitions are revoked.
    revoked: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct GroupState {
    owned: HashSet<PartitionId>,
    revoked: Vec<PartitionId>,
}

impl GroupContext {
    fn state(&self) -> MutexGuard<'_, GroupState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `partition` is assigned to this consumer now.
    pub fn owns(&self, partition: &PartitionId) -> bool {
        self.state().owned.contains(partition)
    }

    /// The partitions assigned to this consumer now.
    pub fn owned(&self) -> Vec<PartitionId> {
        self.state().owned.iter().cloned().collect()
    }

    /// The partitions revoked since the last call, oldest first.
    pub fn take_revoked(&self) -> Vec<PartitionId> {
        std::mem::take(&mut self.state().revoked)
    }

    /// Completes when partitions were revoked since it last completed (the revocation
    /// happens inside a poll that returns no record: a consumer's loop waits on this too).
    pub async fn revocation(&self) {
        self.revoked.notified().await
    }
}

/// The end of `partition` of `topic` (its high watermark) as the consumer last heard it from a
/// fetch, without asking the broker; `None` before the first fetch of that partition. Cheap
/// enough to read every second: an idle consumer's long-polling fetches keep it current.
pub fn cached_end_offset(consumer: &GroupConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer lives as long as `consumer`, which this call borrows; the
    // topic is a NUL-terminated string that outlives the call; librdkafka only writes the two
    // integers, which live on this stack frame. The call reads librdkafka's cached offsets
    // under its own lock and never blocks on the network. It looks the partition up with
    // create-on-miss (a partition it does not know becomes a "desired" one), so call it only
    // for partitions the consumer owns.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

fn partitions(list: &rdkafka::TopicPartitionList) -> impl Iterator<Item = PartitionId> + '_ {
    list.elements()
        .into_iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
}

impl ClientContext for GroupContext {}

/// The context of a [`KafkaSettings::reader`]: librdkafka's errors are logged, except the end
/// of a partition, which a reader asks for (`enable.partition.eof`) and receives in its
/// stream: it is news, not an error.
pub struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        tracing::error!(%error, reason, "librdkafka");
    }
}

impl ConsumerContext for ReaderContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let mut state = self.state();
                for partition in partitions(list) {
                    tracing::debug!(topic = %partition.0, partition = partition.1, "partition revoked");
                    state.owned.remove(&partition);
                    state.revoked.push(partition);
                }
                self.revoked.notify_one();
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(err) => {
                // librdkafka unassigns after a failed rebalance: count every partition as
                // lost (a conservative full revoke), so the consumer drops what it holds of
                // them and commits for none until they are assigned again.
                tracing::warn!(%err, "consumer group rebalance failed; every partition is treated as revoked");
                let mut state = self.state();
                let lost: Vec<PartitionId> = state.owned.drain().collect();
                state.revoked.extend(lost);
                self.revoked.notify_one();
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let mut state = self.state();
            for partition in partitions(list) {
                tracing::debug!(topic = %partition.0, partition = partition.1, "partition assigned");
                state.owned.insert(partition);
            }
        }
    }
}

/// One of Mailroom's topics, by what it carries. Its name comes from [`Topics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Identity's events.
    IdentityEvents,
    /// Token revocations (identity's `SessionsRevoked`), keyed by subject and compacted, read
    /// from the beginning by every process that verifies tokens.
    Revocations,
    /// Invitations' events.
    InvitationsEvents,
    /// The mailbox registry's events.
    MailboxesEvents,
    /// Sync's events.
    SyncEvents,
    /// Work for sync workers, keyed by mailbox id.
    SyncRequests,
    /// Access control's events.
    AccessEvents,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 7] = [
        Topic::IdentityEvents,
        Topic::Revocations,
        Topic::InvitationsEvents,
        Topic::MailboxesEvents,
        Topic::SyncEvents,
        Topic::SyncRequests,
        Topic::AccessEvents,
    ];

    /// The name after the prefix.
    pub fn suffix(self) -> &'static str {
        match self {
            Topic::IdentityEvents => "identity.events",
            Topic::Revocations => "identity.revocations",
            Topic::InvitationsEvents => "invitations.events",
            Topic::MailboxesEvents => "mailboxes.events",
            Topic::SyncEvents => "sync.events",
            Topic::SyncRequests => "sync.requests",
            Topic::AccessEvents => "access.events",
        }
    }

    /// The name under the default prefix (`mailroom.identity.events`): how an outbox row
    /// records its topic, whatever prefix the relay publishes under.
    pub fn default_name(self) -> String {
        format!("{DEFAULT_TOPIC_PREFIX}.{}", self.suffix())
    }

    /// Whether only the newest record of each key matters (the broker compacts the topic).
    pub fn is_compacted(self) -> bool {
        self == Topic::Revocations
    }
}

/// The names of Mailroom's topics under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self::new(DEFAULT_TOPIC_PREFIX)
    }
}

impl Topics {
    /// Topics named `<prefix>.<suffix>`. The prefix is checked by the configuration
    /// ([`crate::config::PlatformConfig::validate`]).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The name of `topic` (`mailroom.identity.events`).
    pub fn name(&self, topic: Topic) -> String {
        format!("{}.{}", self.prefix, topic.suffix())
    }

    /// The names of `topics`, in order.
    pub fn names(&self, topics: &[Topic]) -> Vec<String> {
        topics.iter().map(|t| self.name(*t)).collect()
    }

    /// Where a record an outbox row names `stored` is published: a topic's default name
    /// ([`Topic::default_name`]) is published under this prefix; any other name as it is.
    pub fn published_name(&self, stored: &str) -> String {
        let suffix = stored
            .strip_prefix(DEFAULT_TOPIC_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'));
        match Topic::ALL.into_iter().find(|t| Some(t.suffix()) == suffix) {
            Some(topic) => self.name(topic),
            None => stored.to_owned(),
        }
    }
}

/// Where and how to reach the brokers, and what the topics are called.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub idempotence: bool,
    /// Whether the outbox relay publishes in transactions (with idempotence only).
    pub transactions: bool,
    pub partitions: i32,
    pub replication: i32,
    pub topics: Topics,
    /// librdkafka properties from configuration, set on every client after Mailroom's own
    /// defaults (never over the properties it sets for correct delivery, [`RESERVED`]).
    pub properties: KafkaProperties,
}

impl KafkaSettings {
    /// The settings `config` gives; the first call in a process warns about any property that
    /// turns off a check of who the broker is (let through by
    /// `MAILROOM_KAFKA_ALLOW_INSECURE_TLS=true`, else the configuration was refused).
    pub fn from_config(config: &crate::config::PlatformConfig) -> Self {
        config.kafka_properties.warn_insecure_tls();
        if config.kafka_transactions && !config.kafka_idempotence {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!("MAILROOM_KAFKA_TRANSACTIONS is ignored while MAILROOM_KAFKA_IDEMPOTENCE=false (transactions need idempotence): the outbox relays publish at least once across a change of leader");
            });
        }
        Self {
            brokers: config.kafka_brokers.clone(),
            idempotence: config.kafka_idempotence,
            transactions: config.kafka_transactions,
            partitions: config.kafka_partitions,
            replication: config.kafka_replication,
            topics: Topics::new(config.kafka_topic_prefix.clone()),
            properties: config.kafka_properties.clone(),
        }
    }

    /// Mailroom's defaults for every client; each builder adds its own, then [`Self::finish`].
    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("socket.keepalive.enable", "true")
            // No client metrics pushed to the broker (KIP-714): Mailroom's own are on
            // /metrics, and a client that asks for telemetry subscriptions does so every few
            // seconds at rest, each of a process's clients. `kafka_properties` turns it on for
            // a cluster that collects them.
            .set("enable.metrics.push", "false")
            .set("log_level", "4");
        config
    }

    /// Sets the properties from configuration over Mailroom's defaults in `config` (they
    /// cannot name a property delivery depends on: [`KafkaProperties::new`] refuses those).
    fn finish<'c>(&self, config: &'c mut ClientConfig) -> &'c mut ClientConfig {
        self.properties.apply(config)
    }

    /// How long consumers of these brokers let a fetch wait for records: [`FETCH_WAIT`] at
    /// brokers known to answer it as soon as one arrives, else [`POLLING_BROKER_FETCH_WAIT`]
    /// (a `fetch.wait.max.ms` in configuration is set over it, [`Self::finish`]).
    pub fn fetch_wait(&self) -> Duration {
        match long_polling(&self.brokers) {
            Some(true) => FETCH_WAIT,
            Some(false) | None => POLLING_BROKER_FETCH_WAIT,
        }
    }

    /// A consumer's fetching: answered as soon as one byte is there, waiting
    /// [`Self::fetch_wait`] at most.
    fn fetching<'c>(&self, config: &'c mut ClientConfig) -> &'c mut ClientConfig {
        config.set("fetch.min.bytes", "1").set(
            "fetch.wait.max.ms",
            self.fetch_wait().as_millis().to_string(),
        )
    }

    /// Learns, once per process and bootstrap list, whether the brokers answer a waiting fetch
    /// at once (from their cluster id), so that consumers made afterwards wait as long as
    /// fits them. Not learnt (the brokers did not answer within `timeout`): asked again next
    /// time.
    async fn learn_fetching(&self, timeout: Duration) {
        if long_polling(&self.brokers).is_some() {
            return;
        }
        let mut config = self.base();
        self.finish(&mut config);
        let asked = tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = config.create().ok()?;
            client.client().fetch_cluster_id(timeout)
        })
        .await;
        let Ok(Some(cluster_id)) = asked else {
            return;
        };
        let long = long_polls(&cluster_id);
        let wait = if long {
            FETCH_WAIT
        } else {
            POLLING_BROKER_FETCH_WAIT
        };
        tracing::info!(
            brokers = %self.brokers,
            %cluster_id,
            fetch_wait_ms = wait.as_millis() as u64,
            "{}",
            if long {
                "the brokers answer a waiting fetch as soon as records arrive: consumers wait long"
            } else {
                "the brokers answer a fetch only at the end of its wait (tansu): consumers wait briefly, which keeps latency low at the cost of more fetches at rest"
            }
        );
        LONG_POLLING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(self.brokers.clone(), long);
    }

    /// A producer that waits for every in-sync replica and keeps each partition in order: the
    /// outbox relay's (see [`RelayProducer`]). With `transactional_id` (and transactions and
    /// idempotence, which transactions need, configured) it publishes in transactions under that id, so the next producer
    /// with the id fences this one off: the id names one relay's election domain.
    pub fn relay_producer(
        &self,
        transactional_id: Option<&str>,
    ) -> Result<RelayProducer, KafkaError> {
        let mut config = self.producer_config();
        let transactional = match transactional_id {
            Some(id) if self.idempotence && self.transactions => {
                config
                    .set("transactional.id", id)
                    .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS);
                true
            }
            _ => false,
        };
        RelayProducer::new(&config, transactional)
    }

    /// A consumer outside any group that reads the newest records of partitions it is given
    /// (the relay's recovery, [`tail::published_by`]).
    pub fn tail_reader(&self) -> Result<BaseConsumer<ReaderContext>, KafkaError> {
        let mut config = self.reader_config();
        // The newest records only, read once: no prefetching of whole partitions.
        config.set("queued.max.messages.kbytes", "4096");
        config.create_with_context(ReaderContext)
    }

    /// rdkafka's `FutureProducer` with the relay's settings, for tools and tests that publish
    /// a few records (its polling thread costs about 1 % of a core while it lives).
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.producer_config().create()
    }

    fn producer_config(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "15000")
            .set("enable.idempotence", self.idempotence.to_string());
        if !self.idempotence {
            config.set("max.in.flight.requests.per.connection", "1");
        }
        self.finish(&mut config);
        config
    }

    /// A consumer in `group` that commits only what it has handled.
    pub fn consumer(&self, group: &str) -> Result<GroupConsumer, KafkaError> {
        let mut config = self.base();
        config
            .set("group.id", group)
            .set("partition.assignment.strategy", ASSIGNMENT_STRATEGY)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            // A subscribed topic that a broker lost (or that is not created yet) is looked
            // for again within seconds, not librdkafka's default five minutes.
            .set("topic.metadata.refresh.interval.ms", "5000");
        self.fetching(&mut config);
        self.finish(&mut config)
            .create_with_context(GroupContext::default())
    }

    /// A consumer in `group` for slow work (the concurrent mode): it may go `max_work`
    /// between polls without leaving the group.
    pub fn work_consumer(
        &self,
        group: &str,
        max_work: Duration,
    ) -> Result<GroupConsumer, KafkaError> {
        let interval = max_work.as_millis().clamp(60_000, 3_600_000);
        let mut config = self.base();
        config
            .set("group.id", group)
            .set("partition.assignment.strategy", ASSIGNMENT_STRATEGY)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", interval.to_string())
            .set("topic.metadata.refresh.interval.ms", "5000");
        self.fetching(&mut config);
        self.finish(&mut config)
            .create_with_context(GroupContext::default())
    }

    /// A consumer outside any group, for a process that reads a whole topic itself
    /// (assigned partitions, no commits).
    pub fn reader(&self) -> Result<StreamConsumer<ReaderContext>, KafkaError> {
        self.reader_config().create_with_context(ReaderContext)
    }

    fn reader_config(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set(
                "group.id",
                format!("mailroom-reader-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // An offset out of range (records compacted away) restarts at the beginning,
            // never silently at the end.
            .set("auto.offset.reset", "earliest")
            // Told when a partition's end is reached: how a reader knows it has read it all
            // where the last offsets hold no record (a compacted topic).
            .set("enable.partition.eof", "true");
        self.fetching(&mut config);
        self.finish(&mut config);
        config
    }

    /// How long each of `topics` keeps its records, as the brokers say (`retention.ms`,
    /// whatever created the topic); `None` for one that keeps them for ever (`-1`, or
    /// compaction without deletion).
    pub async fn retention_of(
        &self,
        topics: &[Topic],
    ) -> Result<Vec<(String, Option<Duration>)>, KafkaError> {
        let admin = self.admin()?;
        let names = self.topics.names(topics);
        let specifiers: Vec<ResourceSpecifier<'_>> = names
            .iter()
            .map(|name| ResourceSpecifier::Topic(name))
            .collect();
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let mut retention = Vec::new();
        for (name, result) in names
            .iter()
            .zip(admin.describe_configs(&specifiers, &options).await?)
        {
            let resource = result.map_err(KafkaError::AdminOp)?;
            let value = |key: &str| resource.get(key).and_then(|e| e.value.clone());
            let compacted_only = value("cleanup.policy")
                .is_some_and(|p| p.contains("compact") && !p.contains("delete"));
            let ms = value("retention.ms").and_then(|v| v.parse::<i64>().ok());
            let kept = match ms {
                Some(ms) if ms >= 0 && !compacted_only => {
                    Some(Duration::from_millis(ms.unsigned_abs()))
                }
                _ => None,
            };
            retention.push((name.clone(), kept));
        }
        Ok(retention)
    }

    /// An admin client (topic creation, configs, partitions).
    fn admin(&self) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
        let mut config = self.base();
        self.finish(&mut config).create()
    }

    /// How many partitions topic `topic` (a full name, `mailroom.sync.requests`) has, as the
    /// brokers' metadata says; an error for a topic they do not know
    /// (`UnknownTopicOrPartition`) or when they do not answer within `timeout`.
    pub async fn partition_count(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<usize, KafkaError> {
        // A consumer-type client: asking a producer-type one for a topic's metadata may
        // create the topic on a broker that creates topics on demand.
        let mut config = self.base();
        config.set("allow.auto.create.topics", "false");
        self.finish(&mut config);
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = config.create()?;
            let metadata = client.fetch_metadata(Some(&topic), timeout)?;
            let found = metadata.topics().iter().find(|t| t.name() == topic).ok_or(
                KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
            )?;
            if let Some(err) = found.error() {
                return Err(KafkaError::MetadataFetch(err.into()));
            }
            Ok(found.partitions().len())
        })
        .await
        .unwrap_or_else(|_| Err(KafkaError::MetadataFetch(RDKafkaErrorCode::Fail)))
    }

    /// Creates `topics` where missing, and grows one that exists with fewer partitions than
    /// configured (`MAILROOM_KAFKA_PARTITIONS`) to that many. A broker that refuses to add
    /// partitions leaves the topic as it is, and a warning says why and what to do: the
    /// topic works on, with at most as many consumers of a group sharing it as it has
    /// partitions. (Partitions are never removed.)
    ///
    /// Whatever comes of it (a cluster whose operators make the topics refuses to), the
    /// brokers are asked once who they are, for the consumers' fetch wait
    /// ([`Self::fetch_wait`]).
    pub async fn ensure_topics(&self, topics: &[Topic]) -> Result<(), KafkaError> {
        let ensured = self.create_and_grow(topics).await;
        let timeout = if ensured.is_ok() {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(2)
        };
        self.learn_fetching(timeout).await;
        ensured
    }

    async fn create_and_grow(&self, topics: &[Topic]) -> Result<(), KafkaError> {
        let admin = self.admin()?;
        let names = self.topics.names(topics);
        let retention = EVENT_RETENTION.as_millis().to_string();
        let new: Vec<NewTopic> = topics
            .iter()
            .zip(&names)
            .map(|(topic, name)| {
                let new = NewTopic::new(
                    name,
                    self.partitions,
                    TopicReplication::Fixed(self.replication),
                );
                if topic.is_compacted() {
                    new.set("cleanup.policy", "compact")
                } else {
                    new.set("retention.ms", &retention)
                }
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let mut existing = Vec::new();
        for result in admin.create_topics(&new, &options).await? {
            match result {
                Ok(_) => {}
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => existing.push(topic),
                Err((topic, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::warn!(%topic, ?code, "topic could not be created");
                    })
                }
            }
        }
        for topic in existing {
            self.grow(&admin, &topic).await;
        }
        Ok(())
    }

    /// Adds partitions to `topic` up to the configured count if it has fewer; logs why not
    /// when that cannot be done (nothing here stops a service from starting).
    async fn grow(&self, admin: &AdminClient<DefaultClientContext>, topic: &str) {
        let wanted = usize::try_from(self.partitions).unwrap_or(1);
        let has = match self.partition_count(topic, Duration::from_secs(10)).await {
            Ok(has) => has,
            Err(err) => {
                tracing::warn!(%topic, %err, "could not read how many partitions the topic has; it is not grown to MAILROOM_KAFKA_PARTITIONS");
                return;
            }
        };
        if has >= wanted {
            return;
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let refusal = match admin
            .create_partitions(&[NewPartitions::new(topic, wanted)], &options)
            .await
        {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) => None,
                Some(Err((_, code))) => Some(format!("{code:?}: {code}")),
                None => Some("the broker gave no answer".to_owned()),
            },
            Err(err) => Some(err.to_string()),
        };
        // A broker may answer success and add nothing: believe the metadata.
        let refusal = match refusal {
            None => match self.partition_count(topic, Duration::from_secs(10)).await {
                Ok(now) if now >= wanted => None,
                Ok(now) => Some(format!(
                    "the broker accepted the request but the topic still has {now}"
                )),
                Err(err) => Some(format!("the partitions could not be read again: {err}")),
            },
            refused => refused,
        };
        match refusal {
            None => tracing::info!(
                %topic,
                from = has,
                to = wanted,
                "topic grown to MAILROOM_KAFKA_PARTITIONS partitions (records of a key written from now on may land on another partition than its older ones)"
            ),
            Some(reason) if !first_refusal(topic, has) => tracing::debug!(
                %topic,
                partitions = has,
                configured = wanted,
                %reason,
                "the broker still refuses to add partitions to the topic"
            ),
            Some(reason) => tracing::warn!(
                %topic,
                partitions = has,
                configured = wanted,
                %reason,
                "the topic has fewer partitions than MAILROOM_KAFKA_PARTITIONS and the broker refused to add any: at most {has} consumers of a group share it. Add partitions with the broker's own tools (kafka-topics.sh --alter --topic {topic} --partitions {wanted}), or set MAILROOM_KAFKA_PARTITIONS={has} to silence this"
            ),
        }
    }
}

/// Whether this is the first refusal to grow `topic` from `partitions` this process meets:
/// the warning is given once, not again at every retry of a relay.
fn first_refusal(topic: &str, partitions: usize) -> bool {
    static WARNED: Mutex<Option<HashSet<(String, usize)>>> = Mutex::new(None);
    let mut warned = WARNED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    warned
        .get_or_insert_with(HashSet::new)
        .insert((topic.to_owned(), partitions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_prefix_gives_the_names_production_uses() {
        let topics = Topics::default();
        assert_eq!(
            topics.name(Topic::IdentityEvents),
            "mailroom.identity.events"
        );
        assert_eq!(
            topics.name(Topic::Revocations),
            "mailroom.identity.revocations"
        );
        assert_eq!(topics.name(Topic::SyncRequests), "mailroom.sync.requests");
        for topic in Topic::ALL {
            assert_eq!(topics.name(topic), topic.default_name());
            assert_eq!(
                topics.published_name(&topic.default_name()),
                topic.default_name()
            );
        }
    }

    #[test]
    fn an_outbox_row_is_published_under_the_configured_prefix() {
        let topics = Topics::new("tests.abc");
        assert_eq!(
            topics.published_name("mailroom.sync.requests"),
            "tests.abc.sync.requests"
        );
        // A name that is not one of Mailroom's topics is kept as it is.
        assert_eq!(topics.published_name("other.topic"), "other.topic");
        assert_eq!(topics.published_name("mailroom.sync"), "mailroom.sync");
    }

    #[test]
    fn only_tansu_is_known_not_to_long_poll() {
        assert!(!long_polls("tansu_cluster"));
        assert!(long_polls("MkU3OEVBNTcwNTJENDM2Qg"));
        assert!(long_polls("redpanda.7b0c6c8e-53e4-4a59-b27b-e3d6e6ef8d1d"));
    }

    fn settings(brokers: &str, properties: &[(&str, &str)]) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.to_owned(),
            idempotence: true,
            transactions: true,
            partitions: 1,
            replication: 1,
            topics: Topics::default(),
            properties: KafkaProperties::new(
                properties
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            )
            .expect("valid properties"),
        }
    }

    fn fetch_wait_of(settings: &KafkaSettings) -> Option<String> {
        let mut config = ClientConfig::new();
        settings.fetching(&mut config);
        settings.finish(&mut config);
        config.get("fetch.wait.max.ms").map(str::to_owned)
    }

    #[test]
    fn consumers_wait_long_only_at_brokers_known_to_answer_at_once() {
        let unknown = settings("unknown.test:9092", &[]);
        assert_eq!(unknown.fetch_wait(), POLLING_BROKER_FETCH_WAIT);
        assert_eq!(fetch_wait_of(&unknown).as_deref(), Some("60"));

        let kafka = settings("kafka.test:9092", &[]);
        let tansu = settings("tansu.test:9092", &[]);
        {
            let mut known = LONG_POLLING.lock().unwrap();
            let known = known.get_or_insert_with(HashMap::new);
            known.insert(kafka.brokers.clone(), long_polls("MkU3OEVBNTcwNTJENDM2Qg"));
            known.insert(tansu.brokers.clone(), long_polls("tansu_cluster"));
        }
        assert_eq!(kafka.fetch_wait(), FETCH_WAIT);
        assert_eq!(fetch_wait_of(&kafka).as_deref(), Some("500"));
        assert_eq!(fetch_wait_of(&tansu).as_deref(), Some("60"));

        // Configuration wins over both.
        let tuned = settings("kafka.test:9092", &[("fetch.wait.max.ms", "100")]);
        assert_eq!(fetch_wait_of(&tuned).as_deref(), Some("100"));
    }

    #[test]
    fn clients_push_no_telemetry_to_the_broker_unless_configured_to() {
        let pushed = |settings: &KafkaSettings| {
            let mut config = settings.base();
            settings.finish(&mut config);
            config.get("enable.metrics.push").map(str::to_owned)
        };
        assert_eq!(
            pushed(&settings("x.test:9092", &[])).as_deref(),
            Some("false")
        );
        let collected = settings("x.test:9092", &[("enable.metrics.push", "true")]);
        assert_eq!(pushed(&collected).as_deref(), Some("true"));
        // Every client starts from the same base.
        assert_eq!(
            settings("x.test:9092", &[])
                .producer_config()
                .get("enable.metrics.push"),
            Some("false")
        );
    }

    #[test]
    fn every_consumer_fetches_as_soon_as_one_byte_is_there() {
        let mut config = ClientConfig::new();
        settings("x.test:9092", &[]).fetching(&mut config);
        assert_eq!(config.get("fetch.min.bytes"), Some("1"));
    }

    #[test]
    fn a_prefix_is_a_topic_name_part() {
        assert!(valid_topic_prefix("mailroom"));
        assert!(valid_topic_prefix("tests.0a1b-c_d"));
        assert!(!valid_topic_prefix(""));
        assert!(!valid_topic_prefix("with space"));
        assert!(!valid_topic_prefix("slash/"));
        assert!(!valid_topic_prefix(&"x".repeat(201)));
    }
}
