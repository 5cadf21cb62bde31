//! One request, start to end (README: Architecture, a request's journey): strip, normalize, route, run the policy
//! chain, forward, and apply the response side. Every answer carries `X-Request-Id`.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::Authority;
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::body::{self, Body, BodyFault, BodyStats, LimitedBody};
use crate::clock::unix_now;
use crate::policy::context::Params;
use crate::policy::{Answer, Claims, PolicyDecision, RequestContext};
use crate::problem::Problem;
use crate::proxy::{ForwardError, Outbound};
use crate::request::client_ip;
use crate::request::client_ip::{ForwardedHeader, UnreadableEntry};
use crate::request::conn::ConnInfo;
use crate::request::framing::{self, FramingError};
use crate::request::headers::{
    strip_hop_by_hop, strip_overrides, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID,
};
use crate::request::normalize::{self, PathError};
use crate::request::upgrade::{self, Handshake, UpgradeError};
use crate::route::{PathParameters, Route};
use crate::runtime::{Limits, Runtime};
use crate::serve::access::{self, AccessRecord, LoggedBody};
use crate::serve::credential::{is_event_stream, Credential, EndsWithCredential};
use crate::serve::tunnel::{TunnelSpec, Tunnels};
use crate::telemetry::metrics::{count_error, method_class, metrics, Fault};

/// A request after the journey's step 2 (README: Architecture): cleaned of spoofable headers, normalized, routed.
pub struct Routed<'rt> {
    /// The request's id: a trusted proxy's, or a new one.
    pub request_id: String,
    /// The TCP peer.
    pub peer: IpAddr,
    /// The client address the policies see (the peer, or the one a trusted proxy vouches for).
    pub client_ip: IpAddr,
    /// Lower-case, without port.
    pub host: String,
    uri: Uri,
    /// The normalized path when it differs from the request's.
    normalized: Option<String>,
    /// The route that matched.
    pub route: &'rt Route,
    /// The values of the route template's `{param}` segments.
    pub params: Params,
    /// The method the backend will execute, when the route passes a method override.
    pub method_override: Option<Method>,
    /// A WebSocket handshake on a route that accepts them, over HTTP/1.1 or h2: forwarded
    /// as an HTTP/1.1 upgrade.
    pub websocket: Option<Handshake>,
}

impl Routed<'_> {
    /// The normalized path that routing, policies and the backend see.
    pub fn path(&self) -> &str {
        self.normalized.as_deref().unwrap_or_else(|| self.uri.path())
    }

    /// The request's query, as sent.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// What the route's policies see of this request, under `request_id` at `now`.
    pub fn context<'a>(&'a self, request_id: &'a str, conn: &'a ConnInfo, now: u64) -> RequestContext<'a> {
        let mut cx =
            RequestContext::new(request_id, self.client_ip, conn, &self.route.name, self.path(), &self.params, now);
        cx.method_override = self.method_override.clone();
        cx
    }
}

/// A request the gateway refused before its policies ran: always the client's fault.
pub struct Refused<'rt> {
    /// The request's id, for the answer's `X-Request-Id`.
    pub request_id: String,
    /// Why.
    pub refusal: Refusal,
    /// The client address: the one a trusted proxy vouches for once it was read, else the peer.
    pub client_ip: IpAddr,
    /// The route, when the refusal came after routing.
    pub route: Option<&'rt Route>,
}

/// Why a request was refused before its policies ran. Its label (for metrics, logs and
/// `test`) and its problem (for the client) come from one `match` each.
#[derive(Debug)]
pub enum Refusal {
    /// Bad framing or fields (400, 431, 501).
    Framing(FramingError),
    /// A method with lower-case letters: servers disagree on whether `delete` is `DELETE`.
    MethodCase(Method),
    /// A trusted proxy's forwarding chain reached an entry that is not an address.
    ForwardedFor(UnreadableEntry),
    /// A path that cannot be read one way only.
    Path(PathError),
    /// No `Host` (or `:authority`), or one that is not a host.
    MissingHost,
    /// No route serves this listener, host, path and method.
    NoRoute,
    /// Path parameters (`;`) on a route that refuses them.
    PathParameters,
    /// A method-override header that does not name one upper-case method the route serves.
    MethodOverride(HeaderName),
    /// A declared `Content-Length` above the listener's `max_body_bytes`.
    BodyTooLarge(u64),
    /// An `Upgrade` to another protocol than WebSocket (`h2c` above all), an h2 extended
    /// CONNECT for another `:protocol`, a plain CONNECT, or a WebSocket handshake that reads
    /// two ways; refused on every route, never forwarded.
    Upgrade(UpgradeError),
    /// A valid WebSocket handshake on a route without `upgrades: [websocket]`.
    WebSocketNotAccepted,
}

