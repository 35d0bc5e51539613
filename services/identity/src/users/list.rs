//! GetUser and ListUsers: the directory, filtered (AIP-160) and ordered (AIP-132), in keyset
//! pages. The filter is parsed here into [`Criterion`]s; their SQL is `store::directory`.

use mailroom_aip::{self as aip, Comparison, Op, Value};
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::identity::v1 as pb;
use mailroom_platform::types::{DepartmentId, UserId};

use crate::domain::UserState;
use crate::error::{IdentityError, Result};
use crate::service::{caller_org, page_after, parse_id, Identity};
use crate::store::directory::{self, Criterion, Order};
use crate::store::{self, UserRow};

impl Identity {
    #[tracing::instrument(skip_all)]
    pub async fn get_user(&self, principal: &Principal, id: &str) -> Result<UserRow> {
        let org_id = caller_org(principal)?;
        let id: UserId = parse_id("id", id)?;
        if let Some(row) = self.user_cache.get(org_id, id) {
            return Ok(row);
        }
        // Taken before the read: a change told of meanwhile keeps the row out.
        let ticket = self.user_cache.ticket();
        let row = store::users::get(&mut *self.pool.acquire().await?, org_id, id).await?;
        if let Some(ticket) = ticket {
            self.user_cache.keep(ticket, &row);
        }
        Ok(row)
    }

    #[tracing::instrument(skip_all)]
    pub async fn list_users(
        &self,
        principal: &Principal,
        req: pb::ListUsersRequest,
    ) -> Result<(Vec<UserRow>, String, i64)> {
        let org_id = caller_org(principal)?;
        let filter = aip::parse_filter(&req.filter)?;
        let order = order(&req.order_by)?;
        let limit = aip::page_size(req.page_size, 50, 1000)?;
        let query_key = format!("users|{}|{}", req.filter, req.order_by);
        let after: Option<(String, UserId)> = aip::decode_page_token(&query_key, &req.page_token)?;
        let criteria = criteria(&filter)?;

        let mut conn = self.pool.acquire().await?;
        let total = directory::count(&mut conn, org_id, &criteria).await?;
        let mut rows = directory::page(
            &mut conn,
            org_id,
            &criteria,
            order,
            after.as_ref(),
            limit + 1,
        )
        .await?;
        let next = page_after(&mut rows, limit, |last| {
            aip::encode_page_token(&query_key, &(order.key_of(last), last.id))
        });
        Ok((rows, next, total))
    }
}

/// A ListUsers filter as the directory's criteria.
fn criteria(filter: &[Comparison]) -> Result<Vec<Criterion>> {
    filter
        .iter()
        .map(|c| match (c.field.as_str(), c.op) {
            ("state", Op::Eq) => UserState::from_filter(&c.value.as_text())
                .map(Criterion::State)
                .ok_or_else(|| bad_filter(c)),
            ("department_id", Op::Eq) => match c.value.as_text().as_str() {
                "" => Ok(Criterion::Department(None)),
                text => Ok(Criterion::Department(Some(parse_id::<DepartmentId>(
                    "filter department_id",
                    text,
                )?))),
            },
            ("admin", Op::Eq) => match &c.value {
                Value::Bool(b) => Ok(Criterion::Admin(*b)),
                _ => Err(bad_filter(c)),
            },
            ("name", Op::Has) => Ok(Criterion::NameContains(c.value.as_text())),
            ("email", Op::Has) => Ok(Criterion::EmailContains(c.value.as_text().to_lowercase())),
            _ => Err(bad_filter(c)),
        })
        .collect()
}

fn bad_filter(c: &Comparison) -> IdentityError {
    IdentityError::InvalidArgument(format!(
        "filter on `{}` with that operator is not supported; use state = INVITED|ACTIVE|DISMISSED, department_id = \"…\", admin = true|false, name : \"…\", email : \"…\"",
        c.field
    ))
}

/// A ListUsers `order_by`: `last_name` (the default) or `create_time`, each `asc` or `desc`.
fn order(order_by: &str) -> Result<Order> {
    let default = Order::LastName { desc: false };
    aip::parse_order(order_by, default, |field, desc| match field {
        "last_name" => Some(Order::LastName { desc }),
        "create_time" => Some(Order::CreateTime { desc }),
        _ => None,
    })
    .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_a_field_and_an_optional_direction() {
        assert_eq!(order("").unwrap(), Order::LastName { desc: false });
        assert_eq!(
            order("create_time desc").unwrap(),
            Order::CreateTime { desc: true }
        );
        assert!(order("salary").is_err());
        assert!(order("last_name sideways").is_err());
        assert!(order("last_name asc extra").is_err());
    }

    #[test]
    fn filters_become_criteria_and_unknown_ones_are_refused() {
        let parsed = aip::parse_filter("state = ACTIVE AND email : \"ANN\"").unwrap();
        assert_eq!(
            criteria(&parsed).unwrap(),
            vec![
                Criterion::State(UserState::Active),
                Criterion::EmailContains("ann".into())
            ]
        );
        let bad = aip::parse_filter("salary = 5").unwrap();
        assert!(criteria(&bad).is_err());
    }
}
