//! Which service principals may call access control, and which RPCs: the one table the gRPC
//! server applies before any handler runs (see `mailroom_platform::auth::ServiceCallers`).
//! People are not listed; their tokens reach every RPC and the handlers decide. A service or
//! RPC missing here is refused with PERMISSION_DENIED.
//!
//! - The mailbox registry asks for a person's scope on a permission and who may read a
//!   mailbox (the "access by" column).
//! - The sync asks for a person's scope, narrowed to a mailbox's owner.
//! - The invitations service checks a person's organisation permissions (`org.invite`, …).
//! - The operator inspects and repairs relationships and roles across organisations (checks
//!   with their explanation, lookups, writes, every roles RPC).
//!
//! No workload writes relationships: owners, admins, heads and members come from identity's
//! and the registry's events.

use mailroom_platform::auth::{ServiceCallers, OPERATOR};

const CHECK: &str = "/mailroom.access.v1.AccessService/Check";
const LOOKUP_SUBJECTS: &str = "/mailroom.access.v1.AccessService/LookupSubjects";
const LOOKUP_MAILBOX_SCOPE: &str = "/mailroom.access.v1.AccessService/LookupMailboxScope";

pub const CALLERS: ServiceCallers = ServiceCallers {
    service: "access",
    allowed: &[
        ("mailboxes", &[LOOKUP_MAILBOX_SCOPE, LOOKUP_SUBJECTS]),
        ("sync", &[LOOKUP_MAILBOX_SCOPE]),
        ("invitations", &[CHECK]),
        (
            OPERATOR,
            &[
                CHECK,
                "/mailroom.access.v1.AccessService/CheckBulk",
                "/mailroom.access.v1.AccessService/LookupResources",
                LOOKUP_SUBJECTS,
                LOOKUP_MAILBOX_SCOPE,
                "/mailroom.access.v1.AccessService/ListRelationships",
                "/mailroom.access.v1.AccessService/WriteRelationships",
                "/mailroom.access.v1.AccessService/DeleteRelationships",
                "/mailroom.access.v1.AccessService/ListRoles",
                "/mailroom.access.v1.AccessService/GetRole",
                "/mailroom.access.v1.AccessService/CreateRole",
                "/mailroom.access.v1.AccessService/UpdateRole",
                "/mailroom.access.v1.AccessService/CloneRole",
                "/mailroom.access.v1.AccessService/DeleteRole",
                "/mailroom.access.v1.AccessService/AssignRole",
                "/mailroom.access.v1.AccessService/UnassignRole",
                "/mailroom.access.v1.AccessService/ListRoleAssignments",
            ],
        ),
    ],
};
