//! Whether the services hosted in this process are ready to take calls, and why not.
//!
//! Each hosted service holds a [`ServiceReadiness`] ([`register`]): a set of [`Condition`]s
//! that hold it back, each with a one-line reason — still starting, waiting for its schema's
//! migrations ([`crate::schema`]), the token revocations topic not read to its end yet, its
//! database not answered yet since start ([`watch_dependencies`]), draining on shutdown. The
//! service's gRPC health (`""` and its service names, [`crate::grpc`]) follows it, and so does
//! `GET /readyz` on every metrics port of the process ([`crate::metrics`]), which answers for
//! all the services the process hosts ([`process`]). Liveness never depends on any of this.
//! A reason names the condition only (`PostgreSQL unreachable`): what the driver said (which
//! may name users and hosts) is in the logs, not on an unauthenticated port.
//!
//! Dependencies are checked every `MAILROOM_READINESS_INTERVAL_MS` (5 s): PostgreSQL with a
//! `SELECT 1` (2 s at most), the broker with a metadata request (5 s at most). Each check's
//! outcome is the gauge `mailroom_dependency_up{dependency}` (the `MailroomDependencyDown`
//! alert). Readiness does not follow them, so that a blip of a dependency every pod shares
//! does not take every pod out of its Service at once (leaving callers nothing, not even the
//! calls that need no database): the database holds a service back only until its first
//! successful check after start; later failures set the gauge and are logged (after
//! [`FAILURES_BEFORE_LOGGED`] in a row) but leave the service ready. The broker never holds
//! it back (a producer buffers and the outbox waits; the relay and consumers say what they
//! cannot do in their own metrics).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::kafka::{KafkaSettings, Topic};

/// 1 when the last check of a dependency (`postgres`, `kafka`) succeeded, else 0.
pub const DEPENDENCY_UP: &str = "mailroom_dependency_up";

/// Consecutive failed checks of a dependency before the failure is logged (once).
pub const FAILURES_BEFORE_LOGGED: u32 = 2;

/// How long the database check may take.
pub const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the broker check may take.
pub const BROKER_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What may hold a service back from being ready; the first that holds (in this order) is the
/// reason shown, for a service and for the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    /// Shutting down: answering calls for the drain while callers move to other pods.
    Draining,
    /// The schema lacks migrations this version needs (the migrate Job has not run yet).
    Schema,
    /// The token revocations topic is not read to its end yet.
    Revocations,
    /// PostgreSQL has not answered a check since start.
    Database,
    /// Not serving yet (the service, or the process's other services, still starting): last,
    /// so that what a start waits for (its schema, say) is the reason shown.
    Starting,
}

struct Component {
    service: String,
    blocked: Mutex<BTreeMap<Condition, String>>,
    changed: watch::Sender<u64>,
}

/// The readiness of one hosted service, registered with the process while any clone of it
/// lives.
#[derive(Clone)]
pub struct ServiceReadiness(Arc<Component>);

static REGISTRY: Mutex<Vec<Weak<Component>>> = Mutex::new(Vec::new());

/// Registers the readiness of `service` with the process (for `/readyz`): ready until a
/// condition is [`ServiceReadiness::block`]ed; gone from the process's answer once every clone
/// is dropped.
pub fn register(service: impl Into<String>) -> ServiceReadiness {
    let component = Arc::new(Component {
        service: service.into(),
        blocked: Mutex::new(BTreeMap::new()),
        changed: watch::channel(0).0,
    });
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    registry.retain(|c| c.strong_count() > 0);
    registry.push(Arc::downgrade(&component));
    ServiceReadiness(component)
}

/// Whether every service hosted in this process is ready; if not, a one-line reason naming the
/// first that is not. A process hosting no service (yet, or any more) is not ready.
pub fn process() -> Result<(), String> {
    let components: Vec<Arc<Component>> = {
        let registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        registry.iter().filter_map(Weak::upgrade).collect()
    };
    if components.is_empty() {
        return Err("no service is hosted in this process (yet)".into());
    }
    // The most telling reason of all: by condition, then in the order services registered.
    let first = components
        .into_iter()
        .filter_map(|component| {
            let blocked = ServiceReadiness(component.clone());
            let blocked = blocked.blocked();
            let (condition, reason) = blocked.iter().next()?;
            Some((*condition, format!("{}: {reason}", component.service)))
        })
        .min_by_key(|(condition, _)| *condition);
    match first {
        Some((_, reason)) => Err(reason),
        None => Ok(()),
    }
}

