//! The in-memory store: per-key state in shards, each behind its own small lock, so that
//! requests for different keys rarely meet and no lock is shared by all requests.
//!
//! Memory is bounded: a shard that reaches its share of the capacity first forgets keys
//! whose budget is whole again (at most once a second); if every key is still busy it
//! forgets one at random, which hands that key a fresh budget — the bound wins over
//! exactness, and only under a flood of distinct keys.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, PoisonError};

use crossbeam_utils::CachePadded;

const SHARDS: usize = 64;

/// State that is worth nothing once `now` passed it.
pub trait Expiring: Default {
    /// The shortest time between two sweeps of a shard, on the state's clock.
    const SWEEP_EVERY: u64;

    /// Whether the key can be forgotten without changing any decision.
    fn expired(&self, now: u64) -> bool;
}

/// A GCRA key's theoretical arrival time, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tat(pub u64);

impl Expiring for Tat {
    const SWEEP_EVERY: u64 = 1_000_000_000;

    fn expired(&self, now: u64) -> bool {
        self.0 <= now
    }
}

/// A quota key's count within its window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count {
    /// The window the count belongs to.
    pub window: u64,
    /// Requests counted in it.
    pub count: u64,
}

impl Expiring for Count {
    const SWEEP_EVERY: u64 = 1;

    fn expired(&self, window: u64) -> bool {
        self.window < window
    }
}

/// Keys are already hashes (with a per-process random seed): use them as they are.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Shard<V> {
    map: HashMap<u64, V, BuildHasherDefault<PassThrough>>,
    /// When the shard was last swept (the caller's clock), if ever.
    swept: Option<u64>,
}

/// Per-key state of type `V` in [`SHARDS`] shards, bounded to about `capacity` keys.
pub struct ShardedMap<V> {
    shards: Box<[CachePadded<Mutex<Shard<V>>>]>,
    per_shard: usize,
}

impl<V: Expiring> ShardedMap<V> {
    /// A map holding about `capacity` keys at most.
    pub fn new(capacity: usize) -> Self {
        let shards =
            (0..SHARDS).map(|_| CachePadded::new(Mutex::new(Shard { map: HashMap::default(), swept: None }))).collect();
        Self { shards, per_shard: (capacity / SHARDS).max(1) }
    }

    /// Runs `f` on `key`'s state (a fresh one for an unseen key) under its shard's lock.
    /// `now` is on the clock `V` expires by.
    pub fn with<R>(&self, key: u64, now: u64, f: impl FnOnce(&mut V) -> R) -> R {
        // Neither the low bits (the table's buckets) nor the top ones (its tags).
        let shard = &self.shards[(key >> 32) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if shard.map.len() >= self.per_shard && !shard.map.contains_key(&key) {
            make_room(&mut shard, now, self.per_shard);
        }
        f(shard.map.entry(key).or_default())
    }

    /// Runs `f` on `key`'s state if the key is remembered, without adding it: a read that
    /// never makes room, so it never makes the map forget another key.
    pub fn get<R>(&self, key: u64, f: impl FnOnce(&V) -> R) -> Option<R> {
        let shard = self.shards[(key >> 32) as usize % SHARDS].lock().unwrap_or_else(PoisonError::into_inner);
        shard.map.get(&key).map(f)
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |s| s.map.len())).sum()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Forgets expired keys (at most once per [`Expiring::SWEEP_EVERY`]), then, if the shard is
/// still full, one arbitrary key.
fn make_room<V: Expiring>(shard: &mut Shard<V>, now: u64, per_shard: usize) {
    if shard.swept.is_none_or(|at| now < at || now - at >= V::SWEEP_EVERY) {
        shard.map.retain(|_, v| !v.expired(now));
        shard.swept = Some(now);
    }
    if shard.map.len() >= per_shard {
        if let Some(victim) = shard.map.keys().next().copied() {
            shard.map.remove(&victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_keys_are_forgotten_and_the_bound_holds_under_a_flood() {
        let map: ShardedMap<Tat> = ShardedMap::new(SHARDS * 10);
        let hash = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for i in 0..10_000 {
            map.with(hash(i), 0, |tat| tat.0 = 5_000_000_000);
        }
        assert!(map.len() <= SHARDS * 10, "bounded while every key is busy: {}", map.len());
        // Once their budgets are whole, new keys replace them by sweeping, not at random.
        for i in 10_000..10_064 {
            map.with(hash(i), 6_000_000_000, |tat| tat.0 = 7_000_000_000);
        }
        assert!(map.len() <= SHARDS * 10);
        let busy = (10_000..10_064).filter(|i| map.with(hash(*i), 6_000_000_000, |tat| tat.0) == 7_000_000_000);
        assert_eq!(busy.count(), 64, "the new keys were kept");
    }

    #[test]
    fn reading_a_key_never_adds_it_nor_evicts_another() {
        let map: ShardedMap<Tat> = ShardedMap::new(SHARDS);
        map.with(1 << 32, 0, |tat| tat.0 = 10);
        // Same shard, full at one key: a read of others neither adds them nor makes room.
        for i in 0..100u64 {
            assert!(map.get((i * SHARDS as u64 + 1) << 32 | 7, |tat| tat.0).is_none());
        }
        assert_eq!(map.len(), 1);
        assert_eq!(map.get(1 << 32, |tat| tat.0), Some(10));
    }

    #[test]
    fn quota_counts_expire_with_their_window() {
        let map: ShardedMap<Count> = ShardedMap::new(SHARDS);
        map.with(1, 7, |c| *c = Count { window: 7, count: 3 });
        assert!(map.with(1, 7, |c| c.count) == 3);
        assert!(Count { window: 7, count: 3 }.expired(8) && !Count { window: 7, count: 3 }.expired(7));
    }
}
