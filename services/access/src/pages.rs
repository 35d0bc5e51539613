//! The pages of a lookup (LookupResources, LookupSubjects), cut from one sorted answer.
//!
//! A lookup's answer is a set computed from the replica's memory (a supervisor's ~22k
//! mailboxes, everyone holding an organisation permission). Computing it is the cost; a page
//! is a slice of it. The first page computes the set once, sorts it, and when more pages
//! follow keeps it here for a short while under (query, revision); the page token carries the
//! last id and that revision, so the next pages are a binary search and a copy instead of
//! the whole set again. The walk is then read at one revision from first page to last.
//!
//! Bounded in memory: at most `budget` ids held in all (16 bytes each; keys counted in ids'
//! worth), at most [`MAX_ENTRIES`] answers, the least recently used dropped first (in
//! O(log n), from an index by time of use), and each answer for `ttl` at most. Only answers
//! larger than a default page ([`MIN_IDS`]) are kept: a smaller one is cheap to compute again,
//! and a walk with a tiny page size over it would otherwise fill the cache. A page whose answer is gone
//! (dropped, expired, another replica) or that asks for a revision newer than it is computed
//! again from the newest state and continues after the token's last id, as pages did before
//! the cache: sorted ids make a keyset cursor, so nothing is skipped or repeated.
//!
//! Keyed by the query, not the caller: the answer depends on the query only, and each page
//! still runs the caller's authorisation on the newest state before anything is read here.

use std::collections::BTreeMap;
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
    /// Its key in [`Inner::order`].
    used: u64,
    /// What it counts against the budget: its ids, and its key in ids' worth (16 bytes).
    cost: usize,
}

/// What an answer to `query` counts against the budget, in ids (16 bytes each).
fn cost(query: &str, ids: usize) -> usize {
    ids + query.len().div_ceil(16) + 1
}

#[derive(Default)]
struct Inner {
    entries: Map<(String, i64), Entry>,
    /// The entries' keys by time of last use, least recent first: eviction takes the first,
    /// in O(log n), where a scan of every entry would hold the lock for as long as it runs.
    order: BTreeMap<u64, (String, i64)>,
    /// The cost of all entries (ids and keys, in ids).
    held: usize,
    /// A counter standing in for time of use.
    tick: u64,
}

impl Inner {
    fn remove(&mut self, key: &(String, i64)) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.used);
            self.held -= e.cost;
        }
    }

    /// Drops the least recently used entry; false if there is none.
    fn evict_oldest(&mut self) -> bool {
        match self.order.pop_first() {
            Some((_, key)) => {
                if let Some(e) = self.entries.remove(&key) {
                    self.held -= e.cost;
                }
                true
            }
            None => false,
        }
    }
}

/// Sorted lookup answers kept for their next pages (see the module's doc).
pub struct LookupCache {
    inner: Mutex<Inner>,
    budget: usize,
    ttl: Duration,
    /// At most this many answers, however small.
    max_entries: usize,
    /// Answers of at most this many ids are not kept: a default page (1,000 ids) or less
    /// is cheaper to compute again than to hold.
    min_ids: usize,
}

/// At most this many answers kept (see [`LookupCache::limits`]).
pub const MAX_ENTRIES: usize = 4_096;
/// Answers of at most this many ids (the default page) are computed again, not kept.
pub const MIN_IDS: usize = 1_000;

