//! Consuming Mailroom events with exactly-once effects over at-least-once delivery.
//!
//! For each record, [`run`] opens a transaction, records the event id in `processed_events`
//! (a duplicate stops there), lets the [`EventHandler`] apply the event in the same
//! transaction, commits, and only then commits the Kafka offset. A crash anywhere redelivers
//! the record, and the recorded id makes the replay change nothing. A record that cannot be
//! decoded, or that fails to apply again and again, is kept in `dead_letters`, never dropped.
//!
//! [`concurrent`] is the other mode, for work rather than mirrors: many records in flight at
//! once (never two of one key), offsets committed per partition only up to the contiguous
//! prefix of finished records.

pub mod concurrent;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::proto::events::v1::Envelope;

/// Applies events of the topics a consumer subscribes to.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Applies one event inside the consumer's transaction.
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()>;

    /// Whether the handler acts on this event at all. Events it does not want are passed
    /// over without a transaction (a topic mostly of other events costs only its reading).
    fn wants(&self, _event: &Envelope) -> bool {
        true
    }
}

/// How many times a failing event is tried before it goes to `dead_letters`.
pub const MAX_ATTEMPTS: u32 = 8;

pub(crate) use dead_letter as store_dead_letter;

pub(crate) enum Outcome {
    Applied,
    Duplicate,
    Skipped,
    DeadLetter,
}

/// Consumes `topics` (named as `kafka` names them) in `group` with `handler` until
/// `shutdown`, forever: topics are ensured, and a consumer that fails or ends is replaced after
/// a pause. What every service's event mirror runs in the background.
pub async fn run_until_shutdown(
    kafka: crate::kafka::KafkaSettings,
    group: String,
    pool: PgPool,
    topics: Vec<crate::kafka::Topic>,
    handler: Arc<dyn EventHandler>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        if let Err(err) = kafka.ensure_topics(&topics).await {
            tracing::warn!(%err, consumer = %group, "could not ensure the topics; subscribing anyway");
        }
        let result = match kafka.consumer(&group) {
            Ok(consumer) => {
                run(
                    group.clone(),
                    pool.clone(),
                    consumer,
                    kafka.topics.names(&topics),
                    handler.clone(),
                    shutdown.clone(),
                )
                .await
            }
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            tracing::warn!(%err, consumer = %group, "events consumer stopped; starting again");
        }
        // Whatever ended the consumer (an error, or its stream closing), pause before a new one.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Consumes the topics named `topics` with `consumer` (of group `name`, which also keys
/// `processed_events`) until `shutdown` or the first stream error.
pub async fn run(
    name: String,
    pool: PgPool,
    consumer: StreamConsumer,
    topics: Vec<String>,
    handler: Arc<dyn EventHandler>,
    shutdown: CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    let name = name.as_str();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let mut stream = consumer.stream();
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = stream.next() => match next {
                Some(Ok(m)) => m,
                // A consumer is not kept across a stream error: librdkafka has crashed
                // (SIGSEGV) when one was polled on after its broker went away and came back.
                // The caller builds a new one, which resumes from the committed offsets.
                Some(Err(err)) => return Err(err),
                None => return Ok(()),
            },
        };
        let outcome = process(name, &pool, &message, handler.as_ref(), &shutdown).await;
        let Some(outcome) = outcome else {
            // Shutdown while retrying: the offset stays, the record comes back next time.
            return Ok(());
        };
        let label = match outcome {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Skipped => "skipped",
            Outcome::DeadLetter => "dead_letter",
        };
        metrics::counter!(crate::metrics::EVENTS_CONSUMED, "consumer" => name.to_owned(), "outcome" => label).increment(1);
        if let Err(err) = consumer.commit_message(&message, CommitMode::Async) {
            tracing::warn!(%err, consumer = name, "offset commit failed; the record may be redelivered (harmless)");
        }
    }
}

