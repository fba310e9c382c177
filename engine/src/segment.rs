//! One segment of a partition log: its files' names and what is known about
//! its contents (size, offsets, timestamps, indexes). Pure bookkeeping; the
//! bytes live in the segment's `.log` file.

use crate::batch::{self, BatchError, BatchHeader, Strictness};
use crate::index::{OffsetIndex, TimeIndex};

pub const LOG_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";
/// Producer-state snapshot: idempotent producers' state for every batch
/// below the offset in its name (written when a segment rolls).
pub const PRODUCER_SNAPSHOT_SUFFIX: &str = ".producers";
/// A compacted segment being written (deleted by recovery: not yet committed).
pub const CLEANED_SUFFIX: &str = ".log.cleaned";
/// A compacted segment, complete and synced, that replaces the `.log` of the
/// same base (recovery finishes the swap).
pub const SWAP_SUFFIX: &str = ".log.swap";

/// `00000000000000000042.log` and friends: 20-digit base offset + suffix.
pub fn file_name(base_offset: u64, suffix: &str) -> String {
    format!("{base_offset:020}{suffix}")
}

/// The base offset of a segment file name with the given suffix.
pub fn parse_file_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment: file handle `F` plus the metadata the log keeps in memory.
#[derive(Debug, Clone)]
pub struct Segment<F> {
    pub base_offset: u64,
    pub file: F,
    /// Bytes of whole, committed batches.
    pub size: u64,
    /// One past the last offset of the last batch (= base if empty).
    pub next_offset: u64,
    /// Largest batch max timestamp, -1 if none.
    pub max_timestamp: i64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// When the segment was created or opened (for `segment.ms`).
    pub created_ms: u64,
    /// Its indexes are written and it takes no more appends.
    pub sealed: bool,
    /// Bumped when compaction replaces the file: a read that planned on
    /// the old file notices and retries.
    pub version: u64,
    /// Compaction has cleaned it (in memory only: after a restart every
    /// segment counts as dirty once).
    pub cleaned: bool,
    last_index_pos: Option<u64>,
    last_time_index_pos: Option<u64>,
    /// File bytes below this were handed to `drop_cached` (the log's cache
    /// window moved past them).
    pub cache_dropped_to: u64,
    /// File bytes below this have blocks reserved (`reserve`).
    pub reserved_to: u64,
}

/// Why a scan of stored bytes stopped before their end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanStop {
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    #[error("batch base offset {found} is below the expected {expected}")]
    OffsetRegression { found: i64, expected: u64 },
    #[error("batch offsets do not fit the segment's 32-bit relative offsets")]
    OffsetOverflow,
}

