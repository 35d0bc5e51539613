//! Which service principals may call identity, and which RPCs: the one table the gRPC server
//! applies before any handler runs (see `mailroom_platform::auth::ServiceCallers`). People are
//! not listed; their tokens reach every RPC and the handlers decide. A service or RPC missing
//! here is refused with PERMISSION_DENIED.
//!
//! - The invitations service reads an organisation's name and seats, makes INVITED users for
//!   invitees (AdmitInvitees) and activates them when they accept (ActivateInvitee).
//! - The operator (`mailroom ctl` with the operator credential, which no workload holds)
//!   creates organisations and changes their plans.
//!
//! The mailbox registry, the sync and access control call identity only for its public
//! methods (service tokens, the JWKS) and learn the rest from its events.

use mailroom_platform::auth::{ServiceCallers, OPERATOR};

const GET_ORGANIZATION: &str = "/mailroom.identity.v1.IdentityService/GetOrganization";

pub const CALLERS: ServiceCallers = ServiceCallers {
    service: "identity",
    allowed: &[
        (
            "invitations",
            &[
                GET_ORGANIZATION,
                "/mailroom.identity.v1.IdentityService/AdmitInvitees",
                "/mailroom.identity.v1.IdentityService/ActivateInvitee",
            ],
        ),
        (
            OPERATOR,
            &[
                "/mailroom.identity.v1.IdentityService/CreateOrganization",
                GET_ORGANIZATION,
                "/mailroom.identity.v1.IdentityService/UpdateOrganization",
            ],
        ),
    ],
};
