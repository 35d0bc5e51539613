//! How sign-in attempts are slowed and stopped without letting a stranger lock the owner out.
//!
//! Two counters in Redis, both keyed only by what the request says (never by what the
//! database holds, so neither tells whether an address exists):
//! - **per client network**: `login_attempts_per_minute` attempts for one address (and the
//!   organisation named, if any) from one network — an IPv4 address, or an IPv6 /64. Beyond
//!   it that network is refused (RESOURCE_EXHAUSTED, with when to try again); the owner, on
//!   another network, is not.
//! - **per account, from everywhere**: beyond `login_slowdown_after_attempts` attempts in 15
//!   minutes for one address (and organisation named), each further attempt waits
//!   `login_slowdown_ms` before its password is checked. It slows a distributed guesser and
//!   never refuses, so the owner still gets in.
//!
//! Both fail closed: without Redis, sign-in is UNAVAILABLE rather than unlimited.
//!
//! The client's network is the TCP peer's, unless the peer is a configured trusted proxy
//! (`trusted_proxies`, CIDRs; default none): then it is the right-most `x-forwarded-for`
//! address that is not itself a trusted proxy.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use mailroom_platform::types::OrgId;

use crate::domain::EmailAddress;
use crate::error::{IdentityError, Result};

/// A range of addresses, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Self { network, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
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

/// The proxies whose `x-forwarded-for` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// From `trusted_proxies` (`10.0.0.0/8`, `fd00::/8`, or a single address).
    pub fn parse(entries: &[String]) -> Result<Self> {
        entries
            .iter()
            .map(|entry| {
                Cidr::parse(entry).ok_or_else(|| {
                    IdentityError::InvalidArgument(format!(
                        "MAILROOM_IDENTITY__TRUSTED_PROXIES: `{}` is not an address or CIDR (like 10.0.0.0/8 or fd00::/8)",
                        mailroom_aip::shown(entry)
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// The client's address: the TCP peer's, or, when the peer is a trusted proxy, the
    /// right-most `x-forwarded-for` hop that is not one (a hop that does not parse ends the
    /// walk at the last trusted one).
    pub fn client(&self, peer: Option<SocketAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let mut client = canonical(peer?.ip());
        if !self.trusts(client) {
            return Some(client);
        }
        let hops = forwarded_for.unwrap_or_default().rsplit(',');
        for hop in hops.map(str::trim).take(32) {
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

/// A `x-forwarded-for` hop: an address, with or without a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

/// The network an address counts under: an IPv4 address alone, an IPv6 address's /64 (one
/// subscriber's usual allocation).
pub fn network_of(ip: Option<IpAddr>) -> String {
    match ip.map(canonical) {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let bits = u128::from(v6) & (u128::MAX << 64);
            format!("{}/64", Ipv6Addr::from(bits))
        }
        None => "unknown".into(),
    }
}

/// The per-network counter's key: network, organisation named (or `*`), address.
pub fn network_key(network: &str, org: Option<OrgId>, email: &EmailAddress) -> String {
    format!("{network}|{}", account_key(org, email))
}

/// The per-account counter's key: organisation named (or `*`), address.
pub fn account_key(org: Option<OrgId>, email: &EmailAddress) -> String {
    match org {
        Some(org) => format!("{org}|{}", email.as_str()),
        None => format!("*|{}", email.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    #[test]
    fn the_header_is_believed_only_from_a_trusted_proxy() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(peer("198.51.100.7"), Some("203.0.113.9")),
            Some("198.51.100.7".parse().unwrap())
        );
        let proxies =
            TrustedProxies::parse(&["10.0.0.0/8".into(), "fd00::/8".into(), "192.0.2.1".into()])
                .unwrap();
        // From the proxy: the right-most hop the proxies did not add.
        assert_eq!(
            proxies.client(peer("10.1.2.3"), Some("1.1.1.1, 203.0.113.9, 10.9.9.9")),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            proxies.client(peer("::ffff:10.1.2.3"), Some("[2001:db8::1]:443")),
            Some("2001:db8::1".parse().unwrap())
        );
        // A forged left-most hop is not reached; garbage ends the walk at the proxy.
        assert_eq!(
            proxies.client(peer("192.0.2.1"), Some("6.6.6.6, nonsense")),
            Some("192.0.2.1".parse().unwrap())
        );
        // From anyone else the header is ignored.
        assert_eq!(
            proxies.client(peer("198.51.100.7"), Some("203.0.113.9")),
            Some("198.51.100.7".parse().unwrap())
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.local".into()]).is_err());
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let a = network_of(Some("2001:db8:1:2:aaaa::1".parse().unwrap()));
        let b = network_of(Some("2001:db8:1:2:bbbb::9".parse().unwrap()));
        assert_eq!(a, b);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(
            network_of(Some("::ffff:203.0.113.9".parse().unwrap())),
            "203.0.113.9"
        );
        assert_eq!(network_of(None), "unknown");
    }
}
