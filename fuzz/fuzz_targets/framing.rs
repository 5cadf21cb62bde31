//! The framing and singleton-field checks over arbitrary header lists and targets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::request::framing::check;

fuzz_target!(|data: &[u8]| {
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
    if check(&parts, false, 100).is_ok() {
        assert!(parts.headers.get_all(http::header::HOST).iter().count() <= 1);
        assert!(parts.headers.get_all(http::header::AUTHORIZATION).iter().count() <= 1);
    }
});
