//! The APIM importer on arbitrary documents: never a panic, and whatever it writes is YAML
//! that the configuration parser reads (or refuses with an error, never a crash).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else { return };
    if let Ok(imported) = portcullis::apim::import(xml, "fuzz.xml") {
        let dir = std::env::temp_dir();
        let _ = portcullis::config::compile::load_text(&dir.join("fuzz-apim.yaml"), &imported.yaml);
    }
});
