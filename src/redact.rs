//! What never leaves the gateway in clear: credentials in headers and secret-looking query
//! parameters. Used wherever a request is printed or logged.

use std::borrow::Cow;

use http::header::{HeaderName, HeaderValue};

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Query parameter names (lower-case substrings) whose values are secrets.
const SECRET_PARAMS: [&str; 9] = ["token", "code", "secret", "password", "passwd", "sig", "key", "auth", "session"];

/// Whether a header carries credentials.
pub fn is_secret_header(name: &HeaderName, value: &HeaderValue) -> bool {
    value.is_sensitive()
        || matches!(name.as_str(), "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-api-key")
}

/// The header value as it may be printed.
pub fn header_value(name: &HeaderName, value: &HeaderValue) -> String {
    if is_secret_header(name, value) {
        REDACTED.to_owned()
    } else {
        String::from_utf8_lossy(value.as_bytes()).into_owned()
    }
}

/// The query with the values of secret-looking parameters replaced.
pub fn query(query: &str) -> Cow<'_, str> {
    let secret = |name: &str| {
        let name = name.to_ascii_lowercase();
        SECRET_PARAMS.iter().any(|s| name.contains(s))
    };
    if !query.split('&').any(|pair| secret(pair.split('=').next().unwrap_or(""))) {
        return Cow::Borrowed(query);
    }
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret(name) => format!("{name}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect();
    Cow::Owned(parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_query_parameters_are_redacted() {
        assert_eq!(query("a=1&b=2"), "a=1&b=2");
        assert_eq!(query("a=1&access_token=abc&SIG=x"), "a=1&access_token=[redacted]&SIG=[redacted]");
    }
}
