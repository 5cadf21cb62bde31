//! `routes:` and `default_policies:`: matchers, policy chains, backends, rewrites, and the
//! warning for a route an earlier one shadows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use http::{HeaderName, Method};
use serde_saphyr::{Location, Spanned};

use super::sorted_keys;
use crate::compile::raw::{self, Located};
use crate::config::context::CompileContext;
use crate::policy::{Chain, NamedPolicy, Policy};
use crate::proxy::Backend;
use crate::request::headers::METHOD_OVERRIDES;
use crate::route::pattern::{HostPattern, PathMatch};
use crate::route::{Route, RouteTable};
use crate::telemetry::metrics::RouteMetrics;

/// Names the file declares, compiled or not: a reference to a declared but broken entry
/// is not reported again as unknown.
pub(super) struct Declared<'r> {
    pub policies: &'r BTreeMap<String, Spanned<raw::PolicyConfig>>,
    pub backends: &'r BTreeMap<String, Spanned<raw::BackendConfig>>,
}

/// The policies a list names, in order.
pub(super) fn references(
    names: &[Located],
    path: &str,
    policies: &HashMap<String, Arc<NamedPolicy>>,
    declared: &Declared<'_>,
    cx: &mut CompileContext,
) -> Vec<Arc<NamedPolicy>> {
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match policies.get(&name.value) {
            Some(p) => out.push(p.clone()),
            // Declared but broken: its own error is already reported.
            None if declared.policies.contains_key(&name.value) => {}
            None => {
                let known = sorted_keys(policies.keys());
                cx.error(name.referenced, format!("{path}[{i}]"), format!("unknown policy {:?}", name.value))
                    .hint(format!("defined policies: {known}"));
            }
        }
    }
    out
}

pub(super) fn compile(
    raw: &[Spanned<raw::RouteConfig>],
    defaults: &[Arc<NamedPolicy>],
    policies: &HashMap<String, Arc<NamedPolicy>>,
    backends: &BTreeMap<String, Arc<Backend>>,
    declared: &Declared<'_>,
    cx: &mut CompileContext,
) -> RouteTable {
    let mut table = RouteTable::default();
    let mut names = HashSet::new();
    for (i, spanned) in raw.iter().enumerate() {
        let r = &spanned.value;
        let path = format!("routes[{i}]");
        if !names.insert(r.name.clone()) {
            cx.error(spanned.referenced, format!("{path}.name"), format!("route name {:?} is used twice", r.name));
        }
        let path_match = path_match(&r.matcher, &path, cx);
        let methods = methods(&r.matcher, &path, cx);
        let mut chain = Chain { policies: defaults.to_vec() };
        chain.policies.extend(references(&r.policies, &format!("{path}.policies"), policies, declared, cx));
        if let Some(path_match) = &path_match {
            check_claims_and_params(r, spanned.referenced, &path, defaults, policies, path_match, cx);
        }
        let backend = match backends.get(&r.backend.value) {
            Some(b) => Some(b.clone()),
            None if declared.backends.contains_key(&r.backend.value) => None,
            None => {
                let known = sorted_keys(backends.keys());
                cx.error(
                    r.backend.referenced,
                    format!("{path}.backend"),
                    format!("unknown backend {:?}", r.backend.value),
                )
                .hint(format!("defined backends: {known}"));
                None
            }
        };
        let strip_prefix = match r.rewrite.as_ref().and_then(|rw| rw.strip_prefix.as_ref()) {
            Some(p) if !p.value.starts_with('/') || p.value.len() > 1 && p.value.ends_with('/') => {
                cx.error(
                    p.referenced,
                    format!("{path}.rewrite.strip_prefix"),
                    "must start with '/' and not end with '/'",
                )
                .hint("for example `strip_prefix: /apolloapi`");
                None
            }
            Some(p) => Some(p.value.clone()),
            None => None,
        };
        let (Some(path_match), Some(backend)) = (path_match, backend) else {
            continue;
        };
        let route = Route {
            name: r.name.as_str().into(),
            listener: None,
            hosts: r.matcher.hosts.iter().map(|h| HostPattern::parse(&h.value)).collect(),
            path: path_match,
            methods,
            chain,
            backend,
            strip_prefix,
            metrics: RouteMetrics::new(r.name.as_str().into()),
            path_parameters: r.path_parameters,
            method_override: method_override(r, &path, cx),
            websocket: upgrades(r, &path, cx),
            tunnel: tunnel_limits(r, spanned.referenced, &path, cx),
        };
        if let Some(earlier) = table.routes.iter().find(|e| shadows(e, &route)) {
            let message = format!(
                "route {:?} is never reached: route {:?} before it matches all its requests",
                route.name, earlier.name
            );
            cx.warn(spanned.referenced, &path, message);
        }
        table.routes.push(route);
    }
    table
}

