//! The department tree: creation, renames, moves (never into its own subtree), heads, and the
//! two questions asked of it: who is above a person, and who is below.

use mailroom_platform::aip;
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::identity::v1 as pb;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{Text, UserState};
use crate::error::{IdentityError, Result};
use crate::service::{
    caller_org, department_snapshot, emit, parse_id, parse_optional_id, require_admin, scope,
    Identity,
};
use crate::store::{self, DepartmentRow, UserRow, DEPARTMENT_COLUMNS, USER_COLUMNS};
use crate::users::{mask_paths, page_after, unsupported_path};
use ev::envelope::Payload;

const NAME_MAX: usize = 200;

impl Identity {
    #[tracing::instrument(skip_all)]
    pub async fn create_department(
        &self,
        principal: &Principal,
        req: pb::CreateDepartmentRequest,
    ) -> Result<DepartmentRow> {
        let d = req
            .department
            .ok_or_else(|| IdentityError::InvalidArgument("`department` is required".into()))?;
        let org_id = scope(principal, &d.org_id)?;
        let name = Text::parse("department.name", &d.name, NAME_MAX, true)?;
        let parent_id = parse_optional_id("department.parent_id", &d.parent_id)?;
        let head = parse_optional_id("department.head_user_id", &d.head_user_id)?;
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        store::org_for_update(&mut tx, org_id).await?;
        if let Some(p) = parent_id {
            store::department(&mut tx, org_id, p).await?;
        }
        if let Some(h) = head {
            ensure_can_head(&mut tx, org_id, h).await?;
        }
        let row: DepartmentRow = sqlx::query_as(&format!(
            "INSERT INTO departments (id, org_id, name, parent_id, head_user_id) VALUES ($1, $2, $3, $4, $5) RETURNING {DEPARTMENT_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(org_id)
        .bind(name.as_str())
        .bind(parent_id)
        .bind(head)
        .fetch_one(&mut *tx)
        .await?;
        emit(
            &mut tx,
            org_id,
            row.id,
            principal,
            Payload::DepartmentCreated(ev::DepartmentCreated {
                department: Some(department_snapshot(&row)),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    #[tracing::instrument(skip_all)]
    pub async fn get_department(&self, principal: &Principal, id: &str) -> Result<DepartmentRow> {
        let org_id = caller_org(principal)?;
        let id = parse_id("id", id)?;
        let mut conn = self.pool.acquire().await?;
        store::department(&mut conn, org_id, id).await
    }

    #[tracing::instrument(skip_all)]
    pub async fn update_department(
        &self,
        principal: &Principal,
        req: pb::UpdateDepartmentRequest,
    ) -> Result<DepartmentRow> {
        let d = req
            .department
            .ok_or_else(|| IdentityError::InvalidArgument("`department` is required".into()))?;
        let org_id = scope(principal, &d.org_id)?;
        let id = parse_id("department.id", &d.id)?;
        let paths = mask_paths(req.update_mask)?;
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        // The organisation lock serialises tree changes: two concurrent moves cannot each pass
        // the cycle check and together make a cycle.
        store::org_for_update(&mut tx, org_id).await?;
        let before = store::department(&mut tx, org_id, id).await?;
        let mut after = before.clone();
        for path in &paths {
            match path.as_str() {
                "name" => {
                    after.name =
                        Text::parse("department.name", &d.name, NAME_MAX, true)?.into_inner()
                }
                "parent_id" => {
                    let parent = parse_optional_id("department.parent_id", &d.parent_id)?;
                    if let Some(p) = parent {
                        if p == id {
                            return Err(IdentityError::InvalidArgument(
                                "a department cannot be its own parent".into(),
                            ));
                        }
                        let target = store::department(&mut tx, org_id, p).await?;
                        if is_descendant(&mut tx, org_id, id, p).await? {
                            return Err(IdentityError::FailedPrecondition(format!(
                                "moving `{}` under `{}` would make a cycle: `{}` is inside `{}`; move `{}` elsewhere first",
                                before.name, target.name, target.name, before.name, target.name
                            )));
                        }
                    }
                    after.parent_id = parent;
                }
                "head_user_id" => {
                    let head = parse_optional_id("department.head_user_id", &d.head_user_id)?;
                    if let Some(h) = head {
                        ensure_can_head(&mut tx, org_id, h).await?;
                    }
                    after.head_user_id = head;
                }
                other => return Err(unsupported_path(other, "name, parent_id, head_user_id")),
            }
        }
        let row: DepartmentRow = sqlx::query_as(&format!(
            "UPDATE departments SET name = $3, parent_id = $4, head_user_id = $5, updated_at = now() \
             WHERE org_id = $1 AND id = $2 RETURNING {DEPARTMENT_COLUMNS}"
        ))
        .bind(org_id)
        .bind(id)
        .bind(&after.name)
        .bind(after.parent_id)
        .bind(after.head_user_id)
        .fetch_one(&mut *tx)
        .await?;
        emit(
            &mut tx,
            org_id,
            id,
            principal,
            Payload::DepartmentUpdated(ev::DepartmentUpdated {
                department: Some(department_snapshot(&row)),
                previous_parent_id: before.parent_id.map(|p| p.to_string()).unwrap_or_default(),
                previous_head_user_id: before
                    .head_user_id
                    .map(|h| h.to_string())
                    .unwrap_or_default(),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    #[tracing::instrument(skip_all)]
    pub async fn delete_department(&self, principal: &Principal, id: &str) -> Result<()> {
        let org_id = caller_org(principal)?;
        let id = parse_id("id", id)?;
        let mut tx = self.pool.begin().await?;
        require_admin(&mut tx, principal, org_id).await?;
        store::org_for_update(&mut tx, org_id).await?;
        let row = store::department(&mut tx, org_id, id).await?;
        let (members, children): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM users WHERE org_id = $1 AND department_id = $2), \
                    (SELECT count(*) FROM departments WHERE org_id = $1 AND parent_id = $2)",
        )
        .bind(org_id)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if members > 0 || children > 0 {
            return Err(IdentityError::FailedPrecondition(format!(
                "`{}` still has {members} member(s) and {children} sub-department(s); move them out first",
                row.name
            )));
        }
        sqlx::query("DELETE FROM departments WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
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
        let after: Option<(String, Uuid)> = aip::decode_page_token(&query_key, &req.page_token)?;
        let mut parent: Option<Option<Uuid>> = None;
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
        let mut q = sqlx::QueryBuilder::new(format!(
            "SELECT {DEPARTMENT_COLUMNS} FROM departments WHERE org_id = "
        ));
        q.push_bind(org_id);
        match parent {
            Some(Some(p)) => {
                q.push(" AND parent_id = ").push_bind(p);
            }
            Some(None) => {
                q.push(" AND parent_id IS NULL");
            }
            None => {}
        }
        if let Some((name, id)) = after {
            q.push(" AND (name, id) > (")
                .push_bind(name)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        q.push(" ORDER BY name, id LIMIT ").push_bind(limit + 1);
        let mut rows: Vec<DepartmentRow> = q.build_query_as().fetch_all(&self.pool).await?;
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
        let user_id = parse_id("user_id", &req.user_id)?;
        let limit = aip::page_size(req.page_size, 100, 1000)?;
        let query_key = format!("subordinates|{user_id}");
        let after: Option<(String, Uuid)> = aip::decode_page_token(&query_key, &req.page_token)?;
        let mut conn = self.pool.acquire().await?;
        store::user(&mut conn, org_id, user_id).await?;
        const TREE: &str = "WITH RECURSIVE tree AS ( \
               SELECT id FROM departments WHERE org_id = $1 AND head_user_id = $2 \
               UNION SELECT d.id FROM departments d JOIN tree t ON d.parent_id = t.id WHERE d.org_id = $1) ";
        const WHO: &str = " FROM users WHERE org_id = $1 AND id <> $2 AND ( \
               department_id IN (SELECT id FROM tree) \
               OR id IN (SELECT head_user_id FROM departments WHERE org_id = $1 AND id IN (SELECT id FROM tree)))";
        let total: i64 = sqlx::query_scalar(&format!("{TREE} SELECT count(*) {WHO}"))
            .bind(org_id)
            .bind(user_id)
            .fetch_one(&mut *conn)
            .await?;
        let (key, id) = after.unwrap_or_default();
        let mut rows: Vec<UserRow> = sqlx::query_as(&format!(
            "{TREE} SELECT {USER_COLUMNS} {WHO} AND ($3::uuid IS NULL OR (last_name, id) > ($4, $3)) ORDER BY last_name, id LIMIT $5"
        ))
        .bind(org_id)
        .bind(user_id)
        .bind(if id.is_nil() { None } else { Some(id) })
        .bind(key)
        .bind(limit + 1)
        .fetch_all(&mut *conn)
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
        let user_id = parse_id("user_id", user_id)?;
        let mut conn = self.pool.acquire().await?;
        store::user(&mut conn, org_id, user_id).await?;
        let rows: Vec<UserRow> = sqlx::query_as(&format!(
            "WITH RECURSIVE chain AS ( \
               SELECT d.id, d.parent_id, d.head_user_id, 0 AS depth FROM departments d \
                 JOIN users u ON u.department_id = d.id AND u.org_id = d.org_id WHERE u.org_id = $1 AND u.id = $2 \
               UNION ALL \
               SELECT p.id, p.parent_id, p.head_user_id, c.depth + 1 FROM departments p \
                 JOIN chain c ON p.id = c.parent_id WHERE p.org_id = $1 AND c.depth < 256), \
             heads AS (SELECT head_user_id AS id, min(depth) AS depth FROM chain \
               WHERE head_user_id IS NOT NULL AND head_user_id <> $2 GROUP BY head_user_id) \
             SELECT {} FROM users u JOIN heads h ON h.id = u.id WHERE u.org_id = $1 ORDER BY h.depth",
            USER_COLUMNS
                .split(", ")
                .map(|c| format!("u.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(org_id)
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows)
    }
}

/// Whether `candidate` lies in the subtree rooted at `root` (root included).
async fn is_descendant(
    conn: &mut PgConnection,
    org_id: Uuid,
    root: Uuid,
    candidate: Uuid,
) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "WITH RECURSIVE sub AS ( \
           SELECT id FROM departments WHERE org_id = $1 AND id = $2 \
           UNION SELECT d.id FROM departments d JOIN sub s ON d.parent_id = s.id WHERE d.org_id = $1) \
         SELECT EXISTS (SELECT 1 FROM sub WHERE id = $3)",
    )
    .bind(org_id)
    .bind(root)
    .bind(candidate)
    .fetch_one(conn)
    .await?)
}

async fn ensure_can_head(conn: &mut PgConnection, org_id: Uuid, user_id: Uuid) -> Result<()> {
    let user = store::user(conn, org_id, user_id).await?;
    if user.state() == UserState::Dismissed {
        return Err(IdentityError::FailedPrecondition(format!(
            "{} is dismissed and cannot head a department",
            user.display_name()
        )));
    }
    Ok(())
}