impl<F> Segment<F> {
    pub fn new(base_offset: u64, file: F, now_ms: u64) -> Self {
        Self {
            base_offset,
            file,
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            created_ms: now_ms,
            sealed: false,
            version: 0,
            cleaned: false,
            last_index_pos: None,
            last_time_index_pos: None,
            cache_dropped_to: 0,
            reserved_to: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Relative offset of `offset` in this segment, if it fits.
    pub fn relative(&self, offset: u64) -> Option<u32> {
        offset
            .checked_sub(self.base_offset)
            .and_then(|r| u32::try_from(r).ok())
    }

    /// Account for a batch (already validated, offsets assigned) that now
    /// sits at `position`: sizes, offsets, sparse index entries.
    pub fn record_batch(&mut self, position: u64, h: &BatchHeader, index_interval: u32) {
        let rel = (h.base_offset as u64 - self.base_offset) as u32;
        let due = |last: Option<u64>| last.is_none_or(|p| position >= p + index_interval as u64);
        if due(self.last_index_pos) {
            self.index.push(rel, position as u32);
            self.last_index_pos = Some(position);
        }
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            let newer = self
                .time_index
                .last()
                .is_none_or(|(t, r)| h.max_timestamp > t && rel > r);
            if due(self.last_time_index_pos) && newer {
                self.time_index.push(h.max_timestamp, rel);
                self.last_time_index_pos = Some(position);
            }
        }
        self.size = position + h.size() as u64;
        self.next_offset = h.last_offset() as u64 + 1;
    }

    /// Stop taking appends: make the time index end at the exact maximum.
    pub fn seal(&mut self) {
        if let Some(rel) = self.relative(self.next_offset.saturating_sub(1)) {
            let newer = self
                .time_index
                .last()
                .is_none_or(|(t, r)| self.max_timestamp > t && rel > r);
            if self.max_timestamp >= 0 && newer && !self.is_empty() {
                self.time_index.push(self.max_timestamp, rel);
            }
        }
        self.sealed = true;
    }

    /// Check the next stored batch at the start of `bytes` (which sits at
    /// segment position `self.size`) and account for it. Returns its size.
    pub fn scan_next(&mut self, bytes: &[u8], index_interval: u32) -> Result<usize, ScanStop> {
        let h = batch::validate(bytes, usize::MAX, Strictness::Stored)?;
        let expected = self.next_offset;
        if h.base_offset < 0 || (h.base_offset as u64) < expected {
            return Err(ScanStop::OffsetRegression {
                found: h.base_offset,
                expected,
            });
        }
        if self.relative(h.last_offset() as u64).is_none() {
            return Err(ScanStop::OffsetOverflow);
        }
        let position = self.size;
        if position + h.size() as u64 > u32::MAX as u64 {
            return Err(ScanStop::OffsetOverflow);
        }
        self.record_batch(position, &h, index_interval);
        Ok(h.size())
    }

    /// Forget everything from relative offset `rel` on (truncation); the
    /// caller fixes `size`, `next_offset` and `max_timestamp`.
    pub fn trim_indexes(&mut self, rel: u32) {
        self.index.truncate_from(rel);
        self.time_index.truncate_from(rel);
        self.last_index_pos = self.index.last().map(|(_, p)| p as u64);
        self.last_time_index_pos = None;
        self.sealed = false;
    }

    /// Install indexes loaded from disk for a sealed segment.
    pub fn restore(
        &mut self,
        size: u64,
        next_offset: u64,
        index: OffsetIndex,
        time_index: TimeIndex,
    ) {
        self.size = size;
        self.next_offset = next_offset;
        self.max_timestamp = time_index.last().map_or(-1, |(t, _)| t);
        self.last_index_pos = index.last().map(|(_, p)| p as u64);
        self.index = index;
        self.time_index = time_index;
        self.sealed = true;
    }
}

/// Scan stored segment bytes (as recovery does) into a fresh segment:
/// returns the segment state and, if the bytes do not end cleanly, where and
/// why the valid prefix ends. Never panics, whatever the bytes.
pub fn scan_bytes(
    base_offset: u64,
    bytes: &[u8],
    index_interval: u32,
) -> (Segment<()>, Option<ScanStop>) {
    let mut seg = Segment::new(base_offset, (), 0);
    while (seg.size as usize) < bytes.len() {
        match seg.scan_next(&bytes[seg.size as usize..], index_interval) {
            Ok(_) => {}
            Err(e) => return (seg, Some(e)),
        }
    }
    (seg, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{assign, sample_batch};

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(42, LOG_SUFFIX), "00000000000000000042.log");
        assert_eq!(
            parse_file_name("00000000000000000042.log", LOG_SUFFIX),
            Some(42)
        );
        assert_eq!(parse_file_name("0000000000000000042.log", LOG_SUFFIX), None);
        assert_eq!(
            parse_file_name("0000000000000000004x.log", LOG_SUFFIX),
            None
        );
        assert_eq!(
            parse_file_name("00000000000000000042.index", LOG_SUFFIX),
            None
        );
    }

    #[test]
    fn scan_builds_sparse_indexes_and_stops_at_garbage() {
        let mut bytes = Vec::new();
        let mut next = 100i64;
        for i in 0..20 {
            let mut b = sample_batch(3, 500, 1000 + i);
            assign(&mut b, next, 0);
            next += 3;
            bytes.extend_from_slice(&b);
        }
        let clean_len = bytes.len();
        let (seg, stop) = scan_bytes(100, &bytes, 4096);
        assert!(stop.is_none());
        assert_eq!(seg.size as usize, clean_len);
        assert_eq!(seg.next_offset, 160);
        assert_eq!(seg.max_timestamp, 1019);
        assert!(seg.index.len() > 1 && seg.index.len() < 20);
        bytes.extend_from_slice(&[0xff; 30]);
        let (seg, stop) = scan_bytes(100, &bytes, 4096);
        assert!(stop.is_some());
        assert_eq!(seg.size as usize, clean_len);
    }

    #[test]
    fn scan_refuses_offsets_going_backwards() {
        let mut a = sample_batch(2, 10, 0);
        assign(&mut a, 10, 0);
        let mut b = sample_batch(2, 10, 0);
        assign(&mut b, 11, 0);
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(&b);
        let (seg, stop) = scan_bytes(10, &bytes, 4096);
        assert_eq!(seg.next_offset, 12);
        assert!(matches!(stop, Some(ScanStop::OffsetRegression { .. })));
    }
}
