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
use http::request::Parts;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use self::claims::ClaimChecks;
use self::keys::KeyStore;
use self::token::TokenParts;
use crate::config::context::{CompileContext, Invalid};
use crate::policy::context::{Claims, Grant, RequestContext};
use crate::policy::kind::{Blame, Decision, PolicyKind};
use crate::telemetry::metrics::Fault;
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
    /// Splits a string claim into values: a space for `scope` and `scp` (RFC 8693 §4.2),
    /// the configured `separator`, or none (the string is one value, compared whole).
    separator: Option<String>,
}

impl ClaimRule {
    fn holds(&self, claims: &Map<String, Value>) -> bool {
        let present: Vec<&str> = match (claims.get(&self.claim), &self.separator) {
            (Some(Value::String(s)), Some(sep)) => s.split(sep.as_str()).collect(),
            (Some(Value::String(s)), None) => vec![s.as_str()],
            (Some(Value::Array(items)), _) => items.iter().filter_map(Value::as_str).collect(),
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

/// The compiled `jwt` policy: one provider, or several told apart by the token's `iss`.
pub struct Jwt {
    /// The identity providers whose tokens the policy accepts; their issuers never overlap.
    pub providers: Vec<Provider>,
    /// Where the token is read.
    source: TokenSource,
    /// Verified tokens, keyed by the whole token, until their `exp`.
    cache: Option<quick_cache::sync::Cache<Box<str>, Arc<Verified>>>,
}

/// Where a policy reads its token.
#[derive(Debug)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (the default).
    Bearer,
    /// A header of its own: its value, after a `Bearer ` if there is one.
    Header(HeaderName),
    /// A query parameter (as APIM's `query-parameter-name`); it is redacted in the logs by its
    /// name, whatever that looks like.
    Query(String),
}

impl TokenSource {
    /// The token of the request, if it carries one.
    fn token<'r>(&self, headers: &'r HeaderMap, query: Option<&'r str>) -> Option<std::borrow::Cow<'r, str>> {
        match self {
            Self::Bearer => bearer(headers).map(std::borrow::Cow::Borrowed),
            Self::Header(name) => {
                let value = headers.get(name)?.to_str().ok()?.trim();
                let token = match value.split_once(' ') {
                    Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
                    _ => value,
                };
                (!token.is_empty()).then_some(std::borrow::Cow::Borrowed(token))
            }
            Self::Query(name) => form_urlencoded::parse(query?.as_bytes())
                .find(|(key, _)| key == name.as_str())
                .map(|(_, value)| value)
                .filter(|value| !value.is_empty()),
        }
    }
}

/// One identity provider: its issuers, audiences, keys, algorithms and claim rules.
pub struct Provider {
    /// Where the verification keys come from, and the keys in force.
    pub keys: Arc<KeyStore>,
    /// The accepted algorithms, from configuration (never from the token).
    algorithms: Vec<Algorithm>,
    registered: ClaimChecks,
    require: Vec<ClaimRule>,
    forward: Vec<(String, HeaderName)>,
    /// The provider is the gateway's own issuer: its tokens carry a [`Grant`].
    own: bool,
}

/// A token that passed the policy.
struct Checked {
    claims: Arc<Claims>,
    /// Its `exp` plus the clock skew.
    valid_until: Option<u64>,
    /// The gateway's own issuer made it.
    own: bool,
}

/// A token that passed verification.
struct Verified {
    claims: Arc<Claims>,
    exp: u64,
    /// The index of the provider that verified it.
    provider: usize,
    /// The key set that verified it: a cached token is dropped when the keys change.
    generation: u64,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.providers.iter().map(|p| &*p.keys.name).collect();
        f.debug_struct("Jwt").field("providers", &names).finish_non_exhaustive()
    }
}

impl Blame for Refusal {
    fn fault(self) -> Fault {
        if self == Refusal::KeysUnavailable {
            Fault::Gateway
        } else {
            Fault::Policy
        }
    }
}

impl PolicyKind for Jwt {
    type Config = config::JwtConfig;
    type Refusal = Refusal;

    /// Compiles the policy ([`Jwt::from_config`]); warns when tokens made for any audience
    /// would pass.
    ///
    /// # Errors
    /// Every problem found, each reported at its field.
    fn compile(cfg: &config::JwtConfig, cx: &mut CompileContext) -> Result<Self, Invalid> {
        let jwt = Self::from_config(cfg, cx)?;
        if !jwt.checks_audience() {
            let (at, path) = (cx.at(), format!("policies.{}.jwt.audiences", cx.name()));
            cx.warn(
                at,
                path,
                "no `audiences`: a token this issuer made for any other API (or an ID token) is accepted here",
            )
            .hint("list this API's audience, like `audiences: [api://config]`");
        }
        Ok(jwt)
    }

