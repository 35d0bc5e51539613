//! The SQL of ListInvitations: typed filters and orders (every value bound), keyset pages
//! and the total. [`crate::list`] parses the request into these.

use chrono::{DateTime, Utc};
use mailroom_aip::AipError;
use mailroom_types::{DepartmentId, InvitationId, OrgId, UserId};
use sqlx::{PgExecutor, Postgres, QueryBuilder};

use super::{InvitationRow, INVITATION_COLUMNS};
use crate::domain::{Kind, State};
use crate::error::Result;

/// Whose invitations are listed: the organisation's, or only those `inviter` made.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub org_id: OrgId,
    pub inviter: Option<UserId>,
}

/// One condition of the list's filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    State(State),
    Kind(Kind),
    /// The address contains this text (lower case).
    EmailContains(String),
    /// The address is this (lower case).
    Email(String),
    /// Invitations to no department.
    NoDepartment,
    Department(DepartmentId),
    Inviter(UserId),
}

/// The list's order; ties are broken by id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    CreateTime { desc: bool },
    ExpireTime { desc: bool },
    Email { desc: bool },
}

impl Order {
    fn column(self) -> &'static str {
        match self {
            Order::CreateTime { .. } => "created_at",
            Order::ExpireTime { .. } => "expires_at",
            Order::Email { .. } => "email",
        }
    }

    fn desc(self) -> bool {
        match self {
            Order::CreateTime { desc } | Order::ExpireTime { desc } | Order::Email { desc } => desc,
        }
    }

    /// The sort key of `row` as a page token keeps it.
    pub fn key_of(self, row: &InvitationRow) -> String {
        match self {
            Order::CreateTime { .. } => row.created_at.to_rfc3339(),
            Order::ExpireTime { .. } => row.expires_at.to_rfc3339(),
            Order::Email { .. } => row.email.clone(),
        }
    }

    fn push_after(
        self,
        q: &mut QueryBuilder<'_, Postgres>,
        after: Option<&(String, InvitationId)>,
    ) -> Result<()> {
        let Some((key, id)) = after else {
            return Ok(());
        };
        let cmp = if self.desc() { "<" } else { ">" };
        q.push(format!(" AND ({}, id) {cmp} (", self.column()));
        match self {
            Order::Email { .. } => {
                q.push_bind(key.clone());
            }
            Order::CreateTime { .. } | Order::ExpireTime { .. } => {
                let at: DateTime<Utc> = key.parse().map_err(|_| AipError::PageToken)?;
                q.push_bind(at);
            }
        }
        q.push(", ").push_bind(*id).push(")");
        Ok(())
    }

    fn push_order(self, q: &mut QueryBuilder<'_, Postgres>) {
        let dir = if self.desc() { "DESC" } else { "ASC" };
        q.push(format!(" ORDER BY {} {dir}, id {dir}", self.column()));
    }
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// `… WHERE org_id = ` and the rest of the scope and filters.
fn push_where(q: &mut QueryBuilder<'_, Postgres>, scope: Scope, filters: &[Filter]) {
    q.push_bind(scope.org_id);
    q.push(" AND state <> 'admitting'");
    if let Some(inviter) = scope.inviter {
        q.push(" AND inviter_user_id = ").push_bind(inviter);
    }
    for filter in filters {
        match filter {
            Filter::State(state) => {
                q.push(" AND state = ").push_bind(state.as_db());
            }
            Filter::Kind(kind) => {
                q.push(" AND kind = ").push_bind(kind.as_db());
            }
            Filter::EmailContains(text) => {
                q.push(" AND email LIKE ")
                    .push_bind(format!("%{}%", escape_like(text)));
            }
            Filter::Email(address) => {
                q.push(" AND email = ").push_bind(address.clone());
            }
            Filter::NoDepartment => {
                q.push(" AND department_id IS NULL");
            }
            Filter::Department(id) => {
                q.push(" AND department_id = ").push_bind(*id);
            }
            Filter::Inviter(id) => {
                q.push(" AND inviter_user_id = ").push_bind(*id);
            }
        }
    }
}

/// How many invitations the scope and filters select.
pub async fn count(conn: impl PgExecutor<'_>, scope: Scope, filters: &[Filter]) -> Result<i64> {
    let mut q = QueryBuilder::<Postgres>::new("SELECT count(*) FROM invitations WHERE org_id = ");
    push_where(&mut q, scope, filters);
    Ok(q.build_query_scalar().fetch_one(conn).await?)
}

/// Up to `limit` of them in `order`, after the key `after`.
pub async fn page(
    conn: impl PgExecutor<'_>,
    scope: Scope,
    filters: &[Filter],
    order: Order,
    after: Option<&(String, InvitationId)>,
    limit: i64,
) -> Result<Vec<InvitationRow>> {
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE org_id = "
    ));
    push_where(&mut q, scope, filters);
    order.push_after(&mut q, after)?;
    order.push_order(&mut q);
    q.push(" LIMIT ").push_bind(limit);
    Ok(q.build_query_as().fetch_all(conn).await?)
}
