//! The compiled, immutable configuration every request runs against. It is built whole by
//! [`crate::compile::load`] and swapped atomically, so a request always sees one configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::identity::Issuer;
use crate::ipset::IpSet;
use crate::policy::NamedPolicy;
use crate::proxy::Backend;
use crate::request::client_ip::ForwardedHeader;
use crate::request::headers::GatewayHeaders;
use crate::route::RouteTable;
use crate::tls::CertificateInUse;

/// Default drain deadline when the configuration names none.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// One compiled configuration: everything a request needs, ready to use.
pub struct Runtime {
    /// The configuration file it was built from.
    pub source: PathBuf,
    /// The listeners to bind.
    pub listeners: Vec<ListenerSpec>,
    /// The admin listener's address, if configured.
    pub admin: Option<SocketAddr>,
    /// Who may use the admin listener (empty: anyone who can reach it).
    pub admin_allow: IpSet,
    /// Reload when a file of the configuration changes (`watch_files`, default true).
    pub watch_files: bool,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: IpSet,
    /// The header those peers write the client address chain in.
    pub forwarded_header: ForwardedHeader,
    /// Every route, the issuer's first.
    pub routes: RouteTable,
    /// Every backend, for health checks and readiness.
    pub backends: Vec<Arc<Backend>>,
    /// Every named policy, by name.
    pub policies: Vec<Arc<NamedPolicy>>,
    /// Headers the gateway owns, removed from every request (a trusted proxy keeps its
    /// forwarding chain and `X-Request-Id`).
    pub gateway_headers: GatewayHeaders,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// The configuration file and every file it references: a change to any reloads.
    pub files: Vec<PathBuf>,
    /// Every certificate the configuration uses, for expiry tracking.
    pub certificates: Vec<CertificateInUse>,
    /// The token issuer, when `identity` is configured (its routes are in `routes`).
    pub issuer: Option<Arc<Issuer>>,
    /// Its certificates' expiry series, shown while it is in use (set when it starts serving).
    pub expiry_series: std::sync::OnceLock<Vec<crate::telemetry::metrics::ExpirySeries>>,
}

impl Runtime {
    /// Starts background work (active health checks). Needs a tokio runtime.
    pub fn start(&self) {
        for backend in &self.backends {
            backend.start();
        }
        for named in &self.policies {
            named.policy.start();
        }
    }

    /// Reads the issuer store's subscription keys, when there is an issuer: before the
    /// runtime serves, or answers `trace` and `test`.
    ///
    /// # Errors
    /// The store cannot be read; `subscription_key` policies answer 503 until it is.
    pub async fn load_keyring(&self) -> Result<(), crate::store::StoreError> {
        match &self.issuer {
            Some(issuer) => issuer.load_keyring().await,
            None => Ok(()),
        }
    }

    /// What keeps the gateway from being ready: backends without a healthy url, `jwt`
    /// policies without keys. Empty when ready.
    pub fn not_ready(&self) -> Vec<String> {
        let backends =
            self.backends.iter().filter(|b| !b.is_ready()).map(|b| format!("backend {} has no healthy url", b.name));
        let policies =
            self.policies.iter().filter(|p| !p.policy.is_ready()).map(|p| format!("policy {} has no keys yet", p.name));
        backends.chain(policies).collect()
    }

    /// The listener of this name.
    pub fn listener(&self, name: &str) -> Option<&ListenerSpec> {
        self.listeners.iter().find(|l| &*l.name == name)
    }
}

/// One listener, compiled.
pub struct ListenerSpec {
    /// Its configured name.
    pub name: Arc<str>,
    /// The address to bind (port 0: any free port).
    pub bind: SocketAddr,
    /// TLS, or a plain redirect to HTTPS.
    pub kind: ListenerKind,
    /// Its limits.
    pub limits: Limits,
}

/// What a listener serves.
pub enum ListenerKind {
    /// HTTPS with this TLS configuration.
    Tls(Arc<rustls::ServerConfig>),
    /// Plain HTTP that only redirects to this HTTPS base URL (no trailing `/`).
    Redirect(Arc<str>),
}

/// A listener's limits (the `limits:` section).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest request head, in bytes (default 16 KiB; HTTP/1.1 never goes below 8 KiB).
    pub max_header_bytes: usize,
    /// Header fields per request (HTTP/1.1 and h2; default 100).
    pub max_headers: usize,
    /// The largest request body, in bytes (default 10 MiB).
    pub max_body_bytes: u64,
    /// How long a client may take for its TLS handshake, and for its request head (default 10s).
    pub header_read_timeout: Duration,
    /// The longest a request body may stall between bytes (default 30s).
    pub body_read_timeout: Duration,
    /// The interval of h2 keep-alive pings (default 60s); HTTP/1.1 connections do not use it.
    pub idle_timeout: Duration,
    /// Open connections of this listener, at most (default 10 000).
    pub max_connections: usize,
    /// Open connections per client address (IPv4) or /64 (IPv6) (default 512).
    pub max_connections_per_ip: usize,
    /// Concurrent streams per h2 connection (default 100).
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    /// The defaults of a listener's `limits:` section.
    fn default() -> Self {
        Self {
            max_header_bytes: 16 << 10,
            max_headers: 100,
            max_body_bytes: 10 << 20,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_ip: 512,
            max_concurrent_streams: 100,
        }
    }
}