    /// Verifies the bearer token; leaves its claims for later policies.
    async fn check(&self, parts: &mut Parts, cx: &mut RequestContext<'_>) -> Decision<Refusal> {
        match self.check_token_until(&mut parts.headers, parts.uri.query(), cx.now).await {
            Ok(Checked { claims, valid_until, own }) => {
                if own {
                    cx.grant = Grant::of(&claims).map(Arc::new).or(cx.grant.take());
                }
                cx.claims = Some(claims);
                if let Some(until) = valid_until {
                    cx.token_valid_until = Some(cx.token_valid_until.map_or(until, |t| t.min(until)));
                }
                Decision::Continue
            }
            Err(refusal) => Decision::Deny(refusal),
        }
    }

    /// The headers of `forward_claims`.
    fn forwarded_headers(&self) -> Vec<&HeaderName> {
        self.providers.iter().flat_map(|p| p.forward.iter().map(|(_, h)| h)).collect()
    }

    /// Whether every provider's keys are loaded, so tokens can be verified (`/readyz`).
    fn is_ready(&self) -> bool {
        self.providers.iter().all(|p| p.keys.current().is_some())
    }

    /// Starts fetching remote keys. Needs a tokio runtime.
    fn start(&self) {
        for provider in &self.providers {
            provider.keys.start();
        }
    }
}

impl Jwt {
    /// Whether every provider's tokens must name one of its audiences.
    pub fn checks_audience(&self) -> bool {
        self.providers.iter().all(|p| !p.registered.audiences.is_empty())
    }

    /// Verifies the bearer token at `now` (Unix seconds); on success sets the
    /// forwarded-claim headers and returns the verified claims.
    ///
    /// # Errors
    /// The exact reason the token is refused.
    pub async fn check_token(
        &self,
        headers: &mut HeaderMap,
        query: Option<&str>,
        now: u64,
    ) -> Result<Arc<Claims>, Refusal> {
        self.check_token_until(headers, query, now).await.map(|checked| checked.claims)
    }

    /// [`Self::check_token`], and until when the token is accepted: its `exp` plus the clock
    /// skew of the provider that verified it.
    async fn check_token_until(
        &self,
        headers: &mut HeaderMap,
        query: Option<&str>,
        now: u64,
    ) -> Result<Checked, Refusal> {
        let token = self.source.token(headers, query).ok_or(Refusal::MissingToken)?;
        let (claims, provider) = self.verify_cached(&token, now).await?;
        let provider = &self.providers[provider];
        if !provider.require.iter().all(|rule| rule.holds(&claims)) {
            return Err(Refusal::ClaimsNotSatisfied);
        }
        for (claim, name) in &provider.forward {
            if let Some(value) = claims.get(claim).and_then(claim_header) {
                headers.insert(name.clone(), value);
            }
        }
        let until = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .map(|exp| exp.saturating_add(provider.registered.leeway));
        Ok(Checked { claims, valid_until: until, own: provider.own })
    }

    /// Verifies the token, or finds it verified in the cache under the same keys and
    /// before its `exp` (with the clock skew, as verification allows).
    async fn verify_cached(&self, token: &str, now: u64) -> Result<(Arc<Claims>, usize), Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::TokenTooLarge);
        }
        let Some(cache) = &self.cache else {
            return self.verify(token, now).await.map(|v| (v.claims, v.provider));
        };
        if let Some(hit) = cache.get(token) {
            let provider = &self.providers[hit.provider];
            let generation = provider.keys.current().map(|k| k.generation);
            if generation == Some(hit.generation) && now <= hit.exp.saturating_add(provider.registered.leeway) {
                return Ok((hit.claims.clone(), hit.provider));
            }
        }
        let verified = Arc::new(self.verify(token, now).await?);
        let found = (verified.claims.clone(), verified.provider);
        cache.insert(token.into(), verified);
        Ok(found)
    }

    /// Full verification by the provider the token's `iss` names (the only one, when there is
    /// one): the token is split and each part decoded once, and no other provider's keys are
    /// ever tried.
    async fn verify(&self, token: &str, now: u64) -> Result<Verified, Refusal> {
        let parts = TokenParts::parse(token)?;
        let (index, claims) = match self.providers.as_slice() {
            [_] => (0, None),
            all => {
                let claims = parts.claims().ok_or(Refusal::Malformed)?;
                let iss = match claims.get("iss") {
                    Some(Value::String(iss)) => iss,
                    Some(_) => return Err(Refusal::Malformed),
                    None => return Err(Refusal::MissingClaim),
                };
                let index = all.iter().position(|p| p.registered.issuers.contains(iss)).ok_or(Refusal::WrongIssuer)?;
                (index, Some(claims))
            }
        };
        let provider = &self.providers[index];
        let generation = provider.verify_signature(&parts).await?;
        let claims = match claims {
            Some(claims) => claims,
            None => parts.claims().ok_or(Refusal::Malformed)?,
        };
        let exp = provider.registered.check(&claims, now)?;
        Ok(Verified { claims: Arc::new(claims), exp, provider: index, generation })
    }
}

