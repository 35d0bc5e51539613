//! Hosting services in this process: which exist, their ports, and running them until a
//! shutdown signal, with their relays. The five gRPC services and the web console (HTTP),
//! which calls them.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use figment::Figment;
use mailroom_platform::config::{self, PlatformConfig};
use mailroom_platform::port::{ReservedPort, CLOSED_CONNECTIONS_PATIENCE};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// The services this build can serve: the five of the design, and the web console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Identity,
    Access,
    Mailboxes,
    Sync,
    Invitations,
    /// The web console (HTTP, no database): it calls the other five, so it comes last.
    Web,
}

impl Service {
    pub const ALL: &'static [Service] = &[
        Service::Identity,
        Service::Access,
        Service::Mailboxes,
        Service::Sync,
        Service::Invitations,
        Service::Web,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Identity => "identity",
            Service::Access => "access",
            Service::Mailboxes => "mailboxes",
            Service::Sync => "sync",
            Service::Invitations => "invitations",
            Service::Web => "web",
        }
    }

    fn default_ports(self) -> (u16, u16) {
        match self {
            Service::Identity => (
                mailroom_identity::DEFAULT_PORT,
                mailroom_identity::DEFAULT_METRICS_PORT,
            ),
            Service::Access => (
                mailroom_access::DEFAULT_PORT,
                mailroom_access::DEFAULT_METRICS_PORT,
            ),
            Service::Mailboxes => (
                mailroom_mailboxes::DEFAULT_PORT,
                mailroom_mailboxes::DEFAULT_METRICS_PORT,
            ),
            Service::Sync => (
                mailroom_sync::DEFAULT_PORT,
                mailroom_sync::DEFAULT_METRICS_PORT,
            ),
            Service::Invitations => (
                mailroom_invitations::DEFAULT_PORT,
                mailroom_invitations::DEFAULT_METRICS_PORT,
            ),
            Service::Web => (
                mailroom_web::DEFAULT_PORT,
                mailroom_web::DEFAULT_METRICS_PORT,
            ),
        }
    }

    /// The service's database schema and migrations; `None` for the web console, which owns
    /// no data.
    fn schema(self) -> Option<(&'static str, &'static sqlx::migrate::Migrator)> {
        Some(match self {
            Service::Identity => (mailroom_identity::SCHEMA, &mailroom_identity::MIGRATIONS),
            Service::Access => (mailroom_access::SCHEMA, &mailroom_access::MIGRATIONS),
            Service::Mailboxes => (mailroom_mailboxes::SCHEMA, &mailroom_mailboxes::MIGRATIONS),
            Service::Sync => (mailroom_sync::SCHEMA, &mailroom_sync::MIGRATIONS),
            Service::Invitations => (
                mailroom_invitations::SCHEMA,
                &mailroom_invitations::MIGRATIONS,
            ),
            Service::Web => return None,
        })
    }
}

/// Parses `identity,access` or `all`. The web console, when named, is hosted last whatever
/// the order given.
pub fn parse_services(list: &str) -> anyhow::Result<Vec<Service>> {
    if list.trim() == "all" {
        return Ok(Service::ALL.to_vec());
    }
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let service = match name {
            "identity" => Service::Identity,
            "access" => Service::Access,
            "mailboxes" => Service::Mailboxes,
            "sync" => Service::Sync,
            "invitations" => Service::Invitations,
            "web" => Service::Web,
            other => {
                bail!("unknown service `{other}`; known: identity, access, mailboxes, sync, invitations, web (or `all`)")
            }
        };
        if !out.contains(&service) {
            out.push(service);
        }
    }
    if out.is_empty() {
        bail!("name at least one service, or `all`");
    }
    // Hosted after its peers, so they listen by the time the first page calls them.
    out.sort_by_key(|s| *s == Service::Web);
    Ok(out)
}

#[derive(Deserialize)]
struct Ports {
    port: Option<u16>,
    metrics_port: Option<u16>,
}

/// A service's gRPC (the web console's HTTP) and metrics addresses (`MAILROOM_<SERVICE>__PORT`, `…__METRICS_PORT`).
pub fn addresses(
    figment: &Figment,
    platform: &PlatformConfig,
    service: Service,
) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let ports: Ports = config::section(figment, service.name()).unwrap_or(Ports {
        port: None,
        metrics_port: None,
    });
    let (grpc, metrics) = service.default_ports();
    Ok((
        SocketAddr::new(platform.listen_host, ports.port.unwrap_or(grpc)),
        SocketAddr::new(platform.listen_host, ports.metrics_port.unwrap_or(metrics)),
    ))
}

