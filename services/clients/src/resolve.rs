//! Balancing across a peer's pods: a peer named by DNS is every address its name resolves to.
//!
//! One task per such peer resolves the name now and then again every `resolve_every`, and
//! tells the channel's balancer (tonic's `Channel::balance_channel`) which addresses came and
//! which went. Each address is connected lazily and kept until the name stops resolving to it;
//! a call goes to the less loaded of two addresses picked at random.
//!
//! A failed or empty resolution keeps the addresses last known (a DNS hiccup is likelier than
//! a peer without pods), but only for [`FORGET_AFTER`]: after that without a good answer they
//! are dropped, so a caller never keeps dialling pod addresses that Kubernetes may by then
//! have given to another pod. A name that has never resolved is retried every second until it
//! does. A call that could not reach its peer at the transport level (a pod gone without
//! draining) nudges the resolver to look again at once, at most once a second, instead of
//! waiting out `resolve_every`. Calls made before the first answer wait for it (within their
//! deadline); calls made while the name resolves to nothing fail at once as unavailable,
//! naming the name. The task ends when the channel is dropped.
//!
//! Behind a Kubernetes ClusterIP service a name resolves to one virtual address, and the
//! balancing is kube-proxy's per connection (that is, none for HTTP/2): name a headless
//! service to balance across pods.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, watch, Notify};
use tonic::transport::channel::Change;
use tonic::transport::Endpoint;

/// When a name that has never resolved is tried again, and the least time between two
/// lookups a failing call asks for.
const RETRY_UNRESOLVED: Duration = Duration::from_secs(1);
/// How long the addresses last known are kept while the name resolves to nothing or not at all.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// The addresses a peer's name resolved to last.
#[derive(Debug, Default)]
pub struct AddressSet {
    current: BTreeSet<SocketAddr>,
}

/// One change to the balancer's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressChange {
    Add(SocketAddr),
    Remove(SocketAddr),
}

impl AddressSet {
    /// The changes that make the set what the name resolved to. An empty answer changes
    /// nothing (see the module's header).
    pub fn update(&mut self, resolved: impl IntoIterator<Item = SocketAddr>) -> Vec<AddressChange> {
        let resolved: BTreeSet<SocketAddr> = resolved.into_iter().collect();
        if resolved.is_empty() {
            return Vec::new();
        }
        let mut changes: Vec<AddressChange> = self
            .current
            .difference(&resolved)
            .map(|a| AddressChange::Remove(*a))
            .collect();
        changes.extend(
            resolved
                .difference(&self.current)
                .map(|a| AddressChange::Add(*a)),
        );
        self.current = resolved;
        changes
    }

    /// The changes that empty the set.
    pub fn clear(&mut self) -> Vec<AddressChange> {
        std::mem::take(&mut self.current)
            .into_iter()
            .map(AddressChange::Remove)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}

/// What the resolver knows, for calls to wait on.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// Whether the name has been looked up at least once (successfully or not).
    pub settled: bool,
    /// How many addresses the balancer has.
    pub addresses: usize,
    /// Why the last lookup failed, if it did.
    pub error: Option<String>,
}

/// Looks `host` up in DNS (within `timeout`), with `port` on every address.
pub(crate) fn dns(
    host: String,
    port: u16,
    timeout: Duration,
) -> impl Fn() -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> + Send + 'static
{
    move || {
        let host = host.clone();
        Box::pin(async move {
            match tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
                .await
            {
                Ok(Ok(addresses)) => Ok(addresses.collect()),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer from DNS within {} s", timeout.as_secs()),
                )),
            }
        })
    }
}

/// Spawns the task that keeps `changes` (the balancer's endpoints) following what `lookup`
/// answers; `endpoint` makes the endpoint of one address.
pub(crate) fn spawn<L, F>(
    lookup: L,
    endpoint: impl Fn(SocketAddr) -> Endpoint + Send + 'static,
    changes: mpsc::Sender<Change<SocketAddr, Endpoint>>,
    every: Duration,
) -> (watch::Receiver<Resolution>, Arc<Notify>)
where
    L: Fn() -> F + Send + 'static,
    F: Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static,
{
    let (state, resolution) = watch::channel(Resolution::default());
    let nudge = Arc::new(Notify::new());
    tokio::spawn(follow(
        lookup,
        endpoint,
        changes,
        state,
        every,
        nudge.clone(),
    ));
    (resolution, nudge)
}

