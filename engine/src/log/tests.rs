//! Partition log tests over in-memory storage: behaviour, and a model-based
//! property test with simulated crashes.

use std::path::Path;
use std::rc::Rc;

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::batch::{sample_batch, validate, Strictness};
use crate::io::mem::{block_on, MemStorage};
use crate::io::Storage;
use crate::producer::ProducerError;
use crate::segment::PRODUCER_SNAPSHOT_SUFFIX;

const DIR: &str = "/data/t-0";

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn open(s: &MemStorage, c: LogConfig) -> (Rc<PartitionLog<MemStorage>>, RecoveryReport) {
    block_on(PartitionLog::open(s.clone(), DIR, c)).unwrap()
}

fn batch(records: usize, value_len: usize, ts: i64) -> BytesMut {
    sample_batch(records, value_len, ts)
}

#[test]
fn append_assigns_offsets_and_reads_return_whole_batches() {
    let s = MemStorage::new(1_000);
    let (log, _) = open(&s, small_config());
    let a = block_on(log.append(batch(3, 10, 100), 7)).unwrap();
    let b = block_on(log.append(batch(2, 10, 200), 7)).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (0, 2));
    assert_eq!((b.base_offset, b.last_offset), (3, 4));
    assert_eq!(log.log_end_offset(), 5);
    // Reading from inside the first batch returns it whole.
    let bytes = block_on(log.read_bytes(1, 1)).unwrap();
    let h = validate(&bytes, usize::MAX, Strictness::Produce).unwrap();
    assert_eq!(h.base_offset, 0);
    assert_eq!(h.partition_leader_epoch, 7);
    assert_eq!(bytes.len(), h.size());
    // A large limit returns both.
    let both = block_on(log.read_bytes(0, 1 << 20)).unwrap();
    assert_eq!(crate::batch::headers(&both).count(), 2);
    assert!(block_on(log.read(5, 100)).unwrap().is_none());
    assert!(matches!(
        block_on(log.read(6, 100)),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn submitted_sets_keep_submission_order_whatever_order_they_are_awaited_in() {
    let s = MemStorage::new(1_000);
    let (log, _) = open(&s, small_config());
    // Queued one after the other, nothing awaited yet; a refused set takes
    // no place in the queue.
    let a = log.submit(batch(3, 10, 100), 0).unwrap();
    let mut bad = batch(1, 10, 0);
    bad[40] ^= 0xff;
    assert!(matches!(log.submit(bad, 0), Err(LogError::InvalidBatch(_))));
    let b = log.submit(batch(2, 10, 200), 0).unwrap();
    let c = log.submit(batch(1, 10, 300), 0).unwrap();
    let c = block_on(c).unwrap();
    let a = block_on(a).unwrap();
    let b = block_on(b).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (0, 2));
    assert_eq!((b.base_offset, b.last_offset), (3, 4));
    assert_eq!((c.base_offset, c.last_offset), (5, 5));
    let all = block_on(log.read_bytes(0, 1 << 20)).unwrap();
    let times: Vec<i64> = crate::batch::headers(&all)
        .map(|(_, h)| h.base_timestamp)
        .collect();
    assert_eq!(times, [100, 200, 300]);
}

#[test]
fn invalid_batches_are_refused_and_change_nothing() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, small_config());
    let mut bad = batch(1, 10, 0);
    bad[40] ^= 0xff;
    assert!(matches!(
        block_on(log.append(bad, 0)),
        Err(LogError::InvalidBatch(_))
    ));
    let big = batch(1, 2_000_000, 0);
    assert!(block_on(log.append(big, 0)).is_err());
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn segments_roll_by_size_and_age_and_reads_cross_them() {
    let s = MemStorage::new(0);
    let mut c = small_config();
    c.segment_ms = 60_000;
    let (log, _) = open(&s, c);
    for i in 0..20 {
        block_on(log.append(batch(2, 400, i), 0)).unwrap();
    }
    let n = log.segment_count();
    assert!(n > 3, "expected several segments, got {n}");
    s.advance_ms(60_000);
    block_on(log.append(batch(1, 10, 99), 0)).unwrap();
    assert_eq!(log.segment_count(), n + 1);
    // Sealed segments have index files; every offset is readable.
    let bases = log.segment_bases();
    assert!(s
        .file_bytes(&Path::new(DIR).join(segment::file_name(bases[0], INDEX_SUFFIX)))
        .is_some());
    for off in 0..log.log_end_offset() {
        let b = block_on(log.read_bytes(off, 1)).unwrap();
        let h = validate(&b, usize::MAX, Strictness::Stored).unwrap();
        assert!(h.base_offset as u64 <= off && off <= h.last_offset() as u64);
    }
}

#[test]
fn timestamp_lookup_finds_first_batch_at_or_after() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, small_config());
    for i in 0..30i64 {
        block_on(log.append(batch(1, 300, 1000 + i * 10), 0)).unwrap();
    }
    assert_eq!(
        block_on(log.offset_for_timestamp(0)).unwrap(),
        Some((0, 1000))
    );
    assert_eq!(
        block_on(log.offset_for_timestamp(1055)).unwrap(),
        Some((6, 1060))
    );
    assert_eq!(
        block_on(log.offset_for_timestamp(1290)).unwrap(),
        Some((29, 1290))
    );
    assert_eq!(block_on(log.offset_for_timestamp(1291)).unwrap(), None);
    assert_eq!(
        block_on(log.max_timestamp_offset()).unwrap(),
        Some((29, 1290))
    );
}

#[test]
fn retention_deletes_whole_old_segments_never_the_active_one() {
    let s = MemStorage::new(1_000_000);
    let mut c = small_config();
    c.retention_bytes = Some(8192);
    let (log, _) = open(&s, c.clone());
    for _ in 0..40 {
        block_on(log.append(batch(1, 900, 1_000_000), 0)).unwrap();
    }
    let before = log.segment_count();
    let deleted = block_on(log.enforce_retention()).unwrap();
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), before - deleted);
    assert!(log.size_bytes() >= 8192 - 4096 && log.size_bytes() <= 8192 + 4096);
    assert!(log.log_start_offset() > 0);
    let start = log.log_start_offset();
    assert!(block_on(log.read(start - 1, 10)).is_err());
    assert!(block_on(log.read(start, 10)).unwrap().is_some());
    // By age: everything but the active segment goes.
    c.retention_bytes = None;
    c.retention_ms = Some(1000);
    log.set_config(c);
    s.advance_ms(10_000);
    block_on(log.enforce_retention()).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_end_offset(), 40);
}

#[test]
fn truncate_cuts_at_batch_start_and_appends_continue() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, small_config());
    for i in 0..20 {
        block_on(log.append(batch(3, 300, i), 0)).unwrap();
    }
    // Offset 31 is inside the batch 30..=32: the log ends at 30.
    assert_eq!(block_on(log.truncate_to(31)).unwrap(), 30);
    assert_eq!(log.log_end_offset(), 30);
    let a = block_on(log.append(batch(1, 10, 5), 1)).unwrap();
    assert_eq!(a.base_offset, 30);
    // Truncating to a segment boundary drops whole segments.
    let bases = log.segment_bases();
    let b = bases[1];
    assert_eq!(block_on(log.truncate_to(b)).unwrap(), b);
    assert_eq!(log.segment_bases().last().copied(), Some(bases[0]));
    // And everything survives a reopen.
    block_on(log.close()).unwrap();
    let (log2, rep) = open(&s, small_config());
    assert_eq!(log2.log_end_offset(), b);
    assert_eq!(rep.truncated_bytes, 0);
    assert_eq!(block_on(log2.truncate_to(0)).unwrap(), 0);
    assert_eq!(log2.log_end_offset(), 0);
    assert_eq!(
        block_on(log2.append(batch(1, 1, 1), 0))
            .unwrap()
            .base_offset,
        0
    );
}

#[test]
fn recovery_cuts_a_corrupt_tail_and_rebuilds_indexes() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, small_config());
    for i in 0..20 {
        block_on(log.append(batch(2, 300, i), 0)).unwrap();
    }
    block_on(log.close()).unwrap();
    let bases = log.segment_bases();
    let end = log.log_end_offset();
    drop(log);
    // Garbage after the active segment's last batch, and a bad index file.
    let active = Path::new(DIR).join(segment::file_name(*bases.last().unwrap(), LOG_SUFFIX));
    let mut bytes = s.file_bytes(&active).unwrap();
    bytes.extend_from_slice(&[0x42; 100]);
    s.put_file(&active, bytes);
    let ix = Path::new(DIR).join(segment::file_name(bases[0], INDEX_SUFFIX));
    s.put_file(&ix, vec![1, 2, 3]);
    let (log, rep) = open(&s, small_config());
    assert_eq!(rep.truncated_bytes, 100);
    assert_eq!(rep.rebuilt_indexes, 1);
    assert!(rep.reason.is_some());
    assert_eq!(log.log_end_offset(), end);
    for off in 0..end {
        assert!(block_on(log.read(off, 1)).unwrap().is_some());
    }
    // The rebuilt index was written back: a second open trusts it.
    drop(log);
    let (_, rep) = open(&s, small_config());
    assert_eq!(rep.rebuilt_indexes, 0);
    assert_eq!(rep.truncated_bytes, 0);
}

