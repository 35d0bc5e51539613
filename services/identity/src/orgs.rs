//! Organisations: made by the platform operator with their first admin, read, and edited
//! (the seat limit, being the plan, only by the operator).

use mailroom_platform::auth::Principal;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::identity::v1 as pb;
use mailroom_platform::types::{OrgId, UserId};

use crate::domain::{EmailAddress, NewPassword, Text, UserState, NAME_MAX, UNIT_NAME_MAX};
use crate::error::{IdentityError, Joining, Result};
use crate::events::{emit, emit_user};
use crate::seats;
use crate::service::{mask_paths, require_admin, required, scope, unsupported_path, Identity};
use crate::store::{self, OrgRow};
use ev::envelope::Payload;

impl Identity {
    #[tracing::instrument(skip_all)]
    pub async fn create_organization(
        &self,
        principal: &Principal,
        req: pb::CreateOrganizationRequest,
    ) -> Result<OrgRow> {
        if !matches!(principal, Principal::Service { .. }) {
            return Err(IdentityError::PermissionDenied(
                "organisations are created by the platform operator with a service credential (`mailroom ctl org create`)",
            ));
        }
        let name = Text::parse("display_name", &req.display_name, UNIT_NAME_MAX, true)?;
        let seat_limit = seat_limit(req.seat_limit)?;
        let admin = required("first_admin", req.first_admin)?;
        let login = EmailAddress::parse("first_admin.login_email", &admin.login_email)?;
        let first = Text::parse("first_admin.first_name", &admin.first_name, NAME_MAX, false)?;
        let last = Text::parse("first_admin.last_name", &admin.last_name, NAME_MAX, false)?;
        let password = NewPassword::parse(&admin.password)?;
        let hash = self.hashing.hash(password.expose().to_owned()).await?;
        let allow_everyone = req
            .settings
            .map(|s| s.allow_everyone_to_invite)
            .unwrap_or(true);

        let org_id = OrgId::new();
        let admin_id = UserId::new();
        let mut tx = self.pool.begin().await?;
        let org =
            store::orgs::insert(&mut tx, org_id, name.as_str(), seat_limit, allow_everyone).await?;
        seats::take(&mut tx, &org, 1, Joining::FirstAdmin).await?;
        store::addresses::claim(&mut tx, org_id, &login, admin_id).await?;
        let user = store::users::insert(
            &mut tx,
            store::users::NewUser {
                id: admin_id,
                org_id,
                state: UserState::Active,
                login: &login,
                contact: &login,
                first_name: first.as_str(),
                last_name: last.as_str(),
                position: "",
                department_id: None,
                admin: true,
                password_hash: Some(hash),
            },
        )
        .await?;
        let org = org.into_row();
        emit(
            &mut tx,
            org_id,
            org_id,
            principal,
            Payload::OrganizationCreated(ev::OrganizationCreated {
                display_name: org.display_name.clone(),
                seat_limit: org.seat_limit,
                allow_everyone_to_invite: org.allow_everyone_to_invite,
            }),
        )
        .await?;
        emit_user(&mut tx, principal, &user, |user| {
            Payload::UserCreated(ev::UserCreated { user })
        })
        .await?;
        tx.commit().await?;
        Ok(org)
    }

    #[tracing::instrument(skip_all)]
    pub async fn get_organization(&self, principal: &Principal, org_id: &str) -> Result<OrgRow> {
        let org_id = scope(principal, org_id)?;
        store::orgs::get(&mut *self.pool.acquire().await?, org_id).await
    }

    #[tracing::instrument(skip_all)]
    pub async fn update_organization(
        &self,
        principal: &Principal,
        req: pb::UpdateOrganizationRequest,
    ) -> Result<OrgRow> {
        let org = required("organization", req.organization)?;
        let org_id = scope(principal, &org.id)?;
        let paths = mask_paths(req.update_mask)?;
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        let mut row = store::orgs::lock(&mut tx, org_id).await?.into_row();
        for path in &paths {
            match path.as_str() {
                "display_name" => {
                    row.display_name = Text::parse(
                        "organization.display_name",
                        &org.display_name,
                        UNIT_NAME_MAX,
                        true,
                    )?
                    .into_inner()
                }
                "seat_limit" => {
                    if !matches!(principal, Principal::Service { .. }) {
                        return Err(IdentityError::PermissionDenied(
                            "the seat limit is the organisation's plan, set by the platform operator's service credential; \
                             ask your operator to change the plan (admins see the limit and the seats used in GetOrganization)",
                        ));
                    }
                    row.seat_limit = seat_limit(org.seat_limit)?;
                }
                "settings.allow_everyone_to_invite" | "settings" => {
                    row.allow_everyone_to_invite = org
                        .settings
                        .as_ref()
                        .map(|s| s.allow_everyone_to_invite)
                        .unwrap_or(false)
                }
                other => {
                    return Err(unsupported_path(
                        other,
                        "display_name, seat_limit, settings.allow_everyone_to_invite",
                    ))
                }
            }
        }
        let row = store::orgs::update(&mut tx, &row).await?;
        emit(
            &mut tx,
            org_id,
            org_id,
            principal,
            Payload::OrganizationUpdated(ev::OrganizationUpdated {
                display_name: row.display_name.clone(),
                seat_limit: row.seat_limit,
                allow_everyone_to_invite: row.allow_everyone_to_invite,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }
}

/// A plan's seat limit as asked for: 0 (unlimited) or more.
fn seat_limit(asked: i32) -> Result<i32> {
    if asked < 0 {
        return Err(IdentityError::InvalidArgument(
            "`seat_limit` cannot be negative (0 means unlimited)".into(),
        ));
    }
    Ok(asked)
}
