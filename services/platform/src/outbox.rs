//! The transactional outbox and its relay.
//!
//! A service calls [`enqueue`] inside the transaction that changes its state, so the event
//! exists exactly when the change does. The [`Relay`] publishes unpublished rows to Kafka in
//! order and stamps them; when the broker is down, rows wait (and the relay retries with
//! backoff), so an event is delayed but never lost. One relay per schema publishes at a time
//! (a PostgreSQL advisory lock elects it), which keeps each key's events in order across
//! replicas.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::Principal;
use crate::kafka::{KafkaSettings, Topic};
use crate::proto::events::v1::{actor, envelope::Payload, Actor, Envelope};
use crate::types::{OrgId, UserId};

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventActor {
    User(UserId),
    Service(String),
    System,
}

impl EventActor {
    /// The caller of a request as the actor of what it changed.
    pub fn of(principal: &Principal) -> Self {
        match principal {
            Principal::User { user_id, .. } => EventActor::User(*user_id),
            Principal::Service { name } => EventActor::Service(name.clone()),
        }
    }

    fn to_proto(&self) -> Actor {
        let kind = match self {
            EventActor::User(id) => actor::Kind::UserId(id.to_string()),
            EventActor::Service(name) => actor::Kind::Service(format!("service:{name}")),
            EventActor::System => actor::Kind::System(true),
        };
        Actor { kind: Some(kind) }
    }
}

/// The protobuf type name of a payload, as written in `Envelope.type`.
pub fn payload_type(payload: &Payload) -> &'static str {
    match payload {
        Payload::OrganizationCreated(_) => "mailroom.events.v1.OrganizationCreated",
        Payload::OrganizationUpdated(_) => "mailroom.events.v1.OrganizationUpdated",
        Payload::UserCreated(_) => "mailroom.events.v1.UserCreated",
        Payload::UserUpdated(_) => "mailroom.events.v1.UserUpdated",
        Payload::UserDismissed(_) => "mailroom.events.v1.UserDismissed",
        Payload::UserRehired(_) => "mailroom.events.v1.UserRehired",
        Payload::AdminChanged(_) => "mailroom.events.v1.AdminChanged",
        Payload::LoginEmailChanged(_) => "mailroom.events.v1.LoginEmailChanged",
        Payload::ContactEmailChanged(_) => "mailroom.events.v1.ContactEmailChanged",
        Payload::EmailAddressTransferred(_) => "mailroom.events.v1.EmailAddressTransferred",
        Payload::DepartmentCreated(_) => "mailroom.events.v1.DepartmentCreated",
        Payload::DepartmentUpdated(_) => "mailroom.events.v1.DepartmentUpdated",
        Payload::DepartmentDeleted(_) => "mailroom.events.v1.DepartmentDeleted",
        Payload::SessionsRevoked(_) => "mailroom.events.v1.SessionsRevoked",
        Payload::RelationshipsWritten(_) => "mailroom.events.v1.RelationshipsWritten",
        Payload::RelationshipsDeleted(_) => "mailroom.events.v1.RelationshipsDeleted",
        Payload::PermissionSettingsChanged(_) => "mailroom.events.v1.PermissionSettingsChanged",
        Payload::MailboxConnected(_) => "mailroom.events.v1.MailboxConnected",
        Payload::MailboxUpdated(_) => "mailroom.events.v1.MailboxUpdated",
        Payload::MailboxDisconnected(_) => "mailroom.events.v1.MailboxDisconnected",
        Payload::MailboxTransferred(_) => "mailroom.events.v1.MailboxTransferred",
        Payload::SyncRequested(_) => "mailroom.events.v1.SyncRequested",
        Payload::MailboxSynced(_) => "mailroom.events.v1.MailboxSynced",
        Payload::MailboxSyncFailed(_) => "mailroom.events.v1.MailboxSyncFailed",
        Payload::NewMessages(_) => "mailroom.events.v1.NewMessages",
        Payload::UserRemoved(_) => "mailroom.events.v1.UserRemoved",
        Payload::InvitationCreated(_) => "mailroom.events.v1.InvitationCreated",
        Payload::InvitationSent(_) => "mailroom.events.v1.InvitationSent",
        Payload::InvitationFailed(_) => "mailroom.events.v1.InvitationFailed",
        Payload::InvitationAccepted(_) => "mailroom.events.v1.InvitationAccepted",
        Payload::InvitationRevoked(_) => "mailroom.events.v1.InvitationRevoked",
        Payload::InvitationExpired(_) => "mailroom.events.v1.InvitationExpired",
        Payload::RegistrationRequested(_) => "mailroom.events.v1.RegistrationRequested",
        Payload::RegistrationApproved(_) => "mailroom.events.v1.RegistrationApproved",
        Payload::RegistrationRejected(_) => "mailroom.events.v1.RegistrationRejected",
    }
}

