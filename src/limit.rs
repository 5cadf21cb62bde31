//! A keyed rate limiter (GCRA, the "generic cell rate algorithm"): each key may spend
//! `count` requests per `per`, in bursts of up to `count`. The caller passes `now`, so limits
//! are tested with an advanced clock instead of sleeps.
//!
//! State is one instant per key (its theoretical arrival time), in shards so that keys on
//! different shards never wait for each other. Keys back at their full budget are forgotten
//! once a shard holds many.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::values::Rate;

const SHARDS: usize = 16;
/// Keys a shard holds before idle ones are dropped.
const KEYS_PER_SHARD: usize = 100_000 / SHARDS;
/// The shortest time between two sweeps of a shard.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Requests per key, with bursts.
pub struct KeyedLimiter<K> {
    /// The time one request costs.
    interval: Duration,
    /// How far ahead of `now` a key's budget may be spent: `interval * (burst - 1)`.
    tolerance: Duration,
    hasher: RandomState,
    shards: Vec<Mutex<Shard<K>>>,
}

struct Shard<K> {
    /// When each key's budget is whole again.
    full_at: HashMap<K, Instant>,
    swept: Option<Instant>,
}

impl<K: Hash + Eq> KeyedLimiter<K> {
    /// `rate.count` requests per `rate.per`, all of which may come at once.
    pub fn new(rate: Rate) -> Self {
        let interval = (rate.per / rate.count.get()).max(Duration::from_nanos(1));
        Self {
            interval,
            tolerance: interval * (rate.count.get() - 1),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard { full_at: HashMap::new(), swept: None })).collect(),
        }
    }

    /// Spends one request of `key`'s budget at `now`.
    ///
    /// # Errors
    /// The budget is spent: how long until the next request would be allowed.
    pub fn check(&self, key: K, now: Instant) -> Result<(), Duration> {
        let shard = &self.shards[self.hasher.hash_one(&key) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if shard.full_at.len() >= KEYS_PER_SHARD && shard.swept.is_none_or(|at| now >= at + SWEEP_EVERY) {
            shard.full_at.retain(|_, full_at| *full_at > now);
            shard.swept = Some(now);
        }
        let full_at = shard.full_at.get(&key).copied().unwrap_or(now).max(now);
        let allowed_until = now + self.tolerance;
        if full_at > allowed_until {
            return Err(full_at - allowed_until);
        }
        shard.full_at.insert(key, full_at + self.interval);
        Ok(())
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |s| s.full_at.len())).sum()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, per: u64) -> Rate {
        Rate { count: std::num::NonZeroU32::new(count).unwrap(), per: Duration::from_secs(per) }
    }

    #[test]
    fn a_burst_is_allowed_then_refused_until_the_budget_refills() {
        let limiter = KeyedLimiter::new(rate(3, 60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("a", t0), Ok(()));
        }
        assert_eq!(limiter.check("a", t0), Err(Duration::from_secs(20)));
        assert_eq!(limiter.check("b", t0), Ok(()), "another key has its own budget");
        assert!(limiter.check("a", t0 + Duration::from_secs(19)).is_err());
        assert_eq!(limiter.check("a", t0 + Duration::from_secs(20)), Ok(()));
        assert!(limiter.check("a", t0 + Duration::from_secs(20)).is_err(), "one request refilled, one spent");
        let later = t0 + Duration::from_secs(60 + 20);
        for _ in 0..3 {
            assert_eq!(limiter.check("a", later), Ok(()), "a whole budget after a whole period");
        }
    }

    #[test]
    fn idle_keys_are_forgotten_when_a_shard_is_full() {
        let limiter = KeyedLimiter::new(rate(1, 1));
        let t0 = Instant::now();
        for key in 0..(KEYS_PER_SHARD * SHARDS * 2) {
            let _ = limiter.check(key, t0);
        }
        let remembered = limiter.len();
        for key in 0..SHARDS * 4 {
            let _ = limiter.check(key, t0 + Duration::from_secs(5));
        }
        assert!(limiter.len() < remembered, "{} < {remembered}", limiter.len());
    }
}
