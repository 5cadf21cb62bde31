//! Framing and field checks that run before anything reads the request (README: Request framing).
//!
//! A proxy and its backend must read a request the same way: when a field that may occur
//! once occurs twice, the gateway might check one value while the backend acts on the other.
//! So a request is refused (and never forwarded) when it
//!
//! - repeats a field that is not a list (RFC 9110 §5.3): `Host` (RFC 9112 §3.2 demands a 400),
//!   `Authorization`, `Content-Type`, `Content-Length`, `Origin`,
//!   `Access-Control-Request-Method`, and `X-Request-Id` from a trusted proxy. hyper has
//!   already refused differing `Content-Length` values and folded identical ones;
//! - names a transfer coding other than one `chunked` (501 for a coding the gateway does not
//!   implement, 400 for `chunked` twice; hyper refuses a final coding other than `chunked`);
//! - has an authority in its target (HTTP/1.1 absolute-form, h2 `:authority`) that disagrees
//!   with its `Host` field, carries user info, or has neither;
//! - has more header fields than the listener allows (431).
//!
//! A request with both `Content-Length` and `Transfer-Encoding: chunked` is framed by the
//! chunked coding alone, its `Content-Length` is removed and its connection closed after the
//! answer (RFC 9112 §6.3, done by hyper), so nothing after its body is read as a request.

use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;
use http::uri::Authority;
use http::StatusCode;

use super::headers::X_REQUEST_ID;
use crate::problem::Problem;

/// Fields that must occur at most once, whoever sends them, with their usual spelling.
static SINGLETONS: [(HeaderName, &str); 6] = [
    (header::HOST, "Host"),
    (header::AUTHORIZATION, "Authorization"),
    (header::CONTENT_TYPE, "Content-Type"),
    (header::CONTENT_LENGTH, "Content-Length"),
    (header::ORIGIN, "Origin"),
    (header::ACCESS_CONTROL_REQUEST_METHOD, "Access-Control-Request-Method"),
];

/// Methods are case-sensitive (RFC 9110 §9.1), but ASP.NET Core and Express read them
/// ignoring case: `delete` would skip a route for `DELETE` here and run as DELETE there. So a
/// method with a lower-case letter is refused, whatever it is.
pub fn method_is_unambiguous(method: &http::Method) -> bool {
    !method.as_str().bytes().any(|b| b.is_ascii_lowercase())
}

/// Why a request was refused before routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// A field that must occur once occurred more than once.
    RepeatedField(&'static str),
    /// `Transfer-Encoding` names a coding the gateway does not implement.
    UnsupportedTransferCoding,
    /// `Transfer-Encoding` applies `chunked` more than once.
    RepeatedChunked,
    /// The target's authority and `Host` name different servers.
    AuthorityMismatch,
    /// User info (`user@host`) in the authority or `Host`.
    UserInfo,
    /// Neither an authority in the target nor a valid `Host`.
    MissingHost,
    /// More header fields than `limits.max_headers`.
    TooManyHeaders,
}

impl FramingError {
    /// The reason for logs and metrics: a fixed vocabulary.
    pub fn label(self) -> &'static str {
        match self {
            Self::RepeatedField(_) => "repeated_field",
            Self::UnsupportedTransferCoding => "unsupported_transfer_coding",
            Self::RepeatedChunked => "repeated_chunked",
            Self::AuthorityMismatch => "authority_mismatch",
            Self::UserInfo => "user_info",
            Self::MissingHost => "missing_host",
            Self::TooManyHeaders => "too_many_headers",
        }
    }

    /// What the client is told.
    pub fn problem(self) -> Problem {
        match self {
            Self::RepeatedField(name) => Problem::bad_request(format!("the {name} field may occur only once")),
            Self::UnsupportedTransferCoding => Problem::new(
                StatusCode::NOT_IMPLEMENTED,
                "not-implemented",
                "Not implemented",
                "only the chunked transfer coding is supported",
            ),
            Self::RepeatedChunked => Problem::bad_request("the chunked transfer coding may be applied only once"),
            Self::AuthorityMismatch => Problem::bad_request("the request target's authority and Host disagree"),
            Self::UserInfo => Problem::bad_request("user information is not allowed in the authority"),
            Self::MissingHost => Problem::bad_request("missing or invalid Host"),
            Self::TooManyHeaders => Problem::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header-fields-too-large",
                "Request header fields too large",
                "the request has too many header fields",
            ),
        }
    }
}

