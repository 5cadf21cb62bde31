//! The optional token issuer (README: Token issuer): an OAuth 2.0 authorization server for the
//! client-credentials grant. External systems authenticate with one of their two secrets
//! and get short-lived JWTs signed with the configured ES256 or Ed25519 key; the keys are
//! published at `/.well-known/jwks.json` and `/.well-known/openid-configuration`, so a
//! `jwt` policy trusts the gateway (`issuers: [self]`) like any other issuer.
//!
//! [`crate::store`] is what it keeps and how secrets are made and checked, [`signing`] the
//! key, [`endpoint`] the HTTP side, [`budgets`] what it allows whom, [`revocation`] which store
//! changes end what its tokens granted.

pub mod budgets;
pub mod endpoint;
pub mod revocation;
pub mod signing;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::context::IssuerFacts;
use crate::config::values::{ConfigDuration, Located};
use crate::store::{SecretSlot, Store};
use crate::subscription::{KeyUse, Keyring, Subscription};
use budgets::Budgets;
pub use budgets::TokenRateLimitConfig;
use signing::{PublishedKey, SigningKey};

/// Where the token endpoint is served (RFC 6749 §3.2), on the identity listener.
pub const TOKEN_PATH: &str = "/oauth2/token";
/// Where the discovery document is served (RFC 8414).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Where the public signing key is published as a JWK Set (RFC 7517).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The `identity:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The TLS listener that serves the token endpoint and the key documents.
    pub listener: Located,
    /// The `iss` of issued tokens and the base of the endpoint URLs, like `https://localhost:8443`.
    pub issuer: Located,
    /// The `aud` of issued tokens (default: the issuer).
    pub audience: Option<String>,
    /// PKCS#8 PEM private key, ECDSA P-256 (ES256) or Ed25519.
    pub signing_key: Located,
    /// Public keys published in the JWKS beside the signing key's (PEM `PUBLIC KEY`, or a
    /// private key's public half): the other instances' keys when each signs with its own, or
    /// the next key before a rotation.
    #[serde(default)]
    pub published_keys: Vec<Located>,
    /// Lifetime of issued tokens (default 1h; between 1s and 24h).
    pub token_ttl: Option<ConfigDuration>,
    /// `sqlite:PATH` (relative to this file), or `postgres://USER@HOST:PORT/DATABASE` with
    /// libpq's `sslmode` and `sslrootcert`; `${env:}`/`${file:}` may supply the whole value or a
    /// part such as the password.
    pub store: Located,
    /// Scopes a client may ask for; a request for any other is refused.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The token endpoint's budgets (see [`budgets`]): failures per network and per client id,
    /// issuance per client id.
    #[serde(default)]
    pub rate_limit: TokenRateLimitConfig,
}

/// The compiled issuer.
pub struct Issuer {
    /// `iss`, without a trailing `/`.
    pub issuer: String,
    /// The `aud` of issued tokens (the configured audience, else the issuer).
    pub audience: String,
    /// Lifetime of issued tokens.
    pub ttl: Duration,
    /// The scopes clients may ask for.
    pub scopes: Vec<String>,
    /// The key tokens are signed with.
    pub key: SigningKey,
    /// The algorithms of the published keys, the signing key's first.
    algorithms: Vec<jsonwebtoken::Algorithm>,
    /// The store of clients and their secrets.
    pub store: Store,
    /// Failed authentications per network and per client id, issuance per client id.
    budgets: Budgets,
    /// The minute each system's secrets were last noted as used, so that the store is
    /// written at most once a minute per secret.
    uses: quick_cache::sync::Cache<(String, SecretSlot), i64>,
    /// The store's subscription keys, as `subscription_key` policies check them.
    pub keyring: Arc<Keyring>,
    /// Uses of subscription keys, for the store (taken by whoever follows the store).
    key_uses: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<KeyUse>>>,
    /// The discovery and JWKS documents, rendered once.
    discovery: bytes::Bytes,
    jwks: bytes::Bytes,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("issuer", &self.issuer).field("key", &self.key).finish_non_exhaustive()
    }
}