impl Refusal {
    /// The reason, like `no_route`, for metrics, logs and `test` (a fixed vocabulary).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Framing(e) => e.label(),
            Self::MethodCase(_) => "bad_method",
            Self::ForwardedFor(_) => "bad_forwarded_for",
            Self::Path(_) => "bad_path",
            Self::MissingHost => FramingError::MissingHost.label(),
            Self::NoRoute => "no_route",
            Self::PathParameters => "path_parameters",
            Self::MethodOverride(_) => "bad_method_override",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::Upgrade(e) => e.label(),
            Self::WebSocketNotAccepted => "websocket_not_accepted",
        }
    }

    /// What the client is told.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Framing(e) => e.problem(),
            Self::MethodCase(method) => Problem::bad_request(format!(
                "methods are case-sensitive: send {}",
                method.as_str().to_ascii_uppercase()
            )),
            Self::ForwardedFor(e) => Problem::bad_request(e.to_string()),
            Self::Path(e) => Problem::bad_request(e.to_string()),
            Self::MissingHost => FramingError::MissingHost.problem(),
            Self::NoRoute => Problem::not_found(),
            Self::PathParameters => Problem::bad_request("path parameters (';') are not accepted on this route"),
            Self::MethodOverride(name) => {
                Problem::bad_request(format!("{name} must name one upper-case method this route serves"))
            }
            Self::BodyTooLarge(max) => Problem::payload_too_large(*max),
            Self::Upgrade(e @ UpgradeError::Protocol) => {
                Problem::new(StatusCode::BAD_REQUEST, "upgrade-refused", "Upgrade refused", e.to_string())
            }
            Self::Upgrade(e @ UpgradeError::Handshake(_)) => Problem::bad_request(e.to_string()),
            Self::Upgrade(e @ UpgradeError::Connect) => {
                Problem::new(StatusCode::BAD_REQUEST, "connect-refused", "CONNECT refused", e.to_string())
            }
            Self::WebSocketNotAccepted => Problem::new(
                StatusCode::FORBIDDEN,
                "websocket-not-accepted",
                "WebSocket not accepted",
                "this route does not accept WebSocket upgrades",
            ),
        }
    }

    /// Whether the connection closes after the answer: what follows a framing error may be
    /// framed in a way the gateway refused to read, and what follows a refused upgrade may be
    /// another protocol's bytes (an h2c client's connection preface).
    pub fn closes(&self) -> bool {
        matches!(self, Self::Framing(_) | Self::Upgrade(_))
    }
}

