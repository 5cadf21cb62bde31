//! `subscription_key`: APIM's subscription keys (README: Subscription keys). The caller sends
//! its key in `Ocp-Apim-Subscription-Key` or `?subscription-key=` (names settable, as APIM's
//! `subscriptionKeyParameterNames`); the key must belong to an active subscription whose scope
//! opens the route. The check reads the issuer store's keys from memory ([`Keyring`]); the
//! key never reaches the backend, and the subscription is known to later policies
//! (`rate_limit` key `subscription`) and, when asked, to the backend in a header.
//!
//! Guessing costs the guesser: unknown keys are counted per client network (an IPv4 address
//! or an IPv6 /64), and a network that spent its budget gets 429 before any lookup.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::request::Parts;
use http::{StatusCode, Uri};
use serde::Deserialize;

use super::context::RequestContext;
use super::kind::{Blame, Decision, PolicyKind};
use crate::config::context::{CompileContext, Invalid};
use crate::config::values::{ConfigDuration, Rate};
use crate::limit::KeyedLimiter;
use crate::problem::Problem;
use crate::store::MAX_SECRET_BYTES;
use crate::subscription::{Keyring, Lookup, Products, Scope, State};
use crate::telemetry::metrics::Fault;

/// APIM's header for subscription keys.
pub const DEFAULT_HEADER: &str = "ocp-apim-subscription-key";
/// APIM's query parameter for subscription keys.
pub const DEFAULT_QUERY: &str = "subscription-key";

/// The `subscription_key` policy as written in YAML.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionKeyConfig {
    /// The header the key is read from (default `Ocp-Apim-Subscription-Key`).
    pub header: Option<String>,
    /// The query parameter the key is read from (default `subscription-key`).
    pub query: Option<String>,
    /// A request header set to the subscription's id for the backend.
    pub forward_header: Option<String>,
    /// Unknown keys allowed per client network before 429 (default 30 a minute).
    pub failures_per_network: Option<Rate>,
    /// How long keys are still checked when the store cannot be read (default 5m); past
    /// that, 503.
    pub stale_after: Option<ConfigDuration>,
}

/// The compiled policy.
pub struct SubscriptionKey {
    header: HeaderName,
    query: String,
    forward_header: Option<HeaderName>,
    keyring: Arc<Keyring>,
    products: Arc<Products>,
    failures: KeyedLimiter<IpAddr>,
    stale_after: i64,
}

impl std::fmt::Debug for SubscriptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionKey")
            .field("header", &self.header)
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

/// Why a request was refused; the statuses are APIM's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No key in the header nor the query (401).
    Missing,
    /// The key was given more than once: two headers, two parameters, or both (401).
    Ambiguous,
    /// No subscription has this key (401).
    Invalid,
    /// The subscription is suspended, cancelled or expired (401).
    Inactive(State),
    /// The subscription's scope does not open this route (401).
    OutOfScope,
    /// Too many unknown keys from this network: retry after this many seconds (429).
    Guessing(u64),
    /// The store's keys are not known or too old to be trusted (503).
    Unavailable,
}

/// APIM's detail for a missing key.
const MISSING: &str = "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.";
/// APIM's detail for a key it does not accept here.
const INVALID: &str =
    "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.";

