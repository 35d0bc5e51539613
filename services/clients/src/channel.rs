//! One channel per peer, shared by every client of that peer in the process.
//!
//! Invariants: connecting is lazy (a service starts before its peers answer; the first call
//! connects); every connect attempt gives up after `connect_timeout`; HTTP/2 PINGs find a dead
//! connection within `keepalive_interval + keepalive_timeout`; and every call ends within its
//! deadline — its own `grpc-timeout` when it set one, else the settings' — even while no
//! address is known yet, with DEADLINE_EXCEEDED naming the peer. The deadline is sent to the
//! peer too, so it stops working on an answer nobody waits for.
//!
//! An endpoint whose host is an IP address is that one address; a DNS name is balanced across
//! its addresses ([`crate::resolve`]).
//!
//! `https://` endpoints speak TLS with [`Settings::tls`] (its CA, else the public web roots; its
//! client certificate for mutual TLS), the endpoint's host being the server name the peer's
//! certificate must carry — the DNS name, not the address a call is dialled at — unless the
//! settings' TLS names another ([`crate::ClientTls::domain_name`], for a port-forward).
//! [`Settings::tls`] holds the files' contents as read at start: every connection, reconnects
//! included, uses them, so a renewed client certificate or CA is used from the next restart
//! (the gRPC port itself serves renewed certificates at once, see
//! `mailroom_platform::grpc_tls::ServingTls`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::HeaderValue;
use tokio::sync::{watch, Notify};
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::Service;

use crate::error::{ChannelError, Peer, PeerError};
use crate::resolve::{self, Resolution};
use crate::settings::Settings;

/// How many address changes may wait for the balancer.
const CHANGES_CAPACITY: usize = 64;
const GRPC_TIMEOUT: &str = "grpc-timeout";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The channel to one peer: cheap to clone, every clone the same connections.
#[derive(Clone)]
pub struct PeerChannel {
    peer: Peer,
    endpoint: Arc<str>,
    channel: Channel,
    deadline: Duration,
    connect_timeout: Duration,
    /// What the peer's name resolves to, and how to ask for a fresh look; `None` for an IP
    /// address.
    resolution: Option<(watch::Receiver<Resolution>, Arc<Notify>)>,
}

