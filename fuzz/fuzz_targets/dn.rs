//! Distinguished names as operators write them: reading never panics, and a name that reads
//! renders to RFC 4514 text (and to the printable-ASCII header form) that reads back to the same
//! name and matches it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::tls::dn::Dn;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(dn) = Dn::parse(text) else { return };
    assert!(dn.matches(&dn), "{text:?}");
    let shown = dn.to_string();
    assert_eq!(Dn::parse(&shown).as_ref(), Ok(&dn), "{text:?} rendered as {shown:?}");
    let ascii = dn.to_ascii_string();
    assert!(ascii.bytes().all(|b| (b' '..=b'~').contains(&b)), "{ascii:?}");
    assert_eq!(Dn::parse(&ascii).as_ref(), Ok(&dn), "{text:?} rendered as {ascii:?}");
});
