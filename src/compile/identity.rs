//! `identity:`: the token issuer (its listener, URL, key and store) and its three routes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::Spanned;

use crate::compile::raw::{self, IdentityConfig, Located};
use crate::config::context::CompileContext;
use crate::identity::{self, Issuer, IssuerSettings};
use crate::policy::{Chain, NamedPolicy, Policy};
use crate::proxy::Backend;
use crate::route::pattern::PathMatch;
use crate::route::{PathParameters, Route};
use crate::store::{StoreError, StoreLocation};
use crate::telemetry::metrics::RouteMetrics;

/// The token issuer: its key read, its store opened (created and migrated if new), and the
/// listener it serves on.
pub(super) fn compile(
    raw: &Spanned<IdentityConfig>,
    listeners: &[Spanned<raw::ListenerConfig>],
    cx: &mut CompileContext,
) -> Option<(Arc<Issuer>, Arc<str>)> {
    let cfg = &raw.value;
    let mark = cx.mark();
    match listeners.iter().find(|l| l.value.name == cfg.listener.value) {
        Some(l) if l.value.tls.is_some() => {}
        found => {
            let known: Vec<&str> =
                listeners.iter().filter(|l| l.value.tls.is_some()).map(|l| l.value.name.as_str()).collect();
            let what = if found.is_some() { "is not a TLS listener" } else { "is not a listener" };
            cx.error(cfg.listener.referenced, "identity.listener", format!("{:?} {what}", cfg.listener.value))
                .hint(format!("name a listener with `tls`: {}", known.join(", ")));
        }
    }
    let issuer = cfg.issuer.value.trim_end_matches('/');
    let valid_issuer = issuer
        .strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#']) && issuer.parse::<http::Uri>().is_ok());
    if !valid_issuer {
        cx.error(cfg.issuer.referenced, "identity.issuer", format!("{:?} is not an https:// URL", cfg.issuer.value))
            .hint("write the public base URL clients reach the gateway at, like https://login.example.com");
    }
    let ttl = cfg.token_ttl.map_or(Duration::from_secs(3600), |d| d.0);
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(24 * 3600) {
        cx.error(raw.referenced, "identity.token_ttl", "must be between 1s and 24h")
            .hint("access tokens are short-lived: 5m to 1h is usual");
    }
    for scope in &cfg.scopes {
        if scope.is_empty() || !scope.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            cx.error(raw.referenced, "identity.scopes", format!("{scope:?} is not a valid scope (RFC 6749 §3.3)"));
        }
    }
    let key = signing_key(&cfg.signing_key, cx);
    let published = published_keys(&cfg.published_keys, cx);
    // The store is not watched: the CLI changes it while the gateway runs. Opened on a
    // runtime that ends with the opening (the compiler blocks): it keeps no connection from
    // it, and makes its connections on the gateway's runtime, where its calls are awaited.
    let location = StoreLocation::parse(&cfg.store.value, cx.dir()).map_err(|e| e.to_string());
    let opened = location.and_then(|l| {
        crate::store::block_on(l.open()).map_err(|e| match e {
            // The field already says it is the identity store.
            StoreError::Unavailable(detail) => detail,
            other => other.to_string(),
        })
    });
    let store = match opened {
        Ok(store) => Some(store),
        Err(e) => {
            cx.error(cfg.store.referenced, "identity.store", e).hint(
                "write sqlite:PATH (relative to this file, in a directory the gateway may write), or \
                     postgres://USER:${env:PASSWORD}@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=CA.pem \
                     for a store that several instances share",
            );
            None
        }
    };
    let (Some(key), Some(store)) = (key, store) else { return None };
    cx.valid_since(mark).ok()?;
    let settings = IssuerSettings {
        issuer: issuer.to_owned(),
        audience: cfg.audience.clone(),
        ttl,
        scopes: cfg.scopes.clone(),
        key,
        published,
        store,
        rate_limit: cfg.rate_limit,
    };
    Some((Arc::new(Issuer::new(settings)), cfg.listener.value.as_str().into()))
}

fn published_keys(files: &[Located], cx: &mut CompileContext) -> Vec<identity::signing::PublishedKey> {
    let mut keys = Vec::with_capacity(files.len());
    for file in files {
        match identity::signing::PublishedKey::load(&cx.path(&file.value)) {
            Ok(key) => keys.push(key),
            Err(e) => {
                cx.error(file.referenced, "identity.published_keys", e.to_string()).hint(
                    "a P-256 or Ed25519 public key in PEM (`openssl pkey -in KEY.pem -pubout`), or that private key",
                );
            }
        }
    }
    keys
}

fn signing_key(file: &Located, cx: &mut CompileContext) -> Option<identity::signing::SigningKey> {
    match identity::signing::SigningKey::load(&cx.path(&file.value)) {
        Ok(key) => Some(key),
        Err(e) => {
            cx.error(file.referenced, "identity.signing_key", e.to_string()).hint(
                "an ES256 or Ed25519 PKCS#8 PEM key; `portcullis certs dev` creates certs/dev/token-signing-key.pem",
            );
            None
        }
    }
}

/// A `jwt` default policy also runs on the token endpoint, which it would then close.
pub(super) fn warn_about_default_jwt(
    defaults: &[Located],
    policies: &HashMap<String, Arc<NamedPolicy>>,
    cx: &mut CompileContext,
) {
    for name in defaults {
        if policies.get(&name.value).is_some_and(|p| matches!(p.policy, Policy::Jwt(_))) {
            cx.warn(name.referenced, "default_policies", format!("default policy {:?} is a jwt policy and also runs on the token endpoint, which then refuses every token request (they carry client credentials, not tokens)", name.value));
        }
    }
}

/// The issuer's three routes on its listener, answered in-process, through the default
/// policies only.
pub(super) fn routes(issuer: Arc<Issuer>, listener: &Arc<str>, defaults: &[Arc<NamedPolicy>]) -> Vec<Route> {
    let backend = Arc::new(Backend::local("identity", issuer));
    let route = |name: &str, path: &str| Route {
        name: name.into(),
        listener: Some(listener.clone()),
        hosts: Vec::new(),
        path: PathMatch::template(path).expect("a literal path"),
        methods: Vec::new(),
        chain: Chain { policies: defaults.to_vec() },
        backend: backend.clone(),
        strip_prefix: None,
        metrics: RouteMetrics::new(name.into()),
        path_parameters: PathParameters::Refuse,
        method_override: None,
        websocket: false,
        tunnel: crate::route::TunnelLimits::default(),
    };
    vec![
        route("identity-token", identity::TOKEN_PATH),
        route("identity-discovery", identity::DISCOVERY_PATH),
        route("identity-jwks", identity::JWKS_PATH),
    ]
}
