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
            rate_limit: None,
            method_override: None,
        }
    }
}
