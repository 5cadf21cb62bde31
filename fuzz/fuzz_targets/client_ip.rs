//! X-Forwarded-For parsing and client-address resolution: an untrusted peer is always the
//! client, and the answer is the peer or an address that appears in the header.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use portcullis::request::client_ip::{resolve, IpSet};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let trusted = IpSet::new(["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
    let peer = if first & 1 == 0 { IpAddr::V4(Ipv4Addr::new(10, 0, 0, first)) } else { IpAddr::V4(Ipv4Addr::new(203, 0, 113, first)) };
    let mut headers = http::HeaderMap::new();
    for line in rest.split(|b| *b == b'\n') {
        if let Ok(value) = http::HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", value);
        }
    }
    let client = resolve(peer, &headers, &trusted);
    if !trusted.contains(peer) {
        assert_eq!(client, peer);
    } else if client != peer {
        let text = String::from_utf8_lossy(rest);
        let named = text.split(['\n', ',']).filter_map(|e| e.trim().parse::<IpAddr>().ok()).any(|ip| ip.to_canonical() == client);
        assert!(named, "{client} is neither the peer nor in {text:?}");
    }
});
