//! The closed set of policy kinds and the ordered chain a route runs them in.
//!
//! A route's [`Chain`] runs `default_policies` then the route's own, in order, until one
//! answers or denies; it records and counts every decision itself. Response-side work runs
//! in reverse order over the policies that ran, also on answers and denials the gateway
//! produced. In `report` mode a policy decides and records, but never stops the request.
//! The set is closed, so dispatch is a `match`; only `jwt` may wait (for keys of an unknown
//! `kid`).

use std::sync::Arc;

use http::request::Parts;
use http::Response;
use serde::Deserialize;

use super::context::RequestContext;
use super::outcome::{Decision, Denial, Outcome};
use super::{client_cert, cors, headers, ip_filter, jwt};
use crate::body::Body;
use crate::telemetry::metrics::metrics;

/// Whether a policy's denials stop the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    Enforce,
    /// Decide, log and count, but let the request through.
    Report,
}

/// The closed set of policy kinds.
// Each policy exists once, behind an `Arc`; boxing variants would only add a pointer hop.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Policy {
    Headers(headers::HeaderRules),
    Cors(cors::Cors),
    IpFilter(ip_filter::IpFilter),
    Jwt(jwt::Jwt),
    ClientCert(client_cert::ClientCert),
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

    /// Starts background work (a `jwt` policy's key refresh). Needs a tokio runtime.
    pub fn start(&self) {
        if let Self::Jwt(jwt) = self {
            jwt.keys.start();
        }
    }

    /// The request side of one policy.
    pub async fn check(&self, parts: &mut Parts, cx: &mut RequestContext<'_>) -> Decision {
        match self {
            Self::Headers(rules) => {
                rules.on_request(&mut parts.headers);
                Decision::Continue
            }
            Self::Cors(policy) => match policy.check(&parts.method, &parts.headers) {
                cors::Verdict::Pass(origin) => {
                    cx.cors_origin = origin;
                    Decision::Continue
                }
                cors::Verdict::Preflight(answer, origin) => {
                    cx.cors_origin = Some(origin);
                    Decision::Answer(answer)
                }
                cors::Verdict::Refuse(refusal) => Decision::Deny(Denial::Cors(refusal)),
            },
            Self::IpFilter(filter) => filter.check(cx.client_ip).map_err(Denial::IpFilter).into(),
            Self::Jwt(jwt) => match jwt.check(&mut parts.headers, cx.now).await {
                Ok(claims) => {
                    cx.claims = Some(claims);
                    Decision::Continue
                }
                Err(refusal) => Decision::Deny(Denial::Jwt(refusal)),
            },
            Self::ClientCert(policy) => {
                policy.check(cx.conn.client_cert.as_deref(), &mut parts.headers).map_err(Denial::ClientCert).into()
            }
        }
    }

    /// The response side of one policy.
    pub fn on_response(&self, cx: &RequestContext<'_>, rsp: &mut Response<Body>) {
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
    allowed: prometheus::IntCounter,
}

impl NamedPolicy {
    pub fn new(name: &str, mode: PolicyMode, policy: Policy) -> Self {
        let allowed = metrics().policy_decisions.with_label_values(&[name, "allowed"]);
        Self { name: name.into(), mode, policy, allowed }
    }

    /// Runs the request side and applies the mode: a denial in `report` mode is recorded and
    /// the request goes on.
    async fn decide(&self, parts: &mut Parts, cx: &mut RequestContext<'_>) -> (Outcome, Option<Answer>) {
        match (self.policy.check(parts, cx).await, self.mode) {
            (Decision::Continue, _) => (Outcome::Allowed, None),
            (Decision::Answer(rsp), _) => (Outcome::Answered, Some(Answer::Response(rsp))),
            (Decision::Deny(denial), PolicyMode::Report) => (Outcome::Reported(denial), None),
            (Decision::Deny(denial), PolicyMode::Enforce) => (Outcome::Denied(denial), Some(Answer::Denied(denial))),
        }
    }

    /// Counts one decision in `portcullis_policy_decisions_total`.
    fn count(&self, outcome: Outcome) {
        let decisions = &metrics().policy_decisions;
        match outcome {
            Outcome::Allowed => self.allowed.inc(),
            Outcome::Reported(denial) => {
                decisions.with_label_values(&[&*self.name, &format!("report_{}", denial.label())]).inc();
            }
            Outcome::Answered | Outcome::Denied(_) => {
                decisions.with_label_values(&[&*self.name, outcome.label()]).inc()
            }
        }
    }
}

/// What one policy decided, in the order the chain ran them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDecision {
    pub policy: Arc<str>,
    /// The policy's kind, like `jwt`.
    pub kind: &'static str,
    pub outcome: Outcome,
}

/// Why the chain stopped before the backend.
pub enum Answer {
    /// A policy answered itself (a CORS preflight).
    Response(Response<Body>),
    /// A policy refused the request.
    Denied(Denial),
}

/// How far a chain got.
pub struct ChainOutcome {
    /// Every policy that ran, in order: the first `decisions.len()` see the response.
    pub decisions: Vec<PolicyDecision>,
    /// `None`: forward to the backend.
    pub answer: Option<Answer>,
}

/// The ordered policies of one route.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    pub policies: Vec<Arc<NamedPolicy>>,
}

impl Chain {
    /// Runs the request side in order until a policy answers or denies; records and counts
    /// each decision.
    pub async fn on_request(&self, parts: &mut Parts, cx: &mut RequestContext<'_>) -> ChainOutcome {
        let mut decisions = Vec::with_capacity(self.policies.len());
        for named in &self.policies {
            let (outcome, answer) = named.decide(parts, cx).await;
            named.count(outcome);
            decisions.push(PolicyDecision { policy: named.name.clone(), kind: named.policy.kind(), outcome });
            if answer.is_some() {
                return ChainOutcome { decisions, answer };
            }
        }
        ChainOutcome { decisions, answer: None }
    }

    /// Runs the response side, in reverse order, over the first `ran` policies.
    pub fn on_response(&self, ran: usize, cx: &RequestContext<'_>, rsp: &mut Response<Body>) {
        for named in self.policies[..ran].iter().rev() {
            named.policy.on_response(cx, rsp);
        }
    }
}
