//! The transactional outbox and its relay.
//!
//! A service calls [`enqueue`] inside the transaction that changes its state, so the event
//! exists exactly when the change does. The [`Relay`] publishes unpublished rows to Kafka in
//! order and stamps them; when the broker is down, rows wait (and the relay retries with
//! backoff), so an event is delayed but never lost. One relay per schema publishes at a time
//! (a PostgreSQL advisory lock elects it), which keeps each key's events in order across
//! replicas.
//!
//! **Parking.** A row the broker refuses for good ([`refused_for_good`]: too large, an invalid
//! topic, a record it rejects, a topic the relay may not write) would otherwise block the
//! stream for ever. The relay tries it alone, up to `outbox_max_attempts` times (5 unless
//! configured, with the relay's back-off between tries), then *parks* it: `parked_at` is set,
//! its last error kept in `last_error`, and publishing goes on with the rows after it. A
//! broker that is down, timeouts and every other error never park a row: the stream waits.
//! Parked rows are counted (`mailroom_outbox_parked_events`, `mailroom_outbox_parkings_total`,
//! an alert), kept until an operator deals with them (the weekly clean-up removes only
//! published rows), and listed and retried through [`crate::event_ops`] (`mailroom ctl events
//! parked list|retry`); a retried row is tried again at its place in the stream, and parked
//! again if it is still refused.
//!
//! **Once, across leaders.** A leader records a round as published only after the broker
//! has it, so a leader that stops in between (killed, paused past its session, cut off) leaves
//! rows that are in Kafka and unpublished here. Each relay has an id naming its election
//! domain (the topic prefix, the schema and the database: [`relay_id`]); every record carries
//! it and its row in the `mailroom-outbox` header. A new leader reads the partitions back from
//! their ends ([`crate::kafka::tail`]) and records as published the unpublished rows it finds
//! there, instead of sending them again, and checks its session before each round that has
//! rows to send, so a leader that wakes from a pause steps down before it publishes again.
//! With `MAILROOM_KAFKA_TRANSACTIONS` (and idempotence) the producer is also transactional
//! under the id: a new producer fences off every earlier one (what a paused leader had queued
//! is refused when it wakes), and each round is one transaction, visible to consumers (which
//! read committed records only) together or not at all. Without it, records a paused leader
//! had queued but not sent when it stopped can still reach the broker after it wakes (at least
//! once; consumers deduplicate).
//!
//! **Order.** Rows go out in `seq` order, a row never ahead of one before it, so each key's
//! events keep their order — except around a parked row: the events after it, those of its
//! own key included, go on without it, and if it is retried it arrives after them. Before it
//! is parked, a row refused when it is handed to the producer (too large, an invalid name)
//! ends its round, so nothing overtakes it; one the broker refuses after the round was sent
//! may let later rows of the round through, which are sent again (at least once; consumers
//! deduplicate).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use prost::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::Principal;
use crate::kafka::tail::{self, OUTBOX_HEADER};
use crate::kafka::{KafkaSettings, RelayProducer, Topic};
use crate::notify_listener::{Connect, NotifyListener};
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
        Payload::RoleCreated(_) => "mailroom.events.v1.RoleCreated",
        Payload::RoleUpdated(_) => "mailroom.events.v1.RoleUpdated",
        Payload::RoleDeleted(_) => "mailroom.events.v1.RoleDeleted",
        Payload::RoleAssigned(_) => "mailroom.events.v1.RoleAssigned",
        Payload::RoleUnassigned(_) => "mailroom.events.v1.RoleUnassigned",
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
    let (id, envelope, headers) = outbox_record(org_id, aggregate_id, actor, payload);
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, record_key, payload, headers) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(topic.default_name())
    .bind(aggregate_id)
    .bind(envelope)
    .bind(sqlx::types::Json(headers))
    .execute(conn)
    .await?;
    Ok(id)
}

