//! `listeners:` and `admin.bind`: addresses, TLS (certificates by SNI, minimum version,
//! client certificates), redirect-only plain listeners and limits.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_saphyr::Spanned;

use crate::compile::raw::{self, ClientAuthMode, Located, TlsVersion};
use crate::config::context::CompileContext;
use crate::config::values::ValueRef;
use crate::runtime::{Limits, ListenerKind, ListenerSpec};
use crate::tls::{self, ClientAuth};

pub(super) fn compile(raw: &[Spanned<raw::ListenerConfig>], cx: &mut CompileContext) -> Vec<ListenerSpec> {
    let mut names = HashSet::new();
    let mut binds = HashSet::new();
    let mut out = Vec::new();
    for (i, spanned) in raw.iter().enumerate() {
        let l = &spanned.value;
        let path = format!("listeners[{i}]");
        if !names.insert(l.name.clone()) || l.name == "admin" {
            cx.error(
                spanned.referenced,
                format!("{path}.name"),
                format!("listener name {:?} is used twice or reserved", l.name),
            )
            .hint("give every listener its own name; `admin` names the admin listener");
        }
        let Some(bind) = socket_addr(&l.bind, &format!("{path}.bind"), cx) else {
            continue;
        };
        if bind.port() != 0 && !binds.insert(bind) {
            cx.error(l.bind.referenced, format!("{path}.bind"), format!("{bind} is bound by another listener"));
        }
        let kind = match (&l.tls, &l.redirect_to_https) {
            (Some(t), None) => server_tls(t, &path, cx).map(ListenerKind::Tls),
            (None, Some(url)) => match url.value.strip_prefix("https://") {
                Some(rest) if !rest.is_empty() => Some(ListenerKind::Redirect(url.value.trim_end_matches('/').into())),
                _ => {
                    cx.error(
                        url.referenced,
                        format!("{path}.redirect_to_https"),
                        format!("{:?} is not an https:// URL", url.value),
                    )
                    .hint("write the public HTTPS base, like https://localhost:8443");
                    None
                }
            },
            _ => {
                cx.error(spanned.referenced, &path, "a listener needs exactly one of `tls` or `redirect_to_https`")
                    .hint("plain HTTP is only served to redirect to HTTPS");
                None
            }
        };
        let limits = limits(&l.limits, spanned, &path, cx);
        if let Some(kind) = kind {
            out.push(ListenerSpec { name: l.name.as_str().into(), bind, kind, limits });
        }
    }
    out
}

fn limits(
    limits: &raw::LimitsConfig,
    spanned: &Spanned<raw::ListenerConfig>,
    path: &str,
    cx: &mut CompileContext,
) -> Limits {
    for (name, value) in [
        ("max_connections", limits.max_connections),
        ("max_connections_per_ip", limits.max_connections_per_ip),
        ("max_headers", limits.max_headers),
        ("max_concurrent_streams", limits.max_concurrent_streams as usize),
    ] {
        if value == 0 {
            cx.error(spanned.referenced, format!("{path}.limits.{name}"), "must be at least 1");
        }
    }
    Limits {
        max_header_bytes: usize::try_from(limits.max_header_bytes.0).unwrap_or(usize::MAX),
        max_headers: limits.max_headers.max(1),
        max_body_bytes: limits.max_body_bytes.0,
        header_read_timeout: limits.header_read_timeout.0,
        body_read_timeout: limits.body_read_timeout.0,
        idle_timeout: limits.idle_timeout.0,
        max_connections: limits.max_connections.max(1),
        max_connections_per_ip: limits.max_connections_per_ip.max(1),
        max_concurrent_streams: limits.max_concurrent_streams.max(1),
    }
}

/// An `IP:port` address.
pub(super) fn socket_addr(bind: &Located, path: &str, cx: &mut CompileContext) -> Option<SocketAddr> {
    match bind.value.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            cx.error(bind.referenced, path, format!("invalid address {:?}", bind.value))
                .hint("write an IP address and a port, like 127.0.0.1:8443 or [::1]:8443");
            None
        }
    }
}

