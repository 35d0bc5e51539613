//! The web console: the pages people click — sign-in, invitations, "Manage user mailboxes",
//! mail, people, access permissions — served as HTML that works without JavaScript.
//!
//! A backend-for-frontend: it holds no data but sessions (in Redis) and calls the five
//! services only through `mailroom-clients`, as the signed-in person (their token, kept
//! server-side) or as nobody for the public pages. It has no service credential, so it can do
//! nothing its person could not do with `mailroom ctl`.
//!
//! - [`app`]: the router and the frame of every request (CSRF, errors, headers).
//! - [`auth`], [`session`]: who is asking; sessions and token refresh.
//! - [`page`], [`i18n`], [`timefmt`], [`assets`]: what every page is made of.
//! - [`lookup`]: people and departments as pages look them up, once.
//! - [`pages`]: one module per part of the console.

pub mod app;
pub mod assets;
pub mod auth;
pub mod config;
pub mod errors;
pub mod filter;
pub mod i18n;
pub mod lookup;
pub mod mail_render;
pub mod page;
pub mod pages;
pub mod session;
pub mod state;
pub mod timefmt;
pub mod timing;
pub mod util;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mailroom_clients::{
    AccessClient, Caller, IdentityClient, InvitationsClient, MailboxesClient, Peer, PeerChannel,
    Settings, SyncClient,
};
use mailroom_platform::client_address::TrustedProxies;
use mailroom_platform::config::PlatformConfig;
use mailroom_platform::redis::{RateLimiter, RedisLink, WithoutRedis};
use mailroom_platform::sealed::SealingKeys;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::WebConfig;
pub use state::AppState;

/// Where every mailed link has pointed all along.
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_METRICS_PORT: u16 = 9056;

/// The console, ready to serve.
pub struct Started {
    pub state: AppState,
}

/// The public origin people use, and whether cookies must be `Secure`.
fn public_origin(
    platform: &PlatformConfig,
    config: &WebConfig,
    port: u16,
) -> anyhow::Result<state::PublicOrigin> {
    let base = match platform.public_base() {
        Some(base) => base.to_owned(),
        None => {
            let base = format!("http://127.0.0.1:{port}");
            tracing::warn!(%base, "MAILROOM_PUBLIC_URL is not set; the console assumes it is reached at {base}");
            base
        }
    };
    let url = url::Url::parse(&base).context("MAILROOM_PUBLIC_URL")?;
    let secure = url.scheme() == "https";
    let origin = url.origin().ascii_serialization();
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        None => false,
    };
    if !secure && !loopback && !config.insecure_http {
        anyhow::bail!(
            "MAILROOM_PUBLIC_URL {base} is plain http on a host that is not loopback: session cookies would travel in clear. Serve the console over https, or set MAILROOM_WEB__INSECURE_HTTP=true if a proxy on the same host terminates TLS"
        );
    }
    Ok(state::PublicOrigin {
        base,
        origin,
        secure,
        host_fallback: platform.public_base().is_none(),
    })
}

/// Builds the console: the five clients (connected lazily), the session store and its keys.
pub async fn start(platform: &PlatformConfig, config: WebConfig) -> anyhow::Result<Started> {
    start_on_port(platform, config, DEFAULT_PORT).await
}