impl ServiceReadiness {
    /// The service this is the readiness of.
    pub fn service(&self) -> &str {
        &self.0.service
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, BTreeMap<Condition, String>> {
        self.0.blocked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds the service back for `condition`, with a one-line `reason` (replacing an earlier
    /// one). Returns whether the condition is new.
    pub fn block(&self, condition: Condition, reason: impl Into<String>) -> bool {
        let new = self.blocked().insert(condition, reason.into()).is_none();
        if new {
            self.0.changed.send_modify(|n| *n += 1);
        }
        new
    }

    /// Lifts `condition`. Returns whether it held.
    pub fn clear(&self, condition: Condition) -> bool {
        let held = self.blocked().remove(&condition).is_some();
        if held {
            self.0.changed.send_modify(|n| *n += 1);
        }
        held
    }

    /// Whether nothing holds the service back.
    pub fn is_ready(&self) -> bool {
        self.blocked().is_empty()
    }

    /// Why the service is not ready (the first condition that holds), if it is not.
    pub fn reason(&self) -> Option<String> {
        self.blocked().values().next().cloned()
    }

    /// Changes whenever a condition is blocked or lifted.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.0.changed.subscribe()
    }
}

/// Consecutive failures of one dependency, for its logs.
#[derive(Debug, Default)]
struct Streak {
    failures: u32,
}

/// What one check's outcome is worth logging.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    Unchanged,
    /// The [`FAILURES_BEFORE_LOGGED`]th failure in a row.
    Down,
    /// The first success after it.
    UpAgain,
}

impl Streak {
    fn record(&mut self, ok: bool) -> Turn {
        if ok {
            let was_down = self.failures >= FAILURES_BEFORE_LOGGED;
            self.failures = 0;
            return if was_down {
                Turn::UpAgain
            } else {
                Turn::Unchanged
            };
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures == FAILURES_BEFORE_LOGGED {
            Turn::Down
        } else {
            Turn::Unchanged
        }
    }
}

/// Whether the database still holds a service back: until its first successful check after
/// start, never again after.
#[derive(Debug, PartialEq, Eq)]
enum StartupGate {
    /// No check has succeeded yet.
    Waiting,
    Passed,
}

impl StartupGate {
    /// Counts one database check; `Some(ready)` when readiness must change (blocked at the
    /// first failure, lifted at the first success).
    fn record(&mut self, ok: bool, blocked: bool) -> Option<bool> {
        match (&self, ok) {
            (Self::Passed, _) => None,
            (Self::Waiting, true) => {
                *self = Self::Passed;
                Some(true)
            }
            (Self::Waiting, false) => (!blocked).then_some(false),
        }
    }
}

/// The reason `/readyz` and gRPC health give while the database has not answered since start:
/// the condition only (the driver's error, naming users and hosts, is logged).
pub const DATABASE_NOT_ANSWERED: &str = "PostgreSQL unreachable";

/// Checks the service's database (`pool`) and the broker every `interval` until `shutdown`,
/// holding `readiness` back until the database first answers (see the module's header).
pub async fn watch_dependencies(
    readiness: ServiceReadiness,
    pool: PgPool,
    kafka: KafkaSettings,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let service = readiness.service().to_owned();
    let mut gate = StartupGate::Waiting;
    readiness.block(
        Condition::Database,
        "PostgreSQL not checked yet since start",
    );
    let mut blocked_for_failure = false;
    let mut database = Streak::default();
    let mut broker = Streak::default();
    let mut probe: Option<Arc<BrokerProbe>> = None;
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        // The database first, on its own: a service is held back until it answers, and that
        // answer (milliseconds) must not wait for the broker's metadata (seconds at worst).
        let db = check_database(&pool).await;
        match gate.record(db.is_ok(), blocked_for_failure) {
            Some(true) => {
                if blocked_for_failure {
                    tracing::info!(service = %service, "PostgreSQL answered its first check; ready as far as the database goes");
                }
                readiness.clear(Condition::Database);
            }
            Some(false) => {
                blocked_for_failure = true;
                if let Err(err) = &db {
                    tracing::warn!(
                        service = %service,
                        dependency = "postgres",
                        %err,
                        "not ready: PostgreSQL has not answered since start; check DATABASE_URL (and MAILROOM_DATABASE_TLS__*) and the database server"
                    );
                }
                readiness.block(Condition::Database, DATABASE_NOT_ANSWERED);
            }
            None => {}
        }
        let kafka_checked = async {
            if probe.is_none() {
                probe = BrokerProbe::shared(&kafka)
                    .map_err(|err| {
                        tracing::debug!(%err, "the broker check's client could not be made");
                        err
                    })
                    .ok();
            }
            match &probe {
                Some(probe) => probe.clone().check().await,
                None => Err("the broker check's client could not be made".into()),
            }
        }
        .await;
        for (dependency, streak, outcome) in [
            ("postgres", &mut database, db),
            ("kafka", &mut broker, kafka_checked),
        ] {
            let up = outcome.is_ok();
            metrics::gauge!(DEPENDENCY_UP, "dependency" => dependency).set(if up {
                1.0
            } else {
                0.0
            });
            match (streak.record(up), outcome) {
                (Turn::Down, Err(err)) => {
                    let check = match dependency {
                        "postgres" => "check DATABASE_URL and the database server",
                        _ => "check KAFKA_BROKERS, MAILROOM_KAFKA_PROPERTY_* and the brokers",
                    };
                    tracing::warn!(
                        service = %service,
                        dependency,
                        failures = FAILURES_BEFORE_LOGGED,
                        %err,
                        "a dependency failed its checks; {check} (readiness and liveness are unaffected: mailroom_dependency_up is 0)"
                    );
                }
                (Turn::UpAgain, _) => {
                    tracing::info!(service = %service, dependency, "dependency reachable again");
                }
                _ => {}
            }
        }
    }
}

async fn check_database(pool: &PgPool) -> Result<(), String> {
    match tokio::time::timeout(
        DATABASE_CHECK_TIMEOUT,
        sqlx::query("SELECT 1").execute(pool),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "no answer to SELECT 1 within {} s",
            DATABASE_CHECK_TIMEOUT.as_secs()
        )),
    }
}

