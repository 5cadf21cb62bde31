//! The token endpoint's form and HTTP Basic credential parsing. Input: an `Authorization`
//! value, a NUL byte, then the form body (no NUL: no Authorization header).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::identity::endpoint::TokenRequest;

fuzz_target!(|data: &[u8]| {
    let mut headers = http::HeaderMap::new();
    let form = match data.iter().position(|b| *b == 0) {
        Some(at) => {
            if let Ok(value) = http::HeaderValue::from_bytes(&data[..at]) {
                headers.insert(http::header::AUTHORIZATION, value);
            }
            &data[at + 1..]
        }
        None => data,
    };
    if let Ok(request) = TokenRequest::parse(&headers, form) {
        assert!(!request.credentials.client_id.is_empty());
    }
});
