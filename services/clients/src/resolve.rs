//! Balancing across a peer's pods: a peer named by DNS is every address its name resolves to.
//!
//! One task per such peer resolves the name now and then again every `resolve_every`, and
//! tells the channel's balancer (tonic's `Channel::balance_channel`) which addresses came and
//! which went. Each address is connected lazily and kept until the name stops resolving to it;
//! a call goes to the less loaded of two addresses picked at random.
//!
//! What a failed resolution does: nothing. The addresses last known are kept (a DNS hiccup is
//! likelier than a peer without pods), and a name that has never resolved is retried every
//! second until it does. Calls made before the first answer wait for it (within their
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
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tonic::transport::channel::Change;
use tonic::transport::Endpoint;

/// When a name that has never resolved is tried again.
const RETRY_UNRESOLVED: Duration = Duration::from_secs(1);

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
) -> watch::Receiver<Resolution>
where
    L: Fn() -> F + Send + 'static,
    F: Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static,
{
    let (state, resolution) = watch::channel(Resolution::default());
    tokio::spawn(follow(lookup, endpoint, changes, state, every));
    resolution
}

/// Resolves with `lookup` until the balancer is gone, sending it each change.
async fn follow<L, F>(
    lookup: L,
    endpoint: impl Fn(SocketAddr) -> Endpoint,
    changes: mpsc::Sender<Change<SocketAddr, Endpoint>>,
    state: watch::Sender<Resolution>,
    every: Duration,
) where
    L: Fn() -> F,
    F: Future<Output = io::Result<Vec<SocketAddr>>>,
{
    let mut set = AddressSet::default();
    loop {
        let error = match lookup().await {
            Ok(resolved) => {
                for change in set.update(resolved) {
                    tracing::debug!(?change, "peer address");
                    let change = match change {
                        AddressChange::Add(a) => Change::Insert(a, endpoint(a)),
                        AddressChange::Remove(a) => Change::Remove(a),
                    };
                    if changes.send(change).await.is_err() {
                        return;
                    }
                }
                None
            }
            Err(err) => {
                tracing::warn!(%err, known = set.len(), "a peer's name did not resolve; keeping the addresses known");
                Some(err.to_string())
            }
        };
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
}
