//! Redis: the shared connection, a link that connects when first used and keeps reconnecting,
//! a fixed-window rate limiter whose behaviour without Redis each call site chooses, and
//! [`Marks`], keys remembered for a while.
//!
//! Without Redis a limiter either refuses ([`WithoutRedis::FailClosed`], for unauthenticated
//! expensive calls: sign-in, password-reset requests, registration through a public link) or
//! counts in this process alone ([`WithoutRedis::FallBackLocal`], for authenticated callers and
//! internal budgets). It never lets calls through uncounted. A [`RedisLink`] made while Redis is
//! down connects on a later use (at most one attempt a second), so a start without Redis does
//! not leave the limiters off; once connected, the connection manager reconnects by itself and
//! every command has a deadline, so a Redis that hangs is an error, not a stuck call.
//!
//! Commands used by the limiter: `SET … NX PX`, `INCRBY`, `PTTL` in `MULTI` (Redis 2.6.12 and
//! later). [`connect`] refuses a server older than [`MIN_SERVER_VERSION`] (6.2: the sync
//! service's `SET … GET`).
//!
//! Every client is built by [`client`]: `rediss://` is TLS, and [`RedisTls`]
//! (`MAILROOM_REDIS_TLS__*`) adds a private CA and a client certificate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};

pub use crate::tls::RedisTls;

/// The oldest Redis server [`connect`] accepts.
pub const MIN_SERVER_VERSION: (u32, u32) = (6, 2);

/// How long one limiter command may take before it counts as Redis being unavailable.
const COMMAND_DEADLINE: Duration = Duration::from_millis(1000);
/// How long one connection attempt of a [`RedisLink`] may take.
const CONNECT_DEADLINE: Duration = Duration::from_millis(1000);
/// The least time between two connection attempts of a [`RedisLink`].
const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);
/// The most keys one limiter counts in this process while Redis is away; a new key beyond it
/// is refused until windows end (memory stays bounded whatever callers send).
const MAX_LOCAL_KEYS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("cannot connect to Redis: {0}")]
    Connect(redis::RedisError),
    #[error("Redis command failed: {0}")]
    Command(#[from] redis::RedisError),
    #[error("Redis is not connected (reconnecting)")]
    NotConnected,
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis {found} is too old: Mailroom needs {}.{} or later", MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1)]
    TooOld { found: String },
    /// The TLS settings cannot be used (a file unreadable, a certificate that does not parse).
    #[error("TLS to Redis cannot be set up: {0}")]
    Tls(String),
}

/// The client of the Redis at `url`, with `tls`'s CA and client certificate (read now) when
/// the URL is `rediss://`. The one way a Redis client is made, so that every connection gets
/// the same TLS.
pub fn client(url: &SecretString, tls: &RedisTls) -> Result<redis::Client, RedisError> {
    let url = url.expose_secret();
    if !tls.is_set() {
        return redis::Client::open(url).map_err(RedisError::Connect);
    }
    tls.validate(url)
        .map_err(|err| RedisError::Tls(err.to_string()))?;
    let files = tls.read().map_err(|err| RedisError::Tls(err.to_string()))?;
    let certificates = redis::TlsCertificates {
        client_tls: files
            .client
            .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                client_cert,
                client_key,
            }),
        root_cert: files.ca,
    };
    redis::Client::build_with_tls(url, certificates).map_err(|err| {
        RedisError::Tls(format!(
            "{err} (check MAILROOM_REDIS_TLS__CA_FILE, __CERT_FILE and __KEY_FILE hold PEM certificates and a PEM private key)"
        ))
    })
}

/// A connection that reconnects by itself; clone it freely. Fails when Redis cannot be reached
/// now, or is older than [`MIN_SERVER_VERSION`]. (A rate limiter takes a [`RedisLink`] instead,
/// which does not need Redis up at start.) TLS as the URL alone says (tests, tools); services
/// use [`connect_with_tls`] with [`PlatformConfig::redis_tls`].
///
/// [`PlatformConfig::redis_tls`]: crate::config::PlatformConfig::redis_tls
pub async fn connect(url: &SecretString) -> Result<ConnectionManager, RedisError> {
    connect_with_tls(url, &RedisTls::default()).await
}

