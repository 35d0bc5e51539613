//! The destination policy for servers that people named. Anyone who may connect a mailbox
//! names a host and a port, so every outgoing connection to such a server is an attacker's
//! chance to reach inside the cluster; the policy is the one place that says where Mailroom
//! may connect:
//!
//! - only the configured ports (by default the mail ports: 25, 465, 587, 2525, 143, 993), so a
//!   connection check cannot port-scan anything;
//! - no single-label name (`redis`, `postgres`) and no cluster or local name (`*.svc`,
//!   `*.cluster.local`, `*.internal`, `*.local`, `localhost`);
//! - the name is resolved once, and refused when any of its addresses is not on the public
//!   internet: loopback, private (RFC 1918), carrier-grade NAT, unique-local, link-local
//!   (where cloud metadata lives), multicast, reserved, documentation, and the IPv6 forms
//!   that embed such an IPv4 address (IPv4-mapped, NAT64, 6to4) or tunnel to one (Teredo);
//! - unless the operator's allowlist admits it: networks (CIDRs) whose addresses are
//!   allowed, hosts whose names are trusted whatever they resolve to.
//!
//! Invariant: a [`Destination`] exists only for addresses the policy admitted, and the only
//! way to open TCP here is [`Destination::connect`] to those addresses, so a name that
//! resolves differently the second time (DNS rebinding) cannot redirect a connection.
//! On failure nothing is connected and [`DialError`] says which rule refused it.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::failure::FailureKind;

/// The ports mail servers listen on: SMTP, submission (implicit TLS and STARTTLS), the
/// common alternative submission port, IMAP and IMAPS.
pub const MAIL_PORTS: &str = "25,465,587,2525,143,993";

/// Why a connection could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("the host name does not resolve: {0}")]
    Resolve(String),
    #[error("the host name has no addresses")]
    NoAddresses,
    #[error(
        "it resolves to {ip}, {class}, which Mailroom does not connect to unless the operator \
         allows that network"
    )]
    Refused { ip: IpAddr, class: &'static str },
    #[error(
        "the host name is {0}; give the mail server's full internet name (such as imap.example.com)"
    )]
    Name(&'static str),
    #[error(
        "port {port} is not one Mailroom connects to (allowed: {allowed}); use the server's mail \
         port or ask the operator to allow this one"
    )]
    Port { port: u16, allowed: String },
    #[error("{0}")]
    Connect(String),
}

impl DialError {
    pub fn kind(&self) -> FailureKind {
        match self {
            DialError::Refused { .. } | DialError::Name(_) | DialError::Port { .. } => {
                FailureKind::Forbidden
            }
            DialError::Resolve(_) | DialError::NoAddresses | DialError::Connect(_) => {
                FailureKind::Unreachable
            }
        }
    }
}

/// A configuration value of the policy that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: `{value}` is not {expected}")]
pub struct SettingsError {
    pub setting: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl SettingsError {
    /// The message with the setting named as the environment variable under `prefix`.
    pub fn naming_variable(&self, prefix: &str) -> String {
        format!(
            "{prefix}{}: `{}` is not {}",
            self.setting.to_ascii_uppercase(),
            self.value,
            self.expected
        )
    }
}

/// The operator's allowlist as configured: comma-separated lists, parsed by
/// [`Policy::from_settings`] at start-up so a typo stops the process instead of silently
/// allowing nothing (or everything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicySettings {
    /// Networks whose addresses may be dialled although they are not public, such as
    /// `10.20.0.0/16, fd00:1::/64` (a mail server inside the company network).
    pub allowed_networks: String,
    /// Host names trusted whatever they resolve to, such as `mail.corp.internal`.
    pub allowed_hosts: String,
    /// Ports and ranges, such as `25,465,587,993` or `1024-65535`.
    pub allowed_ports: String,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            allowed_networks: String::new(),
            allowed_hosts: String::new(),
            allowed_ports: MAIL_PORTS.to_owned(),
        }
    }
}

