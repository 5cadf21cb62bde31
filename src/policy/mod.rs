//! Policies: compiled once from configuration, evaluated per request (DESIGN §3 step 5).
//!
//! [`chain`] holds the closed set of kinds and the chain that runs them, [`outcome`] what they
//! decide, [`context`] what they see. Each kind is one file (one folder for `jwt`) with its
//! YAML contract, its `compile(&Config, &mut CompileContext)`, its request check and its
//! refusal reasons. This file only re-exports.

pub mod authorize;
pub mod chain;
pub mod client_cert;
pub mod context;
pub mod cors;
pub mod headers;
pub mod ip_filter;
pub mod jwt;
pub mod outcome;
pub mod rate_limit;

pub use authorize::Authorize;
pub use chain::{Answer, Chain, ChainOutcome, NamedPolicy, Policy, PolicyDecision, PolicyMode};
pub use client_cert::ClientCert;
pub use context::{Claims, RequestContext};
pub use cors::Cors;
pub use headers::HeaderRules;
pub use ip_filter::IpFilter;
pub use jwt::Jwt;
pub use outcome::{Decision, Denial, Outcome};
pub use rate_limit::RateLimit;
