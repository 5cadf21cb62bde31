//! `jwt`: bearer-token validation (RFC 7519, RFC 8725 best practices, RFC 9068 access tokens).
//!
//! The accepted algorithms come from configuration, never from the token: `alg: none`, an
//! algorithm outside the list, RS/HS key confusion (HS* needs a configured `secret`, and a
//! secret is never used for RS/ES/EdDSA) and keys embedded in the token header (`jwk`, `jku`,
//! `x5u`, `x5c`) all fail. `exp` is required; `nbf`, `iss`, `aud` are checked with
//! `clock_skew`; `require_claims` and `forward_claims` apply to verified tokens only.

pub mod claims;
pub mod crypto;
pub mod keys;
pub mod token;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use serde_json::{Map, Value};

use self::claims::ClaimChecks;
use self::keys::{Key, KeySet, KeyStore, Source};
use self::token::TokenParts;
use super::{Decision, Denial};
use crate::config::raw::Located;
use crate::config::values::{ConfigDuration, ValueRef};
use crate::problem::Problem;

/// Verified tokens remembered per policy unless `token_cache` says otherwise.
pub const DEFAULT_TOKEN_CACHE: usize = 4096;

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Tokens longer than this are refused unparsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub issuers: Vec<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Required, except with `issuers: [self]` (the issuer's algorithm).
    #[serde(default)]
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub keys: Vec<Located>,
    pub jwks_url: Option<String>,
    pub openid_config: Option<String>,
    pub secret: Option<ValueRef>,
    pub trusted_cas: Option<Located>,
    pub clock_skew: Option<ConfigDuration>,
    #[serde(default)]
    pub require_claims: BTreeMap<String, ClaimRuleConfig>,
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// How often remote keys are fetched (a shorter `Cache-Control: max-age` wins).
    pub jwks_refresh: Option<ConfigDuration>,
    /// The shortest interval between two fetches for unknown `kid`s.
    pub jwks_min_refresh: Option<ConfigDuration>,
    /// How many verified tokens to remember until their `exp` (0: none).
    pub token_cache: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRuleConfig {
    pub any_of: Option<Vec<String>>,
    pub all_of: Option<Vec<String>>,
}

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
    claims: Arc<Map<String, Value>>,
    exp: u64,
    /// The key set that verified it: a cached token is dropped when the keys change.
    generation: u64,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt").field("keys", &self.keys.name).finish_non_exhaustive()
    }
}

/// A compile error: the field and what is wrong with it.
pub type FieldError = (String, String);

