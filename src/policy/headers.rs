//! `headers`: remove, then set, request headers (before forwarding) and response headers
//! (on the way back, also on answers the gateway produced itself).

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Compiled rules for one direction.
#[derive(Clone, Debug, Default)]
pub struct HeaderEdits {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// The compiled `headers` policy.
#[derive(Clone, Debug, Default)]
pub struct HeaderRules {
    pub request: HeaderEdits,
    pub response: HeaderEdits,
}

impl HeaderRules {
    pub fn on_request(&self, headers: &mut HeaderMap) {
        self.request.apply(headers);
    }

    pub fn on_response(&self, headers: &mut HeaderMap) {
        self.response.apply(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_then_sets() {
        let rules = HeaderRules {
            request: HeaderEdits {
                remove: vec![HeaderName::from_static("x-a")],
                set: vec![(HeaderName::from_static("x-b"), HeaderValue::from_static("gw"))],
            },
            response: HeaderEdits { remove: vec![HeaderName::from_static("server")], set: vec![] },
        };
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("client"));
        rules.on_request(&mut h);
        assert!(!h.contains_key("x-a"));
        assert_eq!(h["x-b"], "gw");
        let mut r = HeaderMap::new();
        r.insert("server", HeaderValue::from_static("nginx"));
        rules.on_response(&mut r);
        assert!(r.is_empty());
    }
}
