//! Verification keys for the `jwt` policy: from PEM files, a shared secret, a JWKS URL or an
//! OpenID discovery document. Remote keys are fetched over HTTPS (system roots plus an
//! optional `trusted_cas`), refreshed on a schedule that honours `Cache-Control: max-age`
//! within bounds, refreshed on demand for an unknown `kid` at most once per
//! `min_refresh`, and kept when the issuer is down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::task::OwnedTask;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{AlgorithmFamily, DecodingKey};

use super::crypto::Verifiers;

/// Largest JWKS or discovery document accepted.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds on a `Cache-Control: max-age` the issuer sends.
const MIN_MAX_AGE: Duration = Duration::from_secs(60);
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Why keys could not be loaded; the previous keys, if any, stay in force.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0} is not JSON: {1}")]
    /// A fetched document is not JSON.
    NotJson(&'static str, String),
    #[error("JWKS has no `keys` array")]
    /// The JWKS has no `keys` array.
    NoKeysArray,
    #[error("the JWKS holds no usable signing key")]
    /// The JWKS holds no key usable for signatures.
    NoUsableKey,
    #[error("discovery document has no jwks_uri")]
    /// The discovery document names no `jwks_uri`.
    NoJwksUri,
    #[error("jwks_uri {0:?} is not https")]
    /// The discovery document names a `jwks_uri` that is not https.
    NotHttps(String),
    #[error("static keys are not fetched")]
    /// A static key source was asked to fetch.
    Static,
    #[error("{url}: {why}")]
    /// Fetching a document failed.
    Fetch {
        /// The document's URL.
        url: String,
        /// What went wrong.
        why: String,
    },
}

/// One verification key.
pub struct Key {
    /// The key id it is published under; `None` for configured files and secrets.
    pub kid: Option<String>,
    /// RSA, EC, Ed or HMAC.
    pub family: AlgorithmFamily,
    /// The key parsed once per algorithm of its family.
    pub verifiers: Verifiers,
}

impl Key {
    /// `None` when the key can verify no algorithm (an RSA key under 2048 bits, an unknown curve).
    pub fn new(kid: Option<String>, key: &DecodingKey) -> Option<Self> {
        let verifiers = Verifiers::new(key);
        (!verifiers.is_empty()).then(|| Self { kid, family: key.family(), verifiers })
    }
}

/// The keys in force. Each set gets a new `generation`, so a cache of verified tokens can
/// tell that the keys changed since it verified one.
pub struct KeySet {
    /// The keys.
    pub keys: Vec<Key>,
    /// Unique per set: a cached verification under another generation is stale.
    pub generation: u64,
}

impl Default for KeySet {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl KeySet {
    /// A set with a new generation.
    pub fn new(keys: Vec<Key>) -> Self {
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self { keys, generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed) }
    }

    /// Keys of `family` that may have signed a token with this `kid`: keys published with
    /// that `kid`, and keys without one (configured PEM files, a secret).
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        family: AlgorithmFamily,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.family == family && (kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid))
    }

    /// Parses a JWKS document; keys that are unsupported or meant for encryption are skipped.
    ///
    /// # Errors
    /// The document is not JSON with a `keys` array.
    pub fn from_jwks(document: &[u8]) -> Result<Self, KeyError> {
        let value: serde_json::Value =
            serde_json::from_slice(document).map_err(|e| KeyError::NotJson("JWKS", e.to_string()))?;
        let entries = value.get("keys").and_then(|k| k.as_array()).ok_or(KeyError::NoKeysArray)?;
        let mut keys = Vec::new();
        for entry in entries {
            if entry.get("use").and_then(|u| u.as_str()).is_some_and(|u| u != "sig") {
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else { continue };
            // Never trust a published secret.
            if matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
            keys.extend(Key::new(jwk.common.key_id.clone(), &key));
        }
        Ok(Self::new(keys))
    }
}

/// Where a policy's keys come from.
pub enum Source {
    /// Keys read at load (PEM files, a secret, the gateway's own issuer).
    Static(Arc<KeySet>),
    /// A JWKS URL.
    Jwks(String),
    /// An OpenID discovery document URL.
    Discovery(String),
}

/// A policy's keys, swapped whole on refresh; readers never wait.
pub struct KeyStore {
    /// The policy's name, for logs and metrics.
    pub name: Arc<str>,
    source: Source,
    client: Option<Client<HttpsConnector<HttpConnector>, Empty<Bytes>>>,
    current: ArcSwapOption<KeySet>,
    /// When the last fetch was tried; held while fetching so that fetches never overlap.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    refresh: Duration,
    min_refresh: Duration,
    task: OwnedTask,
}

