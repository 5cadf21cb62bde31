//! The client address (README: Architecture, a request's journey): the TCP peer, or, when the peer is a trusted
//! proxy, the right-most entry of the forwarding chain that is not itself a trusted proxy.
//!
//! The chain is read from one header, `forwarded_header` (default `X-Forwarded-For`; or the
//! standard `Forwarded`, RFC 7239, whose `for=` nodes are read). The other one is removed
//! from every request, trusted or not, so a client can never slip a second chain past a proxy
//! that passes it on unread. Entries may carry ports, as proxies write them: `a.b.c.d`,
//! `a.b.c.d:port`, `v6`, `[v6]` and `[v6]:port`. Reading fails closed: an entry the walk
//! reaches that is not an address (`unknown`, an obfuscated node, garbage) refuses the
//! request, so a trusted proxy's own address can never stand in for a client it could not
//! name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::headers::{FORWARDED, X_FORWARDED_FOR};
pub use crate::ipset::IpSet;

/// The header trusted proxies write the client address chain in.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    #[serde(rename = "x-forwarded-for", alias = "X-Forwarded-For")]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    #[serde(rename = "forwarded", alias = "Forwarded")]
    Forwarded,
}

impl ForwardedHeader {
    /// The header a trusted proxy's chain is kept in.
    pub fn name(self) -> &'static HeaderName {
        match self {
            Self::XForwardedFor => &X_FORWARDED_FOR,
            Self::Forwarded => &FORWARDED,
        }
    }
}

/// A chain entry from a trusted proxy that is not an address: the request is refused (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an entry of the forwarding chain sent by a trusted proxy is not an IP address")]
pub struct UnreadableEntry;

/// Resolves the client address of a request that arrived from `peer`. The chain is read
/// from `X-Forwarded-For` (see [`adopt_forwarded`] for `Forwarded`).
///
/// # Errors
/// [`UnreadableEntry`] when the walk reaches an entry that is not an address.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &IpSet) -> Result<IpAddr, UnreadableEntry> {
    let peer = peer.to_canonical();
    if !trusted_proxies.contains(peer) {
        return Ok(peer);
    }
    let mut client = peer;
    // Entries are appended left to right, so the right-most untrusted one is the first
    // address that no trusted proxy vouches for. All headers, in order, form one list, and
    // empty list elements are ignored (RFC 9110 §5.6.1).
    let entries = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("\0").rsplit(','))
        .map(str::trim)
        .filter(|e| !e.is_empty());
    for entry in entries {
        client = parse_node(entry).ok_or(UnreadableEntry)?.to_canonical();
        if !trusted_proxies.contains(client) {
            break;
        }
    }
    Ok(client)
}

