//! APIM's `<address-range from to>` as CIDR networks: exactly the addresses of the range, never
//! a wider net. A range aligned on a power of two is one network; any other is the fewest
//! aligned blocks that tile it (at most 2 × bits − 2 of them).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The fewest CIDR networks that cover `from..=to` exactly; `None` when the two addresses are
/// of different families or `from` comes after `to`.
pub(super) fn range_to_cidrs(from: IpAddr, to: IpAddr) -> Option<Vec<String>> {
    let (start, end, bits) = match (from, to) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return None,
    };
    if start > end {
        return None;
    }
    let mut out = Vec::new();
    let mut at = start;
    loop {
        // The largest block aligned at `at` that stays within `end`: `size` host bits.
        let mut size = at.trailing_zeros().min(bits);
        while size > 0 && at + low_mask(size) > end {
            size -= 1;
        }
        let last = at + low_mask(size); // no overflow: `at` is aligned on 2^size
        out.push(if bits == 32 {
            let v4 = u32::try_from(at).expect("an IPv4 range stays below 2^32");
            format!("{}/{}", Ipv4Addr::from(v4), 32 - size)
        } else {
            format!("{}/{}", Ipv6Addr::from(at), 128 - size)
        });
        if last >= end {
            return Some(out);
        }
        at = last + 1; // no overflow: last < end ≤ u128::MAX
    }
}

/// The `size` low bits set: 2^size − 1, without overflow at 128.
fn low_mask(size: u32) -> u128 {
    if size >= 128 {
        u128::MAX
    } else {
        (1u128 << size) - 1
    }
}

/// One address as a host network.
pub(super) fn host_net(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(from: &str, to: &str) -> Vec<String> {
        range_to_cidrs(from.parse().unwrap(), to.parse().unwrap()).unwrap()
    }

    #[test]
    fn aligned_ranges_become_one_network() {
        assert_eq!(r("203.0.113.0", "203.0.113.255"), ["203.0.113.0/24"]);
        assert_eq!(r("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(r("2001:db8::", "2001:db8::ffff"), ["2001:db8::/112"]);
        assert_eq!(r("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["::/0"]);
        assert_eq!(r("8000::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["8000::/1"]);
    }

    #[test]
    fn single_addresses_become_host_networks() {
        assert_eq!(r("0.0.0.0", "0.0.0.0"), ["0.0.0.0/32"]);
        assert_eq!(r("255.255.255.255", "255.255.255.255"), ["255.255.255.255/32"]);
        assert_eq!(r("10.0.0.1", "10.0.0.1"), ["10.0.0.1/32"]);
        // The case: from `::` (all zeros, so every bit is "aligned"), a shift by 128.
        assert_eq!(r("::", "::"), ["::/128"]);
        assert_eq!(r("::", "::1"), ["::/127"]);
        assert_eq!(
            r("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]
        );
    }

    #[test]
    fn unaligned_ranges_are_tiled_exactly_never_widened() {
        assert_eq!(r("10.0.0.1", "10.0.0.6"), ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]);
        assert_eq!(r("::", "::2"), ["::/127", "::2/128"]);
        assert_eq!(r("0.0.0.0", "255.255.255.254").len(), 32);
        assert_eq!(r("0.0.0.1", "255.255.255.255").len(), 32);
        let all_but_last = r("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe");
        assert_eq!(all_but_last.len(), 128);
        assert_eq!(all_but_last[0], "::/1");
        assert_eq!(all_but_last[127], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/128");
        assert_eq!(r("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").len(), 128);
    }

    #[test]
    fn reversed_or_mixed_ranges_are_refused() {
        assert!(range_to_cidrs("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()).is_none());
        assert!(range_to_cidrs("::2".parse().unwrap(), "::1".parse().unwrap()).is_none());
        assert!(range_to_cidrs("10.0.0.1".parse().unwrap(), "::1".parse().unwrap()).is_none());
    }

    /// A network as (first, last) address, parsed back from the text written.
    fn bounds(net: &str) -> (u128, u128, u32) {
        let net: ipnet::IpNet = net.parse().unwrap();
        match net {
            ipnet::IpNet::V4(n) => (u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast())), 32),
            ipnet::IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast()), 128),
        }
    }

    /// Random ranges, biased towards the edges (all zeros, all ones, powers of two): every
    /// network lies inside the range, they follow one another without gap or overlap, and
    /// together they cover it exactly.
    #[test]
    fn random_ranges_are_covered_exactly() {
        let mut rng = fastrand::Rng::with_seed(22);
        let edge = |rng: &mut fastrand::Rng, bits: u32| -> u128 {
            let max = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
            match rng.u8(0..6) {
                0 => 0,
                1 => max,
                2 => 1u128 << rng.u32(0..bits),
                3 => (1u128 << rng.u32(0..bits)).wrapping_sub(1) & max,
                _ => rng.u128(..) & max,
            }
        };
        for case in 0..20_000 {
            let bits = if case % 2 == 0 { 32 } else { 128 };
            let (a, b) = (edge(&mut rng, bits), edge(&mut rng, bits));
            let (start, end) = (a.min(b), a.max(b));
            let ip = |v: u128| -> IpAddr {
                if bits == 32 {
                    IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap()))
                } else {
                    IpAddr::V6(Ipv6Addr::from(v))
                }
            };
            let nets = range_to_cidrs(ip(start), ip(end)).unwrap();
            assert!(nets.len() <= 2 * bits as usize, "{start:#x}..={end:#x}: {nets:?}");
            let mut next = Some(start);
            for net in &nets {
                let (first, last, family) = bounds(net);
                assert_eq!(family, bits);
                assert_eq!(Some(first), next, "{start:#x}..={end:#x}: {net} follows without gap or overlap");
                assert!(first >= start && last <= end, "{start:#x}..={end:#x}: {net} lies inside");
                next = last.checked_add(1);
            }
            let covered = nets.last().map(|n| bounds(n).1);
            assert_eq!(covered, Some(end), "{start:#x}..={end:#x}: {nets:?} reaches the end");
        }
    }
}
