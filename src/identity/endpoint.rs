//! The issuer's HTTP side: `POST /oauth2/token` (RFC 6749 §4.4, client credentials) and the
//! two key documents. Errors are RFC 6749 §5.2 JSON and never say which check failed:
//! every client-authentication failure is the same `invalid_client`, every user problem
//! the same `invalid_grant`. Failed authentications are counted per source network and per
//! client id, successful issuance per client id (see [`super::budgets`]).
//!
//! Scopes (RFC 6749 §3.3): each requested scope must be configured (`identity.scopes`) and
//! granted to the system (`portcullis systems scopes`), else `invalid_scope` — checked only
//! once the client authenticated, so that a caller without a secret learns nothing of any
//! system's grants. A request without `scope` gets the pre-defined default §3.3 allows:
//! no scope at all (least privilege; the token has no `scope` claim).

use std::borrow::Cow;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::{Issuer, DISCOVERY_PATH, JWKS_PATH, TOKEN_PATH};
use crate::body::{self, Body};
use crate::proxy::{Outbound, Responder};
use crate::store::{check_id, Field, SecretHash, SecretSlot, User, MAX_SECRET_BYTES};
use crate::telemetry::metrics::metrics;

/// The largest token request body read.
const MAX_FORM_BYTES: usize = 16 << 10;
/// How long a client may take to send the body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no token was issued; each is one RFC 6749 error answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The token endpoint was called with a method other than POST (405).
    MethodNotAllowed,
    /// The request is malformed: not a form, a repeated parameter, no `grant_type`, two
    /// authentication methods, or a body too large, broken or too slow (400 `invalid_request`).
    InvalidRequest(&'static str),
    /// Client authentication failed, for whatever reason (401 `invalid_client`).
    InvalidClient,
    /// The named external user is unknown, inactive or not linked to the client (400 `invalid_grant`).
    InvalidGrant,
    /// A requested scope is not configured, or not granted to the authenticated client (400
    /// `invalid_scope`).
    InvalidScope,
    /// The `grant_type` is not `client_credentials` (400 `unsupported_grant_type`).
    UnsupportedGrantType,
    /// A budget is spent; retry after this long (429, with `Retry-After`).
    RateLimited(Duration),
    /// The store failed or the token could not be signed (503).
    Unavailable,
}

impl Refusal {
    fn label(&self) -> &'static str {
        match self {
            Self::MethodNotAllowed | Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::InvalidScope => "invalid_scope",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::RateLimited(_) => "rate_limited",
            Self::Unavailable => "unavailable",
        }
    }

    fn into_response(self) -> Response<Body> {
        let (status, error, description): (_, _, Cow<'static, str>) = match &self {
            Self::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "the token endpoint only accepts POST".into())
            }
            Self::InvalidRequest(why) => (StatusCode::BAD_REQUEST, "invalid_request", (*why).into()),
            Self::InvalidClient => (StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed".into()),
            Self::InvalidGrant => {
                (StatusCode::BAD_REQUEST, "invalid_grant", "the grant is not valid for this client".into())
            }
            Self::InvalidScope => {
                (StatusCode::BAD_REQUEST, "invalid_scope", "the requested scope is not allowed".into())
            }
            Self::UnsupportedGrantType => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=client_credentials is supported".into(),
            ),
            Self::RateLimited(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                format!("too many token requests; retry after {} s", retry_after(*wait)).into(),
            ),
            Self::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the token service is unavailable".into())
            }
        };
        let mut rsp = json_response(status, &json!({ "error": error, "error_description": description }));
        let headers = rsp.headers_mut();
        match self {
            Self::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            Self::InvalidClient => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"token\""));
            }
            Self::RateLimited(wait) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after(wait)));
            }
            _ => {}
        }
        rsp
    }
}

fn retry_after(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Token answers are never cached (RFC 6749 §5.1).
fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut rsp = Response::new(body::full(value.to_string()));
    *rsp.status_mut() = status;
    let headers = rsp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    rsp
}

/// A token request's client credentials.
pub struct Credentials {
    /// The client id, from HTTP Basic or the `client_id` parameter.
    pub client_id: String,
    secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("client_id", &self.client_id).field("secret", &"[redacted]").finish()
    }
}

/// What a token request asks for, read from its form and headers; nothing checked yet
/// against the store, the budgets or the configured scopes.
#[derive(Debug)]
pub struct TokenRequest {
    /// The client's id and secret.
    pub credentials: Credentials,
    /// The external user id, when one is named.
    pub user: Option<String>,
    /// The space-separated scopes asked for, as sent.
    pub scope: Option<String>,
}

