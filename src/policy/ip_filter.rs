//! `ip_filter`: allow or deny by client address (README: Security notes; the TCP peer, or the address a
//! trusted proxy vouches for). Deny wins; an empty allow list allows every address not
//! denied. Both lists compile to range tables with logarithmic lookup.

use std::net::IpAddr;

use http::request::Parts;
use http::StatusCode;
use ipnet::IpNet;
use serde::Deserialize;

use super::context::RequestContext;
use super::kind::{Blame, Decision, PolicyKind};
use crate::config::context::{CompileContext, Invalid};
use crate::ipset::IpSet;
use crate::problem::Problem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// The `ip_filter` policy as written in YAML.
pub struct IpFilterConfig {
    #[serde(default)]
    /// `allow`: networks allowed; empty allows every address not denied.
    pub allow: Vec<IpNet>,
    #[serde(default)]
    /// `deny`: networks refused; deny wins over allow.
    pub deny: Vec<IpNet>,
}

#[derive(Debug)]
/// The compiled `ip_filter` policy: both lists as range tables.
pub struct IpFilter {
    allow: IpSet,
    deny: IpSet,
}

/// Why an address was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// In the deny list.
    Denied,
    /// Not in a non-empty allow list.
    NotAllowed,
}

impl Refusal {
    /// The reason, for logs, metrics and `trace`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Denied => "ip_denied",
            Self::NotAllowed => "ip_not_allowed",
        }
    }

    /// Both reasons look the same to the client.
    pub fn problem(self) -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "ip-rejected",
            "Client address not allowed",
            "requests from this address are not allowed",
        )
    }
}

impl Blame for Refusal {}

impl PolicyKind for IpFilter {
    type Config = IpFilterConfig;
    type Refusal = Refusal;

    /// Compiles both lists into range tables.
    ///
    /// # Errors
    /// None today: every list of networks is valid.
    fn compile(cfg: &IpFilterConfig, _cx: &mut CompileContext) -> Result<Self, Invalid> {
        Ok(Self { allow: IpSet::new(cfg.allow.iter().copied()), deny: IpSet::new(cfg.deny.iter().copied()) })
    }

    async fn check(&self, _parts: &mut Parts, cx: &mut RequestContext<'_>) -> Decision<Refusal> {
        self.check_address(cx.client_ip).into()
    }
}

impl IpFilter {
    /// # Errors
    /// The address is denied or not allowed.
    pub fn check_address(&self, client_ip: IpAddr) -> Result<(), Refusal> {
        if self.deny.contains(client_ip) {
            return Err(Refusal::Denied);
        }
        if !self.allow.is_empty() && !self.allow.contains(client_ip) {
            return Err(Refusal::NotAllowed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(allow: &[&str], deny: &[&str]) -> IpFilter {
        let cfg = IpFilterConfig {
            allow: allow.iter().map(|n| n.parse().unwrap()).collect(),
            deny: deny.iter().map(|n| n.parse().unwrap()).collect(),
        };
        IpFilter::compile(&cfg, &mut CompileContext::standalone(std::path::Path::new("."), "test")).unwrap()
    }

    fn allowed(f: &IpFilter, ip: &str) -> bool {
        f.check_address(ip.parse().unwrap()).is_ok()
    }

    #[test]
    fn is_allowed_inside_allow_and_outside_deny() {
        let f = filter(&["203.0.113.0/24", "::1/128"], &["203.0.113.66/32"]);
        assert!(allowed(&f, "203.0.113.5") && allowed(&f, "::1") && allowed(&f, "::ffff:203.0.113.5"));
    }

    #[test]
    fn is_not_allowed_when_denied_or_unlisted() {
        let f = filter(&["203.0.113.0/24"], &["203.0.113.66/32"]);
        assert_eq!(f.check_address("203.0.113.66".parse().unwrap()), Err(Refusal::Denied), "deny wins");
        assert!(!allowed(&f, "::ffff:203.0.113.66"), "mapped addresses meet IPv4 rules");
        assert_eq!(f.check_address("198.51.100.1".parse().unwrap()), Err(Refusal::NotAllowed));
        assert!(!allowed(&f, "2001:db8::1"));
    }

    #[test]
    fn empty_allow_list_allows_all_but_denied() {
        let f = filter(&[], &["10.0.0.0/8"]);
        assert!(allowed(&f, "192.0.2.1") && !allowed(&f, "10.1.2.3"));
    }
}
