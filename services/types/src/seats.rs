//! The seat rule: an organisation's plan allows at most `limit` people who hold a seat —
//! invited and active users — and a limit of 0 means no limit.
//!
//! [`Seats::fit`] is the one predicate. Identity decides with it, under its organisation row
//! lock, on every path that adds a person (a new organisation's first admin, CreateUser,
//! RehireUser, the invitees it admits for invitations, links and registrations), so the count
//! never passes the limit however many calls race. A service that only reads identity's counts
//! (without that lock) may use it to refuse early, never to let anyone in.

/// An organisation's seats: its plan's limit and how many are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seats {
    /// The plan's limit; 0 means unlimited.
    pub limit: i32,
    /// Seats taken: invited and active users.
    pub used: i64,
}

impl Seats {
    pub const fn new(limit: i32, used: i64) -> Self {
        Self { limit, used }
    }

    /// Whether the plan has no limit.
    pub const fn unlimited(self) -> bool {
        self.limit <= 0
    }

    /// Whether `wanted` more people fit: the seat rule.
    pub fn fit(self, wanted: i64) -> bool {
        wanted <= 0 || self.unlimited() || self.used.saturating_add(wanted) <= i64::from(self.limit)
    }

    /// The seats left, `None` when the plan is unlimited.
    pub fn left(self) -> Option<i64> {
        (!self.unlimited()).then(|| (i64::from(self.limit) - self.used).max(0))
    }

    /// The same seats once `taken` more people hold one.
    pub fn after(self, taken: i64) -> Self {
        Self::new(self.limit, self.used.saturating_add(taken))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limited_plan_fits_up_to_its_limit() {
        let seats = Seats::new(5, 3);
        assert!(seats.fit(2));
        assert!(!seats.fit(3));
        assert_eq!(seats.left(), Some(2));
        assert!(!Seats::new(5, 5).fit(1));
        assert_eq!(
            Seats::new(5, 7).left(),
            Some(0),
            "a lowered limit leaves none"
        );
    }

    #[test]
    fn nobody_wanted_always_fits_and_unlimited_plans_fit_anyone() {
        assert!(Seats::new(5, 9).fit(0));
        assert!(Seats::new(0, 1_000_000).fit(1_000));
        assert_eq!(Seats::new(0, 3).left(), None);
    }
}