impl Refusal {
    /// The reason, for logs, metrics and `trace`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "subscription_key_missing",
            Self::Ambiguous => "subscription_key_ambiguous",
            Self::Invalid => "subscription_key_invalid",
            Self::Inactive(State::Suspended) => "subscription_suspended",
            Self::Inactive(State::Cancelled) => "subscription_cancelled",
            Self::Inactive(_) => "subscription_expired",
            Self::OutOfScope => "subscription_out_of_scope",
            Self::Guessing(_) => "subscription_key_guessing",
            Self::Unavailable => "subscriptions_unavailable",
        }
    }

    /// 401 as APIM answers (with its wording), 429 with `Retry-After`, or 503.
    pub fn problem(self) -> Problem {
        let unauthorized =
            |kind, title, detail: &'static str| Problem::new(StatusCode::UNAUTHORIZED, kind, title, detail);
        match self {
            Self::Missing => unauthorized("subscription-key-missing", "Subscription key missing", MISSING),
            Self::Ambiguous => unauthorized(
                "subscription-key-ambiguous",
                "Subscription key given twice",
                "send the subscription key once: in the header or in the query, not both",
            ),
            Self::Invalid => unauthorized("subscription-key-invalid", "Invalid subscription key", INVALID),
            Self::Inactive(State::Suspended) => {
                unauthorized("subscription-suspended", "Subscription suspended", INVALID)
            }
            Self::Inactive(State::Cancelled) => {
                unauthorized("subscription-cancelled", "Subscription cancelled", INVALID)
            }
            Self::Inactive(_) => unauthorized("subscription-expired", "Subscription expired", INVALID),
            Self::OutOfScope => unauthorized(
                "subscription-out-of-scope",
                "Subscription not valid for this API",
                "Access denied due to invalid subscription key. The subscription does not include this API.",
            ),
            Self::Guessing(wait) => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "subscription-key-guessing",
                "Too many invalid subscription keys",
                format!("too many invalid subscription keys from this network; retry after {wait} s"),
            )
            .with_header(RETRY_AFTER, HeaderValue::from(wait)),
            Self::Unavailable => Problem::service_unavailable("subscription keys cannot be checked right now"),
        }
    }
}

impl Blame for Refusal {
    fn fault(self) -> Fault {
        match self {
            Self::Unavailable => Fault::Gateway,
            _ => Fault::Policy,
        }
    }
}

impl PolicyKind for SubscriptionKey {
    type Config = SubscriptionKeyConfig;
    type Refusal = Refusal;

    /// # Errors
    /// No `identity` section (the subscriptions live in its store), a malformed header name.
    fn compile(cfg: &SubscriptionKeyConfig, cx: &mut CompileContext) -> Result<Self, Invalid> {
        let mark = cx.mark();
        let header_name =
            |cx: &mut CompileContext, field: &str, text: &str| match HeaderName::from_bytes(text.as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    cx.field_error(field, format!("{text:?} is not a header name"));
                    None
                }
            };
        let header = header_name(cx, "header", cfg.header.as_deref().unwrap_or(DEFAULT_HEADER));
        let forward_header = cfg.forward_header.as_deref().and_then(|h| header_name(cx, "forward_header", h));
        let query = cfg.query.clone().unwrap_or_else(|| DEFAULT_QUERY.to_owned());
        if query.is_empty() {
            cx.field_error("query", "name the query parameter, like subscription-key");
        }
        let keyring = match &cx.issuer {
            Some(issuer) => Some(issuer.keyring.clone()),
            None => {
                if !cx.identity_declared {
                    cx.field_error(
                        "subscription_key",
                        "subscriptions live in the token issuer's store: add an `identity` section",
                    )
                    .hint("`portcullis subscriptions create` then makes keys in that store");
                }
                None
            }
        };
        cx.valid_since(mark)?;
        let (Some(header), Some(keyring)) = (header, keyring) else { return Err(Invalid) };
        crate::redact::credential_source(Some(&query), Some(&header));
        let failures_per_network = cfg
            .failures_per_network
            .unwrap_or(Rate { count: std::num::NonZeroU32::new(30).expect("non-zero"), per: Duration::from_secs(60) });
        Ok(Self {
            header,
            query,
            forward_header,
            keyring,
            products: cx.products.clone(),
            failures: KeyedLimiter::new(failures_per_network),
            stale_after: cfg.stale_after.map_or(300, |d| d.0.as_secs()).try_into().unwrap_or(i64::MAX),
        })
    }

    async fn check(&self, parts: &mut Parts, cx: &mut RequestContext<'_>) -> Decision<Refusal> {
        self.check_key(parts, cx, Instant::now()).into()
    }

    fn forwarded_headers(&self) -> Vec<&HeaderName> {
        self.forward_header.iter().collect()
    }

    /// Ready once the store's keys were read.
    fn is_ready(&self) -> bool {
        self.keyring.is_loaded()
    }
}

