//! A set of IP networks compiled into sorted, merged address ranges: membership is a binary
//! search, so thousands of rules cost a few comparisons. IPv4-mapped IPv6 addresses
//! (`::ffff:a.b.c.d`) are looked up as IPv4.

use std::net::IpAddr;

use ipnet::IpNet;

/// The source network budgets against guessing count by: the IPv4 address, or the IPv6 /64
/// (one host commonly holds a whole /64).
pub fn source_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
    }
}

/// A set of networks (IPv4 and IPv6) compiled to sorted ranges, looked up in logarithmic time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    /// Compiles the networks; overlapping and adjacent ones are merged.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => match n.network().to_ipv4_mapped() {
                    // ::ffff:0:0/96 and narrower: the IPv4 addresses they map.
                    Some(v4net) if n.prefix_len() >= 96 => {
                        let last = n.broadcast().to_ipv4_mapped().unwrap_or(v4net);
                        v4.push((u32::from(v4net), u32::from(last)));
                    }
                    _ => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
                },
            }
        }
        Self { v4: merge(v4), v6: merge(v6) }
    }

    /// Whether `ip` is in one of the networks (an IPv4-mapped IPv6 address meets IPv4 rules).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => lookup(&self.v4, u32::from(a)),
            IpAddr::V6(a) => lookup(&self.v6, u128::from(a)),
        }
    }

    /// Whether the set holds no network.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

fn merge<T: Ord + Copy + num_like::Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1.successor_or_max() => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

fn lookup<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The first range that starts after x; the one before it is the only candidate.
    let i = ranges.partition_point(|(start, _)| *start <= x);
    i > 0 && x <= ranges[i - 1].1
}

mod num_like {
    pub(super) trait Successor {
        fn successor_or_max(self) -> Self;
    }
    impl Successor for u32 {
        fn successor_or_max(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Successor for u128 {
        fn successor_or_max(self) -> Self {
            self.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> IpSet {
        IpSet::new(nets.iter().map(|n| n.parse().unwrap()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn contains_addresses_of_its_networks_only() {
        let s = set(&["10.0.0.0/8", "203.0.113.66/32", "2001:db8::/32"]);
        assert!(s.contains(ip("10.255.255.255")) && s.contains(ip("10.0.0.0")));
        assert!(!s.contains(ip("11.0.0.0")) && !s.contains(ip("9.255.255.255")));
        assert!(s.contains(ip("203.0.113.66")) && !s.contains(ip("203.0.113.67")));
        assert!(s.contains(ip("2001:db8::1")) && !s.contains(ip("2001:db9::1")));
    }

    #[test]
    fn ipv4_mapped_addresses_meet_ipv4_rules() {
        let s = set(&["127.0.0.0/8"]);
        assert!(s.contains(ip("::ffff:127.0.0.1")));
        let mapped_rule = set(&["::ffff:192.0.2.0/120"]);
        assert!(mapped_rule.contains(ip("192.0.2.9")));
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let s = set(&["10.0.0.0/24", "10.0.1.0/24", "10.0.0.128/25", "0.0.0.0/0"]);
        assert_eq!(s.v4, vec![(0, u32::MAX)]);
        assert!(s.contains(ip("255.255.255.255")));
        assert!(set(&[]).is_empty() && !set(&[]).contains(ip("1.2.3.4")));
    }
}
