//! How patient a client is with its peers. The defaults suit a service calling a service in
//! the same cluster; `mailroom ctl` lengthens the deadline for its bulk operations.

use std::time::Duration;

/// Timeouts, keepalive and re-resolution for the channels to peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long one TCP connect (and HTTP/2 handshake) to one address may take.
    pub connect_timeout: Duration,
    /// How long a call may take, from asking to the answer, unless the call sets its own
    /// (`tonic::Request::set_timeout`). Sent to the peer as `grpc-timeout` too. The default is
    /// the servers' own default request timeout.
    pub deadline: Duration,
    /// How often an HTTP/2 PING checks a connection, idle or not, so a peer that vanished
    /// without closing (a pod killed, a node lost) is noticed before a call waits on it.
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
    /// How often a peer's DNS name is resolved again, to follow its pods coming and going
    /// (a failed call also asks for a look at once). With the servers' shutdown drain
    /// (`MAILROOM_SHUTDOWN_DRAIN_MS`, longer than this plus the cluster DNS's cache time) a
    /// rollout costs no call.
    pub resolve_every: Duration,
    /// How long one DNS resolution may take.
    pub resolve_timeout: Duration,
    /// How long fetching the service token from identity may take.
    pub token_timeout: Duration,
    /// TLS for `https://` endpoints (CA and client certificate); `None`: the public web roots
    /// and no client certificate.
    pub tls: Option<crate::tls::ClientTls>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            resolve_every: Duration::from_secs(5),
            resolve_timeout: Duration::from_secs(5),
            token_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl Settings {
    /// For a service calling its peers: a call to a peer may take as long as the service lets
    /// its own calls take (`MAILROOM_REQUEST_TIMEOUT_MS`).
    /// `https://` peers are called with the service's gRPC TLS (`MAILROOM_GRPC_TLS__*`): its CA
    /// and its own certificate as the client's.
    pub fn for_service(platform: &mailroom_platform::config::PlatformConfig) -> Self {
        let tls = match crate::tls::ClientTls::from_platform(&platform.grpc_tls) {
            Ok(tls) => tls,
            // Checked when the configuration was loaded; a file gone since trusts nothing
            // rather than the public roots, so https peers are refused, not trusted blindly.
            Err(err) => {
                tracing::error!(%err, "the gRPC TLS files cannot be read again; https peers will be refused");
                Some(crate::tls::ClientTls {
                    ca_pem: Some(Vec::new()),
                    identity: None,
                })
            }
        };
        Self {
            deadline: platform.request_timeout(),
            tls,
            ..Self::default()
        }
    }

    /// For a person at a terminal (`mailroom ctl`): connecting a CSV of mailboxes or
    /// re-sealing every credential may take minutes, and the servers' own request timeout
    /// still applies.
    pub fn for_operator() -> Self {
        Self {
            deadline: Duration::from_secs(600),
            ..Self::default()
        }
    }
}
