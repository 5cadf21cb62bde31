//! Header hygiene at the trust boundary (DESIGN §3 step 3).
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) and every header named in `Connection` apply to one
//! connection only and are never forwarded. Headers the gateway sets itself are removed from
//! what the client sent, so a client can never pose as the gateway; only a trusted proxy may
//! pass on `X-Forwarded-For` and `X-Request-Id`.

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
/// `X-Request-Id`: one request's id, end to end.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that only the gateway may set, whatever the configuration.
const ALWAYS_SPOOFABLE: [&str; 7] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "forwarded",
    "x-request-id",
];

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

    /// Removes every gateway-owned header the client sent. From a trusted proxy,
    /// `X-Forwarded-For` and `X-Request-Id` are kept.
    pub fn strip(&self, headers: &mut HeaderMap, from_trusted_proxy: bool) {
        for name in &self.names {
            if from_trusted_proxy && (name == X_FORWARDED_FOR || name == X_REQUEST_ID) {
                continue;
            }
            headers.remove(name);
        }
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
        set.strip(&mut untrusted, false);
        assert_eq!(untrusted.keys().collect::<Vec<_>>(), ["accept"]);
        let mut trusted = sent();
        set.strip(&mut trusted, true);
        assert!(trusted.contains_key("x-forwarded-for") && trusted.contains_key("x-request-id"));
        assert!(!trusted.contains_key("x-user-id") && !trusted.contains_key("x-real-ip"));
    }
}