/// Steps 2–4, the part of a request's journey that `run`, `trace` and `test` share: checks
/// framing, singleton fields, the method and any `Upgrade` (a WebSocket handshake only, on
/// a route that accepts them), strips hop-by-hop and gateway headers,
/// resolves the client address, normalizes the path, finds the route, applies its
/// path-parameter and method-override rules, and refuses a declared body larger than the
/// listener accepts.
///
/// # Errors
/// The request id and the [`Refusal`].
pub fn route<'rt>(
    rt: &'rt Runtime,
    parts: &mut Parts,
    conn: &ConnInfo,
    limits: &Limits,
) -> Result<Routed<'rt>, Box<Refused<'rt>>> {
    let peer = conn.peer.ip().to_canonical();
    let from_trusted = rt.trusted_proxies.contains(peer);
    let request_id = request_id(&parts.headers, from_trusted);
    let refuse =
        |request_id, refusal, client_ip, route| Err(Box::new(Refused { request_id, refusal, client_ip, route }));
    if let Err(e) = framing::check(parts, from_trusted, limits.max_headers) {
        return refuse(request_id, Refusal::Framing(e), peer, None);
    }
    if !framing::method_is_unambiguous(&parts.method) {
        return refuse(request_id, Refusal::MethodCase(parts.method.clone()), peer, None);
    }
    // Read before `Connection` and `Upgrade` are stripped as hop-by-hop.
    let websocket = match upgrade::websocket(parts) {
        Ok(websocket) => websocket,
        Err(e) => return refuse(request_id, Refusal::Upgrade(e), peer, None),
    };
    if websocket == Some(Handshake::Http2) {
        // An h2 extended CONNECT stands for the GET handshake of HTTP/1.1 (RFC 8441 §5):
        // routes, policies and `authorize` see GET, and the backend gets one.
        parts.method = Method::GET;
    }
    strip_hop_by_hop(&mut parts.headers);
    let chain_header = from_trusted.then(|| rt.forwarded_header.name());
    rt.gateway_headers.strip(&mut parts.headers, chain_header);
    if from_trusted && rt.forwarded_header == ForwardedHeader::Forwarded {
        client_ip::adopt_forwarded(&mut parts.headers);
    }
    let client_ip = match client_ip::resolve(peer, &parts.headers, &rt.trusted_proxies) {
        Ok(ip) => ip,
        Err(e) => return refuse(request_id, Refusal::ForwardedFor(e), peer, None),
    };
    let uri = parts.uri.clone();
    let normalized = match normalize::normalize_path(uri.path()) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(path)) => Some(path),
        Err(e) => return refuse(request_id, Refusal::Path(e), client_ip, None),
    };
    let Some(host) = host(parts) else {
        return refuse(request_id, Refusal::MissingHost, client_ip, None);
    };
    let path = normalized.as_deref().unwrap_or_else(|| uri.path());
    let Some((route, params)) = rt.routes.find(&conn.listener, &host, path, &parts.method) else {
        return refuse(request_id, Refusal::NoRoute, client_ip, None);
    };
    if websocket.is_some() && !route.websocket {
        return refuse(request_id, Refusal::WebSocketNotAccepted, client_ip, Some(route));
    }
    if route.path_parameters == PathParameters::Refuse && normalize::has_path_parameters(uri.path()) {
        return refuse(request_id, Refusal::PathParameters, client_ip, Some(route));
    }
    strip_overrides(&mut parts.headers, route.method_override.as_ref());
    let method_override = match &route.method_override {
        None => None,
        Some(name) => match method_override(&parts.headers, name, route) {
            Ok(method) => method,
            Err(refusal) => return refuse(request_id, refusal, client_ip, Some(route)),
        },
    };
    if content_length(&parts.headers).is_some_and(|len| len > limits.max_body_bytes) {
        return refuse(request_id, Refusal::BodyTooLarge(limits.max_body_bytes), client_ip, Some(route));
    }
    Ok(Routed { request_id, peer, client_ip, host, uri, normalized, route, params, method_override, websocket })
}

/// The method a route's method-override header names, which the backend will execute: one
/// field, an upper-case method the route serves.
fn method_override(headers: &HeaderMap, name: &HeaderName, route: &Route) -> Result<Option<Method>, Refusal> {
    let refused = || Refusal::MethodOverride(name.clone());
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(refused());
    }
    let method = Method::from_bytes(value.as_bytes()).map_err(|_| refused())?;
    if !framing::method_is_unambiguous(&method) || !(route.methods.is_empty() || route.methods.contains(&method)) {
        return Err(refused());
    }
    Ok(Some(method))
}