#[test]
fn corrupt_middle_segment_drops_what_follows() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, small_config());
    for i in 0..30 {
        block_on(log.append(batch(1, 500, i), 0)).unwrap();
    }
    block_on(log.close()).unwrap();
    let bases = log.segment_bases();
    assert!(bases.len() >= 4);
    drop(log);
    // Flip a byte in segment 1 and remove its index so it gets scanned.
    let p = Path::new(DIR).join(segment::file_name(bases[1], LOG_SUFFIX));
    let mut b = s.file_bytes(&p).unwrap();
    let mid = b.len() / 2 + 30;
    b[mid] ^= 1;
    s.put_file(&p, b);
    s.put_file(
        &Path::new(DIR).join(segment::file_name(bases[1], INDEX_SUFFIX)),
        vec![],
    );
    let (log, rep) = open(&s, small_config());
    assert_eq!(rep.dropped_segments, bases.len() - 2);
    assert!(rep.truncated_bytes > 0);
    assert_eq!(log.segment_bases(), bases[..2].to_vec());
    assert!(log.log_end_offset() < bases[2]);
}

#[test]
fn group_commit_shares_fsyncs_and_reports_durability() {
    let s = MemStorage::new(0);
    let mut c = small_config();
    c.flush = FlushPolicy::every_bytes(1 << 30);
    c.segment_bytes = 1 << 20;
    let (log, _) = open(&s, c);
    let before = s.sync_count();
    for i in 0..10 {
        block_on(log.append(batch(1, 10, i), 0)).unwrap();
    }
    assert_eq!(s.sync_count(), before, "no flush due yet");
    assert_eq!(log.durable_end_offset(), 0);
    assert_eq!(block_on(log.flush()).unwrap(), 10);
    assert_eq!(s.sync_count(), before + 1, "one fdatasync covers all ten");
    assert_eq!(block_on(log.wait_durable(9)).unwrap(), 10);
    // Time policy: flush happens on tick once the interval passed.
    let mut c = log.config();
    c.flush = FlushPolicy::every_ms(100);
    log.set_config(c);
    block_on(log.append(batch(1, 10, 0), 0)).unwrap();
    log.tick();
    assert_eq!(log.durable_end_offset(), 10);
    s.advance_ms(100);
    log.tick();
    assert_eq!(log.durable_end_offset(), 11);
}

#[test]
fn no_policy_leaves_more_than_the_cap_unsynced() {
    // Kafka's default leaves syncing to the OS; here that would leave a
    // roll a whole segment to sync while appends wait.
    let s = MemStorage::new(0);
    let mut c = small_config();
    c.segment_bytes = 1 << 30;
    c.flush = FlushPolicy {
        every_append: false,
        every_bytes: None,
        every_ms: None,
        on_demand: true,
    };
    let (log, _) = open(&s, c);
    let before = s.sync_count();
    let big = batch(1000, 1000, 0);
    let per_cap = state::MAX_UNSYNCED_BYTES as usize / big.len();
    for _ in 0..per_cap - 1 {
        block_on(log.append(big.clone(), 0)).unwrap();
    }
    log.tick();
    assert_eq!(s.sync_count(), before, "below the cap: no fdatasync");
    for _ in 0..2 {
        block_on(log.append(big.clone(), 0)).unwrap();
    }
    block_on(log.seal_done());
    assert!(s.sync_count() > before, "the cap flushed");
    assert!(log.durable_end_offset() >= (per_cap as u64 - 1) * 1000);
}

#[test]
fn default_policy_syncs_on_demand_and_in_the_background() {
    // The default: acks=1-style appends pay no fdatasync; a waiter
    // (acks=all) gets one at once, covering what was appended before it;
    // unwaited data is synced by the 100 ms timer; and what a waiter was
    // told is durable survives a crash that drops every unsynced byte.
    assert_eq!(LogConfig::default().flush, FlushPolicy::DEFAULT);
    let s = MemStorage::new(0);
    let mut c = small_config();
    c.segment_bytes = 64 << 20;
    let (log, _) = open(&s, c.clone());
    let before = s.sync_count();
    for i in 0..5 {
        block_on(log.append(batch(1, 10, i), 0)).unwrap();
    }
    log.tick();
    assert_eq!(s.sync_count(), before, "no waiter, no timer: no fdatasync");
    assert_eq!(log.durable_end_offset(), 0);
    // An acks=all waiter for offset 3 starts one flush covering all five.
    assert_eq!(block_on(log.wait_durable(3)).unwrap(), 5);
    assert_eq!(s.sync_count(), before + 1);
    // Unwaited appends become durable once the interval passed.
    block_on(log.append(batch(2, 10, 9), 0)).unwrap();
    log.tick();
    assert_eq!(log.durable_end_offset(), 5);
    s.advance_ms(100);
    log.tick();
    assert_eq!(log.durable_end_offset(), 7);
    // ... or once the byte threshold is unsynced, without a tick.
    let synced = s.sync_count();
    let big = batch(1000, 1000, 10);
    let threshold = FlushPolicy::DEFAULT.every_bytes.unwrap() as usize;
    for _ in 0..(threshold / big.len() + 1) {
        block_on(log.append(big.clone(), 0)).unwrap();
    }
    assert!(s.sync_count() > synced, "the byte threshold flushed");
    // Acknowledged-durable data survives a crash; the unwaited tail may not.
    let acked = block_on(log.append(batch(1, 10, 11), 0)).unwrap();
    let durable = block_on(log.wait_durable(acked.last_offset)).unwrap();
    assert!(durable > acked.last_offset);
    block_on(log.append(batch(1, 10, 12), 0)).unwrap();
    drop(log);
    s.crash(7);
    let (log, _) = open(&s, c);
    assert!(
        log.log_end_offset() >= durable,
        "an acknowledged batch was lost"
    );
    let last = block_on(log.read_bytes(acked.base_offset, 1 << 20)).unwrap();
    let h = validate(&last, usize::MAX, Strictness::Produce).unwrap();
    assert_eq!(h.base_offset as u64, acked.base_offset);
}

fn segment_path(base: u64) -> std::path::PathBuf {
    Path::new(DIR).join(crate::segment::file_name(base, crate::segment::LOG_SUFFIX))
}

#[test]
fn durable_bytes_behind_the_cache_window_leave_the_page_cache() {
    // 4 MiB window, 8 MiB segments, 1 MiB flushes, 24 MiB written: the
    // newest 4 MiB (plus the 2 MiB alignment) stay cached, everything
    // durable behind them is dropped, sealed segments whole.
    let s = MemStorage::new(0);
    let window = 4u64 << 20;
    let c = LogConfig {
        segment_bytes: 8 << 20,
        retention_ms: None,
        ..LogConfig::default()
    };
    let (log, _) = open(&s, c);
    log.set_cache_window(Some(window));
    let big = batch(60, 1000, 1);
    let mut written = 0u64;
    let mut since_flush = 0u64;
    while written < 24 << 20 {
        block_on(log.append(big.clone(), 0)).unwrap();
        written += big.len() as u64;
        since_flush += big.len() as u64;
        if since_flush >= 1 << 20 {
            block_on(log.flush()).unwrap();
            since_flush = 0;
            let cached: u64 = log
                .segment_bases()
                .iter()
                .map(|&b| s.cached_bytes(&segment_path(b)).unwrap())
                .sum();
            assert!(
                cached <= window + (2 << 20) + 4096,
                "{cached} bytes cached after {written} written"
            );
            assert!(
                cached >= window.min(written) - 8192,
                "the window itself stays cached"
            );
        }
    }
    let bases = log.segment_bases();
    assert!(bases.len() >= 3, "rolled: {bases:?}");
    // Every segment but the newest two lies wholly behind the window.
    for &b in &bases[..bases.len() - 2] {
        assert_eq!(s.cached_bytes(&segment_path(b)), Some(0), "segment {b}");
    }
    // Nothing is lost by dropping: every batch reads back.
    let mut off = 0;
    while off < log.log_end_offset() {
        let bytes = block_on(log.read_bytes(off, 1 << 20)).unwrap();
        let last = crate::batch::headers(&bytes).last().unwrap();
        off = last.1.last_offset() as u64 + 1;
    }
    assert_eq!(off, log.log_end_offset());

    // Without a window everything stays cached.
    let s = MemStorage::new(0);
    let (log, _) = open(&s, small_config());
    for _ in 0..20 {
        block_on(log.append(batch(3, 100, 1), 0)).unwrap();
        block_on(log.flush()).unwrap();
    }
    let total: u64 = log
        .segment_bases()
        .iter()
        .map(|&b| s.cached_bytes(&segment_path(b)).unwrap())
        .sum();
    assert!(total >= log.size_bytes(), "{total} < {}", log.size_bytes());
}

