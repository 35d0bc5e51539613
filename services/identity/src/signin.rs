//! Signing in: passwords, access tokens, rotating refresh tokens, service tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::identity::v1 as pb;
use mailroom_platform::redis::RateDecision;
use rand::RngCore;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::addresses::constant_time_eq;
use crate::domain::{EmailAddress, NewPassword, UserState};
use crate::error::{IdentityError, Result};
use crate::keys;
use crate::passwords;
use crate::service::{parse_optional_id, require_admin, revoke_sessions, Identity};
use mailroom_platform::proto::events::v1 as ev;

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
        let org_filter = parse_optional_id("org_id", &req.org_id)?;
        if let RateDecision::Limited { retry_after } =
            self.login_limiter.hit(email.as_str()).await?
        {
            return Err(IdentityError::RateLimited {
                retry_after_secs: retry_after.as_secs().max(1),
            });
        }
        // Every active account with this login (one per organisation), or the one named.
        let candidates: Vec<(Uuid, Uuid, bool, Option<String>)> = sqlx::query_as(
            "SELECT id, org_id, is_admin, password_hash FROM users \
             WHERE login_email = $1 AND state = 'active' AND ($2::uuid IS NULL OR org_id = $2) \
             ORDER BY org_id LIMIT $3",
        )
        .bind(email.as_str())
        .bind(org_filter)
        .bind(MAX_ORGS_PER_LOGIN)
        .fetch_all(&self.pool)
        .await?;
        // Nothing is said until the password has verified: an unknown address, a wrong password
        // and an address of several organisations each cost one Argon2id round (the several
        // are verified side by side) and end in the same BadCredentials.
        let matched = self.verify_candidates(&req.password, &candidates).await?;
        let (user_id, org_id, _) = match matched.as_slice() {
            [] => return Err(IdentityError::BadCredentials),
            [one] => *one,
            several => {
                let orgs: Vec<String> = several.iter().map(|(_, org, _)| org.to_string()).collect();
                return Err(IdentityError::FailedPrecondition(format!(
                    "this address and password sign in to more than one organisation; pass `org_id`, one of: {}",
                    orgs.join(", ")
                )));
            }
        };
        // Issued under the user row, re-read: a dismissal, password change or sign-out that
        // committed while the password was being verified is not outrun.
        let mut tx = self.pool.begin().await?;
        let now: Option<(String, Option<String>, bool)> = sqlx::query_as(
            "SELECT state, password_hash, is_admin FROM users WHERE id = $1 FOR SHARE",
        )
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let verified_hash = candidates
            .iter()
            .find(|(id, ..)| *id == user_id)
            .and_then(|(.., hash)| hash.clone());
        let Some((state, hash, admin)) = now else {
            return Err(IdentityError::BadCredentials);
        };
        if UserState::from_db(&state) != UserState::Active || hash != verified_hash {
            return Err(IdentityError::BadCredentials);
        }
        let issued = self
            .issue_user_tokens(&mut tx, user_id, org_id, admin, Uuid::now_v7())
            .await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// The candidates whose password hash `password` matches, verified concurrently so the
    /// time taken does not depend on how many there are (within the cores available). With
    /// no candidate, a decoy hash is verified, so an unknown address takes as long as a known.
    async fn verify_candidates(
        &self,
        password: &str,
        candidates: &[(Uuid, Uuid, bool, Option<String>)],
    ) -> Result<Vec<(Uuid, Uuid, bool)>> {
        if candidates.is_empty() {
            let _ = passwords::verify(password.to_owned(), self.decoy_hash.clone()).await;
            return Ok(Vec::new());
        }
        let checks = candidates.iter().map(|(_, _, _, hash)| {
            let hash = hash.clone().unwrap_or_else(|| self.decoy_hash.clone());
            passwords::verify(password.to_owned(), hash)
        });
        let verdicts = futures::future::try_join_all(checks).await?;
        Ok(candidates
            .iter()
            .zip(verdicts)
            .filter(|((_, _, _, hash), ok)| *ok && hash.is_some())
            .map(|((id, org, admin, _), _)| (*id, *org, *admin))
            .collect())
    }

    async fn issue_user_tokens(
        &self,
        conn: &mut PgConnection,
        user_id: Uuid,
        org_id: Uuid,
        admin: bool,
        family: Uuid,
    ) -> Result<IssuedTokens> {
        let (access_token, access_expires) =
            self.access_token(user_id.to_string(), Some(org_id), admin)?;
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let refresh = URL_SAFE_NO_PAD.encode(secret);
        let refresh_expires = Utc::now() + Duration::seconds(self.config.refresh_token_ttl_secs);
        sqlx::query(
            "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(Uuid::now_v7())
        .bind(family)
        .bind(user_id)
        .bind(token_hash(&refresh))
        .bind(refresh_expires)
        .execute(conn)
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
        org: Option<Uuid>,
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
        let mut tx = self.pool.begin().await?;
        // The user row first (as revoking a user's sessions locks it), then the token: a refresh
        // that overlaps "sign out everywhere" either finishes before it (and its new token is
        // revoked with the rest) or sees the revocation.
        let owner: Option<Uuid> =
            sqlx::query_scalar("SELECT user_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(token_hash(refresh_token))
                .fetch_optional(&mut *tx)
                .await?;
        let Some(owner) = owner else {
            return Err(invalid);
        };
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR SHARE")
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        let row: Option<(Uuid, Uuid, Uuid, bool, bool, bool)> = sqlx::query_as(
            "SELECT id, family_id, user_id, expires_at < now(), spent_at IS NOT NULL, revoked_at IS NOT NULL \
             FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(token_hash(refresh_token))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, family, user_id, expired, spent, revoked)) = row else {
            return Err(invalid);
        };
        if spent && !revoked {
            // A spent token presented again: someone copied it. End every session of that login.
            sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL")
                .bind(family)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::warn!(%user_id, "refresh token reused; its sign-in was revoked");
            return Err(IdentityError::Unauthenticated(
                "refresh token was already used, so every session of that sign-in is revoked; sign in again",
            ));
        }
        if expired || revoked {
            return Err(invalid);
        }
        let user: Option<(Uuid, String, bool)> =
            sqlx::query_as("SELECT org_id, state, is_admin FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((org_id, state, admin)) =
            user.filter(|(_, s, _)| UserState::from_db(s) == UserState::Active)
        else {
            return Err(invalid);
        };
        let _ = state;
        sqlx::query("UPDATE refresh_tokens SET spent_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let issued = self
            .issue_user_tokens(&mut tx, user_id, org_id, admin, family)
            .await?;
        tx.commit().await?;
        Ok(issued)
    }

    #[tracing::instrument(skip_all)]
    pub async fn revoke_refresh(&self, refresh_token: &str) -> Result<()> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = \
             (SELECT family_id FROM refresh_tokens WHERE token_hash = $1) AND revoked_at IS NULL",
        )
        .bind(token_hash(refresh_token))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    pub async fn change_password(
        &self,
        principal: &Principal,
        req: pb::ChangePasswordRequest,
    ) -> Result<()> {
        let Principal::User {
            user_id, org_id, ..
        } = principal
        else {
            return Err(IdentityError::PermissionDenied(
                "a password is changed by its owner only",
            ));
        };
        let new = NewPassword::parse(&req.new_password)?;
        let hash: Option<String> = sqlx::query_scalar(
            "SELECT password_hash FROM users WHERE id = $1 AND state = 'active'",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?
        .flatten();
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
        sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
            .bind(user_id)
            .bind(new_hash)
            .execute(&mut *tx)
            .await?;
        // Every session ends with the old password, on every service.
        let revoked = revoke_sessions(
            &mut tx,
            org_id.into_uuid(),
            user_id.into_uuid(),
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
        } = principal
        else {
            return Err(IdentityError::InvalidArgument(
                "sign-out acts on a user's sessions; call it with a user's access token".into(),
            ));
        };
        let target = parse_optional_id("user_id", user_id)?.unwrap_or(caller.into_uuid());
        let mut tx = self.pool.begin().await?;
        if target != caller.into_uuid() {
            require_admin(&mut tx, principal, org_id.into_uuid()).await?;
            // Another organisation's user is answered as one that does not exist.
            crate::store::user(&mut tx, org_id.into_uuid(), target).await?;
        }
        let revoked = revoke_sessions(
            &mut tx,
            org_id.into_uuid(),
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
            constant_time_eq(
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

/// The SHA-256 a bearer secret (refresh token, reset link) is stored as.
pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