/// Handles one request on a TLS listener. Never fails: every fault becomes a problem answer.
/// Counts it in the metrics and writes its access-log line once the response is sent.
/// A WebSocket handshake the backend accepted opens a tunnel on `tunnels`.
pub async fn handle(
    rt: &Runtime,
    req: Request<Incoming>,
    conn: &ConnInfo,
    limits: Limits,
    tunnels: &Tunnels,
) -> Response<Body> {
    let started = Instant::now();
    let (mut parts, incoming) = req.into_parts();
    let method = parts.method.clone();
    let mut routed = match route(rt, &mut parts, conn, &limits) {
        Ok(routed) => routed,
        Err(refused) => {
            let Refused { request_id, refusal, client_ip, route } = *refused;
            count_error(route.map_or("-", |r| &r.name), Fault::Client, refusal.label());
            let mut rsp = refusal.problem().into_response(&request_id);
            if refusal.closes() {
                close_after(&mut rsp, parts.version);
            }
            let served = Served::refused(request_id, route, client_ip, &parts.uri);
            return respond(rsp, served, conn, &method, started);
        }
    };
    let route = routed.route;
    let mut served = Served::routed(std::mem::take(&mut routed.request_id), &routed);
    let mut cx = routed.context(&served.request_id, conn, unix_now());
    let chain = route.chain.on_request(&mut parts, &mut cx).await;
    let mut rsp = match chain.answer {
        Some(Answer::Response(rsp)) => rsp,
        Some(Answer::Denied(denial)) => {
            count_error(&route.name, denial.fault(), denial.label());
            denial.problem().into_response(cx.request_id)
        }
        None if routed.websocket.is_some() => {
            let (rsp, upstream) =
                forward_websocket(route, parts, &routed, (cx.request_id, conn), tunnels, credential(&cx)).await;
            served.upstream = Some(upstream);
            rsp
        }
        None => {
            let (mut rsp, upstream) = forward(route, parts, incoming, &routed, cx.request_id, limits).await;
            served.upstream = Some(upstream);
            let credential = credential(&cx);
            if route.tunnel.close_on_credential_expiry && credential.can_end() && is_event_stream(&rsp) {
                let revocations = tunnels.registry().revocations().clone();
                rsp = rsp.map(|body| {
                    EndsWithCredential::wrap(
                        body,
                        credential,
                        revocations,
                        cx.request_id.to_owned(),
                        route.name.clone(),
                    )
                });
            }
            rsp
        }
    };
    route.chain.on_response(chain.decisions.len(), &cx, &mut rsp);
    served.subject = cx.claims.take();
    served.decisions = chain.decisions;
    respond(rsp, served, conn, &method, started)
}

/// Step 6: sends the request to the route's backend and returns its answer; a failure
/// becomes a problem answer counted against whoever caused it: a client whose body was too
/// large, malformed, cut short or stalled (413, 400, 408) or the backend (502, 504).
async fn forward(
    route: &Route,
    parts: Parts,
    incoming: Incoming,
    routed: &Routed<'_>,
    request_id: &str,
    limits: Limits,
) -> (Response<Body>, Upstream) {
    let version = parts.version;
    let original_host = parts.headers.get(header::HOST).cloned();
    let headers = forwarded_headers(parts.headers, routed.peer, original_host, &routed.host, request_id);
    let stats = Arc::new(BodyStats::default());
    let body_is_empty = http_body::Body::is_end_stream(&incoming);
    let body = LimitedBody::new(incoming, limits.max_body_bytes, limits.body_read_timeout, stats.clone());
    let out = Outbound {
        method: parts.method,
        path: route.upstream_path(routed.path()),
        query: parts.uri.query(),
        client_ip: routed.client_ip,
        headers,
        body: body::boxed(body),
        body_is_empty,
    };
    let sent = Instant::now();
    let forwarded = route.backend.forward(out).await;
    let mut upstream = Upstream { addr: None, time: sent.elapsed(), request_body: stats };
    route.backend.upstream_duration.observe(upstream.time.as_secs_f64());
    // A backend that timed out while the client's body kept it waiting: the client stalled.
    let stalled = matches!(forwarded, Err(ForwardError::Timeout)) && upstream.request_body.waiting_on_client();
    let fault = upstream.request_body.fault().or(stalled.then_some(BodyFault::TimedOut));
    let rsp = match (forwarded, fault) {
        (Ok((mut rsp, addr)), None) => {
            upstream.addr = addr;
            strip_hop_by_hop(rsp.headers_mut());
            rsp
        }
        (_, Some(fault)) => {
            let (kind, problem) = body_refusal(fault, limits.max_body_bytes);
            tracing::debug!(request.id = %request_id, route.name = %route.name, kind, "request body refused");
            count_error(&route.name, Fault::Client, kind);
            let mut rsp = problem.into_response(request_id);
            close_after(&mut rsp, version);
            rsp
        }
        (Err(e), None) => e.record(request_id, &route.name, &route.backend.name).into_response(request_id),
    };
    (rsp, upstream)
}

