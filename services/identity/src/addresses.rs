//! Who holds an address, moving an address away from a dismissed person, and a user changing
//! their own login with a code sent to the new address.

use chrono::{DateTime, Utc};
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::identity::v1 as pb;
use mailroom_platform::redis::RateDecision;
use mailroom_platform::types::{OrgId, UserId};
use mailroom_platform::wire::timestamp;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::domain::{EmailAddress, UserState};
use crate::error::{IdentityError, Result};
use crate::events::emit;
use crate::secrets::constant_time_eq;
use crate::service::{caller_org, parse_id, require_admin, Identity, ADMINS_ONLY};
use crate::store::addresses::TransferRecord;
use crate::store::{self, not_found, UserRow};
use ev::envelope::Payload;

/// Wrong codes allowed before a pending change is dropped.
const CODE_ATTEMPTS: i32 = 5;

/// One use of an address, as GetEmailAddressUsage reports it.
pub struct AddressUse {
    pub kind: pb::AddressUseKind,
    pub user: UserRow,
}

/// What a transfer did.
pub struct Transfer {
    pub from: UserRow,
    pub to: Option<UserRow>,
}

impl Identity {
    #[tracing::instrument(skip_all)]
    pub async fn address_usage(
        &self,
        principal: &Principal,
        address: &str,
    ) -> Result<(EmailAddress, Vec<AddressUse>)> {
        let org_id = caller_org(principal)?;
        let address = EmailAddress::parse("address", address)?;
        // The caller's standing and both lookups in one statement: a read of an address's
        // holders is one round trip, and nothing is read out unless the caller is an admin.
        let Principal::User {
            user_id: caller, ..
        } = principal
        else {
            // Refused by `caller_org` above already.
            return Err(IdentityError::PermissionDenied(ADMINS_ONLY));
        };
        let holders = store::addresses::usage_for_admin(
            &mut *self.pool.acquire().await?,
            org_id,
            *caller,
            &address,
        )
        .await?
        .ok_or(IdentityError::PermissionDenied(ADMINS_ONLY))?;
        let mut uses = Vec::new();
        for user in holders.claimants {
            if user.login_email == address.as_str() {
                uses.push(AddressUse {
                    kind: pb::AddressUseKind::Login,
                    user: user.clone(),
                });
            }
            if user.contact_email == address.as_str() {
                uses.push(AddressUse {
                    kind: pb::AddressUseKind::Contact,
                    user: user.clone(),
                });
            }
            // An INVITED user is a pending invitation (the invitations service makes one per
            // invitee): say so, so the admin knows to revoke it rather than dismiss anyone.
            if user.state() == UserState::Invited {
                uses.push(AddressUse {
                    kind: pb::AddressUseKind::PendingInvitation,
                    user,
                });
            }
        }
        // Connected mailboxes (mirrored from the registry): "mailbox of Z".
        uses.extend(holders.mailbox_owners.into_iter().map(|user| AddressUse {
            kind: pb::AddressUseKind::Mailbox,
            user,
        }));
        Ok((address, uses))
    }

