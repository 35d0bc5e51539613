//! The identity service's state and the checks every operation starts with: which
//! organisation a call is scoped to, and whether the caller may act.

use std::sync::Arc;
use std::time::Duration;

use mailroom_platform::auth::Principal;
use mailroom_platform::kafka::{IDENTITY_EVENTS, REVOCATIONS};
use mailroom_platform::outbox::{self, EventActor};
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::redis::RateLimiter;
use mailroom_platform::revocation::Revocations;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::config::IdentityConfig;
use crate::domain::UserState;
use crate::error::{IdentityError, Result};
use crate::keys::KeyRing;
use crate::mailer::Mailer;
use crate::store::{self, DepartmentRow, UserRow};

/// Everything identity's operations need; shared by both gRPC services.
pub struct Identity {
    pub(crate) pool: PgPool,
    pub(crate) keys: Arc<KeyRing>,
    pub(crate) config: IdentityConfig,
    pub(crate) mailer: Mailer,
    pub(crate) login_limiter: RateLimiter,
    pub(crate) code_limiter: RateLimiter,
    pub(crate) reset_limiter: RateLimiter,
    /// A real hash to verify against when the address is unknown, so that a wrong address
    /// takes as long as a wrong password.
    pub(crate) decoy_hash: String,
    /// The revocations this process's verifier applies: a revocation written here is applied
    /// at once after its commit, before the event has gone round through Kafka.
    pub(crate) revocations: Revocations,
}

impl Identity {
    pub fn new(
        pool: PgPool,
        redis: redis::aio::ConnectionManager,
        keys: KeyRing,
        config: IdentityConfig,
        revocations: Revocations,
    ) -> Result<Self> {
        let mailer =
            Mailer::new(&config.smtp).map_err(|e| IdentityError::Internal(e.to_string()))?;
        let login_limiter = RateLimiter::new(
            redis.clone(),
            "login",
            config.login_attempts_per_minute.max(1),
            Duration::from_secs(60),
        );
        let code_limiter =
            RateLimiter::new(redis.clone(), "login-code", 5, Duration::from_secs(3600));
        let reset_limiter = RateLimiter::new(
            redis,
            "password-reset",
            config.password_resets_per_hour.max(1),
            Duration::from_secs(3600),
        );
        let decoy_hash = crate::passwords::hash_blocking("decoy password that matches nothing")?;
        Ok(Self {
            pool,
            keys: Arc::new(keys),
            config,
            mailer,
            login_limiter,
            code_limiter,
            reset_limiter,
            decoy_hash,
            revocations,
        })
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }
}

/// Which organisation a call acts on: a user's own, or the one a service token names.
pub fn scope(principal: &Principal, requested_org: &str) -> Result<Uuid> {
    match principal {
        Principal::User { org_id, .. } => {
            if !requested_org.is_empty() && requested_org != org_id.to_string() {
                return Err(IdentityError::NotFound {
                    what: "organisation",
                    id: requested_org.to_owned(),
                });
            }
            Ok(org_id.into_uuid())
        }
        Principal::Service { .. } => parse_id("org_id", requested_org),
    }
}

/// The caller's own organisation, for calls that have no org field: a service token has none,
/// so it is refused with a message saying to call as a user.
pub fn caller_org(principal: &Principal) -> Result<Uuid> {
    match principal {
        Principal::User { org_id, .. } => Ok(org_id.into_uuid()),
        Principal::Service { .. } => Err(IdentityError::InvalidArgument(
            "this call acts on the caller's own organisation; call it with a user's access token"
                .into(),
        )),
    }
}

pub fn parse_id(field: &'static str, value: &str) -> Result<Uuid> {
    if value.is_empty() {
        return Err(IdentityError::InvalidArgument(format!(
            "`{field}` is required"
        )));
    }
    Uuid::parse_str(value).map_err(|_| {
        IdentityError::InvalidArgument(format!("`{field}` is not a valid id: `{value}`"))
    })
}

pub fn parse_optional_id(field: &'static str, value: &str) -> Result<Option<Uuid>> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse_id(field, value).map(Some)
    }
}

pub fn actor(principal: &Principal) -> EventActor {
    match principal {
        Principal::User { user_id, .. } => EventActor::User(user_id.into_uuid()),
        Principal::Service { name } => EventActor::Service(name.clone()),
    }
}

