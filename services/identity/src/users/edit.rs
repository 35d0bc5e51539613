//! UpdateUser (names, position, department, contact address — the login changes only by its
//! owner, in `addresses`) and SetAdmin (never demoting the last active admin).

use mailroom_platform::auth::Principal;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::identity::v1 as pb;
use mailroom_platform::types::{DepartmentId, UserId};

use super::{ensure_another_admin, lock_for_change};
use crate::domain::{EmailAddress, Text, UserState, NAME_MAX, POSITION_MAX};
use crate::error::{IdentityError, Result};
use crate::events::{emit, emit_user, id_or_empty};
use crate::revocation::revoke_access_tokens;
use crate::service::{
    caller_org, mask_paths, parse_id, parse_optional_id, require_admin, required, scope,
    unsupported_path, Identity,
};
use crate::store::{self, UserRow};
use ev::envelope::Payload;

impl Identity {
    #[tracing::instrument(skip_all)]
    pub async fn update_user(
        &self,
        principal: &Principal,
        req: pb::UpdateUserRequest,
    ) -> Result<UserRow> {
        let u = required("user", req.user)?;
        let org_id = scope(principal, &u.org_id)?;
        let id: UserId = parse_id("user.id", &u.id)?;
        let paths = mask_paths(req.update_mask)?;
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        let before = store::users::lock(&mut tx, org_id, id).await?;
        let mut after = before.clone();
        for path in &paths {
            match path.as_str() {
                "first_name" => {
                    after.first_name =
                        Text::parse("user.first_name", &u.first_name, NAME_MAX, false)?.into_inner()
                }
                "last_name" => {
                    after.last_name =
                        Text::parse("user.last_name", &u.last_name, NAME_MAX, false)?.into_inner()
                }
                "position" => {
                    after.position =
                        Text::parse("user.position", &u.position, POSITION_MAX, false)?
                            .into_inner()
                }
                "department_id" => {
                    after.department_id =
                        parse_optional_id::<DepartmentId>("user.department_id", &u.department_id)?;
                    if let Some(d) = after.department_id {
                        store::departments::get(&mut tx, org_id, d).await?;
                    }
                }
                "contact_email" => {
                    let contact = EmailAddress::parse("user.contact_email", &u.contact_email)?;
                    store::addresses::claim(&mut tx, org_id, &contact, id).await?;
                    after.contact_email = contact.to_string();
                }
                "login_email" => {
                    return Err(IdentityError::PermissionDenied(
                        "only the user can change their login, with RequestLoginEmailChange and the code sent to the new address",
                    ))
                }
                "admin" => {
                    return Err(IdentityError::InvalidArgument(
                        "use SetAdmin to change `admin`".into(),
                    ))
                }
                "state" => {
                    return Err(IdentityError::InvalidArgument(
                        "use DismissUser or RehireUser to change `state`".into(),
                    ))
                }
                other => {
                    return Err(unsupported_path(
                        other,
                        "first_name, last_name, position, department_id, contact_email",
                    ))
                }
            }
        }
        store::users::update_profile(&mut tx, &after).await?;
        if before.contact_email != after.contact_email {
            store::addresses::release_if_unused(&mut tx, org_id, &before.contact_email, id).await?;
            emit(
                &mut tx,
                org_id,
                id,
                principal,
                Payload::ContactEmailChanged(ev::ContactEmailChanged {
                    user_id: id.to_string(),
                    previous_address: before.contact_email.clone(),
                    new_address: after.contact_email.clone(),
                }),
            )
            .await?;
        }
        let user = store::users::get(&mut tx, org_id, id).await?;
        let changed_fields = changed_fields(&before, &user);
        if !changed_fields.is_empty() {
            emit_user(&mut tx, principal, &user, |user| {
                Payload::UserUpdated(ev::UserUpdated {
                    user,
                    changed_fields,
                    previous_department_id: id_or_empty(before.department_id),
                })
            })
            .await?;
        }
        tx.commit().await?;
        Ok(user)
    }

    #[tracing::instrument(skip_all)]
    pub async fn set_admin(
        &self,
        principal: &Principal,
        req: pb::SetAdminRequest,
    ) -> Result<UserRow> {
        let org_id = caller_org(principal)?;
        let id: UserId = parse_id("id", &req.id)?;
        let mut tx = self.pool.begin().await?;
        let (org, user) = lock_for_change(&mut tx, principal, org_id, id).await?;
        if user.is_admin == req.admin {
            return Ok(user);
        }
        if req.admin && user.state() == UserState::Dismissed {
            return Err(IdentityError::FailedPrecondition(format!(
                "{} is dismissed; rehire them before making them an admin",
                user.display_name()
            )));
        }
        if !req.admin {
            ensure_another_admin(&mut tx, &org, id).await?;
        }
        store::users::set_admin(&mut tx, id, req.admin).await?;
        // A demoted admin's tokens still say `admin`: they are void from now (the refresh
        // token stays, and a refresh issues a token without the claim).
        let revoked = if req.admin {
            None
        } else {
            Some(
                revoke_access_tokens(
                    &mut tx,
                    org_id,
                    id,
                    principal,
                    ev::RevocationReason::AdminRevoked,
                )
                .await?,
            )
        };
        emit(
            &mut tx,
            org_id,
            id,
            principal,
            Payload::AdminChanged(ev::AdminChanged {
                user_id: id.to_string(),
                admin: req.admin,
            }),
        )
        .await?;
        let user = store::users::get(&mut tx, org_id, id).await?;
        tx.commit().await?;
        if let Some(revoked) = revoked {
            revoked.apply(self);
        }
        Ok(user)
    }
}

/// The fields UpdateUser changed, by their wire names.
fn changed_fields(before: &UserRow, after: &UserRow) -> Vec<String> {
    [
        ("first_name", before.first_name != after.first_name),
        ("last_name", before.last_name != after.last_name),
        ("position", before.position != after.position),
        ("department_id", before.department_id != after.department_id),
        ("contact_email", before.contact_email != after.contact_email),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(name, _)| name.to_owned())
    .collect()
}
