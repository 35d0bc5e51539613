//! The event operations API (`mailroom.ops.v1.EventOpsService`): one service's dead letters
//! and parked outbox events, for the deployment's operator.
//!
//! Every service hosts it ([`crate::hosting::Started::new`] adds it to the routes) over the
//! service's own pool, so the `dead_letters` and `outbox` it reads are that service's schema's.
//! Only the [`OPERATOR`] principal may call it: the gRPC server's auth layer refuses anyone
//! else before a handler runs ([`is_ops_method`]), and each handler checks again.
//!
//! - Dead letters are listed with what their envelope says (event id and type, organisation,
//!   aggregate) but never with their bytes, which may hold personal data; [`GetDeadLetter`]
//!   returns those for one id. A replay is a request: `replay_requested_at` is set (and
//!   `replay_error` cleared), and the consumer that set the record aside applies it and stamps
//!   `replayed_at` or `replay_error`. A discard stamps `discarded_at`: the letter is never
//!   applied, no longer holds the later records of its key, and is pruned by age.
//! - Parked events are the outbox rows the relay stopped trying (see [`crate::outbox`]); a
//!   retry clears `parked_at` and `attempts` and wakes the relay.
//!
//! [`GetDeadLetter`]: pb::event_ops_service_server::EventOpsService::get_dead_letter

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use prost::Message;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::auth::{principal, Principal, OPERATOR};
use crate::error::{db_kind, db_message, ApiError, ErrorKind};
use crate::proto::events::v1::Envelope;
use crate::proto::ops::v1 as pb;
use crate::wire::timestamp;
use pb::event_ops_service_server::{EventOpsService, EventOpsServiceServer};

/// The full name of the gRPC service, for health and reflection.
pub const SERVICE_NAME: &str = "mailroom.ops.v1.EventOpsService";

/// What every method path of the service starts with.
const METHOD_PREFIX: &str = "/mailroom.ops.v1.EventOpsService/";

/// Whether `path` is a method of the event operations API, which only the operator may call.
pub fn is_ops_method(path: &str) -> bool {
    path.starts_with(METHOD_PREFIX)
}

/// Why anyone but the operator is refused.
pub const OPERATOR_ONLY: &str = "event operations (dead letters, parked outbox events) are the \
     operator's: call with the operator's service credential (`mailroom ctl events … \
     --client-id operator --client-secret …`)";

const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 500;
/// The most ids one replay or retry may name.
const MAX_IDS: usize = 1000;
/// The longest consumer name accepted (a consumer group id).
const MAX_CONSUMER: usize = 249;

/// Why a call was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EventOpsError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{}", db_message(.0))]
    DbUnavailable(#[source] sqlx::Error),
    #[error("{}", db_message(.0))]
    Db(#[source] sqlx::Error),
}

impl ApiError for EventOpsError {
    fn kind(&self) -> ErrorKind {
        match self {
            EventOpsError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            EventOpsError::NotFound(_) => ErrorKind::NotFound,
            EventOpsError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            EventOpsError::DbUnavailable(_) => ErrorKind::Unavailable,
            EventOpsError::Db(err) => db_kind(err),
        }
    }
}

crate::service_error!(EventOpsError);

/// The event operations of one service, over its pool.
#[derive(Clone)]
pub struct EventOps {
    pool: PgPool,
    service: &'static str,
}

impl EventOps {
    /// The operations of `service` (its name, for messages) over its `pool`.
    pub fn new(pool: PgPool, service: &'static str) -> Self {
        Self { pool, service }
    }

    /// The gRPC service to add to the routes.
    pub fn into_server(self) -> EventOpsServiceServer<Self> {
        EventOpsServiceServer::new(self)
    }
}

/// Refuses anyone but the operator.
fn operator_only<T>(request: &Request<T>) -> Result<(), Status> {
    match principal(request)? {
        Principal::Service { name } if name == OPERATOR => Ok(()),
        _ => Err(Status::permission_denied(OPERATOR_ONLY)),
    }
}

/// Where a page starts: after the row with this id (or seq), in the listing it was made for.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct PageToken {
    /// The listing: `dead_letters` or `parked`.
    l: String,
    /// The dead letters' consumer filter.
    #[serde(default)]
    c: String,
    /// Whether applied dead letters are shown.
    #[serde(default)]
    r: bool,
    /// The last id (or seq) of the page before.
    a: i64,
}