#[test]
fn appends_reserve_blocks_ahead_and_a_roll_gives_back_the_rest() {
    let s = MemStorage::new(0);
    let c = LogConfig {
        segment_bytes: 8 << 20,
        retention_ms: None,
        ..LogConfig::default()
    };
    let (log, _) = open(&s, c);
    let big = batch(60, 1000, 1);
    let mut rolled = false;
    while !rolled {
        block_on(log.append(big.clone(), 0)).unwrap();
        let bases = log.segment_bases();
        let active = *bases.last().unwrap();
        let size = s.file_bytes(&segment_path(active)).unwrap().len() as u64;
        let reserved = s.reserved_end(&segment_path(active)).unwrap();
        assert!(reserved >= size, "an append wrote past its reservation");
        assert!(
            reserved - size <= (16 << 20) + (1 << 20),
            "reserved {reserved} for {size} bytes"
        );
        if bases.len() > 1 {
            rolled = true;
            let old = bases[0];
            let len = s.file_bytes(&segment_path(old)).unwrap().len() as u64;
            assert_eq!(
                s.reserved_end(&segment_path(old)),
                Some(len),
                "sealed segment keeps reserved blocks"
            );
        }
    }
}

#[test]
fn deleted_partition_is_gone_and_refuses_writes() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, small_config());
    block_on(log.append(batch(1, 10, 0), 0)).unwrap();
    block_on(log.delete()).unwrap();
    assert!(block_on(log.append(batch(1, 10, 0), 0)).is_err());
    assert!(s
        .file_bytes(&Path::new(DIR).join(segment::file_name(0, LOG_SUFFIX)))
        .is_none());
}

/// Operations of the model test.
#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, value_len: usize },
    Read { pick: usize, max: u64 },
    Flush,
    Truncate { pick: usize },
    Retention { advance: u64 },
    Reopen,
    Crash { seed: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..5, 0usize..700).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        3 => (any::<usize>(), 1u64..3000).prop_map(|(pick, max)| Op::Read { pick, max }),
        2 => Just(Op::Flush),
        1 => any::<usize>().prop_map(|pick| Op::Truncate { pick }),
        1 => (0u64..5000).prop_map(|advance| Op::Retention { advance }),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

/// The model: every batch ever appended and still in the log, by offset.
#[derive(Default, Debug)]
struct Model {
    /// (base offset, last offset, bytes as stored)
    batches: Vec<(u64, u64, Vec<u8>)>,
    start: u64,
}

impl Model {
    fn end(&self) -> u64 {
        self.batches.last().map_or(self.start, |b| b.1 + 1)
    }
    fn holding(&self, off: u64) -> Option<&(u64, u64, Vec<u8>)> {
        self.batches.iter().find(|b| b.0 <= off && off <= b.1)
    }
    fn cut(&mut self, end: u64) {
        self.batches.retain(|b| b.1 < end);
    }
}

fn check_matches(log: &PartitionLog<MemStorage>, m: &Model) {
    assert_eq!(log.log_end_offset(), m.end());
    let start = log.log_start_offset();
    assert!(start >= m.start);
    // Every offset the log still holds reads back as the model's batch.
    let mut off = start;
    while off < m.end() {
        let got = block_on(log.read_bytes(off, 1)).unwrap();
        let want = m.holding(off).expect("model has every offset in range");
        assert_eq!(&got[..], &want.2[..], "batch holding offset {off}");
        off = want.1 + 1;
    }
}

fn run_ops(ops: Vec<Op>) {
    let s = MemStorage::new(1_000_000);
    let mut c = small_config();
    c.retention_bytes = Some(16 * 1024);
    c.flush = FlushPolicy::every_bytes(2000);
    let (mut log, _) = open(&s, c.clone());
    let mut m = Model::default();
    let mut ts = 0i64;
    for op in ops {
        match op {
            Op::Append { records, value_len } => {
                ts += 1;
                let b = batch(records, value_len, ts);
                let info = block_on(log.append(b, 3)).unwrap();
                assert_eq!(info.base_offset, m.end());
                let stored = block_on(log.read_bytes(info.base_offset, 1)).unwrap();
                m.batches
                    .push((info.base_offset, info.last_offset, stored.to_vec()));
            }
            Op::Read { pick, max } => {
                let end = log.log_end_offset();
                let start = log.log_start_offset();
                let off = start + (pick as u64) % (end - start + 1);
                match block_on(log.read(off, max)).unwrap() {
                    None => assert_eq!(off, end),
                    Some(slice) => {
                        let want = m.holding(off).unwrap();
                        assert_eq!(slice.first_offset, want.0);
                        assert!(slice.len >= want.2.len() as u64);
                        assert!(slice.len <= max.max(want.2.len() as u64));
                    }
                }
            }
            Op::Flush => {
                let d = block_on(log.flush()).unwrap();
                assert_eq!(d, m.end());
            }
            Op::Truncate { pick } => {
                let end = log.log_end_offset();
                let start = log.log_start_offset();
                let off = start + (pick as u64) % (end - start + 1);
                let new_end = block_on(log.truncate_to(off)).unwrap();
                let expect = m.holding(off).map_or(off.min(m.end()), |b| b.0);
                assert_eq!(new_end, expect);
                m.cut(new_end);
                if new_end <= start {
                    m.start = new_end;
                }
            }
            Op::Retention { advance } => {
                s.advance_ms(advance);
                block_on(log.enforce_retention()).unwrap();
                m.start = log.log_start_offset();
                m.batches.retain(|b| b.0 >= m.start);
            }
            Op::Reopen => {
                block_on(log.close()).unwrap();
                let (l, rep) = open(&s, c.clone());
                assert_eq!(rep.truncated_bytes, 0, "clean close loses nothing");
                log = l;
            }
            Op::Crash { seed } => {
                let durable = log.durable_end_offset();
                drop(log);
                s.crash(seed);
                let (l, _) = open(&s, c.clone());
                log = l;
                let end = log.log_end_offset();
                assert!(
                    end >= durable,
                    "durable offset {durable} lost: log ends at {end}"
                );
                assert!(end <= m.end(), "recovered log invents data");
                m.cut(end);
                m.start = m.start.max(log.log_start_offset());
            }
        }
        check_matches(&log, &m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model_through_crashes(ops in proptest::collection::vec(op(), 1..80)) {
        run_ops(ops);
    }
}

#[test]
fn reads_work_when_the_index_is_sparser_than_the_interval() {
    // Found by fuzzing: lowering index.interval.bytes must not strand
    // batches that the (older, sparser) index does not cover.
    let s = MemStorage::new(0);
    let mut c = small_config();
    c.index_interval_bytes = 1 << 20;
    let (log, _) = open(&s, c.clone());
    for i in 0..8 {
        block_on(log.append(batch(2, 300, i), 0)).unwrap();
    }
    c.index_interval_bytes = 0;
    log.set_config(c);
    for off in 0..16 {
        let b = block_on(log.read_bytes(off, 1)).unwrap();
        let h = validate(&b, usize::MAX, Strictness::Stored).unwrap();
        assert!(h.base_offset as u64 <= off && off <= h.last_offset() as u64);
    }
}

#[test]
fn offsets_in_holes_read_from_the_next_batch_and_empty_segments_are_dropped() {
    // Compacted data has offset holes; a read inside one starts at the
    // next batch instead of failing.
    let s = MemStorage::new(0);
    let dir = Path::new(DIR);
    let mut bytes = Vec::new();
    for (i, base) in [0i64, 10, 20, 30].into_iter().enumerate() {
        let mut b = batch(2, 100, i as i64);
        crate::batch::assign(&mut b, base, 0);
        bytes.extend_from_slice(&b);
    }
    block_on(s.create_dir_all(dir)).unwrap();
    s.put_file(&dir.join(segment::file_name(0, LOG_SUFFIX)), bytes);
    // An empty sealed segment in between, then the active one.
    s.put_file(&dir.join(segment::file_name(40, LOG_SUFFIX)), vec![]);
    s.put_file(&dir.join(segment::file_name(50, LOG_SUFFIX)), vec![]);
    let mut c = small_config();
    c.index_interval_bytes = 0;
    let (log, rep) = open(&s, c);
    assert_eq!(rep.dropped_segments, 1);
    assert_eq!(log.segment_bases(), vec![0, 50]);
    let b = block_on(log.read_bytes(5, 1)).unwrap();
    assert_eq!(
        validate(&b, usize::MAX, Strictness::Stored)
            .unwrap()
            .base_offset,
        10
    );
    // Past the last batch, in the gap before the active segment: nothing yet.
    assert!(block_on(log.read(45, 100)).unwrap().is_none());
    assert_eq!(log.log_end_offset(), 50);
}

/// An idempotent producer's batch of `records` records from `seq`.
fn idem(pid: i64, epoch: i16, seq: i32, records: usize) -> BytesMut {
    let mut bb = crate::batch::BatchBuilder::new(1_000).producer(pid, epoch, seq);
    for i in 0..records {
        bb.value(format!("p{pid}-s{}", seq as usize + i).as_bytes());
    }
    bb.build()
}

#[test]
fn idempotent_retries_are_answered_with_the_original_offsets_and_not_written() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, small_config());
    let a = block_on(log.append(idem(3, 0, 0, 2), 0)).unwrap();
    let b = block_on(log.append(idem(3, 0, 2, 3), 0)).unwrap();
    assert_eq!((a.base_offset, a.duplicate), (0, false));
    assert_eq!((b.base_offset, b.last_offset), (2, 4));
    let size = log.size_bytes();
    let again = block_on(log.append(idem(3, 0, 0, 2), 0)).unwrap();
    assert_eq!(
        (again.base_offset, again.last_offset, again.duplicate),
        (0, 1, true)
    );
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(log.size_bytes(), size, "a duplicate never reaches the disk");
    assert!(matches!(
        block_on(log.append(idem(3, 0, 9, 1), 0)),
        Err(LogError::Producer(ProducerError::OutOfOrderSequence {
            expected: 5,
            got: 9,
            ..
        }))
    ));
    // Epoch bump (a KIP-360 restart of the sequence), then the old epoch is fenced.
    assert_eq!(
        block_on(log.append(idem(3, 1, 0, 1), 0))
            .unwrap()
            .base_offset,
        5
    );
    assert!(matches!(
        block_on(log.append(idem(3, 0, 5, 1), 0)),
        Err(LogError::Producer(ProducerError::InvalidProducerEpoch {
            epoch: 0,
            current: 1,
            ..
        }))
    ));
    // Non-idempotent batches are not checked.
    assert_eq!(
        block_on(log.append(batch(1, 10, 0), 0))
            .unwrap()
            .base_offset,
        6
    );
    assert_eq!(log.log_end_offset(), 7);
}

