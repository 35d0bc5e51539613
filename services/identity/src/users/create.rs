//! CreateUser: an admin adds a person directly — ACTIVE when a password is given, INVITED
//! (to set one later) when not. The person takes a seat and claims both addresses.

use mailroom_platform::auth::Principal;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::identity::v1 as pb;
use mailroom_platform::types::{DepartmentId, UserId};

use crate::domain::{EmailAddress, NewPassword, Text, UserState, NAME_MAX, POSITION_MAX};
use crate::error::{Joining, Result};
use crate::events::emit_user;
use crate::seats;
use crate::service::{parse_optional_id, require_admin, required, scope, Identity};
use crate::store::{self, UserRow};
use ev::envelope::Payload;

impl Identity {
    #[tracing::instrument(skip_all)]
    pub async fn create_user(
        &self,
        principal: &Principal,
        req: pb::CreateUserRequest,
    ) -> Result<UserRow> {
        let u = required("user", req.user)?;
        let org_id = scope(principal, &u.org_id)?;
        let login = EmailAddress::parse("user.login_email", &u.login_email)?;
        let contact = if u.contact_email.trim().is_empty() {
            login.clone()
        } else {
            EmailAddress::parse("user.contact_email", &u.contact_email)?
        };
        let first = Text::parse("user.first_name", &u.first_name, NAME_MAX, false)?;
        let last = Text::parse("user.last_name", &u.last_name, NAME_MAX, false)?;
        let position = Text::parse("user.position", &u.position, POSITION_MAX, false)?;
        let department_id: Option<DepartmentId> =
            parse_optional_id("user.department_id", &u.department_id)?;
        let hash = if req.password.is_empty() {
            None
        } else {
            let password = NewPassword::parse(&req.password)?;
            Some(self.hashing.hash(password.expose().to_owned()).await?)
        };

        let id = UserId::new();
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        let org = store::orgs::lock(&mut tx, org_id).await?;
        seats::take(&mut tx, &org, 1, Joining::NewUser).await?;
        if let Some(d) = department_id {
            store::departments::get(&mut tx, org_id, d).await?;
        }
        store::addresses::claim(&mut tx, org_id, &login, id).await?;
        store::addresses::claim(&mut tx, org_id, &contact, id).await?;
        let state = if hash.is_some() {
            UserState::Active
        } else {
            UserState::Invited
        };
        let user = store::users::insert(
            &mut tx,
            store::users::NewUser {
                id,
                org_id,
                state,
                login: &login,
                contact: &contact,
                first_name: first.as_str(),
                last_name: last.as_str(),
                position: position.as_str(),
                department_id,
                admin: u.admin,
                password_hash: hash,
            },
        )
        .await?;
        emit_user(&mut tx, principal, &user, |user| {
            Payload::UserCreated(ev::UserCreated { user })
        })
        .await?;
        tx.commit().await?;
        Ok(user)
    }
}
