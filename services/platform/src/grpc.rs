//! The gRPC server every service runs on.
//!
//! [`serve`] takes a service's routes and hosts them behind the same tower stack everywhere:
//! request context (an `x-request-id`, a tracing span that continues the caller's W3C trace,
//! the per-call deadline, call counts and latency: outermost, see [`request_context`]), a
//! concurrency limit with a short bounded queue that refuses the excess with
//! RESOURCE_EXHAUSTED ([`admission`]), and bearer-token authentication with
//! the service's own callers table (a service token must be addressed to this service and its
//! principal listed for the method, see [`crate::auth::ServiceCallers`]; the event operations
//! every service hosts, [`crate::event_ops`], are the operator's alone); plus
//! `grpc.health.v1` and server reflection (`v1` and `v1alpha`) limited to
//! what is served. Before it answers, the token verifier has read the revocations topic (see
//! [`crate::revocation`]). [`crate::hosting`] runs a service's background work beside it.
//! With `MAILROOM_GRPC_TLS__CERT_FILE`/`KEY_FILE` the port speaks TLS only, mutual with
//! `CLIENT_AUTH` ([`crate::grpc_tls`]), and serves renewed certificates without a restart
//! ([`crate::grpc_tls::ServingTls`]).
//! Health `""` and the service names follow the service's [`crate::readiness`] (revocations
//! caught up, the database answered once since start); `liveness` is SERVING while the process
//! answers.
//! On shutdown, health turns NOT_SERVING at once while the service goes on accepting and
//! answering calls for the configured drain (`MAILROOM_SHUTDOWN_DRAIN_MS`: callers move to other
//! pods meanwhile); then the listener closes and the calls in flight get their answers (each
//! within the request timeout). Token revocations are followed until the server has stopped,
//! and [`crate::hosting`] stops the background work only then.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tower::{Layer, Service};

use crate::auth::{AuthError, Principal, ServiceCallers, TokenVerifier, OPERATOR};
use crate::config::PlatformConfig;
use crate::readiness::{Condition, ServiceReadiness};

/// The request id header, set on every response too.
pub const REQUEST_ID: &str = "x-request-id";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("server reflection could not be built: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the {service} service's callers table is wrong: {mistakes}")]
    Callers { service: String, mistakes: String },
    #[error("gRPC TLS: {0}")]
    Tls(#[from] crate::grpc_tls::GrpcTlsError),
}

/// What one process hosts on one port.
pub struct Hosted {
    /// The routes of every gRPC service to serve.
    pub routes: Routes,
    /// Full names of those services (`mailroom.identity.v1.IdentityService`), for health
    /// and reflection.
    pub service_names: Vec<&'static str>,
    /// Full method paths that need no token (`/mailroom.identity.v1.AuthService/Login`).
    pub public_methods: Vec<&'static str>,
    /// Which service principals may call which of these methods (the service's
    /// `callers.rs`); its `service` is the audience the service's tokens must name.
    pub callers: ServiceCallers,
}

/// The health service name that answers SERVING while the process lives, whether or not it is
/// ready (the chart's liveness probe asks for it; readiness asks for `""`).
pub const LIVENESS_SERVICE: &str = "liveness";

/// What a caller is told when identity's signing keys cannot be fetched.
pub const KEYS_UNAVAILABLE_ANSWER: &str =
    "signing keys are unavailable for the moment; try again shortly";

