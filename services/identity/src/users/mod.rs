//! People of an organisation, one file per use case:
//! - [`create`]: CreateUser (ACTIVE with a password, INVITED without), taking a seat;
//! - [`edit`]: UpdateUser (names, position, department, contact address) and SetAdmin;
//! - [`lifecycle`]: DismissUser and RehireUser (which takes a seat again);
//! - [`list`]: GetUser and ListUsers, the directory with its filters and orders.
//!
//! An organisation always keeps an active admin: the last one can be neither dismissed nor
//! demoted ([`ensure_another_admin`], under the organisation's lock).

pub mod create;
pub mod edit;
pub mod lifecycle;
pub mod list;

use mailroom_platform::auth::Principal;
use mailroom_platform::types::{OrgId, UserId};
use sqlx::PgConnection;

use crate::error::{IdentityError, Result};
use crate::service::require_admin;
use crate::store::{self, LockedOrg, UserRow};

/// What an admin's change to one person starts with, in this order: the caller checked, the
/// organisation locked (admins and seats change under it), the person's row locked.
async fn lock_for_change(
    conn: &mut PgConnection,
    principal: &Principal,
    org_id: OrgId,
    id: UserId,
) -> Result<(LockedOrg, UserRow)> {
    require_admin(conn, principal, org_id).await?;
    let org = store::orgs::lock(conn, org_id).await?;
    let user = store::users::lock(conn, org_id, id).await?;
    Ok((org, user))
}

/// Refuses when `except` is the organisation's last active admin.
async fn ensure_another_admin(
    conn: &mut PgConnection,
    org: &LockedOrg,
    except: UserId,
) -> Result<()> {
    if store::users::other_active_admins(conn, org.id, except).await? == 0 {
        return Err(IdentityError::FailedPrecondition(
            "this is the organisation's last active admin; make someone else an admin first".into(),
        ));
    }
    Ok(())
}
