//! All of the sync's SQL, one concern a file:
//! - [`schedule`]: every mailbox and when it is next due (the scheduler, the worker, the
//!   registry's events, heartbeats and IDLE move it);
//! - [`folders`]: each folder's checkpoint, what the index was last brought level with;
//! - [`messages`]: the message index, written in batches with their checkpoint and read a
//!   page at a time.
//!
//! Writes that belong together (a batch of messages and the checkpoint that covers it) are
//! one transaction; functions that take a connection join the caller's.

pub mod folders;
pub mod messages;
pub mod schedule;
