//! Recovery of a partition directory from untrusted segment files.
//!
//! The fuzzer describes one or two segments. Each is a prefix of valid,
//! offset-assigned batches (built with `BatchBuilder`, so the fuzzer starts
//! deep inside the format) followed by an arbitrary tail, optionally with one
//! byte of the whole file flipped; the first segment (when a second follows)
//! can get no index files, the index files a roll would have written
//! (optionally torn at an entry boundary), or arbitrary bytes. The files are
//! put into a `MemStorage` and `PartitionLog::open` recovers them.
//!
//! Always checked: no panic, `open` succeeds, an append after recovery works
//! and reads back byte for byte, and a clean reopen keeps it.
//! Checked unless a non-last segment carries both index files and corrupted
//! data (the engine trusts a sealed segment whose indexes agree with it; see
//! docs/fuzzing.md): reading every offset from the log start to the log end
//! returns whole batches that validate (`Strictness::Stored`) with strictly
//! increasing offsets; every batch that was written before the first
//! corruption is still there with identical bytes; `offset_for_timestamp`
//! agrees with a scan of what was read; and a second open finds the same log.
#![no_main]

use std::path::PathBuf;
use std::rc::Rc;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use odradek_engine::batch::{assign, sample_batch, validate_all, BatchHeader, Strictness};
use odradek_engine::io::mem::{block_on, MemStorage};
use odradek_engine::log::{FlushPolicy, LogConfig, PartitionLog};
use odradek_engine::segment::{file_name, scan_bytes, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use odradek_fuzz::BatchSpec;

#[derive(Debug, Arbitrary)]
enum IndexFiles {
    None,
    /// What a roll writes; `keep` > 0 keeps only the first `keep - 1` offset index entries.
    Computed {
        keep: u8,
    },
    Raw {
        index: Vec<u8>,
        time_index: Vec<u8>,
    },
}

#[derive(Debug, Arbitrary)]
struct SegmentSpec {
    /// (batch, offset gap before it: compaction leaves holes).
    batches: Vec<(BatchSpec, u8)>,
    tail: Vec<u8>,
    /// Flip bits of one byte: (position modulo file length, xor mask).
    flip: Option<(u16, u8)>,
    index: IndexFiles,
}

#[derive(Debug, Arbitrary)]
struct Input {
    first_base: u16,
    first: SegmentSpec,
    /// Second segment: its base relative to the first one's end offset
    /// (at least `first_base + 1`; below the end it overlaps the first).
    second: Option<(i8, SegmentSpec)>,
    index_interval: u16,
    read_max_bytes: u16,
    ts_probe: i16,
}

const MAX_BATCHES: usize = 12;
const MAX_VALUE: usize = 300;
const NOW: u64 = 1_000_000;

struct Built {
    bytes: Vec<u8>,
    /// (base offset, end position, bytes) of each valid batch written.
    batches: Vec<(u64, usize, Vec<u8>)>,
    end_offset: u64,
    /// Length of the prefix known to be clean (before any flipped byte / tail).
    clean_len: usize,
}

fn build(base: u64, spec: &SegmentSpec) -> Built {
    let mut bytes = Vec::new();
    let mut batches = Vec::new();
    let mut next = base;
    for (b, gap) in spec.batches.iter().take(MAX_BATCHES) {
        next += (*gap % 4) as u64;
        let mut raw = b.build(NOW, MAX_VALUE);
        assign(&mut raw, next as i64, 3);
        let h = BatchHeader::parse(&raw).unwrap();
        bytes.extend_from_slice(&raw);
        batches.push((next, bytes.len(), raw.to_vec()));
        next = h.last_offset() as u64 + 1;
    }
    let mut clean_len = bytes.len();
    bytes.extend_from_slice(&spec.tail[..spec.tail.len().min(4096)]);
    if let Some((at, mask)) = spec.flip {
        if mask != 0 && !bytes.is_empty() {
            let at = at as usize % bytes.len();
            bytes[at] ^= mask;
            clean_len = clean_len.min(at);
        }
    }
    Built {
        bytes,
        batches,
        end_offset: next,
        clean_len,
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/data/topic-0")
}

fn put(storage: &MemStorage, base: u64, suffix: &str, bytes: Vec<u8>) {
    storage.put_file(&dir().join(file_name(base, suffix)), bytes);
}

fn config(index_interval: u16) -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: index_interval as u32 % 2048,
        retention_ms: None,
        flush: FlushPolicy::EVERY_APPEND,
        ..LogConfig::default()
    }
}

fn open(storage: &MemStorage, cfg: &LogConfig) -> Rc<PartitionLog<MemStorage>> {
    let (log, _report) = block_on(PartitionLog::open(storage.clone(), dir(), cfg.clone()))
        .unwrap_or_else(|e| panic!("open failed over in-memory storage: {e}"));
    log
}