/// Checks the request's fields and framing; see the module documentation.
///
/// # Errors
/// The first rule the request breaks.
pub fn check(parts: &Parts, from_trusted_proxy: bool, max_headers: usize) -> Result<(), FramingError> {
    let headers = &parts.headers;
    if headers.len() > max_headers {
        return Err(FramingError::TooManyHeaders);
    }
    // Distinct names as many as values: no field is repeated, nothing more to look at.
    if headers.keys_len() != headers.len() {
        repeated_fields(headers, from_trusted_proxy)?;
    }
    transfer_coding(headers)?;
    authority(parts)
}

fn repeated_fields(headers: &HeaderMap, from_trusted_proxy: bool) -> Result<(), FramingError> {
    let repeated = |name: &HeaderName| headers.get_all(name).iter().nth(1).is_some();
    if let Some((_, spelling)) = SINGLETONS.iter().find(|(name, _)| repeated(name)) {
        return Err(FramingError::RepeatedField(spelling));
    }
    // Only a trusted proxy's request id is kept; anyone else's is removed anyway.
    if from_trusted_proxy && repeated(&X_REQUEST_ID) {
        return Err(FramingError::RepeatedField("X-Request-Id"));
    }
    Ok(())
}

fn transfer_coding(headers: &HeaderMap) -> Result<(), FramingError> {
    let mut chunked = 0;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let Ok(value) = value.to_str() else {
            return Err(FramingError::UnsupportedTransferCoding);
        };
        for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(FramingError::UnsupportedTransferCoding);
            }
            chunked += 1;
        }
    }
    if chunked > 1 {
        return Err(FramingError::RepeatedChunked);
    }
    Ok(())
}

fn authority(parts: &Parts) -> Result<(), FramingError> {
    let host = parts.headers.get(header::HOST).map(|h| h.to_str().map_err(|_| FramingError::MissingHost));
    let target = parts.uri.authority().map(Authority::as_str);
    if target.is_some_and(|a| a.contains('@')) || host.as_ref().is_some_and(|h| h.is_ok_and(|h| h.contains('@'))) {
        return Err(FramingError::UserInfo);
    }
    let default_port = if parts.uri.scheme() == Some(&http::uri::Scheme::HTTP) { 80 } else { 443 };
    let target = target.map(|a| HostPort::parse(a, default_port).ok_or(FramingError::MissingHost)).transpose()?;
    let host = host.map(|h| h.and_then(|h| HostPort::parse(h, default_port).ok_or(FramingError::MissingHost)));
    match (target, host.transpose()?) {
        (Some(target), Some(host)) if target == host => Ok(()),
        (Some(_), Some(_)) => Err(FramingError::AuthorityMismatch),
        // h2 names the server in `:authority`; HTTP/1.1 must send `Host` (RFC 9112 §3.2).
        (Some(_), None) if parts.version != http::Version::HTTP_11 => Ok(()),
        (None, Some(_)) => Ok(()),
        _ => Err(FramingError::MissingHost),
    }
}

/// A server name as `Host` and request targets may carry it: a DNS name (letters, digits,
/// `-`, `_`, `.`) or an IP literal, then an optional decimal port. Anything else (commas,
/// sub-delims, a port that is no number) is refused rather than passed on to a backend that
/// might read it differently.
#[derive(Debug)]
struct HostPort<'a> {
    /// Without a trailing dot; compared case-insensitively.
    host: &'a str,
    port: u16,
}

impl PartialEq for HostPort<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.port == other.port && self.host.eq_ignore_ascii_case(other.host)
    }
}