/// Admin-only operations check the caller's current row, not just the token: an admin
/// demoted or dismissed a minute ago can no longer act. Service tokens pass.
pub async fn require_admin(
    conn: &mut PgConnection,
    principal: &Principal,
    org_id: Uuid,
) -> Result<()> {
    match principal {
        Principal::Service { .. } => Ok(()),
        Principal::User { user_id, .. } => {
            let row: Option<(String, bool)> =
                sqlx::query_as("SELECT state, is_admin FROM users WHERE org_id = $1 AND id = $2")
                    .bind(org_id)
                    .bind(user_id)
                    .fetch_optional(conn)
                    .await?;
            match row {
                Some((state, true)) if UserState::from_db(&state) == UserState::Active => Ok(()),
                _ => Err(IdentityError::PermissionDenied(
                    "only an organisation admin may do this; ask an admin, or have one grant you admin rights (SetAdmin)",
                )),
            }
        }
    }
}

/// A revocation written in a transaction, to apply in this process once it commits.
#[must_use = "apply it after the transaction commits"]
pub struct PendingRevocation {
    subject: String,
    not_before_ms: i64,
}

impl PendingRevocation {
    pub fn apply(self, identity: &Identity) {
        identity
            .revocations
            .revoke(&self.subject, self.not_before_ms);
    }
}

/// Ends every session of `user_id` from now: refresh tokens are revoked, and a
/// `SessionsRevoked` record on the revocations topic makes every service refuse the user's
/// access tokens issued before now (in the caller's transaction, through the outbox).
pub async fn revoke_sessions(
    conn: &mut PgConnection,
    org_id: Uuid,
    user_id: Uuid,
    principal: &Principal,
    reason: ev::RevocationReason,
) -> Result<PendingRevocation> {
    // The user row serialises this with sign-ins and refreshes in flight (they hold it shared
    // while they issue), so none of them slips a token past the not-before.
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    // A reset link mailed before is void too.
    sqlx::query(
        "UPDATE password_resets SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    revoke_access_tokens(conn, org_id, user_id, principal, reason).await
}

/// Makes every service refuse `user_id`'s access tokens issued before now, leaving refresh
/// tokens alone (a refresh then issues a token that says what the user is now).
pub async fn revoke_access_tokens(
    conn: &mut PgConnection,
    org_id: Uuid,
    user_id: Uuid,
    principal: &Principal,
    reason: ev::RevocationReason,
) -> Result<PendingRevocation> {
    let not_before_ms = chrono::Utc::now().timestamp_millis();
    outbox::enqueue(
        conn,
        REVOCATIONS,
        org_id,
        &user_id.to_string(),
        &actor(principal),
        ev::envelope::Payload::SessionsRevoked(ev::SessionsRevoked {
            subject: user_id.to_string(),
            not_before_unix_ms: not_before_ms,
            reason: reason as i32,
        }),
    )
    .await?;
    Ok(PendingRevocation {
        subject: user_id.to_string(),
        not_before_ms,
    })
}

/// Writes an identity event into the outbox, in the caller's transaction.
pub async fn emit(
    conn: &mut PgConnection,
    org_id: Uuid,
    aggregate_id: Uuid,
    principal: &Principal,
    payload: ev::envelope::Payload,
) -> Result<()> {
    outbox::enqueue(
        conn,
        IDENTITY_EVENTS,
        org_id,
        &aggregate_id.to_string(),
        &actor(principal),
        payload,
    )
    .await?;
    Ok(())
}

pub fn user_snapshot(user: &UserRow) -> ev::UserSnapshot {
    ev::UserSnapshot {
        id: user.id.to_string(),
        state: match user.state() {
            UserState::Invited => ev::UserStateSnapshot::Invited,
            UserState::Active => ev::UserStateSnapshot::Active,
            UserState::Dismissed => ev::UserStateSnapshot::Dismissed,
        } as i32,
        login_email: user.login_email.clone(),
        contact_email: user.contact_email.clone(),
        first_name: user.first_name.clone(),
        last_name: user.last_name.clone(),
        position: user.position.clone(),
        department_id: user
            .department_id
            .map(|d| d.to_string())
            .unwrap_or_default(),
        admin: user.is_admin,
    }
}

pub fn department_snapshot(d: &DepartmentRow) -> ev::DepartmentSnapshot {
    ev::DepartmentSnapshot {
        id: d.id.to_string(),
        name: d.name.clone(),
        parent_id: d.parent_id.map(|p| p.to_string()).unwrap_or_default(),
        head_user_id: d.head_user_id.map(|h| h.to_string()).unwrap_or_default(),
    }
}

/// Reloads a user after a change, inside the transaction.
pub async fn reload(conn: &mut PgConnection, org_id: Uuid, id: Uuid) -> Result<UserRow> {
    store::user(conn, org_id, id).await
}
