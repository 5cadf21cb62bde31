//! `cors`: cross-origin limits (Fetch standard, "CORS protocol").
//!
//! Origins are exact (`https://portal.example.com`) or one-label-or-more wildcards
//! (`https://*.portal.example.com`, which never matches `portal.example.com` itself nor a
//! look-alike such as `evilportal.example.com`). Origins are compared in the form browsers
//! send them (lower-case, default port omitted); any other spelling does not match. A
//! preflight (OPTIONS with `Access-Control-Request-Method`) is answered here with 204 and
//! never forwarded. Every response of the route carries `Vary: Origin`.

use std::collections::HashSet;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde::Deserialize;

use super::context::RequestContext;
use super::kind::{Blame, Decision, PolicyKind};
use crate::body::{self, Body};
use crate::config::context::{CompileContext, Invalid};
use crate::config::values::ConfigDuration;
use crate::problem::Problem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// The `cors` policy as written in YAML.
pub struct CorsConfig {
    /// `allowed_origins`: exact origins, `https://*.domain` wildcards, `null`, or `*`.
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    /// `allowed_methods`: methods a preflight may ask for (default GET, HEAD, POST).
    pub allowed_methods: Vec<String>,
    #[serde(default)]
    /// `allowed_headers`: request headers a preflight may ask for.
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    /// `expose_headers`: response headers the browser may show the page.
    pub expose_headers: Vec<String>,
    #[serde(default)]
    /// `allow_credentials`: send `Access-Control-Allow-Credentials: true` (never with `*`).
    pub allow_credentials: bool,
    /// `max_age`: how long a browser may cache a preflight answer.
    pub max_age: Option<ConfigDuration>,
    #[serde(default)]
    /// `terminate_unmatched`: refuse (403) any request with an unlisted origin, not only preflights.
    pub terminate_unmatched: bool,
}

/// `scheme://*.domain[:port]`: `suffix` is `.domain`, `port` empty for the default.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Wildcard {
    scheme: String,
    suffix: String,
    port: String,
}

/// The compiled `cors` policy.
#[derive(Debug)]
pub struct Cors {
    any: bool,
    exact: HashSet<String>,
    wildcards: Vec<Wildcard>,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    /// Lower-case names.
    headers: HashSet<String>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
    terminate_unmatched: bool,
}

/// What the request side decided.
#[derive(Debug)]
pub enum Verdict {
    /// Go on; echo this origin on the response when it is allowed.
    Pass(Option<HeaderValue>),
    /// An allowed preflight, answered here (never forwarded), and its origin.
    Preflight(Response<Body>, HeaderValue),
    /// Refused: a preflight, or any request under `terminate_unmatched`.
    Refuse(Refusal),
}

/// Why a cross-origin request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The `Origin` is not listed.
    OriginNotAllowed,
    /// The preflight asks for a method that is not allowed.
    MethodNotAllowed,
    /// The preflight asks for a header that is not allowed.
    HeaderNotAllowed,
}

impl Refusal {
    /// The reason, for logs, metrics and `trace`.
    pub fn label(self) -> &'static str {
        match self {
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::HeaderNotAllowed => "header_not_allowed",
        }
    }

    /// 403 with the kind of refusal.
    pub fn problem(self) -> Problem {
        let detail = match self {
            Self::OriginNotAllowed => "the request's origin is not allowed",
            Self::MethodNotAllowed => "the requested method is not allowed",
            Self::HeaderNotAllowed => "a requested header is not allowed",
        };
        Problem::new(StatusCode::FORBIDDEN, "cors-rejected", "Cross-origin request refused", detail)
    }
}

/// Items joined into one header value; `None` for none.
fn join<S: AsRef<str>>(items: &[S]) -> Option<HeaderValue> {
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    (!items.is_empty()).then(|| HeaderValue::from_str(&items.join(", ")).ok()).flatten()
}

/// Splits `scheme://host[:port]`; refuses paths, queries, user info and empty hosts.
fn split_origin(origin: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = origin.split_once("://")?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    // `port` is None when none is written; a `:` with nothing after it is no origin.
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']')? + 1;
        match &rest[end..] {
            "" => (&rest[..end], None),
            tail => (&rest[..end], Some(tail.strip_prefix(':')?)),
        }
    } else {
        rest.rsplit_once(':').map_or((rest, None), |(host, port)| (host, Some(port)))
    };
    if host.is_empty() || port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some((scheme, host, port.unwrap_or("")))
}

/// One entry of `allowed_origins`, compiled.
enum AllowedOrigin {
    /// `*`.
    Any,
    /// `null`, or one origin in the form browsers send it.
    Exact(String),
    /// `scheme://*.domain[:port]`.
    Wildcard(Wildcard),
}

