//! Which service principals may call the invitations service: none. Invitations are made and
//! managed by people, and accepted with a link's secret; the gRPC server refuses every service
//! token before a handler runs (see `mailroom_platform::auth::ServiceCallers`).

use mailroom_platform::auth::ServiceCallers;

pub const CALLERS: ServiceCallers = ServiceCallers {
    service: "invitations",
    allowed: &[],
};
