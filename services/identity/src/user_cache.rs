//! The read model behind GetUser: users this replica read lately, kept only while it is sure
//! to hear of every change to them.
//!
//! PostgreSQL tells every replica of each row written to `users` (the trigger `users_notify`
//! on channel `<schema>_users`, the user's id as payload), whoever wrote it: this replica,
//! another, a foreign-key action, an operator's SQL. A replica drops a user when told. While
//! its listener is not connected (a notification sent meanwhile is lost) it keeps nothing and
//! every read goes to the database; it starts empty each time it listens again.
//!
//! Two races are closed here:
//! - a read that began before a change and ends after the change's notification must not put
//!   the old row back: a read takes a [`Ticket`] before it asks the database, and its row is
//!   kept only if nothing was dropped since;
//! - a caller of this replica reads its own write even before the notification arrives: a
//!   call that may write users holds a [`Writing`] guard, at whose end (its transaction
//!   committed or rolled back) everything is dropped and no read begun before is kept.
//!
//! Across replicas GetUser is eventually consistent: another replica sees a write once the
//! notification reaches it, normally within a few milliseconds of the commit. Two bounds hold
//! even when notifications stop arriving unnoticed (a connection a firewall dropped without a
//! word, triggers disabled for a restore): the listener sends itself a heartbeat through the
//! service's pool every [`HEARTBEAT`] and starts again when one does not come back within
//! the next (the read model is used only once the first has come back: a pooler in
//! transaction mode accepts `LISTEN` and never delivers), and no row is answered longer than
//! [`KEPT_FOR`] after it was read.
//!
//! Metrics: [`READS`] (by where the answer came from), [`LISTENING`] and [`ROWS`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mailroom_platform::notify_listener::{Connect, NotifyListener, BACKOFF};
use mailroom_platform::types::{OrgId, UserId};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store::UserRow;

/// The longest a row is answered after it was read from the database.
pub const KEPT_FOR: Duration = Duration::from_secs(300);

/// How often the listener checks that notifications still reach it.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// GetUser's reads, by `from`: `memory` (answered from the read model) or `database`.
pub const READS: &str = "mailroom_identity_user_reads_total";
/// 1 from when the users listener's first heartbeat comes back until it is lost (a heartbeat
/// not back within [`HEARTBEAT`], the connection closed): the read model is in use; else 0
/// (every GetUser reads the database).
pub const LISTENING: &str = "mailroom_identity_user_model_listening";
/// Users the read model holds.
pub const ROWS: &str = "mailroom_identity_user_model_rows";

/// Gives the read model's series their first values, so dashboards and the alert on
/// [`LISTENING`] have series to read before the first GetUser.
pub fn announce_metrics() {
    for from in ["memory", "database"] {
        metrics::counter!(READS, "from" => from).increment(0);
    }
    metrics::gauge!(LISTENING).set(0.0);
    metrics::gauge!(ROWS).set(0.0);
}

/// How the payload of a listener's heartbeat begins (each replica's own follows); any other
/// payload that is not a user id drops every user.
const HEARTBEAT_PREFIX: &str = "heartbeat:";

/// Users read lately, by id ([`UserCache::get`]).
pub struct UserCache {
    state: Mutex<State>,
    /// The most rows kept; 0 keeps none.
    capacity: usize,
}

struct State {
    /// Each row with when it was read.
    rows: HashMap<UserId, (UserRow, Instant)>,
    /// Advanced by every drop: a ticket of an older generation keeps nothing.
    generation: u64,
    /// Whether the listener is connected (else nothing is kept or answered).
    listening: bool,
}

/// Taken before a read of the database; lets [`UserCache::keep`] keep what it found.
#[derive(Debug)]
pub struct Ticket(u64);

