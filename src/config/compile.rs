//! Turns a configuration file into a ready [`Runtime`], collecting every error (with its
//! `file:line:column` and a hint) rather than stopping at the first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Method;
use serde_saphyr::{Location, Spanned};

use super::error::{ConfigError, ConfigErrors};
use super::raw::{self, ClientAuthMode, IdentityConfig, Located, RawConfig, TlsVersion};
use super::values::ValueRef;
use crate::identity::{self, IdentityEndpoints, Issuer, IssuerSettings, StoreLocation};
use crate::policy::headers::HeaderEdits;
use crate::policy::{Chain, ClientCert, Cors, HeaderRules, IpFilter, Jwt, NamedPolicy, Policy};
use crate::proxy::{Backend, HealthCheck, PoolSettings, Upstream};
use crate::request::client_ip::IpSet;
use crate::request::headers::GatewayHeaders;
use crate::route::{HostPattern, PathMatch, Route, RouteTable};
use crate::runtime::{CertificateInUse, Limits, ListenerKind, ListenerSpec, Runtime};
use crate::server::DEFAULT_DRAIN_TIMEOUT;
use crate::telemetry::metrics::RouteMetrics;
use crate::tls::{self, ClientAuth};

/// A compiled configuration and what `check` should warn about.
pub struct Loaded {
    pub runtime: Runtime,
    pub warnings: Vec<ConfigError>,
}

/// Reads, parses and compiles a configuration file.
///
/// # Errors
/// Every problem found, each with its location in the file.
pub fn load(file: &Path) -> Result<Loaded, ConfigErrors> {
    let raw = read_raw(file, "check the path given to --config")?;
    Compiler::new(file).compile(raw)
}

/// Parses and compiles `text` as if it were the content of `file` (paths in it are
/// relative to `file`'s folder).
///
/// # Errors
/// As [`load`].
pub fn load_text(file: &Path, text: &str) -> Result<Loaded, ConfigErrors> {
    let raw = parse_raw(file, text)?;
    Compiler::new(file).compile(raw)
}

/// Reads and parses the file; `hint` says what to do when it cannot be read.
fn read_raw(file: &Path, hint: &str) -> Result<RawConfig, ConfigErrors> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigError::new(file, Location::UNKNOWN, "", format!("cannot read the configuration: {e}")).with_hint(hint)
    })?;
    parse_raw(file, &text)
}

fn parse_raw(file: &Path, text: &str) -> Result<RawConfig, ConfigErrors> {
    serde_saphyr::from_str(text).map_err(|e| parse_error(file, &e).into())
}

/// Where the configuration's `identity.store` lives, read without compiling the rest (for
/// the `systems`, `users` and `audit` commands).
///
/// # Errors
/// The file is unreadable or malformed, has no `identity` section, or a bad store location.
pub fn identity_store(file: &Path) -> Result<StoreLocation, ConfigErrors> {
    let raw = read_raw(file, "pass --config FILE, or --store sqlite:PATH")?;
    let Some(identity) = raw.identity else {
        return Err(ConfigError::new(
            file,
            Location::UNKNOWN,
            "identity",
            "the configuration has no `identity` section",
        )
        .with_hint("add one (see README.md, token issuer), or pass --store sqlite:PATH")
        .into());
    };
    let dir = file.parent().map(Path::to_owned).unwrap_or_default();
    StoreLocation::parse(&identity.value.store.value, &dir)
        .map_err(|e| ConfigError::new(file, identity.value.store.referenced, "identity.store", e).into())
}

fn parse_error(file: &Path, error: &serde_saphyr::Error) -> ConfigError {
    let at = error.location().unwrap_or(Location::UNKNOWN);
    let message = error.without_snippet().to_string();
    // The message ends with its own " at line L column C"; the location is printed in front.
    let message = message.split(" at line ").next().unwrap_or(&message).trim().to_owned();
    let hint = if message.contains("unknown field") {
        "remove the key or fix its spelling; the message lists the keys allowed here"
    } else {
        "see the configuration reference in README.md"
    };
    ConfigError::new(file, at, "", message).with_hint(hint)
}

struct Compiler<'a> {
    file: &'a Path,
    dir: PathBuf,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    files: Vec<PathBuf>,
    certificates: Vec<CertificateInUse>,
}

