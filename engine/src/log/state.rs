//! The partition log's bookkeeping, free of I/O.
//!
//! [`LogState`] decides: which offsets an append gets and where its bytes
//! go, when to roll, which byte range answers a read, which segments
//! retention deletes, what is durable. The driver in [`super::PartitionLog`]
//! carries the decisions out through a [`crate::io::Storage`] and reports back.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

#[cfg(test)]
use super::FlushPolicy;
use super::{AppendInfo, FileSlice, LogConfig, LogError};
use crate::batch::{self, BatchError, BatchHeader, Strictness, ASSIGNED_PREFIX_LEN, HEADER_LEN};
use crate::producer::{self, ProducerError, ProducerStates, Staged, Verdict};
use crate::segment::Segment;

/// A producer's record set whose batches passed validation (length, magic,
/// CRC, count, size limit): safe to hand to [`LogState::prepare_append`].
#[derive(Debug, Clone)]
pub struct ValidRecords {
    bytes: Bytes,
    headers: Vec<BatchHeader>,
    /// Some batch carries a producer id: sequence checks apply.
    idempotent: bool,
    /// A replicated append (see [`super::PartitionLog::append_replicated`]):
    /// the offset it must start at. Its producer state is recorded, not
    /// judged: the leader judged it before it was replicated.
    expect: Option<u64>,
}

impl ValidRecords {
    /// Validate every batch of `bytes`; pure, so callers run it before
    /// queueing for the log's single writer.
    pub fn new(bytes: Bytes, max_batch_bytes: usize) -> Result<Self, LogError> {
        let headers = batch::validate_all(&bytes, max_batch_bytes, Strictness::Produce)?;
        let idempotent = headers.iter().any(producer::is_idempotent);
        Ok(Self {
            bytes,
            headers,
            idempotent,
            expect: None,
        })
    }

    /// One batch that must be written at exactly `base_offset`.
    pub fn replicated(
        bytes: Bytes,
        max_batch_bytes: usize,
        base_offset: u64,
    ) -> Result<Self, LogError> {
        let mut set = Self::new(bytes, max_batch_bytes)?;
        if set.headers.len() != 1 {
            return Err(LogError::InvalidBatch(BatchError::Truncated {
                need: set.bytes.len(),
                have: set.headers.first().map_or(0, |h| h.size()),
            }));
        }
        set.expect = Some(base_offset);
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Why one set of an append is not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Producer(ProducerError),
    /// A replicated set whose offset is not the log end.
    NotAtOffset {
        expected: u64,
        log_end: u64,
    },
}

impl From<Refused> for LogError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Producer(e) => LogError::Producer(e),
            Refused::NotAtOffset { expected, log_end } => {
                LogError::NotAtOffset { expected, log_end }
            }
        }
    }
}

/// What an accepted append will do, decided before any byte is written.
#[derive(Debug, Clone)]
pub struct AppendPlan {
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
    /// Roll to a new segment at `base_offset` before writing.
    pub roll: bool,
    pub position: u64,
    /// What to write, in order: for each batch its assigned 16-byte prefix,
    /// then the rest of the producer's bytes, untouched (no copy).
    pub chunks: Vec<Bytes>,
    /// Total bytes of `chunks`.
    pub len: u64,
    /// Per record set, in order: its offsets (the original ones for
    /// duplicates), or why its producer's sequence check refused it.
    pub outcomes: Vec<Result<AppendInfo, Refused>>,
    headers: Vec<BatchHeader>,
    /// Producer state after the written batches, committed with them.
    staged: Staged,
}

/// Where a read must look: a byte range of one segment to scan for the
/// batch holding `offset`.
#[derive(Debug, Clone)]
pub struct ReadPlan<F> {
    pub offset: u64,
    pub segment_base: u64,
    pub file: F,
    pub scan_pos: u64,
    pub scan_len: usize,
    /// The batch holding `offset` starts before this (the next index entry,
    /// or the segment end): where a longer scan must stop.
    pub scan_end: u64,
    /// The segment's [`Segment::version`] when planned: compaction may
    /// swap the file under a read, which then retries.
    pub segment_version: u64,
}

/// What compaction could clean now (see [`LogState::cleanable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanableRange {
    /// How many segments, from the oldest.
    pub segments: usize,
    /// Bytes of those not cleaned since they were sealed (or opened).
    pub dirty_bytes: u64,
    pub total_bytes: u64,
}

impl CleanableRange {
    /// Dirty share of the cleanable bytes (0 when there are none).
    pub fn dirty_ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / self.total_bytes as f64
        }
    }
}

/// Outcome of looking up an offset.
#[derive(Debug, Clone)]
pub enum Locate<F> {
    /// The offset is the log end: nothing to read yet.
    AtEnd,
    Scan(ReadPlan<F>),
}

/// What a flush will make durable once its fdatasync returns.
#[derive(Debug, Clone)]
pub struct FlushTicket<F> {
    pub file: F,
    pub end_offset: u64,
    written: u64,
    generation: u64,
    /// The active segment and its size when the flush began: the file
    /// bytes the fdatasync makes clean.
    segment_base: u64,
    position: u64,
}

/// A file range for the driver to carry out an advice on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRange<F> {
    pub file: F,
    pub pos: u64,
    pub len: u64,
}

