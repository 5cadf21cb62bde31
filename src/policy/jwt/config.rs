//! The `jwt` policy's YAML contract and its compilation: accepted algorithms, the one key
//! source (PEM files, a secret, a JWKS URL, an OpenID discovery document, or the gateway's own
//! issuer), the registered-claim checks, required and forwarded claims.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::claims::ClaimChecks;
use super::keys::{Key, KeySet, KeyStore, Source};
use super::{ClaimRule, Jwt, Provider, TokenSource, DEFAULT_TOKEN_CACHE};
use crate::config::context::{CompileContext, Invalid, IssuerFacts};
use crate::config::values::{ConfigDuration, Located, ValueRef};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// The `jwt` policy as written in YAML.
pub struct JwtConfig {
    #[serde(default)]
    /// `providers`: several identity providers, each with the fields below; the token's `iss`
    /// picks one. Without it, the policy is one provider.
    pub providers: Vec<Spanned<JwtConfig>>,
    #[serde(default)]
    /// `issuers`: accepted `iss` values; `self` names the gateway's own token issuer.
    pub issuers: Vec<String>,
    #[serde(default)]
    /// `audiences`: accepted `aud` values; a token must name one (empty: not checked, and `check` warns).
    pub audiences: Vec<String>,
    /// Required, except with `issuers: [self]` (the issuer's algorithm).
    #[serde(default)]
    pub algorithms: Vec<String>,
    #[serde(default)]
    /// `keys`: PEM public key files.
    pub keys: Vec<Located>,
    /// `jwks_url`: an HTTPS JWKS document to fetch keys from.
    pub jwks_url: Option<String>,
    /// `openid_config`: an HTTPS OpenID discovery document that names the JWKS.
    pub openid_config: Option<String>,
    /// `secret`: the HS* shared secret, by reference only (`${env:}`, `${file:}`), 32 bytes or more.
    pub secret: Option<ValueRef>,
    /// `trusted_cas`: extra CAs for fetching `jwks_url` or `openid_config`.
    pub trusted_cas: Option<Located>,
    /// `clock_skew`: leeway on `exp` and `nbf` (default 60s).
    pub clock_skew: Option<ConfigDuration>,
    #[serde(default)]
    /// `require_claims`: claims that must hold some values (`any_of` or `all_of`).
    pub require_claims: BTreeMap<String, ClaimRuleConfig>,
    #[serde(default)]
    /// `forward_claims`: claim name to the request header that carries it to the backend.
    pub forward_claims: BTreeMap<String, String>,
    /// How often remote keys are fetched (a shorter `Cache-Control: max-age` wins).
    pub jwks_refresh: Option<ConfigDuration>,
    /// The shortest interval between two fetches for unknown `kid`s.
    pub jwks_min_refresh: Option<ConfigDuration>,
    /// How many verified tokens to remember until their `exp` (0: none).
    pub token_cache: Option<usize>,
    /// Where the token is read: `authorization` (the default, `Authorization: Bearer`),
    /// `header:NAME` (the whole value, or after `Bearer `) or `query:NAME`.
    pub token_from: Option<Located>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// What one required claim must hold.
pub struct ClaimRuleConfig {
    /// At least one of these values.
    pub any_of: Option<Vec<String>>,
    /// All of these values.
    pub all_of: Option<Vec<String>>,
    /// Splits a string claim into values (APIM's `separator`). Without it a string claim is
    /// one value, compared whole, except `scope` and `scp`, which are split at spaces.
    pub separator: Option<String>,
}

impl JwtConfig {
    fn names_a_source(&self) -> bool {
        !self.keys.is_empty() || self.jwks_url.is_some() || self.openid_config.is_some() || self.secret.is_some()
    }

