//! The ordered chain a route runs its policies in (`policy_kinds!` declares the kinds).
//!
//! A route's [`Chain`] runs `default_policies` then the route's own, in order, until one
//! answers or denies; it records and counts every decision itself. Response-side work runs
//! in reverse order over the policies that ran, also on answers and denials the gateway
//! produced. In `report` mode a policy decides and records, but never stops the request.
//! The set of kinds is closed, so dispatch is a `match`; only `jwt` (for keys of an unknown
//! `kid`) and `rate_limit` (for Redis) may wait.

use std::sync::Arc;

use http::request::Parts;
use http::Response;

use super::context::RequestContext;
use super::kind::{Decision, PolicyMode};
use super::kinds::{Denial, Policy};
use super::outcome::Outcome;
use crate::body::Body;
use crate::telemetry::metrics::metrics;

/// A policy under its configured name.
#[derive(Debug)]
pub struct NamedPolicy {
    /// The policy's configured name.
    pub name: Arc<str>,
    /// Whether its denials are enforced or only reported.
    pub mode: PolicyMode,
    /// The compiled policy.
    pub policy: Policy,
    /// `portcullis_policy_decisions_total{policy, outcome="allowed"}`, resolved once.
    allowed: prometheus::IntCounter,
}

impl NamedPolicy {
    /// A compiled policy under its name, with its `allowed` counter resolved once.
    pub fn new(name: &str, mode: PolicyMode, policy: Policy) -> Self {
        let allowed = metrics().policy_decisions.with_label_values(&[name, "allowed"]);
        Self { name: name.into(), mode, policy, allowed }
    }