impl UserCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                rows: HashMap::new(),
                generation: 0,
                listening: false,
            }),
            capacity,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it: each change is a
        // few field writes.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// User `id` of organisation `org`, when kept.
    pub fn get(&self, org: OrgId, id: UserId) -> Option<UserRow> {
        let found = {
            let state = self.state();
            state
                .rows
                .get(&id)
                .filter(|(row, read)| {
                    state.listening && row.org_id == org && read.elapsed() < KEPT_FOR
                })
                .map(|(row, _)| row.clone())
        };
        let from = if found.is_some() {
            "memory"
        } else {
            "database"
        };
        metrics::counter!(READS, "from" => from).increment(1);
        found
    }

    /// A ticket for a read about to ask the database; `None` when what it finds may not be
    /// kept (not listening, or keeping nothing).
    pub fn ticket(&self) -> Option<Ticket> {
        let state = self.state();
        (self.capacity > 0 && state.listening).then_some(Ticket(state.generation))
    }

    /// Keeps `row`, read from the database with `ticket`, unless something was dropped since.
    pub fn keep(&self, ticket: Ticket, row: &UserRow) {
        let mut state = self.state();
        if ticket.0 != state.generation || !state.listening {
            return;
        }
        if state.rows.len() >= self.capacity && !state.rows.contains_key(&row.id) {
            // Full: start again rather than track ages; the users read since fill it again.
            state.rows.clear();
        }
        state.rows.insert(row.id, (row.clone(), Instant::now()));
        metrics::gauge!(ROWS).set(state.rows.len() as f64);
    }

    /// A change the database told of: user `id`, or (`None`) any user.
    pub fn changed(&self, id: Option<UserId>) {
        let mut state = self.state();
        state.generation += 1;
        match id {
            Some(id) => {
                state.rows.remove(&id);
            }
            None => state.rows.clear(),
        }
        metrics::gauge!(ROWS).set(state.rows.len() as f64);
    }

    /// The listener connected (`true`, after its LISTEN) or lost its connection: either way
    /// what is kept may have missed a notification, and is dropped.
    pub fn listening(&self, listening: bool) {
        let mut state = self.state();
        state.generation += 1;
        state.rows.clear();
        state.listening = listening;
        metrics::gauge!(ROWS).set(0.0);
        metrics::gauge!(LISTENING).set(if listening { 1.0 } else { 0.0 });
    }

    /// A call of this replica that may write users begins; see [`Writing`].
    pub fn writing(self: &Arc<Self>) -> Writing {
        Writing(self.clone())
    }

    /// How many rows are kept.
    pub fn len(&self) -> usize {
        self.state().rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Held by a call that may write users, for as long as it runs: when it ends everything is
/// dropped and no read begun before is kept, so the caller's next read sees its write.
pub struct Writing(Arc<UserCache>);

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.changed(None);
    }
}

/// Marks the cache not listening however the listener ends (a panic, an abort included).
struct NotListeningWhenDropped(Arc<UserCache>);

impl Drop for NotListeningWhenDropped {
    fn drop(&mut self) {
        self.0.listening(false);
    }
}

/// The channel the trigger `users_notify` of `schema` sends on.
pub fn channel(schema: &str) -> String {
    format!("{schema}_users")
}

