//! The tunnel's RFC 6455 frame reader over arbitrary bytes fed in arbitrary pieces: it never
//! panics, never passes more bytes than it was given, and passes every byte of a stream it
//! accepts (but an incomplete header at the end, shorter than the longest header).
//! Input: a flags byte (bit 0: frames from the client; bits 1-7: the piece size), then bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::serve::frames::{FrameReader, MAX_HEADER};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else { return };
    let mut reader = FrameReader::new(flags & 1 == 1, 4096);
    let piece = usize::from(flags >> 1).max(1);
    // The tunnel's buffer: kept bytes (an incomplete header) plus what the next read brought.
    let mut kept: Vec<u8> = Vec::new();
    let mut passed = 0;
    for chunk in data.chunks(piece) {
        kept.extend_from_slice(chunk);
        let (n, result) = reader.advance(&kept);
        assert!(n <= kept.len());
        passed += n;
        if result.is_err() {
            return;
        }
        kept.drain(..n);
        assert!(kept.len() < MAX_HEADER, "an incomplete header is shorter than the longest");
    }
    assert_eq!(passed + kept.len(), data.len());
});
