//! The path normalizer: never panics, and what it accepts is one canonical spelling.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::request::normalize::normalize_path;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let Ok(path) = normalize_path(raw) else { return };
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    assert!(!path.contains("//"), "{raw:?} -> {path:?}");
    assert!(!path.contains(';'), "path parameters are removed: {raw:?} -> {path:?}");
    for segment in path.split('/') {
        assert!(segment != "." && segment != "..", "{raw:?} -> {path:?}");
        assert!(!segment.starts_with(".%3B") && !segment.starts_with("..%3B"), "{raw:?} -> {path:?}");
    }
    let again = normalize_path(&path).expect("a normalized path normalizes");
    assert_eq!(again, path, "normalizing is idempotent for {raw:?}");
});
