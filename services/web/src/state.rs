//! What every handler shares: the clients of the five services (calling as nobody until a
//! handler makes them a person's), the session store, the CSRF key and the public origin.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mailroom_clients::{
    AccessClient, Bearer, IdentityClient, InvitationsClient, MailboxesClient, SyncClient,
};
use mailroom_platform::client_address::TrustedProxies;
use mailroom_platform::redis::RateLimiter;

use crate::config::WebConfig;
use crate::session::SessionStore;

/// A client of each service, all calling as the same caller.
#[derive(Clone, Debug)]
pub struct Clients {
    pub identity: IdentityClient,
    pub access: AccessClient,
    pub mailboxes: MailboxesClient,
    pub sync: SyncClient,
    pub invitations: InvitationsClient,
}

impl Clients {
    /// The same clients, calling as the person whose token `bearer` carries.
    pub fn as_person(&self, bearer: &Bearer) -> Clients {
        Clients {
            identity: self.identity.as_person(bearer.clone()),
            access: self.access.as_person(bearer.clone()),
            mailboxes: self.mailboxes.as_person(bearer.clone()),
            sync: self.sync.as_person(bearer.clone()),
            invitations: self.invitations.as_person(bearer.clone()),
        }
    }
}

/// Where people reach the console, and what that means for cookies.
#[derive(Debug, Clone)]
pub struct PublicOrigin {
    /// `https://mail.example.com` (no trailing slash), as configured.
    pub base: String,
    /// The same as a browser's `Origin` says it (scheme, host, port if not the default).
    pub origin: String,
    /// Cookies carry `Secure` and the `__Host-` prefix.
    pub secure: bool,
    /// No public URL was configured: a post's `Origin` may match the `Host` it was sent to.
    pub host_fallback: bool,
}

impl PublicOrigin {
    pub fn session_cookie(&self) -> &'static str {
        if self.secure {
            "__Host-mr_session"
        } else {
            "mr_session"
        }
    }

    pub fn csrf_cookie(&self) -> &'static str {
        if self.secure {
            "__Host-mr_csrf"
        } else {
            "mr_csrf"
        }
    }
}

pub struct Inner {
    /// Calling as nobody: public methods only. A handler calls as the signed-in person through
    /// [`crate::auth::SignedIn::clients`].
    pub anonymous: Clients,
    pub sessions: SessionStore,
    /// The HMAC key of CSRF tokens.
    pub csrf_key: Vec<u8>,
    pub public: PublicOrigin,
    pub proxies: TrustedProxies,
    pub anonymous_limiter: RateLimiter,
    pub config: WebConfig,
    /// Pages being worked on at once, at most the platform's concurrency limit.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// The longest a page may take (the services' request timeout and a margin).
    pub request_deadline: std::time::Duration,
    /// Set when shutdown begins: readiness fails so the load balancer moves on, while the
    /// pages in flight and those still arriving are served for the drain.
    pub draining: std::sync::atomic::AtomicBool,
}

/// The console's shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// The browser's address: the TCP peer, or what a trusted proxy says it forwarded.
    pub fn client_ip(
        &self,
        peer: Option<SocketAddr>,
        forwarded_for: Option<&str>,
    ) -> Option<IpAddr> {
        self.proxies.client(peer, forwarded_for)
    }
}

/// `request` with `x-forwarded-for: ip`, so identity's and invitations' per-network limits
/// count the browser rather than the console (the console must be one of their trusted
/// proxies).
pub fn forwarded<T>(mut request: tonic::Request<T>, ip: Option<IpAddr>) -> tonic::Request<T> {
    if let Some(value) = ip.and_then(|ip| ip.to_string().parse().ok()) {
        request.metadata_mut().insert("x-forwarded-for", value);
    }
    request
}