    #[tracing::instrument(skip_all)]
    pub async fn transfer_address(
        &self,
        principal: &Principal,
        req: pb::TransferEmailAddressRequest,
    ) -> Result<Transfer> {
        let org_id = caller_org(principal)?;
        let address = EmailAddress::parse("address", &req.address)?;
        let from_id: UserId = parse_id("from_user_id", &req.from_user_id)?;
        let to_id: Option<UserId> = match &req.destination {
            Some(pb::transfer_email_address_request::Destination::ToUserId(id)) => {
                Some(parse_id("to_user_id", id)?)
            }
            Some(pb::transfer_email_address_request::Destination::Release(true)) => None,
            _ => {
                return Err(IdentityError::InvalidArgument(
                    "say where the address goes: `to_user_id`, or `release: true` to free it"
                        .into(),
                ))
            }
        };
        if to_id == Some(from_id) {
            return Err(IdentityError::InvalidArgument(
                "`to_user_id` is the user the address is taken from".into(),
            ));
        }
        let as_login = match pb::AddressUseKind::try_from(req.as_kind).unwrap_or_default() {
            pb::AddressUseKind::Unspecified | pb::AddressUseKind::Contact => false,
            pb::AddressUseKind::Login => true,
            _ => {
                return Err(IdentityError::InvalidArgument(
                    "`as_kind` must be LOGIN or CONTACT".into(),
                ))
            }
        };

        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        // Lock both users in id order, so two transfers between the same people cannot deadlock.
        let mut ids = vec![from_id];
        ids.extend(to_id);
        ids.sort();
        let mut locked = Vec::new();
        for id in &ids {
            locked.push(store::users::lock(&mut tx, org_id, *id).await?);
        }
        let locked_user = |id: UserId| {
            locked
                .iter()
                .find(|u| u.id == id)
                .cloned()
                .ok_or_else(|| not_found("user", id))
        };
        let from = locked_user(from_id)?;
        let holds_login = from.login_email == address.as_str();
        let holds_contact = from.contact_email == address.as_str();
        if !holds_login && !holds_contact {
            return Err(IdentityError::FailedPrecondition(format!(
                "{} does not hold {address}; GetEmailAddressUsage shows who does",
                from.display_name()
            )));
        }
        if holds_login && from.state() != UserState::Dismissed {
            return Err(IdentityError::FailedPrecondition(format!(
                "{address} is the login of {}, who is {}; a login moves only from a dismissed user",
                from.display_name(),
                from.state().describe()
            )));
        }

        let tombstone = EmailAddress::tombstone();
        store::addresses::claim(&mut tx, org_id, &tombstone, from_id).await?;
        store::addresses::replace_with_tombstone(&mut tx, from_id, &address, &tombstone).await?;
        store::addresses::release_if_unused(&mut tx, org_id, address.as_str(), from_id).await?;

        let mut to = None;
        if let Some(to_id) = to_id {
            let receiver = locked_user(to_id)?;
            store::addresses::claim(&mut tx, org_id, &address, to_id).await?;
            let previous = if as_login {
                &receiver.login_email
            } else {
                &receiver.contact_email
            };
            store::addresses::assign(&mut tx, to_id, &address, as_login).await?;
            store::addresses::release_if_unused(&mut tx, org_id, previous, to_id).await?;
            to = Some(store::users::get(&mut tx, org_id, to_id).await?);
        }

        let actor = match principal {
            Principal::User { user_id, .. } => user_id.to_string(),
            Principal::Service { name } => format!("service:{name}"),
        };
        let as_kind = match (to_id, as_login) {
            (None, _) => "RELEASED",
            (Some(_), true) => "LOGIN",
            (Some(_), false) => "CONTACT",
        };
        let transferred_at = store::addresses::record_transfer(
            &mut tx,
            TransferRecord {
                org_id,
                address: &address,
                from: from_id,
                to: to_id,
                as_kind,
                tombstone: &tombstone,
                actor: &actor,
            },
        )
        .await?;
        emit(
            &mut tx,
            org_id,
            from_id,
            principal,
            Payload::EmailAddressTransferred(ev::EmailAddressTransferred {
                address: address.to_string(),
                from_user_id: from_id.to_string(),
                to_user_id: to_id.map(|t| t.to_string()).unwrap_or_default(),
                as_kind: as_kind.into(),
                tombstone_address: tombstone.to_string(),
                transferred_at: Some(timestamp(transferred_at)),
            }),
        )
        .await?;
        let from = store::users::get(&mut tx, org_id, from_id).await?;
        tx.commit().await?;
        tracing::info!(%org_id, %from_id, to = ?to_id, as_kind, "email address transferred");
        Ok(Transfer { from, to })
    }

