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

/// Query parameters (decoded, lower-case) and headers that a policy of some configuration
/// reads a credential from, whatever their names look like. Only ever added to: requests of
/// an older configuration may still be finishing.
#[derive(Default)]
struct CredentialNames {
    params: Vec<String>,
    headers: Vec<HeaderName>,
}

static CREDENTIAL_NAMES: ArcSwapOption<CredentialNames> = ArcSwapOption::const_empty();

/// Redacts, from now on, the query parameter `param` and the header `header`: a policy reads
/// a credential from them.
pub fn credential_source(param: Option<&str>, header: Option<&HeaderName>) {
    let _one_at_a_time = REGISTERING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let current = CREDENTIAL_NAMES.load_full();
    let mut names = CredentialNames {
        params: current.as_ref().map(|c| c.params.clone()).unwrap_or_default(),
        headers: current.as_ref().map(|c| c.headers.clone()).unwrap_or_default(),
    };
    let param = param.map(decoded_name).filter(|p| !names.params.contains(p));
    let header = header.filter(|h| !names.headers.contains(h)).cloned();
    if param.is_none() && header.is_none() {
        return;
    }
    names.params.extend(param);
    names.headers.extend(header);
    CREDENTIAL_NAMES.store(Some(Arc::new(names)));
}

/// A query parameter name as a form reader sees it (`+` is a space, escapes decoded),
/// lower-case: `%74oken` is `token`.
fn decoded_name(raw: &str) -> String {
    form_urlencoded::parse(raw.as_bytes()).next().map(|(name, _)| name.to_lowercase()).unwrap_or_default()
}

/// Whether a header carries credentials.
pub fn is_secret_header(name: &HeaderName, value: &HeaderValue) -> bool {
    value.is_sensitive()
        || matches!(name.as_str(), "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-api-key")
        || CREDENTIAL_NAMES.load().as_ref().is_some_and(|names| names.headers.contains(name))
}

/// The header value as it may be printed.
pub fn header_value(name: &HeaderName, value: &HeaderValue) -> String {
    if is_secret_header(name, value) {
        REDACTED.to_owned()
    } else {
        String::from_utf8_lossy(value.as_bytes()).into_owned()
    }
}

/// The query with the values of secret-looking parameters, and of those a policy reads a
/// credential from, replaced. Names are compared as decoded, as the policies read them.
pub fn query(query: &str) -> Cow<'_, str> {
    let sources = CREDENTIAL_NAMES.load();
    let secret = |raw: &str| {
        let name = decoded_name(raw);
        SECRET_PARAMS.iter().any(|s| name.contains(s)) || sources.as_ref().is_some_and(|c| c.params.contains(&name))
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

    /// A reader decodes `%74oken` to `token`: redaction compares the name the same way.
    #[test]
    fn parameter_names_are_compared_decoded() {
        assert_eq!(query("%74oken=abc&a=1"), "%74oken=[redacted]&a=1");
        assert_eq!(query("access%5Ftoken=abc"), "access%5Ftoken=[redacted]");
        assert_eq!(query("p%61ssword=x&x=%74oken"), "p%61ssword=[redacted]&x=%74oken");
    }

    /// `token_from: query:jwt` or `header:X-Portal-Jwt`: names that do not look secret.
    #[test]
    fn the_names_a_policy_reads_credentials_from_are_redacted() {
        let header = HeaderName::from_static("x-portal-jwt");
        let value = HeaderValue::from_static("eyJ");
        assert_eq!(query("jwt=eyJ&page=2"), "jwt=eyJ&page=2");
        assert!(!is_secret_header(&header, &value));
        credential_source(Some("jwt"), Some(&header));
        assert_eq!(query("jwt=eyJ&page=2"), "jwt=[redacted]&page=2");
        assert_eq!(query("%6Awt=eyJ&JWT=eyJ&j+wt=x"), "%6Awt=[redacted]&JWT=[redacted]&j+wt=x");
        assert!(is_secret_header(&header, &value));
        assert_eq!(header_value(&header, &value), REDACTED);
    }
}