/// Listens for changes to users on a connection of its own (apart from `pool`'s) until
/// `shutdown`, telling `cache`; connects again after a back-off ([`NotifyListener`]) when the
/// connection fails or a heartbeat sent through `pool` does not come back, keeping nothing
/// meanwhile.
pub async fn listen(
    pool: PgPool,
    schema: String,
    cache: Arc<UserCache>,
    shutdown: CancellationToken,
) {
    let _not_listening = NotListeningWhenDropped(cache.clone());
    let name = channel(&schema);
    let mut notifications = NotifyListener::new(
        &pool,
        name.clone(),
        "users listener",
        "GetUser reads the database until it listens again",
    );
    // This replica's own: another replica's heartbeat on the same channel proves nothing here.
    let own_heartbeat = format!("{HEARTBEAT_PREFIX}{}", uuid::Uuid::new_v4());
    while !shutdown.is_cancelled() {
        if notifications.connect().await != Connect::Began {
            // Backing off after a failure (logged).
            tokio::select! {
                _ = tokio::time::sleep_until(notifications.retry_at().max(Instant::now() + BACKOFF).into()) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        let lost = hear_changes(
            &mut notifications,
            &pool,
            &name,
            &own_heartbeat,
            &cache,
            &shutdown,
        )
        .await;
        cache.listening(false);
        match lost {
            Some(reason) => notifications.failed(&reason),
            None => break,
        }
    }
}

/// Tells `cache` of the changes `notifications` (just connected) hears until its connection
/// fails (why: `Some`) or `shutdown` (`None`). The cache is marked listening only once this
/// replica's own heartbeat, sent through `pool`, has come back: a `LISTEN` that succeeded
/// proves nothing (a pooler in transaction mode accepts it and never delivers).
async fn hear_changes(
    notifications: &mut NotifyListener,
    pool: &PgPool,
    channel: &str,
    own_heartbeat: &str,
    cache: &UserCache,
    shutdown: &CancellationToken,
) -> Option<String> {
    let mut confirmed = false;
    // The first tick is at once: a heartbeat is sent as soon as it listens.
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut awaited = false;
    loop {
        let Some(listener) = notifications.listener() else {
            return Some("the listener is gone".to_owned());
        };
        let received = tokio::select! {
            received = listener.try_recv() => received,
            _ = heartbeat.tick() => {
                if awaited {
                    return Some(format!(
                        "its heartbeat did not come back within {} s",
                        HEARTBEAT.as_secs()
                    ));
                }
                // Through the service's pool: notifications sent as its writes' are must reach
                // this listener. One that cannot be sent counts as one that did not come back:
                // the listener's state is unknown while the pool cannot send.
                let sent = tokio::time::timeout(
                    HEARTBEAT / 2,
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(channel)
                        .bind(own_heartbeat)
                        .execute(pool),
                )
                .await;
                match sent {
                    Ok(Ok(_)) => awaited = true,
                    Ok(Err(err)) => return Some(format!("its heartbeat could not be sent: {err}")),
                    Err(_) => {
                        return Some(format!(
                            "its heartbeat could not be sent within {} s",
                            (HEARTBEAT / 2).as_secs()
                        ))
                    }
                }
                continue;
            }
            _ = shutdown.cancelled() => return None,
        };
        match received {
            Ok(Some(notification)) if notification.payload().starts_with(HEARTBEAT_PREFIX) => {
                if notification.payload() == own_heartbeat {
                    awaited = false;
                    if !confirmed {
                        confirmed = true;
                        notifications.working();
                        cache.listening(true);
                    }
                }
            }
            Ok(Some(notification)) => cache.changed(notification.payload().parse().ok()),
            // The connection closed: what was sent meanwhile is lost.
            Ok(None) => return Some("the connection closed".to_owned()),
            Err(err) => return Some(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(org: OrgId, id: UserId, name: &str) -> UserRow {
        UserRow {
            id,
            org_id: org,
            state: "active".into(),
            login_email: format!("{name}@example.test"),
            contact_email: format!("{name}@example.test"),
            first_name: name.into(),
            last_name: String::new(),
            position: String::new(),
            department_id: None,
            is_admin: false,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            dismissed_at: None,
        }
    }

    fn listening(capacity: usize) -> Arc<UserCache> {
        let cache = Arc::new(UserCache::new(capacity));
        cache.listening(true);
        cache
    }

    #[test]
    fn a_kept_user_is_answered_to_its_own_organisation_only() {
        let (org, other, id) = (OrgId::new(), OrgId::new(), UserId::new());
        let cache = listening(10);
        let ticket = cache.ticket().expect("ticket");
        cache.keep(ticket, &row(org, id, "ann"));
        assert_eq!(cache.get(org, id).map(|r| r.first_name), Some("ann".into()));
        assert!(cache.get(other, id).is_none());
    }

    #[test]
    fn a_read_that_began_before_a_change_keeps_nothing() {
        let (org, id) = (OrgId::new(), UserId::new());
        let cache = listening(10);
        let ticket = cache.ticket().expect("ticket");
        // The change's notification arrives while the read is still out.
        cache.changed(Some(UserId::new()));
        cache.keep(ticket, &row(org, id, "old"));
        assert!(cache.get(org, id).is_none());
    }

    #[test]
    fn a_notification_drops_its_user() {
        let (org, id) = (OrgId::new(), UserId::new());
        let cache = listening(10);
        cache.keep(cache.ticket().expect("ticket"), &row(org, id, "ann"));
        cache.changed(Some(id));
        assert!(cache.get(org, id).is_none());
    }

    #[test]
    fn what_was_kept_before_or_during_a_local_write_is_dropped_when_it_ends() {
        let (org, id, other) = (OrgId::new(), UserId::new(), UserId::new());
        let cache = listening(10);
        cache.keep(cache.ticket().expect("ticket"), &row(org, id, "before"));
        let writing = cache.writing();
        // Read while the write is under way, maybe before its commit.
        cache.keep(cache.ticket().expect("ticket"), &row(org, other, "during"));
        drop(writing);
        assert!(cache.get(org, id).is_none(), "kept past a local write");
        assert!(cache.get(org, other).is_none(), "kept past a local write");
        assert!(cache.ticket().is_some());
    }

    #[test]
    fn a_read_that_began_before_a_local_write_keeps_nothing() {
        let (org, id) = (OrgId::new(), UserId::new());
        let cache = listening(10);
        let ticket = cache.ticket().expect("ticket");
        drop(cache.writing());
        cache.keep(ticket, &row(org, id, "old"));
        assert!(cache.get(org, id).is_none());
    }

    #[test]
    fn without_its_listener_it_keeps_and_answers_nothing() {
        let (org, id) = (OrgId::new(), UserId::new());
        let cache = listening(10);
        cache.keep(cache.ticket().expect("ticket"), &row(org, id, "ann"));
        cache.listening(false);
        assert!(cache.get(org, id).is_none());
        assert!(cache.ticket().is_none());
        cache.listening(true);
        assert!(cache.get(org, id).is_none(), "kept across a reconnect");
    }

    /// The value of the series `series` (name and labels as rendered) in `rendered`.
    fn value(rendered: &str, series: &str) -> Option<f64> {
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|n| n.trim().parse().ok())
    }

    #[test]
    fn its_metrics_tell_answers_from_memory_from_reads_of_the_database() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let (org, id) = (OrgId::new(), UserId::new());
        metrics::with_local_recorder(&recorder, || {
            announce_metrics();
            let cache = listening(10);
            assert!(cache.get(org, id).is_none());
            cache.keep(cache.ticket().expect("ticket"), &row(org, id, "ann"));
            assert!(cache.get(org, id).is_some());
            assert!(cache.get(org, id).is_some());
        });
        let rendered = handle.render();
        let reads = |from: &str| value(&rendered, &format!("{READS}{{from=\"{from}\"}}"));
        assert_eq!(reads("memory"), Some(2.0), "{rendered}");
        assert_eq!(reads("database"), Some(1.0), "{rendered}");
        assert_eq!(value(&rendered, LISTENING), Some(1.0), "{rendered}");
        assert_eq!(value(&rendered, ROWS), Some(1.0), "{rendered}");

        metrics::with_local_recorder(&recorder, || listening(10).listening(false));
        let rendered = handle.render();
        assert_eq!(value(&rendered, LISTENING), Some(0.0), "{rendered}");
        assert_eq!(value(&rendered, ROWS), Some(0.0), "{rendered}");
    }

    #[test]
    fn it_holds_at_most_its_capacity() {
        let org = OrgId::new();
        let cache = listening(3);
        for i in 0..10 {
            cache.keep(
                cache.ticket().expect("ticket"),
                &row(org, UserId::new(), &i.to_string()),
            );
            assert!(cache.len() <= 3);
        }
        let none = listening(0);
        assert!(none.ticket().is_none());
    }
}
