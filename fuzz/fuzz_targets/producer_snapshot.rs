//! Untrusted `.producers` snapshot bytes -> `ProducerStates::decode_snapshot`.
//! No panic, no allocation sized by an unchecked count; an accepted snapshot
//! must re-encode to bytes that decode to the same state and offset.
//!
//! Input layout: `mode u8 | bytes...`. Mode even: `bytes` is the whole file.
//! Mode odd: `bytes` is a body after the magic and version, and the target
//! adds magic, version and a valid CRC-32C, so the fuzzer explores the
//! entry decoder instead of the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odradek_engine::producer::ProducerStates;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut b = b"ODPS\x01".to_vec();
        b.extend_from_slice(rest);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    };
    if let Ok((offset, state)) = ProducerStates::decode_snapshot(&file) {
        let again = state.encode_snapshot(offset);
        let (o2, s2) =
            ProducerStates::decode_snapshot(&again).expect("re-encoded snapshot decodes");
        assert_eq!(o2, offset);
        assert_eq!(s2, state);
        assert!(again.len() <= file.len(), "re-encoding grew the snapshot");
    }
});