    /// Runs the request side and applies the mode: a denial in `report` mode is recorded and
    /// the request goes on.
    async fn decide(
        &self,
        parts: &mut Parts,
        cx: &mut RequestContext<'_>,
    ) -> (Outcome, Option<Answer>, Option<Arc<str>>) {
        match (self.policy.check(parts, cx).await, self.mode) {
            (Decision::Continue, _) => (Outcome::Allowed, None, None),
            (Decision::Granted(rule), _) => (Outcome::Allowed, None, Some(rule)),
            (Decision::Answer(rsp), _) => (Outcome::Answered, Some(Answer::Response(rsp)), None),
            (Decision::Deny(denial), PolicyMode::Report) => (Outcome::Reported(denial), None, None),
            (Decision::Deny(denial), PolicyMode::Enforce) => {
                (Outcome::Denied(denial), Some(Answer::Denied(denial)), None)
            }
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
    /// The policy's configured name.
    pub policy: Arc<str>,
    /// The policy's kind, like `jwt`.
    pub kind: &'static str,
    /// What it decided.
    pub outcome: Outcome,
    /// The rule that granted the request, for policies made of rules (`authorize`).
    pub rule: Option<Arc<str>>,
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
    /// In order: `default_policies`, then the route's own.
    pub policies: Vec<Arc<NamedPolicy>>,
}

impl Chain {
    /// Runs the request side in order until a policy answers or denies; records and counts
    /// each decision.
    pub async fn on_request(&self, parts: &mut Parts, cx: &mut RequestContext<'_>) -> ChainOutcome {
        let mut decisions = Vec::with_capacity(self.policies.len());
        for named in &self.policies {
            let (outcome, answer, rule) = named.decide(parts, cx).await;
            named.count(outcome);
            decisions.push(PolicyDecision { policy: named.name.clone(), kind: named.policy.kind(), outcome, rule });
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};
    use std::path::Path;

    use http::Request;

    use super::*;
    use crate::config::context::CompileContext;
    use crate::policy::context::Params;
    use crate::policy::ip_filter::{IpFilter, IpFilterConfig, Refusal};
    use crate::policy::kind::PolicyKind;
    use crate::request::conn::ConnInfo;

    fn office_only(mode: PolicyMode) -> Arc<NamedPolicy> {
        named_office_only("office", mode)
    }

    fn named_office_only(name: &str, mode: PolicyMode) -> Arc<NamedPolicy> {
        let cfg = IpFilterConfig { allow: vec!["10.0.0.0/8".parse().unwrap()], deny: vec![] };
        let filter = IpFilter::compile(&cfg, &mut CompileContext::standalone(Path::new("."), name)).unwrap();
        Arc::new(NamedPolicy::new(name, mode, Policy::IpFilter(filter)))
    }

    fn conn(ip: IpAddr) -> ConnInfo {
        ConnInfo {
            listener: "public".into(),
            peer: SocketAddr::new(ip, 1),
            tls_version: None,
            sni: None,
            client_cert: None,
        }
    }

    /// Runs `chain` for a request from `ip`: what each policy decided, and whether it stopped.
    async fn run(chain: &Chain, ip: &str) -> (Vec<Outcome>, bool) {
        let ip: IpAddr = ip.parse().unwrap();
        let conn = conn(ip);
        let params = Params::new();
        let (mut parts, ()) = Request::new(()).into_parts();
        let mut cx = RequestContext::new("id", ip, &conn, "all", "/", &params, 0);
        let outcome = chain.on_request(&mut parts, &mut cx).await;
        (outcome.decisions.iter().map(|d| d.outcome).collect(), outcome.answer.is_some())
    }

    #[test]
    fn the_chain_future_is_send() {
        fn send<T: Send>(_: &T) {}
        let chain = Chain { policies: vec![office_only(PolicyMode::Enforce)] };
        let (conn, params) = (conn("10.0.0.1".parse().unwrap()), Params::new());
        let (mut parts, ()) = Request::new(()).into_parts();
        let mut cx = RequestContext::new("id", conn.peer.ip(), &conn, "all", "/", &params, 0);
        send(&chain.on_request(&mut parts, &mut cx));
    }

    #[tokio::test]
    async fn an_enforced_denial_stops_the_chain_and_an_allow_does_not() {
        let chain = Chain { policies: vec![office_only(PolicyMode::Enforce), office_only(PolicyMode::Enforce)] };
        assert_eq!(run(&chain, "10.1.2.3").await, (vec![Outcome::Allowed, Outcome::Allowed], false));
        let denied = Outcome::Denied(Denial::IpFilter(Refusal::NotAllowed));
        assert_eq!(run(&chain, "192.0.2.1").await, (vec![denied], true), "the second policy never ran");
    }

    #[tokio::test]
    async fn report_mode_records_the_denial_and_lets_the_request_through() {
        let chain = Chain { policies: vec![office_only(PolicyMode::Report), office_only(PolicyMode::Enforce)] };
        let reported = Outcome::Reported(Denial::IpFilter(Refusal::NotAllowed));
        let denied = Outcome::Denied(Denial::IpFilter(Refusal::NotAllowed));
        assert_eq!(
            run(&chain, "192.0.2.1").await,
            (vec![reported, denied], true),
            "the enforcing policy still stops it"
        );
        let report_only = Chain { policies: vec![office_only(PolicyMode::Report)] };
        assert_eq!(run(&report_only, "192.0.2.1").await, (vec![reported], false));
        assert_eq!(run(&report_only, "10.0.0.1").await, (vec![Outcome::Allowed], false));
        assert!(reported.report_only() && !denied.report_only());
        assert_eq!((reported.label(), denied.label()), ("ip_not_allowed", "ip_not_allowed"));
    }

    #[tokio::test]
    async fn the_chain_counts_its_own_decisions() {
        // Its own policy name: the other tests count into the same process-wide registry.
        let chain = Chain { policies: vec![named_office_only("counted", PolicyMode::Report)] };
        let series = |outcome: &str| metrics().policy_decisions.with_label_values(&["counted", outcome]).get();
        let (allowed, reported) = (series("allowed"), series("report_ip_not_allowed"));
        run(&chain, "10.0.0.1").await;
        run(&chain, "192.0.2.1").await;
        run(&chain, "192.0.2.1").await;
        assert_eq!(series("allowed"), allowed + 1);
        assert_eq!(series("report_ip_not_allowed"), reported + 2);
    }
}
