//! Mailroom's access control: who may see, change and read which mailbox, and who may invite.
//!
//! - [`model`]: relationships, permissions and subjects, as the API names them.
//! - [`graph`]: one organisation's relationships held in memory with the indexes that make a
//!   check a few hash lookups and a walk up the department tree, and a lookup a walk down it.
//!
//! This crate is the engine only; the gRPC service around it (persistence, revisions, events)
//! is not built yet and so is not served.

pub mod graph;
pub mod model;

pub use graph::OrgGraph;
pub use model::{Permission, Relationship};
