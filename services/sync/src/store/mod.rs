//! All of the sync's SQL, one concern a file:
//! - [`schedule`]: every mailbox and when it is next due (the scheduler, the worker, the
//!   registry's events, heartbeats and IDLE move it);
//! - [`folders`]: each folder's checkpoint, what the index was last brought level with;
//! - [`messages`]: the message index, written in batches with their checkpoint and read a
//!   page at a time;
//! - [`fences`]: which holder of a mailbox's lease may write it (the fencing token).
//!
//! Writes that belong together (a batch of messages, the checkpoint that covers it and its
//! events for the feed) are one transaction; functions that take a connection join the
//! caller's. A sync writes a mailbox only in transactions begun by [`fences::begin`].

pub mod fences;
pub mod folders;
pub mod messages;
pub mod schedule;