/// Serves `hosted` on `listener` until `shutdown` is cancelled, then drains: NOT_SERVING at
/// once, still answering for [`PlatformConfig::shutdown_drain`], then no new connections while
/// the calls in flight finish.
pub async fn serve(
    hosted: Hosted,
    listener: TcpListener,
    verifier: TokenVerifier,
    config: &PlatformConfig,
    readiness: ServiceReadiness,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let mistakes = hosted.callers.mistakes(&hosted.service_names);
    if !mistakes.is_empty() {
        return Err(ServeError::Callers {
            service: hosted.callers.service.to_owned(),
            mistakes: mistakes.join("; "),
        });
    }
    // TLS on the port when MAILROOM_GRPC_TLS__CERT_FILE is set (mutual with CLIENT_AUTH): the
    // files were checked when the configuration was loaded, and are read again here (and
    // every so often while serving, for renewed ones).
    let tls = crate::grpc_tls::ServingTls::load(&config.grpc_tls)?;
    // Every service refuses revoked tokens: it reads the revocations topic to its end before
    // it answers, and follows it while it serves — through the drain too, until it has stopped.
    let serving = CancellationToken::new();
    let _stop_following = serving.clone().drop_guard();
    let following = verifier.follow_revocations(
        crate::kafka::KafkaSettings::from_config(config),
        config.revocations_catch_up(),
        serving,
    );
    // A stop during the wait ends the wait, not the following: polled first, the follower is
    // started before the stop is looked at, and the verifier refuses tokens until it has read
    // the topic, through the drain too.
    tokio::select! {
        biased;
        () = following => {}
        _ = shutdown.cancelled() => {}
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    // Liveness: SERVING for as long as the process answers at all, whatever readiness says
    // (not caught up, draining): restarting a replica that is only behind would make it read
    // the revocations topic again from the start.
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    // Ready (health "" and the service names SERVING) while nothing holds the service back
    // ([`crate::readiness`]): the revocations topic read to its end — until then every token is
    // refused (UNAVAILABLE), so a readiness probe keeps callers on the replicas that answer —
    // its database answered once since start; never again once a stop is asked for.
    if !verifier.revocations().is_caught_up() {
        readiness.block(
            Condition::Revocations,
            "the token revocations topic is not read to its end yet",
        );
        let revocations = verifier.revocations().clone();
        let readiness = readiness.clone();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stopping.cancelled() => {}
                ready = revocations.wait_caught_up(Duration::MAX) => {
                    if ready {
                        tracing::info!("revocations topic read to its end");
                        readiness.clear(Condition::Revocations);
                    }
                }
            }
        });
    }
    readiness.clear(Condition::Starting);
    // One writer of the readiness statuses at a time: the stop's NOT_SERVING, written under
    // it once shutdown is cancelled, is never overwritten by the follower below.
    let health_turn = Arc::new(tokio::sync::Mutex::new(()));
    let mut shown = readiness.is_ready();
    show_readiness(&health, &hosted.service_names, shown).await;
    {
        let (health, names) = (health.clone(), hosted.service_names.clone());
        let (readiness, stopping, turn) =
            (readiness.clone(), shutdown.clone(), health_turn.clone());
        let mut changes = readiness.changes();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopping.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
                let _turn = turn.lock().await;
                if stopping.is_cancelled() {
                    return;
                }
                let ready = readiness.is_ready();
                if ready != shown {
                    shown = ready;
                    show_readiness(&health, &names, ready).await;
                    match readiness.reason() {
                        None => tracing::info!("ready: serving"),
                        Some(reason) => tracing::info!(%reason, "not ready"),
                    }
                }
            }
        });
    }

    // Reflection in both versions: `v1`, and `v1alpha` for the clients that speak only it
    // (Python's grpcio-reflection, many GUI clients, older grpcurl).
    let reflection_builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(mailroom_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for name in &hosted.service_names {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let reflection = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;

    let public: HashSet<String> = hosted
        .public_methods
        .iter()
        .map(|m| (*m).to_owned())
        .collect();
    let admission = config.admission();
    let stack = tower::ServiceBuilder::new()
        // Outermost, with the request deadline inside it (not tonic's `Server::timeout`,
        // which would wrap it): timed-out, limit-queued and cancelled calls are counted.
        .layer(RequestContextLayer::new(config.request_timeout()))
        // A bounded wait for a call slot, then RESOURCE_EXHAUSTED ([`admission`]).
        .layer(AdmissionLayer::new(admission))
        .layer(AuthLayer {
            verifier,
            public: Arc::new(public),
            callers: hosted.callers,
        });

    let routes = hosted
        .routes
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha);
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });
    let names = hosted.service_names.clone();
    let drain = config.shutdown_drain();
    // Cancelled when the drain ends and the listener closes.
    let closing = CancellationToken::new();
    let closed = closing.clone();
    let signal = async move {
        shutdown.cancelled().await;
        readiness.block(Condition::Draining, "draining: shutting down");
        {
            let _turn = health_turn.lock().await;
            show_readiness(&health, &names, false).await;
        }
        // Callers find this pod gone from DNS within their re-resolve interval; until then
        // their calls still land here and are answered (unless the process never started).
        let drain = crate::shutdown::drain(drain);
        if !drain.is_zero() {
            tracing::info!(
                drain_ms = drain.as_millis() as u64,
                "draining: answering calls while callers move to other pods"
            );
            tokio::time::sleep(drain).await;
        }
        tracing::info!("drained: no new connections; finishing the calls in flight");
        closing.cancel();
    };
    // HTTP/2 streams per connection: bounded (tonic's default is none), and a fraction of the
    // call slots, so that one caller cannot take every slot and place in the queue
    // ([`Admission::max_concurrent_streams`]); its excess waits in its own transport.
    // h2's rapid-reset defence (CVE-2023-44487: at most 20 streams reset by the caller before
    // the server has taken them up) is left at its default: streams given up at their deadline
    // under load have been taken up already (they wait in the admission queue), so they do not
    // count against it.
    let router = Server::builder()
        .max_concurrent_streams(admission.max_concurrent_streams())
        .layer(stack)
        .add_routes(routes);
    let served: BoxFuture<Result<(), tonic::transport::Error>> = match tls {
        Some(tls) => Box::pin(router.serve_with_incoming_shutdown(tls.incoming(incoming), signal)),
        None => Box::pin(router.serve_with_incoming_shutdown(incoming, signal)),
    };
    // Once the listener has closed, the calls in flight have as long as any call may take (a
    // stream that never ends, a health Watch say, would otherwise hold the process until it is
    // killed, and its background work with it).
    let overdue = async {
        closed.cancelled().await;
        tokio::time::sleep(config.request_timeout() + IN_FLIGHT_MARGIN).await;
    };
    tokio::select! {
        served = served => served?,
        _ = overdue => tracing::warn!(
            "calls still open a request timeout after the drain (streams); closing them"
        ),
    }
    Ok(())
}

