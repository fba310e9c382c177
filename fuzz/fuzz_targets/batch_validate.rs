//! Untrusted RecordBatch v2 bytes -> `validate_all` / `validate` / `headers`
//! at both strictness levels. Whatever the bytes: no panic, and an accepted
//! record set must satisfy the invariants the log relies on.
//!
//! Input: byte 0 is a mode byte, the rest is the record set. Mode bit 0 asks
//! the harness to fix up the CRC of every batch-shaped chunk first (random
//! bytes almost never carry a correct CRC-32C, so without this the fuzzer
//! would rarely get past the CRC check to the count/compression checks).
//! Bits 1..=3 pick a `max_size`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odradek_engine::batch::{
    assign, headers, validate, validate_all, BatchHeader, Strictness, HEADER_LEN, LOG_OVERHEAD,
    MIN_BATCH_LENGTH,
};

const CRC_START: usize = 21;

/// Walk batch-shaped chunks and rewrite their CRC fields to match.
fn fix_crcs(b: &mut [u8]) {
    let mut at = 0usize;
    while let Ok(h) = BatchHeader::parse(&b[at..]) {
        if h.batch_length < MIN_BATCH_LENGTH as i32 || at + h.size() > b.len() {
            return;
        }
        let end = at + h.size();
        let crc = crc32c::crc32c(&b[at + CRC_START..end]);
        b[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

fn check_accepted(data: &[u8], max: usize, strict: Strictness, hs: &[BatchHeader]) {
    assert!(!hs.is_empty());
    let mut at = 0usize;
    for h in hs {
        let size = h.size();
        assert!(size >= HEADER_LEN, "accepted batch smaller than a header");
        assert!(size <= max, "accepted batch over max_size");
        assert_eq!(size, LOG_OVERHEAD + h.batch_length as usize);
        assert_eq!(h.magic, 2);
        assert!(h.compression() <= 4);
        assert!(h.last_offset_delta >= 0);
        assert!(h.last_offset() >= h.base_offset);
        assert!(h.record_count >= 0);
        assert!(h.record_count as i64 <= h.last_offset_delta as i64 + 1);
        if strict == Strictness::Produce {
            assert!(h.record_count > 0);
            assert_eq!(h.record_count as i64, h.last_offset_delta as i64 + 1);
        }
        // Each batch validates on its own, exactly bounded by its size.
        assert_eq!(validate(&data[at..at + size], max, strict).as_ref(), Ok(h));
        // ...and not if cut by one byte.
        assert!(validate(&data[at..at + size - 1], max, strict).is_err());
        // Offset/epoch assignment stays outside the CRC.
        let mut copy = data[at..at + size].to_vec();
        assign(&mut copy, 0x1234_5678, 7);
        let h2 = validate(&copy, max, strict).expect("assign broke a valid batch");
        assert_eq!(h2.base_offset, 0x1234_5678);
        assert_eq!(h2.partition_leader_epoch, 7);
        assert_eq!(h2.crc, h.crc);
        at += size;
    }
    assert_eq!(
        at,
        data.len(),
        "batch sizes do not sum to the record set length"
    );
    // The CRC-free header walk sees the same batches.
    let walked: Vec<_> = headers(data).collect();
    assert_eq!(walked.len(), hs.len());
    let mut pos = 0usize;
    for ((p, w), h) in walked.iter().zip(hs) {
        assert_eq!(*p, pos);
        assert_eq!(w, h);
        pos += h.size();
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut data = rest.to_vec();
    if mode & 1 != 0 {
        fix_crcs(&mut data);
    }
    let max = match (mode >> 1) & 7 {
        0 => usize::MAX,
        1 => 1_048_588,
        2 => HEADER_LEN,
        3 => HEADER_LEN + 16,
        4 => 256,
        5 => 4096,
        6 => data.len(),
        _ => data.len().saturating_sub(1),
    };

    // The header walk never panics and yields in-bounds, contiguous batches.
    let mut pos = 0usize;
    for (p, h) in headers(&data) {
        assert_eq!(p, pos);
        assert!(h.batch_length >= MIN_BATCH_LENGTH as i32);
        pos += h.size();
        assert!(pos <= data.len());
    }

    let produce = validate_all(&data, max, Strictness::Produce);
    let stored = validate_all(&data, max, Strictness::Stored);
    if let Ok(hs) = &produce {
        check_accepted(&data, max, Strictness::Produce, hs);
        // Produce is the stricter level.
        assert_eq!(stored.as_ref(), Ok(hs));
    }
    if let Ok(hs) = &stored {
        check_accepted(&data, max, Strictness::Stored, hs);
    }
    if data.is_empty() {
        assert!(produce.is_err() && stored.is_err());
    }
    // A single-batch validate agrees with the first batch of the set.
    for strict in [Strictness::Produce, Strictness::Stored] {
        if let Ok(h) = validate(&data, max, strict) {
            assert!(h.size() <= data.len());
            assert!(h.size() <= max);
            if let Ok(hs) = validate_all(&data, max, strict) {
                assert_eq!(hs[0], h);
            }
        }
    }
});