/// A policy that reads claims (`authorize`, a `rate_limit` keyed by a claim) needs a `jwt`
/// policy before it; an `authorize` policy needs every path parameter its rules compare in
/// the route's template.
fn check_claims_and_params(
    r: &raw::RouteConfig,
    route_at: Location,
    path: &str,
    defaults: &[Arc<NamedPolicy>],
    policies: &HashMap<String, Arc<NamedPolicy>>,
    path_match: &PathMatch,
    cx: &mut CompileContext,
) {
    let own = r.policies.iter().enumerate().filter_map(|(j, name)| {
        policies.get(&name.value).map(|p| (p, name.referenced, format!("{path}.policies[{j}]")))
    });
    let chain: Vec<_> = defaults.iter().map(|p| (p, route_at, "default_policies".to_owned())).chain(own).collect();
    let captured = path_match.params();
    for (k, (named, at, field)) in chain.iter().enumerate() {
        if named.policy.reads_claims() && !chain[..k].iter().any(|(p, ..)| matches!(p.policy, Policy::Jwt(_))) {
            let kind = named.policy.kind();
            cx.error(
                *at,
                field,
                format!("route {:?}: {kind} policy {:?} has no jwt policy before it", r.name, named.name),
            )
            .hint(format!("{kind} reads the claims of a verified token: list a jwt policy before it on the route"));
        }
        let Policy::Authorize(authorize) = &named.policy else { continue };
        let mut reported = Vec::new();
        for (rule, param) in authorize.path_params() {
            if captured.contains(&param) || reported.contains(&param) {
                continue;
            }
            reported.push(param);
            cx.error(
                *at,
                field,
                format!("route {:?} has no path parameter {{{param}}}, which rule {rule:?} of policy {:?} compares", r.name, named.name),
            )
            .hint(format!("match the route with a template that captures it, like `path: \"/accounts/{{{param}}}/**\"`, or use another policy on this route"));
        }
    }
}

fn path_match(m: &raw::MatchConfig, path: &str, cx: &mut CompileContext) -> Option<PathMatch> {
    match (&m.path_prefix, &m.path) {
        (None, None) => Some(PathMatch::Any),
        (Some(prefix), None) if prefix.value.starts_with('/') => Some(PathMatch::Prefix(prefix.value.clone())),
        (Some(prefix), None) => {
            cx.error(prefix.referenced, format!("{path}.match.path_prefix"), "must start with '/'");
            None
        }
        (None, Some(template)) => match PathMatch::template(&template.value) {
            Ok(t) => Some(t),
            Err(e) => {
                cx.error(template.referenced, format!("{path}.match.path"), e.to_string())
                    .hint("a template looks like /partners/accounts/{account}/cases/**");
                None
            }
        },
        (Some(at), Some(_)) => {
            cx.error(at.referenced, format!("{path}.match"), "`path_prefix` and `path` exclude each other")
                .hint("keep one of them");
            None
        }
    }
}

