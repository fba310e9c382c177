//! Idempotent-producer state of one partition, free of I/O.
//!
//! An idempotent producer (KIP-98) numbers its batches per partition: each
//! batch carries the producer id, its epoch and the sequence of its first
//! record. A retry after a lost answer resends the same batch, and the
//! broker must answer it with the offsets it got the first time instead of
//! writing it again; a batch that skips sequences means records were lost
//! in between and is refused.
//!
//! [`ProducerStates`] keeps, per producer id, its epoch and the metadata of
//! its last [`DEDUP_WINDOW`] batches (as Kafka does: a producer has at most
//! five requests in flight per partition, so a retry is always one of the
//! last five). Judging works on a [`Staged`] overlay so that a round of
//! appends can be judged in order, each batch seeing the ones before it,
//! and committed only once its bytes are written.
//!
//! Rules (Kafka's, `ProducerAppendInfo.checkSequence`):
//! - epoch below the known one: `InvalidProducerEpoch` (Kafka answers
//!   INVALID_PRODUCER_EPOCH to produce since KIP-588);
//! - same epoch and the same first and last sequence as one of the last
//!   five batches: a duplicate, answered with the original offsets;
//! - same epoch: the first sequence must follow the last one (wrapping from
//!   `i32::MAX` to 0);
//! - a newer epoch must start at sequence 0;
//! - an unknown producer is accepted at any sequence: its state may be gone
//!   (truncation, or a producer whose batches left the window) and Kafka
//!   (2.x+) accepts it too rather than fail a live producer forever.

use std::collections::{HashMap, VecDeque};

use crate::batch::BatchHeader;

/// How many of a producer's latest batches are remembered for duplicate
/// detection (Kafka's `max.in.flight.requests.per.connection` limit for
/// idempotence).
pub const DEDUP_WINDOW: usize = 5;

/// How long a producer's state outlives its last batch (Kafka's
/// `producer.id.expiration.ms` default, one day). Measured like Kafka, from
/// the batch's max timestamp: a producer idle that long has no retry left
/// in flight, and without expiry every producer id ever seen would stay in
/// memory and in every snapshot.
pub const PRODUCER_EXPIRATION_MS: u64 = 24 * 3600 * 1000;

/// What is remembered of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
}

/// One producer's state in a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first; at most [`DEDUP_WINDOW`], never empty.
    batches: VecDeque<BatchMeta>,
}

impl ProducerEntry {
    pub fn batches(&self) -> impl Iterator<Item = &BatchMeta> {
        self.batches.iter()
    }

    pub fn last(&self) -> Option<&BatchMeta> {
        self.batches.back()
    }

    fn push(&mut self, epoch: i16, meta: BatchMeta) {
        if epoch != self.epoch {
            // A new epoch restarts the sequence: older batches cannot be retried.
            self.batches.clear();
            self.epoch = epoch;
        }
        self.batches.push_back(meta);
        while self.batches.len() > DEDUP_WINDOW {
            self.batches.pop_front();
        }
    }
}

/// Why an idempotent batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error("producer {producer_id}: epoch {epoch} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error(
        "producer {producer_id} epoch {epoch}: sequence {got} is out of order, expected {expected}"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id}: base sequence {sequence} is negative")]
    InvalidSequence { producer_id: i64, sequence: i32 },
}

/// The judgement of an acceptable batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: write it.
    Append,
    /// Already in the log: do not write; these are its original offsets.
    Duplicate(BatchMeta),
}

/// Sequence of the last record of a batch, wrapping past `i32::MAX` to 0
/// as producers do.
pub fn last_sequence(base_sequence: i32, last_offset_delta: i32) -> i32 {
    let delta = last_offset_delta.max(0);
    if base_sequence > i32::MAX - delta {
        delta - (i32::MAX - base_sequence) - 1
    } else {
        base_sequence + delta
    }
}

/// The sequence that follows `last`.
pub fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

/// Whether a batch takes part in idempotence (Kafka: `hasProducerId`).
pub fn is_idempotent(h: &BatchHeader) -> bool {
    h.producer_id >= 0
}

/// Entries changed by batches judged but not yet committed (copies of the
/// committed entries, updated).
#[derive(Debug, Clone, Default)]
pub struct Staged {
    entries: HashMap<i64, ProducerEntry>,
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    fn current<'a>(&'a self, staged: &'a Staged, producer_id: i64) -> Option<&'a ProducerEntry> {
        staged
            .entries
            .get(&producer_id)
            .or_else(|| self.producers.get(&producer_id))
    }

