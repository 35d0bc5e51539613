//! How sign-in attempts are slowed and stopped without letting a stranger lock the owner out.
//!
//! Counters in Redis, keyed only by what the request says (never by what the database holds,
//! so none tells whether an address exists), all checked before any password is hashed:
//! - **per client network, any address**: `login_attempts_per_network_per_minute` attempts
//!   from one network whatever addresses and organisations they name, so one network cannot
//!   spray a password over many addresses (or vary `org_id`) and fill the hashing gate.
//! - **per client network and account**: `login_attempts_per_minute` attempts for one address
//!   (and the organisation named, if any) from one network. Beyond either that network is
//!   refused (RESOURCE_EXHAUSTED, with when to try again); the owner, on another network, is
//!   not.
//! - **per account, from everywhere**: beyond `login_slowdown_after_attempts` attempts in 15
//!   minutes for one address (and organisation named), the account is paced: at most one
//!   attempt per `login_slowdown_ms` (default one a second) from all networks together, the
//!   others refused with a retry of about a second — a hard rate concurrent guesses cannot
//!   get around, never a lock-out longer than that. A network the account signed in from in
//!   the last 30 days is not paced, so the owner at home or at work gets in while a botnet
//!   guesses.
//!
//! All fail closed: without Redis, sign-in is UNAVAILABLE rather than unlimited.
//!
//! Who the client is (TCP peer, or `x-forwarded-for` behind `trusted_proxies`) is
//! [`mailroom_platform::client_address`]'s; a network here is an IPv4 address or an IPv6 /64.

use std::net::IpAddr;

use mailroom_platform::client_address::{self, Ipv4Network};
use mailroom_platform::types::OrgId;

use crate::domain::EmailAddress;

/// The network an address counts under for sign-in: an IPv4 address alone, an IPv6 address's
/// /64 (one subscriber's usual allocation).
pub fn network_of(ip: Option<IpAddr>) -> String {
    client_address::network_key(ip, Ipv4Network::Address)
}

/// The per-network-and-account counter's key: network, organisation named (or `*`), address.
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

/// The key of "this account signed in from this network" (the account's key first).
pub fn known_network_key(account: &str, network: &str) -> String {
    format!("{account}|{network}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_client_counts_alone_and_an_ipv6_one_by_its_64() {
        let a = network_of(Some("2001:db8:1:2:aaaa::1".parse().unwrap()));
        let b = network_of(Some("2001:db8:1:2:bbbb::9".parse().unwrap()));
        assert_eq!(a, b);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(
            network_of(Some("::ffff:203.0.113.9".parse().unwrap())),
            "203.0.113.9"
        );
        assert_ne!(
            network_of(Some("203.0.113.9".parse().unwrap())),
            network_of(Some("203.0.113.10".parse().unwrap()))
        );
        assert_eq!(network_of(None), "unknown");
    }
}
