//! Turns SIGTERM and SIGINT into a [`CancellationToken`] every task of the process watches, so
//! that servers drain in-flight calls and relays finish their batch before the process exits,
//! and bounds how long that may take.
//!
//! - The first SIGTERM or SIGINT cancels the token ([`on_signal`]).
//! - A second one exits at once (status 128 + the signal's number), naming what still runs.
//! - Once the token is cancelled, for whatever reason, the process has [`limit`] to exit: the
//!   drain, the request timeout for the calls in flight, then [`BACKGROUND_GRACE`] for the
//!   background work and [`EXIT_MARGIN`] for the exit itself. Past it, a watchdog (a thread of
//!   its own, so a wedged runtime cannot hold it up) logs what is still running and exits
//!   with status 1. A pod's termination grace is at least that long (the chart allows the drain,
//!   the request timeout and 5 s), so the process ends on its own, never by SIGKILL mid-work.
//!
//! Long-running parts of the process register themselves with [`track`] while they run, so
//! that whatever gives up on them can say which they are ([`still_running`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::PlatformConfig;

/// After serving has stopped, how long a service's background work (consumers, relays,
/// tailers, schedulers) has to stop before it is abandoned ([`crate::hosting`]).
pub const BACKGROUND_GRACE: Duration = Duration::from_secs(2);

/// Beyond everything else, the time the process has to exit (the runtime shutting down).
pub const EXIT_MARGIN: Duration = Duration::from_secs(1);

/// Set when the process stops because one of its services did not start ([`abandon_start`]).
static START_ABANDONED: AtomicBool = AtomicBool::new(false);

/// Says the process stops because one of its services did not start: it was never ready, so
/// no caller was sent to it, and its servers stop without the drain ([`drain`]).
pub fn abandon_start() {
    START_ABANDONED.store(true, Ordering::SeqCst);
}

/// How long a server answers calls after its stop began: `configured`, or nothing when the
/// process never started ([`abandon_start`]).
pub fn drain(configured: Duration) -> Duration {
    if START_ABANDONED.load(Ordering::SeqCst) {
        Duration::ZERO
    } else {
        configured
    }
}

/// The longest a process takes to exit once its shutdown has begun: the drain, the request
/// timeout and the margin for the calls in flight ([`crate::grpc::IN_FLIGHT_MARGIN`]),
/// [`BACKGROUND_GRACE`] and [`EXIT_MARGIN`] (drain + request timeout + 4 s).
pub fn limit(config: &PlatformConfig) -> Duration {
    config.shutdown_drain()
        + config.request_timeout()
        + crate::grpc::IN_FLIGHT_MARGIN
        + BACKGROUND_GRACE
        + EXIT_MARGIN
}

/// A token cancelled on the first SIGTERM or SIGINT. A second signal exits the process at
/// once; and once the token is cancelled (by a signal or by the process itself), the process
/// exits within [`limit`] of `config`, abandoning whatever still runs then.
pub fn on_signal(config: &PlatformConfig) -> CancellationToken {
    let token = CancellationToken::new();
    let limit = limit(config);
    let trigger = token.clone();
    tokio::spawn(async move {
        let mut signals = Signals::new();
        let first = signals.next().await;
        tracing::info!(
            signal = first,
            limit_ms = limit.as_millis() as u64,
            "shutdown signal received; draining (a second signal exits at once)"
        );
        trigger.cancel();
        let second = signals.next().await;
        tracing::warn!(
            signal = second,
            still_running = ?still_running(),
            "second shutdown signal: exiting at once"
        );
        std::process::exit(128 + second);
    });
    let stopping = token.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        watchdog(limit);
    });
    token
}

/// Exits the process `limit` from now unless it has exited by then.
fn watchdog(limit: Duration) {
    let started = std::thread::Builder::new()
        .name("shutdown-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            tracing::error!(
                limit_ms = limit.as_millis() as u64,
                still_running = ?still_running(),
                "the process did not stop within its shutdown limit; exiting, abandoning what still runs"
            );
            std::process::exit(1);
        });
    if let Err(err) = started {
        tracing::warn!(%err, "no shutdown watchdog (cannot start a thread); the exit is not bounded");
    }
}

/// The process's termination signals, as a stream of signal numbers.
struct Signals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Self {
                    unix: Some((term, int)),
                },
                (Err(err), _) | (_, Err(err)) => {
                    tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                    Self { unix: None }
                }
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The number of the next signal received.
    async fn next(&mut self) -> i32 {
        /// SIGINT's number, what Ctrl-C sends.
        const SIGINT: i32 = 2;
        /// SIGTERM's number.
        #[cfg(unix)]
        const SIGTERM: i32 = 15;
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.unix {
            return tokio::select! {
                _ = term.recv() => SIGTERM,
                _ = int.recv() => SIGINT,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        SIGINT
    }
}

/// Parts of the process running now, by name, with how many of each.
static RUNNING: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn running() -> std::sync::MutexGuard<'static, BTreeMap<String, usize>> {
    RUNNING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A part of the process registered as running until this is dropped ([`track`]).
#[must_use = "the part counts as running only while this is kept"]
pub struct Tracked {
    name: String,
}

/// Registers `name` as running until the returned guard is dropped.
pub fn track(name: impl Into<String>) -> Tracked {
    let name = name.into();
    *running().entry(name.clone()).or_insert(0) += 1;
    Tracked { name }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut running = running();
        if let Some(count) = running.get_mut(&self.name) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.name);
            }
        }
    }
}

/// What is registered as running now ([`track`]), by name (`name ×n` for several).
pub fn still_running() -> Vec<String> {
    running()
        .iter()
        .map(|(name, count)| match count {
            1 => name.clone(),
            n => format!("{name} ×{n}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_counts_as_running_while_its_guard_is_kept() {
        let name = format!("part {}", uuid::Uuid::new_v4());
        let shown = |list: Vec<String>| list.into_iter().find(|n| n.starts_with(&name));
        let first = track(name.clone());
        let second = track(name.clone());
        assert_eq!(shown(still_running()), Some(format!("{name} ×2")));
        drop(first);
        assert_eq!(shown(still_running()), Some(name.clone()));
        drop(second);
        assert_eq!(shown(still_running()), None);
    }

    #[test]
    fn the_limit_is_the_drain_and_the_request_timeout_and_four_seconds() {
        let figment = figment::Figment::new()
            .merge(("database_url", "postgres://x@127.0.0.1/x"))
            .merge(("redis_url", "redis://127.0.0.1"))
            .merge(("kafka_brokers", "127.0.0.1:9092"))
            .merge(("shutdown_drain_ms", 15_000))
            .merge(("request_timeout_ms", 30_000));
        let config = PlatformConfig::load(&figment).expect("config");
        assert_eq!(limit(&config), Duration::from_secs(49));
    }
}
