//! The client address (DESIGN §3 step 3): the TCP peer, or, when the peer is a trusted
//! proxy, the right-most `X-Forwarded-For` entry that is not itself a trusted proxy.

use std::net::IpAddr;

use http::HeaderMap;

use super::headers::X_FORWARDED_FOR;
pub use crate::ipset::IpSet;

/// Resolves the client address of a request that arrived from `peer`.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &IpSet) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted_proxies.contains(peer) {
        return peer;
    }
    let mut client = peer;
    // Entries are appended left to right, so the right-most untrusted one is the first
    // address that no trusted proxy vouches for. All headers, in order, form one list.
    let entries =
        headers.get_all(&X_FORWARDED_FOR).iter().rev().filter_map(|v| v.to_str().ok()).flat_map(|v| v.rsplit(','));
    for entry in entries {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            // Garbage from beyond the last trusted hop: stop at what we know.
            break;
        };
        client = ip.to_canonical();
        if !trusted_proxies.contains(client) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    fn trusted() -> IpSet {
        IpSet::new(["10.1.0.0/16".parse().unwrap()])
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_sends() {
        let peer: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(resolve(peer, &xff("1.2.3.4"), &trusted()), peer);
    }

    #[test]
    fn trusted_peer_yields_the_right_most_untrusted_entry() {
        let peer: IpAddr = "10.1.0.5".parse().unwrap();
        let client = resolve(peer, &xff("6.6.6.6, 203.0.113.9, 10.1.2.3"), &trusted());
        assert_eq!(client, "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn trusted_peer_without_header_is_the_client() {
        let peer: IpAddr = "10.1.0.5".parse().unwrap();
        assert_eq!(resolve(peer, &HeaderMap::new(), &trusted()), peer);
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let mapped: IpAddr = "::ffff:10.1.0.5".parse().unwrap();
        assert!(trusted().contains(mapped));
    }
}
