//! Sessions: who is signed in in which browser, kept in Redis.
//!
//! The browser holds an opaque random id (cookie `mr_session`); Redis holds, under the id's
//! SHA-256 (a dump of Redis gives no usable cookie), the person's ids and their access and
//! refresh tokens sealed with the console's keys. Tokens never reach the browser. A session
//! idles out (`EXPIRE`), ends at its maximum age, ends when a service refuses its token
//! (dismissal, password change, sign-out everywhere), and refreshes its access token once at a
//! time across tabs and pods (a Redis lock): identity revokes the whole family when a refresh
//! token is used twice.

use std::time::Duration;

use base64::Engine;
use mailroom_platform::redis::{RedisError, RedisLink};
use mailroom_platform::sealed::SealingKeys;
use mailroom_proto::identity::v1 as pb;
use mailroom_types::{OrgId, UserId};
use secrecy::{ExposeSecret, SecretString};

/// A marker on a response: end the request's session and clear its cookie.
#[derive(Debug, Clone, Copy)]
pub struct EndSession;

/// A signed-in browser, as Redis keeps it.
#[derive(Clone)]
pub struct Session {
    /// The Redis key (`web:s:` + SHA-256 of the cookie).
    pub key: String,
    pub user_id: UserId,
    pub org_id: OrgId,
    /// Whether the access token says org admin (for showing things only; services decide).
    pub admin: bool,
    pub name: String,
    pub access: SecretString,
    /// Unix seconds.
    pub access_exp: i64,
    pub refresh: SecretString,
    pub refresh_exp: i64,
    pub created: i64,
    /// Cached navigation permissions and when they were asked (Unix seconds).
    pub nav: Option<(String, i64)>,
    /// The mailbox list view the mailboxes page last saw (its JSON): the page lists with it
    /// while it asks for the current one. Never trusted beyond that guess.
    pub list_view: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("org_id", &self.org_id)
            .field("access_exp", &self.access_exp)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("Redis command failed: {0}")]
    Command(#[from] redis::RedisError),
    #[error("the token identity issued cannot be read: {0}")]
    Token(String),
    #[error("sealing failed: {0}")]
    Seal(String),
    #[error("the session ended meanwhile")]
    Gone,
}

/// A held refresh lock: its key and the random value only its holder knows.
#[derive(Debug)]
pub struct RefreshLock {
    key: String,
    value: String,
}

/// The claims the console reads from an access token it got from identity itself (over its
/// own channel; every service verifies the token again on each call).
#[derive(serde::Deserialize)]
struct TokenClaims {
    sub: String,
    org: Option<uuid::Uuid>,
    #[serde(default)]
    admin: bool,
    exp: i64,
}

fn claims_of(token: &str) -> Result<TokenClaims, SessionError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| SessionError::Token("not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| SessionError::Token(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| SessionError::Token(e.to_string()))
}