impl std::fmt::Debug for PeerChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerChannel")
            .field("peer", &self.peer)
            .field("endpoint", &self.endpoint)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl PeerChannel {
    /// The channel to `peer` at `endpoint` (`http://host:port`). Nothing is connected yet;
    /// a DNS name starts being resolved in the background (so this needs a Tokio runtime).
    pub fn new(peer: Peer, endpoint: &str, settings: &Settings) -> Result<Self, ChannelError> {
        let refuse = |reason: &str| ChannelError {
            peer,
            endpoint: endpoint.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| refuse(&e.to_string()))?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) => s.to_owned(),
            _ => return Err(refuse("the scheme is not http or https")),
        };
        let host = uri
            .host()
            .ok_or_else(|| refuse("there is no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        if host.parse::<IpAddr>().is_ok() {
            let mut one = configured(Endpoint::from(uri), settings);
            if scheme == "https" {
                one = secured(one, settings, &host).map_err(|e| refuse(&e))?;
            }
            let channel = one.connect_lazy();
            return Ok(Self::assemble(peer, endpoint, settings, channel, None));
        }
        let lookup = resolve::dns(host.clone(), port, settings.resolve_timeout);
        Self::named(peer, endpoint, settings, (&scheme, &host, port), lookup)
    }

    /// The channel to a peer whose host is a name: balanced over the addresses `lookup`
    /// finds for it, each called with the name as its origin (`:authority`, TLS server name).
    fn named<L, F>(
        peer: Peer,
        endpoint: &str,
        settings: &Settings,
        (scheme, host, port): (&str, &str, u16),
        lookup: L,
    ) -> Result<Self, ChannelError>
    where
        L: Fn() -> F + Send + 'static,
        F: Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'static,
    {
        let refuse = |reason: String| ChannelError {
            peer,
            endpoint: endpoint.to_owned(),
            reason,
        };
        let origin: Uri = format!("{scheme}://{host}:{port}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| refuse(e.to_string()))?;
        let tls = scheme == "https";
        if tls {
            // Made for every address later: what could fail is refused now, once.
            secured(Endpoint::from(origin.clone()), settings, host).map_err(refuse)?;
        }
        let (scheme, each, host) = (scheme.to_owned(), settings.clone(), host.to_owned());
        let one = move |address: SocketAddr| {
            let uri = Uri::builder()
                .scheme(scheme.as_str())
                .authority(address.to_string())
                .path_and_query("/")
                .build()
                .unwrap_or_else(|_| origin.clone());
            let endpoint = configured(Endpoint::from(uri), &each).origin(origin.clone());
            if !tls {
                return endpoint;
            }
            // The peer's certificate names its DNS name, not this address.
            secured(endpoint.clone(), &each, &host).unwrap_or_else(|err| {
                // Not reached (the same settings passed above); without TLS the https
                // address is refused by the transport, never called in plaintext.
                tracing::error!(%err, %address, "TLS to a peer address cannot be set up");
                endpoint
            })
        };
        Ok(Self::balanced(peer, endpoint, settings, lookup, one))
    }

    /// A channel balanced over what `lookup` answers, each address made an endpoint by `one`.
    fn balanced<L, F>(
        peer: Peer,
        endpoint: &str,
        settings: &Settings,
        lookup: L,
        one: impl Fn(SocketAddr) -> Endpoint + Send + 'static,
    ) -> Self
    where
        L: Fn() -> F + Send + 'static,
        F: Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'static,
    {
        let (channel, changes) = Channel::balance_channel::<SocketAddr>(CHANGES_CAPACITY);
        let resolution = resolve::spawn(lookup, one, changes, settings.resolve_every);
        Self::assemble(peer, endpoint, settings, channel, Some(resolution))
    }

    fn assemble(
        peer: Peer,
        endpoint: &str,
        settings: &Settings,
        channel: Channel,
        resolution: Option<(watch::Receiver<Resolution>, Arc<Notify>)>,
    ) -> Self {
        Self {
            peer,
            endpoint: endpoint.into(),
            channel,
            deadline: settings.deadline,
            connect_timeout: settings.connect_timeout,
            resolution,
        }
    }

    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// The endpoint as configured.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether the peer answers at all: its gRPC health service is asked (within twice the
    /// connect timeout) and any answer will do. For a command-line tool that should say "is
    /// it running?" before anything else.
    pub async fn reachable(&self) -> Result<(), PeerError> {
        let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(self.connect_timeout * 2);
        tonic_health::pb::health_client::HealthClient::new(self.clone())
            .check(request)
            .await
            .map(drop)
            .map_err(|s| PeerError::from_status(self.peer, &s))
    }
}

/// `endpoint` with the settings' connect timeout and keepalive.
fn configured(endpoint: Endpoint, settings: &Settings) -> Endpoint {
    endpoint
        .connect_timeout(settings.connect_timeout)
        .http2_keep_alive_interval(settings.keepalive_interval)
        .keep_alive_timeout(settings.keepalive_timeout)
        .keep_alive_while_idle(true)
}

/// `endpoint` over TLS with the settings' CA (else the public web roots) and client certificate,
/// expecting a certificate for `server_name` (the endpoint's host) unless the settings' TLS
/// names another ([`crate::ClientTls::domain_name`]).
fn secured(endpoint: Endpoint, settings: &Settings, server_name: &str) -> Result<Endpoint, String> {
    let server_name = settings
        .tls
        .as_ref()
        .map_or(server_name, |tls| tls.server_name(server_name));
    let tls = settings
        .tls
        .as_ref()
        .map(crate::tls::ClientTls::tonic_config)
        .unwrap_or_else(|| mailroom_platform::grpc_tls::client_tls_config(None, None))
        .domain_name(server_name);
    endpoint.tls_config(tls).map_err(|err| {
        format!(
            "TLS cannot be set up: {}",
            mailroom_platform::grpc_tls::chain(&err)
        )
    })
}