    #[tracing::instrument(skip_all)]
    pub async fn request_login_change(
        &self,
        principal: &Principal,
        new_login: &str,
    ) -> Result<DateTime<Utc>> {
        let (user_id, org_id) = own_user(principal)?;
        let new_login = EmailAddress::parse("new_login_email", new_login)?;
        if let RateDecision::Limited { retry_after } =
            self.code_limiter.hit(&user_id.to_string()).await?
        {
            return Err(IdentityError::RateLimited {
                retry_after_secs: retry_after.as_secs().max(1),
            });
        }
        let mut tx = self.pool.begin().await?;
        let user = store::users::lock(&mut tx, org_id, user_id).await?;
        if user.state() != UserState::Active {
            return Err(IdentityError::PermissionDenied(
                "only an active user can change their login",
            ));
        }
        if user.login_email == new_login.as_str() {
            return Err(IdentityError::InvalidArgument(format!(
                "{new_login} is already your login"
            )));
        }
        // Refuse at once when someone else holds it (checked again on confirmation).
        let holder = store::addresses::holder(&mut tx, org_id, &new_login).await?;
        if holder.is_some_and(|h| h != user_id) {
            store::addresses::claim(&mut tx, org_id, &new_login, user_id).await?;
        }
        let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
        let expires_at = store::addresses::put_login_change(
            &mut tx,
            user_id,
            &new_login,
            &code_hash(user_id, &code),
            self.config.login_code_ttl_secs,
        )
        .await?;
        tx.commit().await?;
        self.mailer
            .send_login_code(&new_login, &code, self.config.login_code_ttl_secs / 60)
            .await
            .map_err(|e| IdentityError::Mail(e.to_string()))?;
        Ok(expires_at)
    }

    #[tracing::instrument(skip_all)]
    pub async fn confirm_login_change(&self, principal: &Principal, code: &str) -> Result<UserRow> {
        let (user_id, org_id) = own_user(principal)?;
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdentityError::InvalidArgument(
                "the code is the 6 digits from the message sent to your new address".into(),
            ));
        }
        let mut tx = self.pool.begin().await?;
        let Some(pending) = store::addresses::lock_login_change(&mut tx, user_id).await? else {
            return Err(IdentityError::FailedPrecondition(
                "no login change is pending; request one with RequestLoginEmailChange".into(),
            ));
        };
        if pending.expired || pending.attempts >= CODE_ATTEMPTS {
            store::addresses::drop_login_change(&mut tx, user_id).await?;
            tx.commit().await?;
            return Err(IdentityError::FailedPrecondition(
                "the code has expired or was mistyped too often; request a new one".into(),
            ));
        }
        if !constant_time_eq(&pending.code_hash, &code_hash(user_id, code)) {
            store::addresses::count_wrong_code(&mut tx, user_id).await?;
            tx.commit().await?;
            return Err(IdentityError::InvalidArgument(format!(
                "the code is wrong; {} attempt(s) left",
                CODE_ATTEMPTS - pending.attempts - 1
            )));
        }
        let user = store::users::lock(&mut tx, org_id, user_id).await?;
        let new_login = EmailAddress::from_stored(pending.new_address);
        store::addresses::claim(&mut tx, org_id, &new_login, user_id).await?;
        store::users::set_login(&mut tx, user_id, &new_login).await?;
        store::addresses::release_if_unused(&mut tx, org_id, &user.login_email, user_id).await?;
        store::addresses::drop_login_change(&mut tx, user_id).await?;
        // A reset link went to the old address, which may be someone else's soon.
        store::sessions::spend_resets_of(&mut tx, user_id).await?;
        emit(
            &mut tx,
            org_id,
            user_id,
            principal,
            Payload::LoginEmailChanged(ev::LoginEmailChanged {
                user_id: user_id.to_string(),
                previous_address: user.login_email.clone(),
                new_address: new_login.to_string(),
            }),
        )
        .await?;
        let user = store::users::get(&mut tx, org_id, user_id).await?;
        tx.commit().await?;
        Ok(user)
    }
}

fn own_user(principal: &Principal) -> Result<(UserId, OrgId)> {
    match principal {
        Principal::User {
            user_id, org_id, ..
        } => Ok((*user_id, *org_id)),
        Principal::Service { .. } => Err(IdentityError::PermissionDenied(
            "a login is changed only by its owner, signed in as themselves",
        )),
    }
}

fn code_hash(user_id: UserId, code: &str) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(user_id.as_uuid().as_bytes());
    hasher.update(code.as_bytes());
    hasher.finalize().to_vec()
}
