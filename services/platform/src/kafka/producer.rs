//! The outbox relay's Kafka producer: records handed over in order, each delivery report
//! awaited as a future, and a polling thread that sleeps while there is nothing to report.
//!
//! rdkafka's `FutureProducer` polls from a thread of its own with a 100 ms budget that it
//! hands to librdkafka in whole milliseconds: the first wait ends a fraction of a
//! millisecond early, and the rest of the budget is spent calling librdkafka in a loop with
//! a zero timeout — about a millisecond of busy CPU every 100 ms, 1 % of a core for each
//! producer, even with nothing to send (`serve all` runs one per service). This producer's
//! thread gives each poll a budget a few microseconds over a whole number of milliseconds,
//! which the wait itself outlasts, so it sleeps until librdkafka has something for it or the
//! budget is over. (A budget in which a report arrived still ends with such a sub-millisecond
//! loop, as rdkafka's poll runs to its deadline: the saving is whole while idle.) Delivery
//! reports reach their futures as they arrive. Dropping the producer purges at once what was
//! not delivered (nothing queued is sent after; a record already on its way may still have
//! reached the broker, reported as purged), whose futures then end as cancelled, and tells
//! its thread to stop; the thread ends after its current budget and drops librdkafka's
//! handle there, off the caller's thread, which does not wait for it.
//! [`RelayProducer::close`] does the same and waits for the thread and librdkafka's closing
//! (for a stopping process, which may exit right after: librdkafka's threads are ended
//! before its TLS library is torn down).
//!
//! **Transactions.** A transactional producer (made with a `transactional.id`) publishes each
//! round in a transaction: [`RelayProducer::init_transactions`] fences off every earlier
//! producer with the id (a paused or hung leader: the broker refuses what it sends after),
//! [`RelayProducer::begin`] and [`RelayProducer::commit`] bracket a round. The blocking calls
//! run on tokio's blocking threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::ClientContext;
use tokio::sync::oneshot;

/// One poll's budget: whole milliseconds for librdkafka's wait, and a few microseconds the
/// wait outlasts (so no zero-timeout polls follow it). A report ends the wait as it
/// arrives, so the budget only says how often an idle thread wakes to look at its stop flag:
/// twice a second (at 100 ms, five idle relay producers cost `serve all` 0.23 % of a core at
/// rest, a seventh of all it spent), and how long [`RelayProducer::close`] may wait for it.
const POLL_BUDGET: Duration = Duration::from_micros(500_020);

/// What became of one record: delivered, or the error librdkafka reported.
pub type DeliveryOutcome = Result<(), KafkaError>;

/// A record's delivery report, as a future: `Err(_)` when the producer went away first.
pub type Delivery = oneshot::Receiver<DeliveryOutcome>;

/// Hands each delivery report to the future waiting for it.
pub struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<oneshot::Sender<DeliveryOutcome>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiting: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((err, _)) => Err(err.clone()),
        };
        // Nobody waiting any more (the round gave up): nothing to tell.
        let _ = waiting.send(outcome);
    }
}

/// A Kafka producer for the outbox relay; see the module's header.
pub struct RelayProducer {
    producer: Arc<BaseProducer<DeliveryContext>>,
    stop: Arc<AtomicBool>,
    /// The polling thread, detached when the producer is dropped, joined by `close`.
    polling: Option<JoinHandle<()>>,
    transactional: bool,
}

impl RelayProducer {
    /// A producer made from `config`, with its polling thread started; `transactional` says
    /// that `config` holds a `transactional.id`.
    pub fn new(config: &ClientConfig, transactional: bool) -> Result<Self, KafkaError> {
        let producer = Arc::new(BaseProducer::from_config_and_context(
            config,
            DeliveryContext,
        )?);
        let stop = Arc::new(AtomicBool::new(false));
        let polling = {
            let (producer, stop) = (producer.clone(), stop.clone());
            std::thread::Builder::new()
                .name("kafka-producer".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        producer.poll(POLL_BUDGET);
                    }
                })
                .map_err(|err| {
                    KafkaError::ClientCreation(format!(
                        "the producer's polling thread could not start: {err}"
                    ))
                })?
        };
        Ok(Self {
            producer,
            stop,
            polling: Some(polling),
            transactional,
        })
    }

    /// Purges what was not delivered, stops the polling thread and waits for it (up to one
    /// budget) and for librdkafka's closing flush (up to 500 ms), on a blocking thread.
    pub async fn close(mut self) {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        self.stop.store(true, Ordering::Release);
        let polling = self.polling.take();
        let closed = tokio::task::spawn_blocking(move || {
            if let Some(polling) = polling {
                let _ = polling.join();
            }
            // The last handle: librdkafka closes here.
            drop(self);
        });
        // A panic there, or a runtime stopping: nothing more to wait for.
        let _ = closed.await;
    }

    /// Whether it publishes in transactions.
    pub fn transactional(&self) -> bool {
        self.transactional
    }

    /// Registers the transactional id with the broker, fencing off any earlier producer that
    /// used it and ending the transaction it left open; once per producer, before any round.
    pub async fn init_transactions(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.blocking(move |producer| producer.init_transactions(timeout))
            .await
    }

    /// Opens a round's transaction (no network call).
    pub fn begin(&self) -> Result<(), KafkaError> {
        self.producer.begin_transaction()
    }

    /// Commits the round's transaction: its records become visible to consumers (which read
    /// committed records only) all at once. An error leaves the producer to be dropped.
    pub async fn commit(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.blocking(move |producer| producer.commit_transaction(timeout))
            .await
    }

    /// Ends the round's transaction without publishing it.
    pub async fn abort(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.blocking(move |producer| producer.abort_transaction(timeout))
            .await
    }

    async fn blocking(
        &self,
        call: impl FnOnce(&BaseProducer<DeliveryContext>) -> Result<(), KafkaError> + Send + 'static,
    ) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || call(&producer))
            .await
            // The blocking task panicked or the runtime is stopping.
            .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Hands one record to librdkafka: its delivery report as a future, or the error that
    /// refused it at once (a full queue, an invalid topic, a record too large).
    pub fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<Delivery, KafkaError> {
        let (sender, delivery) = oneshot::channel();
        let record = BaseRecord::with_opaque_to(topic, Box::new(sender))
            .key(key)
            .payload(payload)
            .headers(headers);
        match self.producer.send(record) {
            Ok(()) => Ok(delivery),
            Err((err, _record)) => Err(err),
        }
    }

    /// Records handed over and not yet reported on.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

