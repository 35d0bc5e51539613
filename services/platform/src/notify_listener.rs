//! A PostgreSQL `LISTEN` on one channel, on a connection of its own (apart from the service's
//! pool, so a busy pool never starves it and it never holds one of the pool's connections),
//! connected again after a back-off when it fails: what the outbox relay's wake-ups and
//! identity's read model listen with.
//!
//! A notification sent while no listener is connected is lost; each user of a
//! [`NotifyListener`] says what it does about that (the relay looks for rows once it listens
//! again, the read model starts empty).

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;

/// The first wait before connecting again; it doubles after each failure in a row.
pub const BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait before connecting again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What [`NotifyListener::connect`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// It was listening already.
    Listening,
    /// It has just begun listening: whatever was sent before is unknown to its user.
    Began,
    /// It is not listening: its back-off is not over, or connecting failed (logged).
    NotNow,
}

/// A `LISTEN` on `channel` that connects again after a back-off ([`NotifyListener::connect`]).
pub struct NotifyListener {
    /// How the service's pool connects; each attempt opens a pool of one connection of its own.
    options: PgConnectOptions,
    channel: String,
    /// Who listens, for the log: "outbox listener", "users listener".
    who: &'static str,
    /// What its users do while it is not connected, for the log.
    meanwhile: &'static str,
    listener: Option<PgListener>,
    retry_at: Instant,
    backoff: Duration,
}

impl NotifyListener {
    /// A listener on `channel`, not connected yet, connecting with `pool`'s options (not
    /// through it). `who` names it in the log and `meanwhile` says what happens while it is not
    /// connected ("polling until it is connected again").
    pub fn new(pool: &PgPool, channel: String, who: &'static str, meanwhile: &'static str) -> Self {
        Self {
            options: (*pool.connect_options()).clone(),
            channel,
            who,
            meanwhile,
            listener: None,
            retry_at: Instant::now(),
            backoff: BACKOFF,
        }
    }

    /// The channel listened on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Connects and listens if it is not connected and its back-off is over. A failure is
    /// logged and starts the back-off. The back-off is reset only by [`NotifyListener::working`]:
    /// a `LISTEN` that succeeds proves nothing about notifications arriving (a pooler in
    /// transaction mode accepts it and never delivers), so a listener that connects and fails
    /// over and over waits longer each time.
    pub async fn connect(&mut self) -> Connect {
        if self.listener.is_some() {
            return Connect::Listening;
        }
        if Instant::now() < self.retry_at {
            return Connect::NotNow;
        }
        // A pool of its own for each attempt: a dropped listener returns its connection to its
        // pool only after an `UNLISTEN *` on it, which on a connection a firewall dropped
        // silently waits for TCP to give up (minutes); a shared pool of one would make every
        // later attempt wait for that connection.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(self.options.clone());
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            // A lost connection is told (`Ok(None)`) and left to this type to connect again
            // after its back-off, not connected again inside `try_recv`.
            listener.eager_reconnect(false);
            listener.listen(&self.channel).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match listening {
            Ok(listener) => {
                self.listener = Some(listener);
                Connect::Began
            }
            Err(err) => {
                self.failed(&err);
                Connect::NotNow
            }
        }
    }

    /// Its user saw notifications arrive (the outbox: the `LISTEN` succeeded; the read model:
    /// its own heartbeat came back): the back-off starts again from [`BACKOFF`].
    pub fn working(&mut self) {
        if self.backoff > BACKOFF {
            tracing::info!(channel = %self.channel, "{} connected again", self.who);
        }
        self.backoff = BACKOFF;
    }

    /// The connected listener, if any.
    pub fn listener(&mut self) -> Option<&mut PgListener> {
        self.listener.as_mut()
    }

    /// The listener failed (`reason`): it is dropped, the failure logged, and the next
    /// [`NotifyListener::connect`] waits out a back-off that doubles with each failure in a
    /// row (at most [`MAX_BACKOFF`]).
    pub fn failed(&mut self, reason: &dyn std::fmt::Display) {
        tracing::warn!(
            %reason,
            channel = %self.channel,
            retry_in_ms = self.backoff.as_millis() as u64,
            "{} failed; {}", self.who, self.meanwhile
        );
        self.listener = None;
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// The connection closed (a server restart, an idle timeout): dropped without a warning,
    /// and connected again after the first back-off.
    pub fn closed(&mut self) {
        tracing::debug!(channel = %self.channel, "{}'s connection closed; listening again", self.who);
        self.listener = None;
        self.retry_at = Instant::now() + BACKOFF;
    }

    /// When [`NotifyListener::connect`] may next try (now, when it is not backing off).
    pub fn retry_at(&self) -> Instant {
        self.retry_at
    }
}
