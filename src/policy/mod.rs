//! Policies: compiled once from configuration, evaluated per request (DESIGN §3 step 5).
//!
//! Each kind is one file (one folder for `jwt`) with its YAML contract, its
//! [`PolicyKind`] implementation (compile, request side, response side) and its refusal
//! reasons, plus one line in the registration below. [`chain`] runs the kinds in order,
//! [`outcome`] holds what they decide, [`context`] what they see.

pub mod authorize;
pub mod chain;
pub mod client_cert;
pub mod context;
pub mod cors;
pub mod headers;
pub mod ip_filter;
pub mod jwt;
pub mod kind;
pub mod outcome;
pub mod rate_limit;

kind::policy_kinds! {
    /// `headers`: remove and set request and response headers.
    headers => Headers(headers::HeaderRules),
    /// `cors`: cross-origin limits and preflights.
    cors => Cors(cors::Cors) refused by cors::Refusal,
    /// `ip_filter`: allow and deny lists of client addresses.
    ip_filter => IpFilter(ip_filter::IpFilter) refused by ip_filter::Refusal,
    /// `jwt`: bearer-token validation.
    jwt => Jwt(jwt::Jwt) refused by jwt::Refusal,
    /// `client_cert`: the handshake's verified client certificate, matched against identities.
    client_cert => ClientCert(client_cert::ClientCert) refused by client_cert::Refusal,
    /// `authorize`: scoped permissions from the token's roles.
    authorize => Authorize(authorize::Authorize) refused by authorize::Refusal,
    /// `rate_limit`: a rate or a quota per key, in memory or shared through Redis.
    rate_limit => RateLimit(rate_limit::RateLimit) refused by rate_limit::Refusal,
}

pub use authorize::Authorize;
pub use chain::{Answer, Chain, ChainOutcome, NamedPolicy, PolicyDecision, PolicyMode};
pub use client_cert::ClientCert;
pub use context::{Claims, RequestContext};
pub use cors::Cors;
pub use headers::HeaderRules;
pub use ip_filter::IpFilter;
pub use jwt::Jwt;
pub use kind::PolicyKind;
pub use outcome::{Decision, Outcome};
pub use rate_limit::RateLimit;