/// Compiles one entry of `allowed_origins`; `None` once it is reported.
fn allowed_origin(origin: &str, cx: &mut CompileContext) -> Option<AllowedOrigin> {
    if origin == "*" {
        return Some(AllowedOrigin::Any);
    }
    if origin == "null" {
        return Some(AllowedOrigin::Exact(origin.to_owned()));
    }
    let lower = origin.to_ascii_lowercase();
    let Some((scheme, host, port)) = split_origin(&lower) else {
        cx.field_error(
            "allowed_origins",
            format!("{origin:?} is not an origin: write scheme://host[:port], like https://portal.example.com"),
        );
        return None;
    };
    let port = match (scheme, port) {
        ("https", "443") | ("http", "80") => "",
        (_, p) => p,
    };
    match host.strip_prefix("*.") {
        Some(domain) if !domain.is_empty() && !domain.contains('*') => Some(AllowedOrigin::Wildcard(Wildcard {
            scheme: scheme.to_owned(),
            suffix: format!(".{domain}"),
            port: port.to_owned(),
        })),
        _ if host.contains('*') => {
            cx.field_error(
                "allowed_origins",
                format!("{origin:?}: a wildcard may only be the first label, like https://*.example.com"),
            );
            None
        }
        _ => {
            let port = if port.is_empty() { String::new() } else { format!(":{port}") };
            Some(AllowedOrigin::Exact(format!("{scheme}://{host}{port}")))
        }
    }
}

/// `allowed_methods`, or GET, HEAD and POST when none is listed; reports names that are no
/// method.
fn allowed_methods(names: &[String], cx: &mut CompileContext) -> Vec<Method> {
    let mut methods = Vec::new();
    for m in names {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(method) => methods.push(method),
            Err(_) => {
                cx.field_error("allowed_methods", format!("{m:?} is not an HTTP method"));
            }
        }
    }
    if methods.is_empty() {
        methods = vec![Method::GET, Method::HEAD, Method::POST];
    }
    methods
}

/// Reports entries of `allowed_headers` and `expose_headers` that are no header name.
fn check_header_names(cfg: &CorsConfig, cx: &mut CompileContext) {
    for h in cfg.allowed_headers.iter().chain(&cfg.expose_headers) {
        if HeaderName::from_bytes(h.as_bytes()).is_err() {
            cx.field_error("allowed_headers", format!("{h:?} is not a header name"));
        }
    }
}

impl Blame for Refusal {}

impl PolicyKind for Cors {
    type Config = CorsConfig;
    type Refusal = Refusal;

    /// Compiles the policy.
    ///
    /// # Errors
    /// An origin that is not `scheme://host[:port]`, `*` with credentials, a bad method or
    /// header name.
    fn compile(cfg: &CorsConfig, cx: &mut CompileContext) -> Result<Self, Invalid> {
        let mark = cx.mark();
        let (mut any, mut exact, mut wildcards) = (false, HashSet::new(), Vec::new());
        for origin in cfg.allowed_origins.iter().filter_map(|origin| allowed_origin(origin, cx)) {
            match origin {
                AllowedOrigin::Any => any = true,
                AllowedOrigin::Exact(origin) => {
                    exact.insert(origin);
                }
                AllowedOrigin::Wildcard(wildcard) => wildcards.push(wildcard),
            }
        }
        if any && cfg.allow_credentials {
            cx.field_error("allow_credentials", "`*` origins with allow_credentials: true would let every site act as the user; list the origins instead");
        }
        let methods = allowed_methods(&cfg.allowed_methods, cx);
        check_header_names(cfg, cx);
        cx.valid_since(mark)?;
        let method_names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        Ok(Self {
            any,
            exact,
            wildcards,
            allow_methods: join(&method_names).expect("at least one valid method"),
            methods,
            headers: cfg.allowed_headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            allow_headers: join(&cfg.allowed_headers),
            expose_headers: join(&cfg.expose_headers),
            credentials: cfg.allow_credentials,
            max_age: cfg.max_age.map(|d| HeaderValue::from(d.0.as_secs())),
            terminate_unmatched: cfg.terminate_unmatched,
        })
    }

    /// Answers preflights, refuses unlisted origins when configured, and leaves the allowed
    /// origin for the response side.
    async fn check(&self, parts: &mut Parts, cx: &mut RequestContext<'_>) -> Decision<Refusal> {
        match self.verdict(&parts.method, &parts.headers) {
            Verdict::Pass(origin) => {
                cx.cors_origin = origin;
                Decision::Continue
            }
            Verdict::Preflight(answer, origin) => {
                cx.cors_origin = Some(origin);
                Decision::Answer(answer)
            }
            Verdict::Refuse(refusal) => Decision::Deny(refusal),
        }
    }

