//! `headers`: remove, then set, request headers (before forwarding) and response headers
//! (on the way back, also on answers the gateway produced itself).

use std::collections::BTreeMap;
use std::convert::Infallible;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::context::RequestContext;
use super::kind::{Decision, PolicyKind};
use crate::config::context::{CompileContext, Invalid};
use crate::config::values::{Located, ValueRef};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// The `headers` policy as written in YAML.
pub struct HeadersConfig {
    #[serde(default)]
    /// `request`: edits to the request before it is forwarded.
    pub request: HeaderRulesConfig,
    #[serde(default)]
    /// `response`: edits to every response of the route, also the gateway's own answers.
    pub response: HeaderRulesConfig,
}

/// One direction: headers to remove, then headers to set (values may be `${env:}`/`${file:}`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRulesConfig {
    #[serde(default)]
    /// `set`: header name to value (inline, `${env:NAME}` or `${file:path}`).
    pub set: BTreeMap<String, Spanned<ValueRef>>,
    #[serde(default)]
    /// `remove`: header names to remove.
    pub remove: Vec<Located>,
}

/// Compiled rules for one direction.
#[derive(Clone, Debug, Default)]
pub struct HeaderEdits {
    /// Removed first.
    pub remove: Vec<HeaderName>,
    /// Then set (replacing any value).
    pub set: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    fn compile(cfg: &HeaderRulesConfig, side: &str, cx: &mut CompileContext) -> Self {
        let mut edits = Self::default();
        for name in &cfg.remove {
            edits.remove.extend(header_name(&name.value, name.referenced, &format!("{side}.remove"), cx));
        }
        for (name, value) in &cfg.set {
            let field = format!("{side}.set.{name}");
            let Some(n) = header_name(name, value.referenced, &format!("{side}.set"), cx) else { continue };
            match cx.value(&value.value) {
                Ok(text) => match HeaderValue::try_from(text) {
                    Ok(mut v) => {
                        v.set_sensitive(value.value.is_secret());
                        edits.set.push((n, v));
                    }
                    Err(_) => {
                        cx.field_error_at(value.referenced, &field, "not a valid header value")
                            .hint("use visible ASCII without line breaks");
                    }
                },
                Err(e) => {
                    cx.field_error_at(value.referenced, &field, e.to_string());
                }
            }
        }
        edits
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

fn header_name(name: &str, at: Location, field: &str, cx: &mut CompileContext) -> Option<HeaderName> {
    let parsed = HeaderName::from_bytes(name.as_bytes()).ok();
    if parsed.is_none() {
        cx.field_error_at(at, field, format!("{name:?} is not a valid header name"))
            .hint("header names are letters, digits and '-'");
    }
    parsed
}

/// The compiled `headers` policy.
#[derive(Clone, Debug, Default)]
pub struct HeaderRules {
    /// Applied to the request before forwarding.
    pub request: HeaderEdits,
    /// Applied to every response.
    pub response: HeaderEdits,
}

impl PolicyKind for HeaderRules {
    type Config = HeadersConfig;
    type Refusal = Infallible;

    /// # Errors
    /// A bad header name or value, or a value reference that cannot be resolved.
    fn compile(cfg: &HeadersConfig, cx: &mut CompileContext) -> Result<Self, Invalid> {
        let mark = cx.mark();
        let request = HeaderEdits::compile(&cfg.request, "request", cx);
        let response = HeaderEdits::compile(&cfg.response, "response", cx);
        cx.valid_since(mark)?;
        Ok(Self { request, response })
    }

    async fn check(&self, parts: &mut Parts, _cx: &mut RequestContext<'_>) -> Decision<Infallible> {
        self.on_request(&mut parts.headers);
        Decision::Continue
    }

    /// Applies the response-side edits.
    fn on_response(&self, _cx: &RequestContext<'_>, headers: &mut HeaderMap) {
        self.response.apply(headers);
    }

    /// The request headers it sets.
    fn forwarded_headers(&self) -> Vec<&HeaderName> {
        self.request.set.iter().map(|(name, _)| name).collect()
    }
}

impl HeaderRules {
    /// Applies the request-side edits.
    pub fn on_request(&self, headers: &mut HeaderMap) {
        self.request.apply(headers);
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
        rules.response.apply(&mut r);
        assert!(r.is_empty());
    }
}