/// Writes an event for `topic` into the outbox, in the caller's transaction. Returns the
/// event id. The row names the topic by its default name ([`Topic::default_name`]); the relay
/// publishes it under the configured prefix ([`crate::kafka::Topics::published_name`]), so rows
/// mean the same to every version of the relay.
pub async fn enqueue(
    conn: &mut PgConnection,
    topic: Topic,
    org_id: OrgId,
    aggregate_id: &str,
    actor: &EventActor,
    payload: Payload,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let now = Utc::now();
    let trace_context = crate::telemetry::inject_current();
    let event_type = payload_type(&payload);
    let envelope = Envelope {
        id: id.to_string(),
        r#type: event_type.to_owned(),
        org_id: org_id.to_string(),
        aggregate_id: aggregate_id.to_owned(),
        actor: Some(actor.to_proto()),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        }),
        trace_context: trace_context.clone(),
        payload: Some(payload),
    };
    let mut headers = trace_context;
    headers.insert("event-type".into(), event_type.to_owned());
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, record_key, payload, headers) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(topic.default_name())
    .bind(aggregate_id)
    .bind(envelope.encode_to_vec())
    .bind(sqlx::types::Json(headers))
    .execute(conn)
    .await?;
    Ok(id)
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    seq: i64,
    topic: String,
    record_key: String,
    payload: Vec<u8>,
    headers: sqlx::types::Json<HashMap<String, String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox query failed: {0}")]
    Db(#[from] sqlx::Error),
    #[error("publishing to Kafka failed: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Publishes a schema's outbox to Kafka.
pub struct Relay {
    pool: PgPool,
    schema: String,
    kafka: KafkaSettings,
    topics: Vec<Topic>,
    batch_size: i64,
    idle_poll: Duration,
    retention: Duration,
}

impl Relay {
    /// `topics` are created at start (and again after a failure: a broker that lost them, such
    /// as an in-memory one, gets them back).
    pub fn new(pool: PgPool, schema: &str, kafka: KafkaSettings, topics: Vec<Topic>) -> Self {
        Self {
            pool,
            schema: schema.to_owned(),
            kafka,
            topics,
            batch_size: 256,
            idle_poll: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// Runs until `shutdown` is cancelled, finishing the batch in hand first.
    pub async fn run(self, shutdown: CancellationToken) {
        let lock_key = format!("outbox_relay:{}", self.schema);
        while !shutdown.is_cancelled() {
            let mut leader = match self.pool.acquire().await {
                Ok(conn) => conn.detach(),
                Err(err) => {
                    tracing::warn!(%err, "outbox relay cannot reach PostgreSQL; retrying");
                    sleep_or_cancel(Duration::from_secs(2), &shutdown).await;
                    continue;
                }
            };
            let elected: Result<bool, _> =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                    .bind(&lock_key)
                    .fetch_one(&mut leader)
                    .await;
            match elected {
                Ok(true) => {
                    tracing::info!(schema = %self.schema, "outbox relay elected");
                    self.lead(&mut leader, &shutdown).await;
                }
                Ok(false) => {
                    sleep_or_cancel(self.idle_poll * 5, &shutdown).await;
                }
                Err(err) => {
                    tracing::warn!(%err, "outbox relay election failed; retrying");
                    sleep_or_cancel(Duration::from_secs(2), &shutdown).await;
                }
            }
        }
    }

    async fn lead(&self, leader: &mut PgConnection, shutdown: &CancellationToken) {
        let mut producer: Option<FutureProducer> = None;
        if let Err(err) = self.kafka.ensure_topics(&self.topics).await {
            tracing::warn!(%err, "topics could not be ensured; publishing will retry");
        }
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(mut l) => match l.listen(&format!("{}_outbox", self.schema)).await {
                Ok(()) => Some(l),
                Err(_) => None,
            },
            Err(_) => None,
        };
        let mut backoff = Duration::from_millis(200);
        let mut last_cleanup = Instant::now();
        let mut last_leader_check = Instant::now();
        while !shutdown.is_cancelled() {
            if last_leader_check.elapsed() > Duration::from_secs(5) {
                last_leader_check = Instant::now();
                if sqlx::query("SELECT 1").execute(&mut *leader).await.is_err() {
                    tracing::warn!("outbox relay lost its leader connection; re-electing");
                    return;
                }
            }
            let current = match producer.take() {
                Some(p) => p,
                None => match self.kafka.producer() {
                    Ok(p) => p,
                    Err(err) => {
                        tracing::error!(%err, "Kafka producer could not be created; retrying");
                        if sleep_or_cancel(backoff, shutdown).await {
                            return;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                },
            };
            let published = self.publish_batch(&current).await;
            if published.is_ok() {
                // A producer that failed is dropped: an idempotent producer whose broker
                // restarted can be left in a fatal state, so the next attempt starts afresh.
                producer = Some(current);
            }
            match published {
                Ok(0) => {
                    backoff = Duration::from_millis(200);
                    self.report_backlog().await;
                    if last_cleanup.elapsed() > Duration::from_secs(3600) {
                        last_cleanup = Instant::now();
                        self.cleanup().await;
                    }
                    match listener.as_mut() {
                        Some(l) => {
                            tokio::select! {
                                _ = l.recv() => {}
                                _ = tokio::time::sleep(self.idle_poll) => {}
                                _ = shutdown.cancelled() => {}
                            }
                        }
                        None => {
                            sleep_or_cancel(self.idle_poll, shutdown).await;
                        }
                    }
                }
                Ok(_) => backoff = Duration::from_millis(200),
                Err(err) => {
                    tracing::warn!(%err, retry_in_ms = backoff.as_millis() as u64, "outbox publish failed; events wait in the outbox");
                    if sleep_or_cancel(backoff, shutdown).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    if let Err(err) = self.kafka.ensure_topics(&self.topics).await {
                        tracing::debug!(%err, "topics not ensured yet");
                    }
                }
            }
        }
    }

    /// Publishes up to one batch; returns how many were published.
    async fn publish_batch(&self, producer: &FutureProducer) -> Result<usize, RelayError> {
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, topic, record_key, payload, headers FROM outbox \
             WHERE published_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(self.batch_size)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let names: Vec<String> = rows
            .iter()
            .map(|row| self.kafka.topics.published_name(&row.topic))
            .collect();
        let mut deliveries = Vec::with_capacity(rows.len());
        for (row, name) in rows.iter().zip(&names) {
            let mut headers = OwnedHeaders::new_with_capacity(row.headers.0.len());
            for (key, value) in row.headers.0.iter() {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
            let record = FutureRecord::to(name)
                .key(&row.record_key)
                .payload(&row.payload)
                .headers(headers);
            deliveries.push(producer.send(record, Duration::from_secs(15)));
        }
        let results = futures::future::join_all(deliveries).await;
        let mut published = Vec::with_capacity(rows.len());
        let mut failure = None;
        for ((row, name), result) in rows.iter().zip(names).zip(results) {
            match result {
                Ok(_) if failure.is_none() => {
                    metrics::counter!(crate::metrics::OUTBOX_PUBLISHED, "topic" => name)
                        .increment(1);
                    published.push(row.seq);
                }
                Ok(_) => {}
                Err((err, _)) => {
                    metrics::counter!(crate::metrics::OUTBOX_FAILURES, "topic" => name)
                        .increment(1);
                    if failure.is_none() {
                        failure = Some((row.seq, err));
                    }
                }
            }
        }
        // Only the prefix before the first failure is stamped, so order holds; anything after
        // it that did reach the broker is sent again (at least once; consumers deduplicate).
        if !published.is_empty() {
            sqlx::query("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)")
                .bind(&published)
                .execute(&self.pool)
                .await?;
        }
        if let Some((seq, err)) = failure {
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE seq = $1",
            )
            .bind(seq)
            .bind(err.to_string())
            .execute(&self.pool)
            .await?;
            return Err(err.into());
        }
        Ok(published.len())
    }

    async fn report_backlog(&self) {
        if let Ok(n) =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&self.pool)
                .await
        {
            metrics::gauge!(crate::metrics::OUTBOX_BACKLOG, "schema" => self.schema.clone())
                .set(n as f64);
        }
    }

    async fn cleanup(&self) {
        let cutoff = Utc::now()
            - chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::days(7));
        if let Err(err) = sqlx::query("DELETE FROM outbox WHERE published_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(%err, "old outbox rows not cleaned up");
        }
    }
}

/// Sleeps, or returns early (with `true`) when shutdown is requested.
async fn sleep_or_cancel(duration: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = shutdown.cancelled() => true,
    }
}
