//! Which protocol upgrades the gateway accepts (README: WebSockets): a WebSocket opening
//! handshake over HTTP/1.1 (RFC 6455 §4.1) or over h2 (RFC 8441 extended CONNECT), and
//! nothing else.
//!
//! A request carrying `Upgrade` is an upgrade request, whatever `Connection` says. Any token
//! but `websocket` is refused, `h2c` above all: an h2c upgrade passed to a backend would let
//! the client speak HTTP/2 to it straight past every policy (h2c smuggling). A WebSocket
//! handshake is accepted only when it reads one way: HTTP/1.1, `GET`, one `Upgrade` field
//! whose value is the single token `websocket`, `upgrade` among the `Connection` tokens, one
//! `Sec-WebSocket-Key` of 16 base64-encoded bytes, one `Sec-WebSocket-Version: 13`, and no
//! body. Over h2 a request cannot carry `Upgrade` (RFC 9113 §8.2.2: the h2 server already
//! treats it as malformed and resets the stream).
//!
//! Over h2 a WebSocket is an extended CONNECT (RFC 8441 §4, §5): `:method = CONNECT`,
//! `:protocol = websocket`, `:scheme`, `:path`, `:authority` and `Sec-WebSocket-Version: 13`,
//! no `Sec-WebSocket-Key`. It stands for a `GET` handshake: routing, the policies and
//! `authorize` see `GET`, and the backend gets an ordinary HTTP/1.1 handshake with a key of
//! the gateway's own ([`backend_handshake`]), whose `Sec-WebSocket-Accept` the gateway checks
//! ([`accepts`]). Any other `:protocol` is refused like any other `Upgrade` token, and a
//! plain CONNECT (no `:protocol`, or any CONNECT over HTTP/1.x) is refused: the gateway is
//! no forward proxy.

use aws_lc_rs::digest;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Version};
use hyper::ext::Protocol;

/// `Sec-WebSocket-Key`: the client's nonce, which the backend's `Sec-WebSocket-Accept` answers.
pub static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
/// `Sec-WebSocket-Version`: 13 is the only one (RFC 6455 §4.1).
pub static SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
/// `Sec-WebSocket-Accept`: the backend's answer to the key (RFC 6455 §4.2.2, item 5.4).
pub static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
/// `Sec-WebSocket-Protocol`: the subprotocols offered, the one chosen.
pub static SEC_WEBSOCKET_PROTOCOL: HeaderName = HeaderName::from_static("sec-websocket-protocol");
/// `Sec-WebSocket-Extensions`: the extensions offered, the ones chosen.
pub static SEC_WEBSOCKET_EXTENSIONS: HeaderName = HeaderName::from_static("sec-websocket-extensions");

/// How a WebSocket handshake reached the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// `GET` with `Upgrade: websocket` over HTTP/1.1; answered `101`.
    Http1,
    /// An extended CONNECT with `:protocol = websocket` over h2; answered `200`.
    Http2,
}

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
    /// A CONNECT that is no WebSocket handshake: without `:protocol` (a forward-proxy
    /// tunnel), or over HTTP/1.x.
    #[error("CONNECT is refused: this gateway is no forward proxy (WebSockets over h2 use :protocol = websocket)")]
    Connect,
}

impl UpgradeError {
    /// The reason label, for metrics, logs and `test`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Protocol => "upgrade_refused",
            Self::Handshake(_) => "bad_websocket_handshake",
            Self::Connect => "connect_refused",
        }
    }
}

/// Whether the request is a WebSocket handshake (`Ok(Some(_))`), no upgrade at all
/// (`Ok(None)`), or an upgrade the gateway refuses. Reads the fields before
/// [`strip_hop_by_hop`](super::headers::strip_hop_by_hop) removes them.
///
/// # Errors
/// See [`UpgradeError`].
pub fn websocket(parts: &Parts) -> Result<Option<Handshake>, UpgradeError> {
    if parts.method == Method::CONNECT {
        return extended_connect(parts).map(Some);
    }
    let headers = &parts.headers;
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    let Some(value) = upgrades.next() else { return Ok(None) };
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
    Ok(Some(Handshake::Http1))
}

