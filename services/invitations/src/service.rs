//! The service value every operation hangs off, who is calling, and who may do what.
//!
//! The operations themselves live one use case a file: [`crate::invite`] (making
//! invitations, through [`crate::admission`]), [`crate::lifecycle`] (accept, resend, revoke,
//! approve, …), [`crate::links`], [`crate::list`], [`crate::seats`] and [`crate::wording`].

use std::sync::Arc;
use std::time::Duration;

use mailroom_clients::{AccessClient, Bearer, IdentityClient};
use mailroom_platform::auth::Principal;
use mailroom_platform::client_address::TrustedProxies;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::redis::{RateDecision, RateLimiter};
use mailroom_types::{OrgId, Permission, UserId};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::config::InvitationsConfig;
use crate::error::{InvitationError, Result};
use crate::store::{self, InvitationRow};

pub struct Invitations {
    pub pool: PgPool,
    pub identity: IdentityClient,
    pub access: AccessClient,
    pub config: InvitationsConfig,
    pub limits: Option<Limits>,
    /// Whose `x-forwarded-for` names a public caller's address (`client_network`).
    pub trusted_proxies: TrustedProxies,
    /// Wakes the delivery loop when mail was queued.
    pub queued: Arc<Notify>,
    /// How long an acceptance's claim holds the invitation if nothing releases it (a replica
    /// died mid-acceptance): three request timeouts, beyond any acceptance still running.
    pub acceptance_hold: Duration,
}

/// Redis windows on how fast invitations can be made.
pub struct Limits {
    pub per_inviter: RateLimiter,
    pub per_org: RateLimiter,
    /// Registrations through one link, from all networks together.
    pub per_link: RateLimiter,
    /// Registrations through one link from one client network: no network uses a link's
    /// whole budget.
    pub per_link_network: RateLimiter,
    /// Registrations through any link from one client network.
    pub per_network: RateLimiter,
}

/// Which registration limit a registration through a link is counted against.
#[derive(Debug, Clone, Copy)]
pub enum RegistrationLimit {
    PerLink,
    PerLinkNetwork,
    PerNetwork,
}

impl RegistrationLimit {
    fn what(self) -> &'static str {
        match self {
            RegistrationLimit::PerLink => "through this link per hour",
            RegistrationLimit::PerLinkNetwork => "through this link from your network per hour",
            RegistrationLimit::PerNetwork => "from your network per hour",
        }
    }
}

/// A signed-in person calling, with the token they called with (forwarded when their own
/// profile is read at identity).
#[derive(Clone)]
pub struct Caller {
    pub user_id: UserId,
    pub org_id: OrgId,
    pub bearer: Bearer,
}

impl Caller {
    pub fn from_request<T>(
        request: &tonic::Request<T>,
    ) -> std::result::Result<Self, tonic::Status> {
        match mailroom_platform::auth::principal(request)? {
            Principal::User {
                user_id, org_id, ..
            } => Ok(Caller {
                user_id: *user_id,
                org_id: *org_id,
                bearer: Bearer::of_request(request)
                    .ok_or_else(|| tonic::Status::unauthenticated("a bearer token is required"))?,
            }),
            Principal::Service { .. } => Err(tonic::Status::invalid_argument(
                "invitations are made and managed by people: call with a user's access token",
            )),
        }
    }

    pub fn actor(&self) -> EventActor {
        EventActor::User(self.user_id)
    }
}

impl Invitations {
    pub async fn holds(&self, caller: &Caller, permission: Permission) -> Result<bool> {
        Ok(self
            .access
            .check_org(caller.org_id, caller.user_id, permission)
            .await?)
    }

    /// Refuses unless the caller holds `permission`, saying who to ask.
    pub async fn require(&self, caller: &Caller, permission: Permission) -> Result<()> {
        if self.holds(caller, permission).await? {
            return Ok(());
        }
        Err(InvitationError::PermissionDenied(match permission {
            Permission::OrgInvite => "you may not invite people to this organisation: your roles do not let you invite (`org.invite`); ask an admin for a role that may invite people, or to invite them for you".into(),
            other => format!("this needs `{other}` (organisation admins); ask an admin"),
        }))
    }