impl Jwt {
    /// `own` is the gateway's token issuer, named by `issuers: [self]` — or by its URL when
    /// the policy names no key source of its own.
    ///
    /// # Errors
    /// Every problem found, as `(field, message)`.
    pub fn compile(
        name: &str,
        cfg: &JwtConfig,
        dir: &Path,
        own: Option<&crate::identity::Issuer>,
    ) -> Result<Self, Vec<FieldError>> {
        crypto::install();
        let mut errors: Vec<FieldError> = Vec::new();
        let mut err = |field: &str, message: String| errors.push((field.to_owned(), message));
        let no_source =
            cfg.keys.is_empty() && cfg.jwks_url.is_none() && cfg.openid_config.is_none() && cfg.secret.is_none();
        let names_own =
            |i: &String| i == "self" || (no_source && own.is_some_and(|own| own.issuer == i.trim_end_matches('/')));
        let uses_self = cfg.issuers.iter().any(names_own);
        let own = own.filter(|_| uses_self);
        if uses_self && own.is_none() {
            err("issuers", "`self` names the gateway's own token issuer: add an `identity` section".into());
        }
        let issuers: Vec<String> = cfg
            .issuers
            .iter()
            .map(|i| match own {
                Some(own) if names_own(i) => own.issuer.clone(),
                _ => i.clone(),
            })
            .collect();
        // With `self` and no list, the issuer's own algorithm.
        let mut algorithms: Vec<Algorithm> =
            own.filter(|_| cfg.algorithms.is_empty()).map(|own| own.key.algorithm).into_iter().collect();
        for a in &cfg.algorithms {
            match a.parse::<Algorithm>() {
                Ok(alg) => algorithms.push(alg),
                Err(_) => err("algorithms", format!("{a:?} is not a supported algorithm (RS256…RS512, PS256…PS512, ES256, ES384, EdDSA, HS256…HS512)")),
            }
        }
        if algorithms.is_empty() && cfg.algorithms.is_empty() {
            err("algorithms", "list the algorithms your issuer signs with, like [RS256]".into());
        }
        if cfg.issuers.is_empty() {
            err("issuers", "list at least one issuer (the tokens' `iss`)".into());
        }
        let hmac = algorithms.iter().any(|a| a.family() == AlgorithmFamily::Hmac);
        let public = algorithms.iter().any(|a| a.family() != AlgorithmFamily::Hmac);
        if hmac && public {
            err("algorithms", "HS* and public-key algorithms cannot be mixed in one policy (key confusion)".into());
        }
        let sources = [!cfg.keys.is_empty(), cfg.jwks_url.is_some(), cfg.openid_config.is_some(), cfg.secret.is_some()];
        let source_count = sources.iter().filter(|s| **s).count();
        if uses_self && source_count != 0 {
            err(
                "keys",
                "`issuers: [self]` uses the gateway's own key; put other issuers in a separate jwt policy".into(),
            );
        } else if !uses_self && source_count != 1 {
            err("keys", "give exactly one of keys, jwks_url, openid_config or secret".into());
        }
        if cfg.secret.is_some() && !hmac {
            err("secret", "a secret only verifies HS256/HS384/HS512; list those in algorithms".into());
        }
        if hmac && cfg.secret.is_none() {
            err("algorithms", "HS* algorithms need `secret`; with public keys use RS*, PS*, ES* or EdDSA".into());
        }
        if let Some(ValueRef::Literal(_)) = &cfg.secret {
            err("secret", "never write a secret inline: use ${env:NAME} or ${file:path}".into());
        }
        let mut require = Vec::new();
        for (claim, rule) in &cfg.require_claims {
            match (&rule.any_of, &rule.all_of) {
                (Some(values), None) => {
                    require.push(ClaimRule { claim: claim.clone(), values: values.clone(), all: false })
                }
                (None, Some(values)) => {
                    require.push(ClaimRule { claim: claim.clone(), values: values.clone(), all: true })
                }
                _ => err("require_claims", format!("{claim}: give exactly one of any_of or all_of")),
            }
        }
        let mut forward = Vec::new();
        for (claim, header) in &cfg.forward_claims {
            match HeaderName::from_bytes(header.as_bytes()) {
                Ok(h) => forward.push((claim.clone(), h)),
                Err(_) => err("forward_claims", format!("{header:?} is not a header name")),
            }
        }
        for url in cfg.jwks_url.iter().chain(&cfg.openid_config) {
            if !url.starts_with("https://") {
                err("jwks_url", format!("{url:?}: keys are only fetched over https://"));
            }
        }

        let tls = if cfg.jwks_url.is_some() || cfg.openid_config.is_some() {
            let extra = match &cfg.trusted_cas {
                Some(file) => match crate::tls::load_certs(&dir.join(&file.value)) {
                    Ok(certs) => certs,
                    Err(e) => {
                        err("trusted_cas", e);
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
            match crate::tls::client_config(crate::tls::Roots::SystemAnd(extra), None) {
                Ok(c) => Some(c),
                Err(e) => {
                    err("trusted_cas", e);
                    None
                }
            }
        } else {
            None
        };
        let source = if let Some(own) = own {
            match KeySet::from_jwks(own.jwks_document()) {
                Ok(set) => Source::Static(Arc::new(set)),
                Err(e) => {
                    err("issuers", format!("the issuer's own key: {e}"));
                    Source::Static(Arc::default())
                }
            }
        } else if let Some(url) = &cfg.jwks_url {
            Source::Jwks(url.clone())
        } else if let Some(url) = &cfg.openid_config {
            Source::Discovery(url.clone())
        } else if let Some(secret) = &cfg.secret {
            match secret.resolve(dir) {
                Ok(s) if s.len() >= 32 => Source::Static(Arc::new(KeySet::new(
                    Key::new(None, &DecodingKey::from_secret(s.as_bytes())).into_iter().collect(),
                ))),
                Ok(_) => {
                    err("secret", "the secret must be at least 32 bytes (RFC 7518 §3.2)".into());
                    Source::Static(Arc::default())
                }
                Err(e) => {
                    err("secret", e);
                    Source::Static(Arc::default())
                }
            }
        } else {
            let mut set = KeySet::default();
            for (i, file) in cfg.keys.iter().enumerate() {
                match pem_key(&dir.join(&file.value), &algorithms) {
                    Ok(key) => set.keys.push(key),
                    Err(e) => err(&format!("keys[{i}]"), e),
                }
            }
            Source::Static(Arc::new(set))
        };

        let skew = cfg.clock_skew.map_or(Duration::from_secs(60), |d| d.0);
        // The gateway's own tokens name the issuer's audience; check it unless told otherwise.
        let audiences = match own {
            Some(own) if cfg.audiences.is_empty() => vec![own.audience.clone()],
            _ => cfg.audiences.clone(),
        };
        let registered = ClaimChecks { issuers, audiences, leeway: skew.as_secs() };
        if !errors.is_empty() {
            return Err(errors);
        }
        let refresh = cfg.jwks_refresh.map_or(Duration::from_secs(600), |d| d.0);
        let min_refresh = cfg.jwks_min_refresh.map_or(Duration::from_secs(30), |d| d.0);
        Ok(Self {
            keys: Arc::new(KeyStore::new(name, source, tls, refresh, min_refresh)),
            algorithms,
            registered,
            require,
            forward,
            cache: match cfg.token_cache.unwrap_or(DEFAULT_TOKEN_CACHE) {
                0 => None,
                n => Some(quick_cache::sync::Cache::new(n)),
            },
        })
    }

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

    /// Verifies the bearer token; on success sets the forwarded-claim headers and returns
    /// the verified claims.
    pub async fn check(&self, headers: &mut HeaderMap) -> (Decision, Option<Arc<Map<String, Value>>>) {
        let claims = match self.verify_cached(headers).await {
            Ok(claims) => claims,
            Err(denial) => return (Decision::Deny(denial), None),
        };
        if !self.require.iter().all(|rule| rule.holds(&claims)) {
            return (Decision::Deny(insufficient()), None);
        }
        for (claim, name) in &self.forward {
            if let Some(value) = claims.get(claim).and_then(claim_header) {
                headers.insert(name.clone(), value);
            }
        }
        (Decision::Continue, Some(claims))
    }

    /// Verifies the token, or finds it verified in the cache under the same keys and
    /// before its `exp` (with the clock skew, as verification allows).
    async fn verify_cached(&self, headers: &HeaderMap) -> Result<Arc<Map<String, Value>>, Denial> {
        let token = bearer(headers).ok_or_else(|| invalid("missing_token"))?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("token_too_large"));
        }
        let Some(cache) = &self.cache else {
            return self.verify(token).await.map(|v| v.claims);
        };
        if let Some(hit) = cache.get(token) {
            let generation = self.keys.current().map(|k| k.generation);
            if generation == Some(hit.generation) && unix_now() <= hit.exp.saturating_add(self.registered.leeway) {
                return Ok(hit.claims.clone());
            }
        }
        let verified = Arc::new(self.verify(token).await?);
        let claims = verified.claims.clone();
        cache.insert(token.into(), verified);
        Ok(claims)
    }

    /// Full verification: header, algorithm, key, signature, registered claims. The token
    /// is split and each part decoded once.
    async fn verify(&self, token: &str) -> Result<Verified, Denial> {
        let parts = TokenParts::parse(token).map_err(invalid)?;
        let (header, message) = (&parts.header, parts.message.as_bytes());
        if !self.algorithms.contains(&header.alg) {
            return Err(invalid("alg_not_allowed"));
        }
        let family = header.alg.family();
        let kid = header.kid.as_deref();
        let mut keys = self.keys.current().ok_or_else(keys_unavailable)?;
        if keys.candidates(kid, family).next().is_none() && kid.is_some() && self.keys.is_remote() {
            self.keys.refresh_for_unknown_kid().await;
            keys = self.keys.current().ok_or_else(keys_unavailable)?;
        }
        let verified =
            keys.candidates(kid, family).any(|key| key.verifiers.verify(header.alg, message, &parts.signature));
        if !verified {
            let tried = keys.candidates(kid, family).next().is_some();
            return Err(invalid(match (tried, kid) {
                (true, _) => "bad_signature",
                (false, Some(_)) => "unknown_kid",
                (false, None) => "no_key",
            }));
        }
        let claims = parts.claims().ok_or_else(|| invalid("malformed"))?;
        match self.registered.check(&claims, unix_now()) {
            Ok(exp) => Ok(Verified { claims: Arc::new(claims), exp, generation: keys.generation }),
            Err("expired") => Err(expired()),
            Err(reason) => Err(invalid(reason)),
        }
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

/// Reads a PEM public key for the configured algorithm families.
fn pem_key(path: &Path, algorithms: &[Algorithm]) -> Result<Key, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    for family in [AlgorithmFamily::Rsa, AlgorithmFamily::Ec, AlgorithmFamily::Ed] {
        if !algorithms.iter().any(|a| a.family() == family) {
            continue;
        }
        let key = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
            _ => DecodingKey::from_ed_pem(&pem),
        };
        if let Some(key) = key.ok().and_then(|key| Key::new(None, &key)) {
            return Ok(key);
        }
    }
    Err(format!("{} holds no public key usable with {algorithms:?}", path.display()))
}

fn problem(
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: &'static str,
    challenge: &'static str,
) -> Problem {
    Problem::new(status, kind, title, detail).with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge))
}

fn invalid(reason: &'static str) -> Denial {
    let challenge = if reason == "missing_token" { "Bearer" } else { "Bearer error=\"invalid_token\"" };
    Denial::new(
        reason,
        problem(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "Invalid access token",
            "a valid bearer access token is required",
            challenge,
        ),
    )
}

fn expired() -> Denial {
    Denial::new(
        "expired",
        problem(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "Invalid access token",
            "the access token has expired",
            "Bearer error=\"invalid_token\", error_description=\"the access token expired\"",
        ),
    )
}

fn insufficient() -> Denial {
    Denial::new(
        "claims_not_satisfied",
        problem(
            StatusCode::FORBIDDEN,
            "insufficient-claims",
            "Insufficient permissions",
            "the access token does not grant this request",
            "Bearer error=\"insufficient_scope\"",
        ),
    )
}

fn keys_unavailable() -> Denial {
    Denial::new("keys_unavailable", Problem::service_unavailable("token verification keys are not loaded yet"))
}
