//! Policies: compiled once from configuration, evaluated per request (README: Architecture, a request's journey, step 3).
//!
//! Each kind is one file (one folder for `jwt`) with its YAML contract, its [`PolicyKind`]
//! implementation (compile, request side, response side) and its refusal reasons, plus one
//! registration line in [`kinds`]. [`kind`] is the contract, [`chain`] runs the kinds in
//! order, [`outcome`] records what they decided, [`context`] is what they see. This file only
//! re-exports.

pub mod authorize;
pub mod chain;
pub mod client_cert;
pub mod context;
pub mod cors;
pub mod headers;
pub mod ip_filter;
pub mod jwt;
pub mod kind;
pub mod kinds;
pub mod outcome;
pub mod rate_limit;
pub mod subscription_key;

pub use authorize::Authorize;
pub use chain::{Answer, Chain, ChainOutcome, NamedPolicy, PolicyDecision};
pub use client_cert::ClientCert;
pub use context::{Claims, RequestContext};
pub use cors::Cors;
pub use headers::HeaderRules;
pub use ip_filter::IpFilter;
pub use jwt::Jwt;
pub use kind::{Decision, PolicyKind, PolicyMode};
pub use kinds::{Denial, Policy, PolicyConfig};
pub use outcome::Outcome;
pub use rate_limit::RateLimit;
pub use subscription_key::SubscriptionKey;
