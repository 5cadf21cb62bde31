//! Which protocol upgrades the gateway accepts (README: WebSockets): a WebSocket opening
//! handshake over HTTP/1.1 (RFC 6455 §4.1) and nothing else.
//!
//! A request carrying `Upgrade` is an upgrade request, whatever `Connection` says. Any token
//! but `websocket` is refused, `h2c` above all: an h2c upgrade passed to a backend would let
//! the client speak HTTP/2 to it straight past every policy (h2c smuggling). A WebSocket
//! handshake is accepted only when it reads one way: HTTP/1.1, `GET`, one `Upgrade` field
//! whose value is the single token `websocket`, `upgrade` among the `Connection` tokens, one
//! `Sec-WebSocket-Key` of 16 base64-encoded bytes, one `Sec-WebSocket-Version: 13`, and no
//! body. Over h2 a request cannot carry `Upgrade` (RFC 9113 §8.2.2: the h2 server already
//! treats it as malformed and resets the stream).

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Version};

/// `Sec-WebSocket-Key`: the client's nonce, which the backend's `Sec-WebSocket-Accept` answers.
pub static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
/// `Sec-WebSocket-Version`: 13 is the only one (RFC 6455 §4.1).
pub static SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");

/// Why an upgrade request is refused, before its route is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// `Upgrade` names another protocol than `websocket` (`h2c`, `TLS/1.2`, a list, an
    /// unknown token), or appears more than once.
    #[error("only WebSocket upgrades are accepted (Upgrade: websocket)")]
    Protocol,
    /// `Upgrade: websocket` on a request that is not a valid WebSocket opening handshake.
    #[error("not a valid WebSocket handshake: {0}")]
    Handshake(&'static str),
}

impl UpgradeError {
    /// The reason label, for metrics, logs and `test`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Protocol => "upgrade_refused",
            Self::Handshake(_) => "bad_websocket_handshake",
        }
    }
}

/// Whether the request is a WebSocket handshake (`Ok(true)`), no upgrade at all
/// (`Ok(false)`), or an upgrade the gateway refuses. Reads the fields before
/// [`strip_hop_by_hop`](super::headers::strip_hop_by_hop) removes them.
///
/// # Errors
/// See [`UpgradeError`].
pub fn websocket(parts: &Parts) -> Result<bool, UpgradeError> {
    let headers = &parts.headers;
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    let Some(value) = upgrades.next() else { return Ok(false) };
    if upgrades.next().is_some() || !value.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket") {
        return Err(UpgradeError::Protocol);
    }
    let refuse = |why| Err(UpgradeError::Handshake(why));
    if parts.version != Version::HTTP_11 {
        return refuse("WebSocket upgrades need HTTP/1.1");
    }
    if parts.method != Method::GET {
        return refuse("the handshake must be a GET");
    }
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        return refuse("Connection must list upgrade");
    }
    match one(headers, &SEC_WEBSOCKET_KEY) {
        Some(key) if is_nonce(key) => {}
        _ => return refuse("one Sec-WebSocket-Key of 16 base64-encoded bytes is required"),
    }
    if one(headers, &SEC_WEBSOCKET_VERSION).is_none_or(|v| v.trim_ascii() != b"13") {
        return refuse("one Sec-WebSocket-Version: 13 is required");
    }
    // Bytes after the head belong to the tunnel; a body would be read two ways.
    let no_body = headers.get(header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0");
    if !no_body || headers.contains_key(header::TRANSFER_ENCODING) {
        return refuse("the handshake cannot have a body");
    }
    Ok(true)
}

/// Sets `Upgrade: websocket` and `Connection: upgrade` (after the hop-by-hop fields were
/// removed): on a handshake forwarded to the backend, and on the `101` the client gets.
pub fn ask_websocket(headers: &mut HeaderMap) {
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// The field's value when it appears exactly once.
fn one<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h [u8]> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    values.next().is_none().then(|| value.as_bytes())
}

/// Whether a comma-separated field lists `token` (case-insensitive), over all its lines.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// 16 bytes in base64: 22 characters of the alphabet and `==` (RFC 6455 §4.1, item 7).
fn is_nonce(key: &[u8]) -> bool {
    let key = key.trim_ascii();
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn parts(method: &str, version: Version, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().method(method).version(version).uri("/ws");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn handshake(extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("upgrade", "websocket".to_owned()),
            ("connection", "keep-alive, Upgrade".to_owned()),
            ("sec-websocket-key", KEY.to_owned()),
            ("sec-websocket-version", "13".to_owned()),
        ];
        for (name, value) in extra {
            h.retain(|(n, _)| n != name);
            if !value.is_empty() {
                h.push((*name, (*value).to_owned()));
            }
        }
        h
    }

    fn check(method: &str, version: Version, headers: &[(&'static str, String)]) -> Result<bool, UpgradeError> {
        let fields: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        websocket(&parts(method, version, &fields))
    }

    #[test]
    fn a_websocket_handshake_is_accepted() {
        assert_eq!(check("GET", Version::HTTP_11, &handshake(&[])), Ok(true));
        assert_eq!(check("GET", Version::HTTP_11, &handshake(&[("upgrade", "WebSocket")])), Ok(true));
        assert_eq!(check("GET", Version::HTTP_11, &[]), Ok(false));
    }

    #[test]
    fn another_protocol_is_not_accepted() {
        for token in ["h2c", "HTTP/2.0", "TLS/1.2", "foo", "websocket, h2c", "h2c, websocket", "websocket/13", ""] {
            let h = handshake(&[("upgrade", token)]);
            let h = if token.is_empty() { vec![("upgrade", String::new())] } else { h };
            assert_eq!(check("GET", Version::HTTP_11, &h), Err(UpgradeError::Protocol), "{token:?}");
        }
        let mut twice = handshake(&[]);
        twice.push(("upgrade", "websocket".to_owned()));
        assert_eq!(check("GET", Version::HTTP_11, &twice), Err(UpgradeError::Protocol));
    }

    #[test]
    fn a_handshake_that_reads_two_ways_is_not_accepted() {
        let refused = |method, version, h: &[(&'static str, String)]| {
            matches!(check(method, version, h), Err(UpgradeError::Handshake(_)))
        };
        assert!(refused("POST", Version::HTTP_11, &handshake(&[])));
        assert!(refused("GET", Version::HTTP_10, &handshake(&[])));
        assert!(refused("GET", Version::HTTP_2, &handshake(&[])));
        assert!(refused("GET", Version::HTTP_11, &handshake(&[("connection", "keep-alive")])));
        assert!(refused("GET", Version::HTTP_11, &handshake(&[("sec-websocket-key", "")])));
        assert!(refused("GET", Version::HTTP_11, &handshake(&[("sec-websocket-key", "short")])));
        assert!(refused("GET", Version::HTTP_11, &handshake(&[("sec-websocket-version", "8")])));
        assert!(refused("GET", Version::HTTP_11, &handshake(&[("sec-websocket-version", "")])));
        assert!(refused("GET", Version::HTTP_11, &handshake(&[("content-length", "5")])));
        assert!(refused("GET", Version::HTTP_11, &handshake(&[("transfer-encoding", "chunked")])));
        let mut two_keys = handshake(&[]);
        two_keys.push(("sec-websocket-key", KEY.to_owned()));
        assert!(refused("GET", Version::HTTP_11, &two_keys));
    }
}