/// Says SERVING (`ready`) or NOT_SERVING on health `""` and each of `names`.
async fn show_readiness(
    health: &tonic_health::server::HealthReporter,
    names: &[&'static str],
    ready: bool,
) {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    for name in names {
        health.set_service_status(*name, status).await;
    }
}

/// Beyond the request timeout, how long the calls in flight when the listener closes may take
/// to send their answers (part of the process's [`crate::shutdown::limit`]).
pub const IN_FLIGHT_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The method label of a call's metrics: its path when it is a method we declare (ours, health,
/// reflection), else `unknown`.
fn metric_method(path: &str) -> String {
    const GRPC_METHODS: [&str; 4] = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ];
    if GRPC_METHODS.contains(&path) || crate::auth::is_declared_method(path) {
        path.to_owned()
    } else {
        "unknown".to_owned()
    }
}

mod admission;
mod request_context;
pub use admission::{Admission, AdmissionLayer, Admit};
pub use request_context::{MeteredBody, RequestContext, RequestContextLayer};

/// Verifies the bearer token of every call except public methods, health and reflection,
/// refuses a service token addressed to another service (UNAUTHENTICATED) or a service
/// principal this service does not list for the method (PERMISSION_DENIED), and attaches the
/// caller's [`Principal`] to the request.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: TokenVerifier,
    public: Arc<HashSet<String>>,
    callers: ServiceCallers,
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            verifier: self.verifier.clone(),
            public: self.public.clone(),
            callers: self.callers,
        }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    verifier: TokenVerifier,
    public: Arc<HashSet<String>>,
    callers: ServiceCallers,
}

/// The most of a refused call's method path a refusal shows.
const MAX_SHOWN_METHOD: usize = 120;

/// Why a caller may not make this call, if it may not: a service principal reaches only the
/// methods `callers` lists for it, and the event operations only the operator.
fn refusal(callers: &ServiceCallers, principal: &Principal, method: &str) -> Option<tonic::Status> {
    if crate::event_ops::is_ops_method(method) {
        return match principal {
            Principal::Service { name } if name == OPERATOR => None,
            _ => {
                tracing::warn!(
                    ?principal,
                    "a caller other than the operator called an event operation"
                );
                Some(tonic::Status::permission_denied(
                    crate::event_ops::OPERATOR_ONLY,
                ))
            }
        };
    }
    let Principal::Service { name } = principal else {
        return None;
    };
    if callers.permits(name, method) {
        return None;
    }
    // The path is the caller's: echoed no longer than any method of ours is.
    let method: String = method.chars().take(MAX_SHOWN_METHOD).collect();
    tracing::warn!(
        principal = %name,
        %method,
        "a service principal called an RPC its service does not list for it"
    );
    Some(tonic::Status::permission_denied(format!(
        "the {} service may not call {method}: a service token reaches only the RPCs the {} service lists for its client",
        name, callers.service
    )))
}

fn needs_token(public: &HashSet<String>, path: &str) -> bool {
    !(public.contains(path)
        || path.starts_with("/grpc.health.v1.")
        || path.starts_with("/grpc.reflection."))
}

