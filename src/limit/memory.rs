//! The in-memory store: per-key state in shards, each behind its own small lock, so that
//! requests for different keys rarely meet and no lock is shared by all requests.
//!
//! Memory is bounded: a shard that reaches its share of the capacity first forgets keys
//! whose budget is whole again (at most once a second), then, if every key is still busy,
//! the least-spent ones (a sixteenth of the shard at once, so a flood of new keys costs one
//! scan per many keys). A key whose budget is spent is never forgotten to make room: that
//! would hand it a fresh budget. When a shard holds nothing but spent keys, a new key finds
//! no room ([`ShardedMap::try_with`] answers `None`) and its request is refused until one
//! recovers. At one million keys a rate map takes about 37 MB, a quota map about 55 MB
//! (64 shards of 2^15 buckets of 17 or 25 bytes; measured as resident memory).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crossbeam_utils::CachePadded;

const SHARDS: usize = 64;

/// State that is worth nothing once `now` passed it.
pub trait Expiring: Default {
    /// The shortest time between two sweeps of a shard, on the state's clock.
    const SWEEP_EVERY: u64;

    /// How much of its budget the key has spent at `now`; 0 when forgetting it changes no
    /// decision.
    fn debt(&self, now: u64) -> u64;
}

/// A GCRA key's theoretical arrival time, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tat(pub u64);

impl Expiring for Tat {
    const SWEEP_EVERY: u64 = 1_000_000_000;

    fn debt(&self, now: u64) -> u64 {
        self.0.saturating_sub(now)
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

    fn debt(&self, window: u64) -> u64 {
        if self.window < window {
            0
        } else {
            self.count
        }
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
    /// A key with this much debt or more has spent its budget and is never forgotten.
    spent_at: u64,
}

impl<V: Expiring> ShardedMap<V> {
    /// A map holding about `capacity` keys at most, any of which may be forgotten (the
    /// least-indebted first) to make room.
    pub fn new(capacity: usize) -> Self {
        Self::keeping_spent(capacity, u64::MAX)
    }

    /// A map holding about `capacity` keys at most that never forgets a key whose debt is
    /// `spent_at` or more.
    pub fn keeping_spent(capacity: usize, spent_at: u64) -> Self {
        let shards =
            (0..SHARDS).map(|_| CachePadded::new(Mutex::new(Shard { map: HashMap::default(), swept: None }))).collect();
        Self { shards, per_shard: (capacity / SHARDS).max(1), spent_at }
    }

    /// Runs `f` on `key`'s state (a fresh one for an unseen key) under its shard's lock.
    /// `now` is on the clock `V` expires by. `None`: an unseen key found its shard full of
    /// spent keys.
    pub fn try_with<R>(&self, key: u64, now: u64, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let (mut shard, room) = self.shard_with_room(key, now);
        room.then(|| f(shard.map.entry(key).or_default()))
    }

    /// [`Self::try_with`] for a map made by [`Self::new`], where no key counts as spent and
    /// there is always room.
    pub fn with<R>(&self, key: u64, now: u64, f: impl FnOnce(&mut V) -> R) -> R {
        let (mut shard, _) = self.shard_with_room(key, now);
        f(shard.map.entry(key).or_default())
    }

    /// `key`'s shard, locked, and whether it has room for `key`.
    fn shard_with_room(&self, key: u64, now: u64) -> (MutexGuard<'_, Shard<V>>, bool) {
        // Neither the low bits (the table's buckets) nor the top ones (its tags).
        let shard = &self.shards[(key >> 32) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let room = shard.map.len() < self.per_shard
            || shard.map.contains_key(&key)
            || make_room(&mut shard, now, self.per_shard, self.spent_at);
        (shard, room)
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

/// Forgets keys whose budget is whole (at most once per [`Expiring::SWEEP_EVERY`]), then, if
/// the shard is still full, the least-indebted sixteenth of the keys that have not spent
/// their budget. Whether there is room now.
fn make_room<V: Expiring>(shard: &mut Shard<V>, now: u64, per_shard: usize, spent_at: u64) -> bool {
    if shard.swept.is_none_or(|at| now < at || now - at >= V::SWEEP_EVERY) {
        shard.map.retain(|_, v| v.debt(now) > 0);
        shard.swept = Some(now);
    }
    if shard.map.len() < per_shard {
        return true;
    }
    let mut spendable: Vec<(u64, u64)> =
        shard.map.iter().map(|(k, v)| (v.debt(now), *k)).filter(|(debt, _)| *debt < spent_at).collect();
    let forget = (per_shard / 16).clamp(1, spendable.len().max(1));
    if spendable.len() > forget {
        spendable.select_nth_unstable(forget);
    }
    for (_, key) in spendable.iter().take(forget) {
        shard.map.remove(key);
    }
    shard.map.len() < per_shard
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

    /// A flood of new keys must not hand a spent key a fresh budget: the least-spent keys go
    /// first, and a shard of nothing but spent keys refuses the newcomer.
    #[test]
    fn spent_budgets_are_never_forgotten_to_make_room() {
        let map: ShardedMap<Tat> = ShardedMap::keeping_spent(SHARDS * 16, 100);
        // Every key lands in shard 0: the shard's key bits are the upper half.
        let key = |i: u64| i;
        let victim = key(0);
        map.try_with(victim, 0, |tat| tat.0 = 1_000).unwrap();
        for i in 1..16 {
            map.try_with(key(i), 0, |tat| tat.0 = 10 + i).unwrap();
        }
        for i in 16..10_000 {
            let admitted = map.try_with(key(i), 0, |tat| tat.0 = 50);
            assert!(admitted.is_some(), "keys below the spent mark make room: {i}");
            assert_eq!(map.try_with(victim, 0, |tat| tat.0), Some(1_000), "the spent key is kept");
        }
        let full: ShardedMap<Tat> = ShardedMap::keeping_spent(SHARDS, 100);
        full.try_with(0, 0, |tat| tat.0 = 1_000).unwrap();
        assert_eq!(full.try_with(1, 0, |tat| tat.0 = 1), None, "no room beside a spent key");
        assert_eq!(full.try_with(0, 0, |tat| tat.0), Some(1_000));
        assert!(full.try_with(1, 950, |_| ()).is_some(), "room once it recovered");
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
        assert!(Count { window: 7, count: 3 }.debt(8) == 0 && Count { window: 7, count: 3 }.debt(7) == 3);
    }
}
