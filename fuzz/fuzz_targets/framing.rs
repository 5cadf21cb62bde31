//! The framing and singleton-field checks over arbitrary targets and header lines, then the
//! removal of gateway-owned headers: no name that reads as one (with `_` as `-`) survives.
//! Input: the target, then `name: value` lines; the first byte's low bit says whether the
//! peer is a trusted proxy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::request::framing::check;
use portcullis::request::headers::{
    strip_hop_by_hop, strip_overrides, GatewayHeaders, ALWAYS_SPOOFABLE, METHOD_OVERRIDES, PATH_OVERRIDES, X_FORWARDED_FOR,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else { return };
    let mut lines = data.split(|b| *b == b'\n');
    let Some(target) = lines.next() else { return };
    let Ok(uri) = http::Uri::try_from(target) else { return };
    let mut builder = http::Request::get(uri);
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(&line[..colon]), http::HeaderValue::from_bytes(&line[colon + 1..]))
        else {
            continue;
        };
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(()) else { return };
    let (parts, ()) = request.into_parts();
    let trusted = flags & 1 == 1;
    if check(&parts, trusted, 100).is_err() {
        return;
    }
    let mut stripped = parts.headers.clone();
    strip_hop_by_hop(&mut stripped);
    let mut owned = GatewayHeaders::default();
    owned.insert(http::HeaderName::from_static("x-user-id"));
    owned.strip(&mut stripped, trusted.then_some(&X_FORWARDED_FOR));
    strip_overrides(&mut stripped, None);
    for name in stripped.keys() {
        let cgi = name.as_str().replace('_', "-");
        let kept_exactly = trusted && (name == "x-forwarded-for" || name == "x-request-id");
        let mut never_passed =
            ALWAYS_SPOOFABLE.iter().chain(&["x-user-id"]).chain(&METHOD_OVERRIDES).chain(&PATH_OVERRIDES);
        assert!(kept_exactly || !never_passed.any(|o| *o == cgi), "{name} reached the backend");
    }
    let headers = &parts.headers;
    for singleton in [http::header::HOST, http::header::AUTHORIZATION, http::header::CONTENT_LENGTH] {
        assert!(headers.get_all(&singleton).iter().count() <= 1, "{singleton} repeated");
    }
    // HTTP/1.1 (what the builder makes) always needs a Host, and it names the target's server.
    let host = headers.get(http::header::HOST).expect("a Host");
    let host: http::uri::Authority = host.to_str().unwrap().parse().expect("an accepted Host is an authority");
    assert!(!host.as_str().contains([',', '@', ';', ' ']), "{host}");
    if let Some(target) = parts.uri.authority() {
        let name = |a: &http::uri::Authority| a.host().trim_end_matches('.').to_ascii_lowercase();
        assert_eq!(name(target), name(&host));
    }
});
