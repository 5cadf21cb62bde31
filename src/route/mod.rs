//! The route table: the first route whose hosts, path and methods match wins (README: A policy file, in short).
//!
//! Paths are matched on the normalized path. `path_prefix` matches on segment boundaries
//! (`/api` matches `/api` and `/api/x`, never `/apix`; `/api/` matches what starts with it);
//! `path` is a template of literal segments, `{param}` segments that capture one segment, and
//! an optional trailing `**` that matches any remaining segments, including none.

pub mod pattern;

use std::sync::Arc;

use http::{HeaderName, Method};
use serde::Deserialize;

use self::pattern::{HostPattern, PathMatch};
use crate::policy::context::Params;
use crate::policy::Chain;
use crate::proxy::Backend;
use crate::telemetry::metrics::RouteMetrics;

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// The route's configured name.
    pub name: Arc<str>,
    /// Served on this listener only (the token issuer's routes); `None`: on every listener.
    pub listener: Option<Arc<str>>,
    /// Hosts it serves (lower-case); empty: any host.
    pub hosts: Vec<HostPattern>,
    /// How it matches the normalized path.
    pub path: PathMatch,
    /// Empty: any method.
    pub methods: Vec<Method>,
    /// The policies its requests run through.
    pub chain: Chain,
    /// Where its requests go.
    pub backend: Arc<Backend>,
    /// `rewrite.strip_prefix`: removed from the path the backend sees.
    pub strip_prefix: Option<String>,
    /// Its request metrics, resolved once.
    pub metrics: RouteMetrics,
    /// What a path with `;` parameters gets.
    pub path_parameters: PathParameters,
    /// The method-override header it passes to its backend, if any.
    pub method_override: Option<HeaderName>,
    /// `upgrades: [websocket]`: WebSocket handshakes are forwarded and, on `101`, tunneled.
    pub websocket: bool,
    /// `websocket:` the limits of its upgraded connections.
    pub tunnel: TunnelLimits,
}

/// A route's `websocket:` settings: the limits of the upgraded connections it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelLimits {
    /// No frame either way for this long: close `1001 idle`.
    pub idle_timeout: std::time::Duration,
    /// Open this long: close `1001`.
    pub max_lifetime: std::time::Duration,
    /// A message (all its frames) longer than this from either side: close `1009` to both.
    pub max_message_bytes: u64,
    /// Close with `1008` when the handshake's token or client certificate expires.
    pub close_on_credential_expiry: bool,
}

impl Default for TunnelLimits {
    fn default() -> Self {
        Self {
            idle_timeout: std::time::Duration::from_secs(300),
            max_lifetime: std::time::Duration::from_secs(8 * 3600),
            max_message_bytes: 1 << 20,
            close_on_credential_expiry: true,
        }
    }
}

/// What a route does with a path that had `;` parameters (normalization removes them).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PathParameters {
    /// 400: the backend might read the parameters another way.
    #[default]
    Refuse,
    /// Serve the path without them (the backend receives it without them too).
    Strip,
}

impl Route {
    fn matches(&self, listener: &str, host: &str, path: &str, method: &Method, params: &mut Params) -> bool {
        self.listener.as_deref().is_none_or(|l| l == listener)
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host)))
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.path.matches(path, params)
    }

    /// The path the backend sees: the normalized path without `strip_prefix`.
    pub fn upstream_path<'a>(&self, path: &'a str) -> &'a str {
        match &self.strip_prefix {
            Some(prefix) => match path.strip_prefix(prefix.as_str()) {
                Some(rest) if rest.starts_with('/') => rest,
                Some(_) => "/",
                None => path,
            },
            None => path,
        }
    }
}

/// Routes in configuration order.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// The routes; the first that matches wins.
    pub routes: Vec<Route>,
}

impl RouteTable {
    /// The first route that matches a request on `listener`, with its captured path
    /// parameters. `host` is lower-case without port; `path` is normalized.
    pub fn find(&self, listener: &str, host: &str, path: &str, method: &Method) -> Option<(&Route, Params)> {
        let mut params = Params::new();
        for route in &self.routes {
            params.clear();
            if route.matches(listener, host, path, method, &mut params) {
                return Some((route, params));
            }
        }
        None
    }
}
