//! The identity service's state, and what every operation starts with: which organisation a
//! call is scoped to, whether the caller may act, and the request's ids and update mask read
//! from the wire (each once, into its type).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use mailroom_platform::auth::Principal;
use mailroom_platform::client_address::TrustedProxies;
use mailroom_platform::redis::{Marks, RateLimiter, RedisLink, WithoutRedis};
use mailroom_platform::revocation::Revocations;
use mailroom_platform::types::OrgId;
use sqlx::{PgConnection, PgPool};

use crate::config::IdentityConfig;
use crate::domain::UserState;
use crate::error::{IdentityError, Result};
use crate::keys::KeyRing;
use crate::mailer::Mailer;
use crate::passwords::HashingGate;
use crate::store;
use crate::user_cache::UserCache;

/// Everything identity's operations need; shared by both gRPC services.
pub struct Identity {
    pub(crate) pool: PgPool,
    pub(crate) keys: Arc<KeyRing>,
    pub(crate) config: IdentityConfig,
    pub(crate) mailer: Mailer,
    /// Sign-in attempts from one client network, whatever the address (`signin_limits`).
    pub(crate) login_network_limiter: RateLimiter,
    /// Sign-in attempts per address from one client network.
    pub(crate) login_limiter: RateLimiter,
    /// Sign-in attempts per address from everywhere, beyond which the account is paced.
    pub(crate) login_slowdown: RateLimiter,
    /// An account's pace past its threshold: one attempt per `login_slowdown_ms`.
    pub(crate) login_pace: RateLimiter,
    /// The networks each account signed in from lately (not paced).
    pub(crate) login_known_networks: Marks,
    /// ChangePassword attempts per user.
    pub(crate) password_change_limiter: RateLimiter,
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) code_limiter: RateLimiter,
    pub(crate) reset_limiter: RateLimiter,
    /// The one gate of every Argon2id run.
    pub(crate) hashing: HashingGate,
    /// A real hash to verify against when the address is unknown, so that a wrong address
    /// takes as long as a wrong password.
    pub(crate) decoy_hash: String,
    /// The revocations this process's verifier applies: a revocation written here is applied
    /// at once after its commit, before the event has gone round through Kafka.
    pub(crate) revocations: Revocations,
    /// GetUser's read model: users read lately, dropped when PostgreSQL says they changed.
    pub(crate) user_cache: Arc<UserCache>,
}

impl Identity {
    pub fn new(
        pool: PgPool,
        redis: RedisLink,
        keys: KeyRing,
        config: IdentityConfig,
        revocations: Revocations,
    ) -> Result<Self> {
        let mailer =
            Mailer::new(&config.smtp).map_err(|e| IdentityError::Internal(e.to_string()))?;
        // Sign-in and reset requests come without a token: without Redis they are refused,
        // never run unlimited. Login-change codes are asked for by a signed-in user: counted
        // per replica then.
        let login_network_limiter = RateLimiter::new(
            redis.clone(),
            "login-network-any",
            config.login_attempts_per_network_per_minute.max(1),
            Duration::from_secs(60),
            WithoutRedis::FailClosed,
        );
        let login_limiter = RateLimiter::new(
            redis.clone(),
            "login-network",
            config.login_attempts_per_minute.max(1),
            Duration::from_secs(60),
            WithoutRedis::FailClosed,
        );
        let login_slowdown = RateLimiter::new(
            redis.clone(),
            "login-account",
            config.login_slowdown_after_attempts.max(1),
            Duration::from_secs(15 * 60),
            WithoutRedis::FailClosed,
        );
        let login_pace = RateLimiter::new(
            redis.clone(),
            "login-account-pace",
            1,
            Duration::from_millis(config.login_slowdown_ms.max(1)),
            WithoutRedis::FailClosed,
        );
        let login_known_networks = Marks::new(
            redis.clone(),
            "login-known-network",
            Duration::from_secs(30 * 24 * 3600),
        );
        // Asked by a signed-in user: counted per replica while Redis is away.
        let password_change_limiter = RateLimiter::new(
            redis.clone(),
            "password-change",
            config.password_changes_per_hour.max(1),
            Duration::from_secs(3600),
            WithoutRedis::FallBackLocal {
                limit: config.password_changes_per_hour.max(1),
            },
        );
        let code_limiter = RateLimiter::new(
            redis.clone(),
            "login-code",
            5,
            Duration::from_secs(3600),
            WithoutRedis::FallBackLocal { limit: 5 },
        );
        let reset_limiter = RateLimiter::new(
            redis,
            "password-reset",
            config.password_resets_per_hour.max(1),
            Duration::from_secs(3600),
            WithoutRedis::FailClosed,
        );
        let trusted_proxies = TrustedProxies::parse(&config.trusted_proxies).map_err(|e| {
            IdentityError::InvalidArgument(format!("MAILROOM_IDENTITY__TRUSTED_PROXIES: {e}"))
        })?;
        trusted_proxies.announce("identity", "MAILROOM_IDENTITY__TRUSTED_PROXIES");
        let hashing = HashingGate::new(
            config.password_hash_concurrency,
            Duration::from_millis(config.password_hash_queue_ms),
        );
        let decoy_hash = crate::passwords::hash_blocking("decoy password that matches nothing")?;
        let user_cache = Arc::new(UserCache::new(config.user_cache_rows));
        Ok(Self {
            pool,
            keys: Arc::new(keys),
            config,
            mailer,
            login_network_limiter,
            login_limiter,
            login_slowdown,
            login_pace,
            login_known_networks,
            password_change_limiter,
            trusted_proxies,
            code_limiter,
            reset_limiter,
            hashing,
            decoy_hash,
            revocations,
            user_cache,
        })
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// GetUser's read model, for the listener that keeps it ([`crate::user_cache::listen`]).
    pub fn user_cache(&self) -> Arc<UserCache> {
        self.user_cache.clone()
    }
}

/// Which organisation a call acts on: a user's own, or the one a service token names.
pub fn scope(principal: &Principal, requested_org: &str) -> Result<OrgId> {
    match principal {
        Principal::User { org_id, .. } => {
            if !requested_org.is_empty() && requested_org != org_id.to_string() {
                return Err(IdentityError::NotFound {
                    what: "organisation",
                    id: requested_org.to_owned(),
                });
            }
            Ok(*org_id)
        }
        Principal::Service { .. } => parse_id("org_id", requested_org),
    }
}

/// The caller's own organisation, for calls that have no org field: a service token has none,
/// so it is refused with a message saying to call as a user.
pub fn caller_org(principal: &Principal) -> Result<OrgId> {
    match principal {
        Principal::User { org_id, .. } => Ok(*org_id),
        Principal::Service { .. } => Err(IdentityError::InvalidArgument(
            "this call acts on the caller's own organisation; call it with a user's access token"
                .into(),
        )),
    }
}

/// The id of kind `I` in the required field `field`.
pub fn parse_id<I: FromStr>(field: &'static str, value: &str) -> Result<I> {
    if value.is_empty() {
        return Err(missing(field));
    }
    value.parse().map_err(|_| {
        IdentityError::InvalidArgument(format!(
            "`{field}` is not a valid id: `{}`",
            mailroom_aip::shown(value)
        ))
    })
}

/// The id of kind `I` in the optional field `field` (empty: none).
pub fn parse_optional_id<I: FromStr>(field: &'static str, value: &str) -> Result<Option<I>> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse_id(field, value).map(Some)
    }
}

