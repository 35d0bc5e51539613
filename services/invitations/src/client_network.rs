//! The client network a public call comes from, as the registration limits count it: the /24
//! of an IPv4 address, the /64 of an IPv6 one (one host, or one customer of a provider, gets
//! a whole /64), an IPv4-mapped IPv6 address counted as the IPv4 address it is.
//!
//! The address is the gRPC connection's peer. Behind a proxy or load balancer that does not
//! keep the client's address, every caller is that proxy: one network for all.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A client network, written as its prefix (`192.0.2.0/24`, `2001:db8:1:2::/64`), or
/// `unknown` for a call without a peer address (all such calls share one limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientNetwork(String);

impl ClientNetwork {
    pub fn of(peer: Option<SocketAddr>) -> Self {
        let Some(peer) = peer else {
            return Self("unknown".into());
        };
        Self(match peer.ip() {
            IpAddr::V4(v4) => v4_network(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4_network(v4),
                None => {
                    let s = v6.segments();
                    let prefix = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                    format!("{prefix}/64")
                }
            },
        })
    }

    /// The rate limiter's key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn v4_network(v4: Ipv4Addr) -> String {
    let [a, b, c, _] = v4.octets();
    format!("{}/24", Ipv4Addr::new(a, b, c, 0))
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
        assert_eq!(network("192.0.2.77:5000"), "192.0.2.0/24");
        assert_eq!(network("192.0.2.1:1"), network("192.0.2.254:2"));
        assert_ne!(network("192.0.2.1:1"), network("192.0.3.1:1"));
    }

    #[test]
    fn ipv6_counts_by_its_slash_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(network("[2001:db8:1:2:3:4:5:6]:443"), "2001:db8:1:2::/64");
        assert_eq!(
            network("[2001:db8:1:2::1]:1"),
            network("[2001:db8:1:2:ffff::9]:2")
        );
        assert_ne!(
            network("[2001:db8:1:2::1]:1"),
            network("[2001:db8:1:3::1]:1")
        );
        assert_eq!(network("[::ffff:192.0.2.9]:80"), "192.0.2.0/24");
    }

    #[test]
    fn no_peer_address_is_one_shared_network() {
        assert_eq!(ClientNetwork::of(None).as_str(), "unknown");
    }
}