impl LookupCache {
    /// Holds at most `budget` ids in all (keys counted in ids' worth), at most
    /// [`MAX_ENTRIES`] answers of more than [`MIN_IDS`] ids, each for at most `ttl`; a
    /// budget of 0 keeps nothing (every page computes its answer).
    pub fn new(budget: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            budget,
            ttl,
            max_entries: MAX_ENTRIES,
            min_ids: MIN_IDS,
        }
    }

    /// With at most `max_entries` answers, of more than `min_ids` ids each.
    pub fn limits(self, max_entries: usize, min_ids: usize) -> Self {
        Self {
            max_entries,
            min_ids,
            ..self
        }
    }

    /// The answer to `query` computed at `revision`, if still held.
    pub fn get(&self, query: &str, revision: i64) -> Option<Arc<[Uuid]>> {
        let key = (query.to_owned(), revision);
        let mut inner = self.inner.lock().ok()?;
        let inner = &mut *inner;
        if inner.entries.get(&key)?.created.elapsed() > self.ttl {
            inner.remove(&key);
            return None;
        }
        inner.tick += 1;
        let now = inner.tick;
        let e = inner.entries.get_mut(&key)?;
        let was = std::mem::replace(&mut e.used, now);
        let ids = e.ids.clone();
        if let Some(k) = inner.order.remove(&was) {
            inner.order.insert(now, k);
        }
        Some(ids)
    }

    /// Whether an answer of `ids` ids would be kept (more than a default page).
    pub fn worth_keeping(&self, ids: usize) -> bool {
        ids > self.min_ids && self.max_entries > 0
    }

    /// Keeps the answer to `query` at `revision` for the next pages, making room by dropping
    /// the least recently used answers (expired ones first when they are the oldest). An
    /// answer of a default page or less, or larger than the whole budget, is not kept. Each
    /// call takes O(log n) a dropped answer, whatever the number held.
    pub fn put(&self, query: String, revision: i64, ids: Arc<[Uuid]>) {
        let cost = cost(&query, ids.len());
        if !self.worth_keeping(ids.len()) || cost > self.budget {
            return;
        }
        let key = (query, revision);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let inner = &mut *inner;
        inner.remove(&key);
        // The least recently used first; those expired go even with room to spare.
        loop {
            let oldest_expired = inner
                .order
                .first_key_value()
                .and_then(|(_, k)| inner.entries.get(k))
                .is_some_and(|e| e.created.elapsed() > self.ttl);
            let full = inner.held + cost > self.budget || inner.entries.len() >= self.max_entries;
            if !(oldest_expired || full) || !inner.evict_oldest() {
                break;
            }
        }
        inner.tick += 1;
        let used = inner.tick;
        inner.held += cost;
        inner.order.insert(used, key.clone());
        inner.entries.insert(
            key,
            Entry {
                ids,
                created: Instant::now(),
                used,
                cost,
            },
        );
    }

    /// What the answers held now count against the budget, in ids (a gauge for memory).
    pub fn held(&self) -> usize {
        self.inner.lock().map(|i| i.held).unwrap_or(0)
    }

    /// How many answers are held now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.entries.len()).unwrap_or(0)
    }

    /// Whether no answer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    /// What an answer of `n` ids under a one-letter key costs.
    fn c(n: usize) -> usize {
        cost("a", n)
    }

    #[test]
    fn the_cache_keeps_its_budget_dropping_the_least_recently_used() {
        let cache = LookupCache::new(c(100) * 2 + 50, Duration::from_secs(60)).limits(16, 0);
        cache.put("a".into(), 1, ids(100));
        cache.put("b".into(), 1, ids(100));
        assert!(
            cache.get("a", 1).is_some(),
            "a is now the more recently used"
        );
        cache.put("c".into(), 1, ids(100));
        assert!(cache.get("b", 1).is_none(), "b made room");
        assert!(cache.get("a", 1).is_some() && cache.get("c", 1).is_some());
        assert_eq!(cache.held(), c(100) * 2);
        assert!(
            cache.get("a", 2).is_none(),
            "another revision is another answer"
        );
        cache.put("big".into(), 1, ids(c(100) * 2 + 50));
        assert!(
            cache.get("big", 1).is_none(),
            "larger than the budget: not kept"
        );
        assert_eq!(cache.held(), c(100) * 2);
        // Kept again under the same key: counted once.
        cache.put("a".into(), 1, ids(100));
        assert_eq!((cache.held(), cache.len()), (c(100) * 2, 2));
        let off = LookupCache::new(0, Duration::from_secs(60)).limits(16, 0);
        off.put("a".into(), 1, ids(1));
        assert!(off.get("a", 1).is_none());
    }

    #[test]
    fn keys_count_against_the_budget() {
        let long = "k".repeat(16 * 100);
        let cache = LookupCache::new(150, Duration::from_secs(60)).limits(16, 0);
        cache.put(long.clone(), 1, ids(60));
        assert!(
            cache.get(&long, 1).is_none(),
            "60 ids and 100 ids' worth of key"
        );
        cache.put("a".into(), 1, ids(60));
        assert_eq!(cache.held(), c(60));
    }

    #[test]
    fn the_cache_keeps_at_most_its_entries_however_small() {
        let cache = LookupCache::new(1_000_000, Duration::from_secs(60)).limits(3, 0);
        for q in ["a", "b", "c", "d", "e"] {
            cache.put(q.into(), 1, ids(2));
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.held(), c(2) * 3);
        assert!(cache.get("a", 1).is_none() && cache.get("b", 1).is_none());
        assert!(
            cache.get("c", 1).is_some(),
            "c is now the more recently used"
        );
        cache.put("f".into(), 1, ids(2));
        assert!(cache.get("d", 1).is_none(), "d was the least recently used");
        assert!(cache.get("c", 1).is_some() && cache.get("e", 1).is_some());
        // With the default limits: many answers, never more than MAX_ENTRIES held.
        let cache = LookupCache::new(usize::MAX, Duration::from_secs(60)).limits(MAX_ENTRIES, 1);
        let two = ids(2);
        for r in 0..(MAX_ENTRIES as i64 + 500) {
            cache.put("q".into(), r, two.clone());
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert!(cache.get("q", 499).is_none() && cache.get("q", 500).is_some());
    }

    #[test]
    fn answers_of_a_default_page_or_less_are_not_kept() {
        let cache = LookupCache::new(1_000_000, Duration::from_secs(60));
        cache.put("small".into(), 1, ids(MIN_IDS));
        assert!(cache.get("small", 1).is_none());
        cache.put("large".into(), 1, ids(MIN_IDS + 1));
        assert!(cache.get("large", 1).is_some());
        assert!(!cache.worth_keeping(MIN_IDS) && cache.worth_keeping(MIN_IDS + 1));
    }

    #[test]
    fn answers_expire() {
        let cache = LookupCache::new(1_000, Duration::ZERO).limits(16, 0);
        cache.put("a".into(), 1, ids(10));
        std::thread::sleep(Duration::from_millis(2));
        assert!(cache.get("a", 1).is_none());
        assert_eq!(cache.held(), 0);
        // An expired answer at the front of the order goes when another is kept.
        cache.put("b".into(), 1, ids(10));
        std::thread::sleep(Duration::from_millis(2));
        cache.put("c".into(), 1, ids(10));
        assert_eq!(cache.len(), 1);
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
