//! Token-signing keys at every service: a key withdrawn at identity (rotation, then
//! retirement) is refused by access and the mailbox registry within their key refresh
//! interval; a flood of tokens naming made-up keys costs identity one key fetch, not one per
//! token; and while identity is down or hangs, tokens signed with a key already known still
//! verify at once, while a withdrawal applies as soon as identity answers again.
//!
//! Identity here is a replica of the test app's identity (same database) started with the
//! keys each step needs, on one port it is stopped and started again on, as a rollout of
//! changed `MAILROOM_IDENTITY__SIGNING_KEYS` does. Access and the registry verify tokens
//! themselves, with keys fetched from it over gRPC, as separately deployed services do.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mailroom_identity::keys::KeyRing;
use mailroom_platform::config::PlatformConfig;
use mailroom_tests::access::{object, request};
use mailroom_tests::chaos::free_port;
use mailroom_tests::{
    access_pb as apb, authed, identity_config, identity_pb as pb, mailboxes_pb as mpb,
    spawn_app_with_access, test_secret, TestApp,
};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;

type AccessClient = apb::access_service_client::AccessServiceClient<Channel>;
type MailboxClient = mpb::mailbox_service_client::MailboxServiceClient<Channel>;
type AuthClient = pb::auth_service_client::AuthServiceClient<Channel>;

/// What a service made of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// The call got past authentication (whatever the handler then said).
    Accepted,
    /// Refused: not signed by a key the service trusts.
    UnknownKey,
    /// Refused for now: the service could not tell (keys or revocations not at hand).
    Unavailable(String),
    /// Anything else the auth layer said.
    Refused(Code, String),
}

fn answer<T>(result: Result<T, tonic::Status>) -> Answer {
    match result {
        Ok(_) => Answer::Accepted,
        Err(s)
            if s.code() == Code::Unauthenticated
                && s.message()
                    .contains("not signed by a key this deployment trusts") =>
        {
            Answer::UnknownKey
        }
        Err(s) if s.code() == Code::Unavailable => Answer::Unavailable(s.message().to_owned()),
        Err(s) if matches!(s.code(), Code::Unauthenticated | Code::DeadlineExceeded) => {
            Answer::Refused(s.code(), s.message().to_owned())
        }
        // A handler's answer (PERMISSION_DENIED, NOT_FOUND, …): the token was accepted.
        Err(_) => Answer::Accepted,
    }
}

/// A call on access any signed-in user may make: whether they may view some mailbox.
async fn on_access(client: &AccessClient, token: &str, user_id: &str) -> Answer {
    let mut client = client.clone();
    let call = client.check(authed(
        token,
        request(user_id, "mailbox.view", object("mailbox", "m-1"), None),
    ));
    answer(call.await)
}

/// A call on the registry any signed-in user may make: their own list view.
async fn on_mailboxes(client: &MailboxClient, token: &str) -> Answer {
    let mut client = client.clone();
    let call = client.get_list_view(authed(token, mpb::GetListViewRequest {}));
    answer(call.await)
}