impl KeyStore {
    /// A store for `source`; remote keys are fetched once `start` runs.
    pub fn new(
        name: &str,
        source: Source,
        tls: Option<Arc<rustls::ClientConfig>>,
        refresh: Duration,
        min_refresh: Duration,
    ) -> Self {
        let current = match &source {
            Source::Static(keys) => ArcSwapOption::from(Some(keys.clone())),
            _ => ArcSwapOption::empty(),
        };
        let client = tls.map(|tls| {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_connect_timeout(Some(Duration::from_secs(5)));
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((*tls).clone())
                .https_only()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http);
            Client::builder(TokioExecutor::new()).build(https)
        });
        Self {
            name: name.into(),
            source,
            client,
            current,
            last_fetch: tokio::sync::Mutex::new(None),
            refresh,
            min_refresh,
            task: OwnedTask::default(),
        }
    }

    /// The keys in force; `None` until remote keys were first loaded.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// Puts `keys` in force in place of the configured ones (`portcullis test` stands them in
    /// for a remote source); a running refresh may replace them again.
    pub fn replace(&self, keys: Arc<KeySet>) {
        self.current.store(Some(keys));
    }

    /// Whether keys are fetched (JWKS or discovery).
    pub fn is_remote(&self) -> bool {
        !matches!(self.source, Source::Static(_))
    }

    /// Starts the refresh loop for remote keys. Needs a tokio runtime.
    pub fn start(self: &Arc<Self>) {
        if !self.is_remote() {
            return;
        }
        let store = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let Some(this) = store.upgrade() else { return };
                let fetched = this.fetch_and_swap().await;
                let result = if fetched.is_ok() { "ok" } else { "error" };
                crate::telemetry::metrics().jwks_fetches.with_label_values(&[&this.name, result]).inc();
                let next = match fetched {
                    Ok(max_age) => {
                        failures = 0;
                        max_age.map_or(this.refresh, |age| age.clamp(MIN_MAX_AGE, MAX_MAX_AGE).min(this.refresh))
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(policy.name = %this.name, error = %e, kept_last_good = this.current().is_some(), "JWKS fetch failed");
                        // 1 s, 2 s, 4 s … while no keys are loaded; never slower than the schedule.
                        Duration::from_secs(1u64 << failures.min(6)).min(this.refresh)
                    }
                };
                drop(this);
                tokio::time::sleep(next).await;
            }
        });
        self.task.set(task);
    }

    /// Refreshes now because a token named an unknown `kid` — unless a fetch happened less
    /// than `min_refresh` ago, so a flood of random kids cannot hammer the issuer.
    pub async fn refresh_for_unknown_kid(&self) {
        if !self.is_remote() {
            return;
        }
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return;
        }
        *last = Some(Instant::now());
        let fetched = self.fetch().await;
        let result = if fetched.is_ok() { "ok" } else { "error" };
        crate::telemetry::metrics().jwks_fetches.with_label_values(&[&self.name, result]).inc();
        match fetched {
            Ok((keys, _)) => self.current.store(Some(Arc::new(keys))),
            Err(e) => tracing::warn!(policy.name = %self.name, error = %e, "JWKS refresh for an unknown kid failed"),
        }
    }

    async fn fetch_and_swap(&self) -> Result<Option<Duration>, KeyError> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        let (keys, max_age) = self.fetch().await?;
        tracing::info!(policy.name = %self.name, keys = keys.keys.len(), "JWKS loaded");
        self.current.store(Some(Arc::new(keys)));
        Ok(max_age)
    }

    async fn fetch(&self) -> Result<(KeySet, Option<Duration>), KeyError> {
        let jwks_url = match &self.source {
            Source::Static(_) => return Err(KeyError::Static),
            Source::Jwks(url) => url.clone(),
            Source::Discovery(url) => {
                let (doc, _) = self.get(url).await?;
                let doc: serde_json::Value =
                    serde_json::from_slice(&doc).map_err(|e| KeyError::NotJson("discovery document", e.to_string()))?;
                let uri = doc.get("jwks_uri").and_then(|u| u.as_str()).ok_or(KeyError::NoJwksUri)?;
                if !uri.starts_with("https://") {
                    return Err(KeyError::NotHttps(uri.to_owned()));
                }
                uri.to_owned()
            }
        };
        let (body, max_age) = self.get(&jwks_url).await?;
        let keys = KeySet::from_jwks(&body)?;
        if keys.keys.is_empty() {
            return Err(KeyError::NoUsableKey);
        }
        Ok((keys, max_age))
    }

    async fn get(&self, url: &str) -> Result<(Bytes, Option<Duration>), KeyError> {
        let failed = |why: String| KeyError::Fetch { url: url.to_owned(), why };
        let client = self.client.as_ref().ok_or_else(|| failed("no HTTPS client".into()))?;
        let uri: Uri = url.parse().map_err(|e| failed(format!("invalid url: {e}")))?;
        let req = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| failed(e.to_string()))?;
        let rsp = tokio::time::timeout(FETCH_TIMEOUT, client.request(req))
            .await
            .map_err(|_| failed("timed out".into()))?
            .map_err(|e| failed(error_chain(&e)))?;
        if rsp.status() != StatusCode::OK {
            return Err(failed(format!("status {}", rsp.status())));
        }
        let max_age = rsp.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(max_age);
        let body = tokio::time::timeout(FETCH_TIMEOUT, Limited::new(rsp.into_body(), MAX_DOCUMENT_BYTES).collect())
            .await
            .map_err(|_| failed("timed out reading the body".into()))?
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        Ok((body, max_age))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `max-age=N` from a Cache-Control value.
fn max_age(value: &str) -> Option<Duration> {
    value
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|n| n.trim().parse().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(max_age("no-cache"), None);
    }

    #[test]
    fn jwks_skips_secrets_encryption_keys_and_garbage() {
        let doc = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"s"},
            {"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB","kid":"e"},
            {"kty":"nope","kid":"x"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"}
        ]}"#;
        let set = KeySet::from_jwks(doc).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kid.as_deref(), Some("ed"));
        assert!(KeySet::from_jwks(b"{}").is_err());
    }
}