/// The settings an [`Issuer`] is built from, already read and checked.
pub struct IssuerSettings {
    /// The `iss` of issued tokens, as configured (a trailing `/` is dropped).
    pub issuer: String,
    /// The `aud` of issued tokens (`None`: the issuer).
    pub audience: Option<String>,
    /// Lifetime of issued tokens.
    pub ttl: Duration,
    /// The scopes clients may ask for.
    pub scopes: Vec<String>,
    /// The key tokens are signed with.
    pub key: SigningKey,
    /// Other keys published beside it.
    pub published: Vec<PublishedKey>,
    /// The opened store of clients and their secrets.
    pub store: Store,
    /// The token endpoint's budgets.
    pub rate_limit: TokenRateLimitConfig,
}

impl Issuer {
    /// Builds the issuer, rendering its discovery and JWKS documents once.
    pub fn new(s: IssuerSettings) -> Self {
        let issuer = s.issuer.trim_end_matches('/').to_owned();
        let discovery = serde_json::json!({
            "issuer": issuer,
            "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
            "jwks_uri": format!("{issuer}{JWKS_PATH}"),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["token"],
            "scopes_supported": s.scopes,
            "id_token_signing_alg_values_supported": [s.key.jwk["alg"]],
        });
        let mut keys = vec![s.key.jwk.clone()];
        let mut algorithms = vec![s.key.algorithm];
        for other in s.published {
            if keys.iter().all(|k| k["kid"] != other.jwk["kid"]) {
                keys.push(other.jwk);
            }
            if !algorithms.contains(&other.algorithm) {
                algorithms.push(other.algorithm);
            }
        }
        let (keyring, key_uses) = Keyring::new(s.store.hasher().hmac_key());
        Self {
            keyring: Arc::new(keyring),
            key_uses: std::sync::Mutex::new(Some(key_uses)),
            audience: s.audience.unwrap_or_else(|| issuer.clone()),
            issuer,
            ttl: s.ttl,
            scopes: s.scopes,
            jwks: serde_json::json!({ "keys": keys }).to_string().into(),
            algorithms,
            discovery: discovery.to_string().into(),
            key: s.key,
            store: s.store,
            budgets: Budgets::new(s.rate_limit),
            uses: quick_cache::sync::Cache::new(100_000),
        }
    }

    /// What a `jwt` policy with `issuers: [self]` needs to verify this issuer's tokens.
    pub fn facts(&self) -> IssuerFacts {
        IssuerFacts {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            algorithms: self.algorithms.clone(),
            jwks: self.jwks.to_vec().into(),
            keyring: self.keyring.clone(),
        }
    }

    /// Reads every subscription key of the store into the keyring.
    ///
    /// # Errors
    /// The store cannot be read; the keyring keeps what it had.
    pub async fn load_keyring(&self) -> Result<(), crate::store::StoreError> {
        let keys = self.store.subscription_keys().await?;
        let mut seen: std::collections::HashMap<String, Arc<Subscription>> = std::collections::HashMap::new();
        let entries: Vec<_> = keys
            .into_iter()
            .filter_map(|(hash, slot, s)| {
                let hash: [u8; 32] = hash.0.as_slice().try_into().ok()?;
                let subscription = seen
                    .entry(s.id.clone())
                    .or_insert_with(|| {
                        Arc::new(Subscription {
                            id: s.id,
                            name: s.name,
                            scope: s.scope,
                            state: s.state,
                            expires_at: s.expires_at,
                        })
                    })
                    .clone();
                Some((hash, subscription, slot))
            })
            .collect();
        self.keyring.load(entries, crate::clock::unix_now() as i64);
        Ok(())
    }

    /// The uses of subscription keys to record in the store; the first caller gets them.
    pub fn take_key_uses(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<KeyUse>> {
        self.key_uses.lock().ok()?.take()
    }
}
