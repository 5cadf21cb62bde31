//! The framing and singleton-field checks over arbitrary targets and header lines. Input:
//! the target, then `name: value` lines; the first byte's low bit says whether the peer is
//! a trusted proxy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::request::framing::check;

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
    if check(&parts, flags & 1 == 1, 100).is_err() {
        return;
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
