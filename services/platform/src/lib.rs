//! What every Mailroom service shares, so that each service crate holds only its own domain.
//!
//! - [`config`]: typed configuration from the environment and an optional TOML file.
//! - [`telemetry`]: JSON logs, OpenTelemetry traces, W3C trace context across gRPC and Kafka.
//! - [`metrics`]: the Prometheus endpoint.
//! - [`grpc`]: the gRPC server every service runs on (health, reflection, tower layers).
//! - [`auth`]: access-token claims, verification against a JWKS, the principal of a request.
//! - [`error`]: the one mapping from domain errors to gRPC status codes.
//! - [`db`]: the PostgreSQL pool (one schema per service) and migrations.
//! - [`outbox`], [`kafka`], [`consumer`]: events written with state, relayed to Kafka,
//!   consumed exactly once in effect.
//! - [`revocation`]: subjects whose tokens are void before a time, learnt from identity.
//! - [`sealed`]: secrets at rest (mailbox passwords) sealed with AES-256-GCM under rotatable keys.
//! - [`service_auth`]: a service's own token for calling other services.
//! - [`redis`]: the Redis connection and the rate limiter built on it.
//! - [`aip`]: AIP-160 filters and AIP-158 page tokens.
//! - [`email`]: email addresses, host names and one-line names as every service accepts them.
//! - [`text`]: canonical (NFC) text and the refusal of invisible and bidi-control characters.
//! - [`shutdown`]: SIGTERM/SIGINT into a cancellation token.
//! - [`smtp`]: the SMTP transport services send mail with.
//! - [`wire`]: protobuf timestamps to and from times.

pub mod aip;
pub mod auth;
pub mod config;
pub mod consumer;
pub mod db;
pub mod email;
pub mod error;
pub mod grpc;
pub mod kafka;
pub mod metrics;
pub mod net;
pub mod outbox;
pub mod redis;
pub mod revocation;
pub mod sealed;
pub mod service_auth;
pub mod shutdown;
pub mod smtp;
pub mod telemetry;
pub mod text;
pub mod wire;

pub use mailroom_proto as proto;
pub use mailroom_types as types;