impl<S, B, R> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let callers = self.callers;
        let check = needs_token(&self.public, req.uri().path());
        Box::pin(async move {
            if check {
                let token = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                    })
                    .map(str::trim)
                    .filter(|t| !t.is_empty());
                let principal = match token {
                    None => Err(AuthError::Missing),
                    Some(token) => verifier.verify(token).await.and_then(|claims| {
                        claims.addressed_to(callers.service)?;
                        Principal::from_claims(&claims)
                    }),
                };
                match principal {
                    Ok(principal) => {
                        if let Some(refused) = refusal(&callers, &principal, req.uri().path()) {
                            admission::drain_ready(req.into_body());
                            return Ok(refused.into_http());
                        }
                        req.extensions_mut().insert(principal);
                    }
                    Err(err) => {
                        let status = match err {
                            // The details (identity's address, the transport error) are logged
                            // where the fetch failed; a caller, maybe unauthenticated, is told
                            // no more than to try again.
                            AuthError::KeysUnavailable(_) => {
                                tonic::Status::unavailable(KEYS_UNAVAILABLE_ANSWER)
                            }
                            AuthError::RevocationsNotCaughtUp => {
                                tonic::Status::unavailable(err.to_string())
                            }
                            _ => tonic::Status::unauthenticated(err.to_string()),
                        };
                        // What of the request has arrived is read, so that its stream ends with
                        // the answer; nothing is waited for (this call holds a slot).
                        admission::drain_ready(req.into_body());
                        return Ok(status.into_http());
                    }
                }
            }
            inner.call(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_labels_are_only_declared_methods() {
        assert_eq!(
            metric_method("/mailroom.identity.v1.AuthService/Login"),
            "/mailroom.identity.v1.AuthService/Login"
        );
        assert_eq!(
            metric_method("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        for made_up in ["/x", "/mailroom.identity.v1.AuthService/Nope", "/a/b/c"] {
            assert_eq!(metric_method(made_up), "unknown", "{made_up}");
        }
    }

    #[test]
    fn health_reflection_and_listed_methods_are_public() {
        let public: HashSet<String> = ["/mailroom.identity.v1.AuthService/Login".to_owned()].into();
        assert!(!needs_token(
            &public,
            "/mailroom.identity.v1.AuthService/Login"
        ));
        assert!(!needs_token(&public, "/grpc.health.v1.Health/Check"));
        assert!(!needs_token(
            &public,
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(needs_token(
            &public,
            "/mailroom.identity.v1.IdentityService/GetUser"
        ));
    }

    #[test]
    fn a_service_principal_passes_only_for_what_its_service_lists() {
        const CREDENTIALS: &str = "/mailroom.mailboxes.v1.MailboxService/GetMailboxCredentials";
        let callers = ServiceCallers {
            service: "mailboxes",
            allowed: &[("sync", &[CREDENTIALS])],
        };
        let service = |name: &str| Principal::Service { name: name.into() };
        assert!(refusal(&callers, &service("sync"), CREDENTIALS).is_none());
        let refused = refusal(&callers, &service("invitations"), CREDENTIALS).unwrap();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().starts_with(&format!(
                "the invitations service may not call {CREDENTIALS}"
            )),
            "{}",
            refused.message()
        );
        let person = Principal::User {
            user_id: mailroom_types::UserId::new(),
            org_id: mailroom_types::OrgId::new(),
            admin: true,
        };
        assert!(
            refusal(&callers, &person, CREDENTIALS).is_none(),
            "a person's calls are the handlers' to judge"
        );
    }

    #[test]
    fn event_operations_are_the_operators_alone() {
        const LIST: &str = "/mailroom.ops.v1.EventOpsService/ListDeadLetters";
        let callers = ServiceCallers {
            service: "access",
            allowed: &[(OPERATOR, &["/mailroom.access.v1.AccessService/Check"])],
        };
        let service = |name: &str| Principal::Service { name: name.into() };
        assert!(refusal(&callers, &service(OPERATOR), LIST).is_none());
        let admin = Principal::User {
            user_id: mailroom_types::UserId::new(),
            org_id: mailroom_types::OrgId::new(),
            admin: true,
        };
        for caller in [admin, service("mailboxes"), service("access")] {
            let refused = refusal(&callers, &caller, LIST).expect("refused");
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{caller:?}");
            assert!(
                refused.message().contains("operator"),
                "{}",
                refused.message()
            );
        }
    }
}
