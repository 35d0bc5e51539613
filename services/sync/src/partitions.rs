//! The partition guard: sync work from `<prefix>.sync.requests` reaches at most as many
//! workers as the topic has partitions (the consumer group gives each partition to one
//! worker), while IDLE watches, spread by Redis leases ([`crate::idle`]), reach every worker.
//! More workers than partitions is therefore no fault — the extra workers hold IDLE
//! connections — but work from Kafka does not grow with them.
//!
//! Each worker registers itself in Redis every [`PartitionGuard::heartbeat`] (a sorted set per
//! requests topic, scored by time), and at start and every [`PartitionGuard::every`] counts the
//! live workers and asks the brokers for the topic's real partition count (never a configured
//! value: a topic made elsewhere, or grown since, has its own). Both become gauges
//! ([`metrics::LIVE_WORKERS`], [`metrics::REQUEST_PARTITIONS`]) for an alert, and more workers
//! than partitions is logged as a warning saying what that means and what to do.

use std::time::Duration;

use mailroom_platform::kafka::{KafkaSettings, Topic};
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// How long the brokers have to answer for the topic's partitions.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon a failed comparison is tried again (the first few times).
const RETRY: Duration = Duration::from_secs(2);

pub struct PartitionGuard {
    pub kafka: KafkaSettings,
    pub redis: ConnectionManager,
    /// This worker's name among the workers (its leases carry it too).
    pub holder: String,
    /// How often this worker says it is alive; a worker silent for three of these is no
    /// longer counted.
    pub heartbeat: Duration,
    /// How often the workers are compared with the partitions (and at start).
    pub every: Duration,
}

impl PartitionGuard {
    /// The guard with its usual pace: alive every 30 s, compared every 5 minutes.
    pub fn new(kafka: KafkaSettings, redis: ConnectionManager, holder: String) -> Self {
        Self {
            kafka,
            redis,
            holder,
            heartbeat: Duration::from_secs(30),
            every: Duration::from_secs(300),
        }
    }

    /// The requests topic's name under the configured prefix.
    pub fn topic(&self) -> String {
        self.kafka.topics.name(Topic::SyncRequests)
    }

    /// The Redis sorted set of this topic's live workers.
    fn registry(&self) -> String {
        format!("mailroom:sync:workers:{}", self.topic())
    }