impl<'a> HostPort<'a> {
    fn parse(value: &'a str, default_port: u16) -> Option<Self> {
        let (host, port) = match value.strip_prefix('[') {
            Some(rest) => {
                let (literal, after) = rest.split_once(']')?;
                literal.parse::<std::net::Ipv6Addr>().ok()?;
                (&value[..literal.len() + 2], after)
            }
            None => {
                let end = value.find(':').unwrap_or(value.len());
                (&value[..end], &value[end..])
            }
        };
        let name_ok = host.starts_with('[')
            || (!host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => default_port,
            Some(digits) if !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse().ok()?
            }
            _ => return None,
        };
        name_ok.then(|| Self { host: host.trim_end_matches('.'), port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(target: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::get(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn checked(target: &str, headers: &[(&str, &str)]) -> Result<(), FramingError> {
        check(&parts(target, headers), false, 100)
    }

    #[test]
    fn ordinary_requests_pass() {
        assert_eq!(checked("/x", &[("host", "localhost")]), Ok(()));
        assert_eq!(checked("/x", &[("host", "localhost"), ("accept", "a"), ("accept", "b")]), Ok(()));
        let h2 = |target: &str, headers: &[(&str, &str)]| {
            let mut p = parts(target, headers);
            p.version = http::Version::HTTP_2;
            check(&p, false, 100)
        };
        assert_eq!(h2("https://localhost/x", &[]), Ok(()), "h2 may name the server in :authority alone");
        assert_eq!(checked("https://localhost/x", &[]), Err(FramingError::MissingHost), "HTTP/1.1 needs Host");
        assert_eq!(checked("/x", &[("host", "[::1]:8443")]), Ok(()));
        assert_eq!(checked("/x", &[("host", "api_v2.internal.")]), Ok(()));
        assert_eq!(checked("https://LocalHost:443/x", &[("host", "localhost")]), Ok(()));
        assert_eq!(checked("/x", &[("host", "localhost"), ("transfer-encoding", "Chunked")]), Ok(()));
    }

    #[test]
    fn repeated_singletons_are_refused() {
        for name in ["host", "authorization", "content-type", "content-length", "origin"] {
            let got = checked("/x", &[("host", "localhost"), (name, "1"), (name, "1")]);
            assert_eq!(got.map_err(FramingError::label), Err("repeated_field"), "{name}");
        }
        let twice = [("host", "localhost"), ("x-request-id", "a"), ("x-request-id", "b")];
        assert_eq!(check(&parts("/x", &twice), false, 100), Ok(()), "stripped anyway when untrusted");
        assert_eq!(check(&parts("/x", &twice), true, 100), Err(FramingError::RepeatedField("X-Request-Id")));
    }

    #[test]
    fn transfer_codings_other_than_one_chunked_are_refused() {
        let te = |v: &'static str| checked("/x", &[("host", "h"), ("transfer-encoding", v)]);
        assert_eq!(te("gzip, chunked"), Err(FramingError::UnsupportedTransferCoding));
        assert_eq!(te("identity"), Err(FramingError::UnsupportedTransferCoding));
        assert_eq!(te("chunked, chunked"), Err(FramingError::RepeatedChunked));
        let two_lines = [("host", "h"), ("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")];
        assert_eq!(checked("/x", &two_lines), Err(FramingError::RepeatedChunked));
    }

    #[test]
    fn authorities_must_agree_with_host() {
        assert_eq!(checked("https://evil.example/x", &[("host", "localhost")]), Err(FramingError::AuthorityMismatch));
        assert_eq!(checked("https://localhost:8443/x", &[("host", "localhost")]), Err(FramingError::AuthorityMismatch));
        assert_eq!(checked("https://user@localhost/x", &[]), Err(FramingError::UserInfo));
        assert_eq!(checked("/x", &[("host", "user@localhost")]), Err(FramingError::UserInfo));
        assert_eq!(checked("/x", &[]), Err(FramingError::MissingHost));
        assert_eq!(checked("/x", &[("host", "a b")]), Err(FramingError::MissingHost));
        // Found in review: a comma-joined or port-smuggling Host passed as "localhost".
        for bad in ["localhost:443,evil.example", "localhost,evil.example", "localhost:x", "localhost:", "[::1", "a;b"]
        {
            assert_eq!(checked("/x", &[("host", bad)]), Err(FramingError::MissingHost), "{bad}");
            assert_eq!(
                checked("https://localhost/x", &[("host", bad)]),
                Err(FramingError::MissingHost),
                "{bad} against a target"
            );
        }
        assert_eq!(checked("/x", &[("host", "localhost:99999")]), Err(FramingError::MissingHost));
    }

    #[test]
    fn too_many_fields_are_refused() {
        let many: Vec<(String, String)> = (0..5).map(|i| (format!("x-{i}"), "v".into())).collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(check(&parts("/x", &refs), false, 4), Err(FramingError::TooManyHeaders));
        let with_host: Vec<(&str, &str)> = refs.iter().copied().chain([("host", "h")]).collect();
        assert_eq!(check(&parts("/x", &with_host), false, 6), Ok(()));
    }
}