pub async fn serve(list: &str, role: Option<&str>) -> anyhow::Result<()> {
    let services = parse_services(list)?;
    let mut figment = config::sources();
    if let Some(role) = role {
        figment = figment.merge(figment::providers::Serialized::default("sync.role", role));
    }
    let platform = PlatformConfig::load(&figment)?;
    let _telemetry = mailroom_platform::telemetry::init(
        services[0].name(),
        platform.log_format,
        &platform.log_level,
    )?;
    tracing::info!(config = ?platform, "starting");
    let shutdown = mailroom_platform::shutdown::on_signal(&platform);
    let running = start(&services, &figment, &platform, shutdown.clone()).await?;
    running.wait().await
}

/// Services started in this process.
pub struct Running {
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
    pub endpoints: Vec<(Service, SocketAddr, SocketAddr)>,
    pub identity: Option<std::sync::Arc<mailroom_identity::Identity>>,
    pub mailboxes: Option<std::sync::Arc<mailroom_mailboxes::Mailboxes>>,
    /// Where people open the web console, when this process hosts it.
    pub web_url: Option<String>,
    shutdown: CancellationToken,
}

impl Running {
    /// Waits until every task ends; the first failure stops the others.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(err) = result {
                tracing::error!(error = %format!("{err:#}"), "a service stopped; shutting down the rest");
                self.shutdown.cancel();
                first_error.get_or_insert(err);
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

pub async fn start(
    services: &[Service],
    figment: &Figment,
    platform: &PlatformConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let mut tasks = tokio::task::JoinSet::new();
    // `/readyz` says not ready until every service named here has started, not only the first.
    let starting = mailroom_platform::readiness::register("mailroom");
    starting.block(
        mailroom_platform::readiness::Condition::Starting,
        "starting the services of this process",
    );
    // Every port is reserved before any service starts (`mailroom_platform::port`): a started
    // service opens connections (to the database, the broker, its peers), and the kernel could
    // give one of them, as its local port, a port a later service of this process is to listen
    // on (the defaults lie in Linux's ephemeral range), which then failed to start with
    // "address already in use". A reserved port refuses connections until its service listens.
    let mut reserved = Vec::with_capacity(services.len());
    let ports_free_by = std::time::Instant::now() + CLOSED_CONNECTIONS_PATIENCE;
    for service in services {
        let (grpc_addr, metrics_addr) = addresses(figment, platform, *service)?;
        // Every service's metrics port answers (with the process's one registry); `/readyz`
        // says "starting" until every service here has started. It answers before the
        // gRPC port is reserved, so `/livez` (the startup probe) says the process lives while
        // that port is waited for.
        let metrics_addr = if platform.metrics_enabled {
            mailroom_platform::metrics::serve(metrics_addr)
                .await
                .with_context(|| {
                    format!(
                        "{} metrics (set MAILROOM_{}__METRICS_PORT to a free port)",
                        service.name(),
                        service.name().to_uppercase()
                    )
                })?
        } else {
            metrics_addr
        };
        // A port that only other programs' closing connections hold (TIME_WAIT lasts a
        // minute) is waited for, all ports within one minute; anything else stops the start.
        let port = ReservedPort::reserve_patiently(grpc_addr, ports_free_by, &shutdown)
            .await
            .with_context(|| {
                format!(
                    "{}'s port (another program may hold it: set MAILROOM_{}__PORT to a free one)",
                    service.name(),
                    service.name().to_uppercase()
                )
            })?;
        // A stop asked for while waiting: nothing is started (`host_each` checks it too).
        let Some(port) = port else { break };
        reserved.push((*service, port, metrics_addr));
    }
    // A service that does not start stops the process, but not by dropping the ones started
    // before it: they are told to stop, and their consumers leave their groups and their relays
    // step down, as on any shutdown, before the error is returned.
    let hosted = host_each(reserved, &mut tasks, figment, platform, &shutdown).await;
    let Hosted {
        endpoints,
        identity,
        mailboxes,
        web_url,
    } = match hosted {
        Ok(hosted) => hosted,
        Err(err) => {
            if !tasks.is_empty() {
                tracing::error!(
                    error = %format!("{err:#}"),
                    started = tasks.len(),
                    "a service did not start; stopping the ones that did"
                );
                // Never ready, so no caller was sent here: the servers stop without a drain.
                mailroom_platform::shutdown::abandon_start();
                shutdown.cancel();
                while let Some(joined) = tasks.join_next().await {
                    match joined {
                        Ok(Ok(())) => {}
                        Ok(Err(stopped)) => tracing::warn!(
                            error = %format!("{stopped:#}"),
                            "a started service stopped with an error"
                        ),
                        Err(join) => tracing::error!(
                            panicked = join.is_panic(),
                            "a started service's task ended abnormally while stopping"
                        ),
                    }
                }
            }
            return Err(err);
        }
    };
    drop(starting);
    Ok(Running {
        tasks,
        endpoints,
        identity,
        mailboxes,
        web_url,
        shutdown,
    })
}

/// What [`host_each`] started: each service's addresses, and the services `mailroom dev` seeds.
struct Hosted {
    endpoints: Vec<(Service, SocketAddr, SocketAddr)>,
    identity: Option<std::sync::Arc<mailroom_identity::Identity>>,
    mailboxes: Option<std::sync::Arc<mailroom_mailboxes::Mailboxes>>,
    web_url: Option<String>,
}

/// Starts each service on its reserved port, in order, each one's server a task of `tasks`.
/// On an error the services started before it are left running in `tasks`, for the caller
/// to stop.
async fn host_each(
    reserved: Vec<(Service, ReservedPort, SocketAddr)>,
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    figment: &Figment,
    platform: &PlatformConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<Hosted> {
    // Services in one process share identity's verifier when identity is among them.
    let mut shared_verifier: Option<mailroom_platform::auth::TokenVerifier> = None;
    let mut endpoints = Vec::new();
    let mut identity = None;
    let mut mailboxes = None;
    let mut web_url = None;
    for (service, port, metrics_addr) in reserved {
        // A stop asked for while starting: the services started so far stop with the
        // process, the rest are not started only to be stopped again.
        if shutdown.is_cancelled() {
            tracing::info!(
                service = service.name(),
                "shutting down while starting: the remaining services are not started"
            );
            break;
        }
        let grpc_addr = port.addr();
        let listen = move || {
            port.listen()
                .with_context(|| format!("{} listener", service.name()))
        };
        // Starts a service with its configuration section.
        macro_rules! start {
            ($service:ident, $name:literal) => {
                $service::start(
                    platform,
                    config::section(figment, $name).with_context(|| {
                        format!(
                            "{}'s configuration (the MAILROOM_{}__* settings)",
                            $name,
                            $name.to_uppercase()
                        )
                    })?,
                )
                .await
                .context(concat!($name, " did not start"))?
            };
        }
        // Listens on the reserved port and runs a started service until shutdown, verifying tokens
        // with the co-hosted identity's verifier when there is one, else its own.
        macro_rules! host {
            ($started:expr, $name:literal) => {{
                let started = $started;
                let listener = listen()?;
                let verifier = shared_verifier
                    .clone()
                    .unwrap_or_else(|| started.verifier.clone());
                let platform = platform.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    started
                        .run(listener, verifier, &platform, shutdown)
                        .await
                        .context(concat!($name, " gRPC server"))
                });
            }};
        }
        match service {
            Service::Identity => {
                let started = start!(mailroom_identity, "identity");
                identity = Some(started.service.clone());
                shared_verifier = Some(started.verifier.clone());
                host!(started, "identity");
            }
            Service::Access => host!(start!(mailroom_access, "access"), "access"),
            Service::Mailboxes => {
                let started = start!(mailroom_mailboxes, "mailboxes");
                mailboxes = Some(started.service.clone());
                host!(started, "mailboxes");
            }
            Service::Sync => {
                let config: mailroom_sync::SyncConfig = config::section(figment, "sync")
                    .context("sync's configuration (the MAILROOM_SYNC__* settings)")?;
                let role = config.role;
                let started = mailroom_sync::start(platform, config)
                    .await
                    .context("sync did not start")?;
                tracing::info!(?role, "sync role");
                host!(started, "sync");
            }
            Service::Invitations => {
                host!(start!(mailroom_invitations, "invitations"), "invitations")
            }
            Service::Web => {
                let config: mailroom_web::WebConfig = config::section(figment, "web")
                    .context("web's configuration (the MAILROOM_WEB__* settings)")?;
                let started = mailroom_web::start_on_port(platform, config, grpc_addr.port())
                    .await
                    .context("web did not start")?;
                let listener = listen()?;
                let url = console_url(platform, grpc_addr);
                tracing::info!(%url, "web console");
                web_url = Some(url);
                let platform = platform.clone();
                let shutdown = shutdown.clone();
                // `/readyz` on its metrics port follows the console's own readiness: not
                // ready once it drains (as its `/healthz`).
                let readiness = mailroom_platform::readiness::register("web");
                tasks.spawn(async move {
                    let draining = async {
                        shutdown.cancelled().await;
                        readiness.block(
                            mailroom_platform::readiness::Condition::Draining,
                            "draining: shutting down",
                        );
                        std::future::pending::<std::convert::Infallible>().await
                    };
                    tokio::select! {
                        served = started.run(listener, &platform, shutdown.clone()) => {
                            served.context("web HTTP server")
                        }
                        never = draining => match never {},
                    }
                });
            }
        }
        tracing::info!(service = service.name(), %grpc_addr, %metrics_addr, "serving");
        endpoints.push((service, grpc_addr, metrics_addr));
    }
    Ok(Hosted {
        endpoints,
        identity,
        mailboxes,
        web_url,
    })
}