    /// Registers this worker and compares the workers with the partitions until `shutdown`,
    /// then leaves the registry. A comparison that failed (the brokers away, the topic not
    /// made yet) is tried again within seconds, then at every heartbeat.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut next_comparison = tokio::time::Instant::now();
        let mut failures = 0u32;
        loop {
            let mut pause = self.heartbeat;
            match self.register().await {
                Ok(workers) => {
                    ::metrics::gauge!(metrics::LIVE_WORKERS).set(workers as f64);
                    if tokio::time::Instant::now() >= next_comparison {
                        match self.compare(workers).await {
                            Some(_) => {
                                failures = 0;
                                next_comparison = tokio::time::Instant::now() + self.every;
                            }
                            None => failures += 1,
                        }
                    }
                }
                Err(err) => {
                    failures += 1;
                    tracing::warn!(%err, "sync worker not registered in Redis; the partition guard tries again");
                }
            }
            if (1..=3).contains(&failures) {
                pause = pause.min(RETRY);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        if let Err(err) = self.deregister().await {
            tracing::debug!(%err, "sync worker not removed from the registry; it ages out");
        }
    }

    /// Says this worker is alive, forgets workers silent for three heartbeats, and returns
    /// how many are live (this one included).
    pub async fn register(&self) -> redis::RedisResult<u64> {
        let stale_after_ms = 3 * self.heartbeat.as_millis() as i64;
        register_in(&self.redis, &self.registry(), &self.holder, stale_after_ms).await
    }

    async fn deregister(&self) -> redis::RedisResult<()> {
        deregister_from(&self.redis, &self.registry(), &self.holder).await
    }

    /// Asks the brokers for the topic's partitions, sets the gauge and warns when `workers`
    /// are more; returns the partitions (`None` when the brokers did not say).
    pub async fn compare(&self, workers: u64) -> Option<usize> {
        let topic = self.topic();
        let partitions = match self.kafka.partition_count(&topic, METADATA_TIMEOUT).await {
            Ok(0) => {
                tracing::warn!(%topic, "the sync requests topic has no partitions yet (not created?); the partition guard looks again");
                return None;
            }
            Ok(n) => n,
            Err(err) => {
                tracing::warn!(%err, %topic, "the partitions of the sync requests topic could not be read (check KAFKA_BROKERS and the MAILROOM_KAFKA_PROPERTY_* settings); the partition guard tries again");
                return None;
            }
        };
        ::metrics::gauge!(metrics::REQUEST_PARTITIONS).set(partitions as f64);
        match beyond_partitions(workers, partitions, &topic) {
            Some(warning) => tracing::warn!(workers, partitions, %topic, "{warning}"),
            None => {
                tracing::debug!(workers, partitions, %topic, "sync workers within the requests topic's partitions")
            }
        }
        Some(partitions)
    }
}

/// What more `workers` than `partitions` of `topic` means and what to do, or `None` when they
/// are not more.
pub fn beyond_partitions(workers: u64, partitions: usize, topic: &str) -> Option<String> {
    let partitions_u64 = u64::try_from(partitions).unwrap_or(u64::MAX);
    (workers > partitions_u64).then(|| {
        format!(
            "{workers} sync workers but {topic} has {partitions} partition(s): work from Kafka \
             (scheduled and requested syncs) does not grow beyond {partitions} workers, the other \
             {} get none of it; IDLE capacity still grows with every worker. If the workers were \
             added for sync work, add partitions to {topic} (raise MAILROOM_KAFKA_PARTITIONS: \
             topics are grown at start where the broker allows; or kafka-topics --alter \
             --partitions); if for IDLE connections, nothing is wrong",
            workers - partitions_u64
        )
    })
}

/// Says `holder` is alive now in `registry`, a Redis sorted set of workers scored by their
/// last heartbeat (ms since the epoch), forgets members silent for more than
/// `stale_after_ms`, and returns how many are live (at least one: this one).
pub(crate) async fn register_in(
    redis: &ConnectionManager,
    registry: &str,
    holder: &str,
    stale_after_ms: i64,
) -> redis::RedisResult<u64> {
    let mut conn = redis.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let stale = now - stale_after_ms;
    let (_, _, live): (i64, i64, u64) = redis::pipe()
        .cmd("ZADD")
        .arg(registry)
        .arg(now)
        .arg(holder)
        .cmd("ZREMRANGEBYSCORE")
        .arg(registry)
        .arg("-inf")
        .arg(stale)
        .cmd("ZCARD")
        .arg(registry)
        .query_async(&mut conn)
        .await?;
    Ok(live.max(1))
}

/// Takes `holder` out of `registry` (see [`register_in`]).
pub(crate) async fn deregister_from(
    redis: &ConnectionManager,
    registry: &str,
    holder: &str,
) -> redis::RedisResult<()> {
    let mut conn = redis.clone();
    let _: i64 = redis::cmd("ZREM")
        .arg(registry)
        .arg(holder)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_workers_than_partitions_is_said_with_what_to_do() {
        assert_eq!(beyond_partitions(8, 8, "mailroom.sync.requests"), None);
        assert_eq!(beyond_partitions(3, 8, "mailroom.sync.requests"), None);
        let warning =
            beyond_partitions(12, 8, "mailroom.sync.requests").expect("12 workers on 8 partitions");
        assert!(warning.contains("12 sync workers"), "{warning}");
        assert!(
            warning.contains("mailroom.sync.requests has 8 partition"),
            "{warning}"
        );
        assert!(warning.contains("the other 4 get none"), "{warning}");
        assert!(warning.contains("IDLE capacity still grows"), "{warning}");
        assert!(warning.contains("add partitions"), "{warning}");
    }
}