/// Append `n` one-record batches of producer `pid` from sequence 0, rolling
/// segments on the way.
fn fill_idempotent(log: &Rc<PartitionLog<MemStorage>>, pid: i64, n: i32) {
    for seq in 0..n {
        let mut bb = crate::batch::BatchBuilder::new(1_000).producer(pid, 0, seq);
        bb.value(&[b'x'; 300]);
        block_on(log.append(bb.build(), 0)).unwrap();
    }
}

fn retry_is_duplicate(log: &Rc<PartitionLog<MemStorage>>, pid: i64, seq: i32, offset: u64) {
    let mut bb = crate::batch::BatchBuilder::new(1_000).producer(pid, 0, seq);
    bb.value(&[b'x'; 300]);
    let end = log.log_end_offset();
    let info = block_on(log.append(bb.build(), 0)).unwrap();
    assert!(info.duplicate, "retry of seq {seq} was written again");
    assert_eq!(info.base_offset, offset);
    assert_eq!(log.log_end_offset(), end);
}

#[test]
fn producer_state_survives_reopen_and_crash() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, small_config());
    fill_idempotent(&log, 11, 30);
    fill_idempotent(&log, 12, 15);
    assert!(
        log.segment_count() > 2,
        "state must come from sealed segments too"
    );
    block_on(log.close()).unwrap();
    drop(log);
    let (mut log, rep) = open(&s, small_config());
    assert_eq!(
        rep.producer_snapshot,
        log.segment_bases().last().copied(),
        "the roll's snapshot covers the sealed segments"
    );
    // Producer 11's batches are all in sealed segments, behind producer 12's.
    assert!(*log.segment_bases().last().unwrap() > 29);
    retry_is_duplicate(&log, 11, 29, 29);
    retry_is_duplicate(&log, 11, 25, 25);
    retry_is_duplicate(&log, 12, 14, 44);
    assert!(matches!(
        block_on(log.append(idem(11, 0, 31, 1), 0)),
        Err(LogError::Producer(ProducerError::OutOfOrderSequence {
            expected: 30,
            ..
        }))
    ));
    let next = block_on(log.append(idem(11, 0, 30, 1), 0)).unwrap();
    assert_eq!((next.base_offset, next.duplicate), (45, false));
    block_on(log.flush()).unwrap();
    // Unflushed appends after the flush, then a power cut: whatever
    // survives, the state matches the log that survived.
    for seed in 0..8 {
        let end = log.log_end_offset();
        let _ = block_on(log.append(idem(12, 0, 15 + seed as i32, 1), 0)).unwrap();
        drop(log);
        s.crash(seed);
        let (l, _) = open(&s, small_config());
        let kept = l.log_end_offset();
        assert!(
            kept == end || kept == end + 1,
            "crash recovery ended at {kept}"
        );
        if kept == end + 1 {
            retry_is_duplicate(&l, 12, 15 + seed as i32, end);
        } else {
            // Lost: the retry is new, at the same offset.
            let info = block_on(l.append(idem(12, 0, 15 + seed as i32, 1), 0)).unwrap();
            assert_eq!((info.base_offset, info.duplicate), (end, false));
        }
        retry_is_duplicate(&l, 11, 30, 45);
        block_on(l.flush()).unwrap();
        log = l;
    }
}

#[test]
fn truncation_forgets_producer_batches_it_removes() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, small_config());
    fill_idempotent(&log, 5, 20);
    assert_eq!(block_on(log.truncate_to(15)).unwrap(), 15);
    // Sequence 15 was cut: it is new again, at offset 15, not a duplicate.
    let info = block_on(log.append(idem(5, 0, 15, 1), 0)).unwrap();
    assert_eq!((info.base_offset, info.duplicate), (15, false));
    retry_is_duplicate(&log, 5, 14, 14);
    // And the same after a reopen.
    block_on(log.close()).unwrap();
    drop(log);
    let (log, _) = open(&s, small_config());
    let end = log.log_end_offset();
    assert_eq!(end, 16);
    assert!(log.producer_states().get(5).is_some());
    assert_eq!(block_on(log.truncate_to(0)).unwrap(), 0);
    assert!(log.producer_states().is_empty());
}

fn snapshot_files(s: &MemStorage) -> Vec<u64> {
    let mut v: Vec<u64> = block_on(s.list(Path::new(DIR)))
        .unwrap()
        .iter()
        .filter_map(|n| segment::parse_file_name(n, PRODUCER_SNAPSHOT_SUFFIX))
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn without_a_usable_snapshot_recovery_walks_the_log() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, small_config());
    fill_idempotent(&log, 11, 30);
    fill_idempotent(&log, 12, 15);
    block_on(log.close()).unwrap();
    let expected = log.producer_states();
    drop(log);
    let snaps = snapshot_files(&s);
    assert_eq!(
        snaps.len(),
        2,
        "the two newest snapshots are kept: {snaps:?}"
    );
    // Damage the newest: the older one is used, then the segments after it.
    let newest = Path::new(DIR).join(segment::file_name(snaps[1], PRODUCER_SNAPSHOT_SUFFIX));
    let mut b = s.file_bytes(&newest).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    s.put_file(&newest, b);
    let (log, rep) = open(&s, small_config());
    assert_eq!(rep.producer_snapshot, Some(snaps[0]));
    assert_eq!(log.producer_states(), expected);
    drop(log);
    // No snapshot at all (a log written before snapshots existed).
    for o in snapshot_files(&s) {
        block_on(s.remove(&Path::new(DIR).join(segment::file_name(o, PRODUCER_SNAPSHOT_SUFFIX))))
            .unwrap();
    }
    let (log, rep) = open(&s, small_config());
    assert_eq!(rep.producer_snapshot, None);
    assert_eq!(log.producer_states(), expected);
    retry_is_duplicate(&log, 11, 29, 29);
}