/// [`connect`] with a private CA and a client certificate (`MAILROOM_REDIS_TLS__*`).
pub async fn connect_with_tls(
    url: &SecretString,
    tls: &RedisTls,
) -> Result<ConnectionManager, RedisError> {
    let client = client(url, tls)?;
    // Bounded like a RedisLink's: a command Redis does not answer fails after
    // COMMAND_DEADLINE, and reconnecting after Redis comes back is tried again and again
    // rather than left hanging (a chaos test saw the default manager stuck after a restart).
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_DEADLINE)
        .set_response_timeout(COMMAND_DEADLINE)
        .set_number_of_retries(1)
        .set_max_delay(250);
    let mut conn = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(RedisError::Connect)?;
    check_version(&mut conn).await?;
    Ok(conn)
}

/// Refuses a server older than [`MIN_SERVER_VERSION`]; a server that does not tell its version
/// (INFO denied by an ACL) is taken as it is.
async fn check_version(conn: &mut ConnectionManager) -> Result<(), RedisError> {
    let info: String = match redis::cmd("INFO").arg("server").query_async(conn).await {
        Ok(info) => info,
        Err(err) => {
            tracing::warn!(%err, "Redis did not tell its version (INFO server); assuming it is recent enough");
            return Ok(());
        }
    };
    match server_version(&info) {
        Some((found, major, minor)) if (major, minor) < MIN_SERVER_VERSION => {
            Err(RedisError::TooOld { found })
        }
        _ => Ok(()),
    }
}

/// `redis_version` of an `INFO server` reply, whole and as (major, minor).
fn server_version(info: &str) -> Option<(String, u32, u32)> {
    let version = info
        .lines()
        .find_map(|line| line.trim().strip_prefix("redis_version:"))?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    Some((version.to_owned(), major, minor))
}

/// Redis as a rate limiter reaches it: connected on first use rather than at start, tried again
/// at most once a second while it cannot be reached, and then kept (the connection manager
/// reconnects by itself). Clone it freely: clones share the connection.
#[derive(Clone)]
pub struct RedisLink(Arc<Link>);

struct Link {
    /// None for a link made from an open connection.
    client: Option<redis::Client>,
    manager: Mutex<Option<ConnectionManager>>,
    /// Held while connecting; holds when the next attempt may start.
    connecting: tokio::sync::Mutex<Option<Instant>>,
}

impl RedisLink {
    /// A link to the Redis at `url`, TLS as the URL alone says; nothing is dialled until it is
    /// used. Services use [`RedisLink::with_tls`].
    pub fn new(url: &SecretString) -> Result<Self, RedisError> {
        Self::with_tls(url, &RedisTls::default())
    }

    /// A link to the Redis at `url` with a private CA and a client certificate
    /// (`MAILROOM_REDIS_TLS__*`, read now); nothing is dialled until it is used.
    pub fn with_tls(url: &SecretString, tls: &RedisTls) -> Result<Self, RedisError> {
        let client = client(url, tls)?;
        Ok(Self(Arc::new(Link {
            client: Some(client),
            manager: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(None),
        })))
    }

    /// The connection, connecting first if there is none yet. Fails at once when the last
    /// attempt failed less than a second ago.
    pub async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let Some(client) = self.0.client.clone() else {
            return Err(RedisError::NotConnected);
        };
        // One call connects; the others wait for it (a burst at start is not refused).
        let Ok(mut next_attempt) =
            tokio::time::timeout(CONNECT_DEADLINE * 2, self.0.connecting.lock()).await
        else {
            return Err(RedisError::NotConnected);
        };
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        if next_attempt.is_some_and(|at| Instant::now() < at) {
            return Err(RedisError::NotConnected);
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_DEADLINE)
            .set_response_timeout(COMMAND_DEADLINE)
            .set_number_of_retries(1)
            .set_max_delay(250);
        let attempt = ConnectionManager::new_with_config(client, config);
        match tokio::time::timeout(CONNECT_DEADLINE * 2, attempt).await {
            Ok(Ok(conn)) => {
                *self.0.manager.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
                *next_attempt = None;
                tracing::info!("connected to Redis");
                Ok(conn)
            }
            Ok(Err(err)) => {
                *next_attempt = Some(Instant::now() + RECONNECT_INTERVAL);
                Err(RedisError::Connect(err))
            }
            Err(_) => {
                *next_attempt = Some(Instant::now() + RECONNECT_INTERVAL);
                Err(RedisError::Timeout(CONNECT_DEADLINE * 2))
            }
        }
    }

    fn cached(&self) -> Option<ConnectionManager> {
        self.0
            .manager
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl From<ConnectionManager> for RedisLink {
    fn from(conn: ConnectionManager) -> Self {
        Self(Arc::new(Link {
            client: None,
            manager: Mutex::new(Some(conn)),
            connecting: tokio::sync::Mutex::new(None),
        }))
    }
}

/// What a rate limiter does when Redis cannot answer: chosen by each call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutRedis {
    /// Refuse: [`RateLimiter::hit`] returns the error, which the service answers as
    /// UNAVAILABLE. For unauthenticated expensive calls, which must never run unlimited.
    FailClosed,
    /// Count in this process instead, allowing `limit` hits per key and window (Redis's limit
    /// is shared by every replica; this one is per replica, so set it to about the shared
    /// limit divided by the replicas). [`RateLimiter::hit`] never fails in this mode.
    FallBackLocal { limit: u32 },
}

