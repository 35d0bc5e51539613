//! The console's settings (`MAILROOM_WEB__*`, section `web`), parsed once at start.

use mailroom_platform::config::{local, secret_list, string_list};
use secrecy::SecretString;
use serde::Deserialize;

/// `MAILROOM_WEB__*`. Unknown keys are accepted: `mailroom dev` sets a consumer group for
/// every service, and the console consumes nothing.
#[derive(Debug, Clone, Deserialize)]
pub struct WebConfig {
    #[serde(default = "local::identity")]
    pub identity_endpoint: String,
    #[serde(default = "local::access")]
    pub access_endpoint: String,
    #[serde(default = "local::mailboxes")]
    pub mailboxes_endpoint: String,
    #[serde(default = "local::sync")]
    pub sync_endpoint: String,
    #[serde(default = "local::invitations")]
    pub invitations_endpoint: String,
    /// Keys sealing the tokens kept in sessions (`id:base64`, newest first), shared by every
    /// console pod. Empty: a key made at start, so sessions end when the process does and do
    /// not span pods (fine for one dev process, never for a deployment).
    #[serde(default, deserialize_with = "secret_list")]
    pub session_keys: Vec<SecretString>,
    /// A session unused this long ends.
    #[serde(default = "default_session_idle_secs")]
    pub session_idle_secs: u64,
    /// A session ends this long after sign-in whatever its use.
    #[serde(default = "default_session_max_secs")]
    pub session_max_secs: u64,
    /// Proxies (CIDRs) whose `x-forwarded-for` names the browser.
    #[serde(default, deserialize_with = "string_list")]
    pub trusted_proxies: Vec<String>,
    /// Forms posted by people not signed in (sign-in, reset, join), per network and minute.
    #[serde(default = "default_anonymous_posts_per_minute")]
    pub anonymous_posts_per_minute: u32,
    /// How often an open, visible console tab tells sync its person is active.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    /// Serve a non-loopback `http://` public URL (cookies without `Secure`). Only behind a
    /// proxy that terminates TLS on the same host.
    #[serde(default)]
    pub insecure_http: bool,
    /// Tell each list page's phases in a `Server-Timing` header (for benchmarks and
    /// profiling; it shows anyone signed in how long the services took).
    #[serde(default)]
    pub server_timing: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            identity_endpoint: local::identity(),
            access_endpoint: local::access(),
            mailboxes_endpoint: local::mailboxes(),
            sync_endpoint: local::sync(),
            invitations_endpoint: local::invitations(),
            session_keys: Vec::new(),
            session_idle_secs: default_session_idle_secs(),
            session_max_secs: default_session_max_secs(),
            trusted_proxies: Vec::new(),
            anonymous_posts_per_minute: default_anonymous_posts_per_minute(),
            heartbeat_secs: default_heartbeat_secs(),
            insecure_http: false,
            server_timing: false,
        }
    }
}

fn default_session_idle_secs() -> u64 {
    8 * 3600
}
fn default_session_max_secs() -> u64 {
    7 * 24 * 3600
}
fn default_anonymous_posts_per_minute() -> u32 {
    30
}
fn default_heartbeat_secs() -> u64 {
    60
}
