//! ListInvitations: an AIP-160 filter and an order parsed into [`store::list`]'s typed ones,
//! keyset pages and the total. Holders of `org.register_users` see the organisation's
//! invitations; everyone else sees the ones they made.

use mailroom_aip::{self as aip, Comparison, Op};
use mailroom_platform::proto::invitations::v1 as pb;
use mailroom_types::{DepartmentId, InvitationId, Permission, UserId};

use crate::domain::{Kind, State};
use crate::error::{InvitationError, Result};
use crate::service::{Caller, Invitations};
use crate::store::list::{Filter, Order, Scope};
use crate::store::{self, InvitationRow};

fn bad_filter(c: &Comparison) -> InvitationError {
    InvitationError::InvalidArgument(format!(
        "filter on `{}` with that operator is not supported; use state = PENDING|ACCEPTED|EXPIRED|REVOKED|FAILED|AWAITING_APPROVAL|REJECTED, \
         kind = EMAIL|DIRECT_REGISTRATION|REGISTRATION_LINK, email : \"…\", department_id = \"…\", inviter_user_id = \"…\"",
        c.field
    ))
}

/// One comparison of the filter, typed.
fn filter(c: &Comparison) -> Result<Filter> {
    Ok(match (c.field.as_str(), c.op) {
        ("state", Op::Eq) => {
            Filter::State(State::from_filter(&c.value.as_text()).ok_or_else(|| bad_filter(c))?)
        }
        ("kind", Op::Eq) => {
            Filter::Kind(Kind::from_filter(&c.value.as_text()).ok_or_else(|| bad_filter(c))?)
        }
        ("email", Op::Has) => Filter::EmailContains(c.value.as_text().to_lowercase()),
        ("email", Op::Eq) => Filter::Email(c.value.as_text().to_lowercase()),
        ("department_id", Op::Eq) => {
            match DepartmentId::parse_optional("filter department_id", &c.value.as_text())? {
                None => Filter::NoDepartment,
                Some(id) => Filter::Department(id),
            }
        }
        ("inviter_user_id", Op::Eq) => {
            Filter::Inviter(UserId::parse("filter inviter_user_id", &c.value.as_text())?)
        }
        _ => return Err(bad_filter(c)),
    })
}

/// `order_by`: `create_time` (newest first unless asked otherwise: what "who has not
/// accepted yet" wants), `expire_time` or `email`, each optionally `asc` or `desc`.
fn order(order_by: &str) -> Result<Order> {
    let newest_first = Order::CreateTime { desc: true };
    aip::parse_order(order_by, newest_first, |field, desc| match field {
        "create_time" => Some(Order::CreateTime { desc }),
        "expire_time" => Some(Order::ExpireTime { desc }),
        "email" => Some(Order::Email { desc }),
        _ => None,
    })
    .map_err(Into::into)
}

impl Invitations {
    /// A page of invitations, the next page's token and the total.
    #[tracing::instrument(skip_all)]
    pub async fn list(
        &self,
        caller: &Caller,
        req: pb::ListInvitationsRequest,
    ) -> Result<(Vec<InvitationRow>, String, i64)> {
        let comparisons = aip::parse_filter(&req.filter)?;
        let order = order(&req.order_by)?;
        let limit = aip::page_size(req.page_size, 50, 1000)?;
        let everyone = self.holds(caller, Permission::OrgRegisterUsers).await?;
        let query_key = format!("invitations|{everyone}|{}|{}", req.filter, req.order_by);
        let after: Option<(String, InvitationId)> =
            aip::decode_page_token(&query_key, &req.page_token)?;
        let filters = comparisons.iter().map(filter).collect::<Result<Vec<_>>>()?;
        let scope = Scope {
            org_id: caller.org_id,
            inviter: (!everyone).then_some(caller.user_id),
        };

        let total = store::list::count(&self.pool, scope, &filters).await?;
        let mut rows = store::list::page(
            &self.pool,
            scope,
            &filters,
            order,
            after.as_ref(),
            limit + 1,
        )
        .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_parse_with_newest_first_by_default() {
        assert_eq!(order("").unwrap(), Order::CreateTime { desc: true });
        assert_eq!(order("email").unwrap(), Order::Email { desc: false });
        assert_eq!(
            order("expire_time desc").unwrap(),
            Order::ExpireTime { desc: true }
        );
        assert!(order("email sideways").is_err());
        assert!(order("email asc desc").is_err());
        assert!(order("password").is_err());
    }

    #[test]
    fn filters_are_typed_and_ids_checked() {
        let parsed = |text: &str| -> Result<Vec<Filter>> {
            aip::parse_filter(text)?.iter().map(filter).collect()
        };
        assert_eq!(
            parsed("state = PENDING AND email : \"Ann\"").unwrap(),
            [
                Filter::State(State::Pending),
                Filter::EmailContains("ann".into())
            ]
        );
        assert_eq!(
            parsed("department_id = \"\"").unwrap(),
            [Filter::NoDepartment]
        );
        assert!(parsed("inviter_user_id = \"nope\"").is_err());
        assert!(parsed("state = SLEEPING").is_err());
        assert!(parsed("secret = \"x\"").is_err());
    }
}
