//! The compiled, immutable configuration every request runs against. It is built whole by
//! [`crate::config::load`] and swapped atomically, so a request always sees one configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::identity::Issuer;
use crate::ipset::IpSet;
use crate::policy::NamedPolicy;
use crate::proxy::Backend;
use crate::request::headers::GatewayHeaders;
use crate::route::RouteTable;
use crate::tls::CertificateInUse;

/// Default drain deadline when the configuration names none.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Runtime {
    /// The configuration file it was built from.
    pub source: PathBuf,
    pub listeners: Vec<ListenerSpec>,
    pub admin: Option<SocketAddr>,
    /// Who may use the admin listener (empty: anyone who can reach it).
    pub admin_allow: IpSet,
    pub watch_files: bool,
    pub trusted_proxies: IpSet,
    pub routes: RouteTable,
    pub backends: Vec<Arc<Backend>>,
    /// Every named policy, by name.
    pub policies: Vec<Arc<NamedPolicy>>,
    pub gateway_headers: GatewayHeaders,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// The configuration file and every file it references: a change to any reloads.
    pub files: Vec<PathBuf>,
    /// Every certificate the configuration uses, for expiry tracking.
    pub certificates: Vec<CertificateInUse>,
    /// The token issuer, when `identity` is configured (its routes are in `routes`).
    pub issuer: Option<Arc<Issuer>>,
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

    /// What keeps the gateway from being ready: backends without a healthy url, `jwt`
    /// policies without keys. Empty when ready.
    pub fn not_ready(&self) -> Vec<String> {
        let backends =
            self.backends.iter().filter(|b| !b.is_ready()).map(|b| format!("backend {} has no healthy url", b.name));
        let policies =
            self.policies.iter().filter(|p| !p.policy.is_ready()).map(|p| format!("policy {} has no keys yet", p.name));
        backends.chain(policies).collect()
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerSpec> {
        self.listeners.iter().find(|l| &*l.name == name)
    }
}

pub struct ListenerSpec {
    pub name: Arc<str>,
    pub bind: SocketAddr,
    pub kind: ListenerKind,
    pub limits: Limits,
}

pub enum ListenerKind {
    Tls(Arc<rustls::ServerConfig>),
    /// Plain HTTP that only redirects to this HTTPS base URL (no trailing `/`).
    Redirect(Arc<str>),
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    /// Header fields per request (HTTP/1.1 and h2).
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    /// The longest a request body may stall between bytes.
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Open connections per client address (IPv4) or /64 (IPv6).
    pub max_connections_per_ip: usize,
    /// Concurrent streams per h2 connection.
    pub max_concurrent_streams: u32,
}
