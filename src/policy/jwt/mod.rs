//! `jwt`: bearer-token validation (RFC 7519, RFC 8725 best practices, RFC 9068 access tokens).
//!
//! The accepted algorithms come from configuration, never from the token: `alg: none`, an
//! algorithm outside the list, RS/HS key confusion (HS* needs a configured `secret`, and a
//! secret is never used for RS/ES/EdDSA) and keys embedded in the token header (`jwk`, `jku`,
//! `x5u`, `x5c`) all fail. `exp` is required; `nbf`, `iss`, `aud` are checked with
//! `clock_skew`; `require_claims` and `forward_claims` apply to verified tokens only.

pub mod claims;
pub mod config;
pub mod crypto;
pub mod keys;
pub mod refusal;
pub mod token;

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use self::claims::ClaimChecks;
use self::keys::KeyStore;
use self::token::TokenParts;
use crate::policy::context::Claims;
pub use refusal::Refusal;

/// Verified tokens remembered per policy unless `token_cache` says otherwise.
pub const DEFAULT_TOKEN_CACHE: usize = 4096;

/// Tokens longer than this are refused unparsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A claim that must hold any or all of some values (string or array claims).
#[derive(Debug)]
struct ClaimRule {
    claim: String,
    values: Vec<String>,
    all: bool,
}

impl ClaimRule {
    fn holds(&self, claims: &Map<String, Value>) -> bool {
        let present: Vec<&str> = match claims.get(&self.claim) {
            Some(Value::String(s)) => s.split(' ').collect(), // `scp` is space-separated
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => return false,
        };
        let has = |v: &String| present.contains(&v.as_str());
        if self.all {
            self.values.iter().all(has)
        } else {
            self.values.iter().any(has)
        }
    }
}

/// The compiled `jwt` policy.
pub struct Jwt {
    /// Where the verification keys come from, and the keys in force.
    pub keys: Arc<KeyStore>,
    /// The accepted algorithms, from configuration (never from the token).
    algorithms: Vec<Algorithm>,
    registered: ClaimChecks,
    require: Vec<ClaimRule>,
    forward: Vec<(String, HeaderName)>,
    /// Verified tokens, keyed by the whole token, until their `exp`.
    cache: Option<quick_cache::sync::Cache<Box<str>, Arc<Verified>>>,
}

/// A token that passed verification.
struct Verified {
    claims: Arc<Claims>,
    exp: u64,
    /// The key set that verified it: a cached token is dropped when the keys change.
    generation: u64,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt").field("keys", &self.keys.name).finish_non_exhaustive()
    }
}

impl Jwt {
    /// Whether tokens must name one of the policy's audiences.
    pub fn checks_audience(&self) -> bool {
        !self.registered.audiences.is_empty()
    }

    /// Headers this policy sets on forwarded requests.
    pub fn forwarded_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.forward.iter().map(|(_, h)| h)
    }

    pub fn is_ready(&self) -> bool {
        self.keys.current().is_some()
    }

    /// Verifies the bearer token at `now` (Unix seconds); on success sets the
    /// forwarded-claim headers and returns the verified claims.
    ///
    /// # Errors
    /// The exact reason the token is refused.
    pub async fn check(&self, headers: &mut HeaderMap, now: u64) -> Result<Arc<Claims>, Refusal> {
        let claims = self.verify_cached(headers, now).await?;
        if !self.require.iter().all(|rule| rule.holds(&claims)) {
            return Err(Refusal::ClaimsNotSatisfied);
        }
        for (claim, name) in &self.forward {
            if let Some(value) = claims.get(claim).and_then(claim_header) {
                headers.insert(name.clone(), value);
            }
        }
        Ok(claims)
    }

    /// Verifies the token, or finds it verified in the cache under the same keys and
    /// before its `exp` (with the clock skew, as verification allows).
    async fn verify_cached(&self, headers: &HeaderMap, now: u64) -> Result<Arc<Claims>, Refusal> {
        let token = bearer(headers).ok_or(Refusal::MissingToken)?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::TokenTooLarge);
        }
        let Some(cache) = &self.cache else {
            return self.verify(token, now).await.map(|v| v.claims);
        };
        if let Some(hit) = cache.get(token) {
            let generation = self.keys.current().map(|k| k.generation);
            if generation == Some(hit.generation) && now <= hit.exp.saturating_add(self.registered.leeway) {
                return Ok(hit.claims.clone());
            }
        }
        let verified = Arc::new(self.verify(token, now).await?);
        let claims = verified.claims.clone();
        cache.insert(token.into(), verified);
        Ok(claims)
    }

    /// Full verification: header, algorithm, key, signature, registered claims. The token
    /// is split and each part decoded once.
    async fn verify(&self, token: &str, now: u64) -> Result<Verified, Refusal> {
        let parts = TokenParts::parse(token)?;
        let (header, message) = (&parts.header, parts.message.as_bytes());
        if !self.algorithms.contains(&header.alg) {
            return Err(Refusal::AlgNotAllowed);
        }
        let family = header.alg.family();
        let kid = header.kid.as_deref();
        let mut keys = self.keys.current().ok_or(Refusal::KeysUnavailable)?;
        if keys.candidates(kid, family).next().is_none() && kid.is_some() && self.keys.is_remote() {
            self.keys.refresh_for_unknown_kid().await;
            keys = self.keys.current().ok_or(Refusal::KeysUnavailable)?;
        }
        let verified =
            keys.candidates(kid, family).any(|key| key.verifiers.verify(header.alg, message, &parts.signature));
        if !verified {
            let tried = keys.candidates(kid, family).next().is_some();
            return Err(match (tried, kid) {
                (true, _) => Refusal::BadSignature,
                (false, Some(_)) => Refusal::UnknownKid,
                (false, None) => Refusal::NoKey,
            });
        }
        let claims = parts.claims().ok_or(Refusal::Malformed)?;
        let exp = self.registered.check(&claims, now)?;
        Ok(Verified { claims: Arc::new(claims), exp, generation: keys.generation })
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

fn claim_header(value: &Value) -> Option<HeaderValue> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    HeaderValue::from_str(&text).ok()
}
