//! What policies see of a request, and what they leave for later ones and the log.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderValue, Method};
use serde_json::Value;

use crate::request::conn::ConnInfo;

/// Values captured by a route's `{param}` segments, in template order.
pub type Params = Vec<(Arc<str>, String)>;

/// Verified token claims.
pub type Claims = serde_json::Map<String, serde_json::Value>;

/// A claim name, or a dotted path into nested objects.
#[derive(Debug)]
pub struct ClaimPath {
    whole: String,
    segments: Vec<String>,
}

impl ClaimPath {
    /// The path of `text`: split at dots, kept whole too.
    pub fn new(text: &str) -> Self {
        Self { whole: text.to_owned(), segments: text.split('.').map(str::to_owned).collect() }
    }

    /// The claim's value: the name as written if a claim has it (some claim names are URIs
    /// with dots), else the dotted path through nested objects.
    pub fn find<'c>(&self, claims: &'c Claims) -> Option<&'c Value> {
        if let Some(value) = claims.get(&self.whole) {
            return Some(value);
        }
        if self.segments.len() < 2 {
            return None;
        }
        let (first, rest) = self.segments.split_first()?;
        rest.iter().try_fold(claims.get(first)?, |value, segment| value.as_object()?.get(segment))
    }
}

/// The budget a response reports: the tightest of the request's `rate_limit` policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitState {
    /// Which policy reported it (its address; only compared).
    pub policy: usize,
    /// Requests that may still come at once.
    pub remaining: u64,
    /// Seconds until the budget is whole again, or the quota renews.
    pub reset: u64,
}

/// One request as the policy chain sees it.
pub struct RequestContext<'a> {
    /// The request's id.
    pub request_id: &'a str,
    /// The client address (the peer, or the one a trusted proxy vouches for).
    pub client_ip: IpAddr,
    /// The connection the request came on.
    pub conn: &'a ConnInfo,
    /// The name of the route the request took.
    pub route: &'a str,
    /// The normalized path.
    pub path: &'a str,
    /// The values of the route template's `{param}` segments.
    pub params: &'a Params,
    /// Unix seconds when the request arrived: every time check of the chain uses it.
    pub now: u64,
    /// The allowed `Origin` a CORS policy echoes on the response.
    pub cors_origin: Option<HeaderValue>,
    /// Claims of the verified token, once a `jwt` policy passed.
    pub claims: Option<Arc<Claims>>,
    /// Unix seconds past which the verified token is no longer accepted: its `exp` plus the
    /// verifying policy's clock skew (the earliest, when several `jwt` policies passed).
    pub token_valid_until: Option<u64>,
    /// Who the verified token was issued to, when the gateway's own issuer made it: a
    /// long-lived connection ends when the issuer revokes that.
    pub grant: Option<Arc<Grant>>,
    /// The subscription whose key a `subscription_key` policy accepted.
    pub subscription: Option<Arc<crate::subscription::Subscription>>,
    /// The tightest budget a `rate_limit` policy saw, for the `RateLimit` response headers.
    pub rate_limit: Option<RateLimitState>,
    /// The method the backend will execute when the route passes a method override; policies
    /// that decide by method decide on it.
    pub method_override: Option<Method>,
}

impl<'a> RequestContext<'a> {
    /// The method policies decide on: the override the route passes, else the request's.
    pub fn method<'m>(&'m self, request: &'m Method) -> &'m Method {
        self.method_override.as_ref().unwrap_or(request)
    }

    /// The context of one request on `route`, arriving at `now` (Unix seconds).
    pub fn new(
        request_id: &'a str,
        client_ip: IpAddr,
        conn: &'a ConnInfo,
        route: &'a str,
        path: &'a str,
        params: &'a Params,
        now: u64,
    ) -> Self {
        Self {
            request_id,
            client_ip,
            conn,
            route,
            path,
            params,
            now,
            cors_origin: None,
            claims: None,
            token_valid_until: None,
            grant: None,
            subscription: None,
            rate_limit: None,
            method_override: None,
        }
    }
}

/// Who a token of the gateway's own issuer was issued to (its `client_id`, `sub` and `iat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The external system that asked for the token.
    pub system: String,
    /// The internal user it was issued for, when the system named one.
    pub user: Option<String>,
    /// When it was issued (Unix seconds).
    pub issued_at: i64,
}

impl Grant {
    /// The grant of a token's claims: its `client_id`, its `sub` unless that is the system
    /// itself, its `iat`. None without a `client_id` or an `iat`.
    pub fn of(claims: &serde_json::Map<String, serde_json::Value>) -> Option<Self> {
        let system = claims.get("client_id")?.as_str()?;
        let user = claims.get("sub").and_then(serde_json::Value::as_str).filter(|sub| *sub != system);
        let issued_at = claims.get("iat")?.as_i64()?;
        Some(Self { system: system.to_owned(), user: user.map(str::to_owned), issued_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: serde_json::Value) -> Claims {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_grant_is_read_from_the_issuers_claims() {
        let system = Grant::of(&claims(json!({ "client_id": "s-1", "sub": "s-1", "iat": 10 }))).unwrap();
        assert_eq!(system, Grant { system: "s-1".into(), user: None, issued_at: 10 }, "the system's own token");
        let user = Grant::of(&claims(json!({ "client_id": "s-1", "sub": "u-1", "iat": 10 }))).unwrap();
        assert_eq!(user.user.as_deref(), Some("u-1"));
        assert_eq!(Grant::of(&claims(json!({ "sub": "u-1", "iat": 10 }))), None, "no client_id");
        assert_eq!(Grant::of(&claims(json!({ "client_id": "s-1", "iat": "10" }))), None, "iat not a number");
    }
}