#[test]
fn truncation_below_a_snapshot_removes_it_and_rebuilds() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, small_config());
    fill_idempotent(&log, 7, 40);
    let snaps = snapshot_files(&s);
    assert!(!snaps.is_empty());
    let cut = snaps[0] - 3;
    assert_eq!(block_on(log.truncate_to(cut)).unwrap(), cut);
    assert!(
        snapshot_files(&s).iter().all(|&o| o <= cut),
        "{:?}",
        snapshot_files(&s)
    );
    // Sequences after the cut are new again; the ones before are duplicates.
    retry_is_duplicate(&log, 7, cut as i32 - 1, cut - 1);
    let info = block_on(log.append(idem(7, 0, cut as i32, 1), 0)).unwrap();
    assert_eq!((info.base_offset, info.duplicate), (cut, false));
    let expected = log.producer_states();
    block_on(log.close()).unwrap();
    drop(log);
    let (log, _) = open(&s, small_config());
    assert_eq!(log.producer_states(), expected);
}

#[test]
fn idle_producers_expire_on_the_retention_pass() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, small_config());
    block_on(log.append(idem(8, 0, 0, 1), 0)).unwrap(); // timestamp 1000
    s.advance_ms(crate::producer::PRODUCER_EXPIRATION_MS);
    block_on(log.enforce_retention()).unwrap();
    assert!(
        log.producer_states().get(8).is_some(),
        "not idle long enough"
    );
    s.advance_ms(1_001);
    block_on(log.enforce_retention()).unwrap();
    assert!(log.producer_states().get(8).is_none());
    // Back as an unknown producer: accepted at any sequence.
    let info = block_on(log.append(idem(8, 0, 40, 1), 0)).unwrap();
    assert_eq!((info.base_offset, info.duplicate), (1, false));
}

// ---- compaction ----

fn compact_config() -> LogConfig {
    LogConfig {
        cleanup_policy: CleanupPolicy::COMPACT,
        delete_retention_ms: 1000,
        ..small_config()
    }
}

/// A batch of keyed records (key, value; `None` value is a tombstone),
/// compressed with `codec`.
fn keyed(records: &[(u8, Option<u16>)], ts: i64, codec: i16) -> BytesMut {
    let mut bb = crate::batch::BatchBuilder::new(ts).attributes(codec);
    for (k, v) in records {
        bb.push(&crate::batch::Record {
            key: Some(format!("key-{k}").into_bytes()),
            value: v.map(|v| format!("value-{v}-{}", "p".repeat(40)).into_bytes()),
            ..Default::default()
        });
    }
    let mut b = bb.build();
    if codec != 0 {
        let body = crate::codec::compress(codec, &b[crate::batch::HEADER_LEN..]).unwrap();
        b.truncate(crate::batch::HEADER_LEN);
        b.extend_from_slice(&body);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        crate::batch::set_crc(&mut b);
    }
    b
}

type Rec = crate::compact::RecordContents;

/// Every record readable from the log start, in order, checking that
/// offsets strictly increase.
fn read_all(log: &PartitionLog<MemStorage>) -> Vec<Rec> {
    let mut out: Vec<Rec> = Vec::new();
    let mut off = log.log_start_offset();
    let end = log.log_end_offset();
    while off < end {
        let bytes = block_on(log.read_bytes(off, 1 << 20)).unwrap();
        if bytes.is_empty() {
            break;
        }
        let mut next = off;
        for (at, h) in crate::batch::headers(&bytes) {
            validate(&bytes[at..], usize::MAX, Strictness::Stored).unwrap();
            for r in crate::compact::batch_contents(&bytes[at..at + h.size()], 1 << 24).unwrap() {
                if let Some(last) = out.last() {
                    assert!(r.0 > last.0, "offsets go {} then {}", last.0, r.0);
                }
                out.push(r);
            }
            next = h.last_offset() as u64 + 1;
        }
        assert!(next > off, "read made no progress at {off}");
        off = next;
    }
    out
}

#[test]
fn compaction_keeps_the_latest_value_per_key_at_its_offset() {
    let s = MemStorage::new(10_000);
    let (log, _) = open(&s, compact_config());
    let mut all: Vec<(u8, u16)> = Vec::new();
    for i in 0..200u16 {
        let recs: Vec<(u8, Option<u16>)> = (0..3)
            .map(|j| (((i * 3 + j) % 5) as u8, Some(i * 3 + j)))
            .collect();
        all.extend(recs.iter().map(|(k, v)| (*k, v.unwrap())));
        block_on(log.append(keyed(&recs, 10_000, (i % 5) as i16), 0)).unwrap();
    }
    assert!(log.segment_count() > 4);
    let end = log.log_end_offset();
    let size_before = log.size_bytes();
    let active_base = *log.segment_bases().last().unwrap();
    let before = read_all(&log);
    let rep = block_on(log.compact()).unwrap();
    assert!(
        rep.records_removed > 0 && rep.rewritten + rep.deleted > 0,
        "{rep:?}"
    );
    assert_eq!(log.log_end_offset(), end);
    assert!(log.size_bytes() < size_before);
    let check = |log: &PartitionLog<MemStorage>| {
        let after = read_all(log);
        // Each record read is the original record at that offset.
        for r in &after {
            assert!(before.contains(r), "invented {r:?}");
        }
        // Nothing from the active segment went.
        for r in before.iter().filter(|r| r.0 >= active_base) {
            assert!(after.contains(r), "active record {} lost", r.0);
        }
        // The latest of each key is there, and sealed keys are unique.
        for k in 0..5u8 {
            let key = format!("key-{k}").into_bytes();
            let latest = before
                .iter()
                .rev()
                .find(|r| r.1.as_ref() == Some(&key))
                .unwrap();
            assert!(after.contains(latest));
            let sealed = after
                .iter()
                .filter(|r| r.0 < active_base && r.1.as_ref() == Some(&key))
                .count();
            assert!(
                sealed <= 1,
                "key {k} appears {sealed} times in sealed segments"
            );
        }
    };
    check(&log);
    assert_eq!(
        log.log_start_offset(),
        0,
        "compaction never moves the log start"
    );
    // A second pass finds nothing new; reopen reads the same.
    let again = block_on(log.compact()).unwrap();
    assert_eq!(again.records_removed, 0);
    block_on(log.close()).unwrap();
    let (log, rep) = open(&s, compact_config());
    assert_eq!(rep.truncated_bytes, 0);
    assert_eq!(rep.rebuilt_indexes, 0, "the swap wrote valid indexes");
    assert_eq!(log.log_start_offset(), 0);
    check(&log);
}

#[test]
fn keyless_records_are_refused_by_compacted_logs() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, compact_config());
    assert!(matches!(
        block_on(log.append(batch(2, 10, 0), 0)),
        Err(LogError::InvalidRecord(_))
    ));
    assert_eq!(log.log_end_offset(), 0);
    block_on(log.append(keyed(&[(1, Some(1))], 0, 3), 0)).unwrap();
    // The delete policy takes them.
    let (plain, _) = block_on(PartitionLog::open(s.clone(), "/data/p-0", small_config())).unwrap();
    block_on(plain.append(batch(2, 10, 0), 0)).unwrap();
}

#[test]
fn expired_tombstones_go_and_a_held_slice_still_reads_old_bytes() {
    let s = MemStorage::new(5_000);
    let (log, _) = open(&s, compact_config());
    block_on(log.append(keyed(&[(1, Some(1)), (2, Some(2))], 5_000, 0), 0)).unwrap();
    block_on(log.append(keyed(&[(1, None)], 5_000, 0), 0)).unwrap();
    while log.segment_count() < 3 {
        block_on(log.append(keyed(&[(3, Some(3)); 20], 5_000, 0), 0)).unwrap();
    }
    let slice = block_on(log.read(0, 1 << 20)).unwrap().unwrap();
    let old = block_on(slice.file.read_at(slice.position, slice.len as usize)).unwrap();
    block_on(log.compact()).unwrap();
    let recs = read_all(&log);
    assert!(
        recs.iter().any(|r| r.0 == 2 && r.2.is_none()),
        "young tombstone kept"
    );
    assert!(
        !recs.iter().any(|r| r.0 == 0),
        "value under the tombstone gone"
    );
    s.advance_ms(2_000);
    block_on(log.compact()).unwrap();
    let recs = read_all(&log);
    assert!(!recs.iter().any(|r| r.0 == 2), "expired tombstone gone");
    assert!(recs.iter().any(|r| r.0 == 1), "key 2 stays");
    // The slice taken before compaction reads what it read then.
    let again = block_on(slice.file.read_at(slice.position, slice.len as usize)).unwrap();
    assert_eq!(old, again);
}

