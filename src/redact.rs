//! What never leaves the gateway in clear: credentials in headers and secret-looking query
//! parameters, used wherever a request is printed or logged; and, by value, every secret the
//! configuration read from outside the file (`${env:}`, `${file:}`, `${credential:}`,
//! `${secret:}`), which the log writers, the access log and the CLI scrub from what they
//! write, wherever it turns up.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use aho_corasick::{AhoCorasick, MatchKind};
use arc_swap::ArcSwapOption;

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

/// Values shorter than this are not scrubbed: they would match ordinary text everywhere.
pub const MIN_CONCEALED_LEN: usize = 6;

/// The values to scrub, and a matcher built from them.
struct Concealed {
    values: Vec<String>,
    matcher: AhoCorasick,
}

static CONCEALED: ArcSwapOption<Concealed> = ArcSwapOption::const_empty();
static REGISTERING: Mutex<()> = Mutex::new(());

/// Adds values to scrub from now on (those of every configuration loaded stay: requests of
/// an older configuration may still be finishing).
pub fn conceal(values: &[String]) {
    let _one_at_a_time = REGISTERING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let current = CONCEALED.load_full();
    let mut all = current.as_ref().map(|c| c.values.clone()).unwrap_or_default();
    let before = all.len();
    for value in values.iter().filter(|v| v.len() >= MIN_CONCEALED_LEN) {
        if !all.contains(value) {
            all.push(value.clone());
        }
    }
    if all.len() == before {
        return;
    }
    // Longest first, so that a value containing another is replaced whole.
    all.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let Ok(matcher) = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&all) else { return };
    CONCEALED.store(Some(Arc::new(Concealed { values: all, matcher })));
}

/// `text` with every concealed value replaced by `[redacted]`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let guard = CONCEALED.load();
    match guard.as_ref() {
        Some(c) if c.matcher.is_match(text) => Cow::Owned(c.matcher.replace_all(text, &vec![REDACTED; c.values.len()])),
        _ => Cow::Borrowed(text),
    }
}

/// Scrubs a buffer in place (the access log's line).
pub fn scrub_in_place(line: &mut String) {
    if let Cow::Owned(clean) = scrub(line) {
        *line = clean;
    }
}

/// Standard output for the JSON log: each event, written whole, is scrubbed first.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScrubbedStdout;

impl std::io::Write for ScrubbedStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stdout().lock().write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concealed_values_are_scrubbed_wherever_they_turn_up() {
        conceal(&["sup3r-secret-value".into(), "sup3r-secret".into(), "short".into()]);
        assert_eq!(scrub("a sup3r-secret-value, b sup3r-secret."), "a [redacted], b [redacted].");
        assert_eq!(scrub("short stays"), "short stays", "too short to scrub safely");
        assert!(matches!(scrub("nothing here"), Cow::Borrowed(_)));
        let mut line = String::from("{\"path\":\"/x/sup3r-secret-value\"}");
        scrub_in_place(&mut line);
        assert_eq!(line, "{\"path\":\"/x/[redacted]\"}");
    }

    #[test]
    fn secret_query_parameters_are_redacted() {
        assert_eq!(query("a=1&b=2"), "a=1&b=2");
        assert_eq!(query("a=1&access_token=abc&SIG=x"), "a=1&access_token=[redacted]&SIG=[redacted]");
    }
}
