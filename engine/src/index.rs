//! Sparse per-segment indexes, kept in memory and written beside the log.
//!
//! `.index`: 8-byte entries `relativeOffset u32 | position u32` (big endian),
//! one for the first batch of the segment and then one for the first batch
//! that starts at least `index.interval.bytes` after the previous entry.
//! `.timeindex`: 12-byte entries `timestamp i64 | relativeOffset u32`; an
//! entry `(t, r)` says that the batches up to and including the one at
//! relative offset `r` have max timestamps <= t, so a search for a timestamp
//! above `t` may start at `r`. Sealing a segment appends its exact maximum.
//!
//! Files on disk are untrusted: [`OffsetIndex::decode`] and
//! [`TimeIndex::decode`] check every entry and refuse a file that is
//! inconsistent with its segment, and the log then rebuilds it by scanning.

/// Why an index file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("index length {0} is not a whole number of entries")]
    RaggedLength(usize),
    #[error("entry {0} is out of order or outside the segment")]
    BadEntry(usize),
}

pub const OFFSET_ENTRY: usize = 8;
pub const TIME_ENTRY: usize = 12;

/// Relative offset -> byte position, sparse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn entries(&self) -> &[(u32, u32)] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    /// Append an entry; callers add them in increasing order.
    pub fn push(&mut self, rel_offset: u32, position: u32) {
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|&(r, p)| r < rel_offset && p < position));
        self.entries.push((rel_offset, position));
    }

    /// The last entry at or before `rel_offset`: where a scan for it starts.
    pub fn floor(&self, rel_offset: u32) -> Option<(u32, u32)> {
        let i = self.entries.partition_point(|&(r, _)| r <= rel_offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The first entry after `rel_offset`: where a scan for it can stop.
    pub fn next_after(&self, rel_offset: u32) -> Option<(u32, u32)> {
        let i = self.entries.partition_point(|&(r, _)| r <= rel_offset);
        self.entries.get(i).copied()
    }

    /// The greatest indexed position `<= position` and `> after`: a batch
    /// boundary usable to end a read.
    pub fn floor_position(&self, position: u64, after: u64) -> Option<u64> {
        let i = self.entries.partition_point(|&(_, p)| p as u64 <= position);
        let p = self.entries[..i].last()?.1 as u64;
        (p > after).then_some(p)
    }

    /// Drop entries at or after `rel_offset`.
    pub fn truncate_from(&mut self, rel_offset: u32) {
        let i = self.entries.partition_point(|&(r, _)| r < rel_offset);
        self.entries.truncate(i);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY);
        for &(r, p) in &self.entries {
            out.extend_from_slice(&r.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Parse an index file for a segment of `segment_size` bytes holding
    /// relative offsets below `rel_limit`. Entries must strictly increase in
    /// both fields, and the first must be `(0.., 0)`.
    pub fn decode(b: &[u8], segment_size: u64, rel_limit: u64) -> Result<Self, IndexError> {
        if !b.len().is_multiple_of(OFFSET_ENTRY) {
            return Err(IndexError::RaggedLength(b.len()));
        }
        let mut entries: Vec<(u32, u32)> = Vec::with_capacity(b.len() / OFFSET_ENTRY);
        for (i, e) in b.chunks_exact(OFFSET_ENTRY).enumerate() {
            let r = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            let p = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
            let ordered = match entries.last() {
                None => p == 0,
                Some(&(pr, pp)) => r > pr && p > pp,
            };
            if !ordered || p as u64 >= segment_size || r as u64 >= rel_limit {
                return Err(IndexError::BadEntry(i));
            }
            entries.push((r, p));
        }
        Ok(Self { entries })
    }
}

/// Max timestamp so far -> relative offset of the batch that reached it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn entries(&self) -> &[(i64, u32)] {
        &self.entries
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    pub fn push(&mut self, timestamp: i64, rel_offset: u32) {
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|&(t, r)| t < timestamp && r < rel_offset));
        self.entries.push((timestamp, rel_offset));
    }

    /// Relative offset to start a search for the first batch with max
    /// timestamp `>= target`: the last entry whose timestamp is below it.
    pub fn search_start(&self, target: i64) -> Option<u32> {
        let i = self.entries.partition_point(|&(t, _)| t < target);
        i.checked_sub(1).map(|i| self.entries[i].1)
    }

    pub fn truncate_from(&mut self, rel_offset: u32) {
        let i = self.entries.partition_point(|&(_, r)| r < rel_offset);
        self.entries.truncate(i);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY);
        for &(t, r) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&r.to_be_bytes());
        }
        out
    }

    /// Parse a time index for a segment holding relative offsets below
    /// `rel_limit`: timestamps and offsets strictly increase.
    pub fn decode(b: &[u8], rel_limit: u64) -> Result<Self, IndexError> {
        if !b.len().is_multiple_of(TIME_ENTRY) {
            return Err(IndexError::RaggedLength(b.len()));
        }
        let mut entries: Vec<(i64, u32)> = Vec::with_capacity(b.len() / TIME_ENTRY);
        for (i, e) in b.chunks_exact(TIME_ENTRY).enumerate() {
            let mut t = [0u8; 8];
            t.copy_from_slice(&e[..8]);
            let t = i64::from_be_bytes(t);
            let r = u32::from_be_bytes([e[8], e[9], e[10], e[11]]);
            let ordered = entries.last().is_none_or(|&(pt, pr)| t > pt && r > pr);
            if !ordered || r as u64 >= rel_limit {
                return Err(IndexError::BadEntry(i));
            }
            entries.push((t, r));
        }
        Ok(Self { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_round_trips_and_finds_floors() {
        let mut ix = OffsetIndex::default();
        ix.push(0, 0);
        ix.push(10, 4096);
        ix.push(25, 9000);
        let back = OffsetIndex::decode(&ix.encode(), 10_000, 30).unwrap();
        assert_eq!(back, ix);
        assert_eq!(ix.floor(9), Some((0, 0)));
        assert_eq!(ix.floor(10), Some((10, 4096)));
        assert_eq!(ix.floor(1000), Some((25, 9000)));
        assert_eq!(ix.floor_position(8999, 0), Some(4096));
        assert_eq!(ix.floor_position(8999, 4096), None);
        ix.truncate_from(10);
        assert_eq!(ix.entries(), &[(0, 0)]);
    }

    #[test]
    fn offset_index_refuses_inconsistent_files() {
        let mut ix = OffsetIndex::default();
        ix.push(0, 0);
        ix.push(10, 4096);
        let b = ix.encode();
        assert!(OffsetIndex::decode(&b[..7], 10_000, 30).is_err());
        assert!(OffsetIndex::decode(&b, 4096, 30).is_err()); // position past the segment
        assert!(OffsetIndex::decode(&b, 10_000, 10).is_err()); // offset past the segment
        let mut swapped = b[8..].to_vec();
        swapped.extend_from_slice(&b[..8]);
        assert!(OffsetIndex::decode(&swapped, 10_000, 30).is_err());
    }

    #[test]
    fn time_index_search_starts_before_the_target() {
        let mut tx = TimeIndex::default();
        tx.push(100, 0);
        tx.push(200, 5);
        tx.push(300, 9);
        assert_eq!(tx.search_start(50), None);
        assert_eq!(tx.search_start(100), None);
        assert_eq!(tx.search_start(101), Some(0));
        assert_eq!(tx.search_start(300), Some(5));
        assert_eq!(TimeIndex::decode(&tx.encode(), 10).unwrap(), tx);
        assert!(TimeIndex::decode(&tx.encode(), 9).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..120), size in 0u64..100_000, lim in 0u64..1000) {
            let _ = OffsetIndex::decode(&b, size, lim);
            let _ = TimeIndex::decode(&b, lim);
        }
    }
}
