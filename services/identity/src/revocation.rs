//! Ending a user's sessions. A change that must void what a user holds (dismissal, a new
//! password, a sign-out everywhere, a demotion) writes it in its own transaction — refresh
//! tokens revoked, reset links spent, a `SessionsRevoked` record for every service — and, once
//! committed, applies it to this process's verifier at once ([`PendingRevocation::apply`]),
//! before the record has gone round through Kafka.

use mailroom_platform::auth::Principal;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::types::{OrgId, UserId};
use sqlx::PgConnection;

use crate::error::Result;
use crate::events;
use crate::service::Identity;
use crate::store;

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

/// Ends every session of `user_id` from now: refresh tokens are revoked, open reset links
/// spent, and every service refuses the user's access tokens issued before now.
pub async fn revoke_sessions(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
    principal: &Principal,
    reason: ev::RevocationReason,
) -> Result<PendingRevocation> {
    // The user row serialises this with sign-ins and refreshes in flight (they hold it shared
    // while they issue), so none of them slips a token past the not-before.
    store::users::lock_row(conn, user_id).await?;
    store::sessions::revoke_refresh_tokens_of(conn, user_id).await?;
    // A reset link mailed before is void too.
    store::sessions::spend_resets_of(conn, user_id).await?;
    revoke_access_tokens(conn, org_id, user_id, principal, reason).await
}

/// Makes every service refuse `user_id`'s access tokens issued before now, leaving refresh
/// tokens alone (a refresh then issues a token that says what the user is now).
pub async fn revoke_access_tokens(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
    principal: &Principal,
    reason: ev::RevocationReason,
) -> Result<PendingRevocation> {
    let not_before_ms = chrono::Utc::now().timestamp_millis();
    events::emit_sessions_revoked(conn, org_id, user_id, principal, reason, not_before_ms).await?;
    Ok(PendingRevocation {
        subject: user_id.to_string(),
        not_before_ms,
    })
}
