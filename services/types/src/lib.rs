//! The vocabulary every Mailroom service shares, so that two services (and a service and its
//! clients) cannot disagree on it:
//!
//! - [`ids`]: one newtype per kind of id (`OrgId`, `UserId`, `MailboxId`, …), parsed from the
//!   wire once and transparent to sqlx and serde. Passing a user's id where a mailbox's is
//!   wanted does not compile.
//! - [`permission`]: the permissions access control computes, by the names they travel under.
//! - [`password`]: the password rule (its length), shown by the console, enforced by identity.
//! - [`seats`]: the seat rule (how many people an organisation's plan admits), one predicate.

pub mod ids;
pub mod password;
pub mod permission;
pub mod seats;

pub use ids::{
    DepartmentId, IdError, InvitationId, MailboxId, OrgId, RegistrationLinkId, RoleId, UserId,
};
pub use password::PasswordPolicy;
pub use permission::{Permission, UnknownPermission};
pub use seats::Seats;
