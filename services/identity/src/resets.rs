//! Password reset by a mailed one-time link: asked for by the user (who has forgotten the
//! password, so without a token) or by an admin for a user (the admin never sees the link).
//!
//! A link carries 32 random bytes; only their SHA-256 is stored. It works once, expires, and
//! using it ends every session of the user on every service. Asking for one answers the same
//! whether the address is an account or not: the look-up and the mail happen after the answer.

use mailroom_platform::auth::Principal;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::redis::RateDecision;
use mailroom_platform::types::{OrgId, UserId};

use crate::domain::{EmailAddress, NewPassword, UserState};
use crate::error::{IdentityError, Result};
use crate::revocation::revoke_sessions;
use crate::secrets;
use crate::service::{caller_org, parse_id, require_admin, Identity};
use crate::store;

/// Who asked for a link, as recorded with it.
enum RequestedBy {
    TheUser,
    Admin(String),
}

impl RequestedBy {
    fn describe(&self) -> String {
        match self {
            RequestedBy::TheUser => "self".into(),
            RequestedBy::Admin(who) => format!("admin:{who}"),
        }
    }
}

impl Identity {
    /// Mails a reset link to every active account that signs in with `login_email` (one per
    /// organisation). Answers before looking the address up, so the answer and its timing are
    /// the same for an unknown address.
    #[tracing::instrument(skip_all)]
    pub async fn request_password_reset(
        self: &std::sync::Arc<Self>,
        login_email: &str,
    ) -> Result<()> {
        let email = EmailAddress::parse("login_email", login_email)?;
        if let RateDecision::Limited { retry_after } = self
            .reset_limiter
            .hit(email.as_str())
            .await
            .map_err(|_| IdentityError::LimiterUnavailable("password reset"))?
        {
            return Err(IdentityError::RateLimited {
                retry_after_secs: retry_after.as_secs().max(1),
            });
        }
        let identity = self.clone();
        tokio::spawn(async move {
            if let Err(err) = identity.mail_reset_links(&email).await {
                tracing::warn!(error = %err, "a password-reset link could not be sent");
            }
        });
        Ok(())
    }

    async fn mail_reset_links(&self, email: &EmailAddress) -> Result<()> {
        let accounts =
            store::users::active_accounts_with_login(&mut *self.pool.acquire().await?, email)
                .await?;
        for (user_id, organisation) in accounts {
            self.mail_reset_link(user_id, email, &organisation, RequestedBy::TheUser)
                .await?;
        }
        Ok(())
    }

    async fn mail_reset_link(
        &self,
        user_id: UserId,
        to: &EmailAddress,
        organisation: &str,
        by: RequestedBy,
    ) -> Result<()> {
        let token = secrets::generate();
        store::sessions::insert_reset(
            &mut *self.pool.acquire().await?,
            &secrets::hash(&token),
            user_id,
            &by.describe(),
            self.config.password_reset_ttl_secs,
        )
        .await?;
        let link = format!("{}?token={token}", self.config.password_reset_url);
        self.mailer
            .send_password_reset(
                to,
                organisation,
                &link,
                self.config.password_reset_ttl_secs / 60,
            )
            .await
            .map_err(|e| IdentityError::Mail(e.to_string()))
    }

    /// An admin has a reset link mailed to a user of their organisation.
    #[tracing::instrument(skip_all)]
    pub async fn send_password_reset_link(
        &self,
        principal: &Principal,
        user_id: &str,
    ) -> Result<()> {
        let org_id = caller_org(principal)?;
        let user_id: UserId = parse_id("user_id", user_id)?;
        let mut conn = self.pool.acquire().await?;
        require_admin(&mut conn, principal, org_id).await?;
        let user = store::users::get(&mut conn, org_id, user_id).await?;
        if user.state() != UserState::Active {
            return Err(IdentityError::FailedPrecondition(format!(
                "{} is {}; a reset link is for an active user",
                user.display_name(),
                user.state().describe()
            )));
        }
        let organisation = store::orgs::display_name(&mut conn, org_id).await?;
        drop(conn);
        let admin = match principal {
            Principal::User { user_id, .. } => user_id.to_string(),
            Principal::Service { name } => format!("service:{name}"),
        };
        let to = EmailAddress::from_stored(user.login_email.clone());
        self.mail_reset_link(user.id, &to, &organisation, RequestedBy::Admin(admin))
            .await
    }

    /// Sets a new password with a link's token, spends it (and every other open link of the
    /// user), and ends every session of the user.
    #[tracing::instrument(skip_all)]
    pub async fn reset_password(&self, token: &str, new_password: &str) -> Result<()> {
        let token = token.trim();
        if token.is_empty() || token.len() > 128 {
            return Err(link_unknown());
        }
        let new = NewPassword::parse(new_password)?;
        let hash_of_token = secrets::hash(token);
        // Checked once without locks, so a bad link costs no Argon2id round, and hashed before
        // any lock is held.
        let (user_id, _) =
            usable_link(&mut *self.pool.acquire().await?, &hash_of_token, false).await?;
        let hash = self.hashing.hash(new.expose().to_owned()).await?;

        let mut tx = self.pool.begin().await?;
        // The user row, then the link (the order revoking sessions uses too), and the link
        // checked again under its lock: two uses of one link, or of two links, cannot both win.
        store::users::lock_row(&mut tx, user_id).await?;
        let (user_id, org_id) = usable_link(&mut tx, &hash_of_token, true).await?;
        store::users::set_password(&mut tx, user_id, hash).await?;
        // Spends this link and every other open one of the user, and ends every session.
        let revoked = revoke_sessions(
            &mut tx,
            org_id,
            user_id,
            &Principal::User {
                user_id,
                org_id,
                admin: false,
            },
            ev::RevocationReason::PasswordReset,
        )
        .await?;
        tx.commit().await?;
        revoked.apply(self);
        Ok(())
    }
}

fn link_unknown() -> IdentityError {
    IdentityError::Unauthenticated(
        "this password-reset link is not valid; ask for a new one (RequestPasswordReset)",
    )
}

/// The user and organisation of a link that may be used now, or why it may not.
async fn usable_link(
    conn: &mut sqlx::PgConnection,
    token_hash: &[u8],
    lock: bool,
) -> Result<(UserId, OrgId)> {
    let Some(link) = store::sessions::reset_link(conn, token_hash, lock).await? else {
        return Err(link_unknown());
    };
    if link.used {
        return Err(IdentityError::Unauthenticated(
            "this password-reset link was already used (or a later sign-out ended it); ask for a new one (RequestPasswordReset)",
        ));
    }
    if link.expired {
        return Err(IdentityError::Unauthenticated(
            "this password-reset link has expired; ask for a new one (RequestPasswordReset)",
        ));
    }
    if link.user_state != UserState::Active {
        return Err(link_unknown());
    }
    Ok((link.user_id, link.org_id))
}
