//! Policies: compiled once from configuration, evaluated per request (DESIGN §3 step 5).
//!
//! A route's [`Chain`] runs `default_policies` then the route's own, in order. Each policy
//! answers [`Decision::Continue`], [`Decision::Answer`] (the gateway answers itself, e.g. a
//! CORS preflight) or [`Decision::Deny`]. Response-side work runs in reverse order over the
//! policies that ran, also on answers the gateway produced. The set of policies is closed,
//! so dispatch is a `match`.

pub mod headers;

use std::net::IpAddr;
use std::sync::Arc;

use http::request::Parts;
use http::Response;

use crate::body::Body;
use crate::config::raw::PolicyMode;
use crate::problem::Problem;
use crate::route::Params;
use crate::server::ConnInfo;

pub use headers::HeaderRules;

/// What a policy decided about one request.
pub enum Decision {
    Continue,
    /// Answer now with this response (not an error: e.g. a CORS preflight).
    Answer(Response<Body>),
    Deny(Denial),
}

/// A refusal: `reason` is the exact cause for logs and metrics; the client sees `problem`.
#[derive(Clone, Debug)]
pub struct Denial {
    pub reason: &'static str,
    pub problem: Problem,
}

/// The per-request facts policies decide on.
pub struct RequestContext<'a> {
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    pub conn: &'a ConnInfo,
    pub params: &'a Params,
    /// `(policy, outcome)` for each policy that ran, for the access log and `trace`.
    pub decisions: Vec<(Arc<str>, &'static str)>,
}

/// The closed set of policy kinds.
#[derive(Debug)]
pub enum Policy {
    Headers(HeaderRules),
}

impl Policy {
    fn check(&self, parts: &mut Parts, _cx: &RequestContext<'_>) -> Decision {
        match self {
            Self::Headers(rules) => {
                rules.on_request(&mut parts.headers);
                Decision::Continue
            }
        }
    }

    fn on_response(&self, rsp: &mut Response<Body>) {
        match self {
            Self::Headers(rules) => rules.on_response(rsp.headers_mut()),
        }
    }
}

/// A policy under its configured name.
#[derive(Debug)]
pub struct NamedPolicy {
    pub name: Arc<str>,
    pub mode: PolicyMode,
    pub policy: Policy,
}

/// The ordered policies of one route.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    pub policies: Vec<Arc<NamedPolicy>>,
}

/// How far a chain got: `ran` policies must see the response.
pub struct ChainOutcome {
    pub ran: usize,
    pub answer: Option<Result<Response<Body>, Denial>>,
}

impl Chain {
    /// Runs the request side in order until a policy answers or denies.
    pub fn on_request(&self, parts: &mut Parts, cx: &mut RequestContext<'_>) -> ChainOutcome {
        for (i, named) in self.policies.iter().enumerate() {
            let (outcome, answer) = match named.policy.check(parts, cx) {
                Decision::Continue => ("allowed", None),
                Decision::Answer(rsp) => ("answered", Some(Ok(rsp))),
                Decision::Deny(denial) if named.mode == PolicyMode::Report => {
                    cx.decisions.push((named.name.clone(), denial.reason));
                    continue;
                }
                Decision::Deny(denial) => (denial.reason, Some(Err(denial))),
            };
            cx.decisions.push((named.name.clone(), outcome));
            if answer.is_some() {
                return ChainOutcome { ran: i + 1, answer };
            }
        }
        ChainOutcome { ran: self.policies.len(), answer: None }
    }

    /// Runs the response side, in reverse order, over the first `ran` policies.
    pub fn on_response(&self, ran: usize, rsp: &mut Response<Body>) {
        for named in self.policies[..ran].iter().rev() {
            named.policy.on_response(rsp);
        }
    }
}