    /// Judge an idempotent batch (`producer_id >= 0`) against the committed
    /// state overlaid with `staged`.
    pub fn check(&self, staged: &Staged, h: &BatchHeader) -> Result<Verdict, ProducerError> {
        let producer_id = h.producer_id;
        let epoch = h.producer_epoch;
        let first = h.base_sequence;
        if first < 0 {
            return Err(ProducerError::InvalidSequence {
                producer_id,
                sequence: first,
            });
        }
        let Some(entry) = self.current(staged, producer_id) else {
            return Ok(Verdict::Append);
        };
        if epoch < entry.epoch {
            return Err(ProducerError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current: entry.epoch,
            });
        }
        let expected = if epoch == entry.epoch {
            let last = last_sequence(first, h.last_offset_delta);
            if let Some(b) = entry
                .batches
                .iter()
                .find(|b| b.first_seq == first && b.last_seq == last)
            {
                return Ok(Verdict::Duplicate(*b));
            }
            entry.last().map_or(0, |b| next_sequence(b.last_seq))
        } else {
            0
        };
        if first == expected {
            Ok(Verdict::Append)
        } else {
            Err(ProducerError::OutOfOrderSequence {
                producer_id,
                epoch,
                expected,
                got: first,
            })
        }
    }

    /// Record an accepted batch (judged [`Verdict::Append`]) in `staged`,
    /// now that its offsets are known.
    pub fn stage(&self, staged: &mut Staged, h: &BatchHeader, first_offset: u64, last_offset: u64) {
        let entry = staged.entries.entry(h.producer_id).or_insert_with(|| {
            match self.producers.get(&h.producer_id) {
                Some(e) => e.clone(),
                None => ProducerEntry {
                    epoch: h.producer_epoch,
                    batches: VecDeque::new(),
                },
            }
        });
        entry.push(h.producer_epoch, meta(h, first_offset, last_offset));
    }

    /// Make staged changes current (their batches are written).
    pub fn commit(&mut self, staged: &Staged) {
        for (id, e) in &staged.entries {
            self.producers.insert(*id, e.clone());
        }
    }

    /// Rebuild from a stored batch header (recovery): no judging, the log
    /// is what it is. Headers must come in log order.
    pub fn replay(&mut self, h: &BatchHeader) {
        if !is_idempotent(h) || h.base_sequence < 0 || h.base_offset < 0 {
            return;
        }
        let m = meta(h, h.base_offset as u64, h.last_offset() as u64);
        match self.producers.get_mut(&h.producer_id) {
            Some(e) => e.push(h.producer_epoch, m),
            None => {
                self.producers.insert(
                    h.producer_id,
                    ProducerEntry {
                        epoch: h.producer_epoch,
                        batches: VecDeque::from([m]),
                    },
                );
            }
        }
    }

    /// Forget batches at or after `end` (log truncation). A producer left
    /// with no remembered batch is forgotten, so it is accepted at any
    /// sequence again (the unknown-producer rule), rather than be refused
    /// for a gap the truncation made.
    pub fn truncate(&mut self, end: u64) {
        self.producers.retain(|_, e| {
            e.batches.retain(|b| b.last_offset < end);
            !e.batches.is_empty()
        });
    }

    pub fn clear(&mut self) {
        self.producers.clear();
    }

    /// Forget producers whose newest batch is more than `max_idle_ms` older
    /// than `now_ms`; returns how many. A forgotten producer that comes back
    /// is an unknown producer (accepted at any sequence).
    pub fn expire(&mut self, now_ms: u64, max_idle_ms: u64) -> usize {
        let before = self.producers.len();
        let cutoff = (now_ms as i64).saturating_sub(max_idle_ms.min(i64::MAX as u64) as i64);
        self.producers
            .retain(|_, e| e.last().is_some_and(|b| b.max_timestamp >= cutoff));
        before - self.producers.len()
    }
}