impl TokenRequest {
    /// Reads a client-credentials request (RFC 6749 §4.4.2): `grant_type`, one client
    /// authentication method (Basic or form fields), `user`, `scope`.
    ///
    /// # Errors
    /// `invalid_request` (a repeated parameter, no `grant_type`, two authentication methods),
    /// `unsupported_grant_type`, `invalid_client`.
    pub fn parse(headers: &HeaderMap, form: &[u8]) -> Result<Self, Refusal> {
        let params = parse_form(form)?;
        match param(&params, "grant_type") {
            None => return Err(Refusal::InvalidRequest("grant_type is missing")),
            Some("client_credentials") => {}
            Some(_) => return Err(Refusal::UnsupportedGrantType),
        }
        let credentials = credentials(headers, param(&params, "client_id"), param(&params, "client_secret"))?;
        let user = param(&params, "user").map(str::to_owned);
        let scope = param(&params, "scope").map(str::to_owned);
        Ok(Self { credentials, user, scope })
    }
}

impl Responder for Issuer {
    fn respond<'a>(&'a self, request: Outbound<'a>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>> {
        Box::pin(self.answer(request))
    }
}

impl Issuer {
    /// Answers a request routed to one of the issuer's paths.
    pub async fn answer(&self, out: Outbound<'_>) -> Response<Body> {
        match out.path {
            TOKEN_PATH => {
                let answer = self.token(&out.method, &out.headers, out.body, out.client_ip, Instant::now()).await;
                let (result, secret) = match &answer {
                    Ok((_, slot)) => ("issued", slot.as_str()),
                    Err(refusal) => (refusal.label(), "none"),
                };
                metrics().token_requests.with_label_values(&[result, secret]).inc();
                answer.map_or_else(Refusal::into_response, |(rsp, _)| rsp)
            }
            DISCOVERY_PATH => document(&out.method, self.discovery.clone()),
            JWKS_PATH => document(&out.method, self.jwks.clone()),
            _ => {
                let mut rsp = Response::new(body::empty());
                *rsp.status_mut() = StatusCode::NOT_FOUND;
                rsp
            }
        }
    }

    async fn token(
        &self,
        method: &Method,
        headers: &HeaderMap,
        body: Body,
        client_ip: IpAddr,
        now: Instant,
    ) -> Result<(Response<Body>, SecretSlot), Refusal> {
        if method != Method::POST {
            return Err(Refusal::MethodNotAllowed);
        }
        let network = crate::ipset::source_network(client_ip);
        self.budgets.admit_network(network, now).map_err(Refusal::RateLimited)?;
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(Refusal::InvalidRequest("send the parameters as application/x-www-form-urlencoded"));
        }
        let form = match tokio::time::timeout(BODY_TIMEOUT, read_form(body)).await {
            Ok(Some(form)) => form,
            Ok(None) => return Err(Refusal::InvalidRequest("the request body is too large or broken")),
            Err(_) => return Err(Refusal::InvalidRequest("the request body took too long")),
        };
        let TokenRequest { credentials, user, scope } = TokenRequest::parse(headers, &form)?;
        let source = self.budgets.admit_client(&credentials.client_id, network, now).map_err(Refusal::RateLimited)?;

