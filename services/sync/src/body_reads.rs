//! GetMessageBody's bounds: each call logs in to the mail server, so a person may have only a
//! few under way at once (in this process) and make only so many a minute (across replicas,
//! in Redis), and each login draws on the per-server connection budget the workers share
//! ([`crate::connects`]). Beyond a bound the call is RESOURCE_EXHAUSTED with when to retry:
//! 200 calls in 10 s make a few logins, not 200.
//!
//! Invariant: a [`BodyRead`] is held for the whole call (login, fetch, logout) and gives its
//! place back when dropped, however the call ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailroom_platform::redis::{RateDecision, RateLimiter};
use mailroom_types::UserId;

use crate::connects::connect_allowed;
use crate::error::SyncError;

/// The bounds, shared by every call of a process.
#[derive(Clone)]
pub struct BodyReads {
    /// Calls per person per minute (None: not limited).
    per_minute: Option<RateLimiter>,
    at_once: usize,
    running: Arc<Mutex<HashMap<UserId, usize>>>,
    /// New connections per mail server, shared with the workers.
    connects: Option<RateLimiter>,
}

impl BodyReads {
    pub fn new(
        per_minute: Option<RateLimiter>,
        at_once: usize,
        connects: Option<RateLimiter>,
    ) -> Self {
        Self {
            per_minute,
            at_once: at_once.max(1),
            running: Arc::default(),
            connects,
        }
    }

    /// A place for one call of `user` to `host`, or RESOURCE_EXHAUSTED saying when to retry.
    pub async fn admit(&self, user: UserId, host: &str) -> Result<BodyRead, SyncError> {
        let read = self.enter(user)?;
        if let Some(limiter) = &self.per_minute {
            match limiter.hit(&user.to_string()).await {
                Ok(RateDecision::Allowed) => {}
                Ok(RateDecision::Limited { retry_after }) => {
                    return Err(exhausted(
                        "you have read too many message bodies this minute",
                        retry_after,
                    ))
                }
                Err(err) => return Err(SyncError::Redis(err.to_string())),
            }
        }
        if let Some(wait) = connect_allowed(self.connects.as_ref(), host).await {
            return Err(exhausted(
                "the mailbox's mail server is being connected to too often",
                wait,
            ));
        }
        Ok(read)
    }

    fn enter(&self, user: UserId) -> Result<BodyRead, SyncError> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let count = running.entry(user).or_insert(0);
        if *count >= self.at_once {
            return Err(exhausted(
                &format!(
                    "you already have {} message bodies being read (the most at once)",
                    self.at_once
                ),
                Duration::from_secs(1),
            ));
        }
        *count += 1;
        Ok(BodyRead {
            user,
            running: self.running.clone(),
        })
    }
}

/// One call's place; given back when dropped.
pub struct BodyRead {
    user: UserId,
    running: Arc<Mutex<HashMap<UserId, usize>>>,
}

impl Drop for BodyRead {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = running.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                running.remove(&self.user);
            }
        }
    }
}

fn exhausted(what: &str, retry_after: Duration) -> SyncError {
    SyncError::ResourceExhausted(format!(
        "{what}; retry in {} s",
        retry_after.as_secs().max(1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_person_has_only_so_many_reads_at_once_and_gets_them_back() {
        let reads = BodyReads::new(None, 2, None);
        let ann = UserId::new();
        let bob = UserId::new();
        let first = reads.admit(ann, "imap.example.com").await.unwrap();
        let _second = reads.admit(ann, "imap.example.com").await.unwrap();
        let err = reads.admit(ann, "imap.example.com").await.err().unwrap();
        assert!(
            matches!(&err, SyncError::ResourceExhausted(m) if m.contains("retry in")),
            "{err:?}"
        );
        // Someone else is not held up.
        let _bobs = reads.admit(bob, "imap.example.com").await.unwrap();
        drop(first);
        let _third = reads.admit(ann, "imap.example.com").await.unwrap();
        drop(_third);
        drop(_second);
        assert!(!reads.running.lock().unwrap().contains_key(&ann));
    }
}
