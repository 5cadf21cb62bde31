//! One request, start to end (DESIGN §3 steps 2–6): strip, normalize, route, run the policy
//! chain, forward, and apply the response side. Every answer carries `X-Request-Id`.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Request, Response, Uri};
use hyper::body::Incoming;

use crate::body::{self, Body, BodyStats, LimitedBody};
use crate::policy::RequestContext;
use crate::problem::Problem;
use crate::proxy::{ForwardError, Outbound};
use crate::request::headers::{strip_hop_by_hop, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID};
use crate::request::{client_ip, normalize};
use crate::route::{Params, Route};
use crate::runtime::{Limits, Runtime};
use crate::server::ConnInfo;
use crate::telemetry::access::{self, AccessRecord, LoggedBody};
use crate::telemetry::metrics::{method_class, metrics};

/// A request after DESIGN §3 steps 2–4: cleaned of spoofable headers, normalized, routed.
pub struct Routed<'rt> {
    pub request_id: String,
    pub peer: IpAddr,
    pub client_ip: IpAddr,
    /// Lower-case, without port.
    pub host: String,
    uri: Uri,
    /// The normalized path when it differs from the request's.
    normalized: Option<String>,
    pub route: &'rt Route,
    pub params: Params,
}

impl Routed<'_> {
    /// The normalized path that routing, policies and the backend see.
    pub fn path(&self) -> &str {
        self.normalized.as_deref().unwrap_or_else(|| self.uri.path())
    }

    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }
}

/// Steps 2–4: strips hop-by-hop and gateway headers, resolves the client address,
/// normalizes the path and finds the route.
///
/// # Errors
/// The request id and the problem to answer: a bad path (400) or no route (404).
pub fn route<'rt>(rt: &'rt Runtime, parts: &mut Parts, conn: &ConnInfo) -> Result<Routed<'rt>, (String, Problem)> {
    let peer = conn.peer.ip().to_canonical();
    let from_trusted = rt.trusted_proxies.contains(peer);
    let request_id = request_id(&parts.headers, from_trusted);
    strip_hop_by_hop(&mut parts.headers);
    rt.gateway_headers.strip(&mut parts.headers, from_trusted);
    let client_ip = client_ip::resolve(peer, &parts.headers, &rt.trusted_proxies);
    let uri = parts.uri.clone();
    let normalized = match normalize::normalize_path(uri.path()) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(path)) => Some(path),
        Err(e) => return Err((request_id, Problem::bad_request(e.to_string()))),
    };
    let Some(host) = host(parts) else {
        return Err((request_id, Problem::bad_request("missing or invalid Host")));
    };
    let path = normalized.as_deref().unwrap_or_else(|| uri.path());
    let issuer_routes = rt.identity.as_ref().filter(|i| i.listener == conn.listener).map(|i| &i.routes);
    let found = issuer_routes.and_then(|table| table.find(&host, path, &parts.method));
    let Some((route, params)) = found.or_else(|| rt.routes.find(&host, path, &parts.method)) else {
        return Err((request_id, Problem::not_found()));
    };
    Ok(Routed { request_id, peer, client_ip, host, uri, normalized, route, params })
}

