//! The closed set of policy kinds: one registration line each. A kind's name, its runtime
//! type (which implements [`PolicyKind`](super::kind::PolicyKind) in its own file) and its
//! refusal type meet here; `policy_kinds!` generates [`Policy`], [`PolicyConfig`] and
//! [`Denial`] from the list.

use super::kind::policy_kinds;
use super::{authorize, client_cert, cors, headers, ip_filter, jwt, rate_limit, subscription_key};

policy_kinds! {
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
    /// `subscription_key`: APIM's subscription keys, checked against the issuer's store.
    subscription_key => SubscriptionKey(subscription_key::SubscriptionKey) refused by subscription_key::Refusal,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::Fault;

    #[test]
    fn a_refusal_carries_its_blame() {
        assert_eq!(Denial::from(jwt::Refusal::Expired).fault(), Fault::Policy);
        assert_eq!(Denial::from(jwt::Refusal::KeysUnavailable).fault(), Fault::Gateway);
        assert_eq!(Denial::from(rate_limit::Refusal::RateExceeded(3)).fault(), Fault::Policy);
        assert_eq!(Denial::from(rate_limit::Refusal::StoreUnavailable).fault(), Fault::Gateway);
        assert_eq!(Denial::from(ip_filter::Refusal::NotAllowed).fault(), Fault::Policy);
    }
}