/// The message field `field`, which must be set.
pub fn required<T>(field: &'static str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| missing(field))
}

fn missing(field: &str) -> IdentityError {
    IdentityError::InvalidArgument(format!("`{field}` is required"))
}

/// The paths of an update's field mask, which must name at least one (AIP-161).
pub fn mask_paths(mask: Option<prost_types::FieldMask>) -> Result<Vec<String>> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(IdentityError::InvalidArgument(
            "`update_mask` is required: list the fields to change (AIP-161)".into(),
        ));
    }
    Ok(paths)
}

/// A mask path this update does not take, and the ones it does.
pub fn unsupported_path(path: &str, allowed: &str) -> IdentityError {
    IdentityError::InvalidArgument(format!(
        "`update_mask` path `{path}` cannot be updated here; allowed: {allowed}"
    ))
}

/// Drops the look-ahead row of a page read with `limit + 1` and returns the next page token
/// (empty on the last page).
pub fn page_after<T>(rows: &mut Vec<T>, limit: i64, token: impl Fn(&T) -> String) -> String {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(token).unwrap_or_default()
    } else {
        String::new()
    }
}

/// What a caller who is not an active admin of the organisation is told.
pub const ADMINS_ONLY: &str = "only an organisation admin may do this; ask an admin, or have one grant you admin rights (SetAdmin)";

/// Admin-only operations check the caller's current row, not just the token: an admin
/// demoted or dismissed a minute ago can no longer act. Service tokens pass.
pub async fn require_admin(
    conn: &mut PgConnection,
    principal: &Principal,
    org_id: OrgId,
) -> Result<()> {
    match principal {
        Principal::Service { .. } => Ok(()),
        Principal::User { user_id, .. } => {
            match store::users::standing(conn, org_id, *user_id).await? {
                Some((UserState::Active, true)) => Ok(()),
                _ => Err(IdentityError::PermissionDenied(ADMINS_ONLY)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use mailroom_platform::types::UserId;

    use super::*;

    #[test]
    fn ids_are_parsed_into_their_kind_with_the_field_named() {
        let id = UserId::new();
        assert_eq!(parse_id::<UserId>("id", &id.to_string()).unwrap(), id);
        let missing = parse_id::<UserId>("id", "").unwrap_err().to_string();
        assert_eq!(missing, "`id` is required");
        let bad = parse_id::<OrgId>("org_id", "nope").unwrap_err().to_string();
        assert_eq!(bad, "`org_id` is not a valid id: `nope`");
        assert_eq!(parse_optional_id::<UserId>("user_id", "").unwrap(), None);
    }
}