/// As [`start`], for a console that will listen on `port` (the default public URL names it).
pub async fn start_on_port(
    platform: &PlatformConfig,
    config: WebConfig,
    port: u16,
) -> anyhow::Result<Started> {
    mailroom_clients::settings::refuse_plaintext_peers(
        &platform.grpc_tls,
        &[
            ("MAILROOM_WEB__IDENTITY_ENDPOINT", &config.identity_endpoint),
            ("MAILROOM_WEB__ACCESS_ENDPOINT", &config.access_endpoint),
            (
                "MAILROOM_WEB__MAILBOXES_ENDPOINT",
                &config.mailboxes_endpoint,
            ),
            ("MAILROOM_WEB__SYNC_ENDPOINT", &config.sync_endpoint),
            (
                "MAILROOM_WEB__INVITATIONS_ENDPOINT",
                &config.invitations_endpoint,
            ),
        ],
    )?;
    let settings = Settings::for_service(platform);
    let channel = |peer: Peer, endpoint: &str| {
        PeerChannel::new(peer, endpoint, &settings)
            .with_context(|| format!("the {} endpoint {endpoint}", peer.service()))
    };
    let anonymous = state::Clients {
        identity: IdentityClient::new(
            channel(Peer::Identity, &config.identity_endpoint)?,
            Caller::Anonymous,
        ),
        access: AccessClient::new(
            channel(Peer::Access, &config.access_endpoint)?,
            Caller::Anonymous,
        ),
        mailboxes: MailboxesClient::new(
            channel(Peer::Mailboxes, &config.mailboxes_endpoint)?,
            Caller::Anonymous,
        ),
        sync: SyncClient::new(
            channel(Peer::Sync, &config.sync_endpoint)?,
            Caller::Anonymous,
        ),
        invitations: InvitationsClient::new(
            channel(Peer::Invitations, &config.invitations_endpoint)?,
            Caller::Anonymous,
        ),
    };
    let keys = if config.session_keys.is_empty() {
        tracing::warn!("MAILROOM_WEB__SESSION_KEYS is not set: a key made now seals sessions, so they end when this process does and do not span pods");
        SealingKeys::from_config(&[SecretString::from(SealingKeys::generate("process"))])
    } else {
        SealingKeys::from_config(&config.session_keys)
    }
    .context("MAILROOM_WEB__SESSION_KEYS")?;
    let csrf_key = keys
        .derive_secret("web-csrf")
        .context("no key to derive the CSRF key from")?;
    let link =
        RedisLink::with_tls(&platform.redis_url, &platform.redis_tls).context("REDIS_URL")?;
    let sessions = session::SessionStore::new(
        link.clone(),
        Arc::new(keys),
        Duration::from_secs(config.session_idle_secs.max(60)),
        Duration::from_secs(config.session_max_secs.max(60)),
    );
    let proxies =
        TrustedProxies::parse(&config.trusted_proxies).context("MAILROOM_WEB__TRUSTED_PROXIES")?;
    proxies.announce("web", "MAILROOM_WEB__TRUSTED_PROXIES");
    let anonymous_limiter = RateLimiter::new(
        link,
        "web:anon",
        config.anonymous_posts_per_minute.max(1),
        Duration::from_secs(60),
        WithoutRedis::FallBackLocal {
            limit: config.anonymous_posts_per_minute.max(1),
        },
    );
    let public = public_origin(platform, &config, port)?;
    tracing::info!(public_url = %public.base, secure_cookies = public.secure, "web console configured");
    metrics::counter!("mailroom_web_sessions_refreshed_total").absolute(0);
    Ok(Started {
        state: AppState(Arc::new(state::Inner {
            anonymous,
            sessions,
            csrf_key,
            public,
            proxies,
            anonymous_limiter,
            config,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                platform.concurrency_limit.max(1),
            )),
            request_deadline: platform.request_timeout() + Duration::from_secs(5),
            draining: std::sync::atomic::AtomicBool::new(false),
        })),
    })
}

impl Started {
    /// The router, for tests and benchmarks that drive it without a socket.
    pub fn router(&self) -> axum::Router {
        app::router(self.state.clone())
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown`; then, like the gRPC services, fails
    /// readiness and keeps serving for the drain (`MAILROOM_SHUTDOWN_DRAIN_MS`) while load
    /// balancers move on, stops accepting, and lets the pages in flight finish (each within
    /// the request deadline).
    pub async fn run(
        self,
        listener: TcpListener,
        platform: &PlatformConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        let router = self.router();
        let drain = platform.shutdown_drain();
        let deadline = state.request_deadline;
        let stop_accepting = CancellationToken::new();
        let stopping = stop_accepting.clone();
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stopping.cancelled().await });
        let watcher = {
            let stop_accepting = stop_accepting.clone();
            async move {
                shutdown.cancelled().await;
                state
                    .draining
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                let drain = mailroom_platform::shutdown::drain(drain);
                tracing::info!(?drain, "web console draining: not ready, still serving");
                tokio::time::sleep(drain).await;
                stop_accepting.cancel();
                tokio::time::sleep(deadline + Duration::from_secs(1)).await;
            }
        };
        tokio::select! {
            served = server => served.context("the web console's HTTP server")?,
            _ = watcher => tracing::warn!("pages still in flight after the request deadline were cut"),
        }
        Ok(())
    }
}
