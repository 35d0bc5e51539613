//! GetSeatUsage: the organisation's seats as identity counts them (seats are its user rows:
//! invited and active people).

use mailroom_platform::proto::invitations::v1 as pb;
use mailroom_types::Seats;

use crate::error::Result;
use crate::service::{Caller, Invitations};

impl Invitations {
    #[tracing::instrument(skip_all)]
    pub async fn seat_usage(&self, caller: &Caller) -> Result<pb::SeatUsage> {
        let org = self.identity.organization(caller.org_id).await?;
        let seats = Seats::new(org.seat_limit, i64::from(org.seats_used));
        Ok(pb::SeatUsage {
            seat_limit: org.seat_limit,
            active_users: org.seats_used - org.invited_users,
            pending_invitations: org.invited_users,
            // -1 for an unlimited plan; never more than the limit, an i32.
            seats_left: seats
                .left()
                .map_or(-1, |left| i32::try_from(left).unwrap_or(i32::MAX)),
        })
    }
}