impl PageToken {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The position in `listing` a token names (0, the start, for an empty token).
    fn decode(token: &str, listing: &PageToken) -> Result<i64, EventOpsError> {
        if token.is_empty() {
            return Ok(0);
        }
        let decoded: PageToken = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| {
                EventOpsError::InvalidArgument(
                    "page_token is not one this API gave; pass the next_page_token of the \
                     previous page as it is, or none for the first page"
                        .into(),
                )
            })?;
        if decoded.l != listing.l || decoded.c != listing.c || decoded.r != listing.r {
            return Err(EventOpsError::InvalidArgument(
                "page_token belongs to another listing (the consumer or include_replayed \
                 changed); list again from the first page without page_token"
                    .into(),
            ));
        }
        Ok(decoded.a)
    }
}

fn page_size(requested: i32) -> Result<i64, EventOpsError> {
    match requested {
        n if n < 0 => Err(EventOpsError::InvalidArgument(format!(
            "page_size must be 0 (the default, {DEFAULT_PAGE_SIZE}) or positive (at most \
             {MAX_PAGE_SIZE})"
        ))),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

/// A caller's text, shortened and escaped for a message.
fn shown(text: &str) -> String {
    let short: String = text.chars().take(80).collect();
    format!("{short:?}")
}

fn valid_consumer(consumer: &str) -> Result<(), EventOpsError> {
    if consumer.len() > MAX_CONSUMER || consumer.chars().any(char::is_control) {
        return Err(EventOpsError::InvalidArgument(format!(
            "consumer {} is no consumer group name (at most {MAX_CONSUMER} bytes, no control \
             characters); ListDeadLetters shows each dead letter's consumer",
            shown(consumer)
        )));
    }
    Ok(())
}

/// Ids from a request, each once, in order; refused when there are none (`what` names the
/// field) or too many.
fn unique_ids(ids: &[i64], what: &str) -> Result<Vec<i64>, EventOpsError> {
    if ids.len() > MAX_IDS {
        return Err(EventOpsError::InvalidArgument(format!(
            "{what} names {} ids; give at most {MAX_IDS} per call",
            ids.len()
        )));
    }
    Ok(ids
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect())
}

fn listed(ids: &[i64]) -> String {
    let shown: Vec<String> = ids.iter().take(20).map(i64::to_string).collect();
    let more = ids.len().saturating_sub(20);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[derive(sqlx::FromRow)]
struct DeadLetterRow {
    id: i64,
    consumer: String,
    topic: String,
    partition: i32,
    offset: i64,
    record_key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    error: String,
    received_at: DateTime<Utc>,
    replay_requested_at: Option<DateTime<Utc>>,
    replayed_at: Option<DateTime<Utc>>,
    replay_error: Option<String>,
    held_behind: Option<i64>,
    discarded_at: Option<DateTime<Utc>>,
}

impl DeadLetterRow {
    /// The dead letter as the API shows it; its key and payload only `with_bytes`.
    fn into_proto(self, with_bytes: bool) -> pb::DeadLetter {
        let state = if self.replayed_at.is_some() {
            pb::ReplayState::Replayed
        } else if self.discarded_at.is_some() {
            pb::ReplayState::Discarded
        } else if self.replay_requested_at.is_some() {
            pb::ReplayState::Requested
        } else if self.replay_error.is_some() {
            pb::ReplayState::Failed
        } else {
            pb::ReplayState::NotRequested
        };
        let envelope = self
            .payload
            .as_deref()
            .and_then(|bytes| Envelope::decode(bytes).ok())
            .unwrap_or_default();
        let payload_size = self.payload.as_ref().map_or(0, |p| p.len() as i64);
        pb::DeadLetter {
            id: self.id,
            consumer: self.consumer,
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            event_id: envelope.id,
            event_type: envelope.r#type,
            org_id: envelope.org_id,
            aggregate_id: envelope.aggregate_id,
            error: self.error,
            receive_time: Some(timestamp(self.received_at)),
            replay_state: state as i32,
            replay_request_time: self.replay_requested_at.map(timestamp),
            replay_time: self.replayed_at.map(timestamp),
            replay_error: self.replay_error.unwrap_or_default(),
            payload_size,
            record_key: if with_bytes {
                self.record_key.unwrap_or_default()
            } else {
                Vec::new()
            },
            payload: if with_bytes {
                self.payload.unwrap_or_default()
            } else {
                Vec::new()
            },
            held_behind: self.held_behind.unwrap_or_default(),
            discard_time: self.discarded_at.map(timestamp),
        }
    }
}

const DEAD_LETTER_COLUMNS: &str = "id, consumer, topic, partition, \"offset\", record_key, \
     payload, error, received_at, replay_requested_at, replayed_at, replay_error, held_behind, \
     discarded_at";

#[derive(sqlx::FromRow)]
struct ParkedRow {
    seq: i64,
    event_id: uuid::Uuid,
    event_type: Option<String>,
    topic: String,
    record_key: String,
    payload_size: i64,
    attempts: i32,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    parked_at: Option<DateTime<Utc>>,
}

impl From<ParkedRow> for pb::ParkedEvent {
    fn from(row: ParkedRow) -> Self {
        pb::ParkedEvent {
            seq: row.seq,
            event_id: row.event_id.to_string(),
            event_type: row.event_type.unwrap_or_default(),
            topic: row.topic,
            record_key: row.record_key,
            payload_size: row.payload_size,
            attempts: row.attempts,
            last_error: row.last_error.unwrap_or_default(),
            create_time: Some(timestamp(row.created_at)),
            park_time: row.parked_at.map(timestamp),
        }
    }
}

impl EventOps {
    async fn list_dead_letters(
        &self,
        req: pb::ListDeadLettersRequest,
    ) -> Result<pb::ListDeadLettersResponse, EventOpsError> {
        valid_consumer(&req.consumer)?;
        let size = page_size(req.page_size)?;
        let mut listing = PageToken {
            l: "dead_letters".into(),
            c: req.consumer.clone(),
            r: req.include_replayed,
            a: 0,
        };
        let after = PageToken::decode(&req.page_token, &listing)?;
        let mut rows: Vec<DeadLetterRow> = sqlx::query_as(&format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters \
             WHERE ($1 = '' OR consumer = $1) AND ($2 OR replayed_at IS NULL) AND id > $3 \
             ORDER BY id LIMIT $4"
        ))
        .bind(&req.consumer)
        .bind(req.include_replayed)
        .bind(after)
        .bind(size + 1)
        .fetch_all(&self.pool)
        .await?;
        let next_page_token = if rows.len() as i64 > size {
            rows.truncate(size as usize);
            listing.a = rows.last().map_or(after, |r| r.id);
            listing.encode()
        } else {
            String::new()
        };
        Ok(pb::ListDeadLettersResponse {
            dead_letters: rows.into_iter().map(|r| r.into_proto(false)).collect(),
            next_page_token,
        })
    }

    async fn get_dead_letter(&self, id: i64) -> Result<pb::DeadLetter, EventOpsError> {
        let row: Option<DeadLetterRow> = sqlx::query_as(&format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.into_proto(true)).ok_or_else(|| {
            EventOpsError::NotFound(format!(
                "the {} service has no dead letter {id}; ListDeadLetters shows its dead letters",
                self.service
            ))
        })
    }

    async fn replay_dead_letters(
        &self,
        req: pb::ReplayDeadLettersRequest,
    ) -> Result<Vec<i64>, EventOpsError> {
        let ids = unique_ids(&req.ids, "ids")?;
        valid_consumer(&req.consumer)?;
        match (ids.is_empty(), req.consumer.is_empty()) {
            (true, true) | (false, false) => Err(EventOpsError::InvalidArgument(
                "give either the ids of the dead letters to replay (ids), or a consumer to \
                 replay every one of its dead letters not applied yet (consumer), not both"
                    .into(),
            )),
            (false, true) => self.replay_ids(&ids, req.force).await,
            (true, false) => self.replay_consumer(&req.consumer, req.force).await,
        }
    }

    /// Locks dead letters `ids`; refuses an unknown one or one already applied.
    async fn applicable(
        &self,
        tx: &mut sqlx::PgConnection,
        ids: &[i64],
    ) -> Result<Vec<(i64, bool, bool)>, EventOpsError> {
        let found: Vec<(i64, bool, bool)> = sqlx::query_as(
            "SELECT id, replayed_at IS NOT NULL, discarded_at IS NOT NULL FROM dead_letters \
             WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        let missing: Vec<i64> = ids
            .iter()
            .filter(|id| !found.iter().any(|(f, _, _)| f == *id))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(EventOpsError::NotFound(format!(
                "the {} service has no dead letter {}; ListDeadLetters shows its dead letters",
                self.service,
                listed(&missing)
            )));
        }
        let applied: Vec<i64> = found
            .iter()
            .filter(|(_, applied, _)| *applied)
            .map(|(id, _, _)| *id)
            .collect();
        if !applied.is_empty() {
            return Err(EventOpsError::FailedPrecondition(format!(
                "dead letter {} of the {} service was already applied on replay (leave it out)",
                listed(&applied),
                self.service
            )));
        }
        Ok(found)
    }

    /// Discards dead letters `ids`: never to be applied; the records of their keys held
    /// behind them go on.
    async fn discard_ids(&self, ids: &[i64]) -> Result<Vec<i64>, EventOpsError> {
        let mut tx = self.pool.begin().await?;
        self.applicable(&mut tx, ids).await?;
        let discarded: Vec<i64> = sqlx::query_scalar(
            "UPDATE dead_letters SET discarded_at = COALESCE(discarded_at, now()), \
             replay_requested_at = NULL WHERE id = ANY($1) RETURNING id",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(sorted(discarded))
    }

    async fn replay_ids(&self, ids: &[i64], force: bool) -> Result<Vec<i64>, EventOpsError> {
        let mut tx = self.pool.begin().await?;
        let discarded: Vec<i64> = self
            .applicable(&mut tx, ids)
            .await?
            .iter()
            .filter(|(_, _, discarded)| *discarded)
            .map(|(id, _, _)| *id)
            .collect();
        if !discarded.is_empty() {
            return Err(EventOpsError::FailedPrecondition(format!(
                "dead letter {} of the {} service was discarded; it is not applied any more \
                 (leave it out)",
                listed(&discarded),
                self.service
            )));
        }
        let marked: Vec<i64> = sqlx::query_scalar(
            "UPDATE dead_letters SET replay_requested_at = now(), replay_error = NULL, \
             replay_forced = $2 WHERE id = ANY($1) RETURNING id",
        )
        .bind(ids)
        .bind(force)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(sorted(marked))
    }

    async fn replay_consumer(
        &self,
        consumer: &str,
        force: bool,
    ) -> Result<Vec<i64>, EventOpsError> {
        let marked: Vec<i64> = sqlx::query_scalar(
            "UPDATE dead_letters SET replay_requested_at = now(), replay_error = NULL, \
             replay_forced = $2 \
             WHERE consumer = $1 AND replayed_at IS NULL AND discarded_at IS NULL RETURNING id",
        )
        .bind(consumer)
        .bind(force)
        .fetch_all(&self.pool)
        .await?;
        if marked.is_empty() {
            let known: Vec<String> =
                sqlx::query_scalar("SELECT DISTINCT consumer FROM dead_letters ORDER BY 1")
                    .fetch_all(&self.pool)
                    .await?;
            if !known.iter().any(|k| k == consumer) {
                let known = if known.is_empty() {
                    "it has none".to_owned()
                } else {
                    format!("consumers with dead letters: {}", known.join(", "))
                };
                return Err(EventOpsError::NotFound(format!(
                    "the {} service has no dead letters of consumer {} ({known})",
                    self.service,
                    shown(consumer)
                )));
            }
        }
        Ok(sorted(marked))
    }

    async fn list_parked(
        &self,
        req: pb::ListParkedEventsRequest,
    ) -> Result<pb::ListParkedEventsResponse, EventOpsError> {
        let size = page_size(req.page_size)?;
        let mut listing = PageToken {
            l: "parked".into(),
            c: String::new(),
            r: false,
            a: 0,
        };
        let after = PageToken::decode(&req.page_token, &listing)?;
        let mut rows: Vec<ParkedRow> = sqlx::query_as(
            "SELECT seq, event_id, headers->>'event-type' AS event_type, topic, record_key, \
             octet_length(payload)::bigint AS payload_size, attempts, last_error, created_at, \
             parked_at FROM outbox \
             WHERE parked_at IS NOT NULL AND published_at IS NULL AND seq > $1 \
             ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(size + 1)
        .fetch_all(&self.pool)
        .await?;
        let next_page_token = if rows.len() as i64 > size {
            rows.truncate(size as usize);
            listing.a = rows.last().map_or(after, |r| r.seq);
            listing.encode()
        } else {
            String::new()
        };
        Ok(pb::ListParkedEventsResponse {
            parked_events: rows.into_iter().map(Into::into).collect(),
            next_page_token,
        })
    }

    async fn retry_parked(
        &self,
        req: pb::RetryParkedEventsRequest,
    ) -> Result<Vec<i64>, EventOpsError> {
        let seqs = unique_ids(&req.seqs, "seqs")?;
        // Exactly one of the two: seqs, or all.
        if seqs.is_empty() != req.all {
            return Err(EventOpsError::InvalidArgument(
                "give either the seqs of the parked events to retry (seqs), or all = true to \
                 retry every parked event, not both"
                    .into(),
            ));
        }
        let mut tx = self.pool.begin().await?;
        if !req.all {
            let found: Vec<(i64, bool)> = sqlx::query_as(
                "SELECT seq, parked_at IS NOT NULL AND published_at IS NULL FROM outbox \
                 WHERE seq = ANY($1) ORDER BY seq FOR UPDATE",
            )
            .bind(&seqs)
            .fetch_all(&mut *tx)
            .await?;
            let missing: Vec<i64> = seqs
                .iter()
                .filter(|s| !found.iter().any(|(f, _)| f == *s))
                .copied()
                .collect();
            if !missing.is_empty() {
                return Err(EventOpsError::NotFound(format!(
                    "the {} service's outbox has no event {} (published events are removed \
                     after a week); ListParkedEvents shows the parked ones",
                    self.service,
                    listed(&missing)
                )));
            }
            let not_parked: Vec<i64> = found
                .iter()
                .filter(|(_, parked)| !*parked)
                .map(|(s, _)| *s)
                .collect();
            if !not_parked.is_empty() {
                return Err(EventOpsError::FailedPrecondition(format!(
                    "outbox event {} of the {} service is not parked (published, or waiting \
                     for the relay already); leave it out",
                    listed(&not_parked),
                    self.service
                )));
            }
        }
        let retried: Vec<i64> = sqlx::query_scalar(
            "UPDATE outbox SET parked_at = NULL, attempts = 0 \
             WHERE parked_at IS NOT NULL AND published_at IS NULL AND ($1 OR seq = ANY($2)) \
             RETURNING seq",
        )
        .bind(req.all)
        .bind(&seqs)
        .fetch_all(&mut *tx)
        .await?;
        if !retried.is_empty() {
            // Wakes the relay, as a new event does (the channel is the schema's).
            sqlx::query("SELECT pg_notify(current_schema() || '_outbox', '')")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(sorted(retried))
    }
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl EventOpsService for EventOps {
    #[tracing::instrument(skip_all, fields(service = self.service, consumer = %shown(&request.get_ref().consumer)))]
    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Reply<pb::ListDeadLettersResponse> {
        operator_only(&request)?;
        Ok(Response::new(
            EventOps::list_dead_letters(self, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(service = self.service, id = request.get_ref().id))]
    async fn get_dead_letter(
        &self,
        request: Request<pb::GetDeadLetterRequest>,
    ) -> Reply<pb::DeadLetter> {
        operator_only(&request)?;
        let id = request.into_inner().id;
        tracing::info!(id, "the operator read a dead letter's payload");
        Ok(Response::new(EventOps::get_dead_letter(self, id).await?))
    }

    #[tracing::instrument(skip_all, fields(service = self.service, ids = request.get_ref().ids.len(), consumer = %shown(&request.get_ref().consumer)))]
    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Reply<pb::ReplayDeadLettersResponse> {
        operator_only(&request)?;
        let ids = EventOps::replay_dead_letters(self, request.into_inner()).await?;
        tracing::info!(
            marked = ids.len(),
            "the operator asked for dead letters to be replayed"
        );
        Ok(Response::new(pb::ReplayDeadLettersResponse { ids }))
    }

    #[tracing::instrument(skip_all, fields(service = self.service, ids = request.get_ref().ids.len()))]
    async fn discard_dead_letters(
        &self,
        request: Request<pb::DiscardDeadLettersRequest>,
    ) -> Reply<pb::DiscardDeadLettersResponse> {
        operator_only(&request)?;
        let ids = unique_ids(&request.get_ref().ids, "ids")?;
        if ids.is_empty() {
            return Err(EventOpsError::InvalidArgument(
                "give the ids of the dead letters to discard (ids)".into(),
            )
            .into());
        }
        let ids = self.discard_ids(&ids).await?;
        tracing::warn!(ids = ?ids, "the operator discarded dead letters: they will never be applied");
        Ok(Response::new(pb::DiscardDeadLettersResponse { ids }))
    }

    #[tracing::instrument(skip_all, fields(service = self.service))]
    async fn list_parked_events(
        &self,
        request: Request<pb::ListParkedEventsRequest>,
    ) -> Reply<pb::ListParkedEventsResponse> {
        operator_only(&request)?;
        Ok(Response::new(
            EventOps::list_parked(self, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(service = self.service, seqs = request.get_ref().seqs.len(), all = request.get_ref().all))]
    async fn retry_parked_events(
        &self,
        request: Request<pb::RetryParkedEventsRequest>,
    ) -> Reply<pb::RetryParkedEventsResponse> {
        operator_only(&request)?;
        let seqs = EventOps::retry_parked(self, request.into_inner()).await?;
        tracing::info!(retried = seqs.len(), "the operator un-parked outbox events");
        Ok(Response::new(pb::RetryParkedEventsResponse { seqs }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_is_good_only_for_its_listing() {
        let listing = |consumer: &str, replayed: bool| PageToken {
            l: "dead_letters".into(),
            c: consumer.into(),
            r: replayed,
            a: 0,
        };
        let mut token = listing("mailroom-access", false);
        token.a = 42;
        let encoded = token.encode();
        assert_eq!(
            PageToken::decode(&encoded, &listing("mailroom-access", false)).unwrap(),
            42
        );
        assert_eq!(PageToken::decode("", &listing("x", true)).unwrap(), 0);
        for other in [
            listing("mailroom-sync", false),
            listing("mailroom-access", true),
        ] {
            let err = PageToken::decode(&encoded, &other).unwrap_err();
            assert!(err.to_string().contains("another listing"), "{err}");
        }
        let err = PageToken::decode("not a token!", &listing("", false)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn ids_are_taken_once_each_and_bounded() {
        assert_eq!(unique_ids(&[3, 1, 3, 2], "ids").unwrap(), vec![1, 2, 3]);
        let many: Vec<i64> = (0..=MAX_IDS as i64).collect();
        let err = unique_ids(&many, "ids").unwrap_err();
        assert!(err.to_string().contains("at most 1000"), "{err}");
        assert_eq!(listed(&[1, 2]), "1, 2");
        let long: Vec<i64> = (1..=25).collect();
        assert!(listed(&long).ends_with("and 5 more"));
    }

    #[test]
    fn only_ops_paths_are_ops_methods() {
        assert!(is_ops_method(
            "/mailroom.ops.v1.EventOpsService/ListDeadLetters"
        ));
        assert!(!is_ops_method(
            "/mailroom.identity.v1.IdentityService/GetUser"
        ));
        assert!(!is_ops_method("/mailroom.ops.v1.EventOpsServiceX/List"));
    }
}