/// Where people open the console: the public URL when set, else the address it listens on
/// (the loopback one when it listens on every address).
fn console_url(platform: &PlatformConfig, addr: SocketAddr) -> String {
    if let Some(base) = platform.public_base() {
        return format!("{base}/");
    }
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}/")
}

/// `mailroom migrate [SERVICES] [--check]`: applies each service's migrations (the chart's
/// migrate Job), or with `check` applies none and says whether each schema is one this version
/// can run on, failing if one is not.
pub async fn migrate(list: &str, check: bool) -> anyhow::Result<()> {
    let services = parse_services(list)?;
    let figment = config::sources();
    let platform = PlatformConfig::load(&figment)?;
    let mut incompatible = Vec::new();
    for service in services {
        let Some((schema, migrations)) = service.schema() else {
            continue;
        };
        let pool = mailroom_platform::db::connect_with_tls(
            &platform.database_url,
            &platform.database_tls,
            schema,
            2,
        )
        .await?;
        if check {
            use mailroom_platform::schema::Compatibility;
            match mailroom_platform::schema::check(&pool, schema, migrations).await {
                Ok(Compatibility::Compatible { newer }) if newer.is_empty() => {
                    println!("{}: compatible", service.name())
                }
                Ok(Compatibility::Compatible { newer }) => println!(
                    "{}: compatible (newer expand migrations this version does not know: {newer:?})",
                    service.name()
                ),
                Ok(Compatibility::Missing { missing, failed }) => {
                    println!(
                        "{}: {}",
                        service.name(),
                        mailroom_platform::schema::waiting_reason(schema, &missing, &failed)
                    );
                    incompatible.push(service.name());
                }
                Err(err) => {
                    println!("{}: {err}", service.name());
                    incompatible.push(service.name());
                }
            }
            continue;
        }
        mailroom_platform::db::migrate(&pool, schema, migrations).await?;
        println!("migrated {}", service.name());
    }
    if !incompatible.is_empty() {
        bail!(
            "this version cannot run on the schema of: {}",
            incompatible.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_parse_and_unknown_ones_are_refused_by_name() {
        assert_eq!(
            parse_services("all").unwrap(),
            vec![
                Service::Identity,
                Service::Access,
                Service::Mailboxes,
                Service::Sync,
                Service::Invitations,
                Service::Web
            ]
        );
        assert_eq!(parse_services("web").unwrap(), vec![Service::Web]);
        assert_eq!(
            parse_services("web,identity").unwrap(),
            vec![Service::Identity, Service::Web],
            "the console is hosted after its peers"
        );
        assert!(Service::Web.schema().is_none(), "migrate skips the console");
        assert_eq!(
            Service::Web.default_ports(),
            (
                mailroom_web::DEFAULT_PORT,
                mailroom_web::DEFAULT_METRICS_PORT
            )
        );
        assert_eq!(
            parse_services("identity, identity, invitations").unwrap(),
            vec![Service::Identity, Service::Invitations]
        );
        let err = parse_services("identity,invites").unwrap_err().to_string();
        assert!(err.contains("unknown service `invites`"), "{err}");
        assert!(err.contains("web"), "{err}");
        assert!(parse_services("mail").is_err());
        assert!(parse_services("").is_err());
    }
}
