//! Policies: compiled once from configuration, evaluated per request (DESIGN §3 step 5).
//!
//! A route's [`Chain`] runs `default_policies` then the route's own, in order. Each policy
//! answers [`Decision::Continue`], [`Decision::Answer`] (the gateway answers itself, e.g. a
//! CORS preflight) or [`Decision::Deny`]. Response-side work runs in reverse order over the
//! policies that ran, also on answers and denials the gateway produced. In `report` mode a
//! policy decides and records, but never stops the request. The set of policies is closed,
//! so dispatch is a `match`; only `jwt` may wait (for keys of an unknown `kid`).

pub mod client_cert;
pub mod cors;
pub mod headers;
pub mod ip_filter;
pub mod jwt;

use std::net::IpAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderValue, Response};

use crate::body::Body;
use crate::config::raw::PolicyMode;
use crate::problem::Problem;
use crate::route::Params;
use crate::server::ConnInfo;

pub use client_cert::ClientCert;
pub use cors::Cors;
pub use headers::HeaderRules;
pub use ip_filter::IpFilter;
pub use jwt::Jwt;

/// What a policy decided about one request.
pub enum Decision {
    Continue,
    /// Answer now with this response (not a refusal: e.g. a CORS preflight).
    Answer(Response<Body>),
    Deny(Denial),
}

/// A refusal: `reason` is the exact cause, for logs, metrics and `trace`; the client only
/// sees `problem`.
#[derive(Clone, Debug)]
pub struct Denial {
    pub reason: &'static str,
    pub problem: Problem,
}

impl Denial {
    pub fn new(reason: &'static str, problem: Problem) -> Self {
        Self { reason, problem }
    }
}

/// What one policy decided: `allowed`, `answered`, or a denial reason such as `expired`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDecision {
    pub policy: Arc<str>,
    pub outcome: &'static str,
    /// A denial by a policy in `report` mode: recorded, not enforced.
    pub report_only: bool,
}

/// What policies see of a request, and what they leave for later ones and the log.
pub struct RequestContext<'a> {
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    pub conn: &'a ConnInfo,
    /// The normalized path.
    pub path: &'a str,
    pub params: &'a Params,
    /// One entry for each policy that ran, in order.
    pub decisions: Vec<PolicyDecision>,
    /// The allowed `Origin` a CORS policy echoes on the response.
    pub cors_origin: Option<HeaderValue>,
    /// Claims of the verified token, once a `jwt` policy passed.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

impl<'a> RequestContext<'a> {
    pub fn new(request_id: &'a str, client_ip: IpAddr, conn: &'a ConnInfo, path: &'a str, params: &'a Params) -> Self {
        Self { request_id, client_ip, conn, path, params, decisions: Vec::new(), cors_origin: None, claims: None }
    }
}

/// The closed set of policy kinds.
// Each policy exists once, behind an `Arc`; boxing variants would only add a pointer hop.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Policy {
    Headers(HeaderRules),
    Cors(Cors),
    IpFilter(IpFilter),
    Jwt(Jwt),
    ClientCert(ClientCert),
}

impl Policy {
    /// The kind's name as written in configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Headers(_) => "headers",
            Self::Cors(_) => "cors",
            Self::IpFilter(_) => "ip_filter",
            Self::Jwt(_) => "jwt",
            Self::ClientCert(_) => "client_cert",
        }
    }

    /// Request headers this policy sets, which clients may therefore never send.
    pub fn forwarded_headers(&self) -> Vec<&http::HeaderName> {
        match self {
            Self::Headers(rules) => rules.request.set.iter().map(|(name, _)| name).collect(),
            Self::Jwt(jwt) => jwt.forwarded_headers().collect(),
            Self::ClientCert(policy) => policy.forward_header().into_iter().collect(),
            Self::Cors(_) | Self::IpFilter(_) => Vec::new(),
        }
    }

    /// Whether the policy can decide (a `jwt` policy needs its keys).
    pub fn is_ready(&self) -> bool {
        match self {
            Self::Jwt(jwt) => jwt.is_ready(),
            _ => true,
        }
    }

    async fn check(&self, parts: &mut Parts, cx: &mut RequestContext<'_>) -> Decision {
        match self {
            Self::Headers(rules) => {
                rules.on_request(&mut parts.headers);
                Decision::Continue
            }
            Self::Cors(cors) => {
                let (decision, origin) = cors.check(&parts.method, &parts.headers);
                if origin.is_some() {
                    cx.cors_origin = origin;
                }
                decision
            }
            Self::IpFilter(filter) => filter.check(cx.client_ip),
            Self::Jwt(jwt) => {
                let (decision, claims) = jwt.check(&mut parts.headers).await;
                if claims.is_some() {
                    cx.claims = claims;
                }
                decision
            }
            Self::ClientCert(policy) => policy.check(cx.conn.client_cert.as_deref(), &mut parts.headers),
        }
    }

    fn on_response(&self, cx: &RequestContext<'_>, rsp: &mut Response<Body>) {
        match self {
            Self::Headers(rules) => rules.on_response(rsp.headers_mut()),
            Self::Cors(cors) => cors.on_response(cx.cors_origin.as_ref(), rsp.headers_mut()),
            Self::IpFilter(_) | Self::Jwt(_) | Self::ClientCert(_) => {}
        }
    }
}

/// A policy under its configured name.
#[derive(Debug)]
pub struct NamedPolicy {
    pub name: Arc<str>,
    pub mode: PolicyMode,
    pub policy: Policy,
    /// `portcullis_policy_decisions_total{policy, outcome="allowed"}`, resolved once.
    pub allowed: prometheus::IntCounter,
}

/// The ordered policies of one route.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    pub policies: Vec<Arc<NamedPolicy>>,
}

/// How far a chain got: the first `ran` policies see the response.
pub struct ChainOutcome {
    pub ran: usize,
    /// `None`: forward. `Some(Ok)`: a policy answered. `Some(Err)`: a policy denied.
    pub answer: Option<Result<Response<Body>, Denial>>,
}

impl Chain {
    /// Runs the request side in order until a policy answers or denies.
    pub async fn on_request(&self, parts: &mut Parts, cx: &mut RequestContext<'_>) -> ChainOutcome {
        for (i, named) in self.policies.iter().enumerate() {
            let report_only = named.mode == PolicyMode::Report;
            let (outcome, answer) = match named.policy.check(parts, cx).await {
                Decision::Continue => ("allowed", None),
                Decision::Answer(rsp) => ("answered", Some(Ok(rsp))),
                Decision::Deny(denial) if report_only => (denial.reason, None),
                Decision::Deny(denial) => (denial.reason, Some(Err(denial))),
            };
            let denied_in_report = report_only && outcome != "allowed" && outcome != "answered";
            cx.decisions.push(PolicyDecision { policy: named.name.clone(), outcome, report_only: denied_in_report });
            if answer.is_some() {
                return ChainOutcome { ran: i + 1, answer };
            }
        }
        ChainOutcome { ran: self.policies.len(), answer: None }
    }

    /// Runs the response side, in reverse order, over the first `ran` policies.
    pub fn on_response(&self, ran: usize, cx: &RequestContext<'_>, rsp: &mut Response<Body>) {
        for named in self.policies[..ran].iter().rev() {
            named.policy.on_response(cx, rsp);
        }
    }
}