/// A certificate chain and its key, checked to belong together.
/// A certificate and its key: a PEM chain with its PEM key, or a PKCS#12 file with its
/// password. `path` names the pair in errors (like `listeners[0].tls.certificates[0]`).
pub(super) fn cert_and_key(
    cert: &Located,
    key: Option<&Located>,
    password: Option<&Spanned<ValueRef>>,
    path: &str,
    cx: &mut CompileContext,
) -> Option<Arc<rustls::sign::CertifiedKey>> {
    let (chain, key_der, key_at) = if tls::is_pkcs12(&cx.path(&cert.value)) {
        if let Some(key) = key {
            cx.error(key.referenced, format!("{path}.key"), "a PKCS#12 file holds its key: remove `key`");
            return None;
        }
        let password = match password {
            Some(p) => match cx.value(&p.value) {
                Ok(text) => text,
                Err(e) => {
                    cx.error(p.referenced, format!("{path}.password"), e.to_string());
                    return None;
                }
            },
            None => String::new(),
        };
        let (chain, key_der) = cx.pkcs12(cert, &password, &format!("{path}.cert")).ok()?;
        (chain, key_der, cert)
    } else {
        if let Some(p) = password {
            cx.error(p.referenced, format!("{path}.password"), "a password is for a PKCS#12 (.pfx, .p12) file")
                .hint("PEM keys are read unencrypted; give the .pfx file as `cert`, or remove `password`");
            return None;
        }
        let Some(key) = key else {
            cx.error(cert.referenced, format!("{path}.key"), "the PEM certificate needs its `key`")
                .hint("add `key: FILE.pem`, or give a .pfx/.p12 file (with `password`) that holds both");
            return None;
        };
        let chain = cx.certs(cert, &format!("{path}.cert")).ok()?;
        match tls::load_key(&cx.path(&key.value)) {
            Ok(k) => (chain, k, key),
            Err(e) => {
                cx.error(key.referenced, format!("{path}.key"), e.to_string())
                    .hint("paths are relative to the configuration file");
                return None;
            }
        }
    };
    match tls::certified_key(chain, key_der) {
        Ok(k) => Some(k),
        Err(e) => {
            cx.error(key_at.referenced, format!("{path}.key"), e.to_string())
                .hint("give the key that belongs to this certificate");
            None
        }
    }
}

fn server_tls(t: &raw::TlsConfig, path: &str, cx: &mut CompileContext) -> Option<Arc<rustls::ServerConfig>> {
    if t.certificates.value.is_empty() {
        cx.error(t.certificates.referenced, format!("{path}.tls.certificates"), "at least one certificate is needed");
        return None;
    }
    let mut keys = Vec::new();
    for (j, ck) in t.certificates.value.iter().enumerate() {
        let at = format!("{path}.tls.certificates[{j}]");
        keys.extend(cert_and_key(&ck.cert, ck.key.as_ref(), ck.password.as_ref(), &at, cx));
    }
    let client_auth = match &t.client_auth {
        None => ClientAuth::None,
        Some(ca) if ca.mode.value == ClientAuthMode::None => ClientAuth::None,
        Some(ca) => {
            let Some(file) = &ca.trusted_cas else {
                cx.error(
                    ca.mode.referenced,
                    format!("{path}.tls.client_auth"),
                    "client certificates need `trusted_cas`",
                )
                .hint("name the PEM file of the CAs that issue client certificates");
                return None;
            };
            let cas = cx.certs(file, &format!("{path}.tls.client_auth.trusted_cas")).ok()?;
            let mut crls = Vec::new();
            for (k, crl) in ca.crls.iter().enumerate() {
                match tls::load_crl(&cx.path(&crl.value)) {
                    Ok(c) => crls.push(c),
                    Err(e) => {
                        cx.error(crl.referenced, format!("{path}.tls.client_auth.crls[{k}]"), e.to_string());
                    }
                }
            }
            ClientAuth::Verify { cas, crls, required: ca.mode.value == ClientAuthMode::Required }
        }
    };
    if keys.len() != t.certificates.value.len() {
        return None;
    }
    match tls::server_config(keys, t.min_version == TlsVersion::Tls13, client_auth) {
        Ok(config) => Some(config),
        Err(e) => {
            cx.error(t.certificates.referenced, format!("{path}.tls"), e.to_string());
            None
        }
    }
}