/// Why a producer-state snapshot file is not usable (then recovery walks
/// the log instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot truncated")]
    Truncated,
    #[error("not a producer-state snapshot (magic or version)")]
    BadMagic,
    #[error("snapshot checksum mismatch")]
    BadChecksum,
    #[error("snapshot entry {0} is malformed")]
    BadEntry(usize),
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"ODPS";
const SNAPSHOT_VERSION: u8 = 1;
const SNAPSHOT_HEAD: usize = 4 + 1 + 8 + 4;
const BATCH_META_LEN: usize = 4 + 4 + 8 + 8 + 8;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let end = self.at.checked_add(N).ok_or(SnapshotError::Truncated)?;
        let s = self.b.get(self.at..end).ok_or(SnapshotError::Truncated)?;
        self.at = end;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, SnapshotError> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, SnapshotError> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
}

impl ProducerStates {
    /// The state as a snapshot file's bytes, for the log prefix below
    /// `offset`. Layout (big endian): `"ODPS"`, version u8 = 1, offset u64,
    /// entry count u32; per entry producer id i64, epoch i16, batch count
    /// u8 (1..=5), per batch first seq i32, last seq i32, first offset u64,
    /// last offset u64, max timestamp i64; then CRC-32C u32 of all before.
    pub fn encode_snapshot(&self, offset: u64) -> Vec<u8> {
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(SNAPSHOT_HEAD + 4 + ids.len() * 80);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let e = &self.producers[id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parse snapshot bytes (untrusted: a torn or foreign file is an
    /// error, never a panic): the offset it covers and the state.
    pub fn decode_snapshot(b: &[u8]) -> Result<(u64, Self), SnapshotError> {
        if b.len() < SNAPSHOT_HEAD + 4 {
            return Err(SnapshotError::Truncated);
        }
        if &b[..4] != SNAPSHOT_MAGIC || b[4] != SNAPSHOT_VERSION {
            return Err(SnapshotError::BadMagic);
        }
        let (body, tail) = b.split_at(b.len() - 4);
        let stored = u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if crc32c::crc32c(body) != stored {
            return Err(SnapshotError::BadChecksum);
        }
        let mut r = Reader { b: body, at: 5 };
        let offset = r.u64()?;
        let count = r.i32()? as u32 as usize;
        // Each entry takes at least 11 + 36 bytes: a count the body cannot
        // hold is refused before anything is allocated for it.
        if count > body.len() / (11 + BATCH_META_LEN) {
            return Err(SnapshotError::Truncated);
        }
        let mut producers = HashMap::with_capacity(count);
        for k in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let n = r.u8()? as usize;
            if id < 0 || !(1..=DEDUP_WINDOW).contains(&n) {
                return Err(SnapshotError::BadEntry(k));
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                let m = BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.u64()?,
                    last_offset: r.u64()?,
                    max_timestamp: r.i64()?,
                };
                if m.first_seq < 0
                    || m.last_seq < 0
                    || m.last_offset < m.first_offset
                    || m.last_offset >= offset
                {
                    return Err(SnapshotError::BadEntry(k));
                }
                batches.push_back(m);
            }
            if producers
                .insert(id, ProducerEntry { epoch, batches })
                .is_some()
            {
                return Err(SnapshotError::BadEntry(k));
            }
        }
        if r.at != body.len() {
            return Err(SnapshotError::BadEntry(count));
        }
        Ok((offset, Self { producers }))
    }
}

fn meta(h: &BatchHeader, first_offset: u64, last_offset: u64) -> BatchMeta {
    BatchMeta {
        first_seq: h.base_sequence,
        last_seq: last_sequence(h.base_sequence, h.last_offset_delta),
        first_offset,
        last_offset,
        max_timestamp: h.max_timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;

    fn header(pid: i64, epoch: i16, seq: i32, records: usize) -> BatchHeader {
        let mut bb = BatchBuilder::new(1_000).producer(pid, epoch, seq);
        for _ in 0..records {
            bb.value(b"v");
        }
        BatchHeader::parse(&bb.build()).unwrap()
    }

    /// Judge and, if new, stage and commit at `offset`; returns the verdict.
    fn append(
        st: &mut ProducerStates,
        h: &BatchHeader,
        offset: u64,
    ) -> Result<Verdict, ProducerError> {
        let mut staged = Staged::default();
        let v = st.check(&staged, h)?;
        if v == Verdict::Append {
            st.stage(&mut staged, h, offset, offset + h.last_offset_delta as u64);
            st.commit(&staged);
        }
        Ok(v)
    }

    #[test]
    fn in_order_batches_are_accepted_and_a_retry_is_a_duplicate() {
        let mut st = ProducerStates::new();
        assert_eq!(append(&mut st, &header(7, 0, 0, 3), 0), Ok(Verdict::Append));
        assert_eq!(append(&mut st, &header(7, 0, 3, 2), 3), Ok(Verdict::Append));
        match append(&mut st, &header(7, 0, 0, 3), 99) {
            Ok(Verdict::Duplicate(b)) => assert_eq!((b.first_offset, b.last_offset), (0, 2)),
            other => panic!("expected a duplicate, got {other:?}"),
        }
        match append(&mut st, &header(7, 0, 3, 2), 99) {
            Ok(Verdict::Duplicate(b)) => assert_eq!((b.first_offset, b.last_offset), (3, 4)),
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert_eq!(append(&mut st, &header(7, 0, 5, 1), 5), Ok(Verdict::Append));
    }

    #[test]
    fn a_gap_or_a_changed_batch_is_out_of_order() {
        let mut st = ProducerStates::new();
        append(&mut st, &header(1, 0, 0, 3), 0).unwrap();
        assert_eq!(
            append(&mut st, &header(1, 0, 4, 1), 3),
            Err(ProducerError::OutOfOrderSequence {
                producer_id: 1,
                epoch: 0,
                expected: 3,
                got: 4
            })
        );
        // Same first sequence, different length: not the same batch.
        assert!(matches!(
            append(&mut st, &header(1, 0, 0, 2), 3),
            Err(ProducerError::OutOfOrderSequence { .. })
        ));
        // The refusals changed nothing.
        assert_eq!(append(&mut st, &header(1, 0, 3, 1), 3), Ok(Verdict::Append));
    }

    #[test]
    fn stale_epochs_are_fenced_and_new_epochs_start_at_zero() {
        let mut st = ProducerStates::new();
        append(&mut st, &header(1, 2, 0, 1), 0).unwrap();
        assert!(matches!(
            append(&mut st, &header(1, 1, 1, 1), 1),
            Err(ProducerError::InvalidProducerEpoch {
                epoch: 1,
                current: 2,
                ..
            })
        ));
        // A retry with an older epoch is refused too, not a duplicate.
        assert!(matches!(
            append(&mut st, &header(1, 1, 0, 1), 1),
            Err(ProducerError::InvalidProducerEpoch { .. })
        ));
        assert!(matches!(
            append(&mut st, &header(1, 3, 5, 1), 1),
            Err(ProducerError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(append(&mut st, &header(1, 3, 0, 1), 1), Ok(Verdict::Append));
        assert_eq!(st.get(1).unwrap().epoch, 3);
        // The old epoch's batches are gone: its sequence 0 is now stale.
        assert!(matches!(
            append(&mut st, &header(1, 2, 0, 1), 2),
            Err(ProducerError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn unknown_producers_start_anywhere_and_negative_sequences_are_invalid() {
        let mut st = ProducerStates::new();
        assert_eq!(
            append(&mut st, &header(9, 4, 1234, 2), 0),
            Ok(Verdict::Append)
        );
        assert_eq!(
            append(&mut st, &header(9, 4, 1236, 1), 2),
            Ok(Verdict::Append)
        );
        assert!(matches!(
            append(&mut st, &header(10, 0, -1, 1), 3),
            Err(ProducerError::InvalidSequence { .. })
        ));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 1), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        let mut st = ProducerStates::new();
        append(&mut st, &header(1, 0, i32::MAX - 1, 2), 0).unwrap();
        assert_eq!(append(&mut st, &header(1, 0, 0, 1), 2), Ok(Verdict::Append));
        // A batch crossing the wrap.
        let mut st = ProducerStates::new();
        append(&mut st, &header(1, 0, i32::MAX - 1, 4), 0).unwrap();
        assert_eq!(st.get(1).unwrap().last().unwrap().last_seq, 1);
        assert_eq!(append(&mut st, &header(1, 0, 2, 1), 4), Ok(Verdict::Append));
        assert!(matches!(
            append(&mut st, &header(1, 0, i32::MAX - 1, 4), 9),
            Ok(Verdict::Duplicate(_))
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_duplicates() {
        let mut st = ProducerStates::new();
        for i in 0..7 {
            append(&mut st, &header(1, 0, i, 1), i as u64).unwrap();
        }
        assert_eq!(st.get(1).unwrap().batches().count(), DEDUP_WINDOW);
        for i in 2..7 {
            assert!(matches!(
                append(&mut st, &header(1, 0, i, 1), 99),
                Ok(Verdict::Duplicate(b)) if b.first_offset == i as u64
            ));
        }
        for i in 0..2 {
            assert!(matches!(
                append(&mut st, &header(1, 0, i, 1), 99),
                Err(ProducerError::OutOfOrderSequence { expected: 7, .. })
            ));
        }
    }

    #[test]
    fn staged_batches_are_seen_by_later_ones_and_commit_together() {
        let st0 = ProducerStates::new();
        let mut st = st0.clone();
        let mut staged = Staged::default();
        let a = header(1, 0, 0, 2);
        let b = header(1, 0, 2, 2);
        assert_eq!(st.check(&staged, &a), Ok(Verdict::Append));
        st.stage(&mut staged, &a, 0, 1);
        // The second batch of a round follows the first, staged one.
        assert_eq!(st.check(&staged, &b), Ok(Verdict::Append));
        assert!(matches!(st.check(&staged, &a), Ok(Verdict::Duplicate(_))));
        st.stage(&mut staged, &b, 2, 3);
        assert_eq!(st, st0, "nothing committed yet");
        st.commit(&staged);
        assert_eq!(st.get(1).unwrap().last().unwrap().last_offset, 3);
    }

    #[test]
    fn replay_and_truncate_rebuild_the_window() {
        let mut st = ProducerStates::new();
        let mut off = 0i64;
        for i in 0..3 {
            let mut h = header(5, 0, i * 2, 2);
            h.base_offset = off;
            off += 2;
            st.replay(&h);
        }
        let mut plain = header(-1, -1, -1, 1);
        plain.base_offset = off;
        st.replay(&plain);
        assert_eq!(st.len(), 1);
        assert!(matches!(
            append(&mut st, &header(5, 0, 4, 2), 7),
            Ok(Verdict::Duplicate(b)) if b.first_offset == 4
        ));
        st.truncate(4);
        assert_eq!(st.get(5).unwrap().last().unwrap().last_offset, 3);
        assert_eq!(append(&mut st, &header(5, 0, 4, 2), 4), Ok(Verdict::Append));
        st.truncate(0);
        assert!(st.is_empty());
    }

    #[test]
    fn idle_producers_expire() {
        let mut st = ProducerStates::new();
        append(&mut st, &header(1, 0, 0, 1), 0).unwrap(); // timestamp 1000
        let mut bb = BatchBuilder::new(50_000).producer(2, 0, 0);
        bb.value(b"v");
        append(&mut st, &BatchHeader::parse(&bb.build()).unwrap(), 1).unwrap();
        assert_eq!(
            st.expire(1_000 + 10_000, 10_000),
            0,
            "exactly at the limit: kept"
        );
        assert_eq!(st.expire(1_001 + 10_000, 10_000), 1);
        assert!(st.get(1).is_none() && st.get(2).is_some());
        assert_eq!(st.expire(u64::MAX, u64::MAX), 0);
    }

    #[test]
    fn snapshots_round_trip_and_refuse_damage() {
        let mut st = ProducerStates::new();
        for pid in [3, 1, 2] {
            for i in 0..7 {
                append(
                    &mut st,
                    &header(pid, 1, i * 2, 2),
                    (pid * 100 + i as i64 * 2) as u64,
                )
                .unwrap();
            }
        }
        let bytes = st.encode_snapshot(1_000);
        assert_eq!(
            ProducerStates::decode_snapshot(&bytes),
            Ok((1_000, st.clone()))
        );
        assert_eq!(
            ProducerStates::decode_snapshot(&ProducerStates::new().encode_snapshot(0)),
            Ok((0, ProducerStates::new()))
        );
        for cut in 0..bytes.len() {
            assert!(
                ProducerStates::decode_snapshot(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(ProducerStates::decode_snapshot(&b).is_err(), "flip at {i}");
        }
        // A batch at or past the offset the snapshot claims to cover is refused.
        assert!(ProducerStates::decode_snapshot(&st.encode_snapshot(300)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn snapshot_decoding_never_panics(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)
        ) {
            let _ = ProducerStates::decode_snapshot(&bytes);
            // With a valid checksum and header, the body is still untrusted.
            let mut b = b"ODPS\x01".to_vec();
            b.extend_from_slice(&bytes);
            let crc = crc32c::crc32c(&b);
            b.extend_from_slice(&crc.to_be_bytes());
            let _ = ProducerStates::decode_snapshot(&b);
        }
    }
}
