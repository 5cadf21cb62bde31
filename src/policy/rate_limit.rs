//! `rate_limit`: budgets per key, like APIM's `rate-limit-by-key` and `quota-by-key`.
//!
//! The key is made of request facts (client IP, a claim, a header, the client
//! certificate's thumbprint, the route); the budget is a GCRA `rate` with a `burst`, or a
//! `quota` per UTC hour, day or month. The store is this instance's memory, or Redis so that
//! instances share the budget; when Redis cannot decide, `on_store_error` does. Answers carry
//! the IETF `RateLimit` and `RateLimit-Policy` fields (draft-ietf-httpapi-ratelimit-headers);
//! refusals are 429 with `Retry-After`.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::request::Parts;
use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use super::context::{ClaimPath, RateLimitState, RequestContext};
use super::kind::{Blame, Decision, PolicyKind};
use crate::config::context::{CompileContext, Invalid};
use crate::config::values::{ConfigDuration, Located, Rate, ValueRef};
use crate::limit::memory::{Count, ShardedMap, Tat};
use crate::limit::redis::RedisStore;
use crate::limit::{keyed::nanos, Gcra, Period, Spend};
use crate::problem::Problem;
use crate::telemetry::metrics::Fault;

/// What a new key gets when the memory store holds nothing but spent budgets.
const NO_ROOM: Spend = Spend::Refused { retry_after: crate::limit::keyed::NO_ROOM_RETRY };

/// Keys an in-memory budget remembers unless `capacity` says otherwise.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// How long Redis may take to decide unless `timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// The `rate_limit` policy as written in YAML.
pub struct RateLimitConfig {
    /// `key`: `client_ip`, `claim:NAME`, `header:NAME`, `client_cert`, `route`, `subscription`,
    /// or a list.
    pub key: Spanned<KeyList>,
    /// `rate`: requests per second, minute or hour (`100/s`), spent GCRA-style.
    pub rate: Option<Rate>,
    /// `burst`: requests that may come at once (default: the rate's count).
    pub burst: Option<Spanned<u32>>,
    /// `quota`: requests per UTC hour, day or month (`10000/day`).
    pub quota: Option<Quota>,
    /// `store`: `memory` (default), or a `redis://` / `rediss://` URL (`${env:}` allowed).
    pub store: Option<Spanned<ValueRef>>,
    /// `on_store_error`: `allow` (default) or `deny` when Redis cannot decide.
    pub on_store_error: Option<OnStoreError>,
    /// `timeout`: how long Redis may take to decide (default 100ms).
    pub timeout: Option<ConfigDuration>,
    /// `trusted_cas`: CAs for `rediss://` instead of the system's.
    pub trusted_cas: Option<Located>,
    /// `capacity`: keys the memory store remembers at most (default 100000).
    pub capacity: Option<usize>,
    /// `ipv6_prefix`: `client_ip` keys an IPv6 client by this network (default 64: one
    /// holder of a /64 gets one budget, not 2^64).
    pub ipv6_prefix: Option<Spanned<u8>>,
}

/// The IPv6 network `client_ip` keys by unless `ipv6_prefix` says otherwise.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// A quota written as a count per calendar period: `500/hour`, `10000/day`, `1000000/month`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Quota {
    /// Requests allowed per period.
    pub limit: std::num::NonZeroU64,
    /// The UTC calendar period.
    pub period: Period,
}

impl TryFrom<String> for Quota {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let hint =
            || format!("invalid quota {text:?}: write a count and a period, like 500/hour, 10000/day or 1000000/month");
        let (count, unit) = text.split_once('/').ok_or_else(hint)?;
        let limit = count.trim().parse().map_err(|_| hint())?;
        let period = match unit.trim() {
            "h" | "hour" => Period::Hour,
            "d" | "day" => Period::Day,
            "month" => Period::Month,
            _ => return Err(hint()),
        };
        Ok(Self { limit, period })
    }
}

/// One key part, or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum KeyList {
    /// `key: client_ip`
    One(String),
    /// `key: [client_ip, "header:X-Api-Key"]`
    Many(Vec<String>),
}