    /// The inviter of an invitation, or whoever registers users, may manage it; anyone else
    /// is told it does not exist.
    pub async fn require_manager(&self, caller: &Caller, row: &InvitationRow) -> Result<()> {
        if row.inviter_user_id == caller.user_id
            || self.holds(caller, Permission::OrgRegisterUsers).await?
        {
            return Ok(());
        }
        Err(store::not_found(row.id))
    }

    /// Counts `n` invitations against a limit; refuses with when to try again.
    pub async fn spend(
        &self,
        limiter: &RateLimiter,
        key: &str,
        n: u32,
        what: &'static str,
    ) -> Result<()> {
        match limiter.hit_n(key, n).await {
            Ok(RateDecision::Allowed) => Ok(()),
            Ok(RateDecision::Limited { retry_after }) => Err(InvitationError::RateLimited {
                retry_after_secs: retry_after.as_secs().max(1),
                what,
            }),
            // Only a limiter that fails closed answers an error (registrations through a
            // public link): refused while Redis is away. Invitations count per replica then.
            Err(_) => Err(InvitationError::Unavailable(
                "registration is temporarily unavailable".into(),
            )),
        }
    }

    /// Counts one registration through a link (a call anyone may make, no sign-in) against
    /// `limit`. Fails closed: when the limit cannot be checked (Redis unreachable, now or at
    /// start), registering is refused rather than let through unthrottled.
    pub async fn spend_registration(&self, limit: RegistrationLimit, key: &str) -> Result<()> {
        let paused = || {
            InvitationError::Unavailable(
                "registration through links is paused for a moment (its rate limits cannot be checked); try again in a minute".into(),
            )
        };
        let Some(limits) = &self.limits else {
            return Err(paused());
        };
        let limiter = match limit {
            RegistrationLimit::PerLink => &limits.per_link,
            RegistrationLimit::PerLinkNetwork => &limits.per_link_network,
            RegistrationLimit::PerNetwork => &limits.per_network,
        };
        match limiter.hit(key).await {
            Ok(RateDecision::Allowed) => Ok(()),
            Ok(RateDecision::Limited { retry_after }) => {
                Err(InvitationError::RegistrationsLimited {
                    retry_after_secs: retry_after.as_secs().max(1),
                    what: limit.what(),
                })
            }
            // The limiter logs the outage itself (now and then, not per call).
            Err(_) => Err(paused()),
        }
    }

    /// Counts `n` invitations by `caller` against the per-inviter and per-organisation limits
    /// (making and resending alike).
    pub async fn spend_invitations(&self, caller: &Caller, n: u32) -> Result<()> {
        let Some(limits) = &self.limits else {
            return Ok(());
        };
        self.spend(
            &limits.per_inviter,
            &caller.user_id.to_string(),
            n,
            "per inviter and hour",
        )
        .await?;
        self.spend(
            &limits.per_org,
            &caller.org_id.to_string(),
            n,
            "per organisation and hour",
        )
        .await
    }

    pub fn ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.config.invitation_ttl_secs.max(60))
    }

    /// How long a registration through a link waits for its address to be confirmed.
    pub fn registration_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.config.registration_ttl_secs.max(60))
    }

    /// How long `row`, mailed now, stays open: a link registration not yet confirmed gets the
    /// short confirmation window, anything else the invitation's.
    pub fn mailed_ttl(&self, row: &InvitationRow) -> chrono::Duration {
        if row.awaits_confirmation() {
            self.registration_ttl()
        } else {
            self.ttl()
        }
    }

    pub fn accept_link(&self, secret: &str) -> String {
        format!("{}?token={secret}", self.config.accept_url)
    }

    pub fn join_link(&self, secret: &str) -> String {
        format!("{}?link={secret}", self.config.join_url)
    }

    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.config.sweep_interval_ms.max(100))
    }
}
