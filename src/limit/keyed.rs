//! A keyed GCRA limiter for the gateway's own endpoints: each key may spend `count` requests
//! per `per`, in bursts of up to `count`, in a [`ShardedMap`] of 100 000 keys at most. The
//! caller passes `now` (an [`Instant`]), so limits are tested with a moved clock.

use std::hash::{BuildHasher, Hash, RandomState};
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::budget::{Gcra, Spend};
use super::memory::{ShardedMap, Tat};
use crate::config::values::Rate;

/// Keys remembered at most.
const CAPACITY: usize = 100_000;

/// What a new key is told when every remembered key has spent its budget.
pub const NO_ROOM_RETRY: Duration = Duration::from_secs(1);

/// Requests per key, with bursts.
pub struct KeyedLimiter<K: ?Sized> {
    gcra: Gcra,
    hasher: RandomState,
    tats: ShardedMap<Tat>,
    keys: PhantomData<fn(K)>,
}

/// Nanoseconds since a process-wide origin: the clock of the in-memory stores.
pub fn nanos(now: Instant) -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    // One hour back, so that instants taken before the first call still count from it.
    let origin = *ORIGIN.get_or_init(|| Instant::now().checked_sub(Duration::from_secs(3600)).unwrap_or(now));
    u64::try_from(now.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

impl<K: Hash + ?Sized> KeyedLimiter<K> {
    /// `rate.count` requests per `rate.per`, all of which may come at once.
    pub fn new(rate: Rate) -> Self {
        let count = u64::from(rate.count.get());
        let gcra = Gcra::new(count, rate.per, count);
        Self {
            gcra,
            hasher: RandomState::new(),
            tats: ShardedMap::keeping_spent(CAPACITY, gcra.spent_at()),
            keys: PhantomData,
        }
    }

    /// Spends one request of `key`'s budget at `now`.
    ///
    /// # Errors
    /// The budget is spent: how long until the next request would be allowed.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let now = nanos(now);
        match self.tats.try_with(self.hasher.hash_one(key), now, |tat| self.gcra.spend(&mut tat.0, now)) {
            Some(Spend::Allowed { .. }) => Ok(()),
            Some(Spend::Refused { retry_after }) => Err(retry_after),
            None => Err(NO_ROOM_RETRY),
        }
    }

    /// Whether `key` could spend one request at `now`, without spending it.
    ///
    /// # Errors
    /// The budget is spent: how long until the next request would be allowed.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let now = nanos(now);
        let Some(tat) = self.tats.try_with(self.hasher.hash_one(key), now, |tat| tat.0) else {
            return Err(NO_ROOM_RETRY);
        };
        match self.gcra.would_allow(tat, now) {
            true => Ok(()),
            false => Err(Duration::from_nanos(
                tat.saturating_add(self.gcra.interval) - now - self.gcra.window().as_nanos() as u64,
            )),
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.tats.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.tats.is_empty()
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
            assert_eq!(limiter.check(&"a", t0), Ok(()));
        }
        assert_eq!(limiter.check(&"a", t0), Err(Duration::from_secs(20)));
        assert_eq!(limiter.peek(&"a", t0), Err(Duration::from_secs(20)), "peeking tells the same");
        assert_eq!(limiter.check(&"b", t0), Ok(()), "another key has its own budget");
        assert!(limiter.check(&"a", t0 + Duration::from_secs(19)).is_err());
        assert_eq!(limiter.peek(&"a", t0 + Duration::from_secs(20)), Ok(()));
        assert_eq!(limiter.check(&"a", t0 + Duration::from_secs(20)), Ok(()), "peeking spent nothing");
        assert!(limiter.check(&"a", t0 + Duration::from_secs(20)).is_err(), "one request refilled, one spent");
        let later = t0 + Duration::from_secs(60 + 20);
        for _ in 0..3 {
            assert_eq!(limiter.check(&"a", later), Ok(()), "a whole budget after a whole period");
        }
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_keys() {
        let limiter = KeyedLimiter::new(rate(1, 1));
        let t0 = Instant::now();
        for key in 0..(CAPACITY * 2) {
            let _ = limiter.check(&key, t0);
        }
        assert!(limiter.len() <= CAPACITY, "{}", limiter.len());
    }
}
