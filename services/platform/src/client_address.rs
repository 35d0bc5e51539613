//! Who the client of a call is, for the limits counted per client network (sign-in, link
//! registration): the one place that reads a call's TCP peer and `x-forwarded-for`.
//!
//! The client is the TCP peer, unless the peer is one of the configured [`TrustedProxies`]
//! (an ingress, a load balancer): then it is the right-most `x-forwarded-for` hop that is not
//! itself a trusted proxy. Hops to the left of that one are the caller's to write and are never
//! believed. With no trusted proxies (the default) the header is ignored, and behind an ingress
//! every caller is the ingress: one network for all, which [`TrustedProxies::announce`] says
//! at start.
//!
//! [`network_key`] is the network an address counts under: an IPv6 address's /64 (one
//! subscriber's usual allocation), an IPv4 address alone or its /24, as each caller chooses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// The most `x-forwarded-for` hops walked, right to left.
const MAX_HOPS: usize = 32;

/// A `trusted_proxies` entry that is not an address or a CIDR.
#[derive(Debug, thiserror::Error)]
#[error("`{entry}` is not an address or CIDR (like 10.0.0.0/8 or fd00::/8)")]
pub struct InvalidTrustedProxy {
    /// The entry, bounded and escaped for showing.
    pub entry: String,
}

