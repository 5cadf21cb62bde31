//! The load-test scenario parser.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use portcullis::tools::loadtest::scenario::Scenario;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Scenario::parse(Path::new("benches/scenarios/fuzz.yaml"), text);
});
