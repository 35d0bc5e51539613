//! The destination policy for servers that people named: resolve the name once, refuse it
//! when any of its addresses is on this machine or its link (loopback, link-local — where
//! cloud metadata lives —, unspecified, broadcast) unless local servers are allowed, then
//! connect to the first of those same addresses that answers.
//!
//! Invariant: a [`Destination`] exists only for addresses the policy admitted, and the only
//! way to open TCP here is [`Destination::connect`] to those addresses, so no caller can be
//! turned into a probe of the cluster by a name that resolves differently the second time.
//! On failure nothing is connected and [`DialError`] says which step failed.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

use crate::failure::FailureKind;

/// Why a connection could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("the host name does not resolve: {0}")]
    Resolve(String),
    #[error("the host name has no addresses")]
    NoAddresses,
    #[error("it resolves to {0}, a loopback, link-local or unspecified address, which mail servers are never on")]
    Local(IpAddr),
    #[error("{0}")]
    Connect(String),
}

impl DialError {
    pub fn kind(&self) -> FailureKind {
        match self {
            DialError::Local(_) => FailureKind::Forbidden,
            DialError::Resolve(_) | DialError::NoAddresses | DialError::Connect(_) => {
                FailureKind::Unreachable
            }
        }
    }
}

/// Which addresses may be dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Loopback and other local addresses (tests and local development only).
    pub allow_local: bool,
}

impl Policy {
    /// Resolves `host` once and admits its addresses, or says why not.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Destination, DialError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| DialError::Resolve(e.to_string()))?
            .collect();
        self.admit(host, addrs)
    }

    /// Admits `addrs` as where `host` is, when every one of them is allowed.
    pub fn admit(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Destination, DialError> {
        if addrs.is_empty() {
            return Err(DialError::NoAddresses);
        }
        if !self.allow_local {
            if let Some(bad) = addrs.iter().find(|a| is_local(a.ip())) {
                return Err(DialError::Local(bad.ip()));
            }
        }
        Ok(Destination {
            host: host.to_owned(),
            addrs,
        })
    }

    /// Resolves, admits and connects: [`Policy::resolve`] then [`Destination::connect`].
    pub async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, DialError> {
        self.resolve(host, port).await?.connect().await
    }
}

/// A host's addresses, admitted by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    host: String,
    addrs: Vec<SocketAddr>,
}

impl Destination {
    /// The name the addresses were found for (what TLS checks the certificate against).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Connects to the first admitted address that answers (no Nagle).
    pub async fn connect(&self) -> Result<TcpStream, DialError> {
        let mut last = String::new();
        for addr in &self.addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(DialError::Connect(last))
    }
}

/// Whether `ip` is on this machine or its link.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_link_local())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_are_told_apart_from_remote_ones() {
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_local(ip.parse().unwrap()), "{ip} is local");
        }
        for ip in ["10.0.0.5", "192.168.1.10", "93.184.216.34", "2001:db8::1"] {
            assert!(!is_local(ip.parse().unwrap()), "{ip} is not local");
        }
    }

    #[tokio::test]
    async fn a_local_destination_is_refused_unless_allowed() {
        let refused = Policy { allow_local: false }
            .dial("127.0.0.1", 9)
            .await
            .unwrap_err();
        assert_eq!(refused, DialError::Local("127.0.0.1".parse().unwrap()));
        assert_eq!(refused.kind(), FailureKind::Forbidden);
        // Allowed, it is dialled (and nothing listens on the discard port here).
        let unanswered = Policy { allow_local: true }
            .dial("127.0.0.1", 9)
            .await
            .unwrap_err();
        assert!(
            matches!(unanswered, DialError::Connect(_)),
            "{unanswered:?}"
        );
        assert_eq!(unanswered.kind(), FailureKind::Unreachable);
    }

    #[test]
    fn one_local_address_among_others_refuses_the_name() {
        let addrs = vec![
            "93.184.216.34:993".parse().unwrap(),
            "169.254.169.254:993".parse().unwrap(),
        ];
        assert_eq!(
            Policy::default().admit("mixed.example", addrs.clone()),
            Err(DialError::Local("169.254.169.254".parse().unwrap()))
        );
        let admitted = Policy { allow_local: true }
            .admit("mixed.example", addrs.clone())
            .unwrap();
        assert_eq!(admitted.host(), "mixed.example");
        assert_eq!(admitted.addrs(), &addrs[..]);
        assert_eq!(
            Policy::default().admit("empty.example", Vec::new()),
            Err(DialError::NoAddresses)
        );
    }
}