#[test]
fn the_dirty_ratio_and_policy_decide_when_to_compact() {
    let s = MemStorage::new(0);
    let mut c = compact_config();
    c.cleanup_policy = CleanupPolicy::DELETE;
    let (log, _) = open(&s, c.clone());
    for i in 0..40u16 {
        block_on(log.append(keyed(&[(1, Some(i)), (2, Some(i))], 0, 0), 0)).unwrap();
    }
    assert_eq!(
        block_on(log.maybe_compact()).unwrap(),
        None,
        "delete policy"
    );
    c.cleanup_policy = CleanupPolicy::COMPACT;
    log.set_config(c.clone());
    let rep = block_on(log.maybe_compact()).unwrap().expect("all dirty");
    assert!(rep.records_removed > 0);
    assert_eq!(
        block_on(log.maybe_compact()).unwrap(),
        None,
        "all clean now"
    );
    // compact alone turns retention off.
    c.retention_ms = Some(1);
    log.set_config(c);
    s.advance_ms(1_000_000);
    assert_eq!(block_on(log.enforce_retention()).unwrap(), 0);
}

/// The log after a crash inside compaction holds, for each key, its latest
/// value, and only records that were appended at their offsets.
#[test]
fn a_crash_at_any_step_of_a_compaction_leaves_old_or_new_content() {
    let mut crashes = 0;
    for step in 1..200u32 {
        let s = MemStorage::new(0);
        let (log, _) = open(&s, compact_config());
        for i in 0..300u16 {
            let recs = [((i % 4) as u8, Some(i)), (((i + 1) % 4) as u8, Some(i))];
            block_on(log.append(keyed(&recs, 0, (i % 3) as i16 * 2), 0)).unwrap();
        }
        block_on(log.flush()).unwrap();
        let before = read_all(&log);
        let end = log.log_end_offset();
        log.crash_compaction_after(step);
        let crashed = block_on(log.compact()).is_err();
        drop(log);
        s.crash(step as u64);
        let (log, _) = open(&s, compact_config());
        assert_eq!(log.log_end_offset(), end, "step {step}");
        let after = read_all(&log);
        for r in &after {
            assert!(before.contains(r), "step {step}: invented {r:?}");
        }
        for k in 0..4u8 {
            let key = format!("key-{k}").into_bytes();
            let latest = before
                .iter()
                .rev()
                .find(|r| r.1.as_ref() == Some(&key))
                .unwrap();
            assert!(
                after.contains(latest),
                "step {step}: latest of key {k} lost"
            );
        }
        let names = block_on(s.list(Path::new(DIR))).unwrap();
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with(".cleaned") || n.ends_with(".swap")),
            "step {step}: leftovers {names:?}"
        );
        // It compacts fine afterwards.
        block_on(log.compact()).unwrap();
        if !crashed {
            break;
        }
        crashes += 1;
    }
    assert!(crashes >= 10, "only {crashes} crash points were reached");
}

#[derive(Debug, Clone)]
enum COp {
    /// Keyed records (key, value or tombstone) in one batch with a codec.
    Append(Vec<(u8, Option<u16>)>, i16),
    Compact,
    /// Crash at the n-th step of a compaction's file protocol.
    CrashInCompaction {
        steps: u32,
        seed: u64,
    },
    Crash {
        seed: u64,
    },
    Reopen,
    Flush,
    Advance(u64),
    Truncate(u64),
}

fn cop() -> impl Strategy<Value = COp> {
    prop_oneof![
        8 => (proptest::collection::vec((0u8..8, proptest::option::weighted(0.85, 0u16..1000)), 1..6), 0i16..5)
            .prop_map(|(r, c)| COp::Append(r, c)),
        2 => Just(COp::Compact),
        2 => (1u32..30, any::<u64>()).prop_map(|(steps, seed)| COp::CrashInCompaction { steps, seed }),
        1 => any::<u64>().prop_map(|seed| COp::Crash { seed }),
        1 => Just(COp::Reopen),
        2 => Just(COp::Flush),
        1 => (0u64..1500).prop_map(COp::Advance),
        1 => any::<u64>().prop_map(COp::Truncate),
    ]
}

/// Model: every record appended (offset, key, value, timestamp), cut at the
/// recovered end after crashes. Checks after every operation: each record
/// read is the one appended at that offset; offsets increase; the latest
/// record of every key is readable (a tombstone may be gone once it is older
/// than delete.retention.ms); the log end is the model's.
fn run_compaction_ops(ops: Vec<COp>) {
    let s = MemStorage::new(100_000);
    let c = compact_config();
    let (mut log, _) = open(&s, c.clone());
    let mut model: Vec<(Rec, u64)> = Vec::new();
    let mut next = 0u64;
    for op in ops {
        match op {
            COp::Append(recs, codec) => {
                let now = s.now_ms();
                let info = block_on(log.append(keyed(&recs, now as i64, codec), 0)).unwrap();
                assert_eq!(info.base_offset, next);
                let b = keyed(&recs, now as i64, codec);
                let mut b = b.to_vec();
                crate::batch::assign(&mut b, next as i64, 0);
                for r in crate::compact::batch_contents(&b, 1 << 24).unwrap() {
                    model.push((r, now));
                }
                next = info.last_offset + 1;
            }
            COp::Compact => {
                let end = log.log_end_offset();
                let start = log.log_start_offset();
                let active = *log.segment_bases().last().unwrap();
                block_on(log.compact()).unwrap();
                assert_eq!(log.log_end_offset(), end);
                assert_eq!(
                    log.log_start_offset(),
                    start,
                    "compaction moved the log start"
                );
                // Sealed keys are now unique.
                let got = read_all(&log);
                let mut seen = std::collections::HashSet::new();
                for r in got.iter().filter(|r| r.0 < active) {
                    assert!(
                        seen.insert(r.1.clone()),
                        "key twice after compaction: {r:?}"
                    );
                }
            }
            COp::CrashInCompaction { steps, seed } => {
                block_on(log.flush()).unwrap();
                let start = log.log_start_offset();
                log.crash_compaction_after(steps);
                let _ = block_on(log.compact());
                drop(log);
                s.crash(seed);
                log = open(&s, c.clone()).0;
                assert_eq!(log.log_end_offset(), next, "all was flushed");
                assert_eq!(log.log_start_offset(), start);
            }
            COp::Crash { seed } => {
                let durable = log.durable_end_offset();
                drop(log);
                s.crash(seed);
                log = open(&s, c.clone()).0;
                let end = log.log_end_offset();
                assert!(end >= durable && end <= next);
                model.retain(|(r, _)| r.0 < end);
                next = end;
            }
            COp::Reopen => {
                block_on(log.close()).unwrap();
                log = open(&s, c.clone()).0;
            }
            COp::Flush => {
                block_on(log.flush()).unwrap();
            }
            COp::Advance(ms) => s.advance_ms(ms),
            COp::Truncate(pick) => {
                let (start, end) = (log.log_start_offset(), log.log_end_offset());
                let off = start + pick % (end - start + 1);
                let before = read_all(&log);
                let new_end = block_on(log.truncate_to(off)).unwrap();
                assert!(new_end <= off.max(start));
                let after = read_all(&log);
                let kept: Vec<&Rec> = before.iter().filter(|r| r.0 < new_end).collect();
                assert_eq!(
                    after.iter().collect::<Vec<_>>(),
                    kept,
                    "truncation keeps exactly the prefix"
                );
                // Only the batch holding `off` (at most 6 offsets) and what
                // follows go.
                assert!(
                    before.iter().all(|r| r.0 < new_end || r.0 + 5 >= off),
                    "cut below the batch holding {off}"
                );
                // Compaction removed records whose successors were just cut
                // (Kafka avoids this by never cleaning past the high
                // watermark): what is readable now is the new baseline.
                model.retain(|(r, _)| after.contains(r));
                next = new_end;
            }
        }
        assert_eq!(log.log_end_offset(), next);
        let got = read_all(&log);
        let by_offset: std::collections::HashMap<u64, &Rec> =
            model.iter().map(|(r, _)| (r.0, r)).collect();
        for r in &got {
            assert_eq!(
                by_offset.get(&r.0),
                Some(&r),
                "record at {} is not the one appended",
                r.0
            );
        }
        let mut latest: std::collections::BTreeMap<&Option<Vec<u8>>, &(Rec, u64)> =
            Default::default();
        for m in &model {
            latest.insert(&m.0 .1, m);
        }
        let now = s.now_ms();
        for (r, ts) in latest.values() {
            let may_be_gone = r.2.is_none() && ts + c.delete_retention_ms < now;
            assert!(may_be_gone || got.contains(r), "latest {r:?} lost");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn compaction_matches_model_through_crashes(ops in proptest::collection::vec(cop(), 1..120)) {
        run_compaction_ops(ops);
    }
}

/// A keyed batch of an idempotent producer.
fn keyed_idem(pid: i64, seq: i32, key: u8) -> BytesMut {
    let mut bb = crate::batch::BatchBuilder::new(1_000).producer(pid, 0, seq);
    bb.push(&crate::batch::Record {
        key: Some(format!("key-{key}").into_bytes()),
        value: Some(vec![b'x'; 300]),
        ..Default::default()
    });
    bb.build()
}

#[test]
fn a_compacted_producer_keeps_its_last_batch_header_for_rebuilt_state() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, compact_config());
    for seq in 0..5 {
        block_on(log.append(keyed_idem(7, seq, 1), 0)).unwrap();
    }
    let last = log.log_end_offset() - 1;
    // Another writer supersedes key 1 and fills segments, so all of
    // producer 7's batches are sealed and lose their records.
    for i in 0..40u16 {
        block_on(log.append(keyed(&[(1, Some(i))], 1_000, 0), 0)).unwrap();
    }
    let rep = block_on(log.compact()).unwrap();
    assert!(rep.records_removed >= 5, "{rep:?}");
    assert!(
        read_all(&log).iter().all(|r| r.0 > last),
        "producer 7's records are gone"
    );
    // Without snapshots the state comes from the headers alone.
    block_on(log.close()).unwrap();
    for o in snapshot_files(&s) {
        let p = Path::new(DIR).join(segment::file_name(o, PRODUCER_SNAPSHOT_SUFFIX));
        block_on(s.remove(&p)).unwrap();
    }
    let (log, rep) = open(&s, compact_config());
    assert_eq!(rep.producer_snapshot, None);
    let mut bb = crate::batch::BatchBuilder::new(1_000).producer(7, 0, 4);
    bb.push(&crate::batch::Record {
        key: Some(b"key-1".to_vec()),
        value: Some(vec![b'x'; 300]),
        ..Default::default()
    });
    let info = block_on(log.append(bb.build(), 0)).unwrap();
    assert!(info.duplicate, "the retry of the last batch is still known");
    assert_eq!(info.base_offset, last);
    assert!(matches!(
        block_on(log.append(keyed_idem(7, 9, 1), 0)),
        Err(LogError::Producer(ProducerError::OutOfOrderSequence { .. }))
    ));
    block_on(log.append(keyed_idem(7, 5, 1), 0)).unwrap();
}