    fn is_remote(&self) -> bool {
        self.jwks_url.is_some() || self.openid_config.is_some()
    }
}

impl JwtConfig {
    /// The provider fields this entry sets, by name (for `providers` mixed with them).
    fn provider_fields(&self) -> Vec<&'static str> {
        let set = [
            ("issuers", !self.issuers.is_empty()),
            ("audiences", !self.audiences.is_empty()),
            ("algorithms", !self.algorithms.is_empty()),
            ("keys", !self.keys.is_empty()),
            ("jwks_url", self.jwks_url.is_some()),
            ("openid_config", self.openid_config.is_some()),
            ("secret", self.secret.is_some()),
            ("trusted_cas", self.trusted_cas.is_some()),
            ("clock_skew", self.clock_skew.is_some()),
            ("require_claims", !self.require_claims.is_empty()),
            ("forward_claims", !self.forward_claims.is_empty()),
            ("jwks_refresh", self.jwks_refresh.is_some()),
            ("jwks_min_refresh", self.jwks_min_refresh.is_some()),
        ];
        set.iter().filter(|(_, on)| *on).map(|(name, _)| *name).collect()
    }
}

impl Jwt {
    /// Compiles the policy: one provider, or each of `providers`. Issuers of different
    /// providers must not overlap, so a token's `iss` names exactly one.
    ///
    /// # Errors
    /// Every problem found, each reported at its field.
    pub(super) fn from_config(cfg: &JwtConfig, cx: &mut CompileContext) -> Result<Self, Invalid> {
        super::crypto::install();
        let mark = cx.mark();
        let providers: Vec<Result<Provider, Invalid>> = if cfg.providers.is_empty() {
            vec![Provider::compile(cfg, cx.name().to_owned(), cx)]
        } else {
            let mixed = cfg.provider_fields();
            if !mixed.is_empty() {
                cx.field_error("providers", format!("`providers` and {} exclude each other", mixed.join(", ")))
                    .hint("move these fields into each provider");
            }
            let (name, at) = (cx.name().to_owned(), cx.at());
            let path = format!("policies.{name}.jwt");
            let mut out = Vec::new();
            for (i, provider) in cfg.providers.iter().enumerate() {
                cx.enter(&name, format!("{path}.providers[{i}]"), provider.referenced);
                let p = &provider.value;
                if !p.providers.is_empty() || p.token_cache.is_some() || p.token_from.is_some() {
                    cx.field_error(
                        "",
                        "a provider takes no `providers`, `token_cache` or `token_from`: those belong to the policy",
                    );
                }
                out.push(Provider::compile(p, format!("{name}.providers[{i}]"), cx));
            }
            cx.enter(&name, path, at);
            out
        };
        let providers: Vec<Provider> = providers.into_iter().collect::<Result<_, _>>()?;
        for (i, provider) in providers.iter().enumerate() {
            for issuer in &provider.registered.issuers {
                if let Some(j) = providers[..i].iter().position(|p| p.registered.issuers.contains(issuer)) {
                    cx.field_error(
                        &format!("providers[{i}].issuers"),
                        format!("issuer {issuer:?} is also listed by providers[{j}]: the token's `iss` must name one provider"),
                    );
                }
            }
        }
        let source = token_source(cfg.token_from.as_ref(), cx);
        cx.valid_since(mark)?;
        Ok(Self {
            providers,
            source,
            cache: match cfg.token_cache.unwrap_or(DEFAULT_TOKEN_CACHE) {
                0 => None,
                n => Some(quick_cache::sync::Cache::new(n)),
            },
        })
    }
}