/// Calls made before the name first resolved wait for it; calls made while it resolves to
/// nothing are refused at once.
async fn wait_for_addresses(
    peer: Peer,
    endpoint: &str,
    mut resolution: watch::Receiver<Resolution>,
) -> Result<(), tonic::Status> {
    let known = match resolution.wait_for(|r| r.settled).await {
        Ok(now) => now.clone(),
        // The resolver is gone (the runtime is shutting down): let the balancer answer.
        Err(_) => return Ok(()),
    };
    if known.addresses > 0 {
        return Ok(());
    }
    Err(tonic::Status::unavailable(format!(
        "{peer} at {endpoint}: the name resolves to no address ({})",
        known.error.as_deref().unwrap_or("no address in the answer")
    )))
}

impl Service<http::Request<Body>> for PeerChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let deadline = match request
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(parse_grpc_timeout)
        {
            Some(own) => own,
            None => {
                if let Ok(value) = HeaderValue::from_str(&format_grpc_timeout(self.deadline)) {
                    request.headers_mut().insert(GRPC_TIMEOUT, value);
                }
                self.deadline
            }
        };
        // The clone that was made ready goes with the call; this one waits for the next.
        let fresh = self.channel.clone();
        let mut ready = std::mem::replace(&mut self.channel, fresh);
        let nudge = self.resolution.as_ref().map(|(_, nudge)| nudge.clone());
        let resolution = self
            .resolution
            .as_ref()
            .map(|(resolution, _)| resolution.clone())
            .filter(|r| r.borrow().addresses == 0);
        let (peer, endpoint) = (self.peer, self.endpoint.clone());
        Box::pin(async move {
            let answer = async {
                if let Some(resolution) = resolution {
                    wait_for_addresses(peer, &endpoint, resolution).await?;
                }
                // An error here is the transport's (an answer, even a refusal, is a response):
                // the address may be gone, so the name is looked up again now.
                ready.call(request).await.map_err(|err| {
                    if let Some(nudge) = &nudge {
                        nudge.notify_one();
                    }
                    BoxError::from(err)
                })
            };
            match tokio::time::timeout(deadline, answer).await {
                Ok(answer) => answer,
                Err(_) => Err(BoxError::from(tonic::Status::deadline_exceeded(format!(
                    "{peer} gave no answer within {deadline:?}"
                )))),
            }
        })
    }
}