/// Polls `call` until its answer is `wanted`, at most `limit`; returns how long that took.
async fn answers_within<F, Fut>(
    limit: Duration,
    what: &str,
    wanted: Answer,
    mut call: F,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let started = Instant::now();
    loop {
        let got = call().await;
        if got == wanted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: still {got:?} after {limit:?} (wanted {wanted:?})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Binds `port` on loopback, waiting for a just-closed listener to let go of it.
async fn bind(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await {
            Ok(listener) => return listener,
            Err(err) if Instant::now() > deadline => panic!("port {port} stays taken: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A channel to `endpoint` (connected on first use: the server is listening already).
fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect_lazy()
}

/// An identity replica of `app` signing with the first of its seeds, publishing them all.
pub(crate) struct KeyedIdentity {
    pub port: u16,
    pub endpoint: String,
    pub auth: AuthClient,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

impl KeyedIdentity {
    pub async fn start(app: &TestApp, port: u16, seeds: &[String]) -> Self {
        let config = mailroom_identity::IdentityConfig {
            login_attempts_per_minute: 10_000,
            login_attempts_per_network_per_minute: 1_000_000,
            ..identity_config(
                &app.env,
                seeds.iter().cloned().map(SecretString::from).collect(),
            )
        };
        let platform = app.platform().clone();
        let started = mailroom_identity::start(&platform, config)
            .await
            .expect("identity starts");
        let verifier = started.verifier.clone();
        let listener = bind(port).await;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let served = tokio::spawn(async move {
            if let Err(err) = started.run(listener, verifier, &platform, stop).await {
                eprintln!("keyed identity stopped: {err}");
            }
        });
        let endpoint = format!("http://127.0.0.1:{port}");
        Self {
            port,
            auth: AuthClient::new(channel(&endpoint)),
            endpoint,
            shutdown,
            served,
        }
    }

    /// Stops this identity and waits until its port is closed.
    pub async fn stop(self) -> u16 {
        self.shutdown.cancel();
        let _ = self.served.await;
        self.port
    }

    /// Stops this identity and starts it again on the same port with `seeds`: a rollout of
    /// changed signing keys.
    pub async fn restart(self, app: &TestApp, seeds: &[String]) -> Self {
        let port = self.stop().await;
        Self::start(app, port, seeds).await
    }

    pub async fn login(&self, email: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = self
                .auth
                .clone()
                .login(pb::LoginRequest {
                    login_email: email.into(),
                    password: mailroom_tests::PASSWORD.into(),
                    org_id: String::new(),
                })
                .await;
            match answer {
                Ok(tokens) => return tokens.into_inner().access_token,
                Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(s) => panic!("login at the keyed identity: {s:?}"),
            }
        }
    }
}

/// The test app's platform settings with these key refresh settings (milliseconds).
pub(crate) fn platform_with(
    app: &TestApp,
    refresh_ms: u64,
    retry_ms: u64,
    timeout_ms: u64,
) -> PlatformConfig {
    let mut platform = app.platform().clone();
    platform.jwks_refresh_ms = refresh_ms;
    platform.jwks_retry_ms = retry_ms;
    platform.jwks_timeout_ms = timeout_ms;
    platform
}

/// An access replica (its own consumer group) verifying tokens itself, with keys from
/// `identity_endpoint` and the revocations topic, on `platform`. Returns its client and
/// endpoint.
pub(crate) async fn start_access(
    platform: &PlatformConfig,
    identity_endpoint: &str,
    shutdown: CancellationToken,
) -> (AccessClient, String) {
    let config = mailroom_access::AccessConfig {
        consumer_group: format!("tests-access-{}", uuid::Uuid::new_v4().simple()),
        identity_endpoint: identity_endpoint.to_owned(),
        ..Default::default()
    };
    let started = mailroom_access::start(platform, config)
        .await
        .expect("access starts");
    let verifier = started.verifier.clone();
    let listener = bind(0).await;
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let platform = platform.clone();
    tokio::spawn(async move {
        if let Err(err) = started.run(listener, verifier, &platform, shutdown).await {
            eprintln!("access stopped: {err}");
        }
    });
    (AccessClient::new(channel(&endpoint)), endpoint)
}

/// A mailbox registry verifying tokens itself, with keys from `identity_endpoint`.
async fn start_mailboxes(
    app: &TestApp,
    platform: &PlatformConfig,
    identity_endpoint: &str,
    access_endpoint: &str,
    shutdown: CancellationToken,
) -> MailboxClient {
    let config = mailroom_mailboxes::MailboxesConfig {
        identity_endpoint: identity_endpoint.to_owned(),
        access_endpoint: access_endpoint.to_owned(),
        service_client_id: "mailboxes".into(),
        service_client_secret: SecretString::from(test_secret("mailboxes")),
        sealing_keys: app
            .sealing_keys
            .iter()
            .cloned()
            .map(SecretString::from)
            .collect(),
        consumer_group: format!("tests-mailboxes-{}", uuid::Uuid::new_v4().simple()),
        mail_servers: mailroom_mail::dial::PolicySettings::local(),
        ..Default::default()
    };
    let started = mailroom_mailboxes::start(platform, config)
        .await
        .expect("mailboxes starts");
    let verifier = started.verifier.clone();
    let listener = bind(0).await;
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let platform = platform.clone();
    tokio::spawn(async move {
        if let Err(err) = started.run(listener, verifier, &platform, shutdown).await {
            eprintln!("mailboxes stopped: {err}");
        }
    });
    MailboxClient::new(channel(&endpoint))
}

/// The key id a token names.
fn kid(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().expect("a JWT");
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64 header");
    let header: serde_json::Value = serde_json::from_slice(&header).expect("JSON header");
    header["kid"].as_str().expect("a kid").to_owned()
}

/// A token for `user` of `org`, signed with `seed` (identity's key, or a stranger's).
fn signed_with(seed: &str, user: &pb::User, org: &str) -> String {
    let ring = KeyRing::from_seeds(&[SecretString::from(seed.to_owned())]).expect("a key");
    let org = org.parse().expect("an organisation id");
    ring.sign(&mailroom_identity::keys::claims(
        user.id.clone(),
        Some(org),
        false,
        300,
    ))
    .expect("signed")
}

/// How many `GetJwks` calls identities of this process have answered, as their own gRPC
/// metrics count them (any outcome).
async fn jwks_served(metrics: SocketAddr) -> u64 {
    metric_sum(
        metrics,
        "mailroom_grpc_requests_total{method=\"/mailroom.identity.v1.AuthService/GetJwks\"",
    )
    .await
}

/// The sum of every series of the process's metrics whose line starts with `prefix`.
async fn metric_sum(metrics: SocketAddr, prefix: &str) -> u64 {
    mailroom_tests::scrape_metrics(metrics)
        .await
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn a_key_withdrawn_at_identity_is_refused_by_access_and_the_registry_within_the_refresh_interval(
) {
    const REFRESH: Duration = Duration::from_millis(1_000);
    let app = spawn_app_with_access().await;
    let org = app.create_org(0).await;
    let ann = app.create_user(&org, "ann", "").await;
    let (old_seed, new_seed) = (KeyRing::generate_seed(), KeyRing::generate_seed());
    let identity = KeyedIdentity::start(&app, free_port(), std::slice::from_ref(&old_seed)).await;

    let platform = platform_with(&app, REFRESH.as_millis() as u64, 200, 1_000);
    let shutdown = CancellationToken::new();
    let (access, access_endpoint) =
        start_access(&platform, &identity.endpoint, shutdown.clone()).await;
    let mailboxes = start_mailboxes(
        &app,
        &platform,
        &identity.endpoint,
        &access_endpoint,
        shutdown.clone(),
    )
    .await;

    let old = identity.login(&ann.login_email).await;
    let limit = Duration::from_secs(10);
    answers_within(limit, "old key on access", Answer::Accepted, || {
        on_access(&access, &old, &ann.id)
    })
    .await;
    answers_within(limit, "old key on the registry", Answer::Accepted, || {
        on_mailboxes(&mailboxes, &old)
    })
    .await;

    // Rotation: the new key signs, the old one is still published.
    let identity = identity
        .restart(&app, &[new_seed.clone(), old_seed.clone()])
        .await;
    let new = identity.login(&ann.login_email).await;
    assert_ne!(kid(&new), kid(&old), "the new key signs");
    for token in [&old, &new] {
        answers_within(limit, "after rotation, access", Answer::Accepted, || {
            on_access(&access, token, &ann.id)
        })
        .await;
        answers_within(
            limit,
            "after rotation, the registry",
            Answer::Accepted,
            || on_mailboxes(&mailboxes, token),
        )
        .await;
    }

    // Retirement: the old key is withdrawn. Both services verified (and remembered) the old
    // token already; within the refresh interval (and the restart's own time) they refuse it.
    let identity = identity
        .restart(&app, std::slice::from_ref(&new_seed))
        .await;
    let withdrawn = Instant::now();
    let within = REFRESH * 3 + Duration::from_secs(2);
    let on_access_after = answers_within(
        within,
        "withdrawn key on access",
        Answer::UnknownKey,
        || on_access(&access, &old, &ann.id),
    )
    .await;
    let on_registry_after = answers_within(
        within.saturating_sub(withdrawn.elapsed()),
        "withdrawn key on the registry",
        Answer::UnknownKey,
        || on_mailboxes(&mailboxes, &old),
    )
    .await;
    eprintln!(
        "withdrawn key refused after: access {on_access_after:?}, registry {:?} (refresh {REFRESH:?})",
        on_access_after + on_registry_after
    );
    assert_eq!(on_access(&access, &new, &ann.id).await, Answer::Accepted);
    assert_eq!(on_mailboxes(&mailboxes, &new).await, Answer::Accepted);
    // A token signed with the withdrawn key that no service has seen is refused too.
    let fresh_old = signed_with(&old_seed, &ann, &org.id);
    assert_eq!(
        on_access(&access, &fresh_old, &ann.id).await,
        Answer::UnknownKey
    );
    shutdown.cancel();
    identity.stop().await;
}

#[tokio::test]
async fn a_flood_of_tokens_naming_made_up_keys_costs_identity_one_key_fetch() {
    // The process's metrics registry, so identity's own count of `GetJwks` calls can be read.
    let metrics = mailroom_platform::metrics::serve("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("metrics");
    let app = spawn_app_with_access().await;
    let org = app.create_org(0).await;
    let ann = app.create_user(&org, "ann", "").await;
    let seed = KeyRing::generate_seed();
    let identity = KeyedIdentity::start(&app, free_port(), std::slice::from_ref(&seed)).await;
    const RETRY: Duration = Duration::from_millis(1_000);
    let platform = platform_with(&app, 600_000, RETRY.as_millis() as u64, 2_000);
    let shutdown = CancellationToken::new();
    let (access, _) = start_access(&platform, &identity.endpoint, shutdown.clone()).await;
    let before = jwks_served(metrics).await;

    // 300 calls at once, each with a token signed by a key of its own: a key id nobody knows.
    let strangers: Vec<String> = (0..300)
        .map(|_| signed_with(&KeyRing::generate_seed(), &ann, &org.id))
        .collect();
    let answers = futures::future::join_all(
        strangers
            .iter()
            .map(|token| on_access(&access, token, &ann.id)),
    )
    .await;
    assert!(
        answers.iter().all(|a| *a == Answer::UnknownKey),
        "{:?}",
        answers.iter().find(|a| **a != Answer::UnknownKey)
    );
    let burst = jwks_served(metrics).await - before;
    assert_eq!(
        burst, 1,
        "300 concurrent tokens with unknown keys made identity answer {burst} key fetches"
    );

    // Made-up keys for a while longer: at most one fetch per retry interval.
    let flood_started = Instant::now();
    let flood = Duration::from_millis(2_500);
    let mut calls = 0;
    while flood_started.elapsed() < flood {
        let wave: Vec<String> = (0..20)
            .map(|_| signed_with(&KeyRing::generate_seed(), &ann, &org.id))
            .collect();
        futures::future::join_all(wave.iter().map(|token| on_access(&access, token, &ann.id)))
            .await;
        calls += wave.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let flooded = jwks_served(metrics).await - before - burst;
    let bound = (flood.as_millis() / RETRY.as_millis()) as u64 + 2;
    eprintln!("{calls} more calls with made-up keys over {flood:?}: {flooded} key fetches (bound {bound})");
    assert!(
        flooded <= bound,
        "{flooded} key fetches for {calls} calls in {flood:?}"
    );
    // The deployment's own key still verifies, with no fetch of its own.
    let real = identity.login(&ann.login_email).await;
    assert_eq!(on_access(&access, &real, &ann.id).await, Answer::Accepted);
    // And the verifier's own count says the same (fetches by outcome).
    let fetched = metric_sum(metrics, "mailroom_auth_jwks_fetches_total").await;
    assert!(
        fetched >= 1 && fetched <= 1 + bound + 1,
        "mailroom_auth_jwks_fetches_total = {fetched}"
    );
    shutdown.cancel();
    identity.stop().await;
}

/// A server that accepts connections on `port` and never answers: a hung peer.
async fn tarpit(port: u16, shutdown: CancellationToken) {
    let listener = bind(port).await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        held.push(stream);
                    }
                }
            }
        }
    });
}

/// Calls `call` for `period`, asserting every answer is `wanted` and comes within `quick`.
async fn steadily<F, Fut>(
    period: Duration,
    quick: Duration,
    what: &str,
    wanted: Answer,
    mut call: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < period {
        let asked = Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(20), call())
            .await
            .unwrap_or(Answer::Refused(
                Code::DeadlineExceeded,
                "no answer in 20 s".into(),
            ));
        let took = asked.elapsed();
        assert_eq!(
            got,
            wanted,
            "{what}: call {calls} after {:?}",
            started.elapsed()
        );
        assert!(took <= quick, "{what}: call {calls} took {took:?}");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn while_identity_is_down_or_hangs_known_keys_still_verify_and_a_withdrawal_applies_once_it_answers(
) {
    const REFRESH: Duration = Duration::from_millis(500);
    const TIMEOUT: Duration = Duration::from_millis(500);
    let app = spawn_app_with_access().await;
    let org = app.create_org(0).await;
    let ann = app.create_user(&org, "ann", "").await;
    let (seed, next_seed) = (KeyRing::generate_seed(), KeyRing::generate_seed());
    let identity = KeyedIdentity::start(&app, free_port(), std::slice::from_ref(&seed)).await;
    let platform = platform_with(
        &app,
        REFRESH.as_millis() as u64,
        300,
        TIMEOUT.as_millis() as u64,
    );
    let shutdown = CancellationToken::new();
    let (access, access_endpoint) =
        start_access(&platform, &identity.endpoint, shutdown.clone()).await;
    let mailboxes = start_mailboxes(
        &app,
        &platform,
        &identity.endpoint,
        &access_endpoint,
        shutdown.clone(),
    )
    .await;
    let token = identity.login(&ann.login_email).await;
    let limit = Duration::from_secs(10);
    answers_within(limit, "access", Answer::Accepted, || {
        on_access(&access, &token, &ann.id)
    })
    .await;
    answers_within(limit, "the registry", Answer::Accepted, || {
        on_mailboxes(&mailboxes, &token)
    })
    .await;

    // Identity is down (connections refused) for several refresh intervals: the token, and
    // one signed with the same key that no service has seen yet, still verify, at once.
    let port = identity.stop().await;
    let quick = Duration::from_millis(400);
    let period = REFRESH * 4;
    steadily(
        period,
        quick,
        "down: remembered token",
        Answer::Accepted,
        || on_access(&access, &token, &ann.id),
    )
    .await;
    steadily(period, quick, "down: fresh token", Answer::Accepted, || {
        let fresh = signed_with(&seed, &ann, &org.id);
        let access = access.clone();
        let user = ann.id.clone();
        async move { on_access(&access, &fresh, &user).await }
    })
    .await;
    steadily(period, quick, "down: registry", Answer::Accepted, || {
        on_mailboxes(&mailboxes, &token)
    })
    .await;

    // Identity hangs (accepts connections, never answers): the same, and a token naming an
    // unknown key is answered within the fetch timeout, not held for as long as the caller
    // waits.
    let hung = CancellationToken::new();
    tarpit(port, hung.clone()).await;
    steadily(period, quick, "hung: fresh token", Answer::Accepted, || {
        let fresh = signed_with(&seed, &ann, &org.id);
        let access = access.clone();
        let user = ann.id.clone();
        async move { on_access(&access, &fresh, &user).await }
    })
    .await;
    steadily(period, quick, "hung: registry", Answer::Accepted, || {
        on_mailboxes(&mailboxes, &token)
    })
    .await;
    for _ in 0..3 {
        let stranger = signed_with(&KeyRing::generate_seed(), &ann, &org.id);
        let asked = Instant::now();
        let got = tokio::time::timeout(
            Duration::from_secs(20),
            on_access(&access, &stranger, &ann.id),
        )
        .await
        .unwrap_or(Answer::Refused(
            Code::DeadlineExceeded,
            "no answer in 20 s".into(),
        ));
        let took = asked.elapsed();
        assert!(
            matches!(got, Answer::Unavailable(_) | Answer::UnknownKey),
            "hung: unknown key answered {got:?}"
        );
        assert!(
            took <= TIMEOUT + Duration::from_millis(1_000),
            "hung: an unknown key was answered after {took:?}"
        );
    }

    // Identity answers again, without the key: the withdrawal applies within the interval.
    hung.cancel();
    let identity = KeyedIdentity::start(&app, port, std::slice::from_ref(&next_seed)).await;
    let back = Instant::now();
    let within = REFRESH * 3 + Duration::from_secs(3);
    answers_within(
        within,
        "withdrawn after the outage: access",
        Answer::UnknownKey,
        || on_access(&access, &token, &ann.id),
    )
    .await;
    answers_within(
        within.saturating_sub(back.elapsed()),
        "withdrawn after the outage: registry",
        Answer::UnknownKey,
        || on_mailboxes(&mailboxes, &token),
    )
    .await;
    eprintln!(
        "withdrawal applied {:?} after identity answered again",
        back.elapsed()
    );
    let next = identity.login(&ann.login_email).await;
    answers_within(limit, "the new key", Answer::Accepted, || {
        on_access(&access, &next, &ann.id)
    })
    .await;
    shutdown.cancel();
    identity.stop().await;
}

/// A token naming a key the service does not know, while identity cannot be reached: the
/// caller (who may be anyone: no key has verified the token) is told to try again, and
/// nothing of the deployment — not identity's address, not the transport's error.
#[tokio::test]
async fn keys_unavailable_tells_the_caller_to_retry_and_nothing_of_identity() {
    let app = spawn_app_with_access().await;
    let org = app.create_org(0).await;
    let ann = app.create_user(&org, "ann", "").await;
    // Identity "down": nothing listens on this port.
    let port = free_port();
    let identity_endpoint = format!("http://127.0.0.1:{port}");
    let platform = platform_with(&app, 600_000, 1_000, 500);
    let shutdown = CancellationToken::new();
    let (access, _) = start_access(&platform, &identity_endpoint, shutdown.clone()).await;
    let token = signed_with(&KeyRing::generate_seed(), &ann, &org.id);
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        match on_access(&access, &token, &ann.id).await {
            // Not the answer looked for: the replica has not read the revocations yet.
            Answer::Unavailable(m) if m.contains("revocations") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Answer::Unavailable(m) => break m,
            other => panic!("identity is unreachable, yet the unknown key was answered {other:?}"),
        }
    };
    eprintln!("told: {message}");
    for leak in [
        port.to_string().as_str(),
        "127.0.0.1",
        "http",
        "transport",
        "onnect",
    ] {
        assert!(
            !message.contains(leak),
            "the answer gives away {leak:?}: {message}"
        );
    }
    assert!(message.contains("try again"), "{message}");
    shutdown.cancel();
}
