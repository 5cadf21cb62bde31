//! The Redis store, for budgets that several instances share: each decision is one script
//! run by Redis atomically in one round trip (`EVALSHA`, falling back to `EVAL` once after a
//! Redis restart), on its own clock (`TIME`), so instances with drifting clocks still agree.
//!
//! Connections are multiplexed and pooled (a few, taken in turn), opened on first use and
//! reopened after a failure; a failed connect is not retried for a second, so an outage
//! costs each request one failed check, not a connect attempt. Every decision has a deadline.
//! Failures are counted per policy and logged once per outage, not per request.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::budget::{Gcra, Spend};
use crate::telemetry::metrics::metrics;

/// Connections per store, used in turn; each carries many requests at once.
const POOL: usize = 4;
/// How long a failed connect keeps others from trying.
const CONNECT_BACKOFF_MS: u64 = 1000;

/// GCRA on Redis's clock, in microseconds. ARGV: interval, burst. Answers
/// `{1, remaining, reset}` or `{0, retry_after}`.
const RATE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local nxt = tat + interval
if nxt > now + window then
  return {0, nxt - now - window}
end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
return {1, math.floor((now + window - nxt) / interval), nxt - now}
";

/// A count per window. ARGV: limit, the window's end (Unix seconds) for the key to expire.
/// Answers `{1, remaining}` or `{0, 0}`.
const QUOTA: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
local limit = tonumber(ARGV[1])
if n > limit then return {0, 0} end
return {1, limit - n}
";

/// Why the store made no decision.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A connect failed less than a second ago.
    #[error("not connected; reconnecting")]
    Reconnecting,
    /// Redis refused or the connection failed.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// One pooled connection, opened on first need.
#[derive(Default)]
struct Slot {
    connection: OnceCell<ConnectionManager>,
    /// A background connect is under way.
    connecting: AtomicBool,
}

/// A Redis server shared by instances.
pub struct RedisStore {
    policy: String,
    client: redis::Client,
    config: ConnectionManagerConfig,
    pool: Arc<[Slot]>,
    next: AtomicUsize,
    /// Unix milliseconds before which no connect is attempted.
    connect_after: AtomicU64,
    timeout: Duration,
    /// Whether the last decision failed: the outage was logged.
    down: AtomicBool,
    rate: redis::Script,
    quota: redis::Script,
}

impl RedisStore {
    /// A store for `url` (`redis://` or `rediss://`; `roots`: PEM CAs for `rediss://`
    /// instead of the system's), for the policy `policy`, deciding within `timeout`. Nothing
    /// connects until the first decision.
    ///
    /// # Errors
    /// The URL is not a Redis URL.
    pub fn open(url: &str, roots: Option<Vec<u8>>, timeout: Duration, policy: &str) -> redis::RedisResult<Self> {
        let client = match roots {
            Some(pem) => {
                redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls: None, root_cert: Some(pem) })?
            }
            None => redis::Client::open(url)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self {
            policy: policy.to_owned(),
            client,
            config,
            pool: (0..POOL).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            connect_after: AtomicU64::new(0),
            timeout,
            down: AtomicBool::new(false),
            rate: redis::Script::new(RATE),
            quota: redis::Script::new(QUOTA),
        })
    }

    /// Spends one request of `key`'s GCRA budget.
    ///
    /// # Errors
    /// The store did not decide in time.
    pub async fn rate(&self, key: &str, gcra: Gcra) -> Result<Spend, StoreError> {
        let interval_us = (gcra.interval / 1000).max(1);
        let answer = self.run(&self.rate, key, &[interval_us, gcra.burst]).await?;
        Ok(match answer.as_slice() {
            [1, remaining, reset, ..] => Spend::Allowed {
                remaining: u64::try_from(*remaining).unwrap_or(0),
                reset: Duration::from_micros(u64::try_from(*reset).unwrap_or(0)),
            },
            [_, retry, ..] => Spend::Refused { retry_after: Duration::from_micros(u64::try_from(*retry).unwrap_or(0)) },
            _ => Spend::Refused { retry_after: Duration::from_secs(1) },
        })
    }

    /// Counts one request of `key` in a window of `limit` that ends at `window_end` (Unix
    /// seconds).
    ///
    /// # Errors
    /// The store did not decide in time.
    pub async fn quota(&self, key: &str, limit: u64, window_end: u64, now: u64) -> Result<Spend, StoreError> {
        // Kept a minute past the window's end: instance clocks differ a little.
        let answer = self.run(&self.quota, key, &[limit, window_end + 60]).await?;
        let reset = Duration::from_secs(window_end.saturating_sub(now));
        Ok(match answer.as_slice() {
            [1, remaining, ..] => Spend::Allowed { remaining: u64::try_from(*remaining).unwrap_or(0), reset },
            _ => Spend::Refused { retry_after: reset },
        })
    }

    /// Runs `script` on `key` within the deadline; counts and logs failures.
    async fn run(&self, script: &redis::Script, key: &str, args: &[u64]) -> Result<Vec<i64>, StoreError> {
        let attempt = async {
            let mut connection = self.connection().await?;
            let mut invocation = script.key(key);
            for arg in args {
                invocation.arg(*arg);
            }
            Ok::<_, StoreError>(invocation.invoke_async::<Vec<i64>>(&mut connection).await?)
        };
        let result =
            tokio::time::timeout(self.timeout, attempt).await.unwrap_or(Err(StoreError::Timeout(self.timeout)));
        self.observe(&result);
        result
    }

    /// The next pooled connection. A request never waits for a connect while another
    /// connection is open: it takes that one, and the missing one is opened in the background.
    /// Only the very first request (no connection at all) connects, within its deadline.
    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed) % POOL;
        if let Some(open) = (0..POOL).find_map(|i| self.pool[(start + i) % POOL].connection.get()) {
            if self.pool[start].connection.get().is_none() {
                self.fill(start);
            }
            return Ok(open.clone());
        }
        if crate::clock::unix_millis() < self.connect_after.load(Ordering::Relaxed) {
            return Err(StoreError::Reconnecting);
        }
        let connect = || ConnectionManager::new_with_config(self.client.clone(), self.config.clone());
        match self.pool[0].connection.get_or_try_init(connect).await {
            Ok(connection) => Ok(connection.clone()),
            Err(e) => {
                self.connect_after.store(crate::clock::unix_millis() + CONNECT_BACKOFF_MS, Ordering::Relaxed);
                Err(e.into())
            }
        }
    }

    /// Opens the pool's connection `slot` in the background, once at a time.
    fn fill(&self, slot: usize) {
        if self.pool[slot].connecting.swap(true, Ordering::Relaxed) {
            return;
        }
        let (pool, client, config) = (self.pool.clone(), self.client.clone(), self.config.clone());
        tokio::spawn(async move {
            let connect = || ConnectionManager::new_with_config(client, config);
            let _ = pool[slot].connection.get_or_try_init(connect).await;
            pool[slot].connecting.store(false, Ordering::Relaxed);
        });
    }

    fn observe<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => {
                if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(policy.name = %self.policy, "rate-limit store reachable again");
                }
            }
            Err(e) => {
                metrics().rate_limit_store_errors.with_label_values(&[&self.policy]).inc();
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(policy.name = %self.policy, error = %e, "rate-limit store unavailable: on_store_error decides until it is back");
                }
            }
        }
    }
}