/// A `grpc-timeout` value (`<up to 8 digits><H|M|S|m|u|n>`).
fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// `deadline` as a `grpc-timeout` value, in milliseconds while they fit in 8 digits.
fn format_grpc_timeout(deadline: Duration) -> String {
    let millis = deadline.as_millis();
    if millis <= 99_999_999 {
        format!("{millis}m")
    } else {
        format!("{}S", deadline.as_secs().min(99_999_999))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_read_and_write() {
        let parse = |s: &str| parse_grpc_timeout(&HeaderValue::from_str(s).unwrap());
        assert_eq!(parse("30000000u"), Some(Duration::from_secs(30)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("123456789m"), None, "more than 8 digits");
        assert_eq!(parse("10x"), None);
        assert_eq!(format_grpc_timeout(Duration::from_secs(30)), "30000m");
        assert_eq!(
            parse(&format_grpc_timeout(Duration::from_secs(600))),
            Some(Duration::from_secs(600))
        );
    }

    #[tokio::test]
    async fn an_endpoint_is_a_url_with_a_host() {
        let settings = Settings::default();
        assert!(PeerChannel::new(Peer::Access, "http://127.0.0.1:50055", &settings).is_ok());
        assert!(PeerChannel::new(Peer::Access, "http://[::1]:50055", &settings).is_ok());
        let err = PeerChannel::new(Peer::Access, "127.0.0.1:50055", &settings).unwrap_err();
        assert!(
            err.to_string().starts_with("access control's endpoint"),
            "{err}"
        );
        assert!(PeerChannel::new(Peer::Access, "ftp://access:1", &settings).is_err());
    }

    /// A name that resolves to nothing fails the call at once as unavailable, naming the
    /// peer; nothing hangs.
    #[tokio::test]
    async fn a_name_without_addresses_is_refused_quickly() {
        let settings = Settings {
            resolve_timeout: Duration::from_secs(2),
            ..Settings::default()
        };
        let channel =
            PeerChannel::new(Peer::Sync, "http://no-such-peer.invalid:50054", &settings).unwrap();
        let started = std::time::Instant::now();
        let err = channel.reachable().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(8), "{err}");
        assert_eq!(err.kind(), crate::PeerErrorKind::Unavailable, "{err}");
        assert!(err.to_string().starts_with("the sync service"), "{err}");
    }

    mod on_loopback {
        //! Real tonic servers on loopback addresses, counting the calls they answer.

        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;

        use tonic_health::pb::health_server::{Health, HealthServer};
        use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

        use super::*;

        #[derive(Clone)]
        struct Counting {
            answered: Arc<AtomicUsize>,
            delay: Duration,
        }

        #[tonic::async_trait]
        impl Health for Counting {
            async fn check(
                &self,
                _: tonic::Request<HealthCheckRequest>,
            ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
                tokio::time::sleep(self.delay).await;
                self.answered.fetch_add(1, Ordering::SeqCst);
                Ok(tonic::Response::new(HealthCheckResponse { status: 1 }))
            }

            type WatchStream = futures::stream::Empty<Result<HealthCheckResponse, tonic::Status>>;

            async fn watch(
                &self,
                _: tonic::Request<HealthCheckRequest>,
            ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
                Err(tonic::Status::unimplemented(""))
            }
        }

        async fn serve(address: SocketAddr, delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
            let answered = Arc::new(AtomicUsize::new(0));
            let listener = tokio::net::TcpListener::bind(address).await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(HealthServer::new(Counting {
                        answered: answered.clone(),
                        delay,
                    }))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            (address, answered)
        }

        async fn ask(channel: &PeerChannel, own_deadline: Option<Duration>) -> tonic::Code {
            let mut request = tonic::Request::new(HealthCheckRequest::default());
            if let Some(deadline) = own_deadline {
                request.set_timeout(deadline);
            }
            match tonic_health::pb::health_client::HealthClient::new(channel.clone())
                .check(request)
                .await
            {
                Ok(_) => tonic::Code::Ok,
                Err(status) => status.code(),
            }
        }

        /// Two "pods" of one peer (the same port on 127.0.0.1 and 127.0.0.2) both answer
        /// calls; one that leaves the answer stops getting them.
        #[tokio::test]
        async fn calls_spread_over_every_address_the_name_has() {
            let (first, first_answered) =
                serve("127.0.0.1:0".parse().unwrap(), Duration::ZERO).await;
            let second_address = SocketAddr::from(([127, 0, 0, 2], first.port()));
            let (second, second_answered) = serve(second_address, Duration::ZERO).await;
            let answer = Arc::new(Mutex::new(vec![first, second]));
            let lookup = {
                let answer = answer.clone();
                move || {
                    let now = answer.lock().unwrap().clone();
                    async move { Ok(now) }
                }
            };
            let settings = Settings {
                resolve_every: Duration::from_millis(20),
                ..Settings::default()
            };
            let channel = PeerChannel::balanced(
                Peer::Access,
                "http://access.test:1",
                &settings,
                lookup,
                |a| Endpoint::from_shared(format!("http://{a}")).unwrap(),
            );
            for _ in 0..40 {
                assert_eq!(ask(&channel, None).await, tonic::Code::Ok);
            }
            let (a, b) = (
                first_answered.load(Ordering::SeqCst),
                second_answered.load(Ordering::SeqCst),
            );
            assert_eq!(a + b, 40);
            assert!(a > 0 && b > 0, "both addresses answer: {a} and {b}");

            *answer.lock().unwrap() = vec![second];
            tokio::time::sleep(Duration::from_millis(100)).await;
            for _ in 0..20 {
                assert_eq!(ask(&channel, None).await, tonic::Code::Ok);
            }
            assert_eq!(
                first_answered.load(Ordering::SeqCst),
                a,
                "the address that left"
            );
            assert_eq!(second_answered.load(Ordering::SeqCst), b + 20);
        }

        /// A peer named by DNS is called at the addresses found, with its name as the origin.
        #[tokio::test]
        async fn a_named_peer_is_called_at_the_addresses_its_name_has() {
            let (address, answered) = serve("127.0.0.1:0".parse().unwrap(), Duration::ZERO).await;
            let channel = PeerChannel::named(
                Peer::Identity,
                "http://identity.test:1",
                &Settings::default(),
                ("http", "identity.test", address.port()),
                move || async move { Ok(vec![address]) },
            )
            .unwrap();
            assert_eq!(ask(&channel, None).await, tonic::Code::Ok);
            channel.reachable().await.unwrap();
            assert_eq!(answered.load(Ordering::SeqCst), 2);
        }

        /// The settings' deadline ends a slow call; a call's own deadline wins over it.
        #[tokio::test]
        async fn every_call_has_a_deadline_and_may_set_its_own() {
            let (address, _) =
                serve("127.0.0.1:0".parse().unwrap(), Duration::from_millis(300)).await;
            let settings = Settings {
                deadline: Duration::from_millis(100),
                ..Settings::default()
            };
            let channel =
                PeerChannel::new(Peer::Identity, &format!("http://{address}"), &settings).unwrap();
            // Ended by whichever side notices first: the peer (told by `grpc-timeout`, it
            // answers CANCELLED) or this channel (DEADLINE_EXCEEDED).
            let late = ask(&channel, None).await;
            assert!(
                matches!(late, tonic::Code::DeadlineExceeded | tonic::Code::Cancelled),
                "{late:?}"
            );
            assert_eq!(
                ask(&channel, Some(Duration::from_secs(2))).await,
                tonic::Code::Ok
            );
        }

        /// A CA and a certificate it signed for `names` (DNS names or IP addresses), in PEM.
        fn certificate_for(names: &[&str]) -> (String, String, String) {
            use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
            let ca_key = KeyPair::generate().unwrap();
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
            let issuer = Issuer::new(ca_params, ca_key);
            let key = KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (ca_pem, cert.pem(), key.serialize_pem())
        }

        async fn serve_tls(cert: &str, key: &str) -> SocketAddr {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let tls = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert, key));
            tokio::spawn(
                tonic::transport::Server::builder()
                    .tls_config(tls)
                    .unwrap()
                    .add_service(HealthServer::new(Counting {
                        answered: Arc::new(AtomicUsize::new(0)),
                        delay: Duration::ZERO,
                    }))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            address
        }

        fn trusting(ca_pem: &str) -> Settings {
            Settings {
                tls: Some(crate::ClientTls {
                    ca_pem: Some(ca_pem.as_bytes().to_vec()),
                    identity: None,
                    domain_name: None,
                }),
                ..Settings::default()
            }
        }

        /// Over TLS a peer named by DNS is dialled at its addresses, yet its certificate is
        /// checked against its name: one made for the name alone is accepted; a client that
        /// trusts another CA, or expects another name, is refused.
        #[tokio::test]
        async fn a_named_peer_over_tls_must_show_a_certificate_for_its_name() {
            let (ca, cert, key) = certificate_for(&["identity.test"]);
            let address = serve_tls(&cert, &key).await;
            let named = |settings: &Settings, name: &str| {
                let endpoint = format!("https://{name}:{}", address.port());
                PeerChannel::named(
                    Peer::Identity,
                    &endpoint,
                    settings,
                    ("https", name, address.port()),
                    move || async move { Ok(vec![address]) },
                )
                .unwrap()
            };
            assert_eq!(
                ask(&named(&trusting(&ca), "identity.test"), None).await,
                tonic::Code::Ok
            );
            let (other_ca, _, _) = certificate_for(&["identity.test"]);
            assert_eq!(
                ask(&named(&trusting(&other_ca), "identity.test"), None).await,
                tonic::Code::Unavailable,
                "a certificate from a CA the client does not trust"
            );
            assert_eq!(
                ask(&named(&trusting(&ca), "access.test"), None).await,
                tonic::Code::Unavailable,
                "a certificate for another name"
            );
        }

        /// An endpoint that is an IP address is checked against that address; a plaintext
        /// endpoint to a TLS port gets no answer.
        #[tokio::test]
        async fn an_address_over_tls_is_checked_against_the_address() {
            let (ca, cert, key) = certificate_for(&["127.0.0.1"]);
            let address = serve_tls(&cert, &key).await;
            let tls = PeerChannel::new(Peer::Access, &format!("https://{address}"), &trusting(&ca))
                .unwrap();
            assert_eq!(ask(&tls, None).await, tonic::Code::Ok);
            let plain =
                PeerChannel::new(Peer::Access, &format!("http://{address}"), &trusting(&ca))
                    .unwrap();
            assert_ne!(ask(&plain, None).await, tonic::Code::Ok);
        }

        /// Through a port-forward (`https://localhost:…` or `https://127.0.0.1:…`) the peer's
        /// certificate names the service, not this machine: an explicit server name is what it
        /// is checked against, instead of the endpoint's host, for an address and for a name.
        #[tokio::test]
        async fn an_explicit_server_name_is_checked_instead_of_the_endpoints_host() {
            let (ca, cert, key) = certificate_for(&["identity.mailroom.example"]);
            let address = serve_tls(&cert, &key).await;
            let naming = |name: Option<&str>| {
                let mut settings = trusting(&ca);
                if let Some(tls) = settings.tls.as_mut() {
                    tls.domain_name = name.map(str::to_owned);
                }
                settings
            };
            let by_address = |settings: &Settings| {
                PeerChannel::new(Peer::Identity, &format!("https://{address}"), settings).unwrap()
            };
            assert_eq!(
                ask(&by_address(&naming(None)), None).await,
                tonic::Code::Unavailable,
                "the certificate does not name 127.0.0.1"
            );
            assert_eq!(
                ask(
                    &by_address(&naming(Some("identity.mailroom.example"))),
                    None
                )
                .await,
                tonic::Code::Ok
            );
            assert_eq!(
                ask(&by_address(&naming(Some("access.mailroom.example"))), None).await,
                tonic::Code::Unavailable,
                "a server name the certificate does not carry is still refused"
            );
            let by_name = PeerChannel::named(
                Peer::Identity,
                &format!("https://localhost:{}", address.port()),
                &naming(Some("identity.mailroom.example")),
                ("https", "localhost", address.port()),
                move || async move { Ok(vec![address]) },
            )
            .unwrap();
            assert_eq!(ask(&by_name, None).await, tonic::Code::Ok);
        }

        /// A peer that does not run yet: the channel is made, the call fails as unavailable.
        #[tokio::test]
        async fn a_peer_not_running_yet_is_unavailable_not_an_error_at_start() {
            let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = free.local_addr().unwrap();
            drop(free);
            let channel = PeerChannel::new(
                Peer::Mailboxes,
                &format!("http://{address}"),
                &Settings::default(),
            )
            .unwrap();
            assert_eq!(ask(&channel, None).await, tonic::Code::Unavailable);
        }
    }
}
