//! The department tree: creation, renames, moves (never into its own subtree), heads, and the
//! two questions asked of it: who is above a person, and who is below. Changes to the tree
//! take the organisation's lock, so two concurrent moves cannot together make a cycle.

use mailroom_aip as aip;
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::identity::v1 as pb;
use mailroom_platform::types::{DepartmentId, OrgId, UserId};
use sqlx::PgConnection;

use crate::domain::{Text, UserState, UNIT_NAME_MAX};
use crate::error::{IdentityError, Result};
use crate::events::{emit, emit_department, id_or_empty};
use crate::service::{
    caller_org, mask_paths, page_after, parse_id, parse_optional_id, require_admin, required,
    scope, unsupported_path, Identity,
};
use crate::store::{self, DepartmentRow, UserRow};
use ev::envelope::Payload;

impl Identity {
    #[tracing::instrument(skip_all)]
    pub async fn create_department(
        &self,
        principal: &Principal,
        req: pb::CreateDepartmentRequest,
    ) -> Result<DepartmentRow> {
        let d = required("department", req.department)?;
        let org_id = scope(principal, &d.org_id)?;
        let name = Text::parse("department.name", &d.name, UNIT_NAME_MAX, true)?;
        let parent_id: Option<DepartmentId> =
            parse_optional_id("department.parent_id", &d.parent_id)?;
        let head: Option<UserId> = parse_optional_id("department.head_user_id", &d.head_user_id)?;
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        store::orgs::lock(&mut tx, org_id).await?;
        if let Some(p) = parent_id {
            store::departments::get(&mut tx, org_id, p).await?;
        }
        if let Some(h) = head {
            ensure_can_head(&mut tx, org_id, h).await?;
        }
        let row =
            store::departments::insert(&mut tx, org_id, name.as_str(), parent_id, head).await?;
        emit_department(&mut tx, principal, &row, |department| {
            Payload::DepartmentCreated(ev::DepartmentCreated { department })
        })
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    #[tracing::instrument(skip_all)]
    pub async fn get_department(&self, principal: &Principal, id: &str) -> Result<DepartmentRow> {
        let org_id = caller_org(principal)?;
        let id: DepartmentId = parse_id("id", id)?;
        store::departments::get(&mut *self.pool.acquire().await?, org_id, id).await
    }

    #[tracing::instrument(skip_all)]
    pub async fn update_department(
        &self,
        principal: &Principal,
        req: pb::UpdateDepartmentRequest,
    ) -> Result<DepartmentRow> {
        let d = required("department", req.department)?;
        let org_id = scope(principal, &d.org_id)?;
        let id: DepartmentId = parse_id("department.id", &d.id)?;
        let paths = mask_paths(req.update_mask)?;
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        store::orgs::lock(&mut tx, org_id).await?;
        let before = store::departments::get(&mut tx, org_id, id).await?;
        let mut after = before.clone();
        for path in &paths {
            match path.as_str() {
                "name" => {
                    after.name =
                        Text::parse("department.name", &d.name, UNIT_NAME_MAX, true)?.into_inner()
                }
                "parent_id" => {
                    let parent: Option<DepartmentId> =
                        parse_optional_id("department.parent_id", &d.parent_id)?;
                    if let Some(p) = parent {
                        if p == id {
                            return Err(IdentityError::InvalidArgument(
                                "a department cannot be its own parent".into(),
                            ));
                        }
                        let target = store::departments::get(&mut tx, org_id, p).await?;
                        if store::departments::is_descendant(&mut tx, org_id, id, p).await? {
                            return Err(IdentityError::FailedPrecondition(format!(
                                "moving `{}` under `{}` would make a cycle: `{}` is inside `{}`; move `{}` elsewhere first",
                                before.name, target.name, target.name, before.name, target.name
                            )));
                        }
                    }
                    after.parent_id = parent;
                }
                "head_user_id" => {
                    let head: Option<UserId> =
                        parse_optional_id("department.head_user_id", &d.head_user_id)?;
                    if let Some(h) = head {
                        ensure_can_head(&mut tx, org_id, h).await?;
                    }
                    after.head_user_id = head;
                }
                other => return Err(unsupported_path(other, "name, parent_id, head_user_id")),
            }
        }
        let row = store::departments::update(&mut tx, &after).await?;
        emit_department(&mut tx, principal, &row, |department| {
            Payload::DepartmentUpdated(ev::DepartmentUpdated {
                department,
                previous_parent_id: id_or_empty(before.parent_id),
                previous_head_user_id: id_or_empty(before.head_user_id),
            })
        })
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    #[tracing::instrument(skip_all)]
    pub async fn delete_department(&self, principal: &Principal, id: &str) -> Result<()> {
        let org_id = caller_org(principal)?;
        let id: DepartmentId = parse_id("id", id)?;
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        store::orgs::lock(&mut tx, org_id).await?;
        let row = store::departments::get(&mut tx, org_id, id).await?;
        let (members, children) =
            store::departments::members_and_children(&mut tx, org_id, id).await?;
        if members > 0 || children > 0 {
            return Err(IdentityError::FailedPrecondition(format!(
                "`{}` still has {members} member(s) and {children} sub-department(s); move them out first",
                row.name
            )));
        }
        store::departments::delete(&mut tx, org_id, id).await?;
        emit(
            &mut tx,
            org_id,
            id,
            principal,
            Payload::DepartmentDeleted(ev::DepartmentDeleted {
                department_id: id.to_string(),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    pub async fn list_departments(
        &self,
        principal: &Principal,
        req: pb::ListDepartmentsRequest,
    ) -> Result<(Vec<DepartmentRow>, String)> {
        let org_id = caller_org(principal)?;
        let limit = aip::page_size(req.page_size, 100, 1000)?;
        let query_key = format!("departments|{}", req.filter);
        let after: Option<(String, DepartmentId)> =
            aip::decode_page_token(&query_key, &req.page_token)?;
        let mut parent: Option<Option<DepartmentId>> = None;
        for c in aip::parse_filter(&req.filter)? {
            match (c.field.as_str(), c.op) {
                ("parent_id", aip::Op::Eq) => {
                    parent = Some(parse_optional_id("filter parent_id", &c.value.as_text())?)
                }
                _ => {
                    return Err(IdentityError::InvalidArgument(format!(
                    "filter on `{}` is not supported; use parent_id = \"…\" (\"\" for top level)",
                    c.field
                )))
                }
            }
        }
        let mut conn = self.pool.acquire().await?;
        let mut rows =
            store::departments::page(&mut conn, org_id, parent, after, limit + 1).await?;
        let next = page_after(&mut rows, limit, |last| {
            aip::encode_page_token(&query_key, &(last.name.clone(), last.id))
        });
        Ok((rows, next))
    }

    #[tracing::instrument(skip_all)]
    pub async fn list_subordinates(
        &self,
        principal: &Principal,
        req: pb::ListSubordinatesRequest,
    ) -> Result<(Vec<UserRow>, String, i64)> {
        let org_id = caller_org(principal)?;
        let user_id: UserId = parse_id("user_id", &req.user_id)?;
        let limit = aip::page_size(req.page_size, 100, 1000)?;
        let query_key = format!("subordinates|{user_id}");
        let after: Option<(String, UserId)> = aip::decode_page_token(&query_key, &req.page_token)?;
        let mut conn = self.pool.acquire().await?;
        store::users::get(&mut conn, org_id, user_id).await?;
        let total = store::departments::subordinates_count(&mut conn, org_id, user_id).await?;
        let mut rows =
            store::departments::subordinates_page(&mut conn, org_id, user_id, after, limit + 1)
                .await?;
        let next = page_after(&mut rows, limit, |last| {
            aip::encode_page_token(&query_key, &(last.last_name.clone(), last.id))
        });
        Ok((rows, next, total))
    }

    #[tracing::instrument(skip_all)]
    pub async fn list_supervisors(
        &self,
        principal: &Principal,
        user_id: &str,
    ) -> Result<Vec<UserRow>> {
        let org_id = caller_org(principal)?;
        let user_id: UserId = parse_id("user_id", user_id)?;
        let mut conn = self.pool.acquire().await?;
        store::users::get(&mut conn, org_id, user_id).await?;
        store::departments::supervisors(&mut conn, org_id, user_id).await
    }
}

/// Refuses a dismissed person as a department's head.
async fn ensure_can_head(conn: &mut PgConnection, org_id: OrgId, user_id: UserId) -> Result<()> {
    let user = store::users::get(conn, org_id, user_id).await?;
    if user.state() == UserState::Dismissed {
        return Err(IdentityError::FailedPrecondition(format!(
            "{} is dismissed and cannot head a department",
            user.display_name()
        )));
    }
    Ok(())
}
