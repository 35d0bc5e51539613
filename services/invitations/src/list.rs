//! ListInvitations: an AIP-160 filter (typed, every value bound), an order, keyset pages and
//! the total. Holders of `org.register_users` see the organisation's invitations; everyone
//! else sees the ones they made.

use chrono::{DateTime, Utc};
use mailroom_aip::{self as aip, Comparison, Op};
use mailroom_platform::proto::invitations::v1 as pb;
use mailroom_types::Permission;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::{Kind, State};
use crate::error::{InvitationError, Result};
use crate::service::{parse_id, Caller, Invitations};
use crate::store::{InvitationRow, INVITATION_COLUMNS};

fn bad_filter(c: &Comparison) -> InvitationError {
    InvitationError::InvalidArgument(format!(
        "filter on `{}` with that operator is not supported; use state = PENDING|ACCEPTED|EXPIRED|REVOKED|FAILED|AWAITING_APPROVAL|REJECTED, \
         kind = EMAIL|DIRECT_REGISTRATION|REGISTRATION_LINK, email : \"…\", department_id = \"…\", inviter_user_id = \"…\"",
        c.field
    ))
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn push_filters(q: &mut QueryBuilder<'_, Postgres>, filter: &[Comparison]) -> Result<()> {
    for c in filter {
        match (c.field.as_str(), c.op) {
            ("state", Op::Eq) => {
                let state = State::from_filter(&c.value.as_text()).ok_or_else(|| bad_filter(c))?;
                q.push(" AND state = ").push_bind(state.as_db());
            }
            ("kind", Op::Eq) => {
                let kind = Kind::from_filter(&c.value.as_text()).ok_or_else(|| bad_filter(c))?;
                q.push(" AND kind = ").push_bind(kind.as_db());
            }
            ("email", Op::Has) => {
                q.push(" AND email LIKE ").push_bind(format!(
                    "%{}%",
                    escape_like(&c.value.as_text().to_lowercase())
                ));
            }
            ("email", Op::Eq) => {
                q.push(" AND email = ")
                    .push_bind(c.value.as_text().to_lowercase());
            }
            ("department_id", Op::Eq) => match c.value.as_text().as_str() {
                "" => {
                    q.push(" AND department_id IS NULL");
                }
                text => {
                    q.push(" AND department_id = ")
                        .push_bind(parse_id("filter department_id", text)?);
                }
            },
            ("inviter_user_id", Op::Eq) => {
                q.push(" AND inviter_user_id = ")
                    .push_bind(parse_id("filter inviter_user_id", &c.value.as_text())?);
            }
            _ => return Err(bad_filter(c)),
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Order {
    CreateTime { desc: bool },
    ExpireTime { desc: bool },
    Email { desc: bool },
}

impl Order {
    fn parse(order_by: &str) -> Result<Self> {
        let words: Vec<&str> = order_by.split_whitespace().collect();
        let desc = match words.get(1) {
            None | Some(&"asc") => false,
            Some(&"desc") => true,
            Some(_) => return Err(aip::AipError::OrderBy(order_by.to_owned()).into()),
        };
        if words.len() > 2 {
            return Err(aip::AipError::OrderBy(order_by.to_owned()).into());
        }
        match words.first() {
            // Newest first unless asked otherwise: what "who has not accepted yet" wants.
            None => Ok(Order::CreateTime { desc: true }),
            Some(&"create_time") => Ok(Order::CreateTime { desc }),
            Some(&"expire_time") => Ok(Order::ExpireTime { desc }),
            Some(&"email") => Ok(Order::Email { desc }),
            _ => Err(aip::AipError::OrderBy(order_by.to_owned()).into()),
        }
    }

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

    fn key_of(self, row: &InvitationRow) -> String {
        match self {
            Order::CreateTime { .. } => row.created_at.to_rfc3339(),
            Order::ExpireTime { .. } => row.expires_at.to_rfc3339(),
            Order::Email { .. } => row.email.clone(),
        }
    }

    fn push_after(
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
            Order::Email { .. } => {
                q.push_bind(key.clone());
            }
            Order::CreateTime { .. } | Order::ExpireTime { .. } => {
                let at: DateTime<Utc> = key.parse().map_err(|_| aip::AipError::PageToken)?;
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

impl Invitations {
    #[tracing::instrument(skip_all)]
    pub async fn list(
        &self,
        caller: &Caller,
        req: pb::ListInvitationsRequest,
    ) -> Result<(Vec<InvitationRow>, String, i64)> {
        let filter = aip::parse_filter(&req.filter)?;
        let order = Order::parse(&req.order_by)?;
        let limit = aip::page_size(req.page_size, 50, 1000)?;
        let everyone = self.holds(caller, Permission::OrgRegisterUsers).await?;
        let query_key = format!("invitations|{everyone}|{}|{}", req.filter, req.order_by);
        let after: Option<(String, Uuid)> = aip::decode_page_token(&query_key, &req.page_token)?;
        let scope = |q: &mut QueryBuilder<'_, Postgres>| {
            q.push_bind(caller.org_id);
            q.push(" AND state <> 'admitting'");
            if !everyone {
                q.push(" AND inviter_user_id = ").push_bind(caller.user_id);
            }
        };

        let mut count =
            QueryBuilder::<Postgres>::new("SELECT count(*) FROM invitations WHERE org_id = ");
        scope(&mut count);
        push_filters(&mut count, &filter)?;
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;

        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE org_id = "
        ));
        scope(&mut q);
        push_filters(&mut q, &filter)?;
        order.push_after(&mut q, after.as_ref())?;
        order.push_order(&mut q);
        q.push(" LIMIT ").push_bind(limit + 1);
        let mut rows: Vec<InvitationRow> = q.build_query_as().fetch_all(&self.pool).await?;
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last()
                .map(|last| aip::encode_page_token(&query_key, &(order.key_of(last), last.id)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows, next, total))
    }
}
