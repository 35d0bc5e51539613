//! The pages of a lookup (LookupResources, LookupSubjects), cut from one sorted answer.
//!
//! A lookup's answer is a set computed from the replica's memory (a supervisor's ~22k
//! mailboxes, everyone holding an organisation permission). Computing it is the cost; a page
//! is a slice of it. The first page computes the set once, sorts it, and when more pages
//! follow keeps it here for a short while under (query, revision); the page token carries the
//! last id and that revision, so the next pages are a binary search and a copy instead of
//! the whole set again. The walk is then read at one revision from first page to last.
//!
//! Bounded in memory: at most `budget` ids held in all (16 bytes each), the least recently
//! used answers dropped first, and each answer for `ttl` at most. A page whose answer is gone
//! (dropped, expired, another replica) or that asks for a revision newer than it is computed
//! again from the newest state and continues after the token's last id, as pages did before
//! the cache: sorted ids make a keyset cursor, so nothing is skipped or repeated.
//!
//! Keyed by the query, not the caller: the answer depends on the query only, and each page
//! still runs the caller's authorisation on the newest state before anything is read here.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::graph::Map;

/// Where a walk stands, as its page token carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Position {
    /// After `a`, in the answer computed at revision `r`.
    At { a: Uuid, r: i64 },
    /// After this id, at the newest revision (tokens of releases before the cache).
    After(Uuid),
}

impl Position {
    pub fn after(self) -> Uuid {
        match self {
            Position::At { a, .. } | Position::After(a) => a,
        }
    }

    pub fn revision(self) -> Option<i64> {
        match self {
            Position::At { r, .. } => Some(r),
            Position::After(_) => None,
        }
    }
}

/// One page of `ids` (sorted ascending): those after `after`, at most `size`, and whether
/// more follow.
pub fn page(ids: &[Uuid], after: Option<Uuid>, size: usize) -> (&[Uuid], bool) {
    let start = after.map_or(0, |a| ids.partition_point(|id| *id <= a));
    let rest = &ids[start..];
    let n = rest.len().min(size);
    (&rest[..n], rest.len() > size)
}

struct Entry {
    ids: Arc<[Uuid]>,
    created: Instant,
    used: u64,
}

#[derive(Default)]
struct Inner {
    entries: Map<(String, i64), Entry>,
    /// Ids held across all entries.
    held: usize,
    /// A counter standing in for time of use (least recently used goes first).
    tick: u64,
}

/// Sorted lookup answers kept for their next pages (see the module's doc).
pub struct LookupCache {
    inner: Mutex<Inner>,
    budget: usize,
    ttl: Duration,
}

impl LookupCache {
    /// Holds at most `budget` ids in all, each answer for at most `ttl`; a budget of 0 keeps
    /// nothing (every page computes its answer).
    pub fn new(budget: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            budget,
            ttl,
        }
    }

    /// The answer to `query` computed at `revision`, if still held.
    pub fn get(&self, query: &str, revision: i64) -> Option<Arc<[Uuid]>> {
        let mut inner = self.inner.lock().ok()?;
        inner.tick += 1;
        let tick = inner.tick;
        let key = (query.to_owned(), revision);
        let expired = match inner.entries.get_mut(&key) {
            None => return None,
            Some(e) if e.created.elapsed() <= self.ttl => {
                e.used = tick;
                return Some(e.ids.clone());
            }
            Some(_) => true,
        };
        if expired {
            if let Some(e) = inner.entries.remove(&key) {
                inner.held -= e.ids.len();
            }
        }
        None
    }

    /// Keeps the answer to `query` at `revision` for the next pages, making room by dropping
    /// expired answers, then the least recently used. An answer larger than the whole budget
    /// is not kept.
    pub fn put(&self, query: String, revision: i64, ids: Arc<[Uuid]>) {
        if ids.len() > self.budget {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let ttl = self.ttl;
        let inner = &mut *inner;
        inner.entries.retain(|_, e| e.created.elapsed() <= ttl);
        inner.held = inner.entries.values().map(|e| e.ids.len()).sum();
        while inner.held + ids.len() > self.budget {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.held -= e.ids.len();
            }
        }
        inner.tick += 1;
        inner.held += ids.len();
        let entry = Entry {
            ids,
            created: Instant::now(),
            used: inner.tick,
        };
        if let Some(old) = inner.entries.insert((query, revision), entry) {
            inner.held -= old.ids.len();
        }
    }

    /// Ids held now (a gauge for memory).
    pub fn held(&self) -> usize {
        self.inner.lock().map(|i| i.held).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Arc<[Uuid]> {
        let mut v: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        v.sort_unstable();
        v.into()
    }

    #[test]
    fn pages_walk_a_sorted_set_once_each() {
        let all = ids(2_503);
        let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
        loop {
            let (p, more) = page(&all, after, 1_000);
            seen.extend_from_slice(p);
            pages += 1;
            if !more {
                break;
            }
            after = p.last().copied();
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, all.to_vec());
        // After an id no longer in the set (removed meanwhile), it goes on from where it was.
        let missing = Uuid::from_u128(all[10].as_u128() + 1);
        assert_eq!(page(&all, Some(missing), 1).0, &all[11..12]);
        let (last, more) = page(&all, all.last().copied(), 5);
        assert!(last.is_empty() && !more);
    }

    #[test]
    fn the_cache_keeps_its_budget_dropping_the_least_recently_used() {
        let cache = LookupCache::new(250, Duration::from_secs(60));
        cache.put("a".into(), 1, ids(100));
        cache.put("b".into(), 1, ids(100));
        assert!(
            cache.get("a", 1).is_some(),
            "a is now the more recently used"
        );
        cache.put("c".into(), 1, ids(100));
        assert!(cache.get("b", 1).is_none(), "b made room");
        assert!(cache.get("a", 1).is_some() && cache.get("c", 1).is_some());
        assert_eq!(cache.held(), 200);
        assert!(
            cache.get("a", 2).is_none(),
            "another revision is another answer"
        );
        cache.put("big".into(), 1, ids(251));
        assert!(
            cache.get("big", 1).is_none(),
            "larger than the budget: not kept"
        );
        assert_eq!(cache.held(), 200);
        let off = LookupCache::new(0, Duration::from_secs(60));
        off.put("a".into(), 1, ids(1));
        assert!(off.get("a", 1).is_none());
    }

    #[test]
    fn answers_expire() {
        let cache = LookupCache::new(1_000, Duration::ZERO);
        cache.put("a".into(), 1, ids(10));
        std::thread::sleep(Duration::from_millis(2));
        assert!(cache.get("a", 1).is_none());
        assert_eq!(cache.held(), 0);
    }

    #[test]
    fn tokens_of_either_form_decode() {
        let a = Uuid::new_v4();
        let new = serde_json::to_string(&Position::At { a, r: 7 }).expect("json");
        let back: Position = serde_json::from_str(&new).expect("new form");
        assert_eq!(back, Position::At { a, r: 7 });
        let old = serde_json::to_string(&a).expect("json");
        let back: Position = serde_json::from_str(&old).expect("old form");
        assert_eq!(back, Position::After(a));
    }
}