#[test]
fn min_compaction_lag_keeps_young_segments_dirty() {
    let s = MemStorage::new(10_000);
    let mut c = compact_config();
    c.min_compaction_lag_ms = 5_000;
    let (log, _) = open(&s, c);
    for i in 0..80u16 {
        block_on(log.append(keyed(&[(1, Some(i))], s.now_ms() as i64, 0), 0)).unwrap();
    }
    assert!(log.segment_count() > 2);
    let rep = block_on(log.compact()).unwrap();
    assert_eq!((rep.segments, rep.records_removed), (0, 0), "all too young");
    s.advance_ms(5_001);
    let rep = block_on(log.compact()).unwrap();
    assert!(rep.records_removed > 0);
}

#[test]
fn truncation_and_appends_during_a_compaction_pass_are_safe() {
    use std::future::Future;
    use std::task::{Context, Waker};
    for truncate in [false, true] {
        let s = MemStorage::new(0);
        let (log, _) = open(&s, compact_config());
        for i in 0..120u16 {
            block_on(log.append(keyed(&[((i % 3) as u8, Some(i))], 0, 0), 0)).unwrap();
        }
        let l2 = log.clone();
        let mut pass = Box::pin(async move { l2.compact().await });
        let mut cx = Context::from_waker(Waker::noop());
        assert!(pass.as_mut().poll(&mut cx).is_pending(), "the pass yields");
        // Beside the pass: appends, and maybe a truncation into sealed data.
        for i in 0..30u16 {
            block_on(log.append(keyed(&[(7, Some(i))], 0, 0), 0)).unwrap();
        }
        let cut = log.segment_bases()[1] + 2;
        if truncate {
            block_on(log.truncate_to(cut)).unwrap();
        }
        let before = read_all(&log);
        let rep = block_on(pass).unwrap();
        assert_eq!(rep.aborted, truncate, "{rep:?}");
        let after = read_all(&log);
        for r in &after {
            assert!(before.contains(r), "invented {r:?}");
        }
        for k in [0u8, 1, 2, 7] {
            let key = format!("key-{k}").into_bytes();
            if let Some(latest) = before.iter().rev().find(|r| r.1.as_ref() == Some(&key)) {
                assert!(after.contains(latest), "latest of key {k} lost");
            }
        }
        let names = block_on(s.list(Path::new(DIR))).unwrap();
        assert!(!names.iter().any(|n| n.ends_with(".cleaned")), "{names:?}");
        drop(log);
        let (log, _) = open(&s, compact_config());
        assert_eq!(read_all(&log), after);
    }
}

#[test]
fn a_read_planned_before_a_swap_is_planned_again() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, compact_config());
    for i in 0..120u16 {
        block_on(log.append(keyed(&[((i % 3) as u8, Some(i))], 0, 0), 0)).unwrap();
    }
    let plan = match log.state.borrow().locate(40).unwrap() {
        state::Locate::Scan(p) => p,
        state::Locate::AtEnd => panic!("offset 40 is in the log"),
    };
    let window = block_on(plan.file.read_at(plan.scan_pos, plan.scan_len)).unwrap();
    assert!(log
        .state
        .borrow()
        .slice_from_scan(&plan, &window, 1 << 20)
        .is_some());
    let rep = block_on(log.compact()).unwrap();
    assert!(rep.rewritten + rep.deleted > 0);
    // The window came from the old file: its positions mean nothing now.
    assert!(log
        .state
        .borrow()
        .slice_from_scan(&plan, &window, 1 << 20)
        .is_none());
    // A fresh read finds the batch at or after 40 in the new file.
    let slice = block_on(log.read(40, 1 << 20)).unwrap().unwrap();
    let bytes = block_on(slice.file.read_at(slice.position, slice.len as usize)).unwrap();
    let h = validate(&bytes, usize::MAX, Strictness::Stored).unwrap();
    assert!(h.last_offset() >= 40);
}

#[test]
fn the_compaction_limit_keeps_segments_above_it_untouched() {
    let s = MemStorage::new(0);
    let (log, _) = open(&s, compact_config());
    for i in 0..120u16 {
        block_on(log.append(keyed(&[((i % 3) as u8, Some(i))], 0, 0), 0)).unwrap();
    }
    let bases = log.segment_bases();
    assert!(bases.len() > 3);
    log.set_compaction_limit(Some(0));
    let rep = block_on(log.compact()).unwrap();
    assert_eq!(rep.segments, 0, "nothing lies wholly below offset 0");
    log.set_compaction_limit(Some(bases[2]));
    let before = read_all(&log);
    let rep = block_on(log.compact()).unwrap();
    assert_eq!(rep.segments, 2, "{rep:?}");
    let after = read_all(&log);
    let above: Vec<_> = before.iter().filter(|r| r.0 >= bases[2]).collect();
    assert_eq!(
        after.iter().filter(|r| r.0 >= bases[2]).collect::<Vec<_>>(),
        above
    );
}

#[test]
fn replicated_appends_land_at_their_offsets_and_record_producer_state() {
    let s = MemStorage::new(1_000);
    let (log, _) = open(&s, small_config());
    let a = block_on(log.append_replicated(0, batch(3, 10, 100), 4)).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (0, 2));
    // Not at the log end: refused, nothing written.
    let e = block_on(log.append_replicated(7, batch(1, 10, 100), 4)).unwrap_err();
    assert!(
        matches!(
            e,
            LogError::NotAtOffset {
                expected: 7,
                log_end: 3
            }
        ),
        "{e}"
    );
    assert_eq!(log.log_end_offset(), 3);
    // An idempotent batch is written even when it would be judged a
    // duplicate (the leader judged it), and its state is recorded: a
    // producer's retry of it through the normal path is a duplicate.
    let idem = |seq| {
        let mut bb = crate::batch::BatchBuilder::new(1_000).producer(9, 0, seq);
        bb.value(b"v");
        bb.build()
    };
    let b = block_on(log.append_replicated(3, idem(0), 5)).unwrap();
    assert_eq!(b.base_offset, 3);
    let retry = block_on(log.append(idem(0), 5)).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, 3);
    let bytes = block_on(log.read_bytes(3, 1 << 20)).unwrap();
    let h = validate(&bytes, usize::MAX, Strictness::Produce).unwrap();
    assert_eq!((h.base_offset, h.partition_leader_epoch), (3, 5));
    // More than one batch is not one Raft entry.
    let two = [batch(1, 1, 0), batch(1, 1, 0)].concat();
    assert!(block_on(log.append_replicated(4, two, 5)).is_err());
}