impl Provider {
    /// Checks the algorithm and the signature with this provider's keys; the generation of
    /// the key set that verified it.
    async fn verify_signature(&self, parts: &TokenParts<'_>) -> Result<u64, Refusal> {
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
        Ok(keys.generation)
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

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::config::context::CompileContext;

    const SECRET: &str = "a unit-test secret of more than 32 bytes";
    /// A fixed clock: every check below says when it happens.
    const NOW: u64 = 1_800_000_000;

    fn policy(extra: &str) -> (Jwt, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hs.secret"), SECRET).unwrap();
        let yaml = format!(
            "{{ issuers: [https://idp.test], audiences: [api://a], algorithms: [HS256], secret: \"${{file:hs.secret}}\", clock_skew: 60s{extra} }}"
        );
        let cfg: config::JwtConfig = serde_saphyr::from_str(&yaml).unwrap();
        let mut cx = CompileContext::standalone(dir.path(), "api");
        let jwt = Jwt::compile(&cfg, &mut cx).unwrap();
        cx.finish().unwrap();
        (jwt, dir)
    }

    fn token(alg: Algorithm, claims: Value) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    }

    fn claims(patch: Value) -> Value {
        let mut c =
            json!({ "iss": "https://idp.test", "aud": "api://a", "sub": "u-1", "exp": NOW + 300, "roles": ["Read"] });
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    async fn check(jwt: &Jwt, token: &str, now: u64) -> Result<Arc<Claims>, Refusal> {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        jwt.check_token(&mut headers, None, now).await
    }

    #[tokio::test]
    async fn a_token_is_valid_until_its_exp_and_the_clock_skew_then_expired_even_when_cached() {
        let (jwt, _dir) = policy("");
        let t = token(Algorithm::HS256, claims(json!({})));
        assert!(check(&jwt, &t, NOW).await.is_ok());
        assert!(check(&jwt, &t, NOW + 300 + 60).await.is_ok(), "within the skew, from the cache");
        assert_eq!(check(&jwt, &t, NOW + 300 + 61).await.err(), Some(Refusal::Expired), "the cache honours exp");
        let (uncached, _dir) = policy(", token_cache: 0");
        assert!(check(&uncached, &t, NOW + 360).await.is_ok());
        assert_eq!(check(&uncached, &t, NOW + 361).await.err(), Some(Refusal::Expired));
    }

    #[tokio::test]
    async fn a_token_is_valid_from_its_nbf_less_the_skew() {
        let (jwt, _dir) = policy(", token_cache: 0");
        let t = token(Algorithm::HS256, claims(json!({ "nbf": NOW + 100 })));
        assert_eq!(check(&jwt, &t, NOW).await.err(), Some(Refusal::NotYetValid));
        assert!(check(&jwt, &t, NOW + 40).await.is_ok());
    }

    #[tokio::test]
    async fn the_audience_issuer_and_algorithm_must_be_the_configured_ones() {
        let (jwt, _dir) = policy("");
        assert!(check(&jwt, &token(Algorithm::HS256, claims(json!({ "aud": ["x", "api://a"] }))), NOW).await.is_ok());
        let other_aud = token(Algorithm::HS256, claims(json!({ "aud": "api://b" })));
        assert_eq!(check(&jwt, &other_aud, NOW).await.err(), Some(Refusal::WrongAudience));
        let other_iss = token(Algorithm::HS256, claims(json!({ "iss": "https://idp.test.evil" })));
        assert_eq!(check(&jwt, &other_iss, NOW).await.err(), Some(Refusal::WrongIssuer));
        let other_alg = token(Algorithm::HS384, claims(json!({})));
        assert_eq!(check(&jwt, &other_alg, NOW).await.err(), Some(Refusal::AlgNotAllowed));
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &claims(json!({})),
            &EncodingKey::from_secret(b"another secret of 32 bytes or more!"),
        )
        .unwrap();
        assert_eq!(check(&jwt, &forged, NOW).await.err(), Some(Refusal::BadSignature));
    }

