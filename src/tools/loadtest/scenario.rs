//! The `portcullis bench` scenario file (README: `portcullis bench`): weighted request kinds with expected
//! statuses, tokens minted from keys, TLS settings, run length and thresholds.

// Each field is the scenario key of the same name; the README's `bench` section documents them.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::config::values::ConfigDuration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Base URL, like `https://localhost:8443`; `--url` or `--config` may give it instead.
    pub target: Option<String>,
    pub duration: Option<ConfigDuration>,
    /// Stop after this many requests instead of a duration.
    pub requests_total: Option<u64>,
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// false: a new TLS connection for every request.
    #[serde(default = "default_true")]
    pub keep_alive: bool,
    #[serde(default)]
    pub http: HttpVersion,
    #[serde(default)]
    pub tls: TlsSettings,
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenSpec>,
    pub requests: Vec<RequestKind>,
    #[serde(default)]
    pub thresholds: Thresholds,
}

fn default_connections() -> usize {
    16
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum HttpVersion {
    #[default]
    #[serde(rename = "1.1")]
    Http1,
    #[serde(rename = "2")]
    Http2,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// CA that signed the server certificate (PEM); the system roots when absent.
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// SNI and certificate name; the target's host when absent.
    pub server_name: Option<String>,
}

/// A token minted before the run (or per request with `unique`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// PEM private key (PKCS#8), or a secret file for HS*.
    pub key: PathBuf,
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// `exp` = now + ttl; a leading `-` makes an expired token.
    #[serde(default = "default_ttl")]
    pub ttl: String,
    /// A fresh token (new `jti`) for every request: measures verification, not the cache.
    #[serde(default)]
    pub unique: bool,
}

fn default_ttl() -> String {
    "1h".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestKind {
    pub name: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default = "default_method")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    pub expect: u16,
}

fn default_weight() -> u32 {
    1
}

fn default_method() -> String {
    "GET".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub min_rps: Option<f64>,
    pub p99: Option<ConfigDuration>,
    pub unexpected_status: Option<u64>,
}

impl Scenario {
    /// Reads a scenario; paths in it become relative to its file.
    ///
    /// # Errors
    /// Unreadable or invalid file, with its location.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Parses `text` as the scenario file `path` (paths in it become relative to its folder).
    ///
    /// # Errors
    /// Invalid YAML or values, with their location.
    pub fn parse(path: &Path, text: &str) -> anyhow::Result<Self> {
        let mut scenario: Self = serde_saphyr::from_str(text).map_err(|e| {
            let at = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
            anyhow::anyhow!("{}{at}: {}", path.display(), e.without_snippet())
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in
            [&mut scenario.tls.ca, &mut scenario.tls.client_cert, &mut scenario.tls.client_key].into_iter().flatten()
        {
            *p = dir.join(&*p);
        }
        for token in scenario.tokens.values_mut() {
            token.key = dir.join(&token.key);
        }
        if scenario.requests.is_empty() || scenario.requests.iter().all(|r| r.weight == 0) {
            bail!("{}: list at least one request kind with a weight above 0", path.display());
        }
        if scenario.connections == 0 {
            bail!("{}: connections must be at least 1", path.display());
        }
        Ok(scenario)
    }

    /// How long to run when no request count is given.
    pub fn run_length(&self) -> Duration {
        self.duration.map_or(Duration::from_secs(10), |d| d.0)
    }
}
