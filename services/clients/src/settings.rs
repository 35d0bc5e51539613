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
                    domain_name: None,
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

/// A peer named `http://` on another host while the service has gRPC TLS configured.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{setting} is `{endpoint}`: plaintext to another host, while gRPC TLS is configured (MAILROOM_GRPC_TLS__CA_FILE / CERT_FILE), so this service's credentials and calls would cross the network in clear. Name the peer https://… (http:// stays allowed to loopback only: 127.0.0.1, ::1, localhost)")]
pub struct PlaintextPeer {
    /// The setting naming the peer (`MAILROOM_MAILBOXES__ACCESS_ENDPOINT`).
    pub setting: String,
    pub endpoint: String,
}

/// Refuses (and logs as an ERROR) the first of `endpoints` — each `(setting, endpoint)` — that
/// is `http://` to a host other than this one while `grpc_tls` names a CA or a certificate:
/// with TLS configured, plaintext to a peer is a mistake that would send the service's token
/// (and what it asks) in clear. Each service calls this at start with the peers it calls.
pub fn refuse_plaintext_peers(
    grpc_tls: &mailroom_platform::grpc_tls::GrpcTlsConfig,
    endpoints: &[(&str, &str)],
) -> Result<(), PlaintextPeer> {
    if grpc_tls.ca_file.is_none() && grpc_tls.cert_file.is_none() {
        return Ok(());
    }
    for (setting, endpoint) in endpoints {
        let plaintext_elsewhere = endpoint
            .parse::<http::Uri>()
            .ok()
            .filter(|uri| uri.scheme_str() == Some("http"))
            .and_then(|uri| uri.host().map(str::to_owned))
            .is_some_and(|host| !is_loopback(&host));
        if plaintext_elsewhere {
            let refused = PlaintextPeer {
                setting: (*setting).to_owned(),
                endpoint: (*endpoint).to_owned(),
            };
            tracing::error!(setting, endpoint, "{refused}");
            return Err(refused);
        }
    }
    Ok(())
}

/// Whether `host` (as a URI gives it, IPv6 in brackets) is this machine.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_platform::grpc_tls::GrpcTlsConfig;

    #[test]
    fn with_grpc_tls_a_plaintext_peer_off_this_host_is_refused_naming_its_setting() {
        let peers = [
            ("MAILROOM_SYNC__IDENTITY_ENDPOINT", "http://127.0.0.1:50051"),
            ("MAILROOM_SYNC__ACCESS_ENDPOINT", "http://[::1]:50055"),
            (
                "MAILROOM_SYNC__MAILBOXES_ENDPOINT",
                "http://localhost:50053",
            ),
            ("MAILROOM_SYNC__IDENTITY_ENDPOINT", "https://identity:50051"),
        ];
        let plaintext = GrpcTlsConfig::default();
        let with_ca = GrpcTlsConfig {
            ca_file: Some("/etc/mailroom/tls/grpc/ca.crt".into()),
            ..Default::default()
        };
        let with_cert = GrpcTlsConfig {
            cert_file: Some("/etc/mailroom/tls/grpc/tls.crt".into()),
            ..Default::default()
        };
        refuse_plaintext_peers(&with_ca, &peers).expect("loopback http and https are fine");
        let elsewhere = [
            ("MAILROOM_SYNC__IDENTITY_ENDPOINT", "https://identity:50051"),
            (
                "MAILROOM_SYNC__ACCESS_ENDPOINT",
                "http://access.mailroom.svc:50055",
            ),
        ];
        refuse_plaintext_peers(&plaintext, &elsewhere).expect("no TLS configured: as named");
        for tls in [&with_ca, &with_cert] {
            let err = refuse_plaintext_peers(tls, &elsewhere).unwrap_err();
            assert_eq!(err.setting, "MAILROOM_SYNC__ACCESS_ENDPOINT");
            let message = err.to_string();
            assert!(
                message.starts_with(
                    "MAILROOM_SYNC__ACCESS_ENDPOINT is `http://access.mailroom.svc:50055`"
                ) && message.contains("https://"),
                "{message}"
            );
        }
    }
}