/// Cache drops are aligned to this (the largest page-cache folio on x86-64)
/// so no folio straddles the edge of a dropped range and stays behind.
const DROP_ALIGN: u64 = 2 << 20;
/// Blocks are reserved in steps of this.
const RESERVE_STEP: u64 = 1 << 20;
/// At most this far past the write position; a young segment reserves as
/// far ahead as it is long, so idle partitions hold little unused space.
const MAX_RESERVE_AHEAD: u64 = 16 << 20;

/// However rarely the flush policy asks for a sync, no more than this is
/// left unsynced: a roll syncs the old segment's unsynced bytes while the
/// partition's appends wait. With no background sync at all, acks=1 at 423
/// MB/s held appends ~0.5 s at every 1 GiB roll; with this cap the rolls
/// no longer stall (longer stalls of the whole machine seen in those runs
/// remain, cause unknown: docs/benchmarks.md, "Smaller background
/// flushes").
pub const MAX_UNSYNCED_BYTES: u64 = 64 << 20;

/// In the last this many bytes of a segment, the byte threshold of the
/// flush policy drops to [`ROLL_FLUSH_BYTES`]: a roll fdatasyncs the old
/// segment while the partition's appends wait, and the less is unsynced
/// then, the shorter the wait (at most 4 more syncs per segment).
const ROLL_FLUSH_WINDOW: u64 = 4 << 20;
const ROLL_FLUSH_BYTES: u64 = 1 << 20;

/// Log bookkeeping for one partition. `F` is the segment file handle.
#[derive(Debug)]
pub struct LogState<F> {
    pub config: LogConfig,
    segments: VecDeque<Segment<F>>,
    log_start: u64,
    /// Every offset below this is on stable storage.
    durable_end: u64,
    written_bytes: u64,
    synced_bytes: u64,
    last_flush_ms: u64,
    /// Bumped by every truncation, so a flush that straddles one is ignored.
    generation: u64,
    /// Idempotent producers' epochs and last batches.
    producers: ProducerStates,
    /// Compaction cleans only segments wholly below this offset (a
    /// replicated log sets its committed offset here, as Kafka's cleaner
    /// stops at the high watermark). `None`: no limit.
    compaction_limit: Option<u64>,
    /// Retention deletes only segments wholly below this offset (a
    /// replicated log's Raft anchor: batches above it are Raft entries
    /// recovery walks). `None`: no limit.
    retention_limit: Option<u64>,
    /// A replicated log's high watermark: readers see only offsets below
    /// it. `None`: everything written is visible.
    high_watermark: Option<u64>,
    /// Where the batch starting at the high watermark lies (segment base,
    /// position), when that batch is written: reads of that segment stop
    /// there.
    hw_position: Option<(u64, u64)>,
    /// Batches written at or above the high watermark: (base offset,
    /// segment base, position), so moving the watermark needs no I/O.
    above_hw: VecDeque<(u64, u64, u64)>,
    /// Durable bytes kept in the page cache behind the flushed end (see
    /// `PartitionLog::set_cache_window`); `None`: all of them.
    pub cache_window: Option<u64>,
    /// Cleared once the file system refused to reserve blocks, so it is
    /// not asked again.
    can_reserve: bool,
}

impl<F: Clone> LogState<F> {
    /// A log over recovered segments (non-empty, ordered, the last active).
    pub fn new(config: LogConfig, segments: Vec<Segment<F>>, now_ms: u64) -> Self {
        let segments: VecDeque<_> = segments.into();
        let log_start = segments.front().map_or(0, |s| s.base_offset);
        let end = segments.back().map_or(0, |s| s.next_offset);
        Self {
            config,
            segments,
            log_start,
            durable_end: end,
            written_bytes: 0,
            synced_bytes: 0,
            last_flush_ms: now_ms,
            generation: 0,
            producers: ProducerStates::new(),
            compaction_limit: None,
            retention_limit: None,
            high_watermark: None,
            hw_position: None,
            above_hw: VecDeque::new(),
            cache_window: None,
            can_reserve: true,
        }
    }

    /// Offsets readers may see end here (the high watermark of a
    /// replicated log, else the log end).
    pub fn visible_end(&self) -> u64 {
        let end = self.log_end_offset();
        self.high_watermark.map_or(end, |hw| hw.min(end))
    }

    pub fn high_watermark(&self) -> Option<u64> {
        self.high_watermark
    }

    /// Judge one idempotent batch against the producer state of what is
    /// written (a replicated log's leader, before proposing it).
    pub fn judge_producer(&self, h: &BatchHeader) -> Result<Verdict, ProducerError> {
        self.producers.check(&Staged::default(), h)
    }

    /// Where the batch at `hw` starts, if that is known without I/O:
    /// `Some(None)` when nothing is written at or past `hw` (no cap),
    /// `Some(Some((segment base, position)))`, or `None` (written before a
    /// restart: the caller scans for it).
    pub fn known_hw_position(&self, hw: u64) -> Option<Option<(u64, u64)>> {
        if hw >= self.log_end_offset() {
            return Some(None);
        }
        self.above_hw
            .iter()
            .find(|b| b.0 == hw)
            .map(|&(_, seg, pos)| Some((seg, pos)))
    }