/// Read every batch from the log start to the log end.
/// `false` with what was read so far if it had to give up at a huge hole.
fn read_all(log: &PartitionLog<MemStorage>, max_bytes: u64) -> (Vec<(BatchHeader, Bytes)>, bool) {
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    assert!(start <= end, "log start {start} after log end {end}");
    let mut out: Vec<(BatchHeader, Bytes)> = Vec::new();
    let mut offset = start;
    while offset < end {
        let got = match block_on(log.read_bytes(offset, max_bytes)) {
            Ok(got) => got,
            Err(e) => panic!("read({offset}) in [{start}, {end}) failed: {e}"),
        };
        if got.is_empty() {
            // Only a hole that runs to the log end (nothing but an empty
            // active segment after it) may read as nothing.
            assert_eq!(
                log.segment_bases().last(),
                Some(&end),
                "read({offset}) in [{start}, {end}) returned nothing"
            );
            break;
        }
        let hs = validate_all(&got, usize::MAX, Strictness::Stored)
            .unwrap_or_else(|e| panic!("read({offset}) returned a bad batch: {e}"));
        assert!(
            hs[0].last_offset() as u64 >= offset,
            "read({offset}) started before the offset"
        );
        let mut at = 0;
        for h in hs {
            if let Some((p, _)) = out.last() {
                assert!(h.base_offset > p.last_offset(), "offsets do not increase");
            }
            assert!((h.last_offset() as u64) < end, "batch past the log end");
            out.push((h, got.slice(at..at + h.size())));
            at += h.size();
        }
        offset = out.last().unwrap().0.last_offset() as u64 + 1;
    }
    (out, true)
}

fuzz_target!(|input: Input| {
    let storage = MemStorage::new(NOW);
    let base1 = input.first_base as u64;
    let first = build(base1, &input.first);
    let second = input.second.as_ref().map(|(shift, spec)| {
        let base = first
            .end_offset
            .saturating_add_signed(*shift as i64)
            .max(base1 + 1);
        (base, build(base, spec))
    });
    put(&storage, base1, LOG_SUFFIX, first.bytes.clone());
    let first_corrupt = first.clean_len < first.bytes.len();
    let mut trusting = false;
    if let Some((base2, s)) = &second {
        put(&storage, *base2, LOG_SUFFIX, s.bytes.clone());
        match &input.first.index {
            IndexFiles::None => {}
            IndexFiles::Computed { keep } => {
                // What `roll` writes for a sealed segment.
                let (mut seg, _) =
                    scan_bytes(base1, &first.bytes, input.index_interval as u32 % 2048);
                seg.seal();
                let mut ix = seg.index.encode();
                if *keep > 0 {
                    ix.truncate(8 * (*keep as usize - 1));
                }
                put(&storage, base1, INDEX_SUFFIX, ix);
                put(&storage, base1, TIME_INDEX_SUFFIX, seg.time_index.encode());
                trusting = first_corrupt;
            }
            IndexFiles::Raw { index, time_index } => {
                put(&storage, base1, INDEX_SUFFIX, index.clone());
                put(&storage, base1, TIME_INDEX_SUFFIX, time_index.clone());
                trusting = true;
            }
        }
    }

    let cfg = config(input.index_interval);
    let log = open(&storage, &cfg);
    let max_bytes = input.read_max_bytes as u64;

    if !trusting {
        let (got, complete) = read_all(&log, max_bytes);
        // Every batch written before the first corruption survives, intact.
        let mut must: Vec<&(u64, usize, Vec<u8>)> = first
            .batches
            .iter()
            .filter(|b| b.1 <= first.clean_len)
            .collect();
        if let Some((base2, s)) = &second {
            if !first_corrupt && *base2 >= first.end_offset {
                must.extend(s.batches.iter().filter(|b| b.1 <= s.clean_len));
            }
        }
        for (off, _, bytes) in must {
            let found = got.iter().find(|(h, _)| h.base_offset as u64 == *off);
            let (_, b) =
                found.unwrap_or_else(|| panic!("clean batch at offset {off} lost by recovery"));
            assert_eq!(&b[..], &bytes[..], "batch at {off} changed by recovery");
        }
        // Timestamp lookup agrees with a scan of what is there.
        let ts = NOW as i64 + input.ts_probe as i64;
        let expect = got
            .iter()
            .find(|(h, _)| h.max_timestamp >= ts)
            .map(|(h, _)| {
                (
                    (h.base_offset as u64).max(log.log_start_offset()),
                    h.max_timestamp,
                )
            });
        let found = block_on(log.offset_for_timestamp(ts)).expect("offset_for_timestamp failed");
        if complete {
            assert_eq!(found, expect, "offset_for_timestamp({ts})");
        }
        // Recovery is idempotent: a second open sees the same log.
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        drop(log);
        let log2 = open(&storage, &cfg);
        assert_eq!(
            (log2.log_start_offset(), log2.log_end_offset()),
            (start, end)
        );
        let (again, _) = read_all(&log2, max_bytes);
        assert_eq!(again.len(), got.len());
        for (a, b) in again.iter().zip(&got) {
            assert_eq!(a.1, b.1, "second recovery changed a batch");
        }
        drop(log2);
    } else {
        drop(log);
    }

    // After recovery the log takes appends and reads them back, also after a clean reopen.
    let log = open(&storage, &cfg);
    let end = log.log_end_offset();
    let batch = sample_batch(3, 20, NOW as i64);
    let info = block_on(log.append(batch.clone(), 5)).expect("append after recovery failed");
    assert_eq!(info.base_offset, end);
    assert_eq!(info.last_offset, end + 2);
    assert_eq!(log.log_end_offset(), end + 3);
    let mut expect = batch.clone();
    assign(&mut expect, end as i64, 5);
    let got = block_on(log.read_bytes(end, 0)).expect("read after append failed");
    assert_eq!(&got[..], &expect[..], "appended batch does not read back");
    block_on(log.close()).expect("close failed");
    drop(log);
    let log = open(&storage, &cfg);
    assert_eq!(
        log.log_end_offset(),
        end + 3,
        "clean reopen lost the append"
    );
    let got = block_on(log.read_bytes(end, 0)).expect("read after reopen failed");
    assert_eq!(&got[..], &expect[..], "appended batch changed by reopen");
});
