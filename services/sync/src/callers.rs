//! Which service principals may call the sync service: none. Its RPCs (activity heartbeats,
//! sync status, the message index, message bodies) are a person's, and the gRPC server refuses
//! every service token before a handler runs (see `mailroom_platform::auth::ServiceCallers`).

use mailroom_platform::auth::ServiceCallers;

pub const CALLERS: ServiceCallers = ServiceCallers {
    service: "sync",
    allowed: &[],
};