/// Reads an address as proxies write it: `a.b.c.d`, `a.b.c.d:port`, `v6`, `[v6]`,
/// `[v6]:port`. Anything else (zone ids, names, `unknown`) is `None`.
pub fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !after.is_empty() && !after.strip_prefix(':').is_some_and(is_port) {
            return None;
        }
        return addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (addr, port) = text.split_once(':')?;
    is_port(port).then_some(())?;
    addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(text: &str) -> bool {
    (1..=5).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

/// Rewrites a trusted proxy's `Forwarded` chain (RFC 7239) as the equivalent
/// `X-Forwarded-For` list and removes `Forwarded`: each element's `for=` node, in order; an
/// element without one, or with a node that is not an address, becomes `unknown` (which
/// [`resolve`] refuses if the walk reaches it). The backend receives `X-Forwarded-For` only.
pub fn adopt_forwarded(headers: &mut HeaderMap) {
    if !headers.contains_key(&FORWARDED) {
        return;
    }
    let mut list = String::new();
    for value in headers.get_all(&FORWARDED) {
        for element in split_outside_quotes(value.to_str().unwrap_or("\0"), ',') {
            if element.trim().is_empty() {
                continue;
            }
            if !list.is_empty() {
                list.push_str(", ");
            }
            list.push_str(for_node(element).unwrap_or("unknown"));
        }
    }
    headers.remove(&FORWARDED);
    headers.remove(&X_FORWARDED_FOR);
    if let Ok(value) = HeaderValue::try_from(list) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
}

/// The `for=` node of one `Forwarded` element, unquoted, when it is an address.
fn for_node(element: &str) -> Option<&str> {
    let mut found = None;
    for pair in split_outside_quotes(element, ';') {
        let (key, value) = pair.split_once('=')?;
        if key.trim().eq_ignore_ascii_case("for") {
            // Two `for=` in one element: which one counts is a matter of opinion.
            if found.is_some() {
                return None;
            }
            let value = value.trim();
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            found = Some(value);
        }
    }
    found.filter(|node| parse_node(node).is_some())
}

/// Splits at `sep` outside quoted strings (a `\` inside quotes escapes the next character).
fn split_outside_quotes(text: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    let mut cuts = Vec::new();
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                cuts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    cuts.push(&text[start..]);
    cuts.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &'static str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, v.parse().unwrap());
        h
    }

    fn xff(v: &str) -> HeaderMap {
        header("x-forwarded-for", v)
    }

    fn trusted() -> IpSet {
        IpSet::new(["10.1.0.0/16".parse().unwrap(), "fd00::/64".parse().unwrap()])
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const PROXY: &str = "10.1.0.5";

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_sends() {
        assert_eq!(resolve(ip("198.51.100.7"), &xff("1.2.3.4"), &trusted()), Ok(ip("198.51.100.7")));
        assert_eq!(resolve(ip("198.51.100.7"), &xff("garbage"), &trusted()), Ok(ip("198.51.100.7")));
    }

    #[test]
    fn trusted_peer_yields_the_right_most_untrusted_entry() {
        let client = resolve(ip(PROXY), &xff("6.6.6.6, 203.0.113.9, 10.1.2.3"), &trusted());
        assert_eq!(client, Ok(ip("203.0.113.9")));
        assert_eq!(resolve(ip(PROXY), &HeaderMap::new(), &trusted()), Ok(ip(PROXY)));
    }

    /// Azure Application Gateway writes `IP:port`; others write bracketed IPv6 with a port.
    #[test]
    fn entries_with_ports_are_read() {
        let cases = [
            ("203.0.113.9:51234", "203.0.113.9"),
            ("203.0.113.9:51234, 10.1.2.3:443", "203.0.113.9"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:8443", "2001:db8::7"),
            ("[::ffff:203.0.113.9]:1", "203.0.113.9"),
            ("198.51.100.1, [fd00::1]:80", "198.51.100.1"),
            (" , 203.0.113.9 ,, ", "203.0.113.9"),
        ];
        for (chain, client) in cases {
            assert_eq!(resolve(ip(PROXY), &xff(chain), &trusted()), Ok(ip(client)), "{chain}");
        }
    }

    /// The class of the fail-open bug: an entry that does not parse must never leave the
    /// trusted proxy's own address as the client.
    #[test]
    fn an_unreadable_entry_refuses_the_request() {
        for chain in [
            "unknown",
            "_hidden",
            "203.0.113.9:",
            "203.0.113.9:99999",
            "203.0.113.9:80:80",
            "[2001:db8::7",
            "[2001:db8::7]x",
            "[203.0.113.9]",
            "fe80::1%eth0",
            "client.example",
            "203.0.113.9 10.1.0.1",
            "6.6.6.6, garbage, 10.1.2.3",
        ] {
            assert_eq!(resolve(ip(PROXY), &xff(chain), &trusted()), Err(UnreadableEntry), "{chain}");
        }
        // Garbage beyond the first untrusted entry is the client's own business.
        assert_eq!(resolve(ip(PROXY), &xff("garbage, 203.0.113.9"), &trusted()), Ok(ip("203.0.113.9")));
        let mut bytes = HeaderMap::new();
        bytes.insert("x-forwarded-for", HeaderValue::from_bytes(b"203.0.113.9\xff").unwrap());
        assert_eq!(resolve(ip(PROXY), &bytes, &trusted()), Err(UnreadableEntry));
    }

    #[test]
    fn forwarded_for_nodes_become_the_chain() {
        let cases = [
            ("for=203.0.113.9", "203.0.113.9"),
            ("for=203.0.113.9;proto=https, for=10.1.2.3", "203.0.113.9"),
            ("For=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=\"203.0.113.9:80\";by=\"a,b\"", "203.0.113.9"),
            ("for=6.6.6.6, for=198.51.100.2;host=x", "198.51.100.2"),
        ];
        for (value, client) in cases {
            let mut h = header("forwarded", value);
            h.insert("x-forwarded-for", "10.1.9.9".parse().unwrap());
            adopt_forwarded(&mut h);
            assert!(!h.contains_key("forwarded"), "{value}");
            assert_eq!(resolve(ip(PROXY), &h, &trusted()), Ok(ip(client)), "{value} -> {:?}", h.get("x-forwarded-for"));
        }
        for value in ["for=unknown", "for=_hidden", "proto=https", "for=1.2.3.4;for=10.1.0.1", "for=\"a,b\""] {
            let mut h = header("forwarded", value);
            adopt_forwarded(&mut h);
            assert_eq!(resolve(ip(PROXY), &h, &trusted()), Err(UnreadableEntry), "{value}");
        }
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        assert!(trusted().contains(ip("::ffff:10.1.0.5")));
    }
}
