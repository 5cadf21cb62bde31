//! Path normalization, so that routing, policies and the backend all see one spelling of a
//! path and no policy can be bypassed by writing it differently.
//!
//! - percent-escapes of unreserved characters are decoded (RFC 3986 §2.3, §6.2.2.2), the
//!   others are kept with upper-case hex (§6.2.2.1);
//! - an encoded `/` (`%2F`), `\` (`%5C`) or NUL (`%00`), a raw `\`, and an invalid escape are
//!   refused: their meaning differs between servers;
//! - path parameters (`;…` to the end of a segment, RFC 3986 §3.3) are removed, as Tomcat,
//!   Jetty and Spring remove them before they resolve dot-segments: `/a/7/..;/8` is `/a/8` for
//!   them, so it is `/a/8` here too, and the backend receives the path without them. A route
//!   refuses a path that had them unless it sets `path_parameters: strip`. A `.` or `..`
//!   segment followed by `;` or `%3B` is always refused: servers disagree on what it is;
//! - runs of `/` are merged, then dot-segments are removed (§5.2.4); `..` never climbs above `/`.

use std::borrow::Cow;

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Why a path was refused (answered with 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("path must start with '/'")]
    NotAbsolute,
    /// The path is longer than the limit.
    #[error("path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    /// `%2F` in the path: a segment boundary in disguise.
    #[error("encoded '/' in path")]
    EncodedSlash,
    /// A backslash, raw or escaped: some backends take it for `/`.
    #[error("backslash in path")]
    Backslash,
    /// A NUL byte, raw or escaped.
    #[error("NUL byte in path")]
    Nul,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-escape in path")]
    InvalidEscape,
    /// `..;x` or `.%3B`: a dot-segment that some servers resolve and others do not.
    #[error("a '.' or '..' segment followed by ';' in path")]
    DotSegmentParameters,
}

/// Whether the path carries path parameters (`;`), which normalization removes.
pub fn has_path_parameters(raw: &str) -> bool {
    raw.contains(';')
}

