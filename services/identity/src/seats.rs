//! The seat rule applied. Every path that adds a person — a new organisation's first admin
//! (`orgs`), CreateUser (`users::create`), RehireUser (`users::lifecycle`), and the invitees
//! admitted for invitations, direct registrations and registration links (`invitees`) — takes
//! its seats here, with the organisation's row locked ([`LockedOrg`]), so active users plus
//! pending invitations never pass the plan's limit however many calls race.
//!
//! The predicate is [`Seats::fit`] (shared with the invitations service, which asks it of
//! identity's counts only to answer a registration link alike for every address); the refusal
//! is [`SeatShortage`]. Activating an invitee takes no seat: the INVITED user holds one already.

use mailroom_platform::types::Seats;
use sqlx::PgConnection;

use crate::error::{Joining, Result, SeatShortage};
use crate::store::{orgs, LockedOrg};

/// Takes `wanted` seats of `org`, whose row this transaction holds: counts the seats taken
/// now and refuses with [`SeatShortage`] when `wanted` more do not fit. Returns the seats as
/// they are once the people are added.
pub async fn take(
    conn: &mut PgConnection,
    org: &LockedOrg,
    wanted: i64,
    joining: Joining,
) -> Result<Seats> {
    let seats = Seats::new(org.seat_limit, orgs::seats_in_use(conn, org.id).await?);
    if !seats.fit(wanted) {
        return Err(SeatShortage {
            seats,
            wanted,
            joining,
        }
        .into());
    }
    Ok(seats.after(wanted))
}
