//! JWT parsing: splitting, the JOSE header, the payload and the registered-claim checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::policy::jwt::claims::ClaimChecks;
use portcullis::policy::jwt::token::TokenParts;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let Ok(parts) = TokenParts::parse(token) else { return };
    assert!(token.starts_with(parts.message));
    let Some(claims) = parts.claims() else { return };
    let checks = ClaimChecks {
        issuers: vec!["https://idp.test".into()],
        audiences: vec!["api://portcullis".into()],
        leeway: 60,
    };
    if let Ok(exp) = checks.check(&claims, 1_800_000_000) {
        assert!(exp.saturating_add(60) >= 1_800_000_000);
        assert_eq!(claims["iss"], "https://idp.test");
    }
});