impl SubscriptionKey {
    /// The configuration's products, as the policy opens them.
    pub fn products(&self) -> &Products {
        &self.products
    }

    /// Checks the request's key at `now`; on success removes it from the request and leaves
    /// the subscription in `cx`.
    fn check_key(&self, parts: &mut Parts, cx: &mut RequestContext<'_>, now: Instant) -> Result<(), Refusal> {
        let network = crate::ipset::source_network(cx.client_ip);
        if let Err(wait) = self.failures.peek(&network, now) {
            return Err(Refusal::Guessing(wait.as_secs().max(1)));
        }
        let key = self.presented_key(parts)?;
        let unix_now = i64::try_from(cx.now).unwrap_or(i64::MAX);
        let known = if key.len() > MAX_SECRET_BYTES {
            Lookup::Unknown
        } else {
            self.keyring.find(&key, unix_now, self.stale_after)
        };
        let subscription = match known {
            Lookup::Known(subscription, _) => subscription,
            Lookup::Unknown => {
                let _ = self.failures.check(&network, now);
                return Err(Refusal::Invalid);
            }
            Lookup::Stale => return Err(Refusal::Unavailable),
        };
        match subscription.state_at(unix_now) {
            State::Active => {}
            inactive => return Err(Refusal::Inactive(inactive)),
        }
        if !opens(&subscription.scope, cx.route, &self.products) {
            return Err(Refusal::OutOfScope);
        }
        self.remove_key(parts);
        if let Some(name) = &self.forward_header {
            if let Ok(value) = HeaderValue::from_str(&subscription.id) {
                parts.headers.insert(name.clone(), value);
            }
        }
        cx.subscription = Some(subscription);
        Ok(())
    }

    /// The one key the request carries, from the header or the query.
    fn presented_key<'p>(&self, parts: &'p Parts) -> Result<Cow<'p, str>, Refusal> {
        let mut found: Option<Cow<'p, str>> = None;
        let mut count = 0;
        for value in parts.headers.get_all(&self.header).iter() {
            count += 1;
            found = Some(Cow::Borrowed(value.to_str().map_err(|_| Refusal::Invalid)?));
        }
        if let Some(query) = parts.uri.query() {
            for value in self.query_values(query) {
                count += 1;
                found = Some(Cow::Owned(value));
            }
        }
        match (count, found) {
            (1, Some(key)) if !key.trim().is_empty() => Ok(match key {
                Cow::Borrowed(k) => Cow::Borrowed(k.trim()),
                Cow::Owned(k) => Cow::Owned(k.trim().to_owned()),
            }),
            (0 | 1, _) => Err(Refusal::Missing),
            _ => Err(Refusal::Ambiguous),
        }
    }

    /// The values of the key parameter in `query` (names and values form-decoded).
    fn query_values<'q>(&'q self, query: &'q str) -> impl Iterator<Item = String> + 'q {
        query
            .split('&')
            .filter_map(|pair| form_urlencoded::parse(pair.as_bytes()).next())
            .filter(|(name, _)| name == self.query.as_str())
            .map(|(_, value)| value.into_owned())
    }

    /// Removes the key's header and query parameters from the request, keeping the other
    /// parameters as they were spelled.
    fn remove_key(&self, parts: &mut Parts) {
        parts.headers.remove(&self.header);
        let Some(query) = parts.uri.query() else { return };
        let is_key =
            |pair: &str| form_urlencoded::parse(pair.as_bytes()).next().is_some_and(|(n, _)| n == self.query.as_str());
        if !query.split('&').any(is_key) {
            return;
        }
        let kept: Vec<&str> = query.split('&').filter(|pair| !is_key(pair)).collect();
        let path_and_query = match kept.is_empty() {
            true => parts.uri.path().to_owned(),
            false => format!("{}?{}", parts.uri.path(), kept.join("&")),
        };
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = path_and_query.parse().ok();
        if let Ok(rebuilt) = Uri::from_parts(uri) {
            parts.uri = rebuilt;
        }
    }
}