async fn process(
    name: &str,
    pool: &PgPool,
    message: &BorrowedMessage<'_>,
    handler: &dyn EventHandler,
    shutdown: &CancellationToken,
) -> Option<Outcome> {
    let payload = message.payload().unwrap_or_default();
    let envelope = match Envelope::decode(payload) {
        Ok(env) => env,
        Err(err) => {
            return dead_letter(
                name,
                pool,
                message,
                &format!("undecodable envelope: {err}"),
                shutdown,
            )
            .await;
        }
    };
    let event_id = match Uuid::parse_str(&envelope.id) {
        Ok(id) => id,
        Err(_) => {
            return dead_letter(name, pool, message, "envelope id is not a UUID", shutdown).await;
        }
    };
    if !handler.wants(&envelope) {
        return Some(Outcome::Skipped);
    }
    // The handling continues the trace of the request that caused the event.
    let span = tracing::info_span!("consume", consumer = name, event.id = %envelope.id, event.type = %envelope.r#type);
    crate::telemetry::set_parent_from(
        &span,
        &crate::telemetry::MapExtractor(&envelope.trace_context),
    );
    apply_with_retries(name, pool, message, handler, shutdown, event_id, &envelope)
        .instrument(span)
        .await
}

async fn apply_with_retries(
    name: &str,
    pool: &PgPool,
    message: &BorrowedMessage<'_>,
    handler: &dyn EventHandler,
    shutdown: &CancellationToken,
    event_id: Uuid,
    envelope: &Envelope,
) -> Option<Outcome> {
    let mut attempt = 0u32;
    let mut backoff = Duration::from_millis(100);
    loop {
        match apply_once(name, pool, event_id, envelope, handler).await {
            Ok(true) => return Some(Outcome::Applied),
            Ok(false) => return Some(Outcome::Duplicate),
            Err(ApplyError::Db(err)) => {
                // The database is down: wait for it, however long; nothing is skipped.
                tracing::warn!(%err, consumer = name, "database unavailable while consuming; waiting");
            }
            Err(ApplyError::Handler(err)) => {
                attempt += 1;
                tracing::warn!(error = %err, consumer = name, attempt, event = %envelope.id, "event handler failed");
                if attempt >= MAX_ATTEMPTS {
                    return dead_letter(name, pool, message, &format!("{err:#}"), shutdown).await;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

enum ApplyError {
    Db(sqlx::Error),
    Handler(anyhow::Error),
}

async fn apply_once(
    name: &str,
    pool: &PgPool,
    event_id: Uuid,
    envelope: &Envelope,
    handler: &dyn EventHandler,
) -> Result<bool, ApplyError> {
    let mut tx = pool.begin().await.map_err(ApplyError::Db)?;
    let fresh = sqlx::query(
        "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .bind(event_id)
    .execute(&mut *tx)
    .await
    .map_err(ApplyError::Db)?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok(false);
    }
    handler
        .handle(&mut tx, envelope)
        .await
        .map_err(ApplyError::Handler)?;
    tx.commit().await.map_err(ApplyError::Db)?;
    Ok(true)
}

pub(crate) async fn dead_letter<M: Message>(
    name: &str,
    pool: &PgPool,
    message: &M,
    error: &str,
    shutdown: &CancellationToken,
) -> Option<Outcome> {
    tracing::error!(consumer = name, topic = message.topic(), partition = message.partition(), offset = message.offset(), %error, "record kept in dead_letters");
    loop {
        let stored = sqlx::query(
            "INSERT INTO dead_letters (consumer, topic, partition, \"offset\", record_key, payload, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(name)
        .bind(message.topic())
        .bind(message.partition())
        .bind(message.offset())
        .bind(message.key())
        .bind(message.payload())
        .bind(error)
        .execute(pool)
        .await;
        match stored {
            Ok(_) => return Some(Outcome::DeadLetter),
            Err(err) => {
                tracing::warn!(%err, "dead letter not stored yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
        }
    }
}
