//! Signing in: passwords, access tokens, rotating refresh tokens, service tokens.

use chrono::{DateTime, Duration, Utc};
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::identity::v1 as pb;
use mailroom_platform::redis::RateDecision;
use mailroom_platform::types::{OrgId, UserId};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{EmailAddress, NewPassword, UserState};
use crate::error::{IdentityError, Result};
use crate::keys;
use crate::passwords;
use crate::revocation::revoke_sessions;
use crate::secrets;
use crate::service::{parse_optional_id, require_admin, Identity};
use crate::store::{self, users::Candidate};

/// The most organisations one login address is looked up in at sign-in.
/// (At most this many Argon2id rounds run side by side for one sign-in, which keeps each
/// refusal under the time floor on two cores.)
const MAX_ORGS_PER_LOGIN: i64 = 4;

/// Tokens handed to a client.
pub struct IssuedTokens {
    pub access_token: String,
    pub access_expires: DateTime<Utc>,
    pub refresh_token: Option<(String, DateTime<Utc>)>,
}

impl Identity {
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, req: pb::LoginRequest) -> Result<IssuedTokens> {
        let started = tokio::time::Instant::now();
        let refused = self.login_inner(req).await;
        if matches!(refused, Err(IdentityError::BadCredentials)) {
            // Every refusal takes the same time, whatever path it took (one Argon2id round,
            // or several side by side on a busy machine): no timing tells the paths apart.
            let floor = std::time::Duration::from_millis(self.config.login_failure_floor_ms);
            tokio::time::sleep_until(started + floor).await;
        }
        refused
    }

    async fn login_inner(&self, req: pb::LoginRequest) -> Result<IssuedTokens> {
        let email = EmailAddress::parse("login_email", &req.login_email)?;
        let org_filter: Option<OrgId> = parse_optional_id("org_id", &req.org_id)?;
        if let RateDecision::Limited { retry_after } =
            self.login_limiter.hit(email.as_str()).await?
        {
            return Err(IdentityError::RateLimited {
                retry_after_secs: retry_after.as_secs().max(1),
            });
        }
        // Every active account with this login (one per organisation), or the one named.
        let candidates = store::users::sign_in_candidates(
            &mut *self.pool.acquire().await?,
            &email,
            org_filter,
            MAX_ORGS_PER_LOGIN,
        )
        .await?;
        // Nothing is said until the password has verified: an unknown address, a wrong password
        // and an address of several organisations each cost one Argon2id round (the several
        // are verified side by side) and end in the same BadCredentials.
        let matched = self.verify_candidates(&req.password, &candidates).await?;
        let user = match matched.as_slice() {
            [] => return Err(IdentityError::BadCredentials),
            [one] => *one,
            several => {
                let orgs: Vec<String> = several
                    .iter()
                    .map(|c| candidates[*c].org_id.to_string())
                    .collect();
                return Err(IdentityError::FailedPrecondition(format!(
                    "this address and password sign in to more than one organisation; pass `org_id`, one of: {}",
                    orgs.join(", ")
                )));
            }
        };
        let Candidate {
            id: user_id,
            org_id,
            password_hash: verified_hash,
            ..
        } = candidates[user].clone();
        // Issued under the user row, re-read: a dismissal, password change or sign-out that
        // committed while the password was being verified is not outrun.
        let mut tx = self.pool.begin().await?;
        let Some((state, hash, admin)) = store::users::sign_in_standing(&mut tx, user_id).await?
        else {
            return Err(IdentityError::BadCredentials);
        };
        if state != UserState::Active || hash != verified_hash {
            return Err(IdentityError::BadCredentials);
        }
        let issued = self
            .issue_user_tokens(&mut tx, user_id, org_id, admin, Uuid::now_v7())
            .await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// The positions of the candidates whose password hash `password` matches, verified
    /// concurrently so the time taken does not depend on how many there are (within the cores
    /// available). With no candidate, a decoy hash is verified, so an unknown address takes as
    /// long as a known.
    async fn verify_candidates(
        &self,
        password: &str,
        candidates: &[Candidate],
    ) -> Result<Vec<usize>> {
        if candidates.is_empty() {
            let _ = passwords::verify(password.to_owned(), self.decoy_hash.clone()).await;
            return Ok(Vec::new());
        }
        let checks = candidates.iter().map(|c| {
            let hash = c
                .password_hash
                .clone()
                .unwrap_or_else(|| self.decoy_hash.clone());
            passwords::verify(password.to_owned(), hash)
        });
        let verdicts = futures::future::try_join_all(checks).await?;
        Ok(candidates
            .iter()
            .zip(verdicts)
            .enumerate()
            .filter(|(_, (c, ok))| *ok && c.password_hash.is_some())
            .map(|(k, _)| k)
            .collect())
    }

    async fn issue_user_tokens(
        &self,
        conn: &mut PgConnection,
        user_id: UserId,
        org_id: OrgId,
        admin: bool,
        family: Uuid,
    ) -> Result<IssuedTokens> {
        let (access_token, access_expires) =
            self.access_token(user_id.to_string(), Some(org_id), admin)?;
        let refresh = secrets::generate();
        let refresh_expires = Utc::now() + Duration::seconds(self.config.refresh_token_ttl_secs);
        store::sessions::insert_refresh_token(
            conn,
            family,
            user_id,
            &secrets::hash(&refresh),
            refresh_expires,
        )
        .await?;
        Ok(IssuedTokens {
            access_token,
            access_expires,
            refresh_token: Some((refresh, refresh_expires)),
        })
    }

    /// A signed access token for `sub`, and when it expires.
    fn access_token(
        &self,
        sub: String,
        org: Option<OrgId>,
        admin: bool,
    ) -> Result<(String, DateTime<Utc>)> {
        let claims = keys::claims(sub, org, admin, self.config.access_token_ttl_secs);
        let expires = DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(Utc::now);
        let token = self
            .keys
            .sign(&claims)
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        Ok((token, expires))
    }

    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, refresh_token: &str) -> Result<IssuedTokens> {
        let invalid = IdentityError::Unauthenticated("refresh token is not valid; sign in again");
        if refresh_token.is_empty() || refresh_token.len() > 128 {
            return Err(invalid);
        }
        let token_hash = secrets::hash(refresh_token);
        let mut tx = self.pool.begin().await?;
        // The user row first (as revoking a user's sessions locks it), then the token: a refresh
        // that overlaps "sign out everywhere" either finishes before it (and its new token is
        // revoked with the rest) or sees the revocation.
        let Some(owner) = store::sessions::refresh_token_owner(&mut tx, &token_hash).await? else {
            return Err(invalid);
        };
        store::users::share_row(&mut tx, owner).await?;
        let Some(token) = store::sessions::lock_refresh_token(&mut tx, &token_hash).await? else {
            return Err(invalid);
        };
        if token.spent && !token.revoked {
            // A spent token presented again: someone copied it. End every session of that login.
            store::sessions::revoke_family(&mut tx, token.family).await?;
            tx.commit().await?;
            tracing::warn!(user_id = %token.user_id, "refresh token reused; its sign-in was revoked");
            return Err(IdentityError::Unauthenticated(
                "refresh token was already used, so every session of that sign-in is revoked; sign in again",
            ));
        }
        if token.expired || token.revoked {
            return Err(invalid);
        }
        let Some((org_id, UserState::Active, admin)) =
            store::users::token_standing(&mut tx, token.user_id).await?
        else {
            return Err(invalid);
        };
        store::sessions::spend_refresh_token(&mut tx, token.id).await?;
        let issued = self
            .issue_user_tokens(&mut tx, token.user_id, org_id, admin, token.family)
            .await?;
        tx.commit().await?;
        Ok(issued)
    }

    #[tracing::instrument(skip_all)]
    pub async fn revoke_refresh(&self, refresh_token: &str) -> Result<()> {
        store::sessions::revoke_family_of(
            &mut *self.pool.acquire().await?,
            &secrets::hash(refresh_token),
        )
        .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn change_password(
        &self,
        principal: &Principal,
        req: pb::ChangePasswordRequest,
    ) -> Result<()> {
        let Principal::User {
            user_id, org_id, ..
        } = *principal
        else {
            return Err(IdentityError::PermissionDenied(
                "a password is changed by its owner only",
            ));
        };
        let new = NewPassword::parse(&req.new_password)?;
        let hash =
            store::users::active_password_hash(&mut *self.pool.acquire().await?, user_id).await?;
        let Some(hash) = hash else {
            return Err(IdentityError::PermissionDenied(
                "only an active user can change their password",
            ));
        };
        if !passwords::verify(req.current_password, hash).await? {
            return Err(IdentityError::BadCredentials);
        }
        let new_hash = passwords::hash(new.expose().to_owned()).await?;
        let mut tx = self.pool.begin().await?;
        store::users::set_password(&mut tx, user_id, new_hash).await?;
        // Every session ends with the old password, on every service.
        let revoked = revoke_sessions(
            &mut tx,
            org_id,
            user_id,
            principal,
            ev::RevocationReason::PasswordChanged,
        )
        .await?;
        tx.commit().await?;
        revoked.apply(self);
        Ok(())
    }

    /// Ends every session of the caller, or (for an admin) of a user of their organisation.
    #[tracing::instrument(skip_all)]
    pub async fn sign_out_everywhere(&self, principal: &Principal, user_id: &str) -> Result<()> {
        let Principal::User {
            user_id: caller,
            org_id,
            ..
        } = *principal
        else {
            return Err(IdentityError::InvalidArgument(
                "sign-out acts on a user's sessions; call it with a user's access token".into(),
            ));
        };
        let target: UserId = parse_optional_id("user_id", user_id)?.unwrap_or(caller);
        let mut tx = self.pool.begin().await?;
        if target != caller {
            require_admin(&mut tx, principal, org_id).await?;
            // Another organisation's user is answered as one that does not exist.
            store::users::get(&mut tx, org_id, target).await?;
        }
        let revoked = revoke_sessions(
            &mut tx,
            org_id,
            target,
            principal,
            ev::RevocationReason::SignedOutEverywhere,
        )
        .await?;
        tx.commit().await?;
        revoked.apply(self);
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(client_id = %req.client_id))]
    pub fn service_token(&self, req: pb::IssueServiceTokenRequest) -> Result<IssuedTokens> {
        let known = self.config.service_clients.get(&req.client_id);
        let matches = known.is_some_and(|secret| {
            secrets::constant_time_eq(
                &Sha256::digest(secret.expose_secret().as_bytes()),
                &Sha256::digest(req.client_secret.as_bytes()),
            )
        });
        if !matches {
            return Err(IdentityError::Unauthenticated(
                "unknown service client id or wrong secret",
            ));
        }
        let (access_token, access_expires) =
            self.access_token(format!("service:{}", req.client_id), None, false)?;
        Ok(IssuedTokens {
            access_token,
            access_expires,
            refresh_token: None,
        })
    }
}
