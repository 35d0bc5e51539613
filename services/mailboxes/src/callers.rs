//! Which service principals may call the mailbox registry, and which RPCs: the one table the
//! gRPC server applies before any handler runs (see `mailroom_platform::auth::ServiceCallers`).
//! People are not listed; their tokens reach every RPC and the handlers decide. A service or
//! RPC missing here is refused with PERMISSION_DENIED.
//!
//! - The sync alone opens a mailbox's stored password (GetMailboxCredentials), to log in.
//! - The operator reseals stored passwords under the newest sealing key (`ctl mailboxes
//!   rotate-key`).

use mailroom_platform::auth::{ServiceCallers, OPERATOR};

pub const CALLERS: ServiceCallers = ServiceCallers {
    service: "mailboxes",
    allowed: &[
        (
            "sync",
            &["/mailroom.mailboxes.v1.MailboxService/GetMailboxCredentials"],
        ),
        (
            OPERATOR,
            &["/mailroom.mailboxes.v1.MailboxService/ResealCredentials"],
        ),
    ],
};