/// What decides when the shared store cannot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Let the request through (the default: an outage of Redis is not one of the API).
    #[default]
    Allow,
    /// Refuse it with 503.
    Deny,
}

/// One fact of the request that the key is made of.
#[derive(Debug)]
enum KeyPart {
    /// IPv4 addresses whole, IPv6 ones masked to their network.
    ClientIp {
        v6_mask: u128,
    },
    Claim(ClaimPath),
    Header(HeaderName),
    ClientCert,
    Route,
    /// The subscription a `subscription_key` policy accepted.
    Subscription,
}

/// What a key may spend.
#[derive(Clone, Copy, Debug)]
enum Budget {
    Rate(Gcra),
    Quota { limit: u64, period: Period },
}

enum Store {
    Memory { hasher: RandomState, state: Memory },
    Redis { store: Box<RedisStore>, prefix: String, on_error: OnStoreError },
}

enum Memory {
    Rate(ShardedMap<Tat>),
    Quota(ShardedMap<Count>),
}

/// The compiled `rate_limit` policy.
pub struct RateLimit {
    key: Vec<KeyPart>,
    budget: Budget,
    store: Store,
    /// `RateLimit-Policy`, rendered once.
    policy_field: HeaderValue,
    /// The policy's name as a structured-field string, for `RateLimit`.
    name_field: String,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").field("key", &self.key).field("budget", &self.budget).finish_non_exhaustive()
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The key's rate is spent; the next request is allowed in this many seconds.
    RateExceeded(u64),
    /// The key's quota for this period is spent, until the period ends in this many seconds.
    QuotaExceeded(u64),
    /// The shared store could not decide and `on_store_error: deny`.
    StoreUnavailable,
}

impl Refusal {
    /// The reason, for logs, metrics and `trace`.
    pub fn label(self) -> &'static str {
        match self {
            Self::RateExceeded(_) => "rate_limited",
            Self::QuotaExceeded(_) => "quota_exceeded",
            Self::StoreUnavailable => "rate_limit_store_unavailable",
        }
    }

    /// 429 with `Retry-After`, or 503 when the store could not decide.
    pub fn problem(self) -> Problem {
        let (problem, wait) = match self {
            Self::RateExceeded(wait) => (
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Too many requests",
                    format!("the request rate for this client is exceeded; retry after {wait} s"),
                ),
                wait,
            ),
            Self::QuotaExceeded(wait) => (
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota-exceeded",
                    "Quota exceeded",
                    format!("the request quota for this client is spent; it renews in {wait} s"),
                ),
                wait,
            ),
            Self::StoreUnavailable => (
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "rate-limit-unavailable",
                    "Rate limit unavailable",
                    "the request budget cannot be checked right now; retry shortly",
                ),
                1,
            ),
        };
        problem.with_header(RETRY_AFTER, HeaderValue::from(wait))
    }
}

