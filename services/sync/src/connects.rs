//! New IMAP connections per mail server, limited across every worker (a shared budget in
//! Redis), so a restart of thousands of syncs and IDLE watches, or a flapping server, causes
//! no storm of logins. The sync's runs and the IDLE watches draw on the same budget.
//!
//! Invariant: the limit only ever delays a connection, never drops the work: a sync over the
//! budget is planned again shortly, a watch waits. Without Redis each worker applies the
//! limit to its own connects (the outage is logged by the limiter).

use std::time::Duration;

use mailroom_platform::redis::{RateDecision, RateLimiter, WithoutRedis};
use redis::aio::ConnectionManager;

/// The shared budget of `per_sec` new connections per mail server (None when `0`). Every
/// limiter made here counts against the same budget in Redis.
pub fn limiter(redis: &ConnectionManager, per_sec: u32) -> Option<RateLimiter> {
    (per_sec > 0).then(|| {
        RateLimiter::new(
            redis.clone(),
            "sync-connects-per-server",
            per_sec,
            Duration::from_secs(1),
            // Redis away: each worker paces its own connects.
            WithoutRedis::FallBackLocal { limit: per_sec },
        )
    })
}

/// Whether a new connection to `host` (any spelling of the name) may be opened now; if not,
/// when to look again.
pub async fn connect_allowed(limiter: Option<&RateLimiter>, host: &str) -> Option<Duration> {
    let limiter = limiter?;
    match limiter.hit(&host.to_ascii_lowercase()).await {
        Ok(RateDecision::Allowed) | Err(_) => None,
        Ok(RateDecision::Limited { retry_after }) => {
            // Spread the retries over the next second or so instead of all at its start.
            Some(retry_after + Duration::from_millis(rand::random::<u64>() % 1000))
        }
    }
}
