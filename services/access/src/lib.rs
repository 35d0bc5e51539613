//! Mailroom's access control: who may see, change and read which mailbox, and who may invite.
//!
//! - [`model`]: relationships, permissions and subjects, as the API names them.
//! - [`graph`]: one organisation's relationships held in memory with the indexes that make a
//!   check a few hash lookups and a walk up the department tree, and a lookup a walk down it.
//!
//! Why a purpose-built graph rather than a library (surveyed 2026-11): `cedar-policy` checks
//! quickly but its reverse queries (`query_resource`, experimental `tpe` feature) evaluate
//! every entity of the type, too slow over 200k mailboxes; `casbin` has role-level lookups
//! only and enforce time grows with the rule count; `oso`/`polar` is deprecated; the young
//! Zanzibar crates (`simple-zanzibar`, `rebacdb`, `oxify-authz`) are unproven at this size or
//! lack lookups; SpiceDB/OpenFGA clients add a network hop per check. This model is small
//! and fixed, so indexes in both directions answer checks in microseconds and lookups in time
//! proportional to their answer.
//!
//! This crate is the engine only; the gRPC service around it (persistence, revisions, events)
//! is not built yet and so is not served.

pub mod graph;
pub mod model;

pub use graph::{Explanation, OrgGraph};
pub use model::{Audience, Permission, ReadAccessGrants, Relationship, Settings};
