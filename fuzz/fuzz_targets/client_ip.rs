//! Forwarding-chain parsing and client-address resolution, for `X-Forwarded-For` (entries
//! with ports) and `Forwarded`: an untrusted peer is always the client; a trusted peer yields
//! the peer, an address its chain names, or a refusal — never a trusted proxy's address
//! standing in for an unreadable entry.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use portcullis::request::client_ip::{adopt_forwarded, parse_node, resolve, IpSet};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let trusted = IpSet::new(["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
    let peer = if first & 1 == 0 { IpAddr::V4(Ipv4Addr::new(10, 0, 0, first)) } else { IpAddr::V4(Ipv4Addr::new(203, 0, 113, first)) };
    let header = if first & 2 == 0 { "x-forwarded-for" } else { "forwarded" };
    let mut headers = http::HeaderMap::new();
    for line in rest.split(|b| *b == b'\n') {
        if let Ok(value) = http::HeaderValue::from_bytes(line) {
            headers.append(header, value);
        }
    }
    let sent = headers.clone();
    if header == "forwarded" {
        adopt_forwarded(&mut headers);
        assert!(!headers.contains_key("forwarded"));
    }
    let resolved = resolve(peer, &headers, &trusted);
    if !trusted.contains(peer) {
        assert_eq!(resolved, Ok(peer));
        return;
    }
    let Ok(client) = resolved else { return };
    if client != peer {
        let text = String::from_utf8_lossy(rest);
        let named = text
            .split(['\n', ',', ';', '=', '"'])
            .filter_map(|e| parse_node(e.trim()))
            .any(|ip| ip.to_canonical() == client);
        assert!(named, "{client} is neither the peer nor in {sent:?}");
    }
});
