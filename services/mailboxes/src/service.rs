//! The [`Mailboxes`] value the operations hang off, the caller as the registry sees them, and
//! who may call what. The operations themselves are one use case a file:
//! [`crate::connect`], [`crate::edit`], [`crate::credentials`] and [`crate::listing`].
//!
//! Who may: access control decides, through the caller's scope on a permission (see
//! [`crate::scope`]). A mailbox outside the caller's `mailbox.view` scope is answered as
//! NOT_FOUND, like one that does not exist; one they may view but not change is
//! PERMISSION_DENIED with the reason. Connecting a mailbox for its owner — oneself included —
//! takes `mailbox.connect` reaching that owner (the caller's roles decide: an "own" scope lets
//! people connect their own, a "department" scope lets a head connect for their department,
//! a role with none lets nobody connect even their own). Refusals name the permission the way
//! the roles page does, so the person knows what to ask an admin for, and name another person
//! only to a caller who may see that person's mailboxes. Services (their own token) act on
//! any organisation they name.
//!
//! Every change is written with its event in one transaction (the outbox), so access
//! control, identity and the sync service hear of exactly the changes that happened, even
//! when they or the broker are down at the time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailroom_aip::token::PageTokenKey;
use mailroom_clients::{AccessClient, MailboxScope, PeerError};
use mailroom_platform::auth::Principal;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::mailboxes::v1 as pb;
use mailroom_platform::redis::{RateDecision, RateLimiter};
use mailroom_platform::sealed::SealingKeys;
use mailroom_types::{MailboxId, OrgId, Permission, UserId};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::domain::{Crm, ParseError};
use crate::error::{MailboxError, Result};
use crate::probe::Prober;
use crate::scope::{RegistryAccess as _, Scope};
use crate::store::{self, MailboxRow, Owner};
use crate::view::{self, Columns};

/// How long after identity made a user their id may still be unheard of here: identity's
/// event about a new user arrives within a second or so; this allows for a slow broker.
const NEW_USER_WINDOW: Duration = Duration::from_secs(10);
/// The longest one call waits for identity's event about a user made a moment ago.
const OWNER_WAIT: Duration = Duration::from_secs(5);
/// How far ahead of this host's clock an id's time may be and still count as made now (the
/// clocks of identity's host and this one differ a little).
const CLOCK_SKEW: Duration = Duration::from_secs(2);
/// How often a call waiting for a user made a moment ago looks for them again.
const NEW_USER_POLL: Duration = Duration::from_millis(100);
/// How often a connect for a user made a moment ago asks access control about them again.
const ACCESS_POLL: Duration = Duration::from_millis(250);
/// The longest a connect for a user made a moment ago waits for access control to hear of
/// them (few questions: a forged fresh id costs at most a dozen).
const ACCESS_WAIT: Duration = Duration::from_secs(3);

/// Everything the operations need.
pub struct Mailboxes {
    pub(crate) pool: PgPool,
    pub(crate) access: AccessClient,
    pub(crate) prober: Prober,
    pub(crate) keys: SealingKeys,
    pub(crate) tokens: PageTokenKey,
    /// Login checks per caller per minute.
    pub(crate) limiter: Option<RateLimiter>,
    /// SyncMailboxNow calls per caller per minute.
    pub(crate) sync_now_limiter: Option<RateLimiter>,
    /// Connects and login checks running at once in this process, every caller's and every
    /// ConnectMailboxes item's together.
    pub(crate) login_permits: Arc<Semaphore>,
    /// How long a single connect or update waits for one of those before it is refused.
    pub(crate) login_queue_wait: Duration,
    /// The most mailboxes one organisation may connect.
    pub(crate) max_mailboxes_per_org: u64,
    /// A mailbox asked to sync now is not asked again within this.
    pub(crate) sync_now_interval: Duration,
}

/// A person calling, with their organisation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Person {
    pub user: UserId,
    pub org: OrgId,
}

/// The caller, as the registry needs them.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// `None` for a service (its own token): it acts on any organisation it names.
    pub person: Option<Person>,
    /// Whether the token says an org admin (a token is revoked when its user stops being one).
    pub admin: bool,
    pub actor: EventActor,
    /// Whose login checks are counted together (the rate limit's key).
    pub key: String,
}