/// Step 6 for a WebSocket handshake: sends it to the backend as an upgrade, on an HTTP/1.1
/// connection of its own. On the backend's `101` with `Upgrade: websocket` the client gets
/// `101` with the backend's handshake fields (`Sec-WebSocket-Accept`, `-Protocol`,
/// `-Extensions`) and the two upgraded streams are joined; any other answer (the backend
/// refused the upgrade) passes as it is, with no tunnel.
///
/// An h2 handshake (extended CONNECT) goes to the backend as an HTTP/1.1 one with a key of
/// the gateway's own: the backend's `Sec-WebSocket-Accept` must answer it (else 502), and the
/// client gets `200` with the backend's `-Protocol` and `-Extensions` (RFC 8441 §5). A
/// backend's refusal passes as it is, except a 2xx: over h2 a 2xx to a CONNECT opens the
/// tunnel, so it becomes 502.
async fn forward_websocket(
    route: &Route,
    mut parts: Parts,
    routed: &Routed<'_>,
    (request_id, conn): (&str, &ConnInfo),
    tunnels: &Tunnels,
    credential: Credential,
) -> (Response<Body>, Upstream) {
    let client_side = parts.extensions.remove::<OnUpgrade>();
    let original_host = parts.headers.get(header::HOST).cloned();
    let mut headers = forwarded_headers(parts.headers, routed.peer, original_host, &routed.host, request_id);
    upgrade::ask_websocket(&mut headers);
    let key = (routed.websocket == Some(Handshake::Http2)).then(|| upgrade::backend_handshake(&mut headers));
    let out = Outbound {
        method: parts.method,
        path: route.upstream_path(routed.path()),
        query: parts.uri.query(),
        client_ip: routed.client_ip,
        headers,
        body: body::empty(),
        body_is_empty: true,
    };
    let sent = Instant::now();
    let forwarded = route.backend.upgrade(out).await;
    let mut upstream = Upstream { addr: None, time: sent.elapsed(), request_body: Arc::new(BodyStats::default()) };
    route.backend.upstream_duration.observe(upstream.time.as_secs_f64());
    let (mut rsp, addr) = match forwarded {
        Ok(answered) => answered,
        Err(e) => {
            let rsp = e.record(request_id, &route.name, &route.backend.name).into_response(request_id);
            return (rsp, upstream);
        }
    };
    upstream.addr = addr;
    if rsp.status() != StatusCode::SWITCHING_PROTOCOLS {
        if key.is_some() && rsp.status().is_success() {
            tracing::warn!(request.id = %request_id, route.name = %route.name, backend.name = %route.backend.name, status = %rsp.status(), "the backend answered an h2 WebSocket handshake with a 2xx, not 101");
            count_error(&route.name, Fault::Backend, "bad_upgrade");
            return (Problem::bad_gateway().into_response(request_id), upstream);
        }
        strip_hop_by_hop(rsp.headers_mut());
        return (rsp, upstream);
    }
    let backend_side = hyper::upgrade::on(&mut rsp);
    let switched = rsp.headers().get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let Some(client_side) = client_side.filter(|_| switched) else {
        // A switch to another protocol than the one asked for is never passed on.
        tracing::warn!(request.id = %request_id, route.name = %route.name, backend.name = %route.backend.name, "the backend switched to another protocol than websocket");
        count_error(&route.name, Fault::Backend, "bad_upgrade");
        return (Problem::bad_gateway().into_response(request_id), upstream);
    };
    let rsp = match &key {
        None => {
            strip_hop_by_hop(rsp.headers_mut());
            upgrade::ask_websocket(rsp.headers_mut());
            rsp
        }
        Some(key) if upgrade::accepts(key, rsp.headers()) => {
            let mut ok = Response::new(body::empty());
            *ok.headers_mut() = upgrade::h2_answer(rsp.headers());
            ok
        }
        Some(_) => {
            tracing::warn!(request.id = %request_id, route.name = %route.name, backend.name = %route.backend.name, "the backend's Sec-WebSocket-Accept does not answer the gateway's key");
            count_error(&route.name, Fault::Backend, "bad_upgrade");
            return (Problem::bad_gateway().into_response(request_id), upstream);
        }
    };
    let spec = TunnelSpec {
        route: route.name.clone(),
        request_id: request_id.to_owned(),
        listener: conn.listener.clone(),
        client_ip: routed.client_ip,
        limits: route.tunnel,
        credential,
    };
    tunnels.open(client_side, backend_side, spec);
    (rsp, upstream)
}

