//! One request through the real compiled configuration without a backend: the route, each
//! policy's decision, the answer the client would get (with its response-side headers) and,
//! when it would be forwarded, what the backend would receive — its answer taken to be the
//! built-in echo's. `portcullis trace` prints it; `portcullis test` compares it with a
//! fixture's expectations.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use crate::body;
use crate::policy::{Answer, Denial, Outcome, PolicyDecision};
use crate::redact;
use crate::request::conn::ConnInfo;
use crate::runtime::{Limits, Runtime};
use crate::serve::pipeline::{self, forwarded_headers, Refusal, Refused};

/// How the request ended.
#[derive(Debug)]
pub enum End {
    /// Refused before any policy ran (bad framing or path, no route, a declared body too
    /// large).
    Refused(Refusal),
    /// A policy answered itself (a CORS preflight).
    Answered,
    /// A policy refused it.
    Denied(Denial),
    /// Forwarded to the route's backend.
    Forwarded(Forwarded),
}

/// What the backend would receive.
#[derive(Debug)]
pub struct Forwarded {
    /// The backend's name.
    pub backend: String,
    /// The request method.
    pub method: Method,
    /// The upstream path (after `strip_prefix`).
    pub path: String,
    /// The query, as sent.
    pub query: Option<String>,
    /// Every header sent, the gateway's own included.
    pub headers: HeaderMap,
}

/// What the gateway would do with one request.
#[derive(Debug)]
pub struct DryRun {
    /// The route and its backend, when one matched.
    pub route: Option<(String, String)>,
    /// The normalized path, when routed.
    pub path: Option<String>,
    /// Each policy's decision, in order.
    pub decisions: Vec<PolicyDecision>,
    /// How it ended.
    pub end: End,
    /// The status the client gets.
    pub status: StatusCode,
    /// The problem's kind and detail, for the gateway's own refusals.
    pub problem: Option<(&'static str, String)>,
    /// The response headers the client gets (for a forwarded request: the echo backend's,
    /// after the response side of the policies).
    pub response_headers: HeaderMap,
}

impl DryRun {
    /// The route, each decision and the end of a dry run, as `trace` prints them (and `test`
    /// shows for a failed case). Tokens, cookies and secret values are redacted.
    pub fn describe(&self) -> String {
        let dry = self;
        let mut out = String::new();
        let Some((route, backend)) = &dry.route else {
            let (kind, detail) = dry.problem.clone().unwrap_or_default();
            out += &format!("route: none\nfinal: {} {kind} ({detail}), not forwarded\n", dry.status.as_u16());
            return out;
        };
        out += &format!("route: {route} -> backend {backend}\npath: {}\n", dry.path.as_deref().unwrap_or_default());
        for (i, decision) in dry.decisions.iter().enumerate() {
            out += &format!("  {}. {} ({}): {}\n", i + 1, decision.policy, decision.kind, verdict(decision));
        }
        match &dry.end {
            End::Refused(_) => {}
            End::Answered => out += &format!("final: {} answered by the gateway, not forwarded\n", dry.status.as_u16()),
            End::Denied(denial) => {
                let kind = dry.problem.as_ref().map_or("", |(kind, _)| kind);
                out += &format!("final: {} {kind} ({}), not forwarded\n", dry.status.as_u16(), denial.label());
            }
            End::Forwarded(f) => {
                let query = f.query.as_deref().map(|q| format!("?{}", redact::query(q))).unwrap_or_default();
                out += &format!("final: forwarded to backend {} as {} {}{query}\n", f.backend, f.method, f.path);
                for (name, value) in &f.headers {
                    out += &format!("  {name}: {}\n", redact::header_value(name, value));
                }
            }
        }
        out
    }
}

/// Runs the request side and the response side of one request at `now` (Unix seconds).
pub async fn run(rt: &Runtime, mut parts: Parts, conn: &ConnInfo, now: u64) -> DryRun {
    let limits = rt.listener(&conn.listener).map_or_else(Limits::default, |l| l.limits);
    let routed = match pipeline::route(rt, &mut parts, conn, &limits) {
        Ok(routed) => routed,
        Err(refused) => {
            let Refused { request_id, refusal, .. } = *refused;
            let problem = refusal.problem();
            let status = problem.status;
            let detail = (problem.kind, problem.detail.to_string());
            let rsp = problem.into_response(&request_id);
            return DryRun {
                route: None,
                path: None,
                decisions: Vec::new(),
                end: End::Refused(refusal),
                status,
                problem: Some(detail),
                response_headers: rsp.headers().clone(),
            };
        }
    };
    let route = routed.route;
    let mut cx = routed.context(&routed.request_id, conn, now);
    let outcome = route.chain.on_request(&mut parts, &mut cx).await;
    let mut problem = None;
    let (end, mut rsp) = match outcome.answer {
        Some(Answer::Response(rsp)) => (End::Answered, rsp),
        Some(Answer::Denied(denial)) => {
            let p = denial.problem();
            problem = Some((p.kind, p.detail.to_string()));
            (End::Denied(denial), p.into_response(cx.request_id))
        }
        None => {
            let original_host = parts.headers.get(header::HOST).cloned();
            let mut headers =
                forwarded_headers(parts.headers.clone(), routed.peer, original_host, &routed.host, cx.request_id);
            if routed.websocket.is_some() {
                crate::request::upgrade::ask_websocket(&mut headers);
            }
            if routed.websocket == Some(crate::request::upgrade::Handshake::Http2) {
                crate::request::upgrade::backend_handshake(&mut headers);
            }
            let forwarded = Forwarded {
                backend: route.backend.name.to_string(),
                method: parts.method.clone(),
                path: route.upstream_path(routed.path()).to_owned(),
                query: routed.query().map(str::to_owned),
                headers,
            };
            let mut rsp = Response::new(body::empty());
            rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            (End::Forwarded(forwarded), rsp)
        }
    };
    route.chain.on_response(outcome.decisions.len(), &cx, &mut rsp);
    DryRun {
        route: Some((route.name.to_string(), route.backend.name.to_string())),
        path: Some(routed.path().to_owned()),
        decisions: outcome.decisions,
        end,
        status: rsp.status(),
        problem,
        response_headers: rsp.headers().clone(),
    }
}

/// A decision as `trace` prints it: `allowed`, `allowed by rule account`, `denied: expired`…
pub fn verdict(decision: &PolicyDecision) -> String {
    match (decision.outcome, &decision.rule) {
        (Outcome::Allowed, Some(rule)) => format!("allowed by rule {rule}"),
        (Outcome::Allowed, None) => "allowed".to_owned(),
        (Outcome::Answered, _) => "answered by the gateway".to_owned(),
        (Outcome::Reported(d), _) => format!("denied: {} (report mode: not enforced)", d.label()),
        (Outcome::Denied(d), _) => format!("denied: {}", d.label()),
    }
}
