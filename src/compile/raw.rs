//! The YAML contract operators write (README: A policy file, in short), as serde types. Every struct denies unknown
//! keys; names that other parts refer to, and file paths, keep their location so that a
//! dangling reference or an unreadable file is reported at its `file:line:column`.

// Each field is the YAML key of the same name; the README's configuration reference documents them.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub use crate::config::values::Located;
use crate::config::values::{ByteSize, ConfigDuration, ValueRef};
pub use crate::identity::IdentityConfig;
/// One named policy: exactly one kind, plus the common `mode` (`policy_kinds!` declares it).
pub use crate::policy::{PolicyConfig, PolicyMode};
pub use crate::secrets::SecretsConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub version: Spanned<u32>,
    #[serde(default)]
    pub listeners: Vec<Spanned<ListenerConfig>>,
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<IpNet>>,
    /// The header trusted proxies write the client address chain in.
    #[serde(default)]
    pub forwarded_header: crate::request::client_ip::ForwardedHeader,
    #[serde(default)]
    pub default_policies: Vec<Located>,
    #[serde(default)]
    pub backends: BTreeMap<String, Spanned<BackendConfig>>,
    #[serde(default)]
    pub policies: BTreeMap<String, Spanned<PolicyConfig>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteConfig>>,
    /// Named sets of routes that subscriptions may be scoped to.
    #[serde(default)]
    pub products: BTreeMap<String, Spanned<ProductConfig>>,
    /// How long a shutdown waits for in-flight requests.
    pub drain_timeout: Option<ConfigDuration>,
    /// Reload when the configuration or a file it names changes (default true).
    pub watch_files: Option<bool>,
    /// The optional token issuer (README: Token issuer).
    pub identity: Option<Spanned<IdentityConfig>>,
    /// The optional encrypted secret store behind `${secret:NAME}`.
    pub secrets: Option<Spanned<SecretsConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: Located,
    pub tls: Option<TlsConfig>,
    /// A plain listener that answers every request with a redirect to this base URL.
    pub redirect_to_https: Option<Located>,
    #[serde(default)]
    pub limits: LimitsConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub certificates: Spanned<Vec<CertKeyConfig>>,
    #[serde(default)]
    pub min_version: TlsVersion,
    pub client_auth: Option<ClientAuthConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertKeyConfig {
    /// A PEM certificate chain, or a PKCS#12 file (`.pfx`, `.p12`) holding the key too.
    pub cert: Located,
    /// The PEM private key (not with a PKCS#12 file).
    pub key: Option<Located>,
    /// The PKCS#12 file's password (`${secret:}`, `${env:}`, `${file:}`).
    pub password: Option<Spanned<ValueRef>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    pub mode: Spanned<ClientAuthMode>,
    pub trusted_cas: Option<Located>,
    #[serde(default)]
    pub crls: Vec<Located>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    None,
    Optional,
    Required,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_header_bytes: ByteSize,
    pub max_headers: usize,
    pub max_body_bytes: ByteSize,
    pub header_read_timeout: ConfigDuration,
    pub body_read_timeout: ConfigDuration,
    pub idle_timeout: ConfigDuration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_concurrent_streams: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = crate::runtime::Limits::default();
        Self {
            max_header_bytes: ByteSize(d.max_header_bytes as u64),
            max_headers: d.max_headers,
            max_body_bytes: ByteSize(d.max_body_bytes),
            header_read_timeout: ConfigDuration(d.header_read_timeout),
            body_read_timeout: ConfigDuration(d.body_read_timeout),
            idle_timeout: ConfigDuration(d.idle_timeout),
            max_connections: d.max_connections,
            max_connections_per_ip: d.max_connections_per_ip,
            max_concurrent_streams: d.max_concurrent_streams,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub bind: Located,
    /// Client networks allowed to use the admin listener; empty: any.
    #[serde(default)]
    pub allow: Vec<IpNet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    #[serde(default)]
    pub urls: Vec<Located>,
    pub builtin: Option<Builtin>,
    pub timeout: Option<ConfigDuration>,
    /// Longest stall between response-body bytes; `0s` turns it off (event streams).
    pub body_timeout: Option<ConfigDuration>,
    pub connect_timeout: Option<ConfigDuration>,
    #[serde(default)]
    pub retries: u32,
    pub health_check: Option<HealthCheckConfig>,
    pub tls: Option<BackendTlsConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builtin {
    /// Answers 200 with what it received, as JSON.
    Echo,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    pub path: Located,
    pub interval: ConfigDuration,
    pub timeout: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsConfig {
    pub trusted_cas: Option<Located>,
    /// A PEM certificate chain, or a PKCS#12 file (`.pfx`, `.p12`) holding the key too.
    pub client_cert: Option<Located>,
    pub client_key: Option<Located>,
    /// The PKCS#12 file's password.
    pub client_password: Option<Spanned<ValueRef>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    #[serde(default)]
    pub policies: Vec<Located>,
    pub backend: Located,
    pub rewrite: Option<RewriteConfig>,
    /// `refuse` (default) a path with `;` parameters, or `strip` them.
    #[serde(default)]
    pub path_parameters: crate::route::PathParameters,
    /// A method-override header passed to the backend (`X-HTTP-Method-Override`,
    /// `X-HTTP-Method` or `X-Method-Override`); policies decide on the method it names.
    pub method_override: Option<Located>,
    /// Protocol upgrades the route passes to its backend: `[websocket]` or none (Envoy's
    /// `upgrade_configs`).
    #[serde(default)]
    pub upgrades: Vec<Located>,
    /// Limits of the route's upgraded (WebSocket) connections.
    pub websocket: Option<WebSocketConfig>,
}

/// `websocket:` on a route; every field has a default (README: WebSockets).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// No frame either way for this long closes the connection (default 5m).
    pub idle_timeout: Option<ConfigDuration>,
    /// The longest an upgraded connection stays open (default 8h).
    pub max_lifetime: Option<ConfigDuration>,
    /// The longest message, summed over its frames (default 1MiB).
    pub max_message_bytes: Option<ByteSize>,
    /// Close when the handshake's token or client certificate expires (default true).
    pub close_on_credential_expiry: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(default)]
    pub hosts: Vec<Located>,
    pub path_prefix: Option<Located>,
    pub path: Option<Located>,
    #[serde(default)]
    pub methods: Vec<Located>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    pub strip_prefix: Option<Located>,
}

/// One product as written in YAML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductConfig {
    /// What callers and operators call it (APIM's `displayName`).
    pub display_name: Option<String>,
    /// The routes it opens, by name.
    pub routes: Vec<Located>,
}
