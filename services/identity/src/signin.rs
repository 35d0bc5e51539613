//! Signing in: passwords, access tokens, rotating refresh tokens, service tokens.

use chrono::{DateTime, Duration, Utc};
use mailroom_platform::auth::{self, Principal};
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
use crate::revocation::revoke_sessions;
use crate::secrets;
use crate::service::{parse_optional_id, require_admin, Identity};
use crate::signin_limits;
use crate::store::{self, users::Candidate};

/// Tokens handed to a client.
pub struct IssuedTokens {
    pub access_token: String,
    pub access_expires: DateTime<Utc>,
    pub refresh_token: Option<(String, DateTime<Utc>)>,
}

impl Identity {
    /// Signs in with a password. One account is tried, with one Argon2id run, whatever the
    /// address: the organisation named, or else the one whose claim on the address is the
    /// oldest (an organisation that takes the address later never displaces it). Throttled by
    /// client network, and paced per account past a threshold (`signin_limits`), before any
    /// hashing.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        req: pb::LoginRequest,
        client: Option<std::net::IpAddr>,
    ) -> Result<IssuedTokens> {
        let started = tokio::time::Instant::now();
        let refused = self.login_inner(req, client).await;
        if matches!(refused, Err(IdentityError::BadCredentials)) {
            // Every refusal takes the same time, whatever path it took: no timing tells an
            // unknown address from a wrong password.
            let floor = std::time::Duration::from_millis(self.config.login_failure_floor_ms);
            tokio::time::sleep_until(started + floor).await;
        }
        refused
    }

    async fn login_inner(
        &self,
        req: pb::LoginRequest,
        client: Option<std::net::IpAddr>,
    ) -> Result<IssuedTokens> {
        let email = EmailAddress::parse("login_email", &req.login_email)?;
        let named_org: Option<OrgId> = parse_optional_id("org_id", &req.org_id)?;
        let network = signin_limits::network_of(client);
        let account = signin_limits::account_key(named_org, &email);
        let known_network = signin_limits::known_network_key(&account, &network);
        let unavailable = |_| IdentityError::LimiterUnavailable("sign-in");
        let refused = |decision| match decision {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { retry_after } => Err(IdentityError::RateLimited {
                retry_after_secs: retry_after.as_secs().max(1),
            }),
        };
        // One network, any address: spraying a password over addresses or organisations.
        refused(
            self.login_network_limiter
                .hit(&network)
                .await
                .map_err(unavailable)?,
        )?;
        refused(
            self.login_limiter
                .hit(&signin_limits::network_key(&network, named_org, &email))
                .await
                .map_err(unavailable)?,
        )?;
        let past_threshold = self
            .login_slowdown
            .hit(&account)
            .await
            .map_err(unavailable)?
            != RateDecision::Allowed;
        if past_threshold
            && !self
                .login_known_networks
                .is_marked(&known_network)
                .await
                .map_err(unavailable)?
        {
            // Guessed at from many networks: one attempt per interval for the account, a
            // hard rate (concurrent guesses are refused, not queued at the hashing gate).
            refused(self.login_pace.hit(&account).await.map_err(unavailable)?)?;
        }
        let candidate =
            store::users::sign_in_candidate(&mut *self.pool.acquire().await?, &email, named_org)
                .await?;
        // Nothing is said until the password has verified: an unknown address and a wrong
        // password each cost one Argon2id run (a decoy's for the unknown address) and end in
        // the same BadCredentials.
        let stored_hash = candidate.as_ref().and_then(|c| c.password_hash.clone());
        let matches = self
            .hashing
            .verify(
                req.password,
                stored_hash
                    .clone()
                    .unwrap_or_else(|| self.decoy_hash.clone()),
            )
            .await?;
        let (Some(account), Some(verified_hash), true) = (candidate, stored_hash, matches) else {
            return Err(IdentityError::BadCredentials);
        };
        let Candidate {
            id: user_id,
            org_id,
            ..
        } = account;
        // Issued under the user row, re-read: a dismissal, password change or sign-out that
        // committed while the password was being verified is not outrun.
        let mut tx = self.pool.begin().await?;
        let Some((state, hash, admin)) = store::users::sign_in_standing(&mut tx, user_id).await?
        else {
            return Err(IdentityError::BadCredentials);
        };
        if state != UserState::Active || hash.as_ref() != Some(&verified_hash) {
            return Err(IdentityError::BadCredentials);
        }
        let issued = self
            .issue_user_tokens(&mut tx, user_id, org_id, admin, Uuid::now_v7())
            .await?;
        tx.commit().await?;
        // The owner's network from now on: not paced when the account is guessed at.
        if let Err(err) = self.login_known_networks.mark(&known_network).await {
            tracing::warn!(%err, "could not remember the network of a sign-in");
        }
        Ok(issued)
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
        // Counted per user before the current password is checked: a stolen access token is
        // no oracle for the password, and cannot hold the hashing gate.
        match self.password_change_limiter.hit(&user_id.to_string()).await {
            Ok(RateDecision::Allowed) => {}
            Ok(RateDecision::Limited { retry_after }) => {
                return Err(IdentityError::RateLimited {
                    retry_after_secs: retry_after.as_secs().max(1),
                })
            }
            // FallBackLocal never fails; refused if it ever does.
            Err(_) => return Err(IdentityError::LimiterUnavailable("password change")),
        }
        let hash =
            store::users::active_password_hash(&mut *self.pool.acquire().await?, user_id).await?;
        let Some(hash) = hash else {
            return Err(IdentityError::PermissionDenied(
                "only an active user can change their password",
            ));
        };
        if !self.hashing.verify(req.current_password, hash).await? {
            return Err(IdentityError::BadCredentials);
        }
        let new_hash = self.hashing.hash(new.expose().to_owned()).await?;
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

    /// A token for service client `client_id` to call one service (the audience it names):
    /// only that service accepts it, and only for the RPCs it lists for this client.
    #[tracing::instrument(skip_all, fields(client_id = %mailroom_aip::shown(&req.client_id), audience = %mailroom_aip::shown(&req.audience)))]
    pub fn service_token(&self, req: pb::IssueServiceTokenRequest) -> Result<IssuedTokens> {
        let known = self.config.service_clients.get(&req.client_id);
        let matches = known.is_some_and(|secret| {
            secrets::constant_time_eq(
                &service_client_digest(secret.expose_secret()),
                &Sha256::digest(req.client_secret.as_bytes()),
            )
        });
        if !matches {
            return Err(IdentityError::Unauthenticated(
                "unknown service client id or wrong secret",
            ));
        }
        if !auth::SERVICES.contains(&req.audience.as_str()) {
            return Err(IdentityError::InvalidArgument(format!(
                "`audience` names the one service the token is for: one of {}",
                auth::SERVICES.join(", ")
            )));
        }
        let mut claims = keys::claims(
            format!("service:{}", req.client_id),
            None,
            false,
            self.config.access_token_ttl_secs,
        );
        claims.aud = auth::service_audience(&req.audience).into();
        let access_expires = DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(Utc::now);
        let access_token = self
            .keys
            .sign(&claims)
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        Ok(IssuedTokens {
            access_token,
            access_expires,
            refresh_token: None,
        })
    }
}

/// What a configured service client secret's SHA-256 is: the secret as configured, or, written
/// `sha256:<64 hex digits>`, its digest itself, so that identity need not hold the secret (the
/// operator's, which no workload should hold).
fn service_client_digest(configured: &str) -> [u8; 32] {
    let digest = configured
        .strip_prefix("sha256:")
        .and_then(|digest| hex::decode(digest.trim()).ok())
        .and_then(|digest| <[u8; 32]>::try_from(digest).ok());
    digest.unwrap_or_else(|| Sha256::digest(configured.as_bytes()).into())
}

#[cfg(test)]
mod service_client_tests {
    use super::*;

    #[test]
    fn a_client_secret_is_configured_as_itself_or_as_its_sha256() {
        let secret = "operator-secret";
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(service_client_digest(secret), digest);
        assert_eq!(service_client_digest(&format!("sha256:{hex}")), digest);
        assert_eq!(
            service_client_digest(&format!("sha256:{}", hex.to_uppercase())),
            digest
        );
        // Not a digest: taken as a secret like any other.
        assert_ne!(service_client_digest("sha256:abc"), digest);
    }
}
