//! What every Mailroom service shares, so that each service crate holds only its own domain.
//!
//! - [`config`]: typed configuration from the environment and an optional TOML file.
//! - [`telemetry`]: JSON logs, OpenTelemetry traces, W3C trace context across gRPC and Kafka.
//! - [`metrics`]: the Prometheus endpoint.
//! - [`grpc`]: the gRPC server every service runs on (health, reflection, tower layers).
//! - [`grpc_tls`]: TLS and mutual TLS on the gRPC port and towards peers.
//! - [`hosting`]: what a service's `start` hands its host — routes, verifier, relay,
//!   consumers and workers — and the one way that runs until shutdown.
//! - [`auth`]: access-token claims, verification against a JWKS, the principal of a request.
//! - [`client_address`]: who the client of a call is (TCP peer, or `x-forwarded-for` behind
//!   trusted proxies) and the network it counts under, for per-network limits.
//! - [`error`]: the one mapping from domain errors to gRPC status codes.
//! - [`db`]: the PostgreSQL pool (one schema per service) and migrations; [`pool_metrics`]:
//!   its connections in use, as gauges; [`schema`]: whether a schema is one this binary can
//!   run on (expand/contract) when it does not migrate at start.
//! - [`notify_listener`]: a PostgreSQL `LISTEN` on a connection of its own, connected again
//!   after a back-off (the outbox relay's wake-ups, identity's read model).
//! - [`readiness`]: whether the hosted services are ready (database, broker, revocations,
//!   draining), for gRPC health and `/readyz`.
//! - [`outbox`], [`kafka`], [`consumer`]: events written with state, relayed to Kafka,
//!   consumed exactly once in effect.
//! - [`event_ops`]: the operator's API over a service's dead letters and parked outbox events,
//!   hosted by every service.
//! - [`revocation`]: subjects whose tokens are void before a time, learnt from identity.
//! - [`sealed`]: secrets at rest (mailbox passwords) sealed with AES-256-GCM under rotatable keys.
//! - [`redis`]: the Redis connection and the rate limiter built on it.
//! - [`email`]: email addresses, host names and one-line names as every service accepts them.
//! - [`text`]: canonical (NFC) text and the refusal of invisible and bidi-control characters.
//! - [`tls`]: TLS to PostgreSQL and Redis (CA, client certificate) beyond their URLs.
//! - [`shutdown`]: SIGTERM/SIGINT into a cancellation token.
//! - [`wire`]: protobuf timestamps to and from times.
//!
//! Mail protocols — where mail servers may be dialled, TLS, IMAP, the SMTP check and the SMTP
//! sender — are the `mailroom-mail` crate's.
//!
//! Calling another service (channels, the service credential, a peer's errors) is the
//! `mailroom-clients` crate's.

pub mod auth;
pub mod client_address;
pub mod config;
pub mod consumer;
pub mod db;
pub mod email;
pub mod error;
pub mod event_ops;
pub mod grpc;
pub mod grpc_tls;
pub mod hosting;
pub mod kafka;
pub mod metrics;
pub mod notify_listener;
pub mod outbox;
pub mod pool_metrics;
pub mod port;
pub mod readiness;
pub mod redis;
pub mod revocation;
pub mod schema;
pub mod sealed;
pub mod shutdown;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod wire;

pub use mailroom_proto as proto;
pub use mailroom_types as types;