    #[tokio::test]
    async fn required_claims_pass_or_refuse_and_claims_are_forwarded_over_client_headers() {
        let (jwt, _dir) =
            policy(", require_claims: { roles: { any_of: [Read, Admin] } }, forward_claims: { sub: X-User-Id }");
        let mut headers = HeaderMap::new();
        let t = token(Algorithm::HS256, claims(json!({})));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
        headers.insert("x-user-id", HeaderValue::from_static("admin"));
        assert!(jwt.check_token(&mut headers, None, NOW).await.is_ok());
        assert_eq!(headers["x-user-id"], "u-1");
        let writer = token(Algorithm::HS256, claims(json!({ "roles": ["Write"] })));
        assert_eq!(check(&jwt, &writer, NOW).await.err(), Some(Refusal::ClaimsNotSatisfied));
    }

    /// `"Not Finance"` is one department, not two words: only `scope`/`scp` and claims with a
    /// configured `separator` are split.
    #[tokio::test]
    async fn claims_are_compared_whole_unless_defined_as_lists() {
        let (jwt, _dir) = policy(
            ", token_cache: 0, require_claims: { department: { any_of: [Finance] }, scp: { all_of: [read] }, groups: { any_of: [a], separator: \",\" } }",
        );
        let ok = |patch: Value| {
            claims(json!({ "department": "Finance", "scp": "read", "groups": "a" }))
                .as_object()
                .cloned()
                .map(|mut c| {
                    for (k, v) in patch.as_object().unwrap() {
                        c.insert(k.clone(), v.clone());
                    }
                    Value::Object(c)
                })
                .unwrap()
        };
        let cases = [
            (json!({}), true),
            (json!({ "department": ["Sales", "Finance"] }), true),
            (json!({ "department": "Not Finance" }), false),
            (json!({ "department": "Finance Not" }), false),
            (json!({ "department": "finance" }), false),
            (json!({ "department": ["Not Finance"] }), false),
            (json!({ "department": 7 }), false),
            (json!({ "scp": "write read" }), true),
            (json!({ "scp": ["read"] }), true),
            (json!({ "scp": "readwrite" }), false),
            (json!({ "scp": "read,write" }), false),
            (json!({ "groups": "b,a" }), true),
            (json!({ "groups": "b a" }), false),
            (json!({ "groups": "ab" }), false),
        ];
        for (patch, pass) in cases {
            let t = token(Algorithm::HS256, ok(patch.clone()));
            let got = check(&jwt, &t, NOW).await;
            assert_eq!(got.is_ok(), pass, "{patch}: {:?}", got.err());
        }
        let empty = providers(
            r#"{ issuers: [a], secret: "${file:a.secret}", algorithms: [HS256], require_claims: { g: { any_of: [x], separator: "" } } }"#,
        );
        assert!(empty.err().unwrap().contains("separator is empty"));
    }