/// What the request's chain proved: until when its token and client certificate hold, and
/// who the issuer granted the token to.
fn credential(cx: &RequestContext<'_>) -> Credential {
    Credential {
        token_valid_until: cx.token_valid_until,
        cert_not_after: cx.conn.client_cert.as_ref().map(|c| c.not_after),
        grant: cx.grant.clone(),
    }
}

/// The error kind and the answer for a request body that failed while being forwarded.
fn body_refusal(fault: BodyFault, max_body_bytes: u64) -> (&'static str, Problem) {
    match fault {
        BodyFault::TooLarge => ("body_too_large", Problem::payload_too_large(max_body_bytes)),
        BodyFault::Malformed => ("bad_body", Problem::bad_request("the request body is malformed or incomplete")),
        BodyFault::TimedOut => ("body_timeout", Problem::request_timeout()),
    }
}

/// Asks an HTTP/1.x client's connection to close after this answer (h2 streams end alone).
fn close_after(rsp: &mut Response<Body>, version: http::Version) {
    if version < http::Version::HTTP_2 {
        rsp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// What the pipeline learned about one request, for its metrics and its access-log line.
struct Served<'a> {
    request_id: String,
    route: Option<&'a Route>,
    /// The normalized path once routed; the request's path before.
    path: &'a str,
    query: Option<&'a str>,
    client_ip: IpAddr,
    decisions: Vec<PolicyDecision>,
    /// The verified token's claims, when a `jwt` policy passed.
    subject: Option<Arc<Claims>>,
    upstream: Option<Upstream>,
}

/// What forwarding to the backend did.
struct Upstream {
    /// The url that answered (pooled backends).
    addr: Option<Authority>,
    time: Duration,
    request_body: Arc<BodyStats>,
}

impl<'a> Served<'a> {
    fn refused(request_id: String, route: Option<&'a Route>, client_ip: IpAddr, uri: &'a Uri) -> Self {
        Self {
            request_id,
            route,
            path: uri.path(),
            query: uri.query(),
            client_ip,
            decisions: Vec::new(),
            subject: None,
            upstream: None,
        }
    }

    fn routed(request_id: String, routed: &'a Routed<'_>) -> Self {
        Self {
            request_id,
            route: Some(routed.route),
            path: routed.path(),
            query: routed.query(),
            client_ip: routed.client_ip,
            decisions: Vec::new(),
            subject: None,
            upstream: None,
        }
    }
}

/// Sets `X-Request-Id`, counts the answer, and hands the access-log line to the body. The
/// one place the access record is built.
fn respond(
    mut rsp: Response<Body>,
    served: Served<'_>,
    conn: &ConnInfo,
    method: &Method,
    started: Instant,
) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(&served.request_id) {
        rsp.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    let elapsed = started.elapsed().as_secs_f64();
    match served.route {
        Some(route) => {
            route.metrics.count(method, rsp.status());
            route.metrics.duration.observe(elapsed);
        }
        None => {
            let m = metrics();
            m.requests.with_label_values(&["-", method_class(method), rsp.status().as_str()]).inc();
            m.request_duration.with_label_values(&["-"]).observe(elapsed);
        }
    }
    if !access::enabled() {
        return rsp;
    }
    let (upstream, upstream_time, request_body) = match served.upstream {
        Some(u) => (u.addr, Some(u.time), Some(u.request_body)),
        None => (None, None, None),
    };
    let record = AccessRecord {
        request_id: served.request_id,
        listener: conn.listener.clone(),
        route: served.route.map(|r| r.name.clone()),
        method: method.clone(),
        path: served.path.to_owned(),
        query: served.query.map(str::to_owned),
        status: rsp.status().as_u16(),
        client_ip: served.client_ip,
        tls_version: conn.tls_version,
        client_cert: conn.client_cert.clone(),
        claims: served.subject,
        decisions: served.decisions,
        upstream,
        upstream_time,
        started,
        request_body,
    };
    rsp.map(|body| LoggedBody::new(body, record).boxed())
}

/// A trusted proxy's id is kept when it is short and printable; otherwise a new one.
fn request_id(headers: &HeaderMap, from_trusted: bool) -> String {
    if from_trusted {
        if let Some(id) = headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
            if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) {
                return id.to_owned();
            }
        }
    }
    crate::id::uuid_v4()
}