/// Handles one request on a TLS listener. Never fails: every fault becomes a problem answer.
/// Counts it in the metrics and writes its access-log line once the response is sent.
pub async fn handle(rt: &Runtime, req: Request<Incoming>, conn: &ConnInfo, limits: Limits) -> Response<Body> {
    let (mut parts, incoming) = req.into_parts();
    // Fields only the access log needs are filled only when it is written.
    let logging = access::enabled();
    let mut log = AccessRecord {
        request_id: String::new(),
        listener: conn.listener.clone(),
        route: None,
        method: parts.method.clone(),
        path: if logging { parts.uri.path().to_owned() } else { String::new() },
        query: parts.uri.query().filter(|_| logging).map(str::to_owned),
        status: 0,
        client_ip: conn.peer.ip().to_canonical(),
        tls_version: conn.tls_version,
        client_cert: conn.client_cert.as_ref().filter(|_| logging).map(|c| c.subject.clone()),
        subject: None,
        decisions: Vec::new(),
        upstream: None,
        upstream_time: None,
        started: Instant::now(),
        request_body: None,
    };
    let routed = match route(rt, &mut parts, conn) {
        Ok(routed) => routed,
        Err((request_id, problem)) => {
            let rsp = problem.into_response(&request_id);
            log.request_id = request_id;
            return respond(rsp, log, None);
        }
    };
    let route = routed.route;
    let request_id = routed.request_id.as_str();
    log.route = Some(route.name.clone());
    if logging {
        log.path = routed.path().to_owned();
    }
    log.client_ip = routed.client_ip;
    if content_length(&parts.headers).is_some_and(|len| len > limits.max_body_bytes) {
        let rsp = Problem::payload_too_large(limits.max_body_bytes).into_response(request_id);
        log.request_id = routed.request_id;
        return respond(rsp, log, Some(route));
    }
    let mut cx = RequestContext::new(request_id, routed.client_ip, conn, routed.path(), &routed.params);
    let outcome = route.chain.on_request(&mut parts, &mut cx).await;
    let mut rsp = match outcome.answer {
        Some(Ok(rsp)) => rsp,
        Some(Err(denial)) => denial.problem.into_response(request_id),
        None => {
            let original_host = parts.headers.get(header::HOST).cloned();
            let headers = forwarded_headers(parts.headers, routed.peer, original_host, &routed.host, request_id);
            let stats = Arc::new(BodyStats::default());
            log.request_body = Some(stats.clone());
            let body_is_empty = http_body::Body::is_end_stream(&incoming);
            let body = body::boxed(LimitedBody::new(incoming, limits.max_body_bytes, stats.clone()));
            let (path, query) = (route.upstream_path(routed.path()), routed.query());
            let out = Outbound {
                method: parts.method,
                path,
                query,
                client_ip: routed.client_ip,
                headers,
                body,
                body_is_empty,
            };
            let sent = Instant::now();
            let forwarded = route.backend.forward(out).await;
            let upstream_time = sent.elapsed();
            log.upstream_time = Some(upstream_time);
            let backend = &*route.backend.name;
            route.backend.upstream_duration.observe(upstream_time.as_secs_f64());
            match forwarded {
                _ if stats.tripped() => Problem::payload_too_large(limits.max_body_bytes).into_response(request_id),
                Ok((mut rsp, upstream)) => {
                    log.upstream = upstream.filter(|_| logging).map(|a| a.to_string());
                    strip_hop_by_hop(rsp.headers_mut());
                    rsp
                }
                Err(e) => {
                    tracing::warn!(request.id = %request_id, route.name = %route.name, backend.name = %backend, error = %e, "forwarding failed");
                    let (kind, problem) = match e {
                        ForwardError::Timeout => ("timeout", Problem::gateway_timeout()),
                        ForwardError::Target => {
                            ("target", Problem::bad_request("the request target cannot be forwarded"))
                        }
                        ForwardError::Connect(_) => ("connect", Problem::bad_gateway()),
                        ForwardError::Upstream(_) => ("upstream", Problem::bad_gateway()),
                    };
                    metrics().upstream_errors.with_label_values(&[backend, kind]).inc();
                    problem.into_response(request_id)
                }
            }
        }
    };
    route.chain.on_response(outcome.ran, &cx, &mut rsp);
    for (d, named) in cx.decisions.iter().zip(&route.chain.policies) {
        match (d.outcome, d.report_only) {
            ("allowed", _) => named.allowed.inc(),
            (reason, false) => metrics().policy_decisions.with_label_values(&[&*d.policy, reason]).inc(),
            (reason, true) => {
                metrics().policy_decisions.with_label_values(&[&*d.policy, &format!("report_{reason}")]).inc()
            }
        }
    }
    if logging {
        log.subject = cx.claims.as_ref().and_then(|c| c.get("sub")).and_then(|s| s.as_str()).map(str::to_owned);
    }
    log.decisions = cx.decisions;
    log.request_id = routed.request_id;
    respond(rsp, log, Some(route))
}

/// Sets `X-Request-Id`, counts the answer, and hands the access-log line to the body.
fn respond(mut rsp: Response<Body>, mut log: AccessRecord, route: Option<&Route>) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(&log.request_id) {
        rsp.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    log.status = rsp.status().as_u16();
    let elapsed = log.started.elapsed().as_secs_f64();
    match route {
        Some(route) => {
            route.metrics.count(&log.method, rsp.status());
            route.metrics.duration.observe(elapsed);
        }
        None => {
            let m = metrics();
            m.requests.with_label_values(&["-", method_class(&log.method), rsp.status().as_str()]).inc();
            m.request_duration.with_label_values(&["-"]).observe(elapsed);
        }
    }
    if access::enabled() {
        rsp.map(|body| LoggedBody::new(body, log).boxed())
    } else {
        rsp
    }
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
    uuid::Uuid::new_v4().to_string()
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
fn forwarded_headers(
    mut headers: HeaderMap,
    peer: IpAddr,
    original_host: Option<HeaderValue>,
    host: &str,
    request_id: &str,
) -> HeaderMap {
    headers.remove(header::HOST);
    // A trusted proxy's list is extended; otherwise it starts at the peer (the client).
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {peer}"),
        _ => peer.to_string(),
    };
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