/// Whole seconds, rounded up, at least 1: what `Retry-After` says.
fn seconds_up(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl Blame for Refusal {
    fn fault(self) -> Fault {
        if self == Refusal::StoreUnavailable {
            Fault::Gateway
        } else {
            Fault::Policy
        }
    }
}

impl PolicyKind for RateLimit {
    type Config = RateLimitConfig;
    type Refusal = Refusal;

    /// Compiles the key and the budget, and opens (without connecting) the store.
    ///
    /// # Errors
    /// Every problem found, each at its field.
    fn compile(cfg: &RateLimitConfig, cx: &mut CompileContext) -> Result<Self, Invalid> {
        let mark = cx.mark();
        let key = key_parts(cfg, cx);
        let budget = match (cfg.rate, cfg.quota, &cfg.burst) {
            (Some(rate), None, burst) => {
                let burst = burst.as_ref().map_or(u64::from(rate.count.get()), |b| u64::from(b.value));
                if burst == 0 {
                    let at = cfg.burst.as_ref().map_or(cx.at(), |b| b.referenced);
                    cx.field_error_at(at, "burst", "a burst of 0 allows nothing; give 1 or more");
                }
                Some(Budget::Rate(Gcra::new(u64::from(rate.count.get()), rate.per, burst)))
            }
            (None, Some(quota), None) => Some(Budget::Quota { limit: quota.limit.get(), period: quota.period }),
            (None, Some(_), Some(b)) => {
                cx.field_error_at(b.referenced, "burst", "`burst` belongs to `rate`; a quota has none");
                None
            }
            (Some(_), Some(_), _) => {
                cx.field_error("quota", "give `rate` or `quota`, not both")
                    .hint("write two rate_limit policies to have both");
                None
            }
            (None, None, _) => {
                cx.field_error("rate", "give `rate` (like 100/s) or `quota` (like 10000/day)");
                None
            }
        };
        let store = budget.and_then(|budget| store(cfg, budget, cx));
        cx.valid_since(mark)?;
        let (Some(budget), Some(store)) = (budget, store) else { return Err(Invalid) };
        let name_field = structured_string(cx.name());
        let (quota, window) = match budget {
            Budget::Rate(gcra) => (gcra.burst, seconds_up(gcra.window())),
            Budget::Quota { limit, period } => (limit, period.seconds()),
        };
        let policy_field = HeaderValue::try_from(format!("{name_field};q={quota};w={window}")).map_err(|_| Invalid)?;
        Ok(Self { key, budget, store, policy_field, name_field })
    }

    /// Whether the key reads token claims (a `jwt` policy must run before it).
    fn reads_claims(&self) -> bool {
        self.key.iter().any(|part| matches!(part, KeyPart::Claim(_)))
    }

    async fn check(&self, parts: &mut Parts, cx: &mut RequestContext<'_>) -> Decision<Refusal> {
        self.spend(parts, cx).await.into()
    }

    /// Adds `RateLimit` and `RateLimit-Policy` when this policy holds the tightest budget.
    fn on_response(&self, cx: &RequestContext<'_>, headers: &mut HeaderMap) {
        let Some(state) = cx.rate_limit else { return };
        if state.policy != self as *const Self as usize || headers.contains_key(&RATELIMIT) {
            return;
        }
        // Rendered on the stack: one allocation, the value's own.
        let mut field = Field::default();
        let rendered = (|| {
            field.push(self.name_field.as_bytes())?;
            field.push(b";r=")?;
            field.push_u64(state.remaining)?;
            field.push(b";t=")?;
            field.push_u64(state.reset)
        })();
        if rendered.is_none() {
            return;
        }
        if let Ok(value) = HeaderValue::from_bytes(field.as_bytes()) {
            headers.insert(RATELIMIT.clone(), value);
            headers.insert(RATELIMIT_POLICY.clone(), self.policy_field.clone());
        }
    }
}

impl RateLimit {
    /// Spends one request of the key's budget; records what is left for the response.
    ///
    /// # Errors
    /// The budget is spent, or the shared store could not decide and `on_store_error: deny`.
    pub async fn spend(&self, parts: &Parts, cx: &mut RequestContext<'_>) -> Result<(), Refusal> {
        let spend = match &self.store {
            Store::Memory { hasher, state } => {
                let mut h = hasher.build_hasher();
                self.each_key_part(parts, cx, |bytes| h.write(bytes));
                let key = h.finish();
                match (state, self.budget) {
                    (Memory::Rate(tats), Budget::Rate(gcra)) => {
                        let now = nanos(Instant::now());
                        tats.try_with(key, now, |tat| gcra.spend(&mut tat.0, now)).unwrap_or(NO_ROOM)
                    }
                    (Memory::Quota(counts), Budget::Quota { limit, period }) => {
                        let (window, end) = period.window(cx.now);
                        let reset = Duration::from_secs(end.saturating_sub(cx.now));
                        counts.try_with(key, window, |count| count_one(count, window, limit, reset)).unwrap_or(NO_ROOM)
                    }
                    _ => unreachable!("the memory state is made for the budget"),
                }
            }
            Store::Redis { store, prefix, on_error } => {
                let mut digest = Sha256::new();
                self.each_key_part(parts, cx, |bytes| digest.update(bytes));
                let mut key = prefix.clone();
                for byte in &digest.finalize()[..16] {
                    key.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
                    key.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
                }
                let decided = match self.budget {
                    Budget::Rate(gcra) => store.rate(&key, gcra).await,
                    Budget::Quota { limit, period } => {
                        let (window, end) = period.window(cx.now);
                        key.push_str(&format!(":{window}"));
                        store.quota(&key, limit, end, cx.now).await
                    }
                };
                match (decided, on_error) {
                    (Ok(spend), _) => spend,
                    (Err(_), OnStoreError::Allow) => return Ok(()),
                    (Err(_), OnStoreError::Deny) => return Err(Refusal::StoreUnavailable),
                }
            }
        };
        let me = self as *const Self as usize;
        let (state, refusal) = match spend {
            Spend::Allowed { remaining, reset } => {
                (RateLimitState { policy: me, remaining, reset: seconds_up(reset) }, None)
            }
            Spend::Refused { retry_after } => {
                let wait = seconds_up(retry_after);
                let refusal = match self.budget {
                    Budget::Rate(_) => Refusal::RateExceeded(wait),
                    Budget::Quota { .. } => Refusal::QuotaExceeded(wait),
                };
                (RateLimitState { policy: me, remaining: 0, reset: wait }, Some(refusal))
            }
        };
        if cx.rate_limit.is_none_or(|tightest| state.remaining < tightest.remaining) {
            cx.rate_limit = Some(state);
        }
        refusal.map_or(Ok(()), Err)
    }

    /// Feeds each key part to `feed`, each tagged and length-prefixed so that no two keys
    /// spell the same bytes.
    fn each_key_part(&self, parts: &Parts, cx: &RequestContext<'_>, mut feed: impl FnMut(&[u8])) {
        let mut part = |tag: u8, bytes: &[u8]| {
            feed(&[tag]);
            feed(&(bytes.len() as u64).to_le_bytes());
            feed(bytes);
        };
        for key in &self.key {
            match key {
                KeyPart::ClientIp { v6_mask } => match cx.client_ip {
                    IpAddr::V4(ip) => part(4, &ip.octets()),
                    IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                        Some(v4) => part(4, &v4.octets()),
                        None => part(6, &(u128::from(ip) & v6_mask).to_be_bytes()),
                    },
                },
                KeyPart::Claim(path) => match cx.claims.as_deref().and_then(|c| path.find(c)) {
                    Some(Value::String(s)) => part(b's', s.as_bytes()),
                    Some(other) => part(b'j', other.to_string().as_bytes()),
                    None => part(b'-', &[]),
                },
                KeyPart::Header(name) => {
                    let mut values = parts.headers.get_all(name).iter();
                    match values.next() {
                        None => part(b'-', &[]),
                        Some(first) => {
                            part(b'h', first.as_bytes());
                            // Every value counts: a repeated header is another key, not a bypass.
                            for more in values {
                                part(b'+', more.as_bytes());
                            }
                        }
                    }
                }
                KeyPart::ClientCert => match &cx.conn.client_cert {
                    Some(cert) => part(b'c', cert.thumbprint_sha256.as_bytes()),
                    None => part(b'-', &[]),
                },
                KeyPart::Route => part(b'r', cx.route.as_bytes()),
                KeyPart::Subscription => match &cx.subscription {
                    Some(subscription) => part(b'k', subscription.id.as_bytes()),
                    None => part(b'-', &[]),
                },
            }
        }
    }
}