#[test]
fn readers_see_only_offsets_below_the_high_watermark() {
    let s = MemStorage::new(1_000);
    let (log, _) = open(&s, small_config());
    block_on(log.set_high_watermark(0)).unwrap();
    // Three batches of 2, 3 and 1 records: offsets 0-1, 2-4, 5.
    for (base, n) in [(0, 2), (2, 3), (5, 1)] {
        block_on(log.append_replicated(base, batch(n, 10, 100), 1)).unwrap();
    }
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(log.visible_end(), 0);
    assert!(block_on(log.read(0, 1 << 20)).unwrap().is_none());
    block_on(log.set_high_watermark(2)).unwrap();
    let seen = |log: &Rc<PartitionLog<MemStorage>>, from| {
        let b = block_on(log.read_bytes(from, 1 << 20)).unwrap();
        crate::batch::headers(&b)
            .map(|(_, h)| (h.base_offset, h.last_offset()))
            .collect::<Vec<_>>()
    };
    assert_eq!(seen(&log, 0), vec![(0, 1)]);
    assert!(block_on(log.read(2, 1 << 20)).unwrap().is_none());
    block_on(log.set_high_watermark(6)).unwrap();
    assert_eq!(seen(&log, 0), vec![(0, 1), (2, 4), (5, 5)]);
    // A batch appended at the watermark stays hidden until it commits.
    block_on(log.append_replicated(6, batch(2, 10, 100), 1)).unwrap();
    assert_eq!(seen(&log, 0).len(), 3);
    // After a restart the watermark's batch is found on disk.
    block_on(log.close()).unwrap();
    let (log, _) = open(&s, small_config());
    assert_eq!(log.visible_end(), 8, "no watermark set: everything visible");
    block_on(log.set_high_watermark(2)).unwrap();
    assert_eq!(seen(&log, 0), vec![(0, 1)]);
    // A watermark inside a batch is refused.
    assert!(block_on(log.set_high_watermark(3)).is_err());
    // Truncating above the watermark keeps what is visible.
    block_on(log.truncate_to(5)).unwrap();
    block_on(log.set_high_watermark(5)).unwrap();
    assert_eq!(seen(&log, 0), vec![(0, 1), (2, 4)]);
}

#[test]
fn retention_keeps_segments_above_its_limit_and_reset_restarts_the_log() {
    let s = MemStorage::new(1_000);
    let cfg = LogConfig {
        retention_bytes: Some(1),
        ..small_config()
    };
    let (log, _) = open(&s, cfg);
    for _ in 0..60 {
        block_on(log.append(batch(4, 100, 100), 0)).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments > 3);
    let third = log.segment_bases()[2];
    log.set_retention_limit(Some(third));
    block_on(log.enforce_retention()).unwrap();
    assert_eq!(
        log.log_start_offset(),
        third,
        "only segments below the limit go"
    );
    log.set_retention_limit(None);
    block_on(log.enforce_retention()).unwrap();
    assert_eq!(log.segment_count(), 1);
    block_on(log.reset(500)).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
    let a = block_on(log.append_replicated(500, batch(1, 1, 0), 3)).unwrap();
    assert_eq!(a.base_offset, 500);
}

/// A replicated log's producer state after restarts and truncations is
/// what its batches say: the leader judges retries against it, so a
/// batch the log holds must be a duplicate, one it lost must not be.
#[test]
fn replicated_producer_state_survives_rolls_truncation_and_restarts() {
    let s = MemStorage::new(1_000);
    let (log, _) = open(&s, small_config());
    let one = |seq: i32| {
        let mut bb = crate::batch::BatchBuilder::new(1_000).producer(7, 0, seq);
        bb.value(&[b'x'; 300]);
        bb.build()
    };
    let header = |seq| crate::batch::BatchHeader::parse(&one(seq)).unwrap();
    for seq in 0..40 {
        block_on(log.append_replicated(seq as u64, one(seq), 1)).unwrap();
    }
    assert!(
        log.segment_count() > 3,
        "rolled, so producer snapshots exist"
    );
    let judge = |log: &Rc<PartitionLog<MemStorage>>, seq| log.judge_producer(&header(seq)).unwrap();
    assert_eq!(judge(&log, 39), Some((39, 39)));
    // Truncate into an earlier segment (below a producer snapshot).
    block_on(log.truncate_to(22)).unwrap();
    assert_eq!(judge(&log, 21), Some((21, 21)), "kept: a duplicate");
    assert_eq!(judge(&log, 22), None, "lost: written again");
    // Another history continues at 22, then a restart without a clean close.
    for seq in 22..30 {
        block_on(log.append_replicated(seq as u64, one(seq), 2)).unwrap();
    }
    drop(log);
    let (log, _) = open(&s, small_config());
    assert_eq!(log.log_end_offset(), 30);
    for seq in 25..30 {
        assert_eq!(
            judge(&log, seq),
            Some((seq as u64, seq as u64)),
            "seq {seq} after restart"
        );
    }
    assert_eq!(judge(&log, 30), None);
    // A restart after truncating to below the first roll.
    block_on(log.truncate_to(3)).unwrap();
    drop(log);
    let (log, _) = open(&s, small_config());
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(judge(&log, 2), Some((2, 2)));
    assert_eq!(judge(&log, 3), None);
}

/// A roll syncs the old segment before the first write to the new one and
/// leaves the rest (indexes, producer snapshot, the directory sync that
/// makes the new name durable) to a seal task: with the directory's sync
/// held back, appends go on into the new segment, the old one is durable,
/// a flush asked for meanwhile does not make the new segment durable
/// before its name is, a crash at that point recovers a prefix of what
/// was appended holding everything durable, and once the seal finishes
/// the old segment is indexed and the snapshot written.
#[test]
fn appends_go_on_while_a_roll_seals_and_durability_stays_in_order() {
    // seed None: let the seal finish; Some: crash while it waits.
    for seed in std::iter::once(None).chain((0..16).map(Some)) {
        let s = MemStorage::new(0);
        let (log, _) = open(&s, small_config());
        let mut appended: Vec<(u64, Vec<u8>)> = Vec::new();
        let append = |log: &Rc<PartitionLog<MemStorage>>, appended: &mut Vec<(u64, Vec<u8>)>| {
            let info = block_on(log.append(batch(1, 200, 1), 1)).unwrap();
            let stored = block_on(log.read_bytes(info.base_offset, 1)).unwrap();
            appended.push((info.base_offset, stored.to_vec()));
        };
        for _ in 0..6 {
            append(&log, &mut appended);
        }
        assert_eq!(block_on(log.flush()).unwrap(), 6);
        s.hold_syncs(Path::new(DIR));
        while log.segment_count() == 1 {
            append(&log, &mut appended);
        }
        let new_base = log.segment_bases()[1];
        for _ in 0..3 {
            append(&log, &mut appended);
        }
        // The roll's batch and three more.
        assert_eq!(log.log_end_offset(), new_base + 4, "appends went on");
        assert_eq!(
            log.durable_end_offset(),
            new_base,
            "the roll synced the old segment"
        );
        log.start_flush();
        block_on(std::future::ready(()));
        assert_eq!(
            log.durable_end_offset(),
            new_base,
            "nothing in the new segment is durable before its name is"
        );
        match seed {
            None => {
                s.release_syncs();
                assert_eq!(block_on(log.flush()).unwrap(), new_base + 4);
                let names = block_on(s.list(Path::new(DIR))).unwrap();
                for sfx in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                    let name = segment::file_name(0, sfx);
                    assert!(names.contains(&name), "{name} in {names:?}");
                }
                assert_eq!(snapshot_files(&s), vec![new_base]);
            }
            Some(seed) => {
                let durable = log.durable_end_offset();
                drop(log);
                s.crash(seed);
                let (log, _) = open(&s, small_config());
                let end = log.log_end_offset();
                assert!(
                    end >= durable,
                    "seed {seed}: durable offset {durable} lost, log ends at {end}"
                );
                assert!(
                    end <= new_base + 4,
                    "seed {seed}: recovered log invents data"
                );
                for (off, bytes) in appended.iter().filter(|(o, _)| *o < end) {
                    let got = block_on(log.read_bytes(*off, 1)).unwrap();
                    assert_eq!(&got[..], &bytes[..], "seed {seed}: offset {off}");
                }
                // The recovered log takes appends where it ends.
                let info = block_on(log.append(batch(1, 200, 1), 1)).unwrap();
                assert_eq!(info.base_offset, end);
            }
        }
    }
}
