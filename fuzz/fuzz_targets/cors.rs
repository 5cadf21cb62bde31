//! CORS origin parsing: configured origins compile or are refused, and a wildcard never
//! admits the bare domain or a look-alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::context::CompileContext;
use portcullis::policy::cors::{Cors, CorsConfig};
use portcullis::policy::PolicyKind;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (configured, origin) = text.split_once('\n').unwrap_or((text, ""));
    let config = |origins: Vec<&str>| -> CorsConfig {
        serde_json::from_value(serde_json::json!({ "allowed_origins": origins })).unwrap()
    };
    // Whatever an operator writes either compiles or is an error; never a panic.
    let compile = |cfg: &CorsConfig| Cors::compile(cfg, &mut CompileContext::standalone(std::path::Path::new("."), "fuzz"));
    if let Ok(cors) = compile(&config(configured.split(' ').collect())) {
        let _ = cors.allows(origin);
    }
    let cors = compile(&config(vec!["https://portal.example.com", "https://*.portal.example.com"])).unwrap();
    if cors.allows(origin) && origin != "https://portal.example.com" {
        let host = origin.strip_prefix("https://").expect("the scheme matches");
        let label = host.strip_suffix(".portal.example.com").expect("the suffix matches on a label boundary");
        assert!(!label.is_empty() && !label.contains(['/', ':', '@']), "{origin:?}");
    }
});
