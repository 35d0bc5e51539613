//! Organisations and users: creation, the directory listing, edits, dismissal and rehiring,
//! the admin flag.

use chrono::{DateTime, Utc};
use mailroom_platform::aip::{self, Comparison, Op, Value};
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::identity::v1 as pb;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::{EmailAddress, NewPassword, Text, UserState};
use crate::error::{IdentityError, Result};
use crate::service::{
    caller_org, emit, parse_id, parse_optional_id, reload, require_admin, revoke_access_tokens,
    revoke_sessions, scope, user_snapshot, Identity,
};
use crate::store::{self, OrgRow, UserRow, ORG_COLUMNS, USER_COLUMNS};
use ev::envelope::Payload;

pub const NAME_MAX: usize = 100;
pub const POSITION_MAX: usize = 200;

fn missing(field: &str) -> IdentityError {
    IdentityError::InvalidArgument(format!("`{field}` is required"))
}

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
        let name = Text::parse("display_name", &req.display_name, 200, true)?;
        if req.seat_limit < 0 {
            return Err(IdentityError::InvalidArgument(
                "`seat_limit` cannot be negative (0 means unlimited)".into(),
            ));
        }
        let admin = req.first_admin.ok_or_else(|| missing("first_admin"))?;
        let login = EmailAddress::parse("first_admin.login_email", &admin.login_email)?;
        let first = Text::parse("first_admin.first_name", &admin.first_name, NAME_MAX, false)?;
        let last = Text::parse("first_admin.last_name", &admin.last_name, NAME_MAX, false)?;
        let password = NewPassword::parse(&admin.password)?;
        let hash = crate::passwords::hash(password.expose().to_owned()).await?;
        let allow_everyone = req
            .settings
            .map(|s| s.allow_everyone_to_invite)
            .unwrap_or(true);

        let org_id = Uuid::now_v7();
        let admin_id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        let org: OrgRow = sqlx::query_as(&format!(
            "INSERT INTO organizations (id, display_name, seat_limit, allow_everyone_to_invite) VALUES ($1, $2, $3, $4) \
             RETURNING {ORG_COLUMNS}",
        ))
        .bind(org_id)
        .bind(name.as_str())
        .bind(req.seat_limit)
        .bind(allow_everyone)
        .fetch_one(&mut *tx)
        .await?;
        store::claim(&mut tx, org_id, &login, admin_id).await?;
        let user = insert_user(
            &mut tx,
            NewUser {
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
        emit(
            &mut tx,
            org_id,
            admin_id,
            principal,
            Payload::UserCreated(ev::UserCreated {
                user: Some(user_snapshot(&user)),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(org)
    }

    #[tracing::instrument(skip_all)]
    pub async fn get_organization(&self, principal: &Principal, org_id: &str) -> Result<OrgRow> {
        let org_id = scope(principal, org_id)?;
        sqlx::query_as(&format!(
            "SELECT {ORG_COLUMNS} FROM organizations WHERE id = $1"
        ))
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| store::not_found("organisation", org_id))
    }

    #[tracing::instrument(skip_all)]
    pub async fn update_organization(
        &self,
        principal: &Principal,
        req: pb::UpdateOrganizationRequest,
    ) -> Result<OrgRow> {
        let org = req.organization.ok_or_else(|| missing("organization"))?;
        let org_id = scope(principal, &org.id)?;
        let paths = mask_paths(req.update_mask)?;
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        let mut row = store::org_for_update(&mut tx, org_id).await?;
        for path in &paths {
            match path.as_str() {
                "display_name" => {
                    row.display_name =
                        Text::parse("organization.display_name", &org.display_name, 200, true)?
                            .into_inner()
                }
                "seat_limit" => {
                    if !matches!(principal, Principal::Service { .. }) {
                        return Err(IdentityError::PermissionDenied(
                            "the seat limit is the organisation's plan, set by the platform operator's service credential; \
                             ask your operator to change the plan (admins see the limit and the seats used in GetOrganization)",
                        ));
                    }
                    if org.seat_limit < 0 {
                        return Err(IdentityError::InvalidArgument(
                            "`seat_limit` cannot be negative (0 means unlimited)".into(),
                        ));
                    }
                    row.seat_limit = org.seat_limit;
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
        let row: OrgRow = sqlx::query_as(&format!(
            "UPDATE organizations SET display_name = $2, seat_limit = $3, allow_everyone_to_invite = $4, updated_at = now() \
             WHERE id = $1 RETURNING {ORG_COLUMNS}",
        ))
        .bind(org_id)
        .bind(&row.display_name)
        .bind(row.seat_limit)
        .bind(row.allow_everyone_to_invite)
        .fetch_one(&mut *tx)
        .await?;
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

    #[tracing::instrument(skip_all)]
    pub async fn create_user(
        &self,
        principal: &Principal,
        req: pb::CreateUserRequest,
    ) -> Result<UserRow> {
        let u = req.user.ok_or_else(|| missing("user"))?;
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
        let department_id = parse_optional_id("user.department_id", &u.department_id)?;
        let hash = if req.password.is_empty() {
            None
        } else {
            let password = NewPassword::parse(&req.password)?;
            Some(crate::passwords::hash(password.expose().to_owned()).await?)
        };

        let id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        let org = store::org_for_update(&mut tx, org_id).await?;
        store::ensure_seat(&mut tx, &org).await?;
        if let Some(d) = department_id {
            store::department(&mut tx, org_id, d).await?;
        }
        store::claim(&mut tx, org_id, &login, id).await?;
        store::claim(&mut tx, org_id, &contact, id).await?;
        let state = if hash.is_some() {
            UserState::Active
        } else {
            UserState::Invited
        };
        let user = insert_user(
            &mut tx,
            NewUser {
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
        emit(
            &mut tx,
            org_id,
            id,
            principal,
            Payload::UserCreated(ev::UserCreated {
                user: Some(user_snapshot(&user)),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    #[tracing::instrument(skip_all)]
    pub async fn get_user(&self, principal: &Principal, id: &str) -> Result<UserRow> {
        let org_id = caller_org(principal)?;
        let id = parse_id("id", id)?;
        let mut conn = self.pool.acquire().await?;
        store::user(&mut conn, org_id, id).await
    }

    #[tracing::instrument(skip_all)]
    pub async fn list_users(
        &self,
        principal: &Principal,
        req: pb::ListUsersRequest,
    ) -> Result<(Vec<UserRow>, String, i64)> {
        let org_id = caller_org(principal)?;
        let filter = aip::parse_filter(&req.filter)?;
        let order = UserOrder::parse(&req.order_by)?;
        let limit = aip::page_size(req.page_size, 50, 1000)?;
        let query_key = format!("users|{}|{}", req.filter, req.order_by);
        let after: Option<(String, Uuid)> = aip::decode_page_token(&query_key, &req.page_token)?;

        let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM users WHERE org_id = ");
        count.push_bind(org_id);
        push_user_filters(&mut count, &filter)?;
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;

        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE org_id = "
        ));
        q.push_bind(org_id);
        push_user_filters(&mut q, &filter)?;
        order.push_after(&mut q, after.as_ref())?;
        order.push_order(&mut q);
        q.push(" LIMIT ").push_bind(limit + 1);
        let mut rows: Vec<UserRow> = q.build_query_as().fetch_all(&self.pool).await?;
        let next = page_after(&mut rows, limit, |last| {
            aip::encode_page_token(&query_key, &(order.key_of(last), last.id))
        });
        Ok((rows, next, total))
    }

    #[tracing::instrument(skip_all)]
    pub async fn update_user(
        &self,
        principal: &Principal,
        req: pb::UpdateUserRequest,
    ) -> Result<UserRow> {
        let u = req.user.ok_or_else(|| missing("user"))?;
        let org_id = scope(principal, &u.org_id)?;
        let id = parse_id("user.id", &u.id)?;
        let paths = mask_paths(req.update_mask)?;
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        let before = store::user_for_update(&mut tx, org_id, id).await?;
        let mut after = before.clone();
        for path in &paths {
            match path.as_str() {
                "first_name" => after.first_name = Text::parse("user.first_name", &u.first_name, NAME_MAX, false)?.into_inner(),
                "last_name" => after.last_name = Text::parse("user.last_name", &u.last_name, NAME_MAX, false)?.into_inner(),
                "position" => after.position = Text::parse("user.position", &u.position, POSITION_MAX, false)?.into_inner(),
                "department_id" => {
                    after.department_id = parse_optional_id("user.department_id", &u.department_id)?;
                    if let Some(d) = after.department_id {
                        store::department(&mut tx, org_id, d).await?;
                    }
                }
                "contact_email" => {
                    let contact = EmailAddress::parse("user.contact_email", &u.contact_email)?;
                    store::claim(&mut tx, org_id, &contact, id).await?;
                    after.contact_email = contact.to_string();
                }
                "login_email" => {
                    return Err(IdentityError::PermissionDenied(
                        "only the user can change their login, with RequestLoginEmailChange and the code sent to the new address",
                    ))
                }
                "admin" => return Err(IdentityError::InvalidArgument("use SetAdmin to change `admin`".into())),
                "state" => return Err(IdentityError::InvalidArgument("use DismissUser or RehireUser to change `state`".into())),
                other => return Err(unsupported_path(other, "first_name, last_name, position, department_id, contact_email")),
            }
        }
        sqlx::query(
            "UPDATE users SET first_name = $3, last_name = $4, position = $5, department_id = $6, contact_email = $7, updated_at = now() \
             WHERE org_id = $1 AND id = $2",
        )
        .bind(org_id)
        .bind(id)
        .bind(&after.first_name)
        .bind(&after.last_name)
        .bind(&after.position)
        .bind(after.department_id)
        .bind(&after.contact_email)
        .execute(&mut *tx)
        .await?;
        if before.contact_email != after.contact_email {
            store::release_if_unused(&mut tx, org_id, &before.contact_email, id).await?;
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
        let user = reload(&mut tx, org_id, id).await?;
        let changed = changed_fields(&before, &user);
        if !changed.is_empty() {
            emit(
                &mut tx,
                org_id,
                id,
                principal,
                Payload::UserUpdated(ev::UserUpdated {
                    user: Some(user_snapshot(&user)),
                    changed_fields: changed,
                    previous_department_id: before
                        .department_id
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(user)
    }

    #[tracing::instrument(skip_all)]
    pub async fn dismiss_user(&self, principal: &Principal, id: &str) -> Result<UserRow> {
        let org_id = caller_org(principal)?;
        let id = parse_id("id", id)?;
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        store::org_for_update(&mut tx, org_id).await?;
        let user = store::user_for_update(&mut tx, org_id, id).await?;
        if user.state() == UserState::Dismissed {
            return Err(IdentityError::FailedPrecondition(format!(
                "{} is already dismissed",
                user.display_name()
            )));
        }
        if user.is_admin && user.state() == UserState::Active {
            ensure_another_admin(&mut tx, org_id, id).await?;
        }
        sqlx::query("UPDATE users SET state = 'dismissed', dismissed_at = now(), updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let revoked = revoke_sessions(
            &mut tx,
            org_id,
            id,
            principal,
            ev::RevocationReason::Dismissed,
        )
        .await?;
        // A dismissed person supervises no one: their departments lose their head.
        let headed: Vec<crate::store::DepartmentRow> = sqlx::query_as(&format!(
            "UPDATE departments SET head_user_id = NULL, updated_at = now() WHERE org_id = $1 AND head_user_id = $2 RETURNING {}",
            crate::store::DEPARTMENT_COLUMNS
        ))
        .bind(org_id)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        for d in &headed {
            emit(
                &mut tx,
                org_id,
                d.id,
                principal,
                Payload::DepartmentUpdated(ev::DepartmentUpdated {
                    department: Some(crate::service::department_snapshot(d)),
                    previous_parent_id: d.parent_id.map(|p| p.to_string()).unwrap_or_default(),
                    previous_head_user_id: id.to_string(),
                }),
            )
            .await?;
        }
        let user = reload(&mut tx, org_id, id).await?;
        emit(
            &mut tx,
            org_id,
            id,
            principal,
            Payload::UserDismissed(ev::UserDismissed {
                user: Some(user_snapshot(&user)),
            }),
        )
        .await?;
        tx.commit().await?;
        revoked.apply(self);
        Ok(user)
    }

    #[tracing::instrument(skip_all)]
    pub async fn rehire_user(&self, principal: &Principal, id: &str) -> Result<UserRow> {
        let org_id = caller_org(principal)?;
        let id = parse_id("id", id)?;
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        let org = store::org_for_update(&mut tx, org_id).await?;
        let user = store::user_for_update(&mut tx, org_id, id).await?;
        if user.state() != UserState::Dismissed {
            return Err(IdentityError::FailedPrecondition(format!(
                "{} is {}, not dismissed; only dismissed users can be rehired",
                user.display_name(),
                user.state().describe()
            )));
        }
        store::ensure_seat(&mut tx, &org).await?;
        sqlx::query(
            "UPDATE users SET state = CASE WHEN password_hash IS NULL THEN 'invited' ELSE 'active' END, \
             dismissed_at = NULL, updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let user = reload(&mut tx, org_id, id).await?;
        emit(
            &mut tx,
            org_id,
            id,
            principal,
            Payload::UserRehired(ev::UserRehired {
                user: Some(user_snapshot(&user)),
            }),
        )
        .await?;
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
        let id = parse_id("id", &req.id)?;
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        store::org_for_update(&mut tx, org_id).await?;
        let user = store::user_for_update(&mut tx, org_id, id).await?;
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
            ensure_another_admin(&mut tx, org_id, id).await?;
        }
        sqlx::query("UPDATE users SET is_admin = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(req.admin)
            .execute(&mut *tx)
            .await?;
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
        let user = reload(&mut tx, org_id, id).await?;
        tx.commit().await?;
        if let Some(revoked) = revoked {
            revoked.apply(self);
        }
        Ok(user)
    }
}

async fn ensure_another_admin(conn: &mut PgConnection, org_id: Uuid, except: Uuid) -> Result<()> {
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE org_id = $1 AND id <> $2 AND is_admin AND state = 'active'",
    )
    .bind(org_id)
    .bind(except)
    .fetch_one(conn)
    .await?;
    if others == 0 {
        return Err(IdentityError::FailedPrecondition(
            "this is the organisation's last active admin; make someone else an admin first".into(),
        ));
    }
    Ok(())
}

pub(crate) struct NewUser<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub state: UserState,
    pub login: &'a EmailAddress,
    pub contact: &'a EmailAddress,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub position: &'a str,
    pub department_id: Option<Uuid>,
    pub admin: bool,
    pub password_hash: Option<String>,
}

pub(crate) async fn insert_user(conn: &mut PgConnection, u: NewUser<'_>) -> Result<UserRow> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO users (id, org_id, state, login_email, contact_email, first_name, last_name, position, department_id, is_admin, password_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {USER_COLUMNS}"
    ))
    .bind(u.id)
    .bind(u.org_id)
    .bind(u.state.as_db())
    .bind(u.login.as_str())
    .bind(u.contact.as_str())
    .bind(u.first_name)
    .bind(u.last_name)
    .bind(u.position)
    .bind(u.department_id)
    .bind(u.admin)
    .bind(u.password_hash)
    .fetch_one(conn)
    .await?)
}

fn changed_fields(before: &UserRow, after: &UserRow) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |name: &str, changed: bool| {
        if changed {
            out.push(name.to_owned());
        }
    };
    check("first_name", before.first_name != after.first_name);
    check("last_name", before.last_name != after.last_name);
    check("position", before.position != after.position);
    check("department_id", before.department_id != after.department_id);
    check("contact_email", before.contact_email != after.contact_email);
    out
}

pub(crate) fn mask_paths(mask: Option<prost_types::FieldMask>) -> Result<Vec<String>> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(IdentityError::InvalidArgument(
            "`update_mask` is required: list the fields to change (AIP-161)".into(),
        ));
    }
    Ok(paths)
}

pub(crate) fn unsupported_path(path: &str, allowed: &str) -> IdentityError {
    IdentityError::InvalidArgument(format!(
        "`update_mask` path `{path}` cannot be updated here; allowed: {allowed}"
    ))
}

/// Drops the look-ahead row and returns the next page token (empty on the last page).
pub(crate) fn page_after<T>(rows: &mut Vec<T>, limit: i64, token: impl Fn(&T) -> String) -> String {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(token).unwrap_or_default()
    } else {
        String::new()
    }
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn bad_filter(c: &Comparison) -> IdentityError {
    IdentityError::InvalidArgument(format!(
        "filter on `{}` with that operator is not supported; use state = INVITED|ACTIVE|DISMISSED, department_id = \"…\", admin = true|false, name : \"…\", email : \"…\"",
        c.field
    ))
}

pub(crate) fn push_user_filters(
    q: &mut QueryBuilder<'_, Postgres>,
    filter: &[Comparison],
) -> Result<()> {
    for c in filter {
        match (c.field.as_str(), c.op) {
            ("state", Op::Eq) => {
                let state =
                    UserState::from_filter(&c.value.as_text()).ok_or_else(|| bad_filter(c))?;
                q.push(" AND state = ").push_bind(state.as_db());
            }
            ("department_id", Op::Eq) => match c.value.as_text().as_str() {
                "" => {
                    q.push(" AND department_id IS NULL");
                }
                text => {
                    let id = parse_id("filter department_id", text)?;
                    q.push(" AND department_id = ").push_bind(id);
                }
            },
            ("admin", Op::Eq) => match &c.value {
                Value::Bool(b) => {
                    q.push(" AND is_admin = ").push_bind(*b);
                }
                _ => return Err(bad_filter(c)),
            },
            ("name", Op::Has) => {
                q.push(" AND (first_name || ' ' || last_name) ILIKE ")
                    .push_bind(format!("%{}%", escape_like(&c.value.as_text())));
            }
            ("email", Op::Has) => {
                let pattern = format!("%{}%", escape_like(&c.value.as_text().to_lowercase()));
                q.push(" AND (login_email LIKE ")
                    .push_bind(pattern.clone())
                    .push(" OR contact_email LIKE ")
                    .push_bind(pattern)
                    .push(")");
            }
            _ => return Err(bad_filter(c)),
        }
    }
    Ok(())
}

/// How a user listing is ordered, and the keyset that continues it.
#[derive(Clone, Copy)]
pub(crate) enum UserOrder {
    LastName { desc: bool },
    CreateTime { desc: bool },
}

impl UserOrder {
    pub fn parse(order_by: &str) -> Result<Self> {
        let words: Vec<&str> = order_by.split_whitespace().collect();
        let desc = match words.get(1) {
            None | Some(&"asc") => false,
            Some(&"desc") => true,
            Some(_) => return Err(aip::AipError::OrderBy(order_by.to_owned()).into()),
        };
        match words.first() {
            None | Some(&"last_name") if words.len() <= 2 => Ok(UserOrder::LastName { desc }),
            Some(&"create_time") if words.len() <= 2 => Ok(UserOrder::CreateTime { desc }),
            _ => Err(aip::AipError::OrderBy(order_by.to_owned()).into()),
        }
    }

    fn column(self) -> &'static str {
        match self {
            UserOrder::LastName { .. } => "last_name",
            UserOrder::CreateTime { .. } => "created_at",
        }
    }

    fn desc(self) -> bool {
        match self {
            UserOrder::LastName { desc } | UserOrder::CreateTime { desc } => desc,
        }
    }

    pub fn key_of(self, row: &UserRow) -> String {
        match self {
            UserOrder::LastName { .. } => row.last_name.clone(),
            UserOrder::CreateTime { .. } => row.created_at.to_rfc3339(),
        }
    }

    pub fn push_after(
        self,
        q: &mut QueryBuilder<'_, Postgres>,
        after: Option<&(String, Uuid)>,
    ) -> Result<()> {
        let Some((key, id)) = after else {
            return Ok(());
        };
        let cmp = if self.desc() { "<" } else { ">" };
        q.push(format!(" AND ({}, id) {cmp} (", self.column()));
        match self {
            UserOrder::LastName { .. } => {
                q.push_bind(key.clone());
            }
            UserOrder::CreateTime { .. } => {
                let at: DateTime<Utc> = key.parse().map_err(|_| aip::AipError::PageToken)?;
                q.push_bind(at);
            }
        }
        q.push(", ").push_bind(*id).push(")");
        Ok(())
    }

    pub fn push_order(self, q: &mut QueryBuilder<'_, Postgres>) {
        let dir = if self.desc() { "DESC" } else { "ASC" };
        q.push(format!(" ORDER BY {} {dir}, id {dir}", self.column()));
    }
}