/// The request's host, lower-case, without port: from the URI (h2 `:authority`,
/// absolute-form) or the `Host` header.
fn host(parts: &http::request::Parts) -> Option<String> {
    let raw = match parts.uri.host() {
        Some(host) => host,
        None => {
            let value = parts.headers.get(header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = value.parse().ok()?;
            return Some(authority.host().trim_end_matches('.').to_ascii_lowercase());
        }
    };
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The headers the backend receives: the client's (already cleaned) plus `X-Forwarded-*`
/// and `X-Request-Id`. `Host` is left to the client pool, which sets the backend's.
pub(crate) fn forwarded_headers(
    mut headers: HeaderMap,
    peer: IpAddr,
    original_host: Option<HeaderValue>,
    host: &str,
    request_id: &str,
) -> HeaderMap {
    headers.remove(header::HOST);
    // A trusted proxy's list is extended; otherwise it starts at the peer (the client).
    // Every line a trusted proxy sent, in order, is one list (RFC 9110 §5.3).
    let mut xff = String::new();
    for prior in headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()) {
        if !prior.trim().is_empty() {
            xff.push_str(prior.trim());
            xff.push_str(", ");
        }
    }
    xff.push_str(&peer.to_string());
    headers.remove(&X_FORWARDED_FOR);
    if let Ok(v) = HeaderValue::try_from(xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
    let forwarded_host = original_host.or_else(|| HeaderValue::from_str(host).ok());
    if let Some(v) = forwarded_host {
        headers.insert(X_FORWARDED_HOST.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID.clone(), v);
    }
    headers
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::compile::load_text;

    /// A runtime with two TLS listeners, the token issuer on `public`, and two routes.
    fn runtime() -> (Runtime, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        crate::tools::pki::ensure_dev_material(dir.path(), false).unwrap();
        let tls = "tls: { certificates: [{ cert: server.pem, key: server-key.pem }] }";
        let yaml = format!(
            r#"version: 1
listeners:
  - {{ name: public, bind: 127.0.0.1:0, {tls} }}
  - {{ name: internal, bind: 127.0.0.1:0, {tls} }}
trusted_proxies: [127.0.0.1/32]
identity: {{ listener: public, issuer: "https://localhost", signing_key: token-signing-key.pem, store: "sqlite:id.db" }}
backends:
  echo: {{ builtin: echo }}
routes:
  - {{ name: api, match: {{ path_prefix: /api }}, backend: echo }}
  - {{ name: portal, match: {{ hosts: [portal.example.com] }}, backend: echo }}
"#
        );
        let loaded = load_text(&dir.path().join("gateway.yaml"), &yaml).unwrap();
        (loaded.runtime, dir)
    }

    fn conn(listener: &str, peer: &str) -> ConnInfo {
        ConnInfo {
            listener: listener.into(),
            peer: SocketAddr::new(peer.parse().unwrap(), 40_000),
            tls_version: Some("TLSv1_3"),
            sni: None,
            client_cert: None,
        }
    }

    fn parts(target: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().uri(target).header(header::HOST, "localhost");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    /// The route name, or the refusal kind.
    fn outcome(
        rt: &Runtime,
        listener: &str,
        peer: &str,
        mut parts: Parts,
    ) -> Result<(String, String, IpAddr), &'static str> {
        route(rt, &mut parts, &conn(listener, peer), &Limits::default())
            .map(|r| (r.route.name.to_string(), r.path().to_owned(), r.client_ip))
            .map_err(|refused| refused.refusal.label())
    }

    #[test]
    fn the_issuers_endpoints_are_routes_of_its_listener_only() {
        let (rt, _dir) = runtime();
        let jwks = || parts("/.well-known/jwks.json", &[]);
        assert_eq!(outcome(&rt, "public", "192.0.2.1", jwks()).map(|r| r.0), Ok("identity-jwks".to_owned()));
        assert_eq!(outcome(&rt, "internal", "192.0.2.1", jwks()).map(|r| r.0), Err("no_route"));
        let token = || parts("/oauth2/token", &[]);
        assert_eq!(outcome(&rt, "public", "192.0.2.1", token()).map(|r| r.0), Ok("identity-token".to_owned()));
        assert_eq!(outcome(&rt, "internal", "192.0.2.1", token()).map(|r| r.0), Err("no_route"));
    }

    #[test]
    fn routes_match_the_normalized_path_and_unroutable_requests_are_refused() {
        let (rt, _dir) = runtime();
        let routed = outcome(&rt, "public", "192.0.2.1", parts("/api/./x/../items/%34%32", &[])).unwrap();
        assert_eq!((routed.0.as_str(), routed.1.as_str()), ("api", "/api/items/42"));
        assert_eq!(outcome(&rt, "public", "192.0.2.1", parts("/apix", &[])).map(|r| r.0), Err("no_route"));
        assert_eq!(outcome(&rt, "public", "192.0.2.1", parts("/api/%2e%2e/apix", &[])).map(|r| r.0), Err("no_route"));
        assert_eq!(outcome(&rt, "public", "192.0.2.1", parts("/api/a%2fb", &[])).map(|r| r.0), Err("bad_path"));
        let portal = parts("/anything", &[]);
        let mut portal_host = portal;
        portal_host.headers.insert(header::HOST, HeaderValue::from_static("Portal.Example.com."));
        assert_eq!(outcome(&rt, "public", "192.0.2.1", portal_host).map(|r| r.0), Ok("portal".to_owned()));
    }

    #[test]
    fn forwarding_headers_are_believed_from_trusted_proxies_only() {
        let (rt, _dir) = runtime();
        let spoofed = || parts("/api/x", &[("x-forwarded-for", "10.9.9.9")]);
        let untrusted: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(outcome(&rt, "public", "192.0.2.1", spoofed()).map(|r| r.2), Ok(untrusted));
        let vouched: IpAddr = "10.9.9.9".parse().unwrap();
        assert_eq!(outcome(&rt, "public", "127.0.0.1", spoofed()).map(|r| r.2), Ok(vouched));
    }

    #[test]
    fn a_repeated_singleton_field_is_refused_and_closes_the_connection() {
        let (rt, _dir) = runtime();
        let mut one = parts("/api/x", &[]);
        assert!(route(&rt, &mut one, &conn("public", "192.0.2.1"), &Limits::default()).is_ok());
        let mut two = parts("/api/x", &[("host", "evil.example")]);
        let refused = route(&rt, &mut two, &conn("public", "192.0.2.1"), &Limits::default()).err().unwrap();
        let refusal = &refused.refusal;
        assert!(refusal.closes() && refusal.problem().status == 400, "{}", refusal.label());
    }

    #[test]
    fn the_backend_gets_forwarding_headers_built_by_the_gateway() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("localhost:8443"));
        headers.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static("10.0.0.1"));
        headers.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static("10.0.0.2"));
        let host = headers.get(header::HOST).cloned();
        let out = forwarded_headers(headers, "127.0.0.1".parse().unwrap(), host, "localhost", "id-1");
        assert_eq!(out[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(out[&X_FORWARDED_HOST], "localhost:8443");
        assert_eq!(out[&X_FORWARDED_PROTO], "https");
        assert_eq!(out[&X_REQUEST_ID], "id-1");
        assert!(!out.contains_key(header::HOST), "the pool sets the backend's Host");
    }
}
