//! The directory listing's SQL: the conditions a ListUsers filter can hold, its two orders,
//! and the keyset that continues a page.

use chrono::{DateTime, Utc};
use mailroom_aip::AipError;
use mailroom_platform::types::{DepartmentId, OrgId, UserId};
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::{UserRow, USER_COLUMNS};
use crate::domain::UserState;
use crate::error::Result;

/// One condition of a listing (all must hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion {
    State(UserState),
    /// In this department, or (`None`) in none.
    Department(Option<DepartmentId>),
    Admin(bool),
    /// First and last name contain this, in any case.
    NameContains(String),
    /// The login or contact address contains this (lower-case).
    EmailContains(String),
}

/// How a listing is ordered; ties are broken by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    LastName { desc: bool },
    CreateTime { desc: bool },
}

impl Order {
    fn column(self) -> &'static str {
        match self {
            Order::LastName { .. } => "last_name",
            Order::CreateTime { .. } => "created_at",
        }
    }

    fn desc(self) -> bool {
        match self {
            Order::LastName { desc } | Order::CreateTime { desc } => desc,
        }
    }

    /// The key of `row` in this order, as a page token carries it.
    pub fn key_of(self, row: &UserRow) -> String {
        match self {
            Order::LastName { .. } => row.last_name.clone(),
            Order::CreateTime { .. } => row.created_at.to_rfc3339(),
        }
    }
}

/// How many users of the organisation meet every criterion.
pub async fn count(conn: &mut PgConnection, org_id: OrgId, criteria: &[Criterion]) -> Result<i64> {
    let mut q = QueryBuilder::<Postgres>::new("SELECT count(*) FROM users WHERE org_id = ");
    q.push_bind(org_id);
    push_criteria(&mut q, criteria);
    Ok(q.build_query_scalar().fetch_one(conn).await?)
}

/// Up to `limit` users that meet every criterion, in `order`, after the key `after`.
pub async fn page(
    conn: &mut PgConnection,
    org_id: OrgId,
    criteria: &[Criterion],
    order: Order,
    after: Option<&(String, UserId)>,
    limit: i64,
) -> Result<Vec<UserRow>> {
    let mut q =
        QueryBuilder::<Postgres>::new(format!("SELECT {USER_COLUMNS} FROM users WHERE org_id = "));
    q.push_bind(org_id);
    push_criteria(&mut q, criteria);
    if let Some((key, id)) = after {
        let cmp = if order.desc() { "<" } else { ">" };
        q.push(format!(" AND ({}, id) {cmp} (", order.column()));
        match order {
            Order::LastName { .. } => {
                q.push_bind(key.clone());
            }
            Order::CreateTime { .. } => {
                let at: DateTime<Utc> = key.parse().map_err(|_| AipError::PageToken)?;
                q.push_bind(at);
            }
        }
        q.push(", ").push_bind(*id).push(")");
    }
    let dir = if order.desc() { "DESC" } else { "ASC" };
    q.push(format!(" ORDER BY {} {dir}, id {dir}", order.column()));
    q.push(" LIMIT ").push_bind(limit);
    Ok(q.build_query_as().fetch_all(conn).await?)
}

fn push_criteria(q: &mut QueryBuilder<'_, Postgres>, criteria: &[Criterion]) {
    for c in criteria {
        match c {
            Criterion::State(state) => {
                q.push(" AND state = ").push_bind(state.as_db());
            }
            Criterion::Department(None) => {
                q.push(" AND department_id IS NULL");
            }
            Criterion::Department(Some(id)) => {
                q.push(" AND department_id = ").push_bind(*id);
            }
            Criterion::Admin(admin) => {
                q.push(" AND is_admin = ").push_bind(*admin);
            }
            Criterion::NameContains(text) => {
                q.push(" AND (first_name || ' ' || last_name) ILIKE ")
                    .push_bind(format!("%{}%", escape_like(text)));
            }
            Criterion::EmailContains(text) => {
                let pattern = format!("%{}%", escape_like(text));
                q.push(" AND (login_email LIKE ")
                    .push_bind(pattern.clone())
                    .push(" OR contact_email LIKE ")
                    .push_bind(pattern)
                    .push(")");
            }
        }
    }
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