impl Caller {
    pub fn of(principal: &Principal) -> Caller {
        match principal {
            Principal::User {
                user_id,
                org_id,
                admin,
            } => Caller {
                person: Some(Person {
                    user: *user_id,
                    org: *org_id,
                }),
                admin: *admin,
                actor: EventActor::User(*user_id),
                key: user_id.to_string(),
            },
            Principal::Service { name } => Caller {
                person: None,
                admin: false,
                actor: EventActor::Service(name.clone()),
                key: format!("service:{name}"),
            },
        }
    }

    /// Whether the caller is an org admin (their token says so; a token is revoked when its
    /// user stops being one); a service is.
    pub fn is_admin(&self) -> bool {
        self.person.is_none() || self.admin
    }

    /// The calling person's id; `None` for a service.
    pub fn user(&self) -> Option<UserId> {
        self.person.map(|p| p.user)
    }

    /// The organisation a call acts in: a person's own, or the one a service names in the
    /// request's `org_id` (`named`).
    pub fn org(&self, named: &str) -> Result<OrgId> {
        match self.person {
            Some(person) => Ok(person.org),
            None => named.trim().parse().map_err(|_| {
                MailboxError::InvalidArgument(
                    "a service caller names the organisation: set org_id (a mailbox's own organisation is used where the request names a mailbox)".into(),
                )
            }),
        }
    }
}

/// A mailbox id from the wire: one that is not an id names no mailbox (NOT_FOUND, as for any
/// unknown mailbox).
pub(crate) fn mailbox_id(input: &str) -> Result<MailboxId> {
    input
        .trim()
        .parse()
        .map_err(|_| MailboxError::NotFound(mailroom_aip::shown(input)))
}

/// What a mailbox's sealed password is bound to: it opens for this mailbox only.
pub(crate) fn seal_context(id: MailboxId) -> Vec<u8> {
    format!("mailbox:{id}:password").into_bytes()
}

impl Mailboxes {
    /// The caller's scope on `permission` (services: the whole organisation).
    pub(crate) async fn scope(
        &self,
        caller: &Caller,
        permission: Permission,
        only: &[UserId],
    ) -> Result<Scope> {
        match caller.user() {
            None => Ok(Scope::WholeOrganization),
            Some(user) => self.access.scope(user, permission, only).await,
        }
    }

    /// Whether the caller's `permission` scope takes in `owner`'s mailboxes.
    async fn reaches(
        &self,
        caller: &Caller,
        permission: Permission,
        owner: UserId,
    ) -> Result<bool> {
        let scope = self.scope(caller, permission, &[owner]).await?;
        Ok(match &scope {
            Scope::WholeOrganization => true,
            Scope::Some { owners, .. } => owners.contains(&owner),
        })
    }

    /// Whether the caller may connect a mailbox for `owner` (themselves included); see
    /// [`Mailboxes::may_connect_for_each`].
    pub(crate) async fn may_connect_for(&self, caller: &Caller, owner: UserId) -> Result<bool> {
        Ok(self
            .may_connect_for_each(caller, &[owner])
            .await?
            .contains(&owner))
    }