/// Returns the normalized path; borrows the input when it is already normal.
///
/// # Errors
/// See [`PathError`].
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if is_normal(raw.as_bytes()) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode_unreserved(raw.as_bytes())?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// The fast path: no escape, no backslash, no `//`, no segment that starts with a dot.
fn is_normal(bytes: &[u8]) -> bool {
    let mut previous = 0u8;
    for &b in bytes {
        match b {
            b'%' | b'\\' | b';' | 0 | 0x80.. => return false,
            b'/' if previous == b'/' => return false,
            b'.' if previous == b'/' => return false,
            _ => {}
        }
        previous = b;
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn decode_unreserved(bytes: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(hi), Some(lo)) =
                    (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
                else {
                    return Err(PathError::InvalidEscape);
                };
                let value = hi << 4 | lo;
                if value == b';' && ends_in_dot_segment(&out) {
                    return Err(PathError::DotSegmentParameters);
                }
                match value {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0 => return Err(PathError::Nul),
                    v if is_unreserved(v) => out.push(v as char),
                    v => push_escaped(&mut out, v),
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            // Path parameters: the rest of the segment goes.
            b';' => {
                if ends_in_dot_segment(&out) {
                    return Err(PathError::DotSegmentParameters);
                }
                while i < bytes.len() && bytes[i] != b'/' {
                    i += 1;
                }
            }
            // Raw bytes beyond ASCII (UTF-8 sent unescaped) take their escaped form, so that
            // both spellings of a character are one path.
            b @ 0x80.. => {
                push_escaped(&mut out, b);
                i += 1;
            }
            b => {
                out.push(b as char);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Whether the segment being decoded (after the last `/` of `out`) is `.` or `..`.
fn ends_in_dot_segment(out: &str) -> bool {
    matches!(out.rsplit('/').next(), Some("." | ".."))
}

fn push_escaped(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
    out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
}

/// RFC 3986 §5.2.4 over `/`-separated segments, with empty segments (`//`) merged.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(raw: &str) -> Result<String, PathError> {
        normalize_path(raw).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in ["/", "/a/b", "/a/b/", "/a.b/c", "/a-b_c~d"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_repeated_slashes_are_removed() {
        assert_eq!(n("/a/../b").unwrap(), "/b");
        assert_eq!(n("/a/./b").unwrap(), "/a/b");
        assert_eq!(n("/a//b").unwrap(), "/a/b");
        assert_eq!(n("//a").unwrap(), "/a");
        assert_eq!(n("/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/.").unwrap(), "/a/");
        assert_eq!(n("/a/..b").unwrap(), "/a/..b");
    }

    #[test]
    fn encoded_dots_are_decoded_before_dot_removal() {
        assert_eq!(n("/a/%2e%2e/b").unwrap(), "/b");
        assert_eq!(n("/a/%2E./b").unwrap(), "/b");
        assert_eq!(n("/%61dmin").unwrap(), "/admin");
    }

    #[test]
    fn reserved_escapes_are_kept_with_upper_case_hex() {
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
        assert_eq!(n("/a%3fb").unwrap(), "/a%3Fb");
    }

    /// Found by the `normalize` fuzz target: raw UTF-8 came out as mojibake, and normalizing
    /// the result changed it again.
    #[test]
    fn raw_non_ascii_takes_its_escaped_form_once() {
        assert_eq!(n("/a/ж").unwrap(), "/a/%D0%B6");
        assert_eq!(n("/a/%d0%b6").unwrap(), "/a/%D0%B6", "both spellings are one path");
        let once = n("/a///.aa/a/$aa/a/aўЖ/a/").unwrap();
        assert_eq!(n(&once).unwrap(), once);
    }

    /// Tomcat, Jetty and Spring drop `;…` before resolving dot-segments: `/a/7/..;/8` is
    /// account 8 to them, so it must be account 8 to every policy as well.
    #[test]
    fn path_parameters_are_removed_before_dot_segments() {
        assert_eq!(n("/accounts/7;v=1/cases").unwrap(), "/accounts/7/cases");
        assert_eq!(n("/accounts;x/7").unwrap(), "/accounts/7");
        assert_eq!(n("/a/;x/b").unwrap(), "/a/b");
        assert_eq!(n("/a/b;").unwrap(), "/a/b");
        assert_eq!(n("/a/7;jsessionid=1/../8").unwrap(), "/a/8");
        assert_eq!(n("/a/x%3By").unwrap(), "/a/x%3By", "an escaped ';' is data");
        assert!(has_path_parameters("/a;b") && !has_path_parameters("/a%3Bb"));
    }

    #[test]
    fn dot_segments_with_parameters_are_refused_in_every_spelling() {
        for raw in [
            "/accounts/7/..;/8/cases",
            "/accounts/7/..;x=1/8",
            "/a/.;/b",
            "/a/%2e%2e;/b",
            "/a/.%2E;/b",
            "/a/%2E;/b",
            "/a/..%3b/b",
            "/a/..%3B/b",
            "/a/.%3bx/b",
            "/..;/",
        ] {
            assert_eq!(n(raw), Err(PathError::DotSegmentParameters), "{raw}");
        }
        assert_eq!(n("/a/...;/b").unwrap(), "/a/.../b");
        assert_eq!(n("/a/x..;/b").unwrap(), "/a/x../b");
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        assert_eq!(n("/a%2fb"), Err(PathError::EncodedSlash));
        assert_eq!(n("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(n("/a%5cb"), Err(PathError::Backslash));
        assert_eq!(n("/a\\b"), Err(PathError::Backslash));
        assert_eq!(n("/a%00"), Err(PathError::Nul));
        assert_eq!(n("/a%zz"), Err(PathError::InvalidEscape));
        assert_eq!(n("/a%4"), Err(PathError::InvalidEscape));
        assert_eq!(n("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(n(&format!("/{}", "a".repeat(MAX_PATH_BYTES))), Err(PathError::TooLong));
    }
}
