//! `backends:`: pools of urls with their TLS, timeouts, retries and health checks, or a
//! built-in (`echo`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::listeners::cert_and_key;
use crate::compile::raw;
use crate::config::context::CompileContext;
use crate::proxy::{Backend, HealthCheck, PoolSettings, Upstream};
use crate::tls;

pub(super) fn compile(
    raw: &BTreeMap<String, Spanned<raw::BackendConfig>>,
    cx: &mut CompileContext,
) -> BTreeMap<String, Arc<Backend>> {
    let mut out = BTreeMap::new();
    for (name, spanned) in raw {
        let b = &spanned.value;
        let path = format!("backends.{name}");
        let backend = match (b.builtin, b.urls.is_empty()) {
            (Some(raw::Builtin::Echo), true) => Some(Backend::echo(name)),
            (None, false) => pool(name, b, &path, cx),
            _ => {
                cx.error(spanned.referenced, &path, "a backend needs exactly one of `urls` or `builtin`")
                    .hint("for example `urls: [http://127.0.0.1:7071]` or `builtin: echo`");
                None
            }
        };
        if let Some(backend) = backend {
            out.insert(name.clone(), Arc::new(backend));
        }
    }
    out
}

fn pool(name: &str, b: &raw::BackendConfig, path: &str, cx: &mut CompileContext) -> Option<Backend> {
    let mut upstreams = Vec::new();
    for (i, url) in b.urls.iter().enumerate() {
        match Upstream::parse(&url.value) {
            Ok(u) => upstreams.push(u),
            Err(e) => {
                cx.error(url.referenced, format!("{path}.urls[{i}]"), e.to_string())
                    .hint("write a base URL like http://127.0.0.1:7071 or https://app.internal/api");
            }
        }
    }
    let (mut trusted_cas, mut client_cert) = (None, None);
    if let Some(t) = &b.tls {
        if let Some(file) = &t.trusted_cas {
            trusted_cas = Some(cx.certs(file, &format!("{path}.tls.trusted_cas")).ok()?);
        }
        match (&t.client_cert, &t.client_key) {
            (Some(cert), key) => {
                let at = format!("{path}.tls.client_cert");
                client_cert = Some(cert_and_key(cert, key.as_ref(), t.client_password.as_ref(), &at, cx)?);
            }
            (None, None) => {}
            (None, Some(at)) => {
                cx.error(at.referenced, format!("{path}.tls"), "`client_key` needs its `client_cert`");
                return None;
            }
        }
    }
    let tls = match tls::client_config(trusted_cas.map_or(tls::Roots::System, tls::Roots::Only), client_cert) {
        Ok(c) => c,
        Err(e) => {
            cx.error(Location::UNKNOWN, format!("{path}.tls"), e.to_string());
            return None;
        }
    };
    let health_check = b.health_check.as_ref().and_then(|h| {
        if !h.path.value.starts_with('/') {
            cx.error(h.path.referenced, format!("{path}.health_check.path"), "must start with '/'");
            return None;
        }
        Some(HealthCheck {
            path: h.path.value.clone(),
            interval: h.interval.0,
            timeout: h.timeout.map_or(h.interval.0.min(Duration::from_secs(5)), |t| t.0),
        })
    });
    if upstreams.len() != b.urls.len() {
        return None;
    }
    let timeout = b.timeout.map_or(Duration::from_secs(30), |d| d.0);
    let settings = PoolSettings {
        timeout,
        body_timeout: Some(b.body_timeout.map_or(timeout, |d| d.0)).filter(|d| !d.is_zero()),
        connect_timeout: b.connect_timeout.map_or(Duration::from_secs(2), |d| d.0),
        retries: b.retries,
        tls,
        health_check,
    };
    Some(Backend::pool(name, upstreams, settings))
}