/// An h2 extended CONNECT (RFC 8441 §4, §5): `websocket` is the one `:protocol` accepted.
fn extended_connect(parts: &Parts) -> Result<Handshake, UpgradeError> {
    // hyper sets the extension on h2 streams only, and only once the listener advertised
    // SETTINGS_ENABLE_CONNECT_PROTOCOL; an HTTP/1.x CONNECT is a forward-proxy request.
    let Some(protocol) = parts.extensions.get::<Protocol>().filter(|_| parts.version == Version::HTTP_2) else {
        return Err(UpgradeError::Connect);
    };
    if !protocol.as_str().eq_ignore_ascii_case("websocket") {
        return Err(UpgradeError::Protocol);
    }
    let refuse = |why| Err(UpgradeError::Handshake(why));
    if parts.uri.scheme().is_none() || parts.uri.authority().is_none() || parts.uri.path().is_empty() {
        return refuse("an extended CONNECT needs :scheme, :authority and :path");
    }
    let headers = &parts.headers;
    if one(headers, &SEC_WEBSOCKET_VERSION).is_none_or(|v| v.trim_ascii() != b"13") {
        return refuse("one Sec-WebSocket-Version: 13 is required");
    }
    // The stream's DATA frames are the WebSocket's bytes once the gateway answered 200.
    let no_body = headers.get(header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0");
    if !no_body {
        return refuse("the handshake cannot have a body");
    }
    Ok(Handshake::Http2)
}

/// Turns the cleaned fields of an h2 handshake into an HTTP/1.1 one for the backend: a
/// fresh random `Sec-WebSocket-Key` (any the client sent is dropped) and
/// `Sec-WebSocket-Version: 13`; `-Protocol` and `-Extensions` pass as the client sent them.
/// Returns the key, for [`accepts`].
pub fn backend_handshake(headers: &mut HeaderMap) -> HeaderValue {
    let mut nonce = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut nonce).is_err() {
        nonce = std::array::from_fn(|_| fastrand::u8(..));
    }
    let key = HeaderValue::from_str(&STANDARD.encode(nonce)).expect("base64 is a valid field value");
    headers.insert(SEC_WEBSOCKET_KEY.clone(), key.clone());
    headers.insert(SEC_WEBSOCKET_VERSION.clone(), HeaderValue::from_static("13"));
    key
}

/// Whether the backend's `Sec-WebSocket-Accept` answers `key`: base64 of the SHA-1 of the key
/// and the RFC 6455 GUID (§4.2.2, item 5.4; §4.1, client item 4 of the answer's checks).
pub fn accepts(key: &HeaderValue, answer: &HeaderMap) -> bool {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha1 = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    sha1.update(key.as_bytes());
    sha1.update(GUID);
    let expected = STANDARD.encode(sha1.finish());
    one(answer, &SEC_WEBSOCKET_ACCEPT).is_some_and(|got| got.trim_ascii() == expected.as_bytes())
}

/// The `200` an h2 client gets for the backend's `101` (RFC 8441 §5): the backend's chosen
/// `Sec-WebSocket-Protocol` and `-Extensions`, nothing of the HTTP/1.1 handshake's own.
pub fn h2_answer(switched: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in [&SEC_WEBSOCKET_PROTOCOL, &SEC_WEBSOCKET_EXTENSIONS] {
        for value in switched.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
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
        websocket(&parts(method, version, &fields)).map(|h| h.is_some())
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

    fn connect(
        protocol: Option<&str>,
        version: Version,
        headers: &[(&str, &str)],
    ) -> Result<Option<Handshake>, UpgradeError> {
        let mut builder = Request::builder().method("CONNECT").version(version).uri("https://localhost/ws?x=1");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(protocol) = protocol {
            builder = builder.extension(Protocol::from(protocol));
        }
        websocket(&builder.body(()).unwrap().into_parts().0)
    }

    #[test]
    fn an_h2_extended_connect_for_websocket_is_a_handshake() {
        let v13 = [("sec-websocket-version", "13")];
        assert_eq!(connect(Some("websocket"), Version::HTTP_2, &v13), Ok(Some(Handshake::Http2)));
        assert_eq!(connect(Some("foo"), Version::HTTP_2, &v13), Err(UpgradeError::Protocol));
        assert_eq!(connect(None, Version::HTTP_2, &v13), Err(UpgradeError::Connect));
        assert_eq!(connect(Some("websocket"), Version::HTTP_11, &v13), Err(UpgradeError::Connect));
        assert!(matches!(connect(Some("websocket"), Version::HTTP_2, &[]), Err(UpgradeError::Handshake(_))));
        let body = [("sec-websocket-version", "13"), ("content-length", "3")];
        assert!(matches!(connect(Some("websocket"), Version::HTTP_2, &body), Err(UpgradeError::Handshake(_))));
    }

    #[test]
    fn the_backends_accept_answers_the_gateways_key() {
        // RFC 6455 §1.3's example.
        let key = HeaderValue::from_static(KEY);
        let mut answer = HeaderMap::new();
        answer.insert(SEC_WEBSOCKET_ACCEPT.clone(), HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert!(accepts(&key, &answer));
        answer.insert(SEC_WEBSOCKET_ACCEPT.clone(), HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo"));
        assert!(!accepts(&key, &answer));
        assert!(!accepts(&key, &HeaderMap::new()));
        let mut headers = HeaderMap::new();
        headers.insert(SEC_WEBSOCKET_KEY.clone(), HeaderValue::from_static(KEY));
        let fresh = backend_handshake(&mut headers);
        assert!(is_nonce(fresh.as_bytes()) && fresh != KEY, "{fresh:?}");
        assert_eq!(headers[&SEC_WEBSOCKET_KEY], fresh);
        assert_eq!(headers[&SEC_WEBSOCKET_VERSION], "13");
    }
}
