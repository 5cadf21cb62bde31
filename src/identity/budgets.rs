//! The token endpoint's budgets against secret guessing, built so that guessing costs the
//! guesser and not the legitimate callers:
//!
//! - *failed* authentications are counted per source network (an IPv4 address or an IPv6
//!   /64): once a network spent its budget, it gets only 429s until the budget refills;
//! - *failed* authentications are also counted per client id, against guessing one client's
//!   secret from many networks; a client id is in every token it gets, so this budget does
//!   not bind the networks the client recently authenticated from (its familiar sources);
//! - *successful* issuance is limited per client id only, never per address: programs hosted
//!   in a cloud share outbound addresses.
//!
//! Familiar sources are the guesser's target: locking a client out of its own network would
//! turn the per-client budget into a denial of service. So only an issued token ever writes
//! the familiar map (a new pair, or a refreshed one); a request that fails — or that has not
//! authenticated yet — only reads it, and a read never adds a key nor makes room. Failures
//! from any number of networks therefore cannot evict a familiar pair: the map's bound is
//! reached, and its arbitrary eviction driven, only by clients that got tokens, and its own
//! shards are not shared with the failure counters.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::values::Rate;
use crate::limit::keyed::nanos;
use crate::limit::memory::{ShardedMap, Tat};
use crate::limit::KeyedLimiter;

/// How long a network stays familiar for a client after it authenticated from there.
const FAMILIAR_FOR: Duration = Duration::from_secs(24 * 3600);
/// Client and network pairs remembered at most.
const FAMILIAR_CAPACITY: usize = 100_000;

/// `identity.rate_limit`: the token endpoint's budgets.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenRateLimitConfig {
    /// Failed authentications per source network (default 30 per minute).
    pub failures_per_ip: Rate,
    /// Failed authentications per client id from networks it is not familiar with (default
    /// 30 per minute).
    pub failures_per_client: Rate,
    /// Tokens issued per client id, from any number of networks (default 1200 per minute,
    /// all of which may come at once).
    pub issued_per_client: Rate,
}

impl Default for TokenRateLimitConfig {
    fn default() -> Self {
        let per_minute =
            |n| Rate { count: std::num::NonZeroU32::new(n).expect("non-zero"), per: Duration::from_secs(60) };
        Self {
            failures_per_ip: per_minute(30),
            failures_per_client: per_minute(30),
            issued_per_client: per_minute(1200),
        }
    }
}

/// The budgets in force.
pub struct Budgets {
    failures_per_ip: KeyedLimiter<IpAddr>,
    failures_per_client: KeyedLimiter<str>,
    issued_per_client: KeyedLimiter<str>,
    /// Until when each client and network pair is familiar (nanoseconds, [`nanos`]).
    familiar: ShardedMap<Tat>,
    hasher: RandomState,
}

/// Where a client's request comes from, as the budgets see it.
#[derive(Clone, Copy)]
pub struct Source {
    network: IpAddr,
    /// The client authenticated from this network lately.
    familiar: bool,
}

impl Budgets {
    /// Budgets from configuration.
    pub fn new(cfg: TokenRateLimitConfig) -> Self {
        Self::with_familiar_capacity(cfg, FAMILIAR_CAPACITY)
    }

    fn with_familiar_capacity(cfg: TokenRateLimitConfig, familiar: usize) -> Self {
        Self {
            failures_per_ip: KeyedLimiter::new(cfg.failures_per_ip),
            failures_per_client: KeyedLimiter::new(cfg.failures_per_client),
            issued_per_client: KeyedLimiter::new(cfg.issued_per_client),
            familiar: ShardedMap::new(familiar),
            hasher: RandomState::new(),
        }
    }

    /// Before anything is parsed: the network has not failed too often.
    ///
    /// # Errors
    /// How long until it may try again.
    pub fn admit_network(&self, network: IpAddr, now: Instant) -> Result<(), Duration> {
        self.failures_per_ip.peek(&network, now)
    }

    /// Before the secret is checked: the client id has not failed too often, unless the
    /// network is familiar to it. Only reads the familiar map: an unauthenticated request
    /// adds nothing to it and evicts nothing from it.
    ///
    /// # Errors
    /// How long until it may try again.
    pub fn admit_client(&self, client_id: &str, network: IpAddr, now: Instant) -> Result<Source, Duration> {
        let at = nanos(now);
        let familiar = self.familiar.get(self.pair(client_id, network), |until| until.0 > at).unwrap_or(false);
        if !familiar {
            self.failures_per_client.peek(client_id, now)?;
        }
        Ok(Source { network, familiar })
    }

    /// Counts a failed authentication against the network, and against the client id when
    /// the network is not familiar to it.
    pub fn failed(&self, client_id: &str, source: Source, now: Instant) {
        let _ = self.failures_per_ip.check(&source.network, now);
        if !source.familiar {
            let _ = self.failures_per_client.check(client_id, now);
        }
    }

    /// Spends one issuance of the client's budget; the network becomes (or stays) familiar to
    /// it for [`FAMILIAR_FOR`]. The only writer of the familiar map: called once the client
    /// authenticated and every other check passed.
    ///
    /// # Errors
    /// How long until the client may have another token.
    pub fn issue(&self, client_id: &str, source: Source, now: Instant) -> Result<(), Duration> {
        self.issued_per_client.check(client_id, now)?;
        let until = nanos(now).saturating_add(FAMILIAR_FOR.as_nanos() as u64);
        self.familiar.with(self.pair(client_id, source.network), nanos(now), |at| at.0 = until);
        Ok(())
    }

