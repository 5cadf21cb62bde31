//! The APIM importer on arbitrary documents: never a panic; whatever it returns is YAML, and a
//! configuration the loader reads (the importer reads it back itself: `Unreadable` is its bug).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::tools::apim::{import, read_back, ImportError};

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else { return };
    match import(xml, "fuzz.xml") {
        Ok(imported) => {
            if let Err(e) = serde_saphyr::from_str::<serde_json::Value>(&imported.yaml) {
                panic!("not YAML: {e}\n{}", imported.yaml);
            }
            if let Err(e) = read_back(&imported.yaml) {
                panic!("not a configuration: {e}\n{}", imported.yaml);
            }
        }
        Err(ImportError::Unreadable(e)) => panic!("the importer wrote what the loader refuses: {e}"),
        Err(ImportError::Xml(_) | ImportError::NotPolicies(..)) => {}
    }
});