        let client_id = credentials.client_id.clone();
        let refused = |refusal: &Refusal| {
            tracing::info!(client_id = %client_id, refusal = refusal.label(), "token refused");
        };
        let (slot, user, granted) = self.authenticate(credentials, user).await.inspect_err(|refusal| {
            if matches!(refusal, Refusal::InvalidClient | Refusal::InvalidGrant) {
                self.budgets.failed(&client_id, source, now);
            }
            refused(refusal);
        })?;
        // Only now: an unauthenticated caller learns nothing of the grants. An authenticated
        // client asking too much is not guessing: no failure is counted, and no token is
        // issued, so its network does not become familiar either.
        let scope = self.scope(scope.as_deref(), &granted).inspect_err(refused)?;
        self.budgets.issue(&client_id, source, now).map_err(Refusal::RateLimited)?;
        let unix_now = crate::clock::unix_now();
        self.note_use(&client_id, slot, unix_now);
        Ok((self.mint(&client_id, user, scope, unix_now)?, slot))
    }

    /// Records, at most once a minute per system and secret and without waiting for it, that
    /// the secret got a token: operators see when callers moved to the alternate secret.
    fn note_use(&self, client_id: &str, slot: SecretSlot, unix_now: u64) {
        let minute = (unix_now - unix_now % 60) as i64;
        let key = (client_id.to_owned(), slot);
        if self.uses.get(&key) == Some(minute) {
            return;
        }
        self.uses.insert(key, minute);
        let (store, client_id) = (self.store.clone(), client_id.to_owned());
        tokio::spawn(async move {
            if let Err(e) = store.secret_used(&client_id, slot, minute).await {
                tracing::warn!(error = %e, client_id = %client_id, "could not record a secret's use");
            }
        });
    }

    /// Checks the client's secret and the named external user against the store (one read,
    /// which never blocks the event loop): the internal user to put in `sub`, if one was
    /// named, and the scopes granted to the client.
    async fn authenticate(
        &self,
        credentials: Credentials,
        user: Option<String>,
    ) -> Result<(SecretSlot, Option<User>, Vec<String>), Refusal> {
        let found = self.store.lookup(&credentials.client_id, user.as_deref()).await.map_err(|e| {
            tracing::error!(error = %e, "token request: the identity store failed");
            Refusal::Unavailable
        })?;
        let hasher = self.store.hasher();
        let slot = match &found.client {
            Some(c) => hasher.matching(&credentials.secret, &c.primary, &c.alternate).filter(|_| c.active),
            None => {
                // The same work as for a known client, so that timing tells nothing.
                let unknown = SecretHash(vec![0; 32]);
                let _ = hasher.matching(&credentials.secret, &unknown, &unknown);
                None
            }
        };
        let (Some(slot), Some(client)) = (slot, found.client) else { return Err(Refusal::InvalidClient) };
        match (user, found.user) {
            (None, _) => Ok((slot, None, client.scopes)),
            (Some(_), Some(u)) if u.active => Ok((slot, Some(u), client.scopes)),
            (Some(_), _) => Err(Refusal::InvalidGrant),
        }
    }

    /// Signs the access token, issued at `now` (Unix seconds), and answers with it.
    fn mint(
        &self,
        client_id: &str,
        user: Option<User>,
        scope: Option<String>,
        now: u64,
    ) -> Result<Response<Body>, Refusal> {
        let (sub, roles) = match &user {
            Some(u) => (u.id.as_str(), u.roles.as_slice()),
            None => (client_id, &[][..]),
        };
        let mut claims = json!({
            "iss": self.issuer,
            "sub": sub,
            "aud": self.audience,
            "iat": now,
            "exp": now + self.ttl.as_secs(),
            "jti": crate::id::uuid_v4(),
            "client_id": client_id,
            "roles": roles,
        });
        if let Some(scope) = &scope {
            claims["scope"] = Value::String(scope.clone());
        }
        let token = self.key.sign(&claims).map_err(|e| {
            tracing::error!(error = %e, "token request: signing failed");
            Refusal::Unavailable
        })?;
        tracing::info!(client_id = %client_id, sub = %sub, "token issued");
        let mut answer = json!({ "access_token": token, "token_type": "Bearer", "expires_in": self.ttl.as_secs() });
        if let Some(scope) = scope {
            answer["scope"] = Value::String(scope);
        }
        Ok(json_response(StatusCode::OK, &answer))
    }

    /// The requested scopes, each of which must be both configured and `granted` to the
    /// client, without repeats; `None` when none were asked for (RFC 6749 §3.3's default).
    fn scope(&self, requested: Option<&str>, granted: &[String]) -> Result<Option<String>, Refusal> {
        scope(requested, &self.scopes, granted)
    }
}

/// See [`Issuer::scope`]. Linear in the request's scopes: each is compared with the few
/// configured ones, and only allowed ones (fewer than configured) are kept for repeats.
fn scope(requested: Option<&str>, configured: &[String], granted: &[String]) -> Result<Option<String>, Refusal> {
    let mut allowed: Vec<&str> = Vec::new();
    for asked in requested.unwrap_or_default().split(' ').filter(|s| !s.is_empty()) {
        let is = |list: &[String]| list.iter().any(|s| s == asked);
        if !is(configured) || !is(granted) {
            return Err(Refusal::InvalidScope);
        }
        if !allowed.contains(&asked) {
            allowed.push(asked);
        }
    }
    Ok((!allowed.is_empty()).then(|| allowed.join(" ")))
}