impl PolicySettings {
    /// Says, once at start, that the environment still sets the boolean this policy replaced
    /// (`<prefix>ALLOW_LOCAL_SERVERS`), which nothing reads any more.
    pub fn warn_if_legacy_setting(prefix: &str) {
        let legacy = format!("{prefix}ALLOW_LOCAL_SERVERS");
        if std::env::var_os(&legacy).is_some() {
            tracing::warn!(
                "{legacy} is no longer read: mail servers follow {prefix}MAIL_SERVERS__ALLOWED_NETWORKS, \
                 __ALLOWED_HOSTS and __ALLOWED_PORTS (for loopback: 127.0.0.0/8 and the ports used)"
            );
        }
    }

    /// Loopback servers on any port: the local stack and the tests, never a cluster.
    pub fn local() -> Self {
        Self {
            allowed_networks: "127.0.0.0/8, ::1/128".to_owned(),
            allowed_hosts: String::new(),
            allowed_ports: "1-65535".to_owned(),
        }
    }
}

/// How a host name becomes addresses (the system resolver unless a test gives another).
pub trait Resolve: Send + Sync + 'static {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;
}

/// The operating system's resolver.
struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Which destinations may be dialled; cheap to clone.
#[derive(Clone)]
pub struct Policy {
    rules: Arc<Rules>,
    resolver: Arc<dyn Resolve>,
}

#[derive(Debug)]
struct Rules {
    networks: Vec<IpNet>,
    hosts: Vec<String>,
    ports: Vec<RangeInclusive<u16>>,
    ports_text: String,
}

impl Default for Policy {
    /// Public mail servers on the mail ports, and nothing else.
    fn default() -> Self {
        Self::from_settings(&PolicySettings::default()).expect("the default settings parse")
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("allowed_networks", &self.rules.networks)
            .field("allowed_hosts", &self.rules.hosts)
            .field("allowed_ports", &self.rules.ports_text)
            .finish()
    }
}