/// The proxies whose `x-forwarded-for` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// From a `trusted_proxies` setting: CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses.
    pub fn parse(entries: &[String]) -> Result<Self, InvalidTrustedProxy> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| InvalidTrustedProxy {
                        entry: entry
                            .chars()
                            .take(64)
                            .flat_map(char::escape_debug)
                            .collect(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether no proxy is trusted (every client is its TCP peer).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Logs, once at start, that with no trusted proxy the per-network limits of `service`
    /// count the TCP peer: behind an ingress, every caller shares the ingress's limit.
    pub fn announce(&self, service: &str, setting: &str) {
        if self.is_empty() {
            tracing::info!(
                service,
                "no trusted proxies ({setting} is empty): per-network limits count each call's TCP peer; behind an ingress or load balancer set {setting} to its addresses, or every client shares one limit"
            );
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of `request`: see [`Self::client`]. Every `x-forwarded-for` header counts,
    /// in order, as one list.
    pub fn client_ip<T>(&self, request: &tonic::Request<T>) -> Option<IpAddr> {
        let headers: Vec<&str> = request
            .metadata()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let forwarded_for = (!headers.is_empty()).then(|| headers.join(","));
        self.client(request.remote_addr(), forwarded_for.as_deref())
    }

    /// The client's address: the TCP peer's, or, when the peer is a trusted proxy, the
    /// right-most `x-forwarded-for` hop that is not one (a hop that does not parse ends the
    /// walk at the last trusted one). None without a peer address.
    pub fn client(&self, peer: Option<SocketAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let mut client = canonical(peer?.ip());
        if !self.trusts(client) {
            return Some(client);
        }
        let hops = forwarded_for.unwrap_or_default().rsplit(',');
        for hop in hops.map(str::trim).take(MAX_HOPS) {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Some(client)
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// A `x-forwarded-for` hop: an address, with or without a port (`[v6]:port`, `v4:port`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

/// How much of an IPv4 address is one client network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Network {
    /// The address alone (`203.0.113.9`).
    Address,
    /// Its /24 (`203.0.113.0/24`).
    Slash24,
}

/// The network `ip` counts under, as a limiter key: IPv4 as `v4` says, IPv6 by its /64
/// (`2001:db8:1:2::/64`), an IPv4-mapped IPv6 address as the IPv4 address it is; `unknown`
/// for a call without an address (all such calls share one count).
pub fn network_key(ip: Option<IpAddr>, v4: Ipv4Network) -> String {
    match ip.map(canonical) {
        Some(IpAddr::V4(address)) => match v4 {
            Ipv4Network::Address => address.to_string(),
            Ipv4Network::Slash24 => {
                let [a, b, c, _] = address.octets();
                format!("{}/24", Ipv4Addr::new(a, b, c, 0))
            }
        },
        Some(IpAddr::V6(address)) => {
            let bits = u128::from(address) & (u128::MAX << 64);
            format!("{}/64", Ipv6Addr::from(bits))
        }
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn the_header_is_believed_only_from_a_trusted_proxy() {
        let none = TrustedProxies::default();
        assert!(none.is_empty());
        assert_eq!(
            none.client(peer("198.51.100.7"), Some("203.0.113.9")),
            ip("198.51.100.7")
        );
        let proxies =
            TrustedProxies::parse(&["10.0.0.0/8".into(), " fd00::/8".into(), "192.0.2.1".into()])
                .unwrap();
        // From the proxy: the right-most hop the proxies did not add.
        assert_eq!(
            proxies.client(peer("10.1.2.3"), Some("1.1.1.1, 203.0.113.9, 10.9.9.9")),
            ip("203.0.113.9")
        );
        assert_eq!(
            proxies.client(peer("::ffff:10.1.2.3"), Some("[2001:db8::1]:443")),
            ip("2001:db8::1")
        );
        // A forged left-most hop is not reached; garbage ends the walk at the proxy.
        assert_eq!(
            proxies.client(peer("192.0.2.1"), Some("6.6.6.6, nonsense")),
            ip("192.0.2.1")
        );
        // No header from the proxy: the proxy itself.
        assert_eq!(proxies.client(peer("10.1.2.3"), None), ip("10.1.2.3"));
        // From anyone else the header is ignored.
        assert_eq!(
            proxies.client(peer("198.51.100.7"), Some("203.0.113.9")),
            ip("198.51.100.7")
        );
        assert_eq!(proxies.client(None, Some("203.0.113.9")), None);
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        let refused = TrustedProxies::parse(&["proxy.local".into()]).unwrap_err();
        assert!(refused
            .to_string()
            .contains("`proxy.local` is not an address or CIDR"));
    }

    #[test]
    fn every_forwarded_for_header_of_a_request_counts_in_order() {
        let proxies = TrustedProxies::parse(&["127.0.0.0/8".into()]).unwrap();
        let mut request = tonic::Request::new(());
        let metadata = request.metadata_mut();
        metadata.append("x-forwarded-for", "6.6.6.6".parse().unwrap());
        metadata.append("x-forwarded-for", "203.0.113.9, 127.0.0.9".parse().unwrap());
        // No TCP peer on a hand-made request: nothing to believe the header from.
        assert_eq!(proxies.client_ip(&request), None);
        let header = "6.6.6.6,203.0.113.9, 127.0.0.9";
        assert_eq!(
            proxies.client(peer("127.0.0.1"), Some(header)),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_network_is_an_ipv4_address_or_its_24_and_an_ipv6_64() {
        let (host, wide) = (Ipv4Network::Address, Ipv4Network::Slash24);
        assert_eq!(network_key(ip("203.0.113.9"), host), "203.0.113.9");
        assert_eq!(network_key(ip("203.0.113.9"), wide), "203.0.113.0/24");
        assert_eq!(
            network_key(ip("192.0.2.1"), wide),
            network_key(ip("192.0.2.254"), wide)
        );
        assert_ne!(
            network_key(ip("192.0.2.1"), host),
            network_key(ip("192.0.2.254"), host)
        );
        for v4 in [host, wide] {
            let a = network_key(ip("2001:db8:1:2:aaaa::1"), v4);
            assert_eq!(a, "2001:db8:1:2::/64");
            assert_eq!(a, network_key(ip("2001:db8:1:2:bbbb::9"), v4));
            assert_ne!(a, network_key(ip("2001:db8:1:3::1"), v4));
            assert_eq!(network_key(None, v4), "unknown");
        }
        assert_eq!(network_key(ip("::ffff:203.0.113.9"), host), "203.0.113.9");
        assert_eq!(network_key(ip("::ffff:192.0.2.9"), wide), "192.0.2.0/24");
    }
}