    /// `Vary: Origin` always; the CORS headers when the origin matched.
    fn on_response(&self, cx: &RequestContext<'_>, headers: &mut HeaderMap) {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = &cx.cors_origin else { return };
        let allow_origin = if self.any && !self.credentials { HeaderValue::from_static("*") } else { origin.clone() };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(v) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

impl Cors {
    /// Whether a request's `Origin` value is allowed, exactly as a browser sends it.
    pub fn allows(&self, origin: &str) -> bool {
        if origin == "null" {
            return self.exact.contains(origin);
        }
        if self.any || self.exact.contains(origin) {
            return true;
        }
        // Browsers send origins lower-case; another spelling is not a browser's origin.
        let Some((scheme, host, port)) = split_origin(origin) else { return false };
        if origin.bytes().any(|b| b.is_ascii_uppercase()) {
            return false;
        }
        self.wildcards.iter().any(|w| {
            w.scheme == scheme
                && w.port == port
                && host.len() > w.suffix.len()
                && host.ends_with(w.suffix.as_str())
                && valid_label_run(&host[..host.len() - w.suffix.len()])
        })
    }

    /// What the request side decides: answers preflights, refuses unlisted origins when
    /// configured.
    pub fn verdict(&self, method: &Method, headers: &HeaderMap) -> Verdict {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Verdict::Pass(None);
        };
        let allowed = origin.to_str().is_ok_and(|o| self.allows(o));
        let preflight = method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !allowed {
            if preflight || self.terminate_unmatched {
                return Verdict::Refuse(Refusal::OriginNotAllowed);
            }
            return Verdict::Pass(None);
        }
        if !preflight {
            return Verdict::Pass(Some(origin.clone()));
        }
        let requested =
            headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        if !requested.is_some_and(|m| self.methods.contains(&m)) {
            return Verdict::Refuse(Refusal::MethodNotAllowed);
        }
        let all_headers_allowed = headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .all(|h| self.headers.contains(&h.to_ascii_lowercase()));
        if !all_headers_allowed {
            return Verdict::Refuse(Refusal::HeaderNotAllowed);
        }
        let mut rsp = Response::new(body::empty());
        *rsp.status_mut() = StatusCode::NO_CONTENT;
        let h = rsp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        if let Some(v) = &self.allow_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        if let Some(v) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        h.append(
            header::VARY,
            HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers"),
        );
        Verdict::Preflight(rsp, origin.clone())
    }
}

/// `a` or `a.b`: DNS labels of letters, digits and `-`.
fn valid_label_run(labels: &str) -> bool {
    labels.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(cfg: &CorsConfig) -> Result<Cors, Vec<crate::config::ConfigError>> {
        let file = std::path::Path::new("test.yaml");
        let mut cx = CompileContext::new(file);
        cx.enter("p", "policies.p.cors", serde_saphyr::Location::UNKNOWN);
        let cors = Cors::compile(cfg, &mut cx);
        cx.finish()?;
        Ok(cors.expect("no errors reported"))
    }

    fn cors(origins: &[&str]) -> Cors {
        compile(&CorsConfig {
            allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            allowed_methods: vec!["GET".into(), "POST".into()],
            allowed_headers: vec!["Authorization".into()],
            expose_headers: vec![],
            allow_credentials: false,
            max_age: None,
            terminate_unmatched: true,
        })
        .unwrap()
    }

    #[test]
    fn is_allowed_for_listed_and_wildcard_origins() {
        let c = cors(&["https://portal.example.com", "https://*.portal.example.com", "http://localhost:3000"]);
        assert!(c.allows("https://portal.example.com"));
        assert!(c.allows("https://a.portal.example.com"));
        assert!(c.allows("https://a.b.portal.example.com"));
        assert!(c.allows("http://localhost:3000"));
    }

    #[test]
    fn is_not_allowed_for_look_alikes() {
        let c = cors(&["https://portal.example.com", "https://*.portal.example.com", "http://localhost:3000"]);
        for origin in [
            "https://portal.example.com.evil.net",
            "https://evilportal.example.com",
            "https://evil.portal.example.com.evil.net",
            "http://portal.example.com",
            "https://portal.example.com:8443",
            "https://PORTAL.example.com",
            "https://portal.example.com/",
            "https://user@portal.example.com",
            "https://.portal.example.com",
            "https://a..portal.example.com",
            "http://localhost:30000",
            // Found by the `cors` fuzz target: an empty port passed as the default one.
            "https://a.portal.example.com:",
            "https://portal.example.com:",
            "null",
            "",
        ] {
            assert!(!c.allows(origin), "{origin}");
        }
    }

    #[test]
    fn default_ports_are_the_same_origin() {
        let c = cors(&["https://portal.example.com:443"]);
        assert!(c.allows("https://portal.example.com"));
    }

    #[test]
    fn null_only_when_listed() {
        assert!(cors(&["null"]).allows("null"));
        assert!(!cors(&["*"]).allows("null"));
    }

    #[test]
    fn star_with_credentials_is_a_config_error() {
        let err = compile(&CorsConfig {
            allowed_origins: vec!["*".into()],
            allowed_methods: vec![],
            allowed_headers: vec![],
            expose_headers: vec![],
            allow_credentials: true,
            max_age: None,
            terminate_unmatched: false,
        })
        .unwrap_err();
        assert_eq!(err[0].path, "policies.p.cors.allow_credentials");
    }

    #[test]
    fn malformed_origins_are_config_errors() {
        for bad in ["portal.example.com", "https://", "https://a.com/path", "https://a.*.com", "ftp://a.com"] {
            let r = compile(&CorsConfig {
                allowed_origins: vec![bad.into()],
                allowed_methods: vec![],
                allowed_headers: vec![],
                expose_headers: vec![],
                allow_credentials: false,
                max_age: None,
                terminate_unmatched: false,
            });
            assert!(r.is_err(), "{bad}");
        }
    }
}