impl Policy {
    /// The policy `settings` describe, or which value does not parse.
    pub fn from_settings(settings: &PolicySettings) -> Result<Self, SettingsError> {
        let networks = items(&settings.allowed_networks)
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| SettingsError {
                        setting: "allowed_networks",
                        value: item.to_owned(),
                        expected: "a network such as 10.20.0.0/16 or fd00:1::/64",
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hosts = items(&settings.allowed_hosts)
            .map(normal_name)
            .collect::<Vec<_>>();
        let ports = items(&settings.allowed_ports)
            .map(|item| {
                port_range(item).ok_or_else(|| SettingsError {
                    setting: "allowed_ports",
                    value: item.to_owned(),
                    expected: "a port or a range such as 993 or 1024-65535",
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if ports.is_empty() {
            return Err(SettingsError {
                setting: "allowed_ports",
                value: settings.allowed_ports.clone(),
                expected: "a port list (name at least one port, such as 25,465,587,2525,143,993)",
            });
        }
        let ports_text = items(&settings.allowed_ports)
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self {
            rules: Arc::new(Rules {
                networks,
                hosts,
                ports,
                ports_text,
            }),
            resolver: Arc::new(SystemResolver),
        })
    }

    /// Loopback servers on any port ([`PolicySettings::local`]): tests and local development.
    pub fn local() -> Self {
        Self::from_settings(&PolicySettings::local()).expect("the local settings parse")
    }

    /// The same rules, resolving names with `resolver`.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Resolves `host` once and admits its addresses, or says which rule refuses them.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Destination, DialError> {
        self.admit_port(port)?;
        let host = host.trim();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.admit(host, vec![SocketAddr::new(ip, port)]);
        }
        let trusted = self.trusts(host);
        if !trusted {
            if let Some(class) = name_class(host) {
                return Err(DialError::Name(class));
            }
        }
        // A name that is not trusted is looked up as an absolute name, so the resolver's
        // search domains (the cluster's `svc.cluster.local`, …) are never tried.
        let query = if trusted {
            host.to_owned()
        } else {
            format!("{}.", host.trim_end_matches('.'))
        };
        let addrs = self
            .resolver
            .lookup(&query, port)
            .await
            .map_err(|e| DialError::Resolve(crate::text::one_line(&e.to_string())))?;
        if trusted {
            return self.admitted(host, addrs);
        }
        self.admit(host, addrs)
    }

    /// Admits `addrs` as where `host` is, when every one of them (address and port) is allowed.
    pub fn admit(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Destination, DialError> {
        for addr in &addrs {
            self.admit_port(addr.port())?;
            if let Some(class) = refused_class(addr.ip()) {
                if !self.allows_network(addr.ip()) {
                    return Err(DialError::Refused {
                        ip: addr.ip(),
                        class,
                    });
                }
            }
        }
        self.admitted(host, addrs)
    }

    /// Resolves, admits and connects: [`Policy::resolve`] then [`Destination::connect`].
    pub async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, DialError> {
        self.resolve(host, port).await?.connect().await
    }

    fn admitted(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Destination, DialError> {
        if addrs.is_empty() {
            return Err(DialError::NoAddresses);
        }
        Ok(Destination {
            host: host.to_owned(),
            addrs,
        })
    }

    fn admit_port(&self, port: u16) -> Result<(), DialError> {
        if self.rules.ports.iter().any(|range| range.contains(&port)) {
            Ok(())
        } else {
            Err(DialError::Port {
                port,
                allowed: self.rules.ports_text.clone(),
            })
        }
    }

    fn trusts(&self, host: &str) -> bool {
        let name = normal_name(host);
        self.rules.hosts.contains(&name)
    }

    fn allows_network(&self, ip: IpAddr) -> bool {
        let embedded = embedded_v4(ip).map(IpAddr::V4);
        self.rules
            .networks
            .iter()
            .any(|net| net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&v4)))
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

fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn port_range(item: &str) -> Option<RangeInclusive<u16>> {
    let (low, high) = item.split_once('-').unwrap_or((item, item));
    let (low, high) = (
        low.trim().parse::<u16>().ok()?,
        high.trim().parse::<u16>().ok()?,
    );
    (low >= 1 && low <= high).then_some(low..=high)
}

/// A host name as compared: lower case, without the root's trailing dot.
fn normal_name(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// What kind of name `host` is when it is one a mail server on the internet never has.
fn name_class(host: &str) -> Option<&'static str> {
    let name = normal_name(host);
    if name.is_empty() {
        return Some("empty");
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Some("a name of this machine");
    }
    if !name.contains('.') {
        return Some("a single-label name, as cluster services have");
    }
    const LOCAL_SUFFIXES: [&str; 4] = [".svc", ".cluster.local", ".internal", ".local"];
    if LOCAL_SUFFIXES.iter().any(|suffix| name.ends_with(suffix)) {
        return Some("a cluster or local network name");
    }
    None
}

/// Why `ip` is not a public internet address, or `None` when it is one.
pub fn refused_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

/// Whether `ip` is on this machine or its link (loopback, link-local, unspecified,
/// broadcast), in either family.
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

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    const CLASSES: [([u8; 4], u32, &str); 15] = [
        ([0, 0, 0, 0], 8, "an unspecified (\"this network\") address"),
        ([127, 0, 0, 0], 8, "a loopback address"),
        ([10, 0, 0, 0], 8, "a private network address (RFC 1918)"),
        ([172, 16, 0, 0], 12, "a private network address (RFC 1918)"),
        ([192, 168, 0, 0], 16, "a private network address (RFC 1918)"),
        (
            [100, 64, 0, 0],
            10,
            "a carrier-grade NAT address (RFC 6598)",
        ),
        (
            [169, 254, 0, 0],
            16,
            "a link-local address (where cloud metadata services live)",
        ),
        ([192, 0, 0, 0], 24, "an IETF protocol address"),
        ([192, 0, 2, 0], 24, "a documentation address"),
        ([198, 51, 100, 0], 24, "a documentation address"),
        ([203, 0, 113, 0], 24, "a documentation address"),
        ([198, 18, 0, 0], 15, "a benchmarking address"),
        ([192, 88, 99, 0], 24, "a 6to4 relay address"),
        ([224, 0, 0, 0], 4, "a multicast address"),
        ([240, 0, 0, 0], 4, "a reserved address"),
    ];
    CLASSES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
}

/// The IPv4 address an IPv6 address stands for, where it embeds one: IPv4-mapped,
/// the NAT64 well-known prefix, 6to4.
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(low(s[1], s[2]));
    }
    None
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if let Some(v4) = embedded_v4(IpAddr::V6(ip)) {
        return v4_class(v4).map(|_| "an IPv6 form of an IPv4 address that is not public");
    }
    if s[0] == 0 {
        // ::/8 holds only special forms (IPv4-compatible, SIIT-translated); the mapped form,
        // the one that reaches a public IPv4 server, was admitted above.
        return Some("a reserved IPv6 address (::/8)");
    }
    // fe80::/10 needs a 10-bit mask.
    if (s[0] & 0xffc0) == 0xfe80 {
        return Some("a link-local address");
    }
    const CLASSES: [(u16, u16, &str); 5] = [
        (0xffc0, 0xfec0, "a site-local address"),
        (
            0xfe00,
            0xfc00,
            "a unique local address (a private IPv6 network)",
        ),
        (0xff00, 0xff00, "a multicast address"),
        (0xffff, 0x0100, "a discard-only address"),
        (0xffff, 0x0064, "a local-use NAT64 address"),
    ];
    if let Some((_, _, class)) = CLASSES
        .iter()
        .find(|(mask, value, _)| (s[0] & mask) == *value)
    {
        return Some(class);
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Some("a documentation address");
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some("a Teredo tunnel address");
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_that_are_not_public_are_told_apart_from_public_ones() {
        for refused in [
            "127.0.0.1",
            "10.0.0.5",
            "172.20.1.1",
            "192.168.1.10",
            "100.64.0.1",
            "100.100.100.200",
            "169.254.169.254",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.7",
            "::",
            "::1",
            "fe80::1",
            "fec0::1",
            "fd00:ec2::254",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:0a00:0001::1",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "::10.0.0.1",
            "::ffff:0:a00:1",
            "::1:2",
        ] {
            assert!(refused_class(ip(refused)).is_some(), "{refused} is refused");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450:4001:80b::200e",
            "::ffff:93.184.216.34",
            "64:ff9b::5db8:d822",
        ] {
            assert_eq!(refused_class(ip(public)), None, "{public} is public");
        }
    }

    #[tokio::test]
    async fn a_private_destination_is_refused_unless_its_network_is_allowed() {
        let refused = Policy::default().dial("10.1.2.3", 993).await.unwrap_err();
        assert!(
            matches!(refused, DialError::Refused { ip, .. } if ip == ip_of("10.1.2.3")),
            "{refused:?}"
        );
        assert_eq!(refused.kind(), FailureKind::Forbidden);
        assert!(refused.to_string().contains("private network"), "{refused}");

        let allowed = Policy::from_settings(&PolicySettings {
            allowed_networks: "10.1.0.0/16".into(),
            ..PolicySettings::default()
        })
        .unwrap();
        let admitted = allowed
            .admit("mail.corp.example", vec!["10.1.2.3:993".parse().unwrap()])
            .unwrap();
        assert_eq!(admitted.addrs().len(), 1);
        assert!(allowed
            .admit("mail.corp.example", vec!["10.2.0.1:993".parse().unwrap()])
            .is_err());
    }

    fn ip_of(text: &str) -> IpAddr {
        ip(text)
    }

    #[tokio::test]
    async fn only_the_configured_ports_are_dialled() {
        let err = Policy::default()
            .dial("93.184.216.34", 6379)
            .await
            .unwrap_err();
        assert!(matches!(err, DialError::Port { port: 6379, .. }), "{err:?}");
        assert_eq!(err.kind(), FailureKind::Forbidden);
        assert!(err.to_string().contains("993"), "{err}");
        // The local stack's policy dials any port on loopback.
        let unanswered = Policy::local().dial("127.0.0.1", 9).await.unwrap_err();
        assert!(
            matches!(unanswered, DialError::Connect(_)),
            "{unanswered:?}"
        );
        assert_eq!(unanswered.kind(), FailureKind::Unreachable);
    }

    #[tokio::test]
    async fn cluster_and_single_label_names_are_refused_before_any_lookup() {
        let lookups = Arc::new(AtomicUsize::new(0));
        let policy = Policy::local().with_resolver(Arc::new(Scripted {
            answers: vec![vec!["127.0.0.1:993".parse().unwrap()]],
            asked: lookups.clone(),
        }));
        for name in [
            "redis",
            "postgres.",
            "localhost",
            "kubernetes.default.svc",
            "mailroom-identity.mailroom.svc.cluster.local",
            "metadata.google.internal",
            "printer.local",
        ] {
            let err = policy.resolve(name, 993).await.unwrap_err();
            assert!(matches!(err, DialError::Name(_)), "{name}: {err:?}");
            assert_eq!(err.kind(), FailureKind::Forbidden);
        }
        assert_eq!(lookups.load(Ordering::SeqCst), 0);
        // An operator may trust such a name.
        let trusting = Policy::from_settings(&PolicySettings {
            allowed_hosts: "Mail.Corp.Internal.".into(),
            ..PolicySettings::default()
        })
        .unwrap()
        .with_resolver(Arc::new(Scripted {
            answers: vec![vec!["10.0.0.9:993".parse().unwrap()]],
            asked: lookups.clone(),
        }));
        let admitted = trusting.resolve("mail.corp.internal", 993).await.unwrap();
        assert_eq!(admitted.addrs(), &["10.0.0.9:993".parse().unwrap()][..]);
    }

    #[test]
    fn one_refused_address_among_others_refuses_the_name() {
        let addrs = vec![
            "93.184.216.34:993".parse().unwrap(),
            "169.254.169.254:993".parse().unwrap(),
        ];
        let refused = Policy::default()
            .admit("mixed.example", addrs.clone())
            .unwrap_err();
        assert!(matches!(refused, DialError::Refused { .. }), "{refused:?}");
        let allowing = Policy::from_settings(&PolicySettings {
            allowed_networks: "169.254.169.254/32".into(),
            ..PolicySettings::default()
        })
        .unwrap();
        let admitted = allowing.admit("mixed.example", addrs.clone()).unwrap();
        assert_eq!(admitted.host(), "mixed.example");
        assert_eq!(admitted.addrs(), &addrs[..]);
        assert_eq!(
            Policy::default().admit("empty.example", Vec::new()),
            Err(DialError::NoAddresses)
        );
    }

    #[test]
    fn settings_that_do_not_parse_say_which_value() {
        let err = Policy::from_settings(&PolicySettings {
            allowed_networks: "10.0.0.0/8, ten".into(),
            ..PolicySettings::default()
        })
        .unwrap_err();
        assert_eq!(err.setting, "allowed_networks");
        assert_eq!(err.value, "ten");
        for bad in ["0", "99999", "10-5", "x", "", " , "] {
            let err = Policy::from_settings(&PolicySettings {
                allowed_ports: bad.into(),
                ..PolicySettings::default()
            })
            .unwrap_err();
            assert_eq!(err.setting, "allowed_ports", "{bad}");
        }
    }

    /// Answers each lookup with the next scripted answer (the last one again when out).
    struct Scripted {
        answers: Vec<Vec<SocketAddr>>,
        asked: Arc<AtomicUsize>,
    }

    impl Resolve for Scripted {
        fn lookup<'a>(
            &'a self,
            _host: &'a str,
            _port: u16,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
            let n = self.asked.fetch_add(1, Ordering::SeqCst);
            let answer = self.answers[n.min(self.answers.len() - 1)].clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    /// DNS rebinding: the name first resolves to an allowed address, then to a refused one.
    /// The policy resolves once, so the connection goes where the first answer said.
    #[tokio::test]
    async fn a_name_that_resolves_elsewhere_the_second_time_is_dialled_where_it_was_admitted() {
        let allowed = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = allowed.local_addr().unwrap().port();
        let forbidden = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let asked = Arc::new(AtomicUsize::new(0));
        let policy = Policy::from_settings(&PolicySettings {
            allowed_networks: "127.0.0.2/32".into(),
            allowed_ports: "1-65535".into(),
            ..PolicySettings::default()
        })
        .unwrap()
        .with_resolver(Arc::new(Scripted {
            answers: vec![
                vec![SocketAddr::new(ip("127.0.0.2"), port)],
                vec![forbidden.local_addr().unwrap()],
            ],
            asked: asked.clone(),
        }));
        let stream = policy.dial("rebind.example.com", port).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap().ip(), ip("127.0.0.2"));
        assert_eq!(asked.load(Ordering::SeqCst), 1, "resolved exactly once");
        // The second answer, had it been asked, is refused.
        let second = policy
            .resolve("rebind.example.com", port)
            .await
            .unwrap_err();
        assert!(matches!(second, DialError::Refused { .. }), "{second:?}");
    }
}
