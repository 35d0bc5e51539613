//! A group consumer closed off the runtime's worker threads.
//!
//! Dropping an rdkafka group consumer closes it: librdkafka leaves the group and the drop
//! polls until it has, however long the group coordinator takes to answer (a group in the
//! middle of a rebalance, a broker that went away). Done on a runtime worker, that would stall
//! every task scheduled there, and a stopping service with it. [`Closing`] holds the consumer
//! and hands its close to the blocking pool: awaited when the consumer ends normally
//! ([`Closing::close`]), so it has left its group before the service says it stopped; left to
//! finish on its own when the consumer's task is dropped (aborted).

use std::ops::Deref;
use std::sync::Arc;

use crate::kafka::GroupConsumer;

/// A group consumer, closed on the blocking pool.
pub(crate) struct Closing(Option<Arc<GroupConsumer>>);

impl Closing {
    pub(crate) fn new(consumer: GroupConsumer) -> Self {
        Self(Some(Arc::new(consumer)))
    }

    /// The consumer, for work on the blocking pool (a broker round trip). The last holder
    /// closes it: let that be a blocking task too.
    pub(crate) fn shared(&self) -> Arc<GroupConsumer> {
        // Some until `close` or `drop` takes it, and neither leaves a `Closing` behind.
        Arc::clone(self.0.as_ref().expect("a consumer not closed yet"))
    }

    /// Closes the consumer (leaves its group) on the blocking pool, and waits for that.
    pub(crate) async fn close(mut self, name: &str) {
        let Some(consumer) = self.0.take() else {
            return;
        };
        let started = tokio::time::Instant::now();
        tracing::debug!(consumer = name, "closing the consumer (leaving its group)");
        if let Err(err) = tokio::task::spawn_blocking(move || drop(consumer)).await {
            tracing::warn!(%err, consumer = name, "closing the consumer failed");
        }
        tracing::debug!(
            consumer = name,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "consumer closed"
        );
    }
}

impl Deref for Closing {
    type Target = GroupConsumer;

    fn deref(&self) -> &GroupConsumer {
        // Some until `close` or `drop` takes it, and neither leaves a `Closing` behind.
        self.0.as_ref().expect("a consumer not closed yet")
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        let Some(consumer) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || drop(consumer));
            }
            Err(_) => drop(consumer),
        }
    }
}
