//! Leases in Redis: exactly one holder of a name at a time (one worker syncing a mailbox),
//! renewed while the holder works and free again when it returns it, or when it dies and
//! stops renewing (after the lease's time to live).
//!
//! A lease is `SET name holder NX PX ttl`; renewal and release check the holder first (a Lua
//! script, atomic in Redis), so a holder that lost its lease to a takeover can neither
//! extend nor delete the new holder's.

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Takes, renews and returns leases under one prefix, as one holder.
#[derive(Clone)]
pub struct Leases {
    conn: ConnectionManager,
    prefix: String,
    holder: String,
    ttl: Duration,
}

impl Leases {
    pub fn new(conn: ConnectionManager, prefix: &str, holder: &str, ttl: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            holder: holder.to_owned(),
            ttl: ttl.max(Duration::from_millis(100)),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Takes the lease on `name` if it is free (or already ours).
    pub async fn try_acquire(&self, name: &str) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let key = self.key(name);
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&self.holder)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        if set.is_some() {
            return Ok(true);
        }
        // Ours from before (a redelivered request while we still hold it): renew.
        self.renew(name).await
    }

    /// Extends our lease; false if it is no longer ours.
    pub async fn renew(&self, name: &str) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let renewed: i64 = redis::cmd("EVAL")
            .arg(RENEW)
            .arg(1)
            .arg(self.key(name))
            .arg(&self.holder)
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        Ok(renewed == 1)
    }

    /// Returns the lease if it is ours.
    pub async fn release(&self, name: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(self.key(name))
            .arg(&self.holder)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Who holds `name` now, if anyone.
    pub async fn holder_of(&self, name: &str) -> redis::RedisResult<Option<String>> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(self.key(name))
            .query_async(&mut conn)
            .await
    }

    /// Renews `name` every third of the TTL until `done` is cancelled; if the lease is lost
    /// (taken over, or Redis unreachable for longer than the TTL), cancels `lost`.
    pub async fn keep(&self, name: &str, done: CancellationToken, lost: CancellationToken) {
        let every = self.ttl / 3;
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            // A renewal that hangs (a half-open connection) counts as failed, and the TTL is
            // counted from when the last good one was sent.
            let sent = tokio::time::Instant::now();
            let renewed = match tokio::time::timeout(every, self.renew(name)).await {
                Ok(r) => r,
                Err(_) => Err(redis::RedisError::from((
                    redis::ErrorKind::IoError,
                    "lease renewal timed out",
                ))),
            };
            match renewed {
                Ok(true) => last_ok = sent,
                Ok(false) => {
                    tracing::warn!(
                        lease = name,
                        "lease lost to another holder; stopping the work"
                    );
                    lost.cancel();
                    return;
                }
                Err(err) => {
                    tracing::warn!(%err, lease = name, "lease renewal failed");
                    if last_ok.elapsed() >= self.ttl {
                        lost.cancel();
                        return;
                    }
                }
            }
        }
    }
}