/// At most `limit` hits per key in each `window`, counted in Redis across every replica.
#[derive(Clone)]
pub struct RateLimiter {
    link: RedisLink,
    prefix: &'static str,
    limit: u32,
    window: Duration,
    without_redis: WithoutRedis,
    local: Arc<LocalWindows>,
}

/// Whether a hit was let through, and if not, when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    Limited { retry_after: Duration },
}

impl RateLimiter {
    pub fn new(
        link: impl Into<RedisLink>,
        prefix: &'static str,
        limit: u32,
        window: Duration,
        without_redis: WithoutRedis,
    ) -> Self {
        Self {
            link: link.into(),
            prefix,
            limit,
            window,
            without_redis,
            local: Arc::new(LocalWindows::default()),
        }
    }

    /// Counts one hit on `key`.
    pub async fn hit(&self, key: &str) -> Result<RateDecision, RedisError> {
        self.hit_n(key, 1).await
    }

    /// Counts `n` hits on `key` at once (a batch of `n` things); refused when the window
    /// would pass its limit with them. Without Redis: an error ([`WithoutRedis::FailClosed`])
    /// or this process's own count ([`WithoutRedis::FallBackLocal`]).
    pub async fn hit_n(&self, key: &str, n: u32) -> Result<RateDecision, RedisError> {
        let err = match self.hit_redis(key, n).await {
            Ok(decision) => return Ok(decision),
            Err(err) => err,
        };
        self.local.warn_now_and_then(self.prefix, &err);
        match self.without_redis {
            WithoutRedis::FailClosed => Err(err),
            WithoutRedis::FallBackLocal { limit } => {
                Ok(self.local.hit(key, n, limit.max(1), self.window))
            }
        }
    }

    async fn hit_redis(&self, key: &str, n: u32) -> Result<RateDecision, RedisError> {
        let full_key = format!("ratelimit:{}:{}", self.prefix, key);
        let window_ms = self.window.as_millis().max(1) as u64;
        let mut conn = self.link.connection().await?;
        // SET NX PX starts the window with its expiry; INCRBY keeps it. (No `PEXPIRE … NX`,
        // which Redis 6 lacks.)
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&full_key)
            .arg(0)
            .arg("NX")
            .arg("PX")
            .arg(window_ms)
            .ignore()
            .incr(&full_key, u64::from(n))
            .cmd("PTTL")
            .arg(&full_key);
        let counted = pipe.query_async::<(u64, i64)>(&mut conn);
        let (count, ttl_ms) = tokio::time::timeout(COMMAND_DEADLINE, counted)
            .await
            .map_err(|_| RedisError::Timeout(COMMAND_DEADLINE))??;
        Ok(decide(count, u64::from(self.limit), ttl_ms, self.window))
    }
}

/// Keys remembered for a while and asked about later (`SET … PX`, `EXISTS`): for example the
/// networks an account signed in from, which its sign-in throttling treats as the owner's.
/// Without Redis both calls are errors; the caller chooses what that means.
#[derive(Clone)]
pub struct Marks {
    link: RedisLink,
    prefix: &'static str,
    ttl: Duration,
}

impl Marks {
    pub fn new(link: impl Into<RedisLink>, prefix: &'static str, ttl: Duration) -> Self {
        Self {
            link: link.into(),
            prefix,
            ttl,
        }
    }

    fn key(&self, key: &str) -> String {
        format!("mark:{}:{}", self.prefix, key)
    }