impl<'a> Compiler<'a> {
    fn new(file: &'a Path) -> Self {
        let dir = file.parent().map(Path::to_owned).unwrap_or_default();
        Self {
            file,
            dir,
            errors: Vec::new(),
            warnings: Vec::new(),
            files: vec![file.to_owned()],
            certificates: Vec::new(),
        }
    }

    fn error(&mut self, at: Location, path: impl Into<String>, message: impl Into<String>) -> &mut ConfigError {
        self.errors.push(ConfigError::new(self.file, at, path, message));
        self.errors.last_mut().expect("just pushed")
    }

    fn warn(&mut self, at: Location, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError::new(self.file, at, path, message));
    }

    /// Watches a file a `${file:…}` reference names.
    fn watch(&mut self, path: &str) {
        let full = self.dir.join(path);
        if !self.files.contains(&full) {
            self.files.push(full);
        }
    }

    /// The file a path names, relative to the configuration; it is watched for changes.
    fn resolve(&mut self, path: &Located) -> PathBuf {
        let full = self.dir.join(&path.value);
        if !self.files.contains(&full) {
            self.files.push(full.clone());
        }
        full
    }

    fn compile(mut self, raw: RawConfig) -> Result<Loaded, ConfigErrors> {
        if raw.version.value != 1 {
            self.error(raw.version.referenced, "version", format!("unsupported version {}", raw.version.value))
                .hint("write `version: 1`");
        }
        let backends = self.backends(&raw.backends);
        let issuer = raw.identity.as_ref().and_then(|i| self.issuer(i, &raw.listeners));
        let policies = self.policies(&raw.policies, issuer.as_ref());
        let mut gateway_headers = GatewayHeaders::default();
        for policy in policies.values() {
            for name in policy.policy.forwarded_headers() {
                gateway_headers.insert(name.clone());
            }
        }
        let declared = Declared { policies: &raw.policies, backends: &raw.backends };
        let defaults = self.references(&raw.default_policies, "default_policies", &policies, &declared);
        let routes = self.routes(&raw.routes, &defaults, &policies, &backends, &declared);
        if issuer.is_some() {
            for name in &raw.default_policies {
                if policies.get(&name.value).is_some_and(|p| matches!(p.policy, Policy::Jwt(_))) {
                    self.warn(name.referenced, "default_policies", format!("default policy {:?} is a jwt policy and also runs on the token endpoint, which then refuses every token request (they carry client credentials, not tokens)", name.value));
                }
            }
        }
        let identity = issuer.map(|(issuer, listener)| identity_endpoints(issuer, listener, &defaults));
        let listeners = self.listeners(&raw.listeners);
        let admin = raw.admin.as_ref().and_then(|a| self.socket_addr(&a.bind, "admin.bind"));
        if let (Some(addr), Some(a)) = (admin, &raw.admin) {
            if !addr.ip().is_loopback() && a.allow.is_empty() {
                self.warn(a.bind.referenced, "admin.bind", format!("the admin listener ({addr}) is reachable beyond this host and has no `allow` list: anyone who reaches it can reload the configuration and read metrics"));
            }
        }
        if self.errors.is_empty() {
            let runtime = Runtime {
                source: self.file.to_owned(),
                listeners,
                admin,
                admin_allow: IpSet::new(raw.admin.iter().flat_map(|a| a.allow.iter().copied())),
                watch_files: raw.watch_files.unwrap_or(true),
                trusted_proxies: IpSet::new(raw.trusted_proxies.iter().copied()),
                routes,
                backends: backends.into_values().collect(),
                policies: sorted_policies(policies),
                gateway_headers,
                drain_timeout: raw.drain_timeout.map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0),
                files: self.files,
                certificates: self.certificates,
                identity,
            };
            Ok(Loaded { runtime, warnings: self.warnings })
        } else {
            self.errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(self.errors))
        }
    }

    fn socket_addr(&mut self, bind: &Located, path: &str) -> Option<SocketAddr> {
        match bind.value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(bind.referenced, path, format!("invalid address {:?}", bind.value))
                    .hint("write an IP address and a port, like 127.0.0.1:8443 or [::1]:8443");
                None
            }
        }
    }

    fn certs(&mut self, file: &Located, path: &str) -> Option<Vec<rustls_pki_types::CertificateDer<'static>>> {
        let full = self.resolve(file);
        match tls::load_certs(&full) {
            Ok(certs) => {
                for der in &certs {
                    if let Ok(info) = tls::ClientCertInfo::parse(der) {
                        self.certificates.push(CertificateInUse {
                            path: full.clone(),
                            usage: path.to_owned(),
                            subject: info.subject,
                            not_after: info.not_after,
                        });
                    }
                }
                Some(certs)
            }
            Err(e) => {
                self.error(file.referenced, path, e)
                    .hint("paths are relative to the configuration file; `portcullis certs dev` creates development certificates");
                None
            }
        }
    }

    fn cert_and_key(&mut self, cert: &Located, key: &Located, path: &str) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let chain = self.certs(cert, &format!("{path}.cert"))?;
        let key_der = match tls::load_key(&self.resolve(key)) {
            Ok(k) => k,
            Err(e) => {
                self.error(key.referenced, format!("{path}.key"), e)
                    .hint("paths are relative to the configuration file");
                return None;
            }
        };
        match tls::certified_key(chain, key_der) {
            Ok(k) => Some(k),
            Err(e) => {
                self.error(key.referenced, format!("{path}.key"), e)
                    .hint("give the key that belongs to this certificate");
                None
            }
        }
    }

    fn listeners(&mut self, raw: &[Spanned<raw::ListenerConfig>]) -> Vec<ListenerSpec> {
        let mut names = HashSet::new();
        let mut binds = HashSet::new();
        let mut out = Vec::new();
        for (i, spanned) in raw.iter().enumerate() {
            let l = &spanned.value;
            let path = format!("listeners[{i}]");
            if !names.insert(l.name.clone()) || l.name == "admin" {
                self.error(
                    spanned.referenced,
                    format!("{path}.name"),
                    format!("listener name {:?} is used twice or reserved", l.name),
                )
                .hint("give every listener its own name; `admin` names the admin listener");
            }
            let Some(bind) = self.socket_addr(&l.bind, &format!("{path}.bind")) else {
                continue;
            };
            if bind.port() != 0 && !binds.insert(bind) {
                self.error(l.bind.referenced, format!("{path}.bind"), format!("{bind} is bound by another listener"));
            }
            let kind = match (&l.tls, &l.redirect_to_https) {
                (Some(t), None) => self.server_tls(t, &path).map(ListenerKind::Tls),
                (None, Some(url)) => match url.value.strip_prefix("https://") {
                    Some(rest) if !rest.is_empty() => {
                        Some(ListenerKind::Redirect(url.value.trim_end_matches('/').into()))
                    }
                    _ => {
                        self.error(
                            url.referenced,
                            format!("{path}.redirect_to_https"),
                            format!("{:?} is not an https:// URL", url.value),
                        )
                        .hint("write the public HTTPS base, like https://localhost:8443");
                        None
                    }
                },
                _ => {
                    self.error(
                        spanned.referenced,
                        &path,
                        "a listener needs exactly one of `tls` or `redirect_to_https`",
                    )
                    .hint("plain HTTP is only served to redirect to HTTPS");
                    None
                }
            };
            let limits = &l.limits;
            for (name, value) in [
                ("max_connections", limits.max_connections),
                ("max_connections_per_ip", limits.max_connections_per_ip),
                ("max_headers", limits.max_headers),
                ("max_concurrent_streams", limits.max_concurrent_streams as usize),
            ] {
                if value == 0 {
                    self.error(spanned.referenced, format!("{path}.limits.{name}"), "must be at least 1");
                }
            }
            let Some(kind) = kind else { continue };
            out.push(ListenerSpec {
                name: l.name.as_str().into(),
                bind,
                kind,
                limits: Limits {
                    max_header_bytes: usize::try_from(limits.max_header_bytes.0).unwrap_or(usize::MAX),
                    max_headers: limits.max_headers.max(1),
                    max_body_bytes: limits.max_body_bytes.0,
                    header_read_timeout: limits.header_read_timeout.0,
                    body_read_timeout: limits.body_read_timeout.0,
                    idle_timeout: limits.idle_timeout.0,
                    max_connections: limits.max_connections.max(1),
                    max_connections_per_ip: limits.max_connections_per_ip.max(1),
                    max_concurrent_streams: limits.max_concurrent_streams.max(1),
                },
            });
        }
        out
    }

    fn server_tls(&mut self, t: &raw::TlsConfig, path: &str) -> Option<Arc<rustls::ServerConfig>> {
        if t.certificates.value.is_empty() {
            self.error(
                t.certificates.referenced,
                format!("{path}.tls.certificates"),
                "at least one certificate is needed",
            );
            return None;
        }
        let mut keys = Vec::new();
        for (j, ck) in t.certificates.value.iter().enumerate() {
            keys.extend(self.cert_and_key(&ck.cert, &ck.key, &format!("{path}.tls.certificates[{j}]")));
        }
        let client_auth = match &t.client_auth {
            None => ClientAuth::None,
            Some(ca) if ca.mode.value == ClientAuthMode::None => ClientAuth::None,
            Some(ca) => {
                let Some(file) = &ca.trusted_cas else {
                    self.error(
                        ca.mode.referenced,
                        format!("{path}.tls.client_auth"),
                        "client certificates need `trusted_cas`",
                    )
                    .hint("name the PEM file of the CAs that issue client certificates");
                    return None;
                };
                let cas = self.certs(file, &format!("{path}.tls.client_auth.trusted_cas"))?;
                let mut crls = Vec::new();
                for (k, crl) in ca.crls.iter().enumerate() {
                    match tls::load_crl(&self.resolve(crl)) {
                        Ok(c) => crls.push(c),
                        Err(e) => {
                            self.error(crl.referenced, format!("{path}.tls.client_auth.crls[{k}]"), e);
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
                self.error(t.certificates.referenced, format!("{path}.tls"), e);
                None
            }
        }
    }

    fn backends(&mut self, raw: &BTreeMap<String, Spanned<raw::BackendConfig>>) -> BTreeMap<String, Arc<Backend>> {
        let mut out = BTreeMap::new();
        for (name, spanned) in raw {
            let b = &spanned.value;
            let path = format!("backends.{name}");
            let backend = match (b.builtin, b.urls.is_empty()) {
                (Some(raw::Builtin::Echo), true) => Some(Backend::echo(name)),
                (None, false) => self.pool(name, b, &path),
                _ => {
                    self.error(spanned.referenced, &path, "a backend needs exactly one of `urls` or `builtin`")
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

    fn pool(&mut self, name: &str, b: &raw::BackendConfig, path: &str) -> Option<Backend> {
        let mut upstreams = Vec::new();
        for (i, url) in b.urls.iter().enumerate() {
            match Upstream::parse(&url.value) {
                Ok(u) => upstreams.push(u),
                Err(e) => {
                    self.error(url.referenced, format!("{path}.urls[{i}]"), e)
                        .hint("write a base URL like http://127.0.0.1:7071 or https://app.internal/api");
                }
            }
        }
        let (mut trusted_cas, mut client_cert) = (None, None);
        if let Some(t) = &b.tls {
            if let Some(file) = &t.trusted_cas {
                trusted_cas = Some(self.certs(file, &format!("{path}.tls.trusted_cas"))?);
            }
            match (&t.client_cert, &t.client_key) {
                (Some(cert), Some(key)) => {
                    client_cert = Some(self.cert_and_key(cert, key, &format!("{path}.tls.client_cert"))?)
                }
                (None, None) => {}
                (Some(at), None) | (None, Some(at)) => {
                    self.error(at.referenced, format!("{path}.tls"), "`client_cert` and `client_key` go together");
                    return None;
                }
            }
        }
        let tls = match tls::client_config(trusted_cas.map_or(tls::Roots::System, tls::Roots::Only), client_cert) {
            Ok(c) => c,
            Err(e) => {
                self.error(Location::UNKNOWN, format!("{path}.tls"), e);
                return None;
            }
        };
        let health_check = b.health_check.as_ref().and_then(|h| {
            if !h.path.value.starts_with('/') {
                self.error(h.path.referenced, format!("{path}.health_check.path"), "must start with '/'");
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

    fn policies(
        &mut self,
        raw: &BTreeMap<String, Spanned<raw::PolicyConfig>>,
        issuer: Option<&(Arc<Issuer>, Arc<str>)>,
    ) -> HashMap<String, Arc<NamedPolicy>> {
        let mut out = HashMap::new();
        for (name, spanned) in raw {
            let p = &spanned.value;
            let path = format!("policies.{name}");
            let kinds = [
                p.headers.is_some(),
                p.cors.is_some(),
                p.ip_filter.is_some(),
                p.jwt.is_some(),
                p.client_cert.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                self.error(spanned.referenced, &path, "a policy has exactly one kind")
                    .hint("one of headers, cors, ip_filter, jwt, client_cert; write several policies to combine them");
                continue;
            }
            let at = spanned.referenced;
            let policy = if let Some(h) = &p.headers {
                let request = self.header_edits(&h.request, &format!("{path}.headers.request"));
                let response = self.header_edits(&h.response, &format!("{path}.headers.response"));
                Policy::Headers(HeaderRules { request, response })
            } else if let Some(c) = &p.cors {
                match Cors::compile(c) {
                    Ok(cors) => Policy::Cors(cors),
                    Err(errors) => {
                        for (field, message) in errors {
                            self.error(at, format!("{path}.cors.{field}"), message)
                                .hint("see the cors section of README.md");
                        }
                        continue;
                    }
                }
            } else if let Some(f) = &p.ip_filter {
                Policy::IpFilter(IpFilter::compile(f))
            } else if let Some(j) = &p.jwt {
                for file in j.keys.iter().chain(&j.trusted_cas) {
                    self.resolve(file);
                }
                if let Some(ValueRef::File(file)) = &j.secret {
                    self.watch(file);
                }
                if let Some(cas) = &j.trusted_cas {
                    self.certs(cas, &format!("{path}.jwt.trusted_cas"));
                }
                match Jwt::compile(name, j, &self.dir, issuer.map(|(i, _)| &**i)) {
                    Ok(jwt) => {
                        if !jwt.checks_audience() {
                            self.warn(at, format!("{path}.jwt.audiences"), "no `audiences`: a token this issuer made for any other API (or an ID token) is accepted here; list this API's audience");
                        }
                        Policy::Jwt(jwt)
                    }
                    Err(errors) => {
                        for (field, message) in errors {
                            let at = jwt_field_location(j, &field).unwrap_or(at);
                            self.error(at, format!("{path}.jwt.{field}"), message)
                                .hint("see the jwt section of README.md");
                        }
                        continue;
                    }
                }
            } else if let Some(c) = &p.client_cert {
                match ClientCert::compile(c) {
                    Ok(policy) => Policy::ClientCert(policy),
                    Err(message) => {
                        self.error(at, format!("{path}.client_cert"), message)
                            .hint("see the client_cert section of README.md");
                        continue;
                    }
                }
            } else {
                unreachable!("exactly one kind was checked above")
            };
            let allowed = crate::telemetry::metrics().policy_decisions.with_label_values(&[name, "allowed"]);
            out.insert(
                name.clone(),
                Arc::new(NamedPolicy { name: name.as_str().into(), mode: p.mode, policy, allowed }),
            );
        }
        out
    }

    /// The token issuer: its key read, its store opened (created and migrated if new).
    fn issuer(
        &mut self,
        raw: &Spanned<IdentityConfig>,
        listeners: &[Spanned<raw::ListenerConfig>],
    ) -> Option<(Arc<Issuer>, Arc<str>)> {
        let cfg = &raw.value;
        let errors = self.errors.len();
        match listeners.iter().find(|l| l.value.name == cfg.listener.value) {
            Some(l) if l.value.tls.is_some() => {}
            found => {
                let known: Vec<&str> =
                    listeners.iter().filter(|l| l.value.tls.is_some()).map(|l| l.value.name.as_str()).collect();
                let what = if found.is_some() { "is not a TLS listener" } else { "is not a listener" };
                self.error(cfg.listener.referenced, "identity.listener", format!("{:?} {what}", cfg.listener.value))
                    .hint(format!("name a listener with `tls`: {}", known.join(", ")));
            }
        }
        let issuer = cfg.issuer.value.trim_end_matches('/');
        let valid_issuer = issuer
            .strip_prefix("https://")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#']) && issuer.parse::<http::Uri>().is_ok());
        if !valid_issuer {
            self.error(
                cfg.issuer.referenced,
                "identity.issuer",
                format!("{:?} is not an https:// URL", cfg.issuer.value),
            )
            .hint("write the public base URL clients reach the gateway at, like https://login.example.com");
        }
        let ttl = cfg.token_ttl.map_or(Duration::from_secs(3600), |d| d.0);
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(24 * 3600) {
            self.error(raw.referenced, "identity.token_ttl", "must be between 1s and 24h")
                .hint("access tokens are short-lived: 5m to 1h is usual");
        }
        for scope in &cfg.scopes {
            if scope.is_empty() || !scope.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
                self.error(
                    raw.referenced,
                    "identity.scopes",
                    format!("{scope:?} is not a valid scope (RFC 6749 §3.3)"),
                );
            }
        }
        let key_file = self.resolve(&cfg.signing_key);
        let key = match identity::signing::SigningKey::load(&key_file) {
            Ok(key) => Some(key),
            Err(e) => {
                self.error(cfg.signing_key.referenced, "identity.signing_key", e)
                    .hint("an ES256 or Ed25519 PKCS#8 PEM key; `portcullis certs dev` creates certs/dev/token-signing-key.pem");
                None
            }
        };
        // The store is not watched: the CLI changes it while the gateway runs.
        let store =
            match StoreLocation::parse(&cfg.store.value, &self.dir).and_then(|l| l.open().map_err(|e| e.to_string())) {
                Ok(store) => Some(store),
                Err(e) => {
                    self.error(cfg.store.referenced, "identity.store", e)
                        .hint("write sqlite:PATH, relative to this file, in a directory the gateway may write");
                    None
                }
            };
        let (Some(key), Some(store)) = (key, store) else { return None };
        if self.errors.len() != errors {
            return None;
        }
        let settings = IssuerSettings {
            issuer: issuer.to_owned(),
            audience: cfg.audience.clone(),
            ttl,
            scopes: cfg.scopes.clone(),
            key,
            store,
            rate_limit: cfg.rate_limit,
        };
        Some((Arc::new(Issuer::new(settings)), cfg.listener.value.as_str().into()))
    }

    fn header_edits(&mut self, raw: &raw::HeaderRulesConfig, path: &str) -> HeaderEdits {
        let mut edits = HeaderEdits::default();
        for name in &raw.remove {
            if let Some(n) = self.header_name(&name.value, name.referenced, &format!("{path}.remove")) {
                edits.remove.push(n);
            }
        }
        for (name, value) in &raw.set {
            let Some(n) = self.header_name(name, value.referenced, &format!("{path}.set")) else {
                continue;
            };
            if let ValueRef::File(file) = &value.value {
                self.watch(file);
            }
            let text = match value.value.resolve(&self.dir) {
                Ok(t) => t,
                Err(e) => {
                    self.error(value.referenced, format!("{path}.set.{name}"), e);
                    continue;
                }
            };
            match HeaderValue::try_from(text) {
                Ok(mut v) => {
                    v.set_sensitive(value.value.is_secret());
                    edits.set.push((n, v));
                }
                Err(_) => {
                    self.error(value.referenced, format!("{path}.set.{name}"), "not a valid header value")
                        .hint("use visible ASCII without line breaks");
                }
            }
        }
        edits
    }

    fn header_name(&mut self, name: &str, at: Location, path: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(at, path, format!("{name:?} is not a valid header name"))
                    .hint("header names are letters, digits and '-'");
                None
            }
        }
    }

    fn references(
        &mut self,
        names: &[Located],
        path: &str,
        policies: &HashMap<String, Arc<NamedPolicy>>,
        declared: &Declared<'_>,
    ) -> Vec<Arc<NamedPolicy>> {
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match policies.get(&name.value) {
                Some(p) => out.push(p.clone()),
                // Declared but broken: its own error is already reported.
                None if declared.policies.contains_key(&name.value) => {}
                None => {
                    let known = sorted_keys(policies.keys());
                    self.error(name.referenced, format!("{path}[{i}]"), format!("unknown policy {:?}", name.value))
                        .hint(format!("defined policies: {known}"));
                }
            }
        }
        out
    }

    fn routes(
        &mut self,
        raw: &[Spanned<raw::RouteConfig>],
        defaults: &[Arc<NamedPolicy>],
        policies: &HashMap<String, Arc<NamedPolicy>>,
        backends: &BTreeMap<String, Arc<Backend>>,
        declared: &Declared<'_>,
    ) -> RouteTable {
        let mut table = RouteTable::default();
        let mut names = HashSet::new();
        for (i, spanned) in raw.iter().enumerate() {
            let r = &spanned.value;
            let path = format!("routes[{i}]");
            if !names.insert(r.name.clone()) {
                self.error(
                    spanned.referenced,
                    format!("{path}.name"),
                    format!("route name {:?} is used twice", r.name),
                );
            }
            let m = &r.matcher;
            let path_match = match (&m.path_prefix, &m.path) {
                (None, None) => Some(PathMatch::Any),
                (Some(prefix), None) if prefix.value.starts_with('/') => Some(PathMatch::Prefix(prefix.value.clone())),
                (Some(prefix), None) => {
                    self.error(prefix.referenced, format!("{path}.match.path_prefix"), "must start with '/'");
                    None
                }
                (None, Some(template)) => match PathMatch::template(&template.value) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        self.error(template.referenced, format!("{path}.match.path"), e)
                            .hint("a template looks like /partners/accounts/{account}/cases/**");
                        None
                    }
                },
                (Some(at), Some(_)) => {
                    self.error(at.referenced, format!("{path}.match"), "`path_prefix` and `path` exclude each other")
                        .hint("keep one of them");
                    None
                }
            };
            let mut methods = Vec::new();
            for (j, method) in m.methods.iter().enumerate() {
                match Method::from_bytes(method.value.to_ascii_uppercase().as_bytes()) {
                    Ok(meth) => methods.push(meth),
                    Err(_) => {
                        self.error(
                            method.referenced,
                            format!("{path}.match.methods[{j}]"),
                            format!("{:?} is not an HTTP method", method.value),
                        );
                    }
                }
            }
            let mut chain = Chain { policies: defaults.to_vec() };
            chain.policies.extend(self.references(&r.policies, &format!("{path}.policies"), policies, declared));
            let backend = match backends.get(&r.backend.value) {
                Some(b) => Some(b.clone()),
                None if declared.backends.contains_key(&r.backend.value) => None,
                None => {
                    let known = sorted_keys(backends.keys());
                    self.error(
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
                    self.error(
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
                hosts: m.hosts.iter().map(|h| HostPattern::parse(&h.value)).collect(),
                path: path_match,
                methods,
                chain,
                backend,
                strip_prefix,
                metrics: RouteMetrics::new(r.name.as_str().into()),
            };
            if let Some(earlier) = table.routes.iter().find(|e| shadows(e, &route)) {
                let message = format!(
                    "route {:?} is never reached: route {:?} before it matches all its requests",
                    route.name, earlier.name
                );
                self.warn(spanned.referenced, &path, message);
            }
            table.routes.push(route);
        }
        table
    }
}

/// The issuer's three routes, run before the configured ones on its listener, through the
/// default policies only.
fn identity_endpoints(issuer: Arc<Issuer>, listener: Arc<str>, defaults: &[Arc<NamedPolicy>]) -> IdentityEndpoints {
    let backend = Arc::new(Backend::issuer("identity", issuer.clone()));
    let route = |name: &str, path: &str| Route {
        name: name.into(),
        hosts: Vec::new(),
        path: PathMatch::template(path).expect("a literal path"),
        methods: Vec::new(),
        chain: Chain { policies: defaults.to_vec() },
        backend: backend.clone(),
        strip_prefix: None,
        metrics: RouteMetrics::new(name.into()),
    };
    let routes = RouteTable {
        routes: vec![
            route("identity-token", identity::TOKEN_PATH),
            route("identity-discovery", identity::DISCOVERY_PATH),
            route("identity-jwks", identity::JWKS_PATH),
        ],
    };
    IdentityEndpoints { listener, issuer, routes }
}

/// Where a `jwt` field was written, for the fields that keep their location.
fn jwt_field_location(cfg: &raw::JwtConfig, field: &str) -> Option<Location> {
    if field == "trusted_cas" {
        return cfg.trusted_cas.as_ref().map(|f| f.referenced);
    }
    let index: usize = field.strip_prefix("keys[")?.strip_suffix(']')?.parse().ok()?;
    cfg.keys.get(index).map(|f| f.referenced)
}

/// Names the file declares, compiled or not: a reference to a declared but broken entry
/// is not reported again as unknown.
struct Declared<'r> {
    policies: &'r BTreeMap<String, Spanned<raw::PolicyConfig>>,
    backends: &'r BTreeMap<String, Spanned<raw::BackendConfig>>,
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

fn sorted_policies(policies: HashMap<String, Arc<NamedPolicy>>) -> Vec<Arc<NamedPolicy>> {
    let mut out: Vec<_> = policies.into_values().collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn sorted_keys<'k>(keys: impl Iterator<Item = &'k String>) -> String {
    let mut keys: Vec<&str> = keys.map(String::as_str).collect();
    keys.sort_unstable();
    if keys.is_empty() {
        "(none)".to_owned()
    } else {
        keys.join(", ")
    }
}