/// Whether a subscription of `scope` opens `route`.
fn opens(scope: &Scope, route: &str, products: &Products) -> bool {
    match scope {
        Scope::All => true,
        Scope::Route(r) => r == route,
        Scope::Product(p) => products.get(p).is_some_and(|routes| routes.contains(route)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::hmac;

    fn policy() -> SubscriptionKey {
        let (keyring, _uses) = Keyring::new(hmac::Key::new(hmac::HMAC_SHA256, b"k"));
        SubscriptionKey {
            header: HeaderName::from_static(DEFAULT_HEADER),
            query: DEFAULT_QUERY.to_owned(),
            forward_header: None,
            keyring: Arc::new(keyring),
            products: Arc::default(),
            failures: KeyedLimiter::new(Rate {
                count: std::num::NonZeroU32::new(1).unwrap(),
                per: Duration::from_secs(60),
            }),
            stale_after: 300,
        }
    }

    fn parts(target: &str, header: Option<&str>) -> Parts {
        let mut req = http::Request::get(target);
        if let Some(key) = header {
            req = req.header(DEFAULT_HEADER, key);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_key_is_read_once_from_the_header_or_the_query_whatever_its_spelling() {
        let p = policy();
        assert_eq!(p.presented_key(&parts("/a", Some(" k1 "))).unwrap(), "k1");
        assert_eq!(p.presented_key(&parts("/a?x=1&subscription-key=k%2B1", None)).unwrap(), "k+1");
        assert_eq!(
            p.presented_key(&parts("/a?%73ubscription-key=k2", None)).unwrap(),
            "k2",
            "an encoded name is the name"
        );
        assert_eq!(p.presented_key(&parts("/a?subscription-key=", None)).unwrap_err(), Refusal::Missing);
        assert_eq!(
            p.presented_key(&parts("/a?subscription-key=a&subscription-key=a", None)).unwrap_err(),
            Refusal::Ambiguous
        );
        assert_eq!(p.presented_key(&parts("/a?subscription-key=a", Some("a"))).unwrap_err(), Refusal::Ambiguous);
        assert_eq!(
            p.presented_key(&parts("/a?Subscription-Key=a", None)).unwrap_err(),
            Refusal::Missing,
            "names are exact"
        );
    }

    #[test]
    fn removing_the_key_keeps_every_other_parameter_as_spelled() {
        let p = policy();
        let mut with_key = parts("/a/b?x=%2F&subscription-key=k&%73ubscription-key=k&y=a+b", Some("k"));
        p.remove_key(&mut with_key);
        assert_eq!(with_key.uri.to_string(), "/a/b?x=%2F&y=a+b");
        assert!(with_key.headers.get(DEFAULT_HEADER).is_none());
        let mut only_key = parts("/a?subscription-key=k", None);
        p.remove_key(&mut only_key);
        assert_eq!(only_key.uri.to_string(), "/a");
    }

    #[test]
    fn a_scope_opens_its_product_or_route_only() {
        let products: Products = [("portal".to_owned(), ["orders".to_owned()].into())].into();
        assert!(opens(&Scope::All, "admin", &products));
        assert!(opens(&Scope::Product("portal".into()), "orders", &products));
        assert!(!opens(&Scope::Product("portal".into()), "admin", &products));
        assert!(!opens(&Scope::Product("gone".into()), "orders", &products), "a product the configuration lacks");
        assert!(opens(&Scope::Route("orders".into()), "orders", &products));
        assert!(!opens(&Scope::Route("order".into()), "orders", &products));
    }
}
