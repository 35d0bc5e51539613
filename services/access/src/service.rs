//! The service value every access operation hangs off, and the rules they share: who is
//! calling, which organisation a call is about, and who may ask about whom.
//!
//! The operations live one use case a file: [`crate::check`] (may this user do this),
//! [`crate::lookup`] (what may they reach, who may reach it), [`crate::write`] (grant and
//! revoke relationships), [`crate::list`] (the stored relationships, for an admin) and
//! [`crate::roles`] (the organisation's roles and their assignments).
//!
//! Reads (checks and lookups) are answered from the replica's memory; a caller that passes a
//! revision first waits for the replica to reach it. Writes take the changelog lock and bring
//! the replica up to the latest committed change inside that transaction
//! (`Access::locked_and_current`), so who may write is decided on exactly the state the write
//! lands on, then wait for this replica to apply them before answering
//! (`Access::settle`), so the writer's next read here sees them too.
//!
//! Who may call: services (service tokens) may ask and write anything except what identity
//! owns. A user may ask about themselves; an org admin about anyone in the organisation; a
//! holder of `org.manage_permissions` (a role that configures access) about the people within
//! their widest reach ([`OrgGraph::may_ask_about`]). Listing the stored relationships is for
//! org admins (and services) only.

use std::sync::Arc;

use mailroom_platform::auth::Principal;
use mailroom_platform::proto::access::v1 as pb;
use mailroom_types::{OrgId, UserId};
use sqlx::PgPool;

use crate::error::{AccessError, Result};
use crate::graph::OrgGraph;
use crate::pages::LookupCache;
use crate::replica::{Replica, State};
use crate::store::changelog;
use crate::wire;

/// Everything the access operations need.
pub struct Access {
    pub(crate) pool: PgPool,
    pub(crate) replica: Arc<Replica>,
    /// Lookup answers kept for their next pages.
    pub(crate) pages: LookupCache,
}

/// How many checks one CheckBulk, or relationships one write, may carry.
pub const MAX_BULK: usize = 1_000;

pub(crate) fn denied(msg: impl Into<String>) -> AccessError {
    AccessError::PermissionDenied(msg.into())
}

/// Whether `user` configures access in `graph`'s organisation: an org admin, or a holder of a
/// role that may configure access permissions.
pub(crate) fn configures_access(graph: &OrgGraph, user: UserId) -> bool {
    graph.is_admin(user) || graph.effective(user).manage_permissions
}

/// Whether the caller may ask about `subject`, a user of `org`: a service about anyone, a
/// user about themselves, an org admin about anyone in the organisation, a configurer of
/// access about the people within their widest reach.
pub(crate) fn may_ask_about(
    principal: &Principal,
    state: &State,
    subject: UserId,
    org: OrgId,
) -> Result<()> {
    match principal {
        Principal::Service { .. } => Ok(()),
        Principal::User {
            user_id, org_id, ..
        } => {
            if *org_id != org {
                return Err(AccessError::user_not_found(subject));
            }
            if *user_id == subject {
                return Ok(());
            }
            let empty = OrgGraph::new();
            state
                .org(org)
                .unwrap_or(&empty)
                .may_ask_about(*user_id, subject)
                .map_err(denied)
        }
    }
}

/// The organisation of `subject`, once the caller may ask about them; `None` when access has
/// not heard of them. A user caller learns nothing about users outside their organisation,
/// known or not, so asking about anyone but themselves there is "not found"; a service, or a
/// user asking about themselves, gets `None` (an empty answer).
pub(crate) fn subject_org(
    principal: &Principal,
    state: &State,
    subject: UserId,
) -> Result<Option<OrgId>> {
    let Some(org) = state.org_of_user(subject) else {
        return match principal {
            Principal::User { user_id, .. } if *user_id != subject => {
                Err(AccessError::user_not_found(subject))
            }
            _ => Ok(None),
        };
    };
    may_ask_about(principal, state, subject, org)?;
    Ok(Some(org))
}

impl Access {
    pub fn new(pool: PgPool, replica: Arc<Replica>) -> Self {
        Self {
            pool,
            replica,
            pages: LookupCache::new(
                crate::config::default_lookup_cache_ids(),
                std::time::Duration::from_secs(crate::config::default_lookup_cache_secs()),
            ),
        }
    }

    /// With `pages` keeping lookup answers for their next pages.
    pub fn with_lookup_cache(self, pages: LookupCache) -> Self {
        Self { pages, ..self }
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// Waits for this replica to reach the revision the caller names, if any.
    pub(crate) async fn fresh_enough(&self, token: Option<&pb::Revision>) -> Result<()> {
        if let Some(revision) = wire::parse_revision(token)? {
            self.replica.wait_for(revision).await?;
        }
        Ok(())
    }

    /// Opens a transaction holding the changelog lock and brings this replica up to date
    /// through it: whatever is authorised next is decided on the latest committed state, and
    /// nothing can commit before this transaction does.
    pub(crate) async fn locked_and_current(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = changelog::begin_locked(&self.pool).await?;
        self.replica.catch_up_in(&mut tx).await?;
        Ok(tx)
    }

    /// Waits for this replica to apply a write it just made, so the writer reads it here.
    pub(crate) async fn settle(&self, revision: i64) {
        if let Err(err) = self.replica.wait_for(revision).await {
            tracing::warn!(error = %err, revision, "a committed write is not applied here yet");
        }
    }

    /// The organisation of a call that names one optionally: a user's own (another is not
    /// found), or the one a service names.
    pub(crate) fn org_of_call(&self, principal: &Principal, requested: &str) -> Result<OrgId> {
        match principal {
            Principal::User { org_id, .. } => {
                if !requested.is_empty() && requested != org_id.to_string() {
                    return Err(AccessError::NotFound(format!(
                        "organisation `{requested}` was not found"
                    )));
                }
                Ok(*org_id)
            }
            Principal::Service { .. } => {
                if requested.is_empty() {
                    return Err(AccessError::InvalidArgument(
                        "`org_id` is required when calling with a service token".into(),
                    ));
                }
                wire::parse_id("org_id", requested)
            }
        }
    }

    /// [`Access::org_of_call`], for what only an org admin or a service may do (listing the
    /// stored relationships: a configurer of access asks about the people within their reach
    /// instead).
    pub(crate) fn org_for_admin_call(
        &self,
        principal: &Principal,
        requested: &str,
    ) -> Result<OrgId> {
        let org = self.org_of_call(principal, requested)?;
        if let Principal::User { user_id, .. } = principal {
            let state = self.replica.read();
            if !state.org(org).is_some_and(|g| g.is_admin(*user_id)) {
                return Err(denied(
                    "only org admins may list the organisation's relationships; to see what someone may do or which roles they hold, use Check or ListRoleAssignments with their user_id",
                ));
            }
        }
        Ok(org)
    }
}