/// As [`enqueue`] for many events of one topic, organisation and actor, in one statement:
/// `events` are `(aggregate id, payload)`, written (and so published) in their order.
/// Returns the event ids in the same order.
pub async fn enqueue_many(
    conn: &mut PgConnection,
    topic: Topic,
    org_id: OrgId,
    actor: &EventActor,
    events: impl IntoIterator<Item = (String, Payload)>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    let mut envelopes = Vec::new();
    let mut headers = Vec::new();
    for (key, payload) in events {
        let (id, envelope, header) = outbox_record(org_id, &key, actor, payload);
        ids.push(id);
        keys.push(key);
        envelopes.push(envelope);
        headers.push(sqlx::types::Json(header));
    }
    if ids.is_empty() {
        return Ok(ids);
    }
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, record_key, payload, headers) \
         SELECT e.id, $1, e.key, e.payload, e.headers \
         FROM UNNEST($2::uuid[], $3::text[], $4::bytea[], $5::jsonb[]) WITH ORDINALITY AS e(id, key, payload, headers, ord) \
         ORDER BY e.ord",
    )
    .bind(topic.default_name())
    .bind(&ids)
    .bind(&keys)
    .bind(&envelopes)
    .bind(&headers)
    .execute(conn)
    .await?;
    Ok(ids)
}

/// An event's id, its encoded envelope and its record headers.
fn outbox_record(
    org_id: OrgId,
    aggregate_id: &str,
    actor: &EventActor,
    payload: Payload,
) -> (Uuid, Vec<u8>, HashMap<String, String>) {
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
    (id, envelope.encode_to_vec(), headers)
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    seq: i64,
    event_id: Uuid,
    topic: String,
    record_key: String,
    payload: Vec<u8>,
    headers: sqlx::types::Json<HashMap<String, String>>,
    attempts: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox query failed: {0}")]
    Db(#[from] sqlx::Error),
    #[error("publishing to Kafka failed: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Committing a round's transaction failed: the broker may or may not have committed it
    /// (the next producer reads back what is there).
    #[error("committing the round to Kafka failed: {0}")]
    Commit(rdkafka::error::KafkaError),
    /// The leader's session (and with it the lock) is gone: another replica may lead now.
    #[error("the outbox relay's leader session is gone")]
    SessionLost,
    /// The broker (or the producer, before sending) refused one event.
    #[error("outbox event {seq} was refused{}: {error}", if *.for_good { " for good" } else { "" })]
    Refused {
        seq: i64,
        error: String,
        /// Whether trying again cannot help ([`refused_for_good`]).
        for_good: bool,
        /// Whether the producer refused it before sending (it stays usable).
        at_send: bool,
    },
}

/// Whether a Kafka error on producing one record means the record itself will never be
/// accepted, however often it is sent: too large, an invalid topic, a record the broker's
/// validation rejects. Only errors of the record itself count: a missing ACL, a clock skew
/// (invalid timestamp) or a broker's message format would refuse every row alike, and must
/// not park the whole stream one row at a time. A broker that is down, slow or electing a
/// leader, a record that timed out, an unknown topic (which the relay creates) and every
/// other error may pass later, and never park a record.
pub fn refused_for_good(err: &KafkaError) -> bool {
    let KafkaError::MessageProduction(code) = err else {
        return false;
    };
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRecord
    )
}

/// Whether Kafka accepts `name` as a topic name: 1 to 249 of ASCII letters, digits, `.`, `_`
/// and `-`, and not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What one round of publishing did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Round {
    /// Rows published.
    published: usize,
    /// Rows parked.
    parked: usize,
    /// Whether the producer failed (a delivery or the commit; it is then made afresh).
    failed: bool,
}

/// The first row of a round that failed, by its index in the round.
struct Failure {
    index: usize,
    error: String,
    for_good: bool,
    /// Refused by the producer before anything was sent, not by the broker.
    at_send: bool,
}

/// The id of the relay of `schema` in the database `pool` reaches, publishing under topic
/// `prefix`: its producer's `transactional.id` and the first part of its records'
/// `mailroom-outbox` header. Replicas of one deployment elect one leader among themselves
/// and share it; another deployment (another database, or another prefix) has its own, so
/// they never fence each other off.
pub fn relay_id(pool: &PgPool, prefix: &str, schema: &str) -> String {
    use sha2::Digest as _;
    let options = pool.connect_options();
    let database = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    );
    let digest = sha2::Sha256::digest(database.as_bytes());
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}.outbox.{schema}.{short}")
}

/// How long a new producer may take to register its transactional id (and fence off the one
/// before it), and a round's transaction to commit.
const TRANSACTION_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long reading back one partition's end may take.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(15);
/// The unpublished rows, lowest first, looked for when reading back: a leader publishes from
/// the lowest, at most a batch at a time, so the rows it left are among these.
const READ_BACK_ROWS: i64 = 4_096;