/// The whole body, unless it is broken or longer than [`MAX_FORM_BYTES`]. A longer body is
/// still read to its end (within the listener's body limit and the caller's timeout) and
/// dropped, so that the refusal reaches the client: closing a connection with unread data
/// resets it, and the client may never see the answer.
async fn read_form(mut body: Body) -> Option<Vec<u8>> {
    let mut form = Vec::new();
    let mut too_long = false;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.ok()?.data_ref() {
            too_long |= form.len() + data.len() > MAX_FORM_BYTES;
            if !too_long {
                form.extend_from_slice(data);
            }
        }
    }
    (!too_long).then_some(form)
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The form's parameters; a repeated one is an error (RFC 6749 §3.2).
fn parse_form(form: &[u8]) -> Result<Vec<(String, String)>, Refusal> {
    let mut params: Vec<(String, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(form) {
        if params.iter().any(|(n, _)| *n == name) {
            return Err(Refusal::InvalidRequest("a parameter is repeated"));
        }
        params.push((name.into_owned(), value.into_owned()));
    }
    Ok(params)
}

/// Client credentials from HTTP Basic (RFC 6749 §2.3.1, form-encoded inside) or the
/// `client_id`/`client_secret` parameters — one method only.
fn credentials(headers: &HeaderMap, id: Option<&str>, secret: Option<&str>) -> Result<Credentials, Refusal> {
    let basic = headers.get(header::AUTHORIZATION).map(|v| basic_credentials(v).ok_or(Refusal::InvalidClient));
    let credentials = match (basic, id, secret) {
        (Some(_), _, Some(_)) => return Err(Refusal::InvalidRequest("use one client authentication method, not two")),
        (Some(basic), _, None) => basic?,
        (None, Some(id), Some(secret)) => Credentials { client_id: id.to_owned(), secret: secret.to_owned() },
        (None, _, _) => return Err(Refusal::InvalidClient),
    };
    // Client ids are short and printable (`check_id`); anything else is refused before it
    // can become a rate-limit key or a log field.
    let plausible_id = check_id(Field::ClientId, &credentials.client_id).is_ok();
    if !plausible_id || credentials.secret.is_empty() || credentials.secret.len() > MAX_SECRET_BYTES {
        return Err(Refusal::InvalidClient);
    }
    Ok(credentials)
}

fn basic_credentials(value: &HeaderValue) -> Option<Credentials> {
    let (scheme, encoded) = value.to_str().ok()?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = std::str::from_utf8(&decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    // RFC 6749 §2.3.1: each part is form-urlencoded (`+` is a space).
    let unescape =
        |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8().ok().map(|v| v.into_owned());
    Some(Credentials { client_id: unescape(id)?, secret: unescape(secret)? })
}

/// A key document, for GET and HEAD; cacheable for five minutes.
fn document(method: &Method, json: Bytes) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut rsp = Response::new(body::empty());
        *rsp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        rsp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return rsp;
    }
    let mut rsp = Response::new(body::full(json));
    let headers = rsp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let value = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode("my%3Aclient:s%2Bcr+t&x=y"))).unwrap();
        let c = basic_credentials(&value).unwrap();
        assert_eq!((c.client_id.as_str(), c.secret.as_str()), ("my:client", "s+cr t&x=y"));
        assert!(basic_credentials(&HeaderValue::from_static("Bearer abc")).is_none());
        assert!(basic_credentials(&HeaderValue::from_static("Basic !!!")).is_none());
    }

    #[test]
    fn a_scope_is_allowed_when_configured_and_granted() {
        let list = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let (configured, granted) = (list("read write admin"), list("read write"));
        assert_eq!(scope(Some("read"), &configured, &granted), Ok(Some("read".into())));
        assert_eq!(scope(Some("write  read read"), &configured, &granted), Ok(Some("write read".into())));
        assert_eq!(scope(None, &configured, &granted), Ok(None), "no scope asked: none given");
        assert_eq!(scope(Some(" "), &configured, &granted), Ok(None));
    }

    #[test]
    fn a_scope_is_not_allowed_unless_configured_and_granted() {
        let list = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let (configured, granted) = (list("read write admin"), list("read write legacy"));
        for (asked, why) in [
            ("admin", "configured, not granted"),
            ("legacy", "granted, no longer configured"),
            ("other", "neither"),
            ("read admin", "one of two not granted"),
            ("READ", "scopes are case-sensitive"),
        ] {
            assert_eq!(scope(Some(asked), &configured, &granted), Err(Refusal::InvalidScope), "{why}");
        }
        assert_eq!(scope(Some("read"), &configured, &[]), Err(Refusal::InvalidScope), "nothing granted");
    }

    #[test]
    fn budgets_belong_to_ipv4_addresses_and_ipv6_64s() {
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(crate::ipset::source_network(v4), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(crate::ipset::source_network(a), crate::ipset::source_network(b));
        assert_ne!(crate::ipset::source_network(a), crate::ipset::source_network(other));
    }

    #[test]
    fn repeated_parameters_and_two_auth_methods_are_refused() {
        assert!(parse_form(b"grant_type=client_credentials&grant_type=client_credentials").is_err());
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        let both = credentials(&headers, Some("a"), Some("b")).err();
        assert!(matches!(both, Some(Refusal::InvalidRequest(_))));
        assert_eq!(credentials(&HeaderMap::new(), Some("a"), None).err(), Some(Refusal::InvalidClient));
        let long = "x".repeat(MAX_SECRET_BYTES + 1);
        assert_eq!(credentials(&HeaderMap::new(), Some("a"), Some(&long)).err(), Some(Refusal::InvalidClient));
    }
}