    fn pair(&self, client_id: &str, network: IpAddr) -> u64 {
        self.hasher.hash_one((client_id, network))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32) -> Rate {
        Rate { count: std::num::NonZeroU32::new(count).unwrap(), per: Duration::from_secs(60) }
    }

    fn budgets() -> Budgets {
        Budgets::new(TokenRateLimitConfig {
            failures_per_ip: rate(3),
            failures_per_client: rate(2),
            issued_per_client: rate(5),
        })
    }

    #[test]
    fn failures_close_the_network_and_not_others() {
        let b = budgets();
        let (t, attacker, other) = (Instant::now(), "192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap());
        for i in 0..3 {
            let source = b.admit_client(&format!("guess-{i}"), attacker, t).unwrap();
            b.failed(&format!("guess-{i}"), source, t);
        }
        assert!(b.admit_network(attacker, t).is_err(), "three failures spent the network's budget");
        assert!(b.admit_network(other, t).is_ok());
    }

    #[test]
    fn failures_against_a_client_id_spare_its_familiar_networks() {
        let b = budgets();
        let t = Instant::now();
        let (home, attackers): (IpAddr, Vec<IpAddr>) =
            ("203.0.113.7".parse().unwrap(), (1..=2).map(|i| format!("192.0.2.{i}").parse().unwrap()).collect());
        let source = b.admit_client("billing", home, t).unwrap();
        b.issue("billing", source, t).unwrap();
        for ip in &attackers {
            let source = b.admit_client("billing", *ip, t).unwrap();
            b.failed("billing", source, t);
        }
        let third: IpAddr = "192.0.2.3".parse().unwrap();
        assert!(b.admit_client("billing", third, t).is_err(), "guessing from many networks is stopped");
        assert!(b.admit_client("billing", home, t).is_ok(), "the client's own network still gets tokens");
    }

    #[test]
    fn issuance_is_limited_per_client_and_not_per_address() {
        let b = budgets();
        let (t, shared) = (Instant::now(), "203.0.113.7".parse().unwrap());
        for client in ["a", "b", "c"] {
            for _ in 0..5 {
                let source = b.admit_client(client, shared, t).unwrap();
                assert!(b.issue(client, source, t).is_ok(), "{client}");
            }
        }
        let source = b.admit_client("a", shared, t).unwrap();
        assert!(b.issue("a", source, t).is_err(), "a's own budget is spent");
    }

    #[test]
    fn failures_from_10_000_networks_neither_evict_nor_lock_out_a_familiar_network() {
        let b = Budgets::new(TokenRateLimitConfig::default());
        let t = Instant::now();
        let home: IpAddr = "2001:db8:aaaa:1::7".parse().unwrap();
        let source = b.admit_client("billing", home, t).unwrap();
        b.issue("billing", source, t).unwrap();
        let (mut failed, mut stopped) = (0, 0);
        for i in 0..10_000u128 {
            // 10,000 distinct /64s, each its own network.
            let ip = IpAddr::V6(std::net::Ipv6Addr::from((0x2001_0db8_ffff_u128 << 80) | (i << 64) | 1));
            assert!(b.admit_network(ip, t).is_ok(), "each network has its own budget");
            match b.admit_client("billing", ip, t) {
                Ok(source) => {
                    b.failed("billing", source, t);
                    failed += 1;
                }
                Err(_) => stopped += 1,
            }
        }
        assert_eq!((failed, stopped), (30, 9_970), "the client id's failure budget stops the guessing");
        assert_eq!(b.familiar.len(), 1, "failures add nothing to the familiar map");
        let source = b.admit_client("billing", home, t).expect("the familiar network is not locked out");
        assert!(source.familiar);
        assert!(b.issue("billing", source, t).is_ok(), "the victim still gets a token");
    }

    #[test]
    fn only_issued_tokens_fill_the_familiar_map_so_failures_cannot_evict_from_it() {
        // One key per shard: any insertion into the victim's shard would evict it.
        let b = Budgets::with_familiar_capacity(TokenRateLimitConfig::default(), 1);
        let t = Instant::now();
        let home: IpAddr = "203.0.113.7".parse().unwrap();
        let source = b.admit_client("billing", home, t).unwrap();
        b.issue("billing", source, t).unwrap();
        for i in 0..10_000u128 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::from((0x2001_0db8_ffff_u128 << 80) | (i << 64)));
            for client in ["billing", "someone-else"] {
                if let Ok(source) = b.admit_client(client, ip, t) {
                    b.failed(client, source, t);
                }
            }
        }
        assert!(b.admit_client("billing", home, t).unwrap().familiar, "still familiar after 20,000 failures");
        // Issuance is what fills (and, at the bound, evicts from) the map.
        for i in 0..1_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let source = b.admit_client("other", ip, t).unwrap();
            let _ = b.issue("other", source, t);
        }
        assert!(b.familiar.len() <= 64, "the bound holds: {}", b.familiar.len());
    }
}