    #[tokio::test]
    async fn only_a_bearer_token_is_read() {
        let (jwt, _dir) = policy("");
        let mut headers = HeaderMap::new();
        assert_eq!(jwt.check_token(&mut headers, None, NOW).await.err(), Some(Refusal::MissingToken));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwYXNz"));
        assert_eq!(jwt.check_token(&mut headers, None, NOW).await.err(), Some(Refusal::MissingToken));
        let t = token(Algorithm::HS256, claims(json!({})));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("bEaReR {t}")).unwrap());
        assert!(jwt.check_token(&mut headers, None, NOW).await.is_ok(), "the scheme is case-insensitive");
        let huge = format!("{t}{}", "A".repeat(MAX_TOKEN_BYTES));
        assert_eq!(check(&jwt, &huge, NOW).await.err(), Some(Refusal::TokenTooLarge));
    }

    fn providers(yaml: &str) -> Result<(Jwt, tempfile::TempDir), String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.secret"), SECRET).unwrap();
        std::fs::write(dir.path().join("b.secret"), "the other provider's secret, 32+ bytes").unwrap();
        let cfg: config::JwtConfig = serde_saphyr::from_str(yaml).unwrap();
        let mut cx = CompileContext::standalone(dir.path(), "api");
        let jwt = Jwt::compile(&cfg, &mut cx);
        match cx.finish() {
            Ok(_) => Ok((jwt.unwrap(), dir)),
            Err(errors) => {
                Err(errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>().join("\n"))
            }
        }
    }

    const TWO: &str = r#"{ providers: [
        { issuers: [https://a.test], audiences: [api://a], algorithms: [HS256], secret: "${file:a.secret}", forward_claims: { sub: X-A } },
        { issuers: [https://b.test], audiences: [api://a], algorithms: [HS256], secret: "${file:b.secret}", forward_claims: { sub: X-B } } ] }"#;

    #[tokio::test]
    async fn the_tokens_issuer_picks_the_provider_and_only_its_keys() {
        let (jwt, _dir) = providers(TWO).unwrap();
        let sign = |secret: &[u8], iss: &str| {
            encode(&Header::new(Algorithm::HS256), &claims(json!({ "iss": iss })), &EncodingKey::from_secret(secret))
                .unwrap()
        };
        let b_secret = b"the other provider's secret, 32+ bytes";
        let mut headers = HeaderMap::new();
        let a = sign(SECRET.as_bytes(), "https://a.test");
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {a}")).unwrap());
        assert!(jwt.check_token(&mut headers, None, NOW).await.is_ok());
        assert_eq!((headers.get("x-a").map(|v| v.to_str().unwrap()), headers.get("x-b")), (Some("u-1"), None));
        assert!(check(&jwt, &sign(b_secret, "https://b.test"), NOW).await.is_ok());
        let cross = sign(b_secret, "https://a.test");
        assert_eq!(check(&jwt, &cross, NOW).await.err(), Some(Refusal::BadSignature));
        let cross = sign(SECRET.as_bytes(), "https://b.test");
        assert_eq!(check(&jwt, &cross, NOW).await.err(), Some(Refusal::BadSignature));
        let unknown = sign(SECRET.as_bytes(), "https://c.test");
        assert_eq!(check(&jwt, &unknown, NOW).await.err(), Some(Refusal::WrongIssuer));
        let no_iss = encode(
            &Header::new(Algorithm::HS256),
            &json!({ "aud": "api://a", "exp": NOW + 300 }),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(check(&jwt, &no_iss, NOW).await.err(), Some(Refusal::MissingClaim));
    }

    #[test]
    fn providers_never_share_an_issuer_nor_mix_with_provider_fields() {
        let shared = TWO.replace("https://b.test", "https://a.test");
        let err = providers(&shared).err().unwrap();
        assert!(
            err.contains("providers[1].issuers: issuer \"https://a.test\" is also listed by providers[0]"),
            "{err}"
        );
        let mixed = TWO.replacen("{ providers:", "{ audiences: [x], providers:", 1);
        let err = providers(&mixed).err().unwrap();
        assert!(err.contains("`providers` and audiences exclude each other"), "{err}");
        let nested =
            TWO.replacen("forward_claims: { sub: X-A } }", "forward_claims: { sub: X-A }, token_cache: 5 }", 1);
        let err = providers(&nested).err().unwrap();
        assert!(err.contains("policies.api.jwt.providers[0]: a provider takes no"), "{err}");
    }

    #[tokio::test]
    async fn the_token_is_read_where_token_from_says() {
        let t = token(Algorithm::HS256, claims(json!({})));
        let (from_header, _dir) = policy(", token_from: \"header:X-Token\"");
        let mut headers = HeaderMap::new();
        headers.insert("x-token", HeaderValue::from_str(&t).unwrap());
        assert!(from_header.check_token(&mut headers, None, NOW).await.is_ok());
        headers.insert("x-token", HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
        assert!(from_header.check_token(&mut headers, None, NOW).await.is_ok(), "a Bearer prefix is allowed");
        let mut bearer_only = HeaderMap::new();
        bearer_only.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
        assert_eq!(from_header.check_token(&mut bearer_only, None, NOW).await.err(), Some(Refusal::MissingToken));
        let (from_query, _dir) = policy(", token_from: \"query:access_token\"");
        let query = format!("page=2&access_token={t}");
        assert!(from_query.check_token(&mut HeaderMap::new(), Some(&query), NOW).await.is_ok());
        assert_eq!(
            from_query.check_token(&mut HeaderMap::new(), Some("page=2&access_token="), NOW).await.err(),
            Some(Refusal::MissingToken)
        );
    }
}
