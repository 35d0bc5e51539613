//! Redis: the shared connection and a fixed-window rate limiter.

use std::time::Duration;

use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("cannot connect to Redis: {0}")]
    Connect(redis::RedisError),
    #[error("Redis command failed: {0}")]
    Command(#[from] redis::RedisError),
}

/// A connection that reconnects by itself; clone it freely.
pub async fn connect(url: &SecretString) -> Result<ConnectionManager, RedisError> {
    let client = redis::Client::open(url.expose_secret()).map_err(RedisError::Connect)?;
    ConnectionManager::new(client)
        .await
        .map_err(RedisError::Connect)
}

/// At most `limit` hits per key in each `window`.
#[derive(Clone)]
pub struct RateLimiter {
    conn: ConnectionManager,
    prefix: &'static str,
    limit: u32,
    window: Duration,
}

/// Whether a hit was let through, and if not, when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    Limited { retry_after: Duration },
}

impl RateLimiter {
    pub fn new(
        conn: ConnectionManager,
        prefix: &'static str,
        limit: u32,
        window: Duration,
    ) -> Self {
        Self {
            conn,
            prefix,
            limit,
            window,
        }
    }

    /// Counts one hit on `key`.
    pub async fn hit(&self, key: &str) -> Result<RateDecision, RedisError> {
        self.hit_n(key, 1).await
    }

    /// Counts `n` hits on `key` at once (a batch of `n` things); refused when the window
    /// would pass its limit with them.
    pub async fn hit_n(&self, key: &str, n: u32) -> Result<RateDecision, RedisError> {
        let full_key = format!("ratelimit:{}:{}", self.prefix, key);
        let window_ms = self.window.as_millis().max(1) as u64;
        let mut conn = self.conn.clone();
        let (count, ttl_ms): (u64, i64) = redis::pipe()
            .atomic()
            .incr(&full_key, u64::from(n))
            .cmd("PEXPIRE")
            .arg(&full_key)
            .arg(window_ms)
            .arg("NX")
            .ignore()
            .cmd("PTTL")
            .arg(&full_key)
            .query_async(&mut conn)
            .await?;
        if count <= u64::from(self.limit) {
            Ok(RateDecision::Allowed)
        } else {
            let retry_after = Duration::from_millis(ttl_ms.max(0) as u64);
            Ok(RateDecision::Limited { retry_after })
        }
    }
}
