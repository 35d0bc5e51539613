//! The client network a public call comes from, as the registration limits count it: the /24
//! of an IPv4 address, the /64 of an IPv6 one (one host, or one customer of a provider, gets
//! a whole /64), an IPv4-mapped IPv6 address counted as the IPv4 address it is.
//!
//! Who the client is — the TCP peer, or behind a configured trusted proxy (an ingress) the
//! right-most `x-forwarded-for` hop that is not one — is
//! [`mailroom_platform::client_address`]'s, configured by `trusted_proxies`.

use std::net::IpAddr;

use mailroom_platform::client_address::{network_key, Ipv4Network};

/// A client network, written as its prefix (`192.0.2.0/24`, `2001:db8:1:2::/64`), or
/// `unknown` for a call without a client address (all such calls share one limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientNetwork(String);

impl ClientNetwork {
    /// The network of the client at `client`.
    pub fn of(client: Option<IpAddr>) -> Self {
        Self(network_key(client, Ipv4Network::Slash24))
    }

    /// The rate limiter's key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClientNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(addr: &str) -> String {
        ClientNetwork::of(Some(addr.parse().unwrap())).0
    }

    #[test]
    fn ipv4_counts_by_its_slash_24() {
        assert_eq!(network("192.0.2.77"), "192.0.2.0/24");
        assert_eq!(network("192.0.2.1"), network("192.0.2.254"));
        assert_ne!(network("192.0.2.1"), network("192.0.3.1"));
    }

    #[test]
    fn ipv6_counts_by_its_slash_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(network("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(network("2001:db8:1:2::1"), network("2001:db8:1:2:ffff::9"));
        assert_ne!(network("2001:db8:1:2::1"), network("2001:db8:1:3::1"));
        assert_eq!(network("::ffff:192.0.2.9"), "192.0.2.0/24");
    }

    #[test]
    fn no_client_address_is_one_shared_network() {
        assert_eq!(ClientNetwork::of(None).as_str(), "unknown");
    }
}
