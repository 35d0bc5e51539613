//! Outbound TCP to servers that people named (mail servers): resolve the name, refuse it when
//! any of its addresses is on this machine or its link (loopback, link-local — where cloud
//! metadata lives —, unspecified, broadcast) unless local servers are allowed, then connect
//! to the first address that answers. Every service that dials a user-given host goes
//! through here, so none can be turned into a probe of the cluster itself.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

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

/// Resolves `host`, checks every address (unless `allow_local`), and connects (no Nagle).
pub async fn dial(host: &str, port: u16, allow_local: bool) -> Result<TcpStream, DialError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| DialError::Resolve(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(DialError::NoAddresses);
    }
    if !allow_local {
        if let Some(bad) = addrs.iter().find(|a| is_local(a.ip())) {
            return Err(DialError::Local(bad.ip()));
        }
    }
    let mut last = String::new();
    for addr in addrs {
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
        let refused = dial("127.0.0.1", 9, false).await.unwrap_err();
        assert_eq!(refused, DialError::Local("127.0.0.1".parse().unwrap()));
        // Allowed, it is dialled (and nothing listens on the discard port here).
        assert!(matches!(
            dial("127.0.0.1", 9, true).await,
            Err(DialError::Connect(_))
        ));
    }
}
