//! `ip_filter`: allow or deny by client address (DESIGN §3: the TCP peer, or the address a
//! trusted proxy vouches for). Deny wins; an empty allow list allows every address not
//! denied. Both lists compile to range tables with logarithmic lookup.

use std::net::IpAddr;

use http::StatusCode;
use ipnet::IpNet;
use serde::Deserialize;

use super::{Decision, Denial};
use crate::ipset::IpSet;
use crate::problem::Problem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpFilterConfig {
    #[serde(default)]
    pub allow: Vec<IpNet>,
    #[serde(default)]
    pub deny: Vec<IpNet>,
}

#[derive(Debug)]
pub struct IpFilter {
    allow: IpSet,
    deny: IpSet,
}

impl IpFilter {
    pub fn compile(cfg: &IpFilterConfig) -> Self {
        Self { allow: IpSet::new(cfg.allow.iter().copied()), deny: IpSet::new(cfg.deny.iter().copied()) }
    }

    pub fn check(&self, client_ip: IpAddr) -> Decision {
        if self.deny.contains(client_ip) {
            return Decision::Deny(denial("ip_denied"));
        }
        if !self.allow.is_empty() && !self.allow.contains(client_ip) {
            return Decision::Deny(denial("ip_not_allowed"));
        }
        Decision::Continue
    }
}

fn denial(reason: &'static str) -> Denial {
    Denial::new(
        reason,
        Problem::new(
            StatusCode::FORBIDDEN,
            "ip-rejected",
            "Client address not allowed",
            "requests from this address are not allowed",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(allow: &[&str], deny: &[&str]) -> IpFilter {
        IpFilter::compile(&IpFilterConfig {
            allow: allow.iter().map(|n| n.parse().unwrap()).collect(),
            deny: deny.iter().map(|n| n.parse().unwrap()).collect(),
        })
    }

    fn allowed(f: &IpFilter, ip: &str) -> bool {
        matches!(f.check(ip.parse().unwrap()), Decision::Continue)
    }

    #[test]
    fn is_allowed_inside_allow_and_outside_deny() {
        let f = filter(&["203.0.113.0/24", "::1/128"], &["203.0.113.66/32"]);
        assert!(allowed(&f, "203.0.113.5") && allowed(&f, "::1") && allowed(&f, "::ffff:203.0.113.5"));
    }

    #[test]
    fn is_not_allowed_when_denied_or_unlisted() {
        let f = filter(&["203.0.113.0/24"], &["203.0.113.66/32"]);
        assert!(!allowed(&f, "203.0.113.66"), "deny wins");
        assert!(!allowed(&f, "::ffff:203.0.113.66"), "mapped addresses meet IPv4 rules");
        assert!(!allowed(&f, "198.51.100.1"));
        assert!(!allowed(&f, "2001:db8::1"));
    }

    #[test]
    fn empty_allow_list_allows_all_but_denied() {
        let f = filter(&[], &["10.0.0.0/8"]);
        assert!(allowed(&f, "192.0.2.1") && !allowed(&f, "10.1.2.3"));
    }
}
