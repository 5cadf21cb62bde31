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
        Self {
            failures_per_ip: KeyedLimiter::new(cfg.failures_per_ip),
            failures_per_client: KeyedLimiter::new(cfg.failures_per_client),
            issued_per_client: KeyedLimiter::new(cfg.issued_per_client),
            familiar: ShardedMap::new(FAMILIAR_CAPACITY),
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
    /// network is familiar to it.
    ///
    /// # Errors
    /// How long until it may try again.
    pub fn admit_client(&self, client_id: &str, network: IpAddr, now: Instant) -> Result<Source, Duration> {
        let at = nanos(now);
        let familiar = self.familiar.with(self.pair(client_id, network), at, |until| until.0 > at);
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

    /// Spends one issuance of the client's budget; the network becomes familiar to it.
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
}
