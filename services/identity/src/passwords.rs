//! Password hashing with Argon2id (the crate's defaults: 19 MiB, 2 passes), on the blocking
//! pool so a sign-in never stalls the async workers, and through one gate, [`HashingGate`]:
//! every Argon2id run of the service (sign-in and its decoy, password changes and resets,
//! activations, new users and organisations) holds one of a few permits — one per core, at
//! most [`DEFAULT_MAX_CONCURRENCY`] unless configured — so a flood of sign-ins costs a bounded
//! amount of memory and CPU, and waits in line at most a configured time before it is
//! refused as busy.
//!
//! The free functions [`hash`] and [`verify`] are the ungated primitives (benchmarks use them);
//! the service calls the gate's.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{IdentityError, Result};

pub fn hash_blocking(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IdentityError::Internal(format!("password hashing failed: {e}")))
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Hashes `password` on the blocking pool, ungated.
pub async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| IdentityError::Internal(e.to_string()))?
}

/// Whether `password` matches `hash`, on the blocking pool, ungated; a malformed stored hash
/// never matches.
pub async fn verify(password: String, hash: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || verify_blocking(&password, &hash))
        .await
        .map_err(|e| IdentityError::Internal(e.to_string()))
}

/// The most Argon2id runs at once when `password_hash_concurrency` is not set: the core
/// count a process sees is often the node's (no CPU limit), 64 on a large node, and 64 runs
/// of ~19 MiB each would not fit a 512 MiB pod. Four hold ~80 MiB.
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;

/// How many Argon2id runs a gate allows at once: `configured`, or when that is 0, one per
/// core `available`, at most [`DEFAULT_MAX_CONCURRENCY`].
pub fn concurrency(configured: usize, available: Option<usize>) -> usize {
    if configured > 0 {
        return configured;
    }
    available.unwrap_or(2).clamp(1, DEFAULT_MAX_CONCURRENCY)
}

/// The one gate every Argon2id run of the service passes: at most `concurrency` at once, the
/// others queued for at most `queue_deadline`, then refused with
/// [`IdentityError::HashingBusy`] (RESOURCE_EXHAUSTED). A permit is held until the run ends,
/// even when its caller has gone (a cancelled sign-in does not free a core it still uses).
#[derive(Clone)]
pub struct HashingGate {
    permits: Arc<Semaphore>,
    queue_deadline: Duration,
}

impl HashingGate {
    /// `concurrency` 0 means one per core the process may use, at most
    /// [`DEFAULT_MAX_CONCURRENCY`].
    pub fn new(concurrency: usize, queue_deadline: Duration) -> Self {
        let available = std::thread::available_parallelism().map(|n| n.get()).ok();
        let concurrency = self::concurrency(concurrency, available);
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            queue_deadline,
        }
    }

    async fn admit(&self) -> Result<OwnedSemaphorePermit> {
        match tokio::time::timeout(self.queue_deadline, self.permits.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(IdentityError::Internal(
                "the password hashing gate is closed".into(),
            )),
            Err(_waited_too_long) => Err(IdentityError::HashingBusy),
        }
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<String> {
        let permit = self.admit().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash_blocking(&password)
        })
        .await
        .map_err(|e| IdentityError::Internal(e.to_string()))?
    }

    /// Whether `password` matches `hash`; a malformed stored hash never matches.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool> {
        let permit = self.admit().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_blocking(&password, &hash)
        })
        .await
        .map_err(|e| IdentityError::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_hash_matches_its_password_only() {
        let hash = super::hash("correct horse".into()).await.unwrap();
        assert!(super::verify("correct horse".into(), hash.clone())
            .await
            .unwrap());
        assert!(!super::verify("wrong horse".into(), hash).await.unwrap());
        assert!(!super::verify("x".into(), "not a hash".into())
            .await
            .unwrap());
    }

    #[test]
    fn a_large_node_does_not_size_the_gate_by_its_cores() {
        // 64 cores and no CPU limit: 64 × 19 MiB would not fit a 512 MiB pod.
        assert_eq!(concurrency(0, Some(64)), DEFAULT_MAX_CONCURRENCY);
        assert_eq!(concurrency(0, Some(2)), 2);
        assert_eq!(concurrency(0, None), 2);
        // The operator's figure wins, large or small.
        assert_eq!(concurrency(16, Some(64)), 16);
        assert_eq!(concurrency(1, Some(64)), 1);
        let gate = HashingGate::new(0, Duration::from_millis(1));
        assert!(gate.permits.available_permits() <= DEFAULT_MAX_CONCURRENCY);
    }

    #[tokio::test]
    async fn the_gate_runs_a_few_at_once_and_refuses_who_waited_too_long() {
        let gate = HashingGate::new(1, Duration::from_millis(50));
        let hash = gate.hash("correct horse".into()).await.unwrap();
        assert!(gate
            .verify("correct horse".into(), hash.clone())
            .await
            .unwrap());
        // One permit, held: the next caller waits its deadline and is refused busy.
        let held = gate.admit().await.unwrap();
        let refused = gate.verify("correct horse".into(), hash.clone()).await;
        assert!(matches!(refused, Err(IdentityError::HashingBusy)));
        drop(held);
        assert!(gate.verify("correct horse".into(), hash).await.unwrap());
    }
}