/// `method_override`: one of the method-override headers, by any spelling of its name.
fn method_override(r: &raw::RouteConfig, path: &str, cx: &mut CompileContext) -> Option<HeaderName> {
    let name = r.method_override.as_ref()?;
    let lower = name.value.to_ascii_lowercase();
    match METHOD_OVERRIDES.iter().find(|known| **known == lower) {
        Some(known) => Some(HeaderName::from_static(known)),
        None => {
            cx.error(
                name.referenced,
                format!("{path}.method_override"),
                format!("{:?} is not a method-override header", name.value),
            )
            .hint("one of X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override");
            None
        }
    }
}

/// `websocket:` the limits of upgraded connections, defaults for what is not set.
fn tunnel_limits(
    r: &raw::RouteConfig,
    at: Location,
    path: &str,
    cx: &mut CompileContext,
) -> crate::route::TunnelLimits {
    let d = crate::route::TunnelLimits::default();
    let Some(w) = &r.websocket else { return d };
    if !r.upgrades.iter().any(|u| u.value.eq_ignore_ascii_case("websocket")) {
        cx.warn(
            at,
            format!("{path}.websocket"),
            "`websocket` limits on a route without `upgrades: [websocket]` do nothing",
        )
        .hint("add `upgrades: [websocket]`");
    }
    let positive = |d: Option<crate::config::values::ConfigDuration>, default| {
        d.map_or(default, |d| d.0).max(std::time::Duration::from_millis(1))
    };
    crate::route::TunnelLimits {
        idle_timeout: positive(w.idle_timeout, d.idle_timeout),
        max_lifetime: positive(w.max_lifetime, d.max_lifetime),
        max_message_bytes: w.max_message_bytes.map_or(d.max_message_bytes, |b| b.0),
        close_on_credential_expiry: w.close_on_credential_expiry.unwrap_or(d.close_on_credential_expiry),
    }
}

/// `upgrades`: `websocket` is the one protocol a route may pass on.
fn upgrades(r: &raw::RouteConfig, path: &str, cx: &mut CompileContext) -> bool {
    let mut websocket = false;
    for (j, token) in r.upgrades.iter().enumerate() {
        let field = format!("{path}.upgrades[{j}]");
        if token.value.eq_ignore_ascii_case("websocket") {
            websocket = true;
        } else if token.value.eq_ignore_ascii_case("h2c") {
            cx.error(token.referenced, field, "h2c upgrades are never passed to a backend").hint(
                "after an h2c upgrade the client speaks HTTP/2 straight to the backend, past every policy \
                 (h2c smuggling); clients reach the gateway over h2 by ALPN instead",
            );
        } else {
            cx.error(token.referenced, field, format!("unknown upgrade {:?}", token.value))
                .hint("the only upgrade a route can accept is websocket");
        }
    }
    websocket
}

fn methods(m: &raw::MatchConfig, path: &str, cx: &mut CompileContext) -> Vec<Method> {
    let mut methods = Vec::new();
    for (j, method) in m.methods.iter().enumerate() {
        match Method::from_bytes(method.value.to_ascii_uppercase().as_bytes()) {
            Ok(meth) => methods.push(meth),
            Err(_) => {
                cx.error(
                    method.referenced,
                    format!("{path}.match.methods[{j}]"),
                    format!("{:?} is not an HTTP method", method.value),
                );
            }
        }
    }
    methods
}

/// Whether every request `later` matches is matched by `earlier` first.
fn shadows(earlier: &Route, later: &Route) -> bool {
    let hosts =
        earlier.hosts.is_empty() || (!later.hosts.is_empty() && later.hosts.iter().all(|h| earlier.hosts.contains(h)));
    let methods = earlier.methods.is_empty()
        || (!later.methods.is_empty() && later.methods.iter().all(|m| earlier.methods.contains(m)));
    let paths = match (&earlier.path, &later.path) {
        (PathMatch::Any, _) => true,
        (PathMatch::Prefix(a), PathMatch::Prefix(b)) => {
            b.starts_with(a.as_str()) && (a.ends_with('/') || b.len() == a.len() || b.as_bytes()[a.len()] == b'/')
        }
        (a, b) => a == b,
    };
    hosts && methods && paths
}