impl Provider {
    /// Compiles one provider. `issuers: [self]` — or the gateway issuer's URL when the
    /// provider names no key source of its own — means the gateway's own token issuer
    /// ([`CompileContext::issuer`]). Its keys are logged under `name`.
    fn compile(cfg: &JwtConfig, name: String, cx: &mut CompileContext) -> Result<Self, Invalid> {
        let mark = cx.mark();
        let own = own_issuer(cfg, cx);
        let algorithms = algorithms(cfg, own.as_ref(), cx);
        check_source_choice(cfg, own.is_some(), &algorithms, cx);
        let require = claim_rules(cfg, cx);
        let forward = forwarded_claims(cfg, cx);
        let tls = fetch_tls(cfg, cx);
        let source = key_source(cfg, own.as_ref(), &algorithms, cx);
        cx.valid_since(mark)?;
        let skew = cfg.clock_skew.map_or(Duration::from_secs(60), |d| d.0);
        let issuers = cfg
            .issuers
            .iter()
            .map(|i| match &own {
                Some(own) if names_own(cfg, own, i) => own.issuer.clone(),
                _ => i.clone(),
            })
            .collect();
        // The gateway's own tokens name the issuer's audience; check it unless told otherwise.
        let audiences = match &own {
            Some(own) if cfg.audiences.is_empty() => vec![own.audience.clone()],
            _ => cfg.audiences.clone(),
        };
        let refresh = cfg.jwks_refresh.map_or(Duration::from_secs(600), |d| d.0);
        let min_refresh = cfg.jwks_min_refresh.map_or(Duration::from_secs(30), |d| d.0);
        Ok(Self {
            keys: Arc::new(KeyStore::new(&name, source, tls, refresh, min_refresh)),
            algorithms,
            registered: ClaimChecks { issuers, audiences, leeway: skew.as_secs() },
            require,
            forward,
            own: own.is_some(),
        })
    }
}

/// Where the policy reads its token.
fn token_source(from: Option<&Located>, cx: &mut CompileContext) -> TokenSource {
    let Some(from) = from else { return TokenSource::Bearer };
    match from.value.split_once(':') {
        None if from.value == "authorization" => TokenSource::Bearer,
        Some(("header", name)) => match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => {
                crate::redact::credential_source(None, Some(&name));
                TokenSource::Header(name)
            }
            Err(_) => {
                cx.field_error_at(from.referenced, "token_from", format!("{name:?} is not a header name"));
                TokenSource::Bearer
            }
        },
        Some(("query", name)) if !name.is_empty() => {
            crate::redact::credential_source(Some(name), None);
            TokenSource::Query(name.to_owned())
        }
        _ => {
            cx.field_error_at(from.referenced, "token_from", format!("unknown token source {:?}", from.value))
                .hint("write authorization (the default), header:NAME or query:NAME");
            TokenSource::Bearer
        }
    }
}

/// Whether the issuer entry `i` names the gateway's own issuer.
fn names_own(cfg: &JwtConfig, own: &IssuerFacts, i: &str) -> bool {
    i == "self" || (!cfg.names_a_source() && own.issuer == i.trim_end_matches('/'))
}

/// The gateway's own issuer, when the policy trusts it.
fn own_issuer(cfg: &JwtConfig, cx: &mut CompileContext) -> Option<IssuerFacts> {
    let wants_self = cfg.issuers.iter().any(|i| i == "self");
    match &cx.issuer {
        Some(own) if cfg.issuers.iter().any(|i| names_own(cfg, own, i)) => Some(own.clone()),
        // A broken `identity` section is reported where it is broken, not again here.
        None if wants_self && !cx.identity_declared => {
            cx.field_error("issuers", "`self` names the gateway's own token issuer: add an `identity` section");
            None
        }
        _ => None,
    }
}

