//! Header hygiene at the trust boundary (README: Architecture, a request's journey).
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) and every header named in `Connection` apply to one
//! connection only and are never forwarded. Headers the gateway sets itself are removed from
//! what the client sent, so a client can never pose as the gateway; only a trusted proxy may
//! pass on its forwarding chain and `X-Request-Id`.
//!
//! Names are compared as CGI, WSGI and Rack servers read them: `X_User_Id` and `X-User_Id`
//! become the same `HTTP_X_USER_ID` as `X-User-Id`, so a client header whose name equals a
//! gateway-owned one with `_` read as `-` is removed too. Headers that make a backend execute
//! another method or path than the one the gateway checked (`X-HTTP-Method-Override`,
//! `X-Original-URL`, …) are removed unless the route passes a method override by name.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// RFC 9110 §7.6.1 and the common non-standard ones, as names ready for lookup (a `&str`
/// would be parsed again on every removal).
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// `X-Forwarded-For`: the client address chain.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the host the client asked for.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `Forwarded` (RFC 7239): the standard client address chain.
pub static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// `X-Request-Id`: one request's id, end to end.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that only the gateway may set, whatever the configuration.
pub const ALWAYS_SPOOFABLE: [&str; 7] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "forwarded",
    "x-request-id",
];

/// Headers that ask a backend to execute another method than the request's.
pub const METHOD_OVERRIDES: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// Headers that ask a backend to serve another path than the request's (IIS, Symfony, Zend).
pub const PATH_OVERRIDES: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// Whether `name` (lower-case, as `HeaderName`s are) reads as `canonical` once `_` is `-`.
fn reads_as(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len()
        && name.bytes().zip(canonical.bytes()).all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

/// Removes every header whose name reads as one `owned` accepts (exactly, or once `_` is
/// `-`), except those `kept`. One pass over the request's names: a client sends a dozen, and
/// a name of another length is passed over at once.
fn remove_reading_as(headers: &mut HeaderMap, owned: impl Fn(&str) -> bool, kept: impl Fn(&HeaderName) -> bool) {
    let doomed: Vec<HeaderName> = headers.keys().filter(|name| owned(name.as_str()) && !kept(name)).cloned().collect();
    for name in &doomed {
        headers.remove(name);
    }
}

/// Removes the method and path override headers (and their look-alikes), except `keep`
/// spelled exactly: the method override a route passes to its backend.
pub fn strip_overrides(headers: &mut HeaderMap, keep: Option<&HeaderName>) {
    let is_override = |name: &str| METHOD_OVERRIDES.iter().chain(&PATH_OVERRIDES).any(|o| reads_as(name, o));
    remove_reading_as(headers, is_override, |name| Some(name) == keep);
}

/// Removes hop-by-hop headers and those the `Connection` header names.
/// `Transfer-Encoding` is left to hyper, which frames bodies itself.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Values are shared buffers: cloning one copies no bytes, and the usual single
    // `Connection` header needs no allocation at all.
    let mut values = headers.get_all(header::CONNECTION).iter().cloned();
    let first = values.next();
    let more: Vec<HeaderValue> = values.collect();
    for value in first.iter().chain(&more) {
        for name in value.to_str().unwrap_or_default().split(',') {
            // A `&str` key is looked up without building a `HeaderName`.
            headers.remove(name.trim());
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The compiled set of headers the gateway owns: the fixed ones plus those that policies
/// write (forwarded claims, client-certificate summaries, header rules).
#[derive(Clone, Debug)]
pub struct GatewayHeaders {
    names: Vec<HeaderName>,
}

impl Default for GatewayHeaders {
    fn default() -> Self {
        Self { names: ALWAYS_SPOOFABLE.iter().map(|n| HeaderName::from_static(n)).collect() }
    }
}

impl GatewayHeaders {
    /// Adds a header that a policy sets on forwarded requests.
    pub fn insert(&mut self, name: HeaderName) {
        if !self.names.contains(&name) {
            self.names.push(name);
        }
    }

    /// Whether the gateway sets `name` (so no client can choose its value).
    pub fn owns(&self, name: &HeaderName) -> bool {
        self.names.contains(name)
    }

    /// Removes every gateway-owned header the client sent, and every header whose name reads
    /// as one of them with `_` as `-`. From a trusted proxy, `trusted_chain` (the header its
    /// forwarding chain is read from) and `X-Request-Id` are kept, spelled exactly.
    pub fn strip(&self, headers: &mut HeaderMap, trusted_chain: Option<&HeaderName>) {
        let owned = |name: &str| self.names.iter().any(|owned| reads_as(name, owned.as_str()));
        let kept = |name: &HeaderName| trusted_chain.is_some() && (Some(name) == trusted_chain || name == X_REQUEST_ID);
        remove_reading_as(headers, owned, kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn gateway_headers_are_removed_unless_from_a_trusted_proxy() {
        let mut set = GatewayHeaders::default();
        set.insert(HeaderName::from_static("x-user-id"));
        let sent = || {
            let mut h = HeaderMap::new();
            for n in ["x-forwarded-for", "x-request-id", "x-real-ip", "forwarded", "x-user-id", "accept"] {
                h.insert(HeaderName::from_static(n), "spoofed".parse().unwrap());
            }
            h
        };
        let mut untrusted = sent();
        set.strip(&mut untrusted, None);
        assert_eq!(untrusted.keys().collect::<Vec<_>>(), ["accept"]);
        let mut trusted = sent();
        set.strip(&mut trusted, Some(&X_FORWARDED_FOR));
        assert!(trusted.contains_key("x-forwarded-for") && trusted.contains_key("x-request-id"));
        assert!(!trusted.contains_key("x-user-id") && !trusted.contains_key("x-real-ip"));
        assert!(!trusted.contains_key("forwarded"), "only the configured chain header is kept");
        let mut standard = sent();
        set.strip(&mut standard, Some(&FORWARDED));
        assert!(standard.contains_key("forwarded") && !standard.contains_key("x-forwarded-for"));
    }

    /// CGI, WSGI and Rack read `X_User_Id` as `HTTP_X_USER_ID`, the header the gateway vouches for.
    #[test]
    fn look_alikes_of_gateway_headers_are_removed_even_from_trusted_proxies() {
        let mut set = GatewayHeaders::default();
        set.insert(HeaderName::from_static("x-user-id"));
        let mut h = HeaderMap::new();
        for n in [
            "x_user_id",
            "x-user_id",
            "x_forwarded_for",
            "x_request_id",
            "x_real_ip",
            "x_user_idx",
            "x_other",
            "accept_x",
        ] {
            h.insert(HeaderName::from_bytes(n.as_bytes()).unwrap(), "spoofed".parse().unwrap());
        }
        set.strip(&mut h, Some(&X_FORWARDED_FOR));
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept_x", "x_other", "x_user_idx"]);
    }

    #[test]
    fn override_headers_are_removed_unless_the_route_passes_one() {
        let sent = || {
            let mut h = HeaderMap::new();
            for n in [
                "x-http-method-override",
                "x_http_method_override",
                "x-http-method",
                "x-method-override",
                "x-original-url",
                "x_original_url",
                "x-rewrite-url",
                "accept",
            ] {
                h.insert(HeaderName::from_bytes(n.as_bytes()).unwrap(), "DELETE".parse().unwrap());
            }
            h
        };
        let mut h = sent();
        strip_overrides(&mut h, None);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["accept"]);
        let mut passed = sent();
        strip_overrides(&mut passed, Some(&HeaderName::from_static("x-http-method-override")));
        let mut left: Vec<&str> = passed.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-http-method-override"]);
    }
}
