//! Leases in Redis: exactly one holder of a name at a time (one worker syncing a mailbox),
//! renewed while the holder works and free again when it returns it, or when it dies and
//! stops renewing (after the lease's time to live).
//!
//! A lease is `SET name holder NX PX ttl`; renewal and release check the holder first (a Lua
//! script, atomic in Redis), so a holder that lost its lease to a takeover can neither
//! extend nor delete the new holder's.
//!
//! Fencing: [`Leases::acquire`] also increments the name's generation counter in the same
//! script and returns it, so every acquisition carries a fencing token greater than any
//! before it. A lease only says who should work; the generation is what the store checks
//! before it takes a write ([`crate::store::fences`]), so a holder that lost its lease without
//! noticing (paused, late to renew, or a Redis failover that let another take it) writes
//! nothing. A counter Redis lost (a failover, a flush) starts low again: the holder lifts it
//! above the generation the store has seen ([`Leases::advance`]) while it still holds the
//! lease.
//!
//! In one process: "held by me" in Redis does not tell two runs of this process apart (a
//! replayed request and a live one for the same mailbox), so [`Leases::acquire`] also keeps
//! the names this process is working on and refuses a second acquisition until
//! [`Leases::release`]; otherwise both would run, and the first to finish would return the
//! lease the other still works under.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
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

/// Takes (or renews, if ours) the lease KEYS[1] for ARGV[1] with a TTL of ARGV[2] ms, and
/// returns the next generation from KEYS[2]; 0 when another holds the lease.
const ACQUIRE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  return 0
end
return redis.call('INCR', KEYS[2])
"#;

/// While ARGV[1] holds the lease KEYS[1]: lifts the generation counter KEYS[2] to at least
/// ARGV[2] and returns the next generation; 0 when the lease is not ARGV[1]'s.
const ADVANCE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local now = tonumber(redis.call('GET', KEYS[2]) or '0')
if now < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
end
return redis.call('INCR', KEYS[2])
"#;

/// Takes, renews and returns leases under one prefix, as one holder.
#[derive(Clone)]
pub struct Leases {
    conn: ConnectionManager,
    prefix: String,
    holder: String,
    ttl: Duration,
    /// Names acquired by this process (any clone) and not yet released.
    working: Arc<Mutex<HashSet<String>>>,
}

impl Leases {
    pub fn new(conn: ConnectionManager, prefix: &str, holder: &str, ttl: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            holder: holder.to_owned(),
            ttl: ttl.max(Duration::from_millis(100)),
            working: Arc::default(),
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

    /// The counter of `name`'s generations (no expiry: it must outlive every stored fence).
    fn generation_key(&self, name: &str) -> String {
        format!("{}-generation:{name}", self.prefix)
    }

    /// Marks `name` as worked on by this process; false when it already is.
    fn start_working(&self, name: &str) -> bool {
        self.working
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned())
    }

    fn stop_working(&self, name: &str) {
        self.working
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Whether a run of this process holds `name` now (acquired and not yet released).
    pub fn working_on(&self, name: &str) -> bool {
        self.working
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// Takes the lease on `name` if it is free (or ours from an earlier life of this holder
    /// id: renewed), and returns this acquisition's generation (the fencing token, greater
    /// than any before it); `None` when another holds it, or a run of this process does
    /// (until it calls [`Leases::release`], which every acquisition must be followed by).
    pub async fn acquire(&self, name: &str) -> redis::RedisResult<Option<i64>> {
        if !self.start_working(name) {
            return Ok(None);
        }
        let acquired = self.acquire_in_redis(name).await;
        if !matches!(acquired, Ok(Some(_))) {
            self.stop_working(name);
        }
        acquired
    }

    async fn acquire_in_redis(&self, name: &str) -> redis::RedisResult<Option<i64>> {
        let mut conn = self.conn.clone();
        let generation: i64 = redis::cmd("EVAL")
            .arg(ACQUIRE)
            .arg(2)
            .arg(self.key(name))
            .arg(self.generation_key(name))
            .arg(&self.holder)
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        Ok((generation > 0).then_some(generation))
    }

    /// A generation above `seen` (one the store has seen, which this counter fell behind:
    /// Redis lost it), while the lease on `name` is still ours; `None` when it is not.
    pub async fn advance(&self, name: &str, seen: i64) -> redis::RedisResult<Option<i64>> {
        let mut conn = self.conn.clone();
        let generation: i64 = redis::cmd("EVAL")
            .arg(ADVANCE)
            .arg(2)
            .arg(self.key(name))
            .arg(self.generation_key(name))
            .arg(&self.holder)
            .arg(seen.max(0))
            .query_async(&mut conn)
            .await?;
        Ok((generation > 0).then_some(generation))
    }

    /// Takes the lease on `name` if it is free (or already ours), without a generation (for
    /// work that writes nothing fenced, such as IDLE watches); see [`Leases::acquire`].
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

    /// Returns the lease if it is ours, and ends this process's work on `name` (even when
    /// Redis cannot be reached: the lease then expires by itself).
    pub async fn release(&self, name: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let released: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(self.key(name))
            .arg(&self.holder)
            .query_async(&mut conn)
            .await;
        self.stop_working(name);
        released.map(|_| ())
    }

    /// How long the lease on `name` has left, if it is held.
    pub async fn expires_in(&self, name: &str) -> redis::RedisResult<Option<Duration>> {
        let mut conn = self.conn.clone();
        let left: i64 = redis::cmd("PTTL")
            .arg(self.key(name))
            .query_async(&mut conn)
            .await?;
        Ok(u64::try_from(left).ok().map(Duration::from_millis))
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