/// The configured algorithms; with the own issuer and no list, those of its published keys.
fn algorithms(cfg: &JwtConfig, own: Option<&IssuerFacts>, cx: &mut CompileContext) -> Vec<Algorithm> {
    let mut algorithms: Vec<Algorithm> =
        own.filter(|_| cfg.algorithms.is_empty()).map(|own| own.algorithms.clone()).unwrap_or_default();
    for a in &cfg.algorithms {
        match a.parse::<Algorithm>() {
            Ok(alg) => algorithms.push(alg),
            Err(_) => {
                cx.field_error("algorithms", format!("{a:?} is not a supported algorithm (RS256…RS512, PS256…PS512, ES256, ES384, EdDSA, HS256…HS512)"));
            }
        }
    }
    let wants_self = cfg.issuers.iter().any(|i| i == "self");
    if algorithms.is_empty() && cfg.algorithms.is_empty() && !(wants_self && cx.issuer.is_none()) {
        cx.field_error("algorithms", "list the algorithms your issuer signs with, like [RS256]");
    }
    if cfg.issuers.is_empty() {
        cx.field_error("issuers", "list at least one issuer (the tokens' `iss`)");
    }
    let hmac = algorithms.iter().any(|a| a.family() == AlgorithmFamily::Hmac);
    if hmac && algorithms.iter().any(|a| a.family() != AlgorithmFamily::Hmac) {
        cx.field_error("algorithms", "HS* and public-key algorithms cannot be mixed in one policy (key confusion)");
    }
    algorithms
}

/// Exactly one key source, and HS* exactly with a secret given by reference.
fn check_source_choice(cfg: &JwtConfig, uses_own: bool, algorithms: &[Algorithm], cx: &mut CompileContext) {
    let sources = [!cfg.keys.is_empty(), cfg.jwks_url.is_some(), cfg.openid_config.is_some(), cfg.secret.is_some()];
    let count = sources.iter().filter(|s| **s).count();
    let wants_self = cfg.issuers.iter().any(|i| i == "self");
    if (uses_own || wants_self) && count != 0 {
        cx.field_error(
            "keys",
            "`issuers: [self]` uses the gateway's own key; put other issuers in another of `providers`",
        );
    } else if !uses_own && !wants_self && count != 1 {
        cx.field_error("keys", "give exactly one of keys, jwks_url, openid_config or secret");
    }
    let hmac = algorithms.iter().any(|a| a.family() == AlgorithmFamily::Hmac);
    if cfg.secret.is_some() && !hmac {
        cx.field_error("secret", "a secret only verifies HS256/HS384/HS512; list those in algorithms");
    }
    if hmac && cfg.secret.is_none() {
        cx.field_error("algorithms", "HS* algorithms need `secret`; with public keys use RS*, PS*, ES* or EdDSA");
    }
    if let Some(ValueRef::Literal(_)) = &cfg.secret {
        cx.field_error("secret", "never write a secret inline: use ${env:NAME} or ${file:path}");
    }
    for url in cfg.jwks_url.iter().chain(&cfg.openid_config) {
        if !url.starts_with("https://") {
            cx.field_error("jwks_url", format!("{url:?}: keys are only fetched over https://"));
        }
    }
}

fn claim_rules(cfg: &JwtConfig, cx: &mut CompileContext) -> Vec<ClaimRule> {
    let mut rules = Vec::new();
    for (claim, rule) in &cfg.require_claims {
        let (values, all) = match (&rule.any_of, &rule.all_of) {
            (Some(values), None) => (values.clone(), false),
            (None, Some(values)) => (values.clone(), true),
            _ => {
                cx.field_error("require_claims", format!("{claim}: give exactly one of any_of or all_of"));
                continue;
            }
        };
        let separator = match rule.separator.as_deref() {
            Some("") => {
                cx.field_error("require_claims", format!("{claim}: separator is empty"));
                continue;
            }
            Some(sep) => Some(sep.to_owned()),
            None if claim == "scope" || claim == "scp" => Some(" ".to_owned()),
            None => None,
        };
        rules.push(ClaimRule { claim: claim.clone(), values, all, separator });
    }
    rules
}

fn forwarded_claims(cfg: &JwtConfig, cx: &mut CompileContext) -> Vec<(String, HeaderName)> {
    let mut forward = Vec::new();
    for (claim, header) in &cfg.forward_claims {
        match HeaderName::from_bytes(header.as_bytes()) {
            Ok(h) => forward.push((claim.clone(), h)),
            Err(_) => {
                cx.field_error("forward_claims", format!("{header:?} is not a header name"));
            }
        }
    }
    forward
}

