//! GetSeatUsage: the organisation's seats as identity counts them (seats are its user rows:
//! invited and active people).

use mailroom_platform::proto::invitations::v1 as pb;

use crate::error::Result;
use crate::service::{Caller, Invitations};

impl Invitations {
    #[tracing::instrument(skip_all)]
    pub async fn seat_usage(&self, caller: &Caller) -> Result<pb::SeatUsage> {
        let org = self.identity.organization(caller.org_id).await?;
        let active = org.seats_used - org.invited_users;
        Ok(pb::SeatUsage {
            seat_limit: org.seat_limit,
            active_users: active,
            pending_invitations: org.invited_users,
            seats_left: if org.seat_limit > 0 {
                (org.seat_limit - org.seats_used).max(0)
            } else {
                -1
            },
        })
    }
}
