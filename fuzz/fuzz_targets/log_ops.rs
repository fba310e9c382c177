//! Model-based test of `PartitionLog` over `MemStorage`: a bounded sequence
//! of operations (append, read, flush, truncate, retention, offset for
//! timestamp, clean reopen, crash + recovery) runs against the log and
//! against a trivial model, a list of the batches appended with their
//! offsets and stored bytes. Small segments (4 KiB) make rolls, sealed
//! segments and their index files part of nearly every run.
//!
//! Checked after every step: log start/end agree with the model; reads
//! return exactly the model's bytes, starting at the batch holding the
//! offset; `truncate_to` removes exactly the tail; retention removes whole
//! batches from the front. After a crash the log end lies between the
//! durable end reported before the crash and the previous end, everything
//! below it has the model's bytes, and nothing else appears (the model is
//! then cut to the recovered end).
#![no_main]

use std::path::PathBuf;
use std::rc::Rc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use odradek_engine::batch::{assign, validate_all, BatchHeader, Strictness};
use odradek_engine::io::mem::{block_on, MemStorage};
use odradek_engine::io::Storage;
use odradek_engine::log::{FlushPolicy, LogConfig, PartitionLog};
use odradek_fuzz::BatchSpec;

#[derive(Debug, Arbitrary)]
enum Op {
    /// One record set of 1..=3 batches.
    Append {
        batches: Vec<BatchSpec>,
        epoch: u8,
    },
    /// Offset chosen as `log_start + off % (log_end - log_start + 2)`.
    Read {
        off: u16,
        max_bytes: u16,
    },
    Flush,
    Truncate {
        off: u16,
    },
    Retention {
        advance_ms: u16,
    },
    OffsetForTimestamp {
        ts_delta: i16,
    },
    Reopen,
    Crash {
        seed: u64,
    },
    /// `set_config` with another `index.interval.bytes` (Kafka allows changing it).
    SetIndexInterval {
        which: u8,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    flush: u8,
    index_interval: u8,
    retention: u8,
    ops: Vec<Op>,
}

const MAX_OPS: usize = 64;
const MAX_VALUE: usize = 2048;
const START_MS: u64 = 1_000_000;
const INTERVALS: [u32; 4] = [0, 256, 1024, 4096];

#[derive(Debug, Clone)]
struct ModelBatch {
    base: u64,
    last: u64,
    max_ts: i64,
    bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct Model {
    start: u64,
    batches: Vec<ModelBatch>,
    /// The log end when `batches` is empty (after a reset).
    empty_end: u64,
}

impl Model {
    fn end(&self) -> u64 {
        self.batches.last().map_or(self.empty_end, |b| b.last + 1)
    }
    /// Index of the first batch with `last >= offset`.
    fn holding(&self, offset: u64) -> usize {
        self.batches.partition_point(|b| b.last < offset)
    }
    /// Drop every batch at or after index `i`.
    fn cut(&mut self, i: usize) {
        if i < self.batches.len() {
            self.empty_end = self.batches[i].base;
            self.batches.truncate(i);
        }
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/data/topic-0")
}

fn open(storage: &MemStorage, cfg: &LogConfig) -> Rc<PartitionLog<MemStorage>> {
    block_on(PartitionLog::open(storage.clone(), dir(), cfg.clone()))
        .unwrap_or_else(|e| panic!("open failed over in-memory storage: {e}"))
        .0
}

fn check_bounds(log: &PartitionLog<MemStorage>, m: &Model, what: &str) {
    assert_eq!(log.log_end_offset(), m.end(), "log end after {what}");
    assert_eq!(log.log_start_offset(), m.start, "log start after {what}");
    assert!(
        log.durable_end_offset() <= log.log_end_offset(),
        "durable end past log end after {what}"
    );
}

/// `read_bytes(offset)` must return whole model batches, from the one holding `offset`.
fn check_read(log: &PartitionLog<MemStorage>, m: &Model, offset: u64, max_bytes: u64) {
    let got = block_on(log.read_bytes(offset, max_bytes));
    if offset < m.start || offset > m.end() {
        assert!(
            got.is_err(),
            "read({offset}) outside [{}, {}] succeeded",
            m.start,
            m.end()
        );
        return;
    }
    let got = got.unwrap_or_else(|e| panic!("read({offset}) failed: {e}"));
    let i = m.holding(offset);
    if i == m.batches.len() {
        assert!(got.is_empty(), "read at the log end returned data");
        return;
    }
    assert!(
        !got.is_empty(),
        "read({offset}) returned nothing below the log end"
    );
    let hs = validate_all(&got, usize::MAX, Strictness::Stored)
        .unwrap_or_else(|e| panic!("read({offset}) returned a bad batch: {e}"));
    let mut at = 0;
    for (k, h) in hs.iter().enumerate() {
        let mb = m
            .batches
            .get(i + k)
            .unwrap_or_else(|| panic!("read({offset}) returned a batch the model does not have"));
        assert_eq!(
            h.base_offset as u64, mb.base,
            "read({offset}) batch {k} offset"
        );
        assert_eq!(
            &got[at..at + h.size()],
            &mb.bytes[..],
            "read({offset}) batch {k} bytes"
        );
        at += h.size();
    }
    if hs.len() > 1 {
        assert!(
            got.len() as u64 <= max_bytes.max(hs[0].size() as u64),
            "read({offset}) exceeded max_bytes"
        );
    }
}

/// Read the whole log batch by batch and compare with the model.
fn check_all(log: &PartitionLog<MemStorage>, m: &Model) {
    let mut offset = m.start;
    for (i, mb) in m.batches.iter().enumerate() {
        let got = block_on(log.read_bytes(offset, 0))
            .unwrap_or_else(|e| panic!("read({offset}) failed: {e}"));
        assert_eq!(&got[..], &mb.bytes[..], "batch {i} at {} differs", mb.base);
        offset = mb.last + 1;
    }
    let tail = block_on(log.read_bytes(m.end(), 0)).expect("read at log end failed");
    assert!(tail.is_empty());
}

fuzz_target!(|input: Input| {
    let storage = MemStorage::new(START_MS);
    let cfg = LogConfig {
        segment_bytes: 4096,
        segment_ms: 60_000,
        retention_ms: (input.retention & 1 != 0).then_some(120_000),
        retention_bytes: (input.retention & 2 != 0).then_some(12 * 1024),
        index_interval_bytes: INTERVALS[input.index_interval as usize % 4],
        max_batch_bytes: 1_048_588,
        flush: match input.flush % 3 {
            0 => FlushPolicy::EVERY_APPEND,
            1 => FlushPolicy::every_bytes(8192),
            _ => FlushPolicy {
                every_append: false,
                every_bytes: None,
                every_ms: None,
                on_demand: false,
            },
        },
        ..LogConfig::default()
    };
    let mut cfg = cfg;
    let mut max_interval = cfg.index_interval_bytes;
    let mut log = open(&storage, &cfg);
    let mut m = Model::default();
    check_bounds(&log, &m, "open");

    for op in input.ops.iter().take(MAX_OPS) {
        match op {
            Op::Append { batches, epoch } => {
                let specs: Vec<_> = batches.iter().take(3).collect();
                if specs.is_empty() {
                    continue;
                }
                let now = storage.now_ms();
                let mut set = bytes::BytesMut::new();
                let mut raws = Vec::new();
                for s in &specs {
                    let b = s.build(now, MAX_VALUE / specs.len());
                    raws.push(b.clone());
                    set.extend_from_slice(&b);
                }
                let epoch = *epoch as i32;
                let end = m.end();
                let info = block_on(log.append(set, epoch))
                    .unwrap_or_else(|e| panic!("append failed: {e}"));
                assert_eq!(info.base_offset, end, "append base offset");
                let mut next = end;
                let mut max_ts = -1;
                for mut raw in raws {
                    assign(&mut raw, next as i64, epoch);
                    let h = BatchHeader::parse(&raw).unwrap();
                    max_ts = max_ts.max(h.max_timestamp);
                    m.batches.push(ModelBatch {
                        base: next,
                        last: h.last_offset() as u64,
                        max_ts: h.max_timestamp,
                        bytes: raw.to_vec(),
                    });
                    next = h.last_offset() as u64 + 1;
                }
                assert_eq!(info.last_offset, next - 1, "append last offset");
                assert_eq!(info.max_timestamp, max_ts, "append max timestamp");
                check_bounds(&log, &m, "append");
            }
            Op::Read { off, max_bytes } => {
                let span = m.end() - m.start + 2;
                let offset = m.start + *off as u64 % span;
                check_read(&log, &m, offset, *max_bytes as u64);
                if m.start > 0 {
                    check_read(&log, &m, m.start - 1, 0);
                }
            }
            Op::Flush => {
                let d = block_on(log.flush()).unwrap_or_else(|e| panic!("flush failed: {e}"));
                assert_eq!(d, m.end(), "flush returned durable end {d}");
                assert_eq!(log.durable_end_offset(), m.end());
            }
            Op::Truncate { off } => {
                let span = m.end() - m.start + 2;
                let offset = m.start + *off as u64 % span;
                let new_end = block_on(log.truncate_to(offset))
                    .unwrap_or_else(|e| panic!("truncate_to({offset}) failed: {e}"));
                if offset < m.end() {
                    let i = m.holding(offset);
                    if offset <= m.start {
                        // Truncating to the log start empties the log.
                        m.batches.clear();
                        m.empty_end = offset;
                        m.start = offset;
                    } else {
                        m.cut(i);
                    }
                }
                assert_eq!(
                    new_end,
                    m.end(),
                    "truncate_to({offset}) returned the wrong end"
                );
                check_bounds(&log, &m, "truncate");
                check_read(&log, &m, m.end(), 0);
            }
            Op::Retention { advance_ms } => {
                storage.advance_ms(*advance_ms as u64 * 4);
                let before = log.segment_count();
                let n = block_on(log.enforce_retention())
                    .unwrap_or_else(|e| panic!("retention failed: {e}"));
                assert_eq!(log.segment_count(), before - n);
                let start = log.log_start_offset();
                assert!(
                    start >= m.start && start <= m.end(),
                    "retention moved log start to {start}"
                );
                if start > m.start {
                    let i = m.holding(start);
                    assert!(
                        i == m.batches.len() || m.batches[i].base == start,
                        "retention cut inside a batch"
                    );
                    m.batches.drain(..i);
                    m.start = start;
                }
                check_bounds(&log, &m, "retention");
                if let Some(b) = m.batches.first() {
                    check_read(&log, &m, b.base, 0);
                }
            }
            Op::OffsetForTimestamp { ts_delta } => {
                let ts = storage.now_ms() as i64 + *ts_delta as i64;
                let expect = m
                    .batches
                    .iter()
                    .find(|b| b.max_ts >= ts)
                    .map(|b| (b.base.max(m.start), b.max_ts));
                let got = block_on(log.offset_for_timestamp(ts))
                    .unwrap_or_else(|e| panic!("offset_for_timestamp failed: {e}"));
                assert_eq!(got, expect, "offset_for_timestamp({ts})");
            }
            Op::Reopen => {
                block_on(log.close()).unwrap_or_else(|e| panic!("close failed: {e}"));
                drop(log);
                log = open(&storage, &cfg);
                check_bounds(&log, &m, "reopen");
                assert_eq!(log.durable_end_offset(), m.end());
                check_all(&log, &m);
            }
            Op::SetIndexInterval { which } => {
                let interval = INTERVALS[*which as usize % 4];
                max_interval = max_interval.max(interval);
                cfg.index_interval_bytes = interval;
                log.set_config(cfg.clone());
            }
            Op::Crash { seed } => {
                let durable = log.durable_end_offset();
                let end = m.end();
                drop(log);
                storage.crash(*seed);
                log = open(&storage, &cfg);
                let rec = log.log_end_offset();
                assert!(
                    rec >= durable && rec <= end,
                    "after crash log end {rec} is outside [durable {durable}, end {end}]"
                );
                let i = m.holding(rec);
                assert!(
                    i == m.batches.len() || m.batches[i].base == rec,
                    "recovered end {rec} is inside a batch"
                );
                m.cut(i);
                if m.batches.is_empty() && rec < m.start {
                    m.start = rec;
                }
                check_bounds(&log, &m, "crash recovery");
                check_all(&log, &m);
            }
        }
    }
    // Finally everything still reads back, also after a clean reopen.
    check_all(&log, &m);
    block_on(log.close()).expect("close failed");
    drop(log);
    let log = open(&storage, &cfg);
    check_bounds(&log, &m, "final reopen");
    check_all(&log, &m);
});