/// A short field value built on the stack.
struct Field {
    bytes: [u8; 128],
    len: usize,
}

impl Default for Field {
    fn default() -> Self {
        Self { bytes: [0; 128], len: 0 }
    }
}

impl Field {
    /// Appends `piece`; `None` when it does not fit.
    fn push(&mut self, piece: &[u8]) -> Option<()> {
        self.bytes.get_mut(self.len..self.len + piece.len())?.copy_from_slice(piece);
        self.len += piece.len();
        Some(())
    }

    /// Appends `n` in decimal.
    fn push_u64(&mut self, mut n: u64) -> Option<()> {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[at..])
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Counts one request in `window` of a quota of `limit`.
fn count_one(count: &mut Count, window: u64, limit: u64, reset: Duration) -> Spend {
    if count.window != window {
        *count = Count { window, count: 0 };
    }
    if count.count >= limit {
        return Spend::Refused { retry_after: reset };
    }
    count.count += 1;
    Spend::Allowed { remaining: limit - count.count, reset }
}

/// `"name"` as an RFC 8941 string: printable ASCII, `"` and `\` escaped; a name longer than
/// 64 characters is cut.
fn structured_string(name: &str) -> String {
    let mut out = String::from("\"");
    for c in name.chars().take(64) {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
    out
}

/// The mask of `ipv6_prefix` (1 to 128, default 64).
fn ipv6_mask(cfg: &RateLimitConfig, cx: &mut CompileContext) -> u128 {
    let prefix = match &cfg.ipv6_prefix {
        Some(p) if (1..=128).contains(&p.value) => p.value,
        Some(p) => {
            cx.field_error_at(p.referenced, "ipv6_prefix", format!("{} is not a prefix length from 1 to 128", p.value))
                .hint("64 keys each /64 network (the default); 128 keys every address");
            DEFAULT_IPV6_PREFIX
        }
        None => DEFAULT_IPV6_PREFIX,
    };
    u128::MAX << (128 - u32::from(prefix))
}

fn key_parts(cfg: &RateLimitConfig, cx: &mut CompileContext) -> Vec<KeyPart> {
    let at = cfg.key.referenced;
    let texts: Vec<&str> = match &cfg.key.value {
        KeyList::One(text) => vec![text],
        KeyList::Many(list) => list.iter().map(String::as_str).collect(),
    };
    if texts.is_empty() {
        cx.field_error_at(at, "key", "name at least one key part");
    }
    let mut parts = Vec::new();
    for text in texts {
        let part = match text.split_once(':') {
            None if text == "client_ip" => Some(KeyPart::ClientIp { v6_mask: ipv6_mask(cfg, cx) }),
            None if text == "client_cert" => Some(KeyPart::ClientCert),
            None if text == "route" => Some(KeyPart::Route),
            None if text == "subscription" => Some(KeyPart::Subscription),
            Some(("claim", name)) if !name.is_empty() => Some(KeyPart::Claim(ClaimPath::new(name))),
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes()).ok().map(KeyPart::Header),
            _ => None,
        };
        match part {
            Some(part) => parts.push(part),
            None => {
                cx.field_error_at(at, "key", format!("unknown key part {text:?}"))
                    .hint("key parts are client_ip, claim:NAME, header:NAME, client_cert, route and subscription");
            }
        }
    }
    parts
}

fn store(cfg: &RateLimitConfig, budget: Budget, cx: &mut CompileContext) -> Option<Store> {
    let url = match &cfg.store {
        None => None,
        Some(spanned) => match cx.value(&spanned.value) {
            Ok(text) if text == "memory" => None,
            Ok(text) if text.starts_with("redis://") || text.starts_with("rediss://") => Some(text),
            Ok(_) => {
                cx.field_error_at(spanned.referenced, "store", "the store is `memory` or a redis:// or rediss:// URL");
                return None;
            }
            Err(e) => {
                cx.field_error_at(spanned.referenced, "store", e.to_string());
                return None;
            }
        },
    };
    let Some(url) = url else {
        for (set, field) in [
            (cfg.on_store_error.is_some(), "on_store_error"),
            (cfg.timeout.is_some(), "timeout"),
            (cfg.trusted_cas.is_some(), "trusted_cas"),
        ] {
            if set {
                cx.field_error(field, format!("`{field}` is for a redis:// store; this one is in memory"));
            }
        }
        let capacity = cfg.capacity.unwrap_or(DEFAULT_CAPACITY);
        let state = match budget {
            Budget::Rate(gcra) => Memory::Rate(ShardedMap::keeping_spent(capacity, gcra.spent_at())),
            Budget::Quota { limit, .. } => Memory::Quota(ShardedMap::keeping_spent(capacity, limit)),
        };
        return Some(Store::Memory { hasher: RandomState::new(), state });
    };
    if cfg.capacity.is_some() {
        cx.field_error("capacity", "`capacity` bounds the memory store; Redis bounds its own memory");
    }
    let roots = match &cfg.trusted_cas {
        Some(file) => match cx.read(&file.value) {
            Ok(pem) => Some(pem.to_vec()),
            Err(e) => {
                cx.field_error_at(file.referenced, "trusted_cas", format!("cannot read {}: {e}", file.value));
                return None;
            }
        },
        None => None,
    };
    let timeout = cfg.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
    let name = cx.name().to_owned();
    match RedisStore::open(&url, roots, timeout, &name) {
        Ok(store) => Some(Store::Redis {
            store: Box::new(store),
            prefix: format!("portcullis:{name}:"),
            on_error: cfg.on_store_error.unwrap_or_default(),
        }),
        Err(e) => {
            // The URL may hold a password: name the kind of error only.
            cx.field_error("store", format!("not a usable Redis URL ({:?})", e.kind()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use http::Request;

    use super::*;
    use crate::policy::context::Params;
    use crate::request::conn::ConnInfo;

    fn policy(yaml: &str) -> Result<RateLimit, String> {
        let cfg: RateLimitConfig = serde_saphyr::from_str(yaml).unwrap();
        let mut cx = CompileContext::standalone(std::path::Path::new("."), "per-client");
        let compiled = RateLimit::compile(&cfg, &mut cx);
        match cx.finish() {
            Ok(_) => Ok(compiled.unwrap()),
            Err(errors) => Err(errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("\n")),
        }
    }

    /// A request from `ip` on `route` with these headers; `sub` as the verified token's subject.
    struct Call<'a> {
        ip: &'a str,
        route: &'a str,
        headers: &'a [(&'a str, &'a str)],
        sub: Option<&'a str>,
        cert: Option<&'a str>,
    }

    const FROM_A: Call<'static> = Call { ip: "192.0.2.1", route: "api", headers: &[], sub: None, cert: None };

    async fn run(limit: &RateLimit, call: &Call<'_>, now: u64) -> (Result<(), Refusal>, HeaderMap) {
        let client_cert = call.cert.map(|thumbprint| {
            Arc::new(crate::tls::ClientCertInfo { thumbprint_sha256: thumbprint.into(), ..Default::default() })
        });
        let ip: std::net::IpAddr = call.ip.parse().unwrap();
        let conn = ConnInfo {
            listener: "public".into(),
            peer: SocketAddr::new(ip, 1),
            tls_version: None,
            sni: None,
            client_cert,
        };
        let mut req = Request::builder();
        for (name, value) in call.headers {
            req = req.header(*name, *value);
        }
        let (parts, ()) = req.body(()).unwrap().into_parts();
        let params = Params::new();
        let mut cx = RequestContext::new("id", ip, &conn, call.route, "/", &params, now);
        cx.claims = call.sub.map(|sub| Arc::new(serde_json::json!({ "sub": sub }).as_object().unwrap().clone()));
        let decided = limit.spend(&parts, &mut cx).await;
        let mut headers = HeaderMap::new();
        limit.on_response(&cx, &mut headers);
        (decided, headers)
    }

    const NOW: u64 = 1_796_576_400; // 2026-12-06T17:00:00Z

    #[tokio::test]
    async fn a_rate_allows_its_burst_then_refuses_with_the_ietf_fields() {
        let limit = policy("{ key: client_ip, rate: 2/min, burst: 3 }").unwrap();
        for left in [2, 1, 0] {
            let (decided, headers) = run(&limit, &FROM_A, NOW).await;
            assert_eq!(decided, Ok(()));
            assert_eq!(headers["ratelimit-policy"], "\"per-client\";q=3;w=90");
            assert!(headers["ratelimit"].to_str().unwrap().starts_with(&format!("\"per-client\";r={left};t=")));
        }
        let (decided, headers) = run(&limit, &FROM_A, NOW).await;
        assert_eq!(decided, Err(Refusal::RateExceeded(30)));
        assert_eq!(headers["ratelimit"], "\"per-client\";r=0;t=30");
        let problem = Refusal::RateExceeded(30).problem();
        assert_eq!((problem.status.as_u16(), problem.kind), (429, "rate-limited"));
        assert_eq!(problem.headers, vec![(RETRY_AFTER, HeaderValue::from(30u64))]);
        let mapped = Call { ip: "::ffff:192.0.2.1", ..FROM_A };
        assert!(run(&limit, &mapped, NOW).await.0.is_err(), "an IPv4-mapped address is the same client");
        assert!(run(&limit, &Call { ip: "192.0.2.2", ..FROM_A }, NOW).await.0.is_ok(), "another client");
    }

    /// The holder of one /64 has 2^64 addresses: each must not buy a fresh budget.
    #[tokio::test]
    async fn ipv6_clients_are_keyed_by_their_network() {
        let limit = policy("{ key: client_ip, rate: 1/min, burst: 1 }").unwrap();
        assert!(run(&limit, &Call { ip: "2001:db8:1:2::1", ..FROM_A }, NOW).await.0.is_ok());
        for other in ["2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff"] {
            assert!(run(&limit, &Call { ip: other, ..FROM_A }, NOW).await.0.is_err(), "{other} is the same /64");
        }
        assert!(run(&limit, &Call { ip: "2001:db8:1:3::1", ..FROM_A }, NOW).await.0.is_ok(), "another /64");
        let per_address = policy("{ key: client_ip, rate: 1/min, burst: 1, ipv6_prefix: 128 }").unwrap();
        assert!(run(&per_address, &Call { ip: "2001:db8::1", ..FROM_A }, NOW).await.0.is_ok());
        assert!(run(&per_address, &Call { ip: "2001:db8::2", ..FROM_A }, NOW).await.0.is_ok());
        let per_48 = policy("{ key: client_ip, rate: 1/min, burst: 1, ipv6_prefix: 48 }").unwrap();
        assert!(run(&per_48, &Call { ip: "2001:db8:1:2::1", ..FROM_A }, NOW).await.0.is_ok());
        assert!(run(&per_48, &Call { ip: "2001:db8:1:9::1", ..FROM_A }, NOW).await.0.is_err());
        for bad in ["0", "129"] {
            let err = policy(&format!("{{ key: client_ip, rate: 1/s, ipv6_prefix: {bad} }}")).unwrap_err();
            assert!(err.contains("is not a prefix length from 1 to 128"), "{err}");
        }
    }

    /// A flood of distinct keys must not make the store forget a victim's spent budget.
    #[tokio::test]
    async fn a_flood_of_keys_never_resets_a_spent_budget() {
        let limit = policy("{ key: \"header:X-Key\", rate: 1/min, burst: 1, capacity: 64 }").unwrap();
        let victim = Call { headers: &[("x-key", "victim")], ..FROM_A };
        assert!(run(&limit, &victim, NOW).await.0.is_ok());
        assert!(run(&limit, &victim, NOW).await.0.is_err());
        for i in 0..5_000 {
            let key = format!("flood-{i}");
            let _ = run(&limit, &Call { headers: &[("x-key", &key)], ..FROM_A }, NOW).await;
        }
        assert!(run(&limit, &victim, NOW).await.0.is_err(), "the victim's budget stays spent");
        let quota = policy("{ key: \"header:X-Key\", quota: 1/day, capacity: 64 }").unwrap();
        assert!(run(&quota, &victim, NOW).await.0.is_ok());
        for i in 0..5_000 {
            let key = format!("flood-{i}");
            let _ = run(&quota, &Call { headers: &[("x-key", &key)], ..FROM_A }, NOW).await;
        }
        assert!(run(&quota, &victim, NOW).await.0.is_err(), "the victim's quota stays spent");
    }

    #[tokio::test]
    async fn a_quota_renews_with_its_calendar_period() {
        let limit = policy("{ key: \"claim:sub\", quota: 2/day }").unwrap();
        let alice = Call { sub: Some("alice"), ..FROM_A };
        assert!(run(&limit, &alice, NOW).await.0.is_ok());
        let (decided, headers) = run(&limit, &alice, NOW).await;
        assert_eq!(decided, Ok(()));
        assert_eq!(headers["ratelimit"], "\"per-client\";r=0;t=25200", "seven hours to midnight UTC");
        assert_eq!(headers["ratelimit-policy"], "\"per-client\";q=2;w=86400");
        assert_eq!(run(&limit, &alice, NOW).await.0, Err(Refusal::QuotaExceeded(25_200)));
        assert!(run(&limit, &Call { sub: Some("bob"), ..FROM_A }, NOW).await.0.is_ok(), "bob's own quota");
        assert!(run(&limit, &alice, NOW + 25_200).await.0.is_ok(), "a new day");
    }

    #[tokio::test]
    async fn every_key_part_separates_budgets_and_missing_parts_share_one() {
        let limit = policy("{ key: [route, \"header:X-Api-Key\", client_cert], rate: 1/h }").unwrap();
        let key = |k: &'static str| [("x-api-key", k)];
        let (one, two) = (key("k1"), key("k2"));
        let base = Call { headers: &one, cert: Some("AA"), ..FROM_A };
        assert!(run(&limit, &base, NOW).await.0.is_ok());
        assert!(run(&limit, &base, NOW).await.0.is_err());
        assert!(run(&limit, &Call { headers: &two, ..base }, NOW).await.0.is_ok(), "another header value");
        assert!(run(&limit, &Call { route: "other", ..base }, NOW).await.0.is_ok(), "another route");
        assert!(run(&limit, &Call { cert: Some("BB"), ..base }, NOW).await.0.is_ok(), "another certificate");
        assert!(run(&limit, &Call { ip: "198.51.100.9", ..base }, NOW).await.0.is_err(), "the address is no part");
        let repeated = [("x-api-key", "k1"), ("x-api-key", "k1")];
        assert!(
            run(&limit, &Call { headers: &repeated, ..base }, NOW).await.0.is_ok(),
            "a repeated header is another key"
        );
        let bare = Call { cert: None, ..FROM_A };
        assert!(run(&limit, &bare, NOW).await.0.is_ok());
        assert!(run(&limit, &bare, NOW).await.0.is_err(), "callers without the parts share one budget");
    }

    #[test]
    fn mistakes_are_reported() {
        for (yaml, expected) in [
            ("{ key: client_ip }", "give `rate` (like 100/s) or `quota`"),
            ("{ key: client_ip, rate: 1/s, quota: 5/day }", "give `rate` or `quota`, not both"),
            ("{ key: client_ip, quota: 5/day, burst: 3 }", "`burst` belongs to `rate`"),
            ("{ key: [client_ip, ip], rate: 1/s }", "unknown key part \"ip\""),
            ("{ key: \"header:bad header\", rate: 1/s }", "unknown key part"),
            ("{ key: client_ip, rate: 1/s, burst: 0 }", "a burst of 0 allows nothing"),
            ("{ key: client_ip, rate: 1/s, store: memcached://x }", "the store is `memory` or a redis://"),
            ("{ key: client_ip, rate: 1/s, on_store_error: deny }", "`on_store_error` is for a redis:// store"),
        ] {
            let err = policy(yaml).err().unwrap_or_default();
            assert!(err.contains(expected), "{yaml}: {err}");
        }
        assert!(policy("{ key: client_ip, rate: 1/s, store: \"redis://127.0.0.1:1\", on_store_error: deny }").is_ok());
    }
}
