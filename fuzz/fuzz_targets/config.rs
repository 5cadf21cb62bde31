//! The config loader: YAML text → compiled runtime, `${env:…}` / `${file:…}` references
//! included. Paths resolve beside the repository's `policies/`, so seeds that name the dev
//! certificates compile as far as those files exist.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/fuzz-input.yaml"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // An identity store is a file the loader creates: not something to scatter around.
    if text.contains("sqlite") || text.contains("store") {
        return;
    }
    match portcullis::compile::load_text(file(), text) {
        Ok(loaded) => drop(loaded),
        Err(errors) => {
            // Every error can be rendered, with its location.
            let _ = errors.to_string();
        }
    }
});