/// Publishes a schema's outbox to Kafka.
pub struct Relay {
    pool: PgPool,
    schema: String,
    /// [`relay_id`].
    id: String,
    kafka: KafkaSettings,
    topics: Vec<Topic>,
    batch_size: i64,
    /// How often an idle leader looks for rows while it cannot listen for notifications.
    idle_poll: Duration,
    /// How often an idle leader looks for rows while it listens (a safety net: every
    /// transaction that writes rows notifies it, unless the listener's connection was lost
    /// unnoticed).
    listening_poll: Duration,
    retention: Duration,
    max_attempts: i32,
}

impl Relay {
    /// `topics` are created at start (and again after a failure: a broker that lost them, such
    /// as an in-memory one, gets them back).
    pub fn new(pool: PgPool, schema: &str, kafka: KafkaSettings, topics: Vec<Topic>) -> Self {
        let id = relay_id(&pool, kafka.topics.prefix(), schema);
        Self {
            pool,
            schema: schema.to_owned(),
            id,
            kafka,
            topics,
            batch_size: 256,
            idle_poll: Duration::from_secs(1),
            listening_poll: LISTENING_POLL,
            retention: Duration::from_secs(7 * 24 * 3600),
            max_attempts: 5,
        }
    }

    /// Parks an event once the broker has refused it for good `attempts` times (at least 1;
    /// `outbox_max_attempts` in the configuration, 5 unless set).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = i32::try_from(attempts.max(1)).unwrap_or(i32::MAX);
        self
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
                    // A leader that stops answering (a paused or hung process) must not keep
                    // the stream waiting: PostgreSQL ends its idle session, and with it the
                    // advisory lock, after LEADER_IDLE_TIMEOUT; a live leader pings well
                    // within it. (PostgreSQL before 14 lacks the setting: the lock then lasts
                    // until the connection breaks.)
                    let bounded = sqlx::query(&format!(
                        "SET idle_session_timeout = {}",
                        LEADER_IDLE_TIMEOUT.as_millis()
                    ))
                    .execute(&mut leader)
                    .await;
                    if let Err(err) = bounded {
                        tracing::warn!(%err, "idle_session_timeout not set on the relay's leader connection; a hung leader holds the relay until its connection breaks");
                    }
                    // The session is kept alive by a task of its own, so a slow round (a
                    // broker outage) never lets it go idle; losing it ends the leadership
                    // before the next round.
                    let leading = shutdown.child_token();
                    let session =
                        std::sync::Arc::new(LeaderSession(tokio::sync::Mutex::new(leader)));
                    let pinger = tokio::spawn(keep_session(session.clone(), leading.clone()));
                    self.lead(&leading, &session).await;
                    leading.cancel();
                    // Dropping the session releases the advisory lock.
                    let _ = pinger.await;
                }
                Ok(false) => {
                    // Every replica reports the backlog and the parked events, so that the
                    // figures stay current whichever one leads.
                    self.report_backlog().await;
                    sleep_or_cancel(ELECTION_RETRY, &shutdown).await;
                }
                Err(err) => {
                    tracing::warn!(%err, "outbox relay election failed; retrying");
                    sleep_or_cancel(Duration::from_secs(2), &shutdown).await;
                }
            }
        }
    }

    /// Publishes until `shutdown` (the process stopping, or the leader's session lost), then
    /// closes the producer it kept (a stopping process may exit right after).
    async fn lead(&self, shutdown: &CancellationToken, session: &LeaderSession) {
        let mut producer: Option<RelayProducer> = None;
        self.publish_while_leading(&mut producer, shutdown, session)
            .await;
        if let Some(producer) = producer {
            producer.close().await;
        }
    }

    /// The leader's loop; `producer` holds the producer between rounds.
    async fn publish_while_leading(
        &self,
        producer: &mut Option<RelayProducer>,
        shutdown: &CancellationToken,
        session: &LeaderSession,
    ) {
        // Read back at the start of the leadership and after a commit whose outcome is
        // unknown; a round that failed otherwise published nothing (a transaction) or is sent
        // again anyway (without one).
        let mut read_back = true;
        // Creating topics waits seconds on a broker that does not answer: not past a stop.
        let ensured = tokio::select! {
            _ = shutdown.cancelled() => return,
            ensured = self.kafka.ensure_topics(&self.topics) => ensured,
        };
        if let Err(err) = ensured {
            tracing::warn!(%err, "topics could not be ensured; publishing will retry");
        }
        let mut wakeups = Wakeups::new(&self.pool, &self.schema);
        let mut backoff = Duration::from_millis(200);
        let mut last_cleanup = Instant::now();
        // When the gauges were last set from the table, and whether anything happened since
        // (a publish, a parking, an error): then the next idle round sets them again.
        let mut backlog_reported = Instant::now();
        let mut backlog_changed = true;
        while !shutdown.is_cancelled() {
            let current = match producer.take() {
                Some(p) => p,
                None => {
                    // A new producer fences off the ones before it: only the leader may make
                    // one (a leader that woke from a pause finds its session gone here).
                    if !session.alive().await {
                        tracing::warn!(schema = %self.schema, "outbox relay lost its leader session; re-electing");
                        return;
                    }
                    let started = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        started = self.start_producer(session, read_back) => started,
                    };
                    match started {
                        Ok(Some(p)) => {
                            read_back = false;
                            p
                        }
                        Ok(None) => {
                            tracing::warn!(schema = %self.schema, "outbox relay lost its leader session; re-electing");
                            return;
                        }
                        Err(err) => {
                            tracing::error!(%err, retry_in_ms = backoff.as_millis() as u64, "outbox relay could not start publishing; events wait in the outbox (a broker that refuses transactions, or the transactional id's ACL: see MAILROOM_KAFKA_TRANSACTIONS)");
                            self.report_backlog().await;
                            (backlog_reported, backlog_changed) = (Instant::now(), true);
                            if sleep_or_cancel(backoff, shutdown).await {
                                return;
                            }
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            continue;
                        }
                    }
                }
            };
            let round = self.publish_batch(&current, session).await;
            if matches!(round, Err(RelayError::SessionLost)) {
                drop(current);
                tracing::warn!(schema = %self.schema, "outbox relay lost its leader session; re-electing");
                return;
            }
            let usable = match &round {
                Ok(Round { failed, .. }) => !failed,
                // Refused before sending (too large, an invalid topic): nothing went wrong
                // with the producer.
                Err(RelayError::Refused { at_send, .. }) => *at_send,
                Err(_) => false,
            };
            if matches!(round, Err(RelayError::Commit(_))) {
                // The commit's outcome is unknown: the next producer reads back.
                read_back = true;
            }
            if usable {
                *producer = Some(current);
            } else {
                // A producer that failed is dropped: an idempotent producer whose broker
                // restarted, or that had a record refused, can be left in a fatal state, so
                // the next attempt starts afresh. Dropping it purges what it held and
                // leaves its polling thread to close librdkafka's handle.
                drop(current);
            }
            match round {
                Ok(Round {
                    published: 0,
                    parked: 0,
                    ..
                }) => {
                    backoff = Duration::from_millis(200);
                    // Idle: nothing waits (this round found none), and the parked count
                    // changes only by a round (which resets this) or an operator; so the
                    // gauges are read again only now and then, not at every safety poll.
                    if backlog_changed || backlog_reported.elapsed() >= BACKLOG_REFRESH {
                        self.report_backlog().await;
                        (backlog_reported, backlog_changed) = (Instant::now(), false);
                    }
                    if last_cleanup.elapsed() > Duration::from_secs(3600) {
                        last_cleanup = Instant::now();
                        self.cleanup().await;
                    }
                    wakeups
                        .wait(self.idle_poll, self.listening_poll, shutdown)
                        .await;
                }
                Ok(round) => {
                    backoff = Duration::from_millis(200);
                    backlog_changed = true;
                    // A leader that never idles (a broker slower than the writes) still sets
                    // them now and then, so the backlog alert can fire.
                    if round.parked > 0 || backlog_reported.elapsed() >= BACKLOG_REFRESH {
                        self.report_backlog().await;
                        backlog_reported = Instant::now();
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, retry_in_ms = backoff.as_millis() as u64, "outbox publish failed; events wait in the outbox");
                    self.report_backlog().await;
                    (backlog_reported, backlog_changed) = (Instant::now(), true);
                    if sleep_or_cancel(backoff, shutdown).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    let ensured = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        ensured = self.kafka.ensure_topics(&self.topics) => ensured,
                    };
                    if let Err(err) = ensured {
                        tracing::debug!(%err, "topics not ensured yet");
                    }
                }
            }
        }
    }

    /// A producer ready to publish: created, its transactional id registered (fencing off
    /// the previous leader's), and the rows that leader published without recording it
    /// recorded ([`Self::read_back`]).
    async fn start_producer(
        &self,
        session: &LeaderSession,
        read_back: bool,
    ) -> Result<Option<RelayProducer>, RelayError> {
        let producer = self.kafka.relay_producer(Some(&self.id))?;
        let ready = async {
            if producer.transactional() {
                producer.init_transactions(TRANSACTION_CALL_TIMEOUT).await?;
                // Paused between its check and the fencing, a former leader has just fenced
                // off the new one: it steps down now (the new one starts again, fencing it).
                if !session.alive().await {
                    return Ok(None);
                }
            }
            if !read_back {
                return Ok(Some(0));
            }
            self.read_back().await.map(Some)
        }
        .await;
        match ready {
            Ok(None) => {
                drop(producer);
                Ok(None)
            }
            Ok(Some(found)) => {
                if found > 0 {
                    tracing::info!(
                        schema = %self.schema,
                        rows = found,
                        "outbox relay found events the previous leader had published without recording it; recorded them as published instead of sending them again"
                    );
                }
                Ok(Some(producer))
            }
            Err(err) => {
                drop(producer);
                Err(err)
            }
        }
    }

    /// Records as published the unpublished rows whose records are at the end of their
    /// topics' partitions (see the module's header); how many. Best effort: a partition it
    /// cannot read is left out ([`tail::published_by`]).
    async fn read_back(&self) -> Result<u64, RelayError> {
        let rows: Vec<(i64, String, Uuid)> = sqlx::query_as(
            "SELECT seq, topic, event_id FROM outbox WHERE published_at IS NULL AND parked_at IS NULL \
             ORDER BY seq LIMIT $1",
        )
        .bind(READ_BACK_ROWS)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut topics: Vec<String> = rows
            .iter()
            .map(|(_, topic, _)| self.kafka.topics.published_name(topic))
            .filter(|name| valid_topic_name(name))
            .collect();
        topics.sort();
        topics.dedup();
        let unpublished: HashMap<i64, String> = rows
            .iter()
            .map(|(seq, _, event_id)| (*seq, event_id.to_string()))
            .collect();
        let reader = self.kafka.tail_reader()?;
        let relay = self.id.clone();
        let found = tokio::task::spawn_blocking(move || {
            let found =
                tail::published_by(&reader, &topics, &relay, &unpublished, READ_BACK_TIMEOUT);
            drop(reader);
            found
        })
        .await
        .map_err(|_| RelayError::Kafka(rdkafka::error::KafkaError::Canceled))?;
        if found.is_empty() {
            return Ok(0);
        }
        let found: Vec<i64> = found.into_iter().collect();
        let recorded = sqlx::query(
            "UPDATE outbox SET published_at = now() WHERE seq = ANY($1) AND published_at IS NULL",
        )
        .bind(&found)
        .execute(&self.pool)
        .await?;
        Ok(recorded.rows_affected())
    }

    /// Publishes up to one batch of the rows neither published nor parked, in order. Stamps
    /// the rows before the first failure; a failure the broker will repeat for ever counts an
    /// attempt of its row, and parks it at the last attempt (the round then succeeds: the rows
    /// after it go on next round). Any other failure is the round's error.
    async fn publish_batch(
        &self,
        producer: &RelayProducer,
        session: &LeaderSession,
    ) -> Result<Round, RelayError> {
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, event_id, topic, record_key, payload, headers, attempts FROM outbox \
             WHERE published_at IS NULL AND parked_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(self.batch_size)
        .fetch_all(&self.pool)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(Round::default());
        };
        // Without fencing, a leader that woke from a pause past its session must not publish
        // again: one query on the session before each round that has rows to send (an idle
        // round sends nothing, and asks nothing).
        if !producer.transactional() && !session.alive().await {
            return Err(RelayError::SessionLost);
        }
        // A row refused before goes alone: a broker refuses a whole batch of records at once,
        // and only the row's own refusal may count towards parking it. The rows before it go
        // first, in a round of their own (in a transaction, a failed round publishes none of
        // its rows, so they would otherwise go again with it, and it would never go alone).
        let rows = if first.attempts > 0 {
            &rows[..1]
        } else {
            let refused_before = rows
                .iter()
                .position(|row| row.attempts > 0)
                .unwrap_or(rows.len());
            &rows[..refused_before]
        };
        let names: Vec<String> = rows
            .iter()
            .map(|row| self.kafka.topics.published_name(&row.topic))
            .collect();
        // A transactional producer's round is one transaction: committed below, or ended by
        // the next producer's fencing when the round fails.
        if producer.transactional() {
            producer.begin()?;
        }
        // Records are handed to the producer in order; one it refuses at once (too large, an
        // invalid topic) ends the round there, so nothing after it overtakes it.
        let mut deliveries = Vec::with_capacity(rows.len());
        let mut refused = None;
        for (index, (row, name)) in rows.iter().zip(&names).enumerate() {
            if !valid_topic_name(name) {
                refused = Some(Failure {
                    index,
                    error: format!(
                        "invalid topic name {name:?}: Kafka accepts 1 to 249 of ASCII letters, \
                         digits, '.', '_' and '-'"
                    ),
                    for_good: true,
                    at_send: true,
                });
                break;
            }
            let mut headers = OwnedHeaders::new_with_capacity(row.headers.0.len() + 1);
            for (key, value) in row.headers.0.iter() {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
            let origin = tail::outbox_header(&self.id, row.seq, &row.event_id.to_string());
            headers = headers.insert(Header {
                key: OUTBOX_HEADER,
                value: Some(origin.as_bytes()),
            });
            match producer.send(name, &row.record_key, &row.payload, headers) {
                Ok(delivery) => deliveries.push(delivery),
                // The producer's queue is full: the rest waits for the next round.
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => break,
                Err(err) => {
                    refused = Some(Failure {
                        index,
                        for_good: refused_for_good(&err),
                        error: err.to_string(),
                        at_send: true,
                    });
                    break;
                }
            }
        }
        let results = futures::future::join_all(deliveries).await;
        let mut published = Vec::with_capacity(results.len());
        let mut failure = None;
        for (index, result) in results.into_iter().enumerate() {
            let error = match result {
                Ok(Ok(_)) if failure.is_none() => {
                    published.push(index);
                    continue;
                }
                Ok(Ok(_)) => continue,
                Ok(Err(err)) => Failure {
                    index,
                    for_good: refused_for_good(&err),
                    error: err.to_string(),
                    at_send: false,
                },
                Err(_canceled) => Failure {
                    index,
                    for_good: false,
                    error: "the producer went away before the delivery was reported".into(),
                    at_send: false,
                },
            };
            metrics::counter!(crate::metrics::OUTBOX_FAILURES, "topic" => names[index].clone())
                .increment(1);
            failure.get_or_insert(error);
        }
        if let Some(refused) = &refused {
            metrics::counter!(crate::metrics::OUTBOX_FAILURES, "topic" => names[refused.index].clone())
                .increment(1);
        }
        if producer.transactional() {
            if failure.is_some() {
                // A delivery failed: the transaction cannot commit, and none of the round is
                // published (the next producer's fencing aborts it).
                published.clear();
            } else if !published.is_empty() {
                // Every record handed over was delivered (those before a refusal, if any).
                producer
                    .commit(TRANSACTION_CALL_TIMEOUT)
                    .await
                    .map_err(RelayError::Commit)?;
            } else {
                // Nothing was handed over (the first record refused before sending): the
                // empty transaction is ended and the producer kept.
                producer.abort(TRANSACTION_CALL_TIMEOUT).await?;
            }
        }
        // A delivery that failed came before the record refused at once.
        let failure = failure.or(refused);
        // Only the prefix before the first failure is stamped, so order holds; without
        // transactions, anything after it that did reach the broker is sent again (at least
        // once; consumers deduplicate).
        if !published.is_empty() {
            let seqs: Vec<i64> = published.iter().map(|index| rows[*index].seq).collect();
            sqlx::query("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)")
                .bind(&seqs)
                .execute(&self.pool)
                .await?;
            for index in &published {
                metrics::counter!(crate::metrics::OUTBOX_PUBLISHED, "topic" => names[*index].clone())
                    .increment(1);
            }
        }
        let mut round = Round {
            published: published.len(),
            ..Round::default()
        };
        let Some(failure) = failure else {
            return Ok(round);
        };
        round.failed = !failure.at_send;
        let row = &rows[failure.index];
        if !failure.for_good {
            // The broker may take it later: no attempt counted, the error kept for the
            // operator.
            sqlx::query("UPDATE outbox SET last_error = $2 WHERE seq = $1")
                .bind(row.seq)
                .bind(&failure.error)
                .execute(&self.pool)
                .await?;
            return Err(RelayError::Refused {
                seq: row.seq,
                error: failure.error,
                for_good: false,
                at_send: failure.at_send,
            });
        }
        let attempts = row.attempts.saturating_add(1);
        let park = attempts >= self.max_attempts;
        sqlx::query(
            "UPDATE outbox SET attempts = $2, last_error = $3, \
             parked_at = CASE WHEN $4 THEN now() END WHERE seq = $1",
        )
        .bind(row.seq)
        .bind(attempts)
        .bind(&failure.error)
        .bind(park)
        .execute(&self.pool)
        .await?;
        if !park {
            return Err(RelayError::Refused {
                seq: row.seq,
                error: failure.error,
                for_good: true,
                at_send: failure.at_send,
            });
        }
        metrics::counter!(
            crate::metrics::OUTBOX_PARKINGS,
            "schema" => self.schema.clone(),
            "topic" => names[failure.index].clone()
        )
        .increment(1);
        tracing::error!(
            schema = %self.schema,
            seq = row.seq,
            topic = %names[failure.index],
            attempts,
            error = %failure.error,
            "outbox event parked: the broker refused it for good; the events after it go on \
             without it (`mailroom ctl events parked list`, then `retry` once it can pass)"
        );
        round.parked = 1;
        Ok(round)
    }

    async fn report_backlog(&self) {
        let counts: Result<(i64, i64), _> = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE parked_at IS NULL), \
             count(*) FILTER (WHERE parked_at IS NOT NULL) \
             FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await;
        if let Ok((waiting, parked)) = counts {
            metrics::gauge!(crate::metrics::OUTBOX_BACKLOG, "schema" => self.schema.clone())
                .set(waiting as f64);
            metrics::gauge!(crate::metrics::OUTBOX_PARKED, "schema" => self.schema.clone())
                .set(parked as f64);
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

/// What wakes the relay when it has nothing to publish: a notification from PostgreSQL when a
/// transaction writes events (the outbox's trigger), else its poll — every [`LISTENING_POLL`]
/// while it listens (a safety net for a listener that misses notifications unnoticed), every
/// second while it cannot.
///
/// The listener ([`NotifyListener`]) has a connection of its own, apart from the service's
/// pool, and is connected again after a back-off when it fails, while the relay polls; it
/// never makes the relay loop without sleeping. A notification sent while the listener was not
/// connected is lost, so the relay looks for rows once each time it begins listening (a
/// listener connected again included).
struct Wakeups(NotifyListener);

impl Wakeups {
    fn new(pool: &PgPool, schema: &str) -> Self {
        Self(NotifyListener::new(
            pool,
            format!("{schema}_outbox"),
            "outbox listener",
            "polling until it is connected again",
        ))
    }

    /// Waits for a notification (those already received count as one), for `listening`
    /// while listening or `idle` while not, or for shutdown, whichever comes first; returns at
    /// once when the listener has just connected, so the caller looks for rows written before.
    /// A listener error waits for `idle`; a lost connection returns at once, and the listener
    /// connects again at the next wait.
    async fn wait(&mut self, idle: Duration, listening: Duration, shutdown: &CancellationToken) {
        if self.0.connect().await == Connect::Began {
            // No heartbeat here: the poll every LISTENING_POLL bounds a listener that hears
            // nothing.
            self.0.working();
            return;
        }
        let Some(listener) = self.0.listener() else {
            sleep_or_cancel(idle, shutdown).await;
            return;
        };
        let received = tokio::select! {
            received = listener.try_recv() => Some(received),
            _ = tokio::time::sleep(listening) => None,
            _ = shutdown.cancelled() => None,
        };
        match received {
            Some(Ok(Some(_))) => {
                // One round publishes the rows of every notification received so far.
                while let Some(Ok(Some(_))) = futures::FutureExt::now_or_never(listener.try_recv())
                {
                }
            }
            Some(Ok(None)) => self.0.closed(),
            Some(Err(err)) => {
                self.0.failed(&err);
                sleep_or_cancel(idle, shutdown).await;
            }
            None => {}
        }
    }
}

/// How long PostgreSQL keeps a relay leader's session (and its advisory lock) when the
/// leader sends nothing: a paused or hung leader is replaced after this.
const LEADER_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a leader proves it is alive on its session (three times within
/// [`LEADER_IDLE_TIMEOUT`]); a leader that finds its session gone steps down before its next
/// round.
const LEADER_PING: Duration = Duration::from_secs(5);
/// How often a replica that does not lead tries to become the leader (and reports the
/// backlog): how long the stream may wait after a leader is gone, beyond its session's end.
const ELECTION_RETRY: Duration = Duration::from_secs(5);
/// How often an idle leader that listens for notifications looks for rows anyway (one indexed
/// SELECT per leader): a listener can miss notifications without noticing — its idle connection
/// silently dropped by a NAT or load balancer, or PostgreSQL reached through a transaction-mode
/// pooler (PgBouncer), where LISTEN does not stay on one session — and the events then wait
/// this long at most, so it is kept short.
const LISTENING_POLL: Duration = Duration::from_secs(2);
/// How often a leader reads the backlog and parked counts again: while it publishes (a
/// backlog that builds up under a slow broker), and while idle though nothing changed on its
/// side (rows changed by hand in SQL; an operator's retry wakes a round, which reads them).
const BACKLOG_REFRESH: Duration = Duration::from_secs(30);
/// The longest a leader waits between publishing attempts while the broker refuses them.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The leader's session: the connection that holds the advisory lock.
struct LeaderSession(tokio::sync::Mutex<PgConnection>);

impl LeaderSession {
    /// Whether the session (and with it the lock) is still there, asked within
    /// [`LEADER_PING`].
    async fn alive(&self) -> bool {
        let asked = async {
            let mut session = self.0.lock().await;
            sqlx::query("SELECT 1").execute(&mut *session).await
        };
        matches!(tokio::time::timeout(LEADER_PING, asked).await, Ok(Ok(_)))
    }
}

/// Keeps the leader's session busy every [`LEADER_PING`] until `leading` ends; cancels
/// `leading` when the session is gone, so the relay steps down.
async fn keep_session(session: std::sync::Arc<LeaderSession>, leading: CancellationToken) {
    loop {
        tokio::select! {
            _ = leading.cancelled() => return,
            _ = tokio::time::sleep(LEADER_PING) => {}
        }
        if !session.alive().await {
            tracing::warn!("outbox relay lost its leader session; re-electing");
            leading.cancel();
            return;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_of_the_record_itself_is_for_good() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidTopic,
            RDKafkaErrorCode::InvalidRecord,
        ] {
            assert!(
                refused_for_good(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::Fatal,
            RDKafkaErrorCode::ClusterAuthorizationFailed,
            // Every row alike: an ACL, a clock, a broker's format.
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::InvalidTimestamp,
            RDKafkaErrorCode::UnsupportedForMessageFormat,
        ] {
            assert!(
                !refused_for_good(&KafkaError::MessageProduction(code)),
                "{code:?} may pass later"
            );
        }
        assert!(!refused_for_good(&KafkaError::Canceled));
    }

    #[test]
    fn topic_names_are_checked_as_kafka_does() {
        assert!(valid_topic_name("mailroom.identity.events"));
        assert!(valid_topic_name("tests.abc_1-2"));
        assert!(valid_topic_name(&"a".repeat(249)));
        for bad in ["", ".", "..", "a b", "événements", "x/y", &"a".repeat(250)] {
            assert!(!valid_topic_name(bad), "{bad:?}");
        }
    }

    /// Against the local stack's PostgreSQL (DATABASE_URL, else the stack's server on 5432).
    #[tokio::test]
    async fn the_relay_wakes_on_a_notification_and_otherwise_rests() {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("the local stack's PostgreSQL (DATABASE_URL)");
        let schema = format!("wakeups{}", Uuid::new_v4().simple());
        let mut wakeups = Wakeups::new(&pool, &schema);
        let shutdown = CancellationToken::new();
        let (idle, rest) = (Duration::from_secs(5), Duration::from_millis(600));

        // Just listening: back at once, so the relay looks for rows written before.
        let started = Instant::now();
        wakeups.wait(idle, rest, &shutdown).await;
        assert!(wakeups.0.listener().is_some(), "the listener connected");
        assert!(started.elapsed() < Duration::from_millis(500));

        // Nothing written: it rests for the whole listening poll.
        let started = Instant::now();
        wakeups.wait(idle, rest, &shutdown).await;
        assert!(started.elapsed() >= rest, "{:?}", started.elapsed());

        // Two transactions write rows: the first notification wakes it at once, and the
        // second, already received, does not make another round.
        let channel = format!("{schema}_outbox");
        for _ in 0..2 {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(&channel)
                .execute(&pool)
                .await
                .expect("notify");
        }
        // (PostgreSQL hands notifications to the listening session a moment after.)
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        wakeups.wait(idle, rest, &shutdown).await;
        assert!(started.elapsed() < rest, "{:?}", started.elapsed());
        let started = Instant::now();
        wakeups.wait(idle, rest, &shutdown).await;
        assert!(started.elapsed() >= rest, "{:?}", started.elapsed());
    }
}
