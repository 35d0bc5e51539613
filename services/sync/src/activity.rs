//! Activity signals: heartbeats from open browser tabs, the desktop app and the mobile app,
//! kept in Redis, and the tier each owner is in because of them.
//!
//! A heartbeat is one round trip (a pipeline of `SET key now GET EX ttl` and `ZADD`), cheap
//! enough for every open tab of a 100k-person company every 30 s. Only when it raises the
//! owner's tier does it touch PostgreSQL, pulling the owner's mailboxes' next sync in.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mailroom_types::UserId;
use redis::aio::ConnectionManager;

use crate::domain::{Tier, TierPolicy};

const PREFIX: &str = "mailroom:sync:activity";
/// A sorted set of every user by last-seen time, for the active-users gauges.
const SEEN: &str = "mailroom:sync:activity-seen";

#[derive(Clone)]
pub struct Activity {
    conn: ConnectionManager,
    policy: TierPolicy,
}

/// What a heartbeat changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub before: Tier,
    pub now: Tier,
}

impl Activity {
    pub fn new(conn: ConnectionManager, policy: TierPolicy) -> Self {
        Self { conn, policy }
    }

    pub fn policy(&self) -> &TierPolicy {
        &self.policy
    }

    fn key(user: &UserId) -> String {
        format!("{PREFIX}:{user}")
    }

    /// Records that `user` is here now.
    pub async fn record(&self, user: UserId, at: DateTime<Utc>) -> redis::RedisResult<Heartbeat> {
        let mut conn = self.conn.clone();
        let now_ms = at.timestamp_millis();
        let ttl = self.policy.signal_ttl().as_secs().max(1);
        let (previous, _): (Option<i64>, i64) = redis::pipe()
            .cmd("SET")
            .arg(Self::key(&user))
            .arg(now_ms)
            .arg("GET")
            .arg("EX")
            .arg(ttl)
            .cmd("ZADD")
            .arg(SEEN)
            .arg(now_ms)
            .arg(user.to_string())
            .query_async(&mut conn)
            .await?;
        Ok(Heartbeat {
            before: self.tier_at(previous, now_ms),
            now: Tier::Active,
        })
    }

    fn tier_at(&self, seen_ms: Option<i64>, now_ms: i64) -> Tier {
        self.policy.tier(seen_ms.map(|seen| {
            Duration::from_millis(u64::try_from(now_ms.saturating_sub(seen)).unwrap_or(0))
        }))
    }

    /// The tier `user` is in now.
    pub async fn tier(&self, user: UserId) -> redis::RedisResult<Tier> {
        let mut conn = self.conn.clone();
        let seen: Option<i64> = redis::cmd("GET")
            .arg(Self::key(&user))
            .query_async(&mut conn)
            .await?;
        Ok(self.tier_at(seen, Utc::now().timestamp_millis()))
    }

    /// How many users are in each tier but dormant (for the scaling gauges); forgets users
    /// whose signal has expired.
    pub async fn users_by_tier(&self) -> redis::RedisResult<Vec<(Tier, u64)>> {
        let mut conn = self.conn.clone();
        let now = Utc::now().timestamp_millis();
        let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let active_from = now - ms(self.policy.active_within_secs);
        let recent_from = now - ms(self.policy.recent_within_secs);
        let idle_from = now - ms(self.policy.idle_within_secs);
        let (_, active, recent, idle): (i64, u64, u64, u64) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(SEEN)
            .arg("-inf")
            .arg(format!("({idle_from}"))
            .cmd("ZCOUNT")
            .arg(SEEN)
            .arg(active_from)
            .arg("+inf")
            .cmd("ZCOUNT")
            .arg(SEEN)
            .arg(recent_from)
            .arg(format!("({active_from}"))
            .cmd("ZCOUNT")
            .arg(SEEN)
            .arg(idle_from)
            .arg(format!("({recent_from}"))
            .query_async(&mut conn)
            .await?;
        Ok(vec![
            (Tier::Active, active),
            (Tier::Recent, recent),
            (Tier::Idle, idle),
        ])
    }
}