/// The TLS client for key fetches: system roots plus `trusted_cas` (read once, tracked for
/// expiry).
fn fetch_tls(cfg: &JwtConfig, cx: &mut CompileContext) -> Option<Arc<rustls::ClientConfig>> {
    if !cfg.is_remote() {
        if let Some(file) = &cfg.trusted_cas {
            cx.path(&file.value);
        }
        return None;
    }
    let extra = match &cfg.trusted_cas {
        Some(file) => {
            let usage = format!("{}.trusted_cas", field_path(cx));
            cx.certs(file, &usage).unwrap_or_default()
        }
        None => Vec::new(),
    };
    match crate::tls::client_config(crate::tls::Roots::SystemAnd(extra), None) {
        Ok(c) => Some(c),
        Err(e) => {
            let at = cfg.trusted_cas.as_ref().map(|f| f.referenced);
            match at {
                Some(at) => cx.field_error_at(at, "trusted_cas", e.to_string()),
                None => cx.field_error("trusted_cas", e.to_string()),
            };
            None
        }
    }
}

/// The document path of the policy being compiled (for certificate usage labels).
fn field_path(cx: &CompileContext) -> String {
    format!("policies.{}.jwt", cx.name())
}

fn key_source(cfg: &JwtConfig, own: Option<&IssuerFacts>, algorithms: &[Algorithm], cx: &mut CompileContext) -> Source {
    if let Some(own) = own {
        return match KeySet::from_jwks(&own.jwks) {
            Ok(set) => Source::Static(Arc::new(set)),
            Err(e) => {
                cx.field_error("issuers", format!("the issuer's own key: {e}"));
                Source::Static(Arc::default())
            }
        };
    }
    if let Some(url) = &cfg.jwks_url {
        return Source::Jwks(url.clone());
    }
    if let Some(url) = &cfg.openid_config {
        return Source::Discovery(url.clone());
    }
    if let Some(secret) = &cfg.secret {
        let key = match cx.value(secret) {
            Ok(s) if s.len() >= 32 => Key::new(None, &DecodingKey::from_secret(s.as_bytes())).into_iter().collect(),
            Ok(_) => {
                cx.field_error("secret", "the secret must be at least 32 bytes (RFC 7518 §3.2)");
                Vec::new()
            }
            Err(e) => {
                cx.field_error("secret", e.to_string());
                Vec::new()
            }
        };
        return Source::Static(Arc::new(KeySet::new(key)));
    }
    let mut set = KeySet::default();
    for (i, file) in cfg.keys.iter().enumerate() {
        match cx.read(&file.value) {
            Ok(pem) => match pem_key(&pem, algorithms) {
                Some(key) => set.keys.push(key),
                None => {
                    let full = cx.dir().join(&file.value);
                    cx.field_error_at(
                        file.referenced,
                        &format!("keys[{i}]"),
                        format!("{} holds no public key usable with {algorithms:?}", full.display()),
                    );
                }
            },
            Err(e) => {
                let full = cx.dir().join(&file.value);
                cx.field_error_at(
                    file.referenced,
                    &format!("keys[{i}]"),
                    format!("cannot read {}: {e}", full.display()),
                );
            }
        }
    }
    Source::Static(Arc::new(set))
}

/// A PEM public key for the configured algorithm families.
fn pem_key(pem: &[u8], algorithms: &[Algorithm]) -> Option<Key> {
    for family in [AlgorithmFamily::Rsa, AlgorithmFamily::Ec, AlgorithmFamily::Ed] {
        if !algorithms.iter().any(|a| a.family() == family) {
            continue;
        }
        let key = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
            _ => DecodingKey::from_ed_pem(pem),
        };
        if let Some(key) = key.ok().and_then(|key| Key::new(None, &key)) {
            return Some(key);
        }
    }
    None
}