    /// Move the high watermark (a batch boundary) with the position of the
    /// batch starting there (`None`: none is written yet).
    pub fn set_high_watermark(&mut self, hw: u64, position: Option<(u64, u64)>) {
        self.high_watermark = Some(hw);
        self.hw_position = position;
        while self.above_hw.front().is_some_and(|b| b.0 < hw) {
            self.above_hw.pop_front();
        }
    }

    /// Install producer state rebuilt by recovery.
    pub fn with_producers(mut self, producers: ProducerStates) -> Self {
        self.producers = producers;
        self
    }

    pub fn producers(&self) -> &ProducerStates {
        &self.producers
    }

    pub fn set_producers(&mut self, producers: ProducerStates) {
        self.producers = producers;
    }

    /// Forget idle producers (see [`producer::PRODUCER_EXPIRATION_MS`]).
    pub fn expire_producers(&mut self, now_ms: u64) -> usize {
        self.producers
            .expire(now_ms, producer::PRODUCER_EXPIRATION_MS)
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log_start
    }

    pub fn log_end_offset(&self) -> u64 {
        self.active().next_offset
    }

    pub fn durable_end_offset(&self) -> u64 {
        self.durable_end
    }

    pub fn segments(&self) -> impl Iterator<Item = &Segment<F>> {
        self.segments.iter()
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    pub fn active(&self) -> &Segment<F> {
        self.segments
            .back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment<F> {
        self.segments
            .back_mut()
            .expect("a log always has an active segment")
    }

    pub fn unflushed_bytes(&self) -> u64 {
        self.written_bytes - self.synced_bytes
    }

    /// Assign offsets and the leader epoch to validated record sets (in
    /// order, as one write) and decide where they go. Nothing changes until
    /// [`Self::commit_append`].
    ///
    /// Idempotent batches are judged here, in queue order, against the
    /// producer state as it will be after the batches before them: this is
    /// the log's single writer path, so pipelined requests of one producer
    /// are judged in arrival order. A duplicate batch is not written (its
    /// set answers with the original offsets); a refused set writes none of
    /// its batches; the other sets of the round are written as usual.
    pub fn prepare_append(
        &self,
        sets: &[ValidRecords],
        leader_epoch: i32,
        now_ms: u64,
    ) -> Result<AppendPlan, LogError> {
        let active = self.active();
        let base_offset = active.next_offset;
        let batches: usize = sets.iter().map(|s| s.headers.len()).sum();
        let mut len = 0u64;
        let mut next = base_offset;
        let mut max_timestamp = -1;
        let mut headers = Vec::with_capacity(batches);
        let mut outcomes = Vec::with_capacity(sets.len());
        let mut prefixes = BytesMut::with_capacity(batches * ASSIGNED_PREFIX_LEN);
        // Per batch of every set, in order: written or not.
        let mut keep = Vec::with_capacity(batches);
        let mut staged = Staged::default();
        let mut verdicts: Vec<Option<producer::BatchMeta>> = Vec::new();
        for set in sets {
            verdicts.clear();
            if let Some(expected) = set.expect {
                if expected != next {
                    keep.extend(std::iter::repeat_n(false, set.headers.len()));
                    outcomes.push(Err(Refused::NotAtOffset {
                        expected,
                        log_end: next,
                    }));
                    continue;
                }
                let mut at = next;
                for h in set.headers.iter().filter(|h| producer::is_idempotent(h)) {
                    let last = at + h.last_offset_delta as u64;
                    self.producers.stage(&mut staged, h, at, last);
                    at = last + 1;
                }
            } else if set.idempotent {
                match self.judge(set, next, &mut staged, &mut verdicts) {
                    Ok(()) => {}
                    Err(e) => {
                        keep.extend(std::iter::repeat_n(false, set.headers.len()));
                        outcomes.push(Err(Refused::Producer(e)));
                        continue;
                    }
                }
            }
            let mut first = None;
            let mut last = 0;
            let mut set_max = -1;
            let mut all_duplicates = true;
            for (k, h) in set.headers.iter().enumerate() {
                if let Some(Some(orig)) = verdicts.get(k) {
                    keep.push(false);
                    first.get_or_insert(orig.first_offset);
                    last = orig.last_offset;
                    set_max = set_max.max(orig.max_timestamp);
                    continue;
                }
                keep.push(true);
                all_duplicates = false;
                let mut h = *h;
                prefixes.put_slice(&batch::assigned_prefix(
                    next as i64,
                    h.batch_length,
                    leader_epoch,
                ));
                h.base_offset = next as i64;
                h.partition_leader_epoch = leader_epoch;
                first.get_or_insert(next);
                next += h.last_offset_delta as u64 + 1;
                last = next - 1;
                len += h.size() as u64;
                set_max = set_max.max(h.max_timestamp);
                max_timestamp = max_timestamp.max(h.max_timestamp);
                headers.push(h);
            }
            outcomes.push(Ok(AppendInfo {
                base_offset: first.unwrap_or(next),
                last_offset: last,
                max_timestamp: set_max,
                duplicate: all_duplicates,
            }));
        }
        let prefixes = prefixes.freeze();
        let mut chunks = Vec::with_capacity(headers.len() * 2);
        let mut written = 0;
        let mut kept = keep.into_iter();
        for set in sets {
            let mut at = 0usize;
            for h in &set.headers {
                if kept.next() == Some(true) {
                    let p = written * ASSIGNED_PREFIX_LEN;
                    chunks.push(prefixes.slice(p..p + ASSIGNED_PREFIX_LEN));
                    chunks.push(set.bytes.slice(at + ASSIGNED_PREFIX_LEN..at + h.size()));
                    written += 1;
                }
                at += h.size();
            }
        }
        if next - base_offset > u32::MAX as u64 + 1 {
            return Err(LogError::TooManyRecords);
        }
        let last_offset = next.saturating_sub(1);
        let full = active.size + len > self.config.segment_bytes;
        let old = now_ms.saturating_sub(active.created_ms) >= self.config.segment_ms;
        let rel_overflow = active.relative(last_offset).is_none();
        let roll = len > 0 && !active.is_empty() && (full || old || rel_overflow);
        Ok(AppendPlan {
            base_offset,
            last_offset,
            max_timestamp,
            roll,
            position: if roll { 0 } else { active.size },
            chunks,
            len,
            outcomes,
            headers,
            staged,
        })
    }

    /// Judge the batches of one set that has idempotent batches, staging
    /// the new ones at the offsets they will get from `next`. On success
    /// `verdicts` holds, per batch, the original batch if it is a duplicate.
    /// On error `staged` is as before the set (a set is taken whole or not).
    fn judge(
        &self,
        set: &ValidRecords,
        mut next: u64,
        staged: &mut Staged,
        verdicts: &mut Vec<Option<producer::BatchMeta>>,
    ) -> Result<(), ProducerError> {
        // A set of one batch fails before staging anything: only sets of
        // several batches need a copy to roll back to.
        let checkpoint = (set.headers.len() > 1).then(|| staged.clone());
        for h in &set.headers {
            let delta = h.last_offset_delta as u64;
            if !producer::is_idempotent(h) {
                verdicts.push(None);
                next += delta + 1;
                continue;
            }
            match self.producers.check(staged, h) {
                Ok(Verdict::Duplicate(orig)) => verdicts.push(Some(orig)),
                Ok(Verdict::Append) => {
                    self.producers.stage(staged, h, next, next + delta);
                    verdicts.push(None);
                    next += delta + 1;
                }
                Err(e) => {
                    if let Some(c) = checkpoint {
                        *staged = c;
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// A new, empty active segment at the log end (after the driver created
    /// its file and the old one is sealed and synced).
    pub fn push_segment(&mut self, segment: Segment<F>) {
        self.active_mut().seal();
        self.segments.push_back(segment);
    }

    /// The bytes of `plan` are written: make them visible.
    pub fn commit_append(&mut self, plan: &AppendPlan) {
        let interval = self.config.index_interval_bytes;
        let hw = self.high_watermark;
        let seg_base = self.active().base_offset;
        let mut pos = plan.position;
        for h in &plan.headers {
            if hw.is_some_and(|hw| h.base_offset as u64 >= hw) {
                self.above_hw
                    .push_back((h.base_offset as u64, seg_base, pos));
            }
            pos += h.size() as u64;
        }
        // The first batch written at the high watermark is where readers
        // stop until it commits.
        if hw == Some(plan.base_offset) && self.hw_position.is_none() && !plan.headers.is_empty() {
            self.hw_position = Some((seg_base, plan.position));
        }
        let seg = self.active_mut();
        let mut pos = plan.position;
        for h in &plan.headers {
            seg.record_batch(pos, h, interval);
            pos += h.size() as u64;
        }
        self.written_bytes += plan.len;
        self.producers.commit(&plan.staged);
    }

    /// Whether the policy (or [`MAX_UNSYNCED_BYTES`], or a roll coming
    /// near, see [`ROLL_FLUSH_WINDOW`]) wants a flush now.
    pub fn flush_due(&self, now_ms: u64) -> bool {
        let p = &self.config.flush;
        let pending = self.unflushed_bytes();
        let mut every_bytes = p.every_bytes.unwrap_or(u64::MAX).min(MAX_UNSYNCED_BYTES);
        if self.active().size.saturating_add(ROLL_FLUSH_WINDOW) >= self.config.segment_bytes {
            every_bytes = every_bytes.min(ROLL_FLUSH_BYTES);
        }
        pending > 0
            && (p.every_append
                || pending >= every_bytes
                || p.every_ms
                    .is_some_and(|ms| now_ms.saturating_sub(self.last_flush_ms) >= ms))
    }

    /// Start a flush: the file to fdatasync and what it will cover.
    pub fn begin_flush(&self) -> FlushTicket<F> {
        let active = self.active();
        FlushTicket {
            file: active.file.clone(),
            end_offset: self.log_end_offset(),
            written: self.written_bytes,
            generation: self.generation,
            segment_base: active.base_offset,
            position: active.size,
        }
    }

    /// After `ticket`'s flush completed: the durable file ranges that fell
    /// out of the cache window (`PartitionLog::set_cache_window`, counted
    /// back from the flushed position over the segments), each handed out
    /// once. The driver drops them from the page cache.
    pub fn take_cache_drops(&mut self, ticket: &FlushTicket<F>) -> Vec<FileRange<F>> {
        let Some(window) = self.cache_window else {
            return Vec::new();
        };
        if ticket.generation != self.generation {
            return Vec::new();
        }
        let mut keep = window;
        let mut out = Vec::new();
        for seg in self.segments.iter_mut().rev() {
            let flushed_end = match seg.base_offset.cmp(&ticket.segment_base) {
                std::cmp::Ordering::Greater => continue, // newer than the flush
                std::cmp::Ordering::Equal => ticket.position.min(seg.size),
                // Older segments were synced whole when they rolled.
                std::cmp::Ordering::Less => seg.size,
            };
            // A sealed segment wholly outside the window goes to its end
            // (no folio lies past the end of a file); otherwise the cut is
            // aligned down.
            let whole = keep == 0 && seg.sealed;
            let cut = if whole {
                flushed_end
            } else {
                flushed_end.saturating_sub(keep) / DROP_ALIGN * DROP_ALIGN
            };
            keep = keep.saturating_sub(flushed_end);
            let from = seg.cache_dropped_to.min(flushed_end);
            if cut > from {
                out.push(FileRange {
                    file: seg.file.clone(),
                    pos: from,
                    len: cut - from,
                });
                seg.cache_dropped_to = cut;
            } else if whole {
                // Dropped whole before, and every older segment with it.
                break;
            }
        }
        out
    }

    /// Before writing `len` bytes at `position` of the active segment: the
    /// range to reserve blocks for, if the reservation does not reach past
    /// them. Counted as reserved from here on; see
    /// [`Self::reserve_failed`].
    pub fn take_reservation(&mut self, position: u64, len: u64) -> Option<FileRange<F>> {
        if !self.can_reserve {
            return None;
        }
        let seg = self.active_mut();
        let end = position.saturating_add(len);
        if end <= seg.reserved_to {
            return None;
        }
        let ahead = seg.size.clamp(RESERVE_STEP, MAX_RESERVE_AHEAD);
        let to = end.saturating_add(ahead).div_ceil(RESERVE_STEP) * RESERVE_STEP;
        let from = seg.reserved_to.max(position);
        seg.reserved_to = to;
        Some(FileRange {
            file: seg.file.clone(),
            pos: from,
            len: to - from,
        })
    }

    /// The file system cannot reserve blocks: do not ask again.
    pub fn reserve_failed(&mut self) {
        self.can_reserve = false;
    }

    /// A flush begun by [`Self::begin_flush`] finished. If the log was
    /// truncated meanwhile, the offsets it covered may since have been
    /// rewritten, so it proves nothing about them and is ignored.
    pub fn complete_flush(&mut self, ticket: &FlushTicket<F>, now_ms: u64) {
        if ticket.generation != self.generation {
            return;
        }
        let end = ticket.end_offset.min(self.log_end_offset());
        self.durable_end = self.durable_end.max(end);
        self.synced_bytes = self.synced_bytes.max(ticket.written);
        self.last_flush_ms = now_ms;
    }

    /// Find what to read for `offset`.
    pub fn locate(&self, offset: u64) -> Result<Locate<F>, LogError> {
        let end = self.log_end_offset();
        if offset == end {
            return Ok(Locate::AtEnd);
        }
        if offset < self.log_start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start,
                log_end: end,
            });
        }
        if offset >= self.visible_end() {
            return Ok(Locate::AtEnd);
        }
        let i = self.segments.partition_point(|s| s.base_offset <= offset);
        let mut i = i.saturating_sub(1);
        // An offset past a segment's last batch (a gap, or an empty
        // segment) reads from the next one.
        while offset >= self.segments[i].next_offset || self.segments[i].is_empty() {
            i += 1;
            if i == self.segments.len() {
                return Ok(Locate::AtEnd);
            }
        }
        let seg = &self.segments[i];
        let rel = seg.relative(offset).unwrap_or(0);
        let scan_pos = seg.index.floor(rel).map_or(0, |(_, p)| p as u64);
        // The batch holding the offset starts before the next index entry's
        // batch ends; whatever interval the index was built with.
        let scan_end = seg.index.next_after(rel).map_or(seg.size, |(_, p)| {
            (p as u64 + HEADER_LEN as u64).min(seg.size)
        });
        let window = self.config.index_interval_bytes as u64 + HEADER_LEN as u64;
        let scan_len = window.min(scan_end - scan_pos) as usize;
        Ok(Locate::Scan(ReadPlan {
            offset: offset.max(seg.base_offset),
            segment_base: seg.base_offset,
            file: seg.file.clone(),
            scan_pos,
            scan_len,
            scan_end,
            segment_version: seg.version,
        }))
    }

    /// Turn the scanned window of a [`ReadPlan`] into a slice of whole
    /// batches: the batch holding the offset (whole, even if larger than
    /// `max_bytes`), then as many following whole batches as fit. `None` if
    /// the segment changed under the read (retry).
    pub fn slice_from_scan(
        &self,
        plan: &ReadPlan<F>,
        window: &[u8],
        max_bytes: u64,
    ) -> Option<FileSlice<F>> {
        let i = self
            .segments
            .iter()
            .position(|s| s.base_offset == plan.segment_base)?;
        let seg = &self.segments[i];
        if seg.version != plan.segment_version {
            return None;
        }
        // A replicated log shows this segment only up to the high watermark.
        let seg_size = match self.hw_position {
            Some((b, p)) if b == seg.base_offset => p.min(seg.size),
            _ => seg.size,
        };
        let mut start = None;
        let mut end = 0u64;
        for (at, h) in batch::headers(window).chain(partial_last(window)) {
            let pos = plan.scan_pos + at as u64;
            let batch_end = pos + h.size() as u64;
            if batch_end > seg_size {
                break;
            }
            match start {
                None if h.last_offset() as u64 >= plan.offset => {
                    start = Some((pos, h.base_offset as u64));
                    end = batch_end;
                }
                None => {}
                Some((s, _)) if batch_end - s <= max_bytes => end = batch_end,
                Some(_) => break,
            }
        }
        let (start, first_offset) = start?;
        // Extend through whole batches the window did not show, using known
        // batch boundaries: index positions and the segment end.
        let limit = start.saturating_add(max_bytes);
        if seg_size <= limit {
            end = end.max(seg_size);
        } else if let Some(p) = seg.index.floor_position(limit.min(seg_size), end) {
            end = p;
        }
        Some(FileSlice {
            file: seg.file.clone(),
            position: start,
            len: end - start,
            first_offset,
        })
    }

    /// Segments whose whole contents are past `retention.ms` or beyond
    /// `retention.bytes`, oldest first; never the active segment.
    pub fn retention_victims(&self, now_ms: u64) -> usize {
        if !self.config.cleanup_policy.delete {
            return 0;
        }
        let mut total = self.size_bytes();
        let mut n = 0;
        for seg in self.segments.iter().take(self.segments.len() - 1) {
            if self.retention_limit.is_some_and(|l| seg.next_offset > l) {
                break;
            }
            let by_size = self
                .config
                .retention_bytes
                .is_some_and(|limit| total.saturating_sub(seg.size) >= limit);
            let newest = if seg.max_timestamp >= 0 {
                seg.max_timestamp as u64
            } else {
                seg.created_ms
            };
            let by_age = self
                .config
                .retention_ms
                .is_some_and(|ms| now_ms.saturating_sub(newest) > ms);
            if !(by_size || by_age) {
                break;
            }
            total -= seg.size;
            n += 1;
        }
        n
    }

    pub fn set_retention_limit(&mut self, limit: Option<u64>) {
        self.retention_limit = limit;
    }

    /// See [`super::PartitionLog::set_compaction_limit`].
    pub fn set_compaction_limit(&mut self, limit: Option<u64>) {
        self.compaction_limit = limit;
    }

    /// Bumped by every truncation or reset (compaction aborts a swap that
    /// straddles one).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The sealed segments compaction may clean now: the longest prefix of
    /// sealed segments whose newest record is at least
    /// `min.compaction.lag.ms` old and that ends at or below the
    /// compaction limit (never the active segment).
    pub fn cleanable(&self, now_ms: u64) -> CleanableRange {
        let lag = self.config.min_compaction_lag_ms;
        let mut r = CleanableRange {
            segments: 0,
            dirty_bytes: 0,
            total_bytes: 0,
        };
        for seg in self.segments.iter().take(self.segments.len() - 1) {
            if lag > 0
                && seg.max_timestamp >= 0
                && seg.max_timestamp as u64 > now_ms.saturating_sub(lag)
            {
                break;
            }
            if self.compaction_limit.is_some_and(|l| seg.next_offset > l) {
                break;
            }
            r.segments += 1;
            r.total_bytes += seg.size;
            if !seg.cleaned {
                r.dirty_bytes += seg.size;
            }
        }
        r
    }

    /// Swap a compacted segment in for the sealed segment at `base` (or
    /// drop it if compaction left nothing). False if that segment changed
    /// meanwhile (then nothing is done). The new segment gets a newer
    /// version, so reads planned on the old file retry.
    pub fn replace_segment(&mut self, base: u64, version: u64, with: Option<Segment<F>>) -> bool {
        let last = self.segments.len() - 1;
        let Some(i) = self
            .segments
            .iter()
            .position(|s| s.base_offset == base && s.version == version)
        else {
            return false;
        };
        if i == last || !self.segments[i].sealed {
            return false;
        }
        match with {
            Some(mut seg) => {
                seg.version = version + 1;
                seg.cleaned = true;
                seg.sealed = true;
                self.segments[i] = seg;
            }
            None => {
                self.segments.remove(i);
                if let Some(first) = self.segments.front() {
                    self.log_start = self.log_start.max(first.base_offset);
                }
            }
        }
        true
    }

    /// Compaction looked at the segment and found nothing to remove.
    pub fn mark_cleaned(&mut self, base: u64, version: u64) {
        if let Some(s) = self
            .segments
            .iter_mut()
            .find(|s| s.base_offset == base && s.version == version)
        {
            s.cleaned = s.sealed;
        }
    }

    /// Drop the `n` oldest segments (after the driver deleted their files).
    pub fn remove_oldest(&mut self, n: usize) -> Vec<Segment<F>> {
        let n = n.min(self.segments.len() - 1);
        let gone: Vec<_> = self.segments.drain(..n).collect();
        if let Some(first) = self.segments.front() {
            self.log_start = self.log_start.max(first.base_offset);
        }
        gone
    }

    /// Index of the segment that holds `offset` (the last one starting at or
    /// before it).
    pub fn segment_index_for(&self, offset: u64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1)
    }

    pub fn segment(&self, i: usize) -> &Segment<F> {
        &self.segments[i]
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Truncation: drop every segment after index `keep` and cut segment
    /// `keep` at `position`, where the batch starting at `next_offset`
    /// began; `max_timestamp` is its recomputed maximum.
    pub fn truncate(
        &mut self,
        keep: usize,
        position: u64,
        next_offset: u64,
        max_timestamp: i64,
    ) -> Vec<Segment<F>> {
        let gone: Vec<_> = self.segments.drain(keep + 1..).collect();
        let seg = self.active_mut();
        let rel = seg.relative(next_offset).unwrap_or(u32::MAX);
        seg.trim_indexes(rel);
        seg.size = position;
        // The file is cut at `position` too: its reservation and dropped
        // pages past it are gone.
        seg.reserved_to = seg.reserved_to.min(position);
        seg.cache_dropped_to = seg.cache_dropped_to.min(position);
        seg.next_offset = next_offset;
        seg.max_timestamp = max_timestamp;
        self.durable_end = self.durable_end.min(next_offset);
        self.generation += 1;
        self.producers.truncate(next_offset);
        self.above_hw.retain(|b| b.0 < next_offset);
        self.forget_hw_position_at_or_above(next_offset);
        gone
    }

    fn forget_hw_position_at_or_above(&mut self, offset: u64) {
        if self.high_watermark.is_some_and(|hw| hw >= offset) {
            self.hw_position = None;
        }
    }

    /// Replace every segment by one empty segment (truncation to before the
    /// log start, or a full reset).
    pub fn reset(&mut self, segment: Segment<F>) -> Vec<Segment<F>> {
        let gone: Vec<_> = self.segments.drain(..).collect();
        self.log_start = segment.base_offset;
        self.durable_end = segment.base_offset;
        self.generation += 1;
        self.producers.clear();
        self.above_hw.clear();
        self.hw_position = None;
        if let Some(hw) = self.high_watermark.as_mut() {
            *hw = (*hw).max(segment.base_offset);
        }
        self.segments.push_back(segment);
        gone
    }
}

/// The last header in a window may be complete while its batch body is cut
/// off by the window's end; it still marks a batch boundary.
fn partial_last(window: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let consumed: usize = batch::headers(window).map(|(_, h)| h.size()).sum();
    BatchHeader::parse(&window[consumed..])
        .ok()
        .filter(|h| h.batch_length >= batch::MIN_BATCH_LENGTH as i32)
        .map(|h| (consumed, h))
        .into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::sample_batch;

    fn state() -> LogState<()> {
        LogState::new(LogConfig::default(), vec![Segment::new(0, (), 0)], 0)
    }

    fn append(st: &mut LogState<()>, records: usize) -> AppendPlan {
        let set = ValidRecords::new(sample_batch(records, 10, 0).freeze(), 1 << 20).unwrap();
        let plan = st.prepare_append(&[set], 0, 0).unwrap();
        st.commit_append(&plan);
        plan
    }

    #[test]
    fn a_flush_that_straddles_a_truncation_proves_nothing() {
        let mut st = state();
        append(&mut st, 5);
        let ticket = st.begin_flush();
        assert_eq!(ticket.end_offset, 5);
        // Truncate to 0 and write new data at the same offsets while the
        // fdatasync is in flight: it did not cover the new bytes.
        let _ = st.truncate(0, 0, 0, -1);
        append(&mut st, 5);
        st.complete_flush(&ticket, 1);
        assert_eq!(st.durable_end_offset(), 0);
        let t2 = st.begin_flush();
        st.complete_flush(&t2, 2);
        assert_eq!(st.durable_end_offset(), 5);
    }

    #[test]
    fn flush_policy_decides_from_bytes_and_time() {
        let mut st = state();
        st.config.flush = FlushPolicy {
            every_append: false,
            every_bytes: Some(1000),
            every_ms: Some(50),
            on_demand: true,
        };
        assert!(!st.flush_due(0), "nothing to flush");
        append(&mut st, 1);
        assert!(!st.flush_due(10));
        assert!(st.flush_due(50), "old enough");
        append(&mut st, 60);
        assert!(st.unflushed_bytes() >= 1000);
        assert!(st.flush_due(10), "big enough");
        let t = st.begin_flush();
        st.complete_flush(&t, 10);
        assert_eq!(st.unflushed_bytes(), 0);
        assert!(!st.flush_due(1000));
    }

    #[test]
    fn near_the_roll_the_byte_threshold_drops_so_a_roll_finds_little_unsynced() {
        let mut st = state();
        st.config.flush = FlushPolicy {
            every_append: false,
            every_bytes: Some(ROLL_FLUSH_BYTES * 4),
            every_ms: None,
            on_demand: true,
        };
        st.config.segment_bytes = 1 << 30;
        // A batch of 4000 records is some 80 KB; write past 1 MiB unsynced.
        let big = |st: &mut LogState<()>| {
            while st.unflushed_bytes() < ROLL_FLUSH_BYTES {
                append(st, 4000);
            }
        };
        big(&mut st);
        assert!(!st.flush_due(0), "far from the roll: the policy's 4 MiB");
        // The same unsynced bytes within the last window of the segment.
        let mut near = state();
        near.config = st.config.clone();
        near.config.segment_bytes = ROLL_FLUSH_WINDOW + ROLL_FLUSH_BYTES / 2;
        big(&mut near);
        assert!(near.flush_due(0), "near the roll: 1 MiB is enough");
        let t = near.begin_flush();
        near.complete_flush(&t, 0);
        assert!(!near.flush_due(0), "nothing unsynced");
        // A smaller policy threshold is kept.
        near.config.flush.every_bytes = Some(1000);
        append(&mut near, 60);
        assert!(near.flush_due(0));
    }

    fn idem(pid: i64, epoch: i16, seq: i32, records: usize) -> ValidRecords {
        let mut bb = crate::batch::BatchBuilder::new(10).producer(pid, epoch, seq);
        for _ in 0..records {
            bb.value(b"value");
        }
        ValidRecords::new(bb.build().freeze(), 1 << 20).unwrap()
    }

    fn two_batches(a: ValidRecords, b: ValidRecords) -> ValidRecords {
        let mut bytes = a.bytes.to_vec();
        bytes.extend_from_slice(&b.bytes);
        ValidRecords::new(Bytes::from(bytes), 1 << 20).unwrap()
    }

    #[test]
    fn a_round_judges_sets_in_order_and_writes_only_new_batches() {
        let mut st = state();
        let plain = ValidRecords::new(sample_batch(2, 10, 0).freeze(), 1 << 20).unwrap();
        let sets = [
            idem(1, 0, 0, 3), // 0..=2
            idem(1, 0, 3, 2), // 3..=4, follows the staged set before it
            idem(1, 0, 0, 3), // retry inside the round: duplicate of 0..=2
            idem(1, 0, 9, 1), // gap: refused
            plain.clone(),    // 5..=6, unaffected by the refusal
            idem(1, 0, 5, 1), // 7, the refused set changed nothing
        ];
        let mut plan = st.prepare_append(&sets, 0, 0).unwrap();
        let infos: Vec<_> = plan
            .outcomes
            .iter()
            .map(|o| {
                o.clone()
                    .map(|i| (i.base_offset, i.last_offset, i.duplicate))
            })
            .collect();
        assert_eq!(infos[0], Ok((0, 2, false)));
        assert_eq!(infos[1], Ok((3, 4, false)));
        assert_eq!(infos[2], Ok((0, 2, true)));
        assert!(matches!(
            infos[3],
            Err(Refused::Producer(ProducerError::OutOfOrderSequence {
                expected: 5,
                got: 9,
                ..
            }))
        ));
        assert_eq!(infos[4], Ok((5, 6, false)));
        assert_eq!(infos[5], Ok((7, 7, false)));
        let written: usize = [&sets[0], &sets[1], &plain, &sets[5]]
            .iter()
            .map(|s| s.len())
            .sum();
        assert_eq!(
            plan.len as usize, written,
            "duplicates and refused sets are not written"
        );
        let chunk_bytes: usize = plan.chunks.iter().map(|c| c.len()).sum();
        assert_eq!(chunk_bytes, written);
        assert!(
            st.producers().is_empty(),
            "nothing is committed before the write"
        );
        plan.chunks.clear();
        st.commit_append(&plan);
        assert_eq!(st.log_end_offset(), 8);
        // Next round: the committed state is what the round left.
        let plan = st
            .prepare_append(&[idem(1, 0, 5, 1), idem(1, 0, 6, 1)], 0, 0)
            .unwrap();
        assert!(matches!(
            plan.outcomes[0],
            Ok(AppendInfo {
                base_offset: 7,
                duplicate: true,
                ..
            })
        ));
        assert!(matches!(
            plan.outcomes[1],
            Ok(AppendInfo {
                base_offset: 8,
                duplicate: false,
                ..
            })
        ));
    }

    #[test]
    fn a_set_is_taken_whole_or_not_and_an_all_duplicate_round_writes_nothing() {
        let mut st = state();
        let plan = st.prepare_append(&[idem(4, 2, 0, 2)], 0, 0).unwrap();
        st.commit_append(&plan);
        // Second batch of the set is stale: neither batch is written.
        let bad = two_batches(idem(4, 2, 2, 1), idem(4, 1, 3, 1));
        let plan = st.prepare_append(&[bad], 0, 0).unwrap();
        assert!(matches!(
            plan.outcomes[0],
            Err(Refused::Producer(
                ProducerError::InvalidProducerEpoch { .. }
            ))
        ));
        assert_eq!(plan.len, 0);
        assert!(!plan.roll);
        st.commit_append(&plan);
        // A set of a duplicate then a new batch: only the new one is written.
        let mixed = two_batches(idem(4, 2, 0, 2), idem(4, 2, 2, 1));
        let plan = st.prepare_append(&[mixed], 0, 0).unwrap();
        assert!(matches!(
            plan.outcomes[0],
            Ok(AppendInfo {
                base_offset: 0,
                last_offset: 2,
                duplicate: false,
                ..
            })
        ));
        st.commit_append(&plan);
        assert_eq!(st.log_end_offset(), 3);
        let plan = st.prepare_append(&[idem(4, 2, 2, 1)], 0, 0).unwrap();
        assert_eq!(plan.len, 0);
        assert!(matches!(
            plan.outcomes[0],
            Ok(AppendInfo {
                base_offset: 2,
                last_offset: 2,
                duplicate: true,
                ..
            })
        ));
    }
}
