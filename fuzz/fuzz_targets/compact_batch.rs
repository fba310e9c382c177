//! Compaction's pure rules on arbitrary stored batches: the record decoder,
//! the capped codecs, the key map and per-batch cleaning never panic, and a
//! rewritten batch is valid, keeps its offsets and header fields, and holds
//! only records of the original.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odradek_engine::batch::{self, BatchHeader, Strictness};
use odradek_engine::codec;
use odradek_engine::compact::{self, CleanOptions, Cleaned, KeyMap};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let cap = 64 * 1024;
    let mut b = rest.to_vec();
    // Mode bit 0: fix the CRC so the fuzzer gets past it; bits 1-3: codec
    // to decompress the tail with directly.
    if mode & 1 == 1 && b.len() >= batch::HEADER_LEN {
        if let Ok(h) = BatchHeader::parse(&b) {
            if h.batch_length >= batch::MIN_BATCH_LENGTH as i32 && h.size() <= b.len() {
                b.truncate(h.size());
                batch::set_crc(&mut b);
            }
        }
    }
    let _ = codec::decompress(((mode >> 1) & 7) as i16, rest, cap);
    let _ = batch::decode_records(rest, 3);
    let _ = compact::check_keys(&b, cap);
    let Ok(h) = batch::validate(&b, usize::MAX, Strictness::Stored) else {
        return;
    };
    let b = &b[..h.size()];
    let mut map = KeyMap::new();
    let observed = map.observe(b, cap).is_ok();
    let opts = CleanOptions {
        now_ms: u64::from(mode) * 1000,
        delete_retention_ms: 100,
        decompress_cap: cap,
    };
    let Ok(verdict) = compact::clean_batch(b, &map, &opts) else {
        return;
    };
    assert!(observed, "a batch pass 2 can read, pass 1 could read");
    if h.is_control() {
        // Control batches are kept whole without looking at their records.
        assert_eq!(verdict.outcome, Cleaned::Keep);
        return;
    }
    let before = compact::batch_contents(b, cap).expect("decodable");
    match verdict.outcome {
        Cleaned::Keep => assert_eq!(verdict.removed, 0),
        Cleaned::Drop => assert_eq!(verdict.removed, before.len()),
        Cleaned::Rewrite(out) => {
            let n = batch::validate(&out, usize::MAX, Strictness::Stored).expect("valid rewrite");
            assert_eq!(n.size(), out.len());
            assert_eq!(n.base_offset, h.base_offset);
            assert_eq!(n.last_offset_delta, h.last_offset_delta);
            assert_eq!(
                (n.producer_id, n.producer_epoch, n.base_sequence),
                (h.producer_id, h.producer_epoch, h.base_sequence)
            );
            assert_eq!(
                (n.base_timestamp, n.max_timestamp),
                (h.base_timestamp, h.max_timestamp)
            );
            let after = compact::batch_contents(&out, cap).expect("rewrite decodes");
            assert_eq!(after.len() + verdict.removed, before.len());
            for r in &after {
                assert!(before.contains(r));
                assert!(r.1.is_some(), "keyless records never survive");
            }
        }
    }
});