    /// Of `owners`, those the caller may connect a mailbox for (themselves included): their
    /// `mailbox.connect` scope reaches that person. One question to access control for all of
    /// them. Access control hears of a user identity made a moment ago a little later than
    /// identity answers, so an owner who is refused while their id is such a fresh one (and
    /// who is not the caller) is asked about again, every [`ACCESS_POLL`] for at most
    /// [`ACCESS_WAIT`], still in one question for all of them: a head who has just added a
    /// new employee connects their mailbox at once. Anyone else's refusal is final at once,
    /// and access control not answering is UNAVAILABLE at once (no retries). Only a caller
    /// access control has not heard of yet, whose own id says they were made a moment ago, is
    /// waited for the same way (a new employee connecting their own right away).
    pub(crate) async fn may_connect_for_each(
        &self,
        caller: &Caller,
        owners: &[UserId],
    ) -> Result<HashSet<UserId>> {
        let Some(user) = caller.user() else {
            return Ok(owners.iter().copied().collect());
        };
        let started = Instant::now();
        let mut allowed = HashSet::new();
        let mut asking: Vec<UserId> = Vec::with_capacity(owners.len());
        for owner in owners {
            if !asking.contains(owner) {
                asking.push(*owner);
            }
        }
        // (An empty list would ask for the caller's whole scope.)
        while !asking.is_empty() {
            let answer = match self
                .access
                .mailbox_scope(user, Permission::MailboxConnect, &asking)
                .await
            {
                Ok(answer) => answer,
                // Access control has not heard of the caller: an account made a moment ago
                // (its id says so; an authenticated one, not a name the caller chose) is
                // waited for as a new owner is.
                Err(PeerError::NotYetKnown { .. })
                    if fresh_until(user, started, ACCESS_WAIT)
                        .is_some_and(|deadline| Instant::now() + ACCESS_POLL <= deadline) =>
                {
                    tokio::time::sleep(ACCESS_POLL).await;
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            match answer {
                MailboxScope::WholeOrganization => {
                    allowed.extend(asking);
                    break;
                }
                MailboxScope::Some { owners, .. } => {
                    asking.retain(|o| {
                        let reached = owners.contains(o);
                        if reached {
                            allowed.insert(*o);
                        }
                        !reached
                    });
                }
            }
            // Asked again: only people who may be users made a moment ago.
            asking.retain(|o| {
                *o != user
                    && fresh_until(*o, started, ACCESS_WAIT)
                        .is_some_and(|deadline| Instant::now() + ACCESS_POLL <= deadline)
            });
            if !asking.is_empty() {
                tokio::time::sleep(ACCESS_POLL).await;
            }
        }
        Ok(allowed)
    }

    /// The refusal of a connect for `owner` (in `org`), naming what the caller's roles lack;
    /// `giving` when the mailbox is being given to them (a transfer) rather than connected.
    /// The owner is named only to a caller who may see that person's mailboxes; anyone else
    /// is told the id they gave, and learns nothing of who it is.
    pub(crate) async fn connect_refused(
        &self,
        caller: &Caller,
        org: OrgId,
        owner: UserId,
        giving: bool,
    ) -> Result<MailboxError> {
        if caller.user() == Some(owner) {
            return Ok(MailboxError::PermissionDenied(
                "your roles do not let you connect mailboxes, not even your own; ask an admin for a role that may connect your own mailbox".into(),
            ));
        }
        let sees = self.reaches(caller, Permission::MailboxView, owner).await?;
        let who = match sees {
            true => match store::owner(&self.pool, org, owner).await? {
                Some(found) if !found.display_name().is_empty() => found.display_name(),
                _ => format!("user `{owner}`"),
            },
            false => format!("user `{owner}`"),
        };
        let what = if giving {
            format!("your roles do not let you connect mailboxes for {who}, so you may not give them one")
        } else {
            format!("your roles do not let you connect mailboxes for {who}")
        };
        let ask = "ask an admin for a role that may connect mailboxes for others";
        Ok(MailboxError::PermissionDenied(if sees {
            format!("you may see {who}'s mailboxes but not connect one for them: {what}; {ask}")
        } else {
            format!("{what}; {ask}")
        }))
    }

    /// Whether the caller may grant reading `row`'s mail (`mailbox.grant_read` on it): a
    /// transfer gives the new owner its mail, so it takes this too.
    pub(crate) async fn may_grant_read(&self, caller: &Caller, row: &MailboxRow) -> Result<bool> {
        let scope = self
            .scope(caller, Permission::MailboxGrantRead, &[row.owner_user_id])
            .await?;
        Ok(scope.covers(row.id, row.owner_user_id))
    }

    /// A mailbox the caller may use with `permission`: NOT_FOUND when they may not even view
    /// it, PERMISSION_DENIED when they may view but not this.
    pub(crate) async fn authorized(
        &self,
        caller: &Caller,
        id: MailboxId,
        permission: Permission,
    ) -> Result<MailboxRow> {
        let row = match caller.person {
            Some(person) => store::get(&self.pool, person.org, id, false).await?,
            None => store::get_any(&self.pool, id).await?,
        }
        .ok_or_else(|| MailboxError::NotFound(id.to_string()))?;
        if caller.person.is_none() {
            return Ok(row);
        }
        let scope = self.scope(caller, permission, &[row.owner_user_id]).await?;
        if scope.covers(row.id, row.owner_user_id) {
            return Ok(row);
        }
        if permission != Permission::MailboxView {
            let view = self
                .scope(caller, Permission::MailboxView, &[row.owner_user_id])
                .await?;
            if view.covers(row.id, row.owner_user_id) {
                let (whose, ask) = if caller.user() == Some(row.owner_user_id) {
                    (
                        "your own mailboxes".to_owned(),
                        "may change your own mailboxes' settings",
                    )
                } else {
                    (
                        format!("{}'s mailboxes", owner_name(&row)),
                        "may change other people's mailbox settings",
                    )
                };
                let what = match permission {
                    Permission::MailboxSync => "sync it",
                    _ => "change it",
                };
                return Err(MailboxError::PermissionDenied(format!(
                    "you may see this mailbox but not {what}: your roles do not let you change the settings of {whose}; ask an admin for a role that {ask}"
                )));
            }
        }
        Err(MailboxError::NotFound(id.to_string()))
    }

    /// The mailbox a request names by `wire_id`, for a caller who may use it with
    /// `permission` (see [`Mailboxes::authorized`]).
    pub(crate) async fn named(
        &self,
        principal: &Principal,
        wire_id: &str,
        permission: Permission,
    ) -> Result<(Caller, MailboxRow)> {
        let caller = Caller::of(principal);
        let row = self
            .authorized(&caller, mailbox_id(wire_id)?, permission)
            .await?;
        Ok((caller, row))
    }

    /// A mailbox as its full view shows it, with who may read its mail.
    pub(crate) async fn in_full(&self, row: &MailboxRow) -> Result<pb::Mailbox> {
        let readers = self
            .access
            .mail_readers(&[(row.id, row.owner_user_id)])
            .await?;
        Ok(view::to_proto(row, &Columns::all(), Some(&readers)))
    }

    /// A user of the organisation. Only an id made a moment ago is waited for (identity's
    /// event about it may be on its way, see [`new_user_wait`]); any other id that is not a
    /// user of `org` — nobody's, or another organisation's user — is NOT_FOUND at once, in
    /// one answer for both.
    pub(crate) async fn owner(&self, org: OrgId, user: UserId) -> Result<Owner> {
        let wait_until = new_user_wait(user, Instant::now());
        loop {
            if let Some(owner) = store::owner(&self.pool, org, user).await? {
                return Ok(owner);
            }
            match wait_until {
                Some(deadline) if Instant::now() < deadline => {
                    tokio::time::sleep(NEW_USER_POLL).await
                }
                _ => {
                    return Err(MailboxError::UserNotFound(format!(
                        "user `{user}` was not found in the organisation"
                    )))
                }
            }
        }
    }

    /// Refuses a CRM queue that names anyone but active users of `org`, at the position the
    /// request gave them (`wire`: the request's `crm.queue_user_ids`), in one sentence whether
    /// the id is another organisation's user, a dismissed or invited one, or nobody's. Ids
    /// made a moment ago are waited for as [`Mailboxes::owner`] waits.
    pub(crate) async fn check_queue(&self, org: OrgId, crm: &Crm, wire: &[String]) -> Result<()> {
        if crm.queue.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        loop {
            let active = store::active_users(&self.pool, org, &crm.queue).await?;
            let mut outside = crm.queue.iter().filter(|u| !active.contains(u));
            let Some(first) = outside.next().copied() else {
                return Ok(());
            };
            // Waiting helps only if every one missing may be a user made a moment ago.
            let waiting = std::iter::once(&first)
                .chain(outside)
                .all(|u| new_user_wait(*u, started).is_some_and(|d| Instant::now() < d));
            if waiting {
                tokio::time::sleep(NEW_USER_POLL).await;
                continue;
            }
            let position = wire
                .iter()
                .position(|id| id.trim().parse::<UserId>().ok() == Some(first))
                .unwrap_or_default();
            return Err(ParseError::Invalid {
                field: format!("crm.queue_user_ids[{position}]"),
                reason: "is not an active user of this organisation; a CRM queue holds the organisation's active users".into(),
            }
            .into());
        }
    }

    /// Counts one login check for the caller.
    pub(crate) async fn rate_limit(&self, caller: &Caller) -> Result<()> {
        count_hit(self.limiter.as_ref(), caller, "connection attempts").await
    }

    /// Counts one SyncMailboxNow call for the caller.
    pub(crate) async fn rate_limit_sync_now(&self, caller: &Caller) -> Result<()> {
        count_hit(self.sync_now_limiter.as_ref(), caller, "sync requests").await
    }

    /// One of the process's login-check slots, waiting at most `login_queue_wait` for it:
    /// beyond that the caller is told to come back (RESOURCE_EXHAUSTED) rather than queued
    /// without end.
    pub(crate) async fn login_slot(&self) -> Result<OwnedSemaphorePermit> {
        match tokio::time::timeout(
            self.login_queue_wait,
            self.login_permits.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(MailboxError::Internal(
                "the login-check slots were closed".into(),
            )),
            Err(_elapsed) => Err(MailboxError::LimitReached(format!(
                "the registry is running as many login checks as it may at once (login_concurrency); none came free within {} s: try again in a few seconds",
                self.login_queue_wait.as_secs().max(1)
            ))),
        }
    }
}

/// A mailbox's owner as a refusal names them: their name, or their id when the registry has
/// no name for them.
fn owner_name(row: &MailboxRow) -> String {
    let name = format!("{} {}", row.owner_first_name, row.owner_last_name);
    match name.trim() {
        "" => format!("user `{}`", row.owner_user_id),
        name => name.to_owned(),
    }
}

/// Until when a call started at `started` may wait for identity's event about `user`, were it
/// a user made a moment ago; `None` when it cannot be one. Mailroom's ids are UUIDv7, which
/// carry the time they were made: only an id made within [`NEW_USER_WINDOW`] is waited for
/// (at most [`OWNER_WAIT`]), any other is refused at once. The id alone decides — never
/// whether it is a user elsewhere — so how long a refusal takes tells the caller nothing about
/// other organisations.
fn new_user_wait(user: UserId, started: Instant) -> Option<Instant> {
    fresh_until(user, started, OWNER_WAIT)
}

/// As [`new_user_wait`], waiting at most `longest`.
fn fresh_until(user: UserId, started: Instant, longest: Duration) -> Option<Instant> {
    let uuid = user.as_uuid();
    if uuid.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    let made = UNIX_EPOCH.checked_add(Duration::new(secs, nanos))?;
    let age = match SystemTime::now().duration_since(made) {
        Ok(age) => age,
        Err(ahead) if ahead.duration() <= CLOCK_SKEW => Duration::ZERO,
        // Made in the future: no user of ours.
        Err(_) => return None,
    };
    let left = NEW_USER_WINDOW.checked_sub(age)?;
    Some(started + left.min(longest))
}

/// Counts one hit of `caller` on `limiter` (`what` names the calls in the refusal).
async fn count_hit(
    limiter: Option<&RateLimiter>,
    caller: &Caller,
    what: &'static str,
) -> Result<()> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    match limiter.hit(&caller.key).await {
        Ok(RateDecision::Allowed) => Ok(()),
        Ok(RateDecision::Limited { retry_after }) => Err(MailboxError::RateLimited {
            what,
            retry_after_secs: retry_after.as_secs().max(1),
        }),
        Err(err) => {
            // Not reached: these limiters count per replica while Redis is down
            // (`WithoutRedis::FallBackLocal`), never erring.
            tracing::warn!(%err, what, "rate limiter unavailable; call not counted");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v7_made(ago_secs: i64) -> UserId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64;
        let at = u64::try_from(now - ago_secs).expect("after 1970");
        UserId::from_uuid(uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            at,
            0,
        )))
    }

    #[test]
    fn only_an_id_made_a_moment_ago_is_waited_for() {
        let started = Instant::now();
        let fresh = new_user_wait(UserId::new(), started).expect("a new id is waited for");
        assert!(fresh > started && fresh <= started + OWNER_WAIT);
        let older = new_user_wait(v7_made(8), started).expect("still inside the window");
        assert!(
            older <= started + Duration::from_secs(3),
            "the window ends 10 s after"
        );
        assert_eq!(new_user_wait(v7_made(60), started), None, "a minute old");
        assert_eq!(
            new_user_wait(v7_made(-3600), started),
            None,
            "made in the future"
        );
        let random = UserId::from_uuid(uuid::Uuid::new_v4());
        assert_eq!(new_user_wait(random, started), None, "not one of ours");
    }
}