    /// Remembers `key` for the configured time from now.
    pub async fn mark(&self, key: &str) -> Result<(), RedisError> {
        let mut conn = self.link.connection().await?;
        let ttl_ms = self.ttl.as_millis().max(1) as u64;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(1).arg("PX").arg(ttl_ms);
        tokio::time::timeout(COMMAND_DEADLINE, cmd.query_async::<()>(&mut conn))
            .await
            .map_err(|_| RedisError::Timeout(COMMAND_DEADLINE))??;
        Ok(())
    }

    /// Whether `key` was marked within the configured time.
    pub async fn is_marked(&self, key: &str) -> Result<bool, RedisError> {
        let mut conn = self.link.connection().await?;
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.key(key));
        let found = tokio::time::timeout(COMMAND_DEADLINE, cmd.query_async::<u64>(&mut conn))
            .await
            .map_err(|_| RedisError::Timeout(COMMAND_DEADLINE))??;
        Ok(found > 0)
    }
}

fn decide(count: u64, limit: u64, ttl_ms: i64, window: Duration) -> RateDecision {
    if count <= limit {
        RateDecision::Allowed
    } else {
        let retry_after = if ttl_ms > 0 {
            Duration::from_millis(ttl_ms as u64)
        } else {
            window
        };
        RateDecision::Limited { retry_after }
    }
}

/// Fixed windows counted in this process, for [`WithoutRedis::FallBackLocal`].
#[derive(Default)]
struct LocalWindows {
    windows: Mutex<HashMap<String, (Instant, u64)>>,
    /// When an outage was last logged (seconds since the Unix epoch), to log it every 10 s.
    last_warned: AtomicU64,
}

impl LocalWindows {
    fn hit(&self, key: &str, n: u32, limit: u32, window: Duration) -> RateDecision {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_LOCAL_KEYS && !windows.contains_key(key) {
            windows.retain(|_, (ends, _)| *ends > now);
            if windows.len() >= MAX_LOCAL_KEYS {
                return RateDecision::Limited {
                    retry_after: window,
                };
            }
        }
        let entry = windows.entry(key.to_owned()).or_insert((now + window, 0));
        if entry.0 <= now {
            *entry = (now + window, 0);
        }
        entry.1 += u64::from(n);
        let ttl_ms = entry.0.saturating_duration_since(now).as_millis() as i64;
        decide(entry.1, u64::from(limit), ttl_ms, window)
    }

    fn warn_now_and_then(&self, prefix: &str, err: &RedisError) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_warned.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last_warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(limiter = prefix, %err, "rate limiter cannot reach Redis");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_version_is_read_from_info() {
        let info = "# Server\r\nredis_version:6.0.16\r\nredis_git_sha1:0\r\n";
        assert_eq!(server_version(info), Some(("6.0.16".into(), 6, 0)));
        assert!(server_version("# Server\r\n").is_none());
        assert!((6, 0) < MIN_SERVER_VERSION && (7, 0) >= MIN_SERVER_VERSION);
    }

    #[test]
    fn the_local_count_limits_per_key_and_window() {
        let local = LocalWindows::default();
        let window = Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(local.hit("a", 1, 3, window), RateDecision::Allowed);
        }
        assert!(matches!(
            local.hit("a", 1, 3, window),
            RateDecision::Limited { retry_after } if retry_after <= window
        ));
        assert_eq!(local.hit("b", 1, 3, window), RateDecision::Allowed);
        // A window that has ended starts again from nothing.
        let short = Duration::from_millis(1);
        assert!(matches!(
            local.hit("c", 4, 3, short),
            RateDecision::Limited { .. }
        ));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(local.hit("c", 1, 3, short), RateDecision::Allowed);
    }

    #[tokio::test]
    async fn without_redis_a_limiter_refuses_or_counts_locally_as_told() {
        // Nothing listens on port 1: every command fails.
        let url = SecretString::from("redis://127.0.0.1:1");
        let link = RedisLink::new(&url).unwrap();
        let window = Duration::from_secs(60);
        let closed = RateLimiter::new(
            link.clone(),
            "t-closed",
            100,
            window,
            WithoutRedis::FailClosed,
        );
        assert!(closed.hit("k").await.is_err());
        let local = RateLimiter::new(
            link,
            "t-local",
            100,
            window,
            WithoutRedis::FallBackLocal { limit: 2 },
        );
        assert_eq!(local.hit("k").await.unwrap(), RateDecision::Allowed);
        assert_eq!(local.hit("k").await.unwrap(), RateDecision::Allowed);
        assert!(matches!(
            local.hit("k").await.unwrap(),
            RateDecision::Limited { .. }
        ));
    }
}