/// Dropping purges what was not delivered and leaves the polling thread to stop by itself
/// (within one budget), holding the last handle: librdkafka's closing flush (up to 500 ms)
/// runs there.
impl Drop for RelayProducer {
    fn drop(&mut self) {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        self.stop.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_polls_budget_is_a_whole_number_of_milliseconds_and_a_little_more() {
        let micros = POLL_BUDGET.as_micros();
        let over = micros % 1_000;
        assert!(
            over > 0 && over <= 50,
            "{micros} µs: the wait (whole ms) must leave at most a few µs"
        );
    }

    #[test]
    fn an_idle_producer_keeps_its_thread_asleep() {
        // No broker answers: nothing is reported, so the thread only waits.
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("log_level", "0");
        // Other tests' producers (one being dropped, say) are not this one's.
        let elsewhere = thread_cpu_by_id("kafka-producer");
        let producer = RelayProducer::new(&config, false).expect("a producer");
        let mine = || -> Duration {
            thread_cpu_by_id("kafka-producer")
                .into_iter()
                .filter(|(tid, _)| !elsewhere.contains_key(tid))
                .map(|(_, spent)| spent)
                .sum()
        };
        let theirs: rdkafka::producer::FutureProducer =
            config.create().expect("rdkafka's producer");
        // Started: librdkafka's first attempts to reach the broker are done.
        std::thread::sleep(Duration::from_millis(300));
        let before = mine();
        let theirs_before = thread_cpu("producer pollin");
        std::thread::sleep(Duration::from_millis(2_000));
        let spent = mine().saturating_sub(before);
        let theirs_spent = thread_cpu("producer pollin").saturating_sub(theirs_before);
        drop(producer);
        drop(theirs);
        // rdkafka's own FutureProducer's thread: about 13 ms in these two seconds (measured).
        eprintln!("this producer's thread {spent:?}, rdkafka's FutureProducer's {theirs_spent:?}");
        assert!(
            spent < Duration::from_millis(4),
            "the polling thread used {spent:?} of CPU in a second of idling"
        );
    }

    #[tokio::test]
    async fn dropping_a_producer_returns_at_once_and_ends_what_it_held_undelivered() {
        // No broker answers: the record stays queued until the drop purges it.
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("log_level", "0");
        let producer = RelayProducer::new(&config, false).expect("a producer");
        let delivery = producer
            .send("t", "k", b"payload", OwnedHeaders::new())
            .expect("queued");
        let started = std::time::Instant::now();
        drop(producer);
        let dropped_in = started.elapsed();
        assert!(
            dropped_in < Duration::from_millis(200),
            "the drop waited {dropped_in:?} (for the polling thread's budget?)"
        );
        let outcome = tokio::time::timeout(Duration::from_secs(3), delivery)
            .await
            .expect("the queued record's future ends soon after the drop");
        assert!(
            !matches!(outcome, Ok(Ok(()))),
            "a record purged on drop is not reported delivered: {outcome:?}"
        );
    }

    /// The CPU time the producers' polling threads have used so far (Linux: the first field
    /// of each `/proc/self/task/<tid>/schedstat`, in nanoseconds, found by the thread's name).
    fn thread_cpu(thread: &str) -> Duration {
        thread_cpu_by_id(thread).values().sum()
    }

    /// The same, per thread id.
    fn thread_cpu_by_id(thread: &str) -> std::collections::HashMap<String, Duration> {
        let mut total = std::collections::HashMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return total;
        };
        for task in tasks.flatten() {
            let path = task.path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if name.trim() != thread {
                continue;
            }
            let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
            let on_cpu: u64 = stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse().ok())
                .unwrap_or(0);
            total.insert(
                task.file_name().to_string_lossy().into_owned(),
                Duration::from_nanos(on_cpu),
            );
        }
        total
    }
}