/// A client kept for the broker check: asking for the revocations topic's metadata (a topic
/// every service reads) needs a broker that answers.
struct BrokerProbe {
    client: rdkafka::consumer::StreamConsumer<crate::kafka::ReaderContext>,
    topic: String,
}

impl BrokerProbe {
    fn new(kafka: &KafkaSettings) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(Self {
            client: kafka.reader()?,
            topic: kafka.topics.name(Topic::Revocations),
        })
    }

    /// The process's probe for `kafka`'s brokers, properties and topic, made on first use:
    /// the services one process hosts (`serve all`) share one librdkafka client rather than
    /// a client each, whose threads would each wake at rest. Gone with its last holder.
    fn shared(kafka: &KafkaSettings) -> Result<Arc<Self>, rdkafka::error::KafkaError> {
        type Key = (String, crate::kafka::KafkaProperties, String);
        static SHARED: Mutex<Vec<(Key, Weak<BrokerProbe>)>> = Mutex::new(Vec::new());
        let key: Key = (
            kafka.brokers.clone(),
            kafka.properties.clone(),
            kafka.topics.name(Topic::Revocations),
        );
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        shared.retain(|(_, probe)| probe.strong_count() > 0);
        if let Some(probe) = shared
            .iter()
            .filter(|(k, _)| *k == key)
            .find_map(|(_, probe)| probe.upgrade())
        {
            return Ok(probe);
        }
        let probe = Arc::new(Self::new(kafka)?);
        shared.push((key, Arc::downgrade(&probe)));
        Ok(probe)
    }

    async fn check(self: Arc<Self>) -> Result<(), String> {
        let asked = tokio::task::spawn_blocking(move || {
            self.client
                .fetch_metadata(Some(&self.topic), BROKER_CHECK_TIMEOUT)
                .map(|_| ())
                .map_err(|err| err.to_string())
        });
        match tokio::time::timeout(BROKER_CHECK_TIMEOUT + Duration::from_secs(1), asked).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => Err(format!("the broker check failed: {err}")),
            Err(_) => Err(format!(
                "no metadata answer within {} s",
                BROKER_CHECK_TIMEOUT.as_secs()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(brokers: &str) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.to_owned(),
            idempotence: true,
            transactions: false,
            partitions: 1,
            replication: 1,
            topics: crate::kafka::Topics::default(),
            properties: crate::kafka::KafkaProperties::default(),
        }
    }

    #[tokio::test]
    async fn the_services_of_one_process_share_one_broker_probe_per_cluster() {
        // Clients are made without connecting: no broker is needed (a stream consumer needs
        // a runtime only).
        let identity = BrokerProbe::shared(&kafka("probe-a.test:9092")).expect("a probe");
        let access = BrokerProbe::shared(&kafka("probe-a.test:9092")).expect("a probe");
        assert!(
            Arc::ptr_eq(&identity, &access),
            "two services of a process, one librdkafka client"
        );
        let other = BrokerProbe::shared(&kafka("probe-b.test:9092")).expect("a probe");
        assert!(
            !Arc::ptr_eq(&identity, &other),
            "another cluster has a client of its own"
        );
        drop((identity, access));
        let again = BrokerProbe::shared(&kafka("probe-a.test:9092")).expect("a probe");
        assert_eq!(
            Arc::strong_count(&again),
            1,
            "the process keeps no client alive itself: gone with its last holder, made again"
        );
    }

    #[test]
    fn two_failures_in_a_row_are_logged_once_and_one_success_after_them() {
        let mut streak = Streak::default();
        assert_eq!(
            streak.record(false),
            Turn::Unchanged,
            "one blip is not enough"
        );
        assert_eq!(streak.record(true), Turn::Unchanged);
        assert_eq!(streak.record(false), Turn::Unchanged);
        assert_eq!(streak.record(false), Turn::Down);
        assert_eq!(streak.record(false), Turn::Unchanged, "said once");
        assert_eq!(streak.record(true), Turn::UpAgain);
        assert_eq!(streak.record(true), Turn::Unchanged);
    }

    #[test]
    fn the_database_holds_a_service_back_only_until_its_first_answer() {
        let mut gate = StartupGate::Waiting;
        assert_eq!(gate.record(false, false), Some(false), "blocked at once");
        assert_eq!(gate.record(false, true), None, "blocked already");
        assert_eq!(
            gate.record(true, true),
            Some(true),
            "the first answer lifts it"
        );
        for ok in [false, false, false, true, false] {
            assert_eq!(
                gate.record(ok, false),
                None,
                "an outage later changes nothing"
            );
        }
        let mut gate = StartupGate::Waiting;
        assert_eq!(gate.record(true, false), Some(true));
        assert_eq!(gate, StartupGate::Passed);
    }

    #[test]
    fn the_first_condition_is_the_reason_and_the_process_answers_for_every_service() {
        let access = register("access-under-test");
        let identity = register("identity-under-test");
        assert!(access.is_ready());
        assert!(access.block(Condition::Database, "PostgreSQL not checked yet"));
        assert!(!access.block(Condition::Database, "PostgreSQL unreachable"));
        access.block(Condition::Draining, "draining");
        assert_eq!(access.reason().as_deref(), Some("draining"));
        let err = process().unwrap_err();
        assert_eq!(err, "access-under-test: draining");
        access.clear(Condition::Draining);
        assert_eq!(
            process().unwrap_err(),
            "access-under-test: PostgreSQL unreachable"
        );
        assert!(access.clear(Condition::Database));
        assert!(!access.clear(Condition::Database));
        assert!(process().is_ok());
        identity.block(Condition::Starting, "starting");
        access.block(Condition::Schema, "lacks migration 7");
        assert_eq!(
            process().unwrap_err(),
            "access-under-test: lacks migration 7",
            "what a start waits for is more telling than that it starts"
        );
        drop(access);
        assert_eq!(process().unwrap_err(), "identity-under-test: starting");
        let changes = identity.changes();
        identity.clear(Condition::Starting);
        assert!(changes.has_changed().unwrap_or(false));
        drop(identity);
        assert!(process().is_err(), "a process hosting nothing is not ready");
    }
}
