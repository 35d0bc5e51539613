//! The department tree: its rows, the cycle check, and the two questions asked of it — who is
//! below a person, and who is above.

use mailroom_platform::types::{DepartmentId, OrgId, UserId};
use sqlx::PgConnection;

use super::{
    not_found, user_columns_of_u, DepartmentRow, UserRow, DEPARTMENT_COLUMNS, USER_COLUMNS,
};
use crate::error::Result;

/// A department of the organisation, or NOT_FOUND.
pub async fn get(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: DepartmentId,
) -> Result<DepartmentRow> {
    sqlx::query_as(&format!(
        "SELECT {DEPARTMENT_COLUMNS} FROM departments WHERE org_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found("department", id))
}

pub async fn insert(
    conn: &mut PgConnection,
    org_id: OrgId,
    name: &str,
    parent_id: Option<DepartmentId>,
    head_user_id: Option<UserId>,
) -> Result<DepartmentRow> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO departments (id, org_id, name, parent_id, head_user_id) VALUES ($1, $2, $3, $4, $5) RETURNING {DEPARTMENT_COLUMNS}"
    ))
    .bind(DepartmentId::new())
    .bind(org_id)
    .bind(name)
    .bind(parent_id)
    .bind(head_user_id)
    .fetch_one(conn)
    .await?)
}

/// Writes the name, parent and head of `department`.
pub async fn update(conn: &mut PgConnection, department: &DepartmentRow) -> Result<DepartmentRow> {
    Ok(sqlx::query_as(&format!(
        "UPDATE departments SET name = $3, parent_id = $4, head_user_id = $5, updated_at = now() \
         WHERE org_id = $1 AND id = $2 RETURNING {DEPARTMENT_COLUMNS}"
    ))
    .bind(department.org_id)
    .bind(department.id)
    .bind(&department.name)
    .bind(department.parent_id)
    .bind(department.head_user_id)
    .fetch_one(conn)
    .await?)
}

/// How many people and sub-departments a department has.
pub async fn members_and_children(
    conn: &mut PgConnection,
    org_id: OrgId,
    id: DepartmentId,
) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT (SELECT count(*) FROM users WHERE org_id = $1 AND department_id = $2), \
                (SELECT count(*) FROM departments WHERE org_id = $1 AND parent_id = $2)",
    )
    .bind(org_id)
    .bind(id)
    .fetch_one(conn)
    .await?)
}

pub async fn delete(conn: &mut PgConnection, org_id: OrgId, id: DepartmentId) -> Result<()> {
    sqlx::query("DELETE FROM departments WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The departments `user_id` headed, now without a head.
pub async fn drop_head(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
) -> Result<Vec<DepartmentRow>> {
    Ok(sqlx::query_as(&format!(
        "UPDATE departments SET head_user_id = NULL, updated_at = now() WHERE org_id = $1 AND head_user_id = $2 \
         RETURNING {DEPARTMENT_COLUMNS}"
    ))
    .bind(org_id)
    .bind(user_id)
    .fetch_all(conn)
    .await?)
}

/// Whether `candidate` lies in the subtree rooted at `root` (root included).
pub async fn is_descendant(
    conn: &mut PgConnection,
    org_id: OrgId,
    root: DepartmentId,
    candidate: DepartmentId,
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

/// Up to `limit` departments by name after `after`: all, or (`parent`) the children of one
/// department (`Some(None)`: the top level).
pub async fn page(
    conn: &mut PgConnection,
    org_id: OrgId,
    parent: Option<Option<DepartmentId>>,
    after: Option<(String, DepartmentId)>,
    limit: i64,
) -> Result<Vec<DepartmentRow>> {
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
    q.push(" ORDER BY name, id LIMIT ").push_bind(limit);
    Ok(q.build_query_as().fetch_all(conn).await?)
}

/// The departments `$2` heads, and all below them.
const HEADED_TREE: &str = "WITH RECURSIVE tree AS ( \
       SELECT id FROM departments WHERE org_id = $1 AND head_user_id = $2 \
       UNION SELECT d.id FROM departments d JOIN tree t ON d.parent_id = t.id WHERE d.org_id = $1) ";
/// The people in [`HEADED_TREE`] and the heads of its departments, but `$2`.
const SUBORDINATES: &str = " FROM users WHERE org_id = $1 AND id <> $2 AND ( \
       department_id IN (SELECT id FROM tree) \
       OR id IN (SELECT head_user_id FROM departments WHERE org_id = $1 AND id IN (SELECT id FROM tree)))";

/// How many people are below `user_id`.
pub async fn subordinates_count(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
) -> Result<i64> {
    Ok(
        sqlx::query_scalar(&format!("{HEADED_TREE} SELECT count(*) {SUBORDINATES}"))
            .bind(org_id)
            .bind(user_id)
            .fetch_one(conn)
            .await?,
    )
}

/// Up to `limit` people below `user_id`, by last name, after `after`.
pub async fn subordinates_page(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
    after: Option<(String, UserId)>,
    limit: i64,
) -> Result<Vec<UserRow>> {
    let (key, id) = after.unzip();
    Ok(sqlx::query_as(&format!(
        "{HEADED_TREE} SELECT {USER_COLUMNS} {SUBORDINATES} AND ($3::uuid IS NULL OR (last_name, id) > ($4, $3)) \
         ORDER BY last_name, id LIMIT $5"
    ))
    .bind(org_id)
    .bind(user_id)
    .bind(id)
    .bind(key.unwrap_or_default())
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The heads above `user_id`, nearest first: of their department, then of each one above it.
pub async fn supervisors(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
) -> Result<Vec<UserRow>> {
    Ok(sqlx::query_as(&format!(
        "WITH RECURSIVE chain AS ( \
           SELECT d.id, d.parent_id, d.head_user_id, 0 AS depth FROM departments d \
             JOIN users u ON u.department_id = d.id AND u.org_id = d.org_id WHERE u.org_id = $1 AND u.id = $2 \
           UNION ALL \
           SELECT p.id, p.parent_id, p.head_user_id, c.depth + 1 FROM departments p \
             JOIN chain c ON p.id = c.parent_id WHERE p.org_id = $1 AND c.depth < 256), \
         heads AS (SELECT head_user_id AS id, min(depth) AS depth FROM chain \
           WHERE head_user_id IS NOT NULL AND head_user_id <> $2 GROUP BY head_user_id) \
         SELECT {} FROM users u JOIN heads h ON h.id = u.id WHERE u.org_id = $1 ORDER BY h.depth",
        user_columns_of_u()
    ))
    .bind(org_id)
    .bind(user_id)
    .fetch_all(conn)
    .await?)
}