fn seconds(ts: Option<&prost_types::Timestamp>) -> i64 {
    ts.map(|t| t.seconds).unwrap_or(0)
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Sessions in Redis.
#[derive(Clone)]
pub struct SessionStore {
    link: RedisLink,
    keys: std::sync::Arc<SealingKeys>,
    idle: Duration,
    max: Duration,
}

const FIELD_NAMES: [&str; 13] = [
    "user_id",
    "org_id",
    "admin",
    "name",
    "access",
    "access_exp",
    "refresh",
    "refresh_exp",
    "created",
    "nav",
    "nav_at",
    "touched",
    "view",
];

impl SessionStore {
    pub fn new(
        link: RedisLink,
        keys: std::sync::Arc<SealingKeys>,
        idle: Duration,
        max: Duration,
    ) -> Self {
        Self {
            link,
            keys,
            idle,
            max,
        }
    }

    pub fn link(&self) -> &RedisLink {
        &self.link
    }

    /// The Redis key of a session cookie.
    pub fn key_of(cookie: &str) -> String {
        format!("web:s:{}", crate::util::sha256_hex(cookie.as_bytes()))
    }

    fn seal(&self, secret: &str, key: &str) -> Result<String, SessionError> {
        let sealed = self
            .keys
            .seal(secret, key.as_bytes())
            .map_err(|e| SessionError::Seal(e.to_string()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
    }

    fn open(&self, sealed: &str, key: &str) -> Option<SecretString> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        self.keys.open(&bytes, key.as_bytes()).ok()
    }

    /// A new session for the token pair identity issued at sign-in; returns the cookie value.
    pub async fn create(
        &self,
        pair: &pb::TokenPair,
        name: &str,
    ) -> Result<(String, Session), SessionError> {
        let claims = claims_of(&pair.access_token)?;
        let user_id: UserId = claims
            .sub
            .parse()
            .map_err(|_| SessionError::Token("the subject is not a user".into()))?;
        let org_id = OrgId::from(
            claims
                .org
                .ok_or_else(|| SessionError::Token("no organisation in the token".into()))?,
        );
        let cookie = crate::util::random_token();
        let key = Self::key_of(&cookie);
        let session = Session {
            key: key.clone(),
            user_id,
            org_id,
            admin: claims.admin,
            name: name.to_owned(),
            access: SecretString::from(pair.access_token.clone()),
            access_exp: claims
                .exp
                .max(seconds(pair.access_token_expire_time.as_ref())),
            refresh: SecretString::from(pair.refresh_token.clone()),
            refresh_exp: seconds(pair.refresh_token_expire_time.as_ref()),
            created: now(),
            nav: None,
            list_view: None,
        };
        let mut conn = self.link.connection().await?;
        let ttl = self.ttl(&session);
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("user_id")
            .arg(user_id.to_string())
            .arg("org_id")
            .arg(org_id.to_string())
            .arg("admin")
            .arg(if session.admin { "1" } else { "0" })
            .arg("name")
            .arg(name)
            .arg("access")
            .arg(self.seal(session.access.expose_secret(), &key)?)
            .arg("access_exp")
            .arg(session.access_exp)
            .arg("refresh")
            .arg(self.seal(session.refresh.expose_secret(), &key)?)
            .arg("refresh_exp")
            .arg(session.refresh_exp)
            .arg("created")
            .arg(session.created)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(ttl)
            .ignore()
            .cmd("SADD")
            .arg(format!("web:u:{user_id}"))
            .arg(&key)
            .ignore()
            .cmd("EXPIRE")
            .arg(format!("web:u:{user_id}"))
            .arg(self.max.as_secs().max(1))
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok((cookie, session))
    }

    /// Seconds the session may still idle: the idle time, never past its maximum age or its
    /// refresh token's expiry.
    fn ttl(&self, session: &Session) -> i64 {
        let now = now();
        let by_max = session.created + self.max.as_secs() as i64 - now;
        let by_refresh = if session.refresh_exp > 0 {
            session.refresh_exp - now
        } else {
            i64::MAX
        };
        (self.idle.as_secs() as i64)
            .min(by_max)
            .min(by_refresh)
            .max(1)
    }

    /// The session of a cookie, if it is still alive; renews its idle time.
    pub async fn load(&self, cookie: &str) -> Result<Option<Session>, SessionError> {
        if cookie.is_empty() || cookie.len() > 128 {
            return Ok(None);
        }
        let key = Self::key_of(cookie);
        self.load_key(&key, true).await
    }

    async fn load_key(&self, key: &str, touch: bool) -> Result<Option<Session>, SessionError> {
        let mut conn = self.link.connection().await?;
        let values: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(key)
            .arg(&FIELD_NAMES[..])
            .query_async(&mut conn)
            .await?;
        let get = |i: usize| values.get(i).cloned().flatten();
        let (Some(user_id), Some(org_id), Some(access), Some(refresh)) = (
            get(0).and_then(|v| v.parse::<UserId>().ok()),
            get(1).and_then(|v| v.parse::<OrgId>().ok()),
            get(4).and_then(|v| self.open(&v, key)),
            get(6).and_then(|v| self.open(&v, key)),
        ) else {
            return Ok(None);
        };
        let number = |i: usize| get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let session = Session {
            key: key.to_owned(),
            user_id,
            org_id,
            admin: get(2).as_deref() == Some("1"),
            name: get(3).unwrap_or_default(),
            access,
            access_exp: number(5),
            refresh,
            refresh_exp: number(7),
            created: number(8),
            nav: get(9).map(|n| (n, number(10))),
            list_view: get(12),
        };
        if session.created + self.max.as_secs() as i64 <= now() {
            self.delete_key(key).await?;
            return Ok(None);
        }
        // The idle time is renewed at most once a minute, not on every request.
        if touch
            && now() - number(11).max(session.created) >= 60
            && self
                .set_fields(key, &[("touched", now().to_string())])
                .await?
        {
            let _: () = redis::cmd("EXPIRE")
                .arg(key)
                .arg(self.ttl(&session))
                .query_async(&mut conn)
                .await?;
        }
        Ok(Some(session))
    }

    /// `HSET key fields…` only while the session exists: a session deleted meanwhile (signed
    /// out, ended) is not brought back as a hash without expiry.
    async fn set_fields(&self, key: &str, fields: &[(&str, String)]) -> Result<bool, SessionError> {
        let mut conn = self.link.connection().await?;
        let script = redis::Script::new(
            "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], unpack(ARGV)) return 1 else return 0 end",
        );
        let mut invocation = script.key(key);
        for (name, value) in fields {
            invocation.arg(*name).arg(value);
        }
        let set: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(set == 1)
    }

    /// Stores a rotated token pair.
    pub async fn store_tokens(
        &self,
        session: &mut Session,
        pair: &pb::TokenPair,
    ) -> Result<(), SessionError> {
        let claims = claims_of(&pair.access_token)?;
        session.access = SecretString::from(pair.access_token.clone());
        session.access_exp = claims
            .exp
            .max(seconds(pair.access_token_expire_time.as_ref()));
        session.refresh = SecretString::from(pair.refresh_token.clone());
        session.refresh_exp = seconds(pair.refresh_token_expire_time.as_ref());
        session.admin = claims.admin;
        let fields = [
            (
                "access",
                self.seal(session.access.expose_secret(), &session.key)?,
            ),
            ("access_exp", session.access_exp.to_string()),
            (
                "refresh",
                self.seal(session.refresh.expose_secret(), &session.key)?,
            ),
            ("refresh_exp", session.refresh_exp.to_string()),
            ("admin", if session.admin { "1" } else { "0" }.to_owned()),
        ];
        if !self.set_fields(&session.key.clone(), &fields).await? {
            return Err(SessionError::Gone);
        }
        Ok(())
    }

    /// The person's name, shown in the header.
    pub async fn set_name(&self, session: &Session, name: &str) -> Result<(), SessionError> {
        self.set_fields(&session.key, &[("name", name.to_owned())])
            .await
            .map(|_| ())
    }

    /// Remembers the navigation permissions (a short code) for a minute.
    pub async fn store_nav(&self, session: &Session, nav: &str) -> Result<(), SessionError> {
        self.set_fields(
            &session.key,
            &[("nav", nav.to_owned()), ("nav_at", now().to_string())],
        )
        .await
        .map(|_| ())
    }

    /// Keeps the mailbox list view the page last saw (see [`Session::list_view`]).
    pub async fn store_list_view(&self, session: &Session, view: &str) -> Result<(), SessionError> {
        self.set_fields(&session.key, &[("view", view.to_owned())])
            .await
            .map(|_| ())
    }

    /// Ends one session.
    pub async fn delete_key(&self, key: &str) -> Result<(), SessionError> {
        let mut conn = self.link.connection().await?;
        let _: () = redis::cmd("DEL").arg(key).query_async(&mut conn).await?;
        Ok(())
    }

    /// Ends every console session of `user` (after they signed out everywhere).
    pub async fn delete_all_of(&self, user: UserId) -> Result<(), SessionError> {
        let mut conn = self.link.connection().await?;
        let index = format!("web:u:{user}");
        let keys: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut conn)
            .await?;
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("DEL").arg(key).ignore();
        }
        pipe.cmd("DEL").arg(&index).ignore();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Takes the refresh lock of a session (longer than a refresh may take); `None` when
    /// another request holds it.
    pub async fn lock_refresh(
        &self,
        session: &Session,
    ) -> Result<Option<RefreshLock>, SessionError> {
        let mut conn = self.link.connection().await?;
        let lock = RefreshLock {
            key: format!("web:r:{}", session.key),
            value: crate::util::random_token(),
        };
        let taken: Option<String> = redis::cmd("SET")
            .arg(&lock.key)
            .arg(&lock.value)
            .arg("NX")
            .arg("PX")
            .arg(10_000)
            .query_async(&mut conn)
            .await?;
        Ok(taken.map(|_| lock))
    }

    /// Releases the lock if it is still ours (it may have expired and been taken since).
    pub async fn unlock_refresh(&self, lock: &RefreshLock) -> Result<(), SessionError> {
        let mut conn = self.link.connection().await?;
        let _: i64 = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        )
        .key(&lock.key)
        .arg(&lock.value)
        .invoke_async(&mut conn)
        .await?;
        Ok(())
    }

    /// The session as Redis has it now (after waiting for a lock, say).
    pub async fn reload(&self, session: &Session) -> Result<Option<Session>, SessionError> {
        self.load_key(&session.key, false).await
    }

    /// Waits (≤ 5 s) for another request's refresh of `session`, and returns it refreshed.
    pub async fn wait_refreshed(&self, session: &Session) -> Result<Option<Session>, SessionError> {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match self.load_key(&session.key, false).await? {
                Some(fresh) if fresh.access_exp != session.access_exp => return Ok(Some(fresh)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
        Ok(None)
    }
}