/// Resolves with `lookup` until the balancer is gone, sending it each change.
async fn follow<L, F>(
    lookup: L,
    endpoint: impl Fn(SocketAddr) -> Endpoint,
    changes: mpsc::Sender<Change<SocketAddr, Endpoint>>,
    state: watch::Sender<Resolution>,
    every: Duration,
    nudge: Arc<Notify>,
) where
    L: Fn() -> F,
    F: Future<Output = io::Result<Vec<SocketAddr>>>,
{
    let mut set = AddressSet::default();
    let mut last_good = Instant::now();
    loop {
        let looked_up = Instant::now();
        let (found, error) = match lookup().await {
            Ok(resolved) if !resolved.is_empty() => {
                last_good = Instant::now();
                (set.update(resolved), None)
            }
            answer => {
                let error = match answer {
                    Err(err) => err.to_string(),
                    Ok(_) => "no address in the answer".to_owned(),
                };
                if !set.is_empty() && last_good.elapsed() >= FORGET_AFTER {
                    tracing::warn!(%error, forgotten = set.len(), "a peer's name has not resolved for a minute; forgetting its addresses");
                    (set.clear(), Some(error))
                } else {
                    tracing::warn!(%error, known = set.len(), "a peer's name did not resolve; keeping the addresses known for now");
                    (Vec::new(), Some(error))
                }
            }
        };
        for change in found {
            tracing::debug!(?change, "peer address");
            let change = match change {
                AddressChange::Add(a) => Change::Insert(a, endpoint(a)),
                AddressChange::Remove(a) => Change::Remove(a),
            };
            if changes.send(change).await.is_err() {
                return;
            }
        }
        state.send_replace(Resolution {
            settled: true,
            addresses: set.len(),
            error,
        });
        let wait = if set.is_empty() {
            RETRY_UNRESOLVED.min(every)
        } else {
            every
        };
        tokio::select! {
            _ = changes.closed() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = nudge.notified() => {
                // A call failed to reach an address: look again, but not in a storm.
                tokio::time::sleep_until(looked_up + RETRY_UNRESOLVED).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 50051))
    }

    #[test]
    fn the_set_follows_the_answers_and_keeps_the_last_on_an_empty_one() {
        let mut set = AddressSet::default();
        assert_eq!(
            set.update([addr(1), addr(2), addr(2)]),
            vec![AddressChange::Add(addr(1)), AddressChange::Add(addr(2))]
        );
        assert_eq!(set.update([addr(2), addr(1)]), vec![]);
        assert_eq!(
            set.update([addr(2), addr(3)]),
            vec![AddressChange::Remove(addr(1)), AddressChange::Add(addr(3))]
        );
        assert_eq!(set.update([]), vec![], "an empty answer keeps the set");
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.update([addr(4)]),
            vec![
                AddressChange::Remove(addr(2)),
                AddressChange::Remove(addr(3)),
                AddressChange::Add(addr(4))
            ]
        );
    }

    /// The balancer is told of each address once, of each removal once, and nothing when a
    /// lookup fails; the resolution seen by calls follows.
    #[tokio::test]
    async fn the_balancer_hears_each_change_once() {
        let answers: Arc<Mutex<Vec<io::Result<Vec<SocketAddr>>>>> = Arc::new(Mutex::new(vec![
            Ok(vec![addr(1), addr(2)]),
            Ok(vec![addr(2), addr(1)]),
            Err(io::Error::other("SERVFAIL")),
            Ok(vec![addr(2), addr(3)]),
        ]));
        let lookup = {
            let answers = answers.clone();
            move || {
                let next = {
                    let mut answers = answers.lock().unwrap();
                    if answers.is_empty() {
                        Ok(vec![addr(2), addr(3)])
                    } else {
                        answers.remove(0)
                    }
                };
                async move { next }
            }
        };
        let (changes, mut heard) = mpsc::channel(16);
        let (state, mut resolution) = watch::channel(Resolution::default());
        let task = tokio::spawn(follow(
            lookup,
            |a| Endpoint::from_shared(format!("http://{a}")).unwrap(),
            changes,
            state,
            Duration::from_millis(5),
            Arc::new(Notify::new()),
        ));

        let mut seen = Vec::new();
        while seen.len() < 4 {
            match heard.recv().await.unwrap() {
                Change::Insert(a, _) => seen.push(AddressChange::Add(a)),
                Change::Remove(a) => seen.push(AddressChange::Remove(a)),
            }
        }
        assert_eq!(
            seen,
            vec![
                AddressChange::Add(addr(1)),
                AddressChange::Add(addr(2)),
                AddressChange::Remove(addr(1)),
                AddressChange::Add(addr(3)),
            ]
        );
        let now = resolution
            .wait_for(|r| r.settled && r.error.is_none() && answers.lock().unwrap().is_empty())
            .await
            .unwrap()
            .clone();
        assert_eq!(now.addresses, 2);
        // Nothing more while the answer stays the same; the task ends with the balancer.
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(heard.try_recv().is_err());
        drop(heard);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the resolver ends when the channel is gone")
            .unwrap();
    }

    /// A name that stops resolving keeps its addresses for a while (a DNS hiccup), then loses
    /// them (a pod's address may go to another pod); a nudge looks again well before
    /// `resolve_every`.
    #[tokio::test(start_paused = true)]
    async fn addresses_are_forgotten_after_a_minute_without_an_answer_and_a_nudge_looks_again() {
        let lookups = Arc::new(Mutex::new(0u32));
        let lookup = {
            let lookups = lookups.clone();
            move || {
                let n = {
                    let mut n = lookups.lock().unwrap();
                    *n += 1;
                    *n
                };
                async move {
                    if n == 1 {
                        Ok(vec![addr(1)])
                    } else {
                        Err(io::Error::other("NXDOMAIN"))
                    }
                }
            }
        };
        let (changes, mut heard) = mpsc::channel(16);
        let (state, _resolution) = watch::channel(Resolution::default());
        let nudge = Arc::new(Notify::new());
        let every = Duration::from_secs(30);
        tokio::spawn(follow(
            lookup,
            |a| Endpoint::from_shared(format!("http://{a}")).unwrap(),
            changes,
            state,
            every,
            nudge.clone(),
        ));
        assert!(matches!(heard.recv().await, Some(Change::Insert(a, _)) if a == addr(1)));

        // A failed call nudges: the second lookup comes after a second, not thirty.
        tokio::time::sleep(Duration::from_millis(10)).await;
        nudge.notify_one();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(*lookups.lock().unwrap(), 2, "a nudge looks again at once");
        assert!(
            heard.try_recv().is_err(),
            "a failed lookup keeps the address"
        );

        // A minute of failed lookups later, the address is gone.
        let removed = tokio::time::timeout(FORGET_AFTER + every * 2, heard.recv())
            .await
            .expect("the address is forgotten");
        assert!(matches!(removed, Some(Change::Remove(a)) if a == addr(1)));
    }
}
