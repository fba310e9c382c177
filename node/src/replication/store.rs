//! The Raft log of one partition, as raft-rs sees it, over the partition
//! log's batches: hard state, configuration, the index → offset translation
//! and a cache of recent entries. Pure bookkeeping: it says what to write
//! ([`LogWrite`]) and what to read ([`FetchRequest`]); the caller does I/O.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use serde::{Deserialize, Serialize};

use super::entry::{self, EntryError};

/// The entry just below the first one held: its index, term, and the
/// offset where the next entry starts. Everything at or below it is
/// compacted away (the log may still hold those batches, for consumers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub index: u64,
    pub term: u64,
    pub offset: u64,
}

/// What is persisted beside the log (one small file per partition,
/// replaced atomically): Raft's hard state, the voters, the anchor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftMeta {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
    pub voters: Vec<u64>,
    #[serde(default)]
    pub learners: Vec<u64>,
    pub anchor: Anchor,
    /// The leader epochs of the entries compacted below the anchor, as
    /// (epoch, first offset), oldest first: what OffsetForLeaderEpoch
    /// needs about batches Raft no longer holds. Empty in state files
    /// written before it existed, and after a snapshot (the log restarts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub epochs: Vec<EpochStart>,
}

/// Where a leader epoch (Raft term) starts in the partition log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStart {
    pub epoch: u64,
    pub offset: u64,
}

/// Epoch starts kept below the anchor at most (one per leader change that
/// wrote something; the oldest go first).
const MAX_EPOCHS: usize = 4096;

impl RaftMeta {
    /// A new partition replicated on `voters`, its log starting at `offset`.
    pub fn new(voters: Vec<u64>, offset: u64) -> Self {
        Self {
            voters,
            anchor: Anchor {
                offset,
                ..Anchor::default()
            },
            ..Self::default()
        }
    }
}

/// A write the partition log must carry out, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogWrite {
    /// Drop everything at and above `offset` (entries a new leader overwrote).
    Truncate { offset: u64 },
    /// Write `data` (one batch) at exactly `base_offset`, epoch = `term`.
    Append {
        index: u64,
        term: u64,
        base_offset: u64,
        data: Bytes,
    },
    /// A snapshot replaced the log: it now starts, empty, at `offset`.
    Reset { offset: u64 },
}

/// Entries raft-rs wants (to send a lagging follower) that are no longer
/// cached: read the batches in `[from_offset, to_offset)` and hand them to
/// [`super::replica::Replica::entries_fetched`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRequest {
    pub low: u64,
    pub high: u64,
    pub from_offset: u64,
    pub to_offset: u64,
}

/// Why the log on disk cannot be this Raft log.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("batch at offset {found}, expected the next entry at {expected}")]
    Gap { expected: u64, found: u64 },
    #[error("entry {index} has term {term}, below the previous entry's {prev}")]
    TermWentBack { index: u64, term: u64, prev: u64 },
    #[error(transparent)]
    Entry(#[from] EntryError),
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    term: u64,
    base: u64,
    count: u64,
}

/// Bytes of fetched (old) entries kept for lagging followers.
const FETCHED_CAP: usize = 16 << 20;

#[derive(Default)]
struct Fetching {
    wanted: Option<(u64, u64)>,
    contexts: Vec<GetEntriesContext>,
    fetched: BTreeMap<u64, Entry>,
    fetched_bytes: usize,
}

pub struct LogStore {
    hard: HardState,
    conf: ConfState,
    anchor: Anchor,
    /// Entries `anchor.index + 1 ..`: term and offsets.
    slots: VecDeque<Slot>,
    /// Entries `cache_from ..= last_index`, with data.
    cache: VecDeque<Entry>,
    cache_from: u64,
    cache_bytes: usize,
    fetching: RefCell<Fetching>,
    /// Epoch starts below the anchor (see [`RaftMeta::epochs`]).
    epochs: Vec<EpochStart>,
}

impl LogStore {
    /// A store for `meta` with no entries above the anchor yet.
    pub fn new(meta: &RaftMeta) -> Self {
        let hard = HardState {
            term: meta.term,
            vote: meta.vote,
            commit: meta.anchor.index,
            ..Default::default()
        };
        let conf = ConfState {
            voters: meta.voters.clone(),
            learners: meta.learners.clone(),
            ..Default::default()
        };
        Self {
            hard,
            conf,
            anchor: meta.anchor,
            slots: VecDeque::new(),
            cache: VecDeque::new(),
            cache_from: meta.anchor.index + 1,
            cache_bytes: 0,
            fetching: RefCell::default(),
            epochs: meta.epochs.clone(),
        }
    }

    /// Rebuild from `meta` and the batches the log holds from
    /// `meta.anchor.offset` on, as `(base_offset, epoch, bytes)`. Entries
    /// above the persisted commit are cached (raft-rs reads them
    /// synchronously when they commit). A commit beyond what the log holds
    /// (lost data) is clamped, and reported.
    pub fn recover(
        meta: &RaftMeta,
        batches: impl IntoIterator<Item = (u64, u64, Bytes)>,
    ) -> Result<(Self, Option<u64>), RecoverError> {
        let mut s = Self::new(meta);
        let mut prev = meta.anchor.term;
        for (offset, term, data) in batches {
            let index = s.last() + 1;
            let expected = s.next_offset();
            if offset != expected {
                return Err(RecoverError::Gap {
                    expected,
                    found: offset,
                });
            }
            if term < prev {
                return Err(RecoverError::TermWentBack { index, term, prev });
            }
            prev = term;
            let e = entry::from_batch(index, term, data)?;
            let count = entry::offset_count(&e)?;
            s.slots.push_back(Slot {
                term,
                base: offset,
                count,
            });
            if index > meta.commit {
                s.cache_push(e);
            } else {
                s.cache_from = index + 1;
            }
        }
        let mut lost = None;
        if meta.commit > s.last() {
            lost = Some(meta.commit);
        }
        s.hard.commit = meta.commit.min(s.last()).max(meta.anchor.index);
        Ok((s, lost))
    }

    fn cache_push(&mut self, e: Entry) {
        if self.cache.is_empty() {
            self.cache_from = e.index;
        }
        self.cache_bytes += e.data.len();
        self.cache.push_back(e);
    }

    /// What to persist now.
    pub fn meta(&self) -> RaftMeta {
        RaftMeta {
            term: self.hard.term,
            vote: self.hard.vote,
            commit: self.hard.commit,
            voters: self.conf.voters.clone(),
            learners: self.conf.learners.clone(),
            anchor: self.anchor,
            epochs: self.epochs.clone(),
        }
    }

    pub fn anchor(&self) -> Anchor {
        self.anchor
    }

    pub fn set_hardstate(&mut self, hs: HardState) {
        self.hard = hs;
    }

    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf = cs;
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }

    fn last(&self) -> u64 {
        self.anchor.index + self.slots.len() as u64
    }

    /// Where the next entry will start.
    pub fn next_offset(&self) -> u64 {
        self.slots
            .back()
            .map_or(self.anchor.offset, |s| s.base + s.count)
    }

    fn slot(&self, index: u64) -> Option<&Slot> {
        let i = index.checked_sub(self.anchor.index + 1)?;
        self.slots.get(i as usize)
    }

    /// The offset just past entry `index` (its batch's last offset + 1).
    pub fn end_offset(&self, index: u64) -> Option<u64> {
        if index == self.anchor.index {
            return Some(self.anchor.offset);
        }
        self.slot(index).map(|s| s.base + s.count)
    }

    /// The first offset of entry `index`.
    pub fn base_offset(&self, index: u64) -> Option<u64> {
        self.slot(index).map(|s| s.base)
    }

    /// The index and term of the entry whose batch spans exactly
    /// `first..=last`, if the log holds one above the anchor.
    pub fn entry_spanning(&self, first: u64, last: u64) -> Option<(u64, u64)> {
        let i = self.slots.partition_point(|s| s.base + s.count <= first);
        let s = self.slots.get(i)?;
        (s.base == first && s.base + s.count == last + 1)
            .then_some((self.anchor.index + 1 + i as u64, s.term))
    }

    /// The term of an entry Raft holds (above the anchor) that holds `offset`.
    pub fn term_at_offset(&self, offset: u64) -> Option<u64> {
        let i = self.slots.partition_point(|s| s.base + s.count <= offset);
        self.slots
            .get(i)
            .filter(|s| s.base <= offset)
            .map(|s| s.term)
    }

    /// Epoch starts below the anchor. Without a recorded history (an old
    /// state file, or after a snapshot) the anchor stands in for it: its
    /// entry, whose term is known, ends at the anchor's offset.
    fn compacted_epochs(&self) -> std::borrow::Cow<'_, [EpochStart]> {
        if self.epochs.is_empty() && self.anchor.index > 0 {
            std::borrow::Cow::Owned(vec![EpochStart {
                epoch: self.anchor.term,
                offset: self.anchor.offset,
            }])
        } else {
            std::borrow::Cow::Borrowed(&self.epochs)
        }
    }

    /// The leader epoch of the batch holding `offset`, as far as this log
    /// knows: held entries exactly, compacted ones from the epoch history.
    pub fn epoch_at_offset(&self, offset: u64) -> Option<u64> {
        if offset >= self.next_offset() {
            return None;
        }
        if let Some(t) = self.term_at_offset(offset) {
            return Some(t);
        }
        let below = self.compacted_epochs();
        let i = below.partition_point(|e| e.offset <= offset);
        i.checked_sub(1).map(|i| below[i].epoch)
    }

    /// Kafka's OffsetForLeaderEpoch over this log (KIP-101 / KIP-279):
    /// the largest epoch `<= epoch` the log has, and the offset where it
    /// ends — the start of the next larger epoch, or the log end for the
    /// last epoch. An epoch older than everything known gets itself and
    /// the start of the first known later epoch (as Kafka answers); one
    /// newer than the last epoch of the log gets `None` (UNDEFINED).
    pub fn end_offset_for_epoch(&self, epoch: u64) -> Option<(u64, u64)> {
        let below = self.compacted_epochs();
        let j = below.partition_point(|e| e.epoch <= epoch);
        let (floor, next) = if j < below.len() {
            (
                j.checked_sub(1).map(|j| below[j].epoch),
                Some(below[j].offset),
            )
        } else {
            let i = self.slots.partition_point(|s| s.term <= epoch);
            let floor = match i.checked_sub(1) {
                Some(i) => Some(self.slots[i].term),
                None => below.last().map(|e| e.epoch),
            };
            (floor, self.slots.get(i).map(|s| s.base))
        };
        match (floor, next) {
            (Some(f), Some(n)) => Some((f, n)),
            (None, Some(n)) => Some((epoch, n)),
            (Some(f), None) if f == epoch => Some((epoch, self.next_offset())),
            _ => None,
        }
    }

    /// Forget epochs that end at or below `log_start` (retention removed
    /// their batches); the one holding `log_start` stays.
    pub fn forget_epochs_below(&mut self, log_start: u64) {
        let gone = self
            .epochs
            .windows(2)
            .take_while(|w| w[1].offset <= log_start)
            .count();
        self.epochs.drain(..gone);
    }

    /// Take entries handed over by a `Ready` into the log, saying what to
    /// write. Entries at or below the last index overwrite (truncate) it.
    pub fn append(&mut self, entries: &[Entry]) -> Result<Vec<LogWrite>, EntryError> {
        let mut writes = Vec::with_capacity(entries.len() + 1);
        let Some(first) = entries.first() else {
            return Ok(writes);
        };
        if first.index <= self.last() {
            let keep = first.index.saturating_sub(self.anchor.index + 1) as usize;
            let offset = self.slots.get(keep).map_or(self.next_offset(), |s| s.base);
            self.slots.truncate(keep);
            while self.cache.back().is_some_and(|e| e.index >= first.index) {
                let e = self.cache.pop_back().expect("checked");
                self.cache_bytes -= e.data.len();
            }
            if self.cache.is_empty() {
                self.cache_from = first.index;
            }
            self.fetching.borrow_mut().fetched.split_off(&first.index);
            writes.push(LogWrite::Truncate { offset });
        }
        for e in entries {
            let count = entry::offset_count(e)?;
            let base = self.next_offset();
            self.slots.push_back(Slot {
                term: e.term,
                base,
                count,
            });
            writes.push(LogWrite::Append {
                index: e.index,
                term: e.term,
                base_offset: base,
                data: entry::to_batch(e),
            });
            self.cache_push(e.clone());
        }
        Ok(writes)
    }

    /// Drop cached data of entries up to `index` (they stay readable from
    /// the log through a fetch).
    pub fn evict_through(&mut self, index: u64) {
        while self.cache.front().is_some_and(|e| e.index <= index) {
            let e = self.cache.pop_front().expect("checked");
            self.cache_bytes -= e.data.len();
            self.cache_from = e.index + 1;
        }
    }

    pub fn cached_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// Forget entries up to `index` (Raft log compaction; they must be
    /// committed and applied). The batches stay in the partition log.
    pub fn compact_to(&mut self, index: u64) {
        if index <= self.anchor.index || index > self.last() {
            return;
        }
        let end = self.end_offset(index).expect("in range");
        let term = self.slot(index).expect("in range").term;
        let n = (index - self.anchor.index) as usize;
        if self.epochs.is_empty() && self.anchor.index > 0 {
            // No history yet below the anchor: keep what the anchor says.
            self.epochs.push(EpochStart {
                epoch: self.anchor.term,
                offset: self.anchor.offset,
            });
        }
        for s in self.slots.drain(..n) {
            if self.epochs.last().is_none_or(|e| e.epoch != s.term) {
                self.epochs.push(EpochStart {
                    epoch: s.term,
                    offset: s.base,
                });
            }
        }
        if self.epochs.len() > MAX_EPOCHS {
            let extra = self.epochs.len() - MAX_EPOCHS;
            self.epochs.drain(..extra);
        }
        self.evict_through(index);
        if self.cache.is_empty() {
            self.cache_from = index + 1;
        }
        self.anchor = Anchor {
            index,
            term,
            offset: end,
        };
        let mut f = self.fetching.borrow_mut();
        f.fetched = f.fetched.split_off(&(index + 1));
    }

    /// Install a leader's snapshot: the log restarts, empty, after it.
    pub fn apply_snapshot(&mut self, snap: &Snapshot) -> u64 {
        let m = snap.get_metadata();
        let offset = decode_snapshot_offset(&snap.data).unwrap_or(self.next_offset());
        self.anchor = Anchor {
            index: m.index,
            term: m.term,
            offset,
        };
        self.slots.clear();
        // The log restarts at the anchor: no history below it here.
        self.epochs.clear();
        self.cache.clear();
        self.cache_bytes = 0;
        self.cache_from = m.index + 1;
        self.conf = m.get_conf_state().clone();
        self.hard.commit = self.hard.commit.max(m.index);
        let mut f = self.fetching.borrow_mut();
        f.fetched.clear();
        f.fetched_bytes = 0;
        offset
    }

    /// A read raft-rs asked for, not yet handed to the caller.
    pub fn take_fetch_request(&self) -> Option<FetchRequest> {
        let (low, high) = self.fetching.borrow_mut().wanted.take()?;
        Some(FetchRequest {
            low,
            high,
            from_offset: self.base_offset(low)?,
            to_offset: self.end_offset(high - 1)?,
        })
    }

    /// Batches read for a [`FetchRequest`]; returns the waiting contexts
    /// (raft-rs retries its sends with them).
    pub fn fetched(
        &self,
        req: &FetchRequest,
        batches: impl IntoIterator<Item = (u64, u64, Bytes)>,
    ) -> Vec<GetEntriesContext> {
        let mut f = self.fetching.borrow_mut();
        if f.fetched_bytes > FETCHED_CAP {
            f.fetched.clear();
            f.fetched_bytes = 0;
        }
        for (index, (offset, _epoch, data)) in (req.low..).zip(batches) {
            if index >= req.high || self.base_offset(index) != Some(offset) {
                break;
            }
            let Some(term) = self.slot(index).map(|s| s.term) else {
                break;
            };
            match entry::from_batch(index, term, data) {
                Ok(e) => {
                    f.fetched_bytes += e.data.len();
                    f.fetched.insert(index, e);
                }
                Err(e) => {
                    tracing::warn!(index, error = %e, "fetched batch is not the entry");
                    break;
                }
            }
        }
        std::mem::take(&mut f.contexts)
    }
}

fn limit(entries: &mut Vec<Entry>, max: Option<u64>) {
    let Some(max) = max else { return };
    let mut size = 0u64;
    let keep = entries
        .iter()
        .take_while(|e| {
            size += e.data.len() as u64 + 16;
            size <= max
        })
        .count();
    entries.truncate(keep.max(1));
}

fn decode_snapshot_offset(data: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(..8)?.try_into().ok()?))
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard.clone(), self.conf.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max = max_size.into();
        if low <= self.anchor.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if low >= self.cache_from {
            let from = (low - self.cache_from) as usize;
            let to = (high - self.cache_from) as usize;
            let mut v: Vec<Entry> = self.cache.range(from..to).cloned().collect();
            limit(&mut v, max);
            return Ok(v);
        }
        let mut f = self.fetching.borrow_mut();
        if f.fetched.contains_key(&low) {
            let mut v: Vec<Entry> = f
                .fetched
                .range(low..high)
                .map(|(_, e)| e.clone())
                .enumerate()
                .take_while(|(i, e)| e.index == low + *i as u64)
                .map(|(_, e)| e)
                .collect();
            limit(&mut v, max);
            return Ok(v);
        }
        if context.can_async() {
            let high = high.min(self.cache_from);
            f.wanted = Some(match f.wanted {
                Some((l, h)) => (l.min(low), h.max(high)),
                None => (low, high),
            });
            f.contexts.push(context);
            return Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable));
        }
        Err(raft::Error::Store(StorageError::Unavailable))
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.anchor.index {
            return Ok(self.anchor.term);
        }
        if idx < self.anchor.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.slot(idx)
            .map(|s| s.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.anchor.index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let mut snap = Snapshot::default();
        let mut m = SnapshotMetadata {
            index: self.anchor.index,
            term: self.anchor.term,
            ..Default::default()
        };
        m.set_conf_state(self.conf.clone());
        snap.set_metadata(m);
        snap.data = Bytes::copy_from_slice(&self.anchor.offset.to_be_bytes());
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odradek_engine::batch::sample_batch;
    use raft::Storage;

    fn data(index: u64, term: u64, records: usize) -> Entry {
        Entry {
            index,
            term,
            data: sample_batch(records, 4, 0).freeze(),
            ..Entry::default()
        }
    }

    fn noop(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }

    /// The batches a store's writes put in the log: (offset, epoch, bytes).
    fn appended(w: Vec<LogWrite>) -> Vec<(u64, u64, Bytes)> {
        w.into_iter()
            .filter_map(|w| match w {
                LogWrite::Append {
                    term,
                    base_offset,
                    data,
                    ..
                } => Some((base_offset, term, data)),
                _ => None,
            })
            .collect()
    }

    fn writes_offsets(w: &[LogWrite]) -> Vec<(u64, u64)> {
        w.iter()
            .filter_map(|w| match w {
                LogWrite::Append {
                    index, base_offset, ..
                } => Some((*index, *base_offset)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn offsets_follow_record_counts_and_truncation_rewinds() {
        let mut s = LogStore::new(&RaftMeta::new(vec![1, 2, 3], 100));
        let w = s
            .append(&[noop(1, 1), data(2, 1, 3), data(3, 1, 2)])
            .unwrap();
        assert_eq!(writes_offsets(&w), vec![(1, 100), (2, 101), (3, 104)]);
        assert_eq!(s.next_offset(), 106);
        assert_eq!(s.end_offset(2), Some(104));
        assert_eq!(s.term(3).unwrap(), 1);
        // A new leader overwrites entry 3 onward.
        let w = s.append(&[data(3, 2, 5), noop(4, 2)]).unwrap();
        assert_eq!(w[0], LogWrite::Truncate { offset: 104 });
        assert_eq!(writes_offsets(&w), vec![(3, 104), (4, 109)]);
        assert_eq!(s.last(), 4);
        assert_eq!(s.end_offset_for_epoch(1), Some((1, 104)));
        assert_eq!(s.end_offset_for_epoch(2), Some((2, 110)));
        assert_eq!(s.term_at_offset(105), Some(2));
        assert_eq!(s.term_at_offset(100), Some(1));
        assert_eq!(s.term_at_offset(110), None);
        let got = s
            .entries(2, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            got.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
    }

    #[test]
    fn recovery_rebuilds_the_same_translation() {
        let mut s = LogStore::new(&RaftMeta::new(vec![1], 0));
        let entries = [noop(1, 1), data(2, 1, 3), noop(3, 2), data(4, 2, 1)];
        let batches = appended(s.append(&entries).unwrap());
        let mut meta = s.meta();
        meta.commit = 2;
        let (r, lost) = LogStore::recover(&meta, batches.clone()).unwrap();
        assert_eq!(lost, None);
        assert_eq!(r.next_offset(), s.next_offset());
        for i in 1..=4 {
            assert_eq!(r.term(i).unwrap(), s.term(i).unwrap());
            assert_eq!(r.end_offset(i), s.end_offset(i));
        }
        // Uncommitted entries are cached with their data.
        let e = r
            .entries(3, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(e, entries[2..].to_vec());
        // Committed ones need a fetch.
        assert!(r
            .entries(1, 3, None, GetEntriesContext::empty(false))
            .is_err());
        // A commit beyond the log is clamped and reported.
        meta.commit = 9;
        let (r, lost) = LogStore::recover(&meta, batches.clone()).unwrap();
        assert_eq!(lost, Some(9));
        assert_eq!(r.initial_state().unwrap().hard_state.commit, 4);
        // A hole is refused.
        let mut holed = batches;
        holed.remove(1);
        assert!(matches!(
            LogStore::recover(&meta, holed),
            Err(RecoverError::Gap { .. })
        ));
    }

    #[test]
    fn evicted_entries_are_fetched_asynchronously() {
        let mut s = LogStore::new(&RaftMeta::new(vec![1, 2], 0));
        let w = s
            .append(&[noop(1, 1), data(2, 1, 2), data(3, 1, 2)])
            .unwrap();
        s.evict_through(2);
        let ctx = GetEntriesContext::empty(true);
        assert!(matches!(
            s.entries(1, 4, None, ctx),
            Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable))
        ));
        let req = s.take_fetch_request().unwrap();
        assert_eq!(
            (req.low, req.high, req.from_offset, req.to_offset),
            (1, 3, 0, 3)
        );
        assert_eq!(s.fetched(&req, appended(w)).len(), 1);
        let got = s
            .entries(1, 3, None, GetEntriesContext::empty(true))
            .unwrap();
        assert_eq!(got.len(), 2);
        // Compaction moves the anchor past them.
        s.compact_to(2);
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1);
        assert_eq!(s.anchor().offset, 3);
        let snap = s.snapshot(0, 2).unwrap();
        assert_eq!(snap.get_metadata().index, 2);
        let mut other = LogStore::new(&RaftMeta::new(vec![1, 2], 0));
        assert_eq!(other.apply_snapshot(&snap), 3);
        assert_eq!(other.next_offset(), 3);
        assert_eq!(other.last_index().unwrap(), 2);
    }

    /// Terms 1, 1, 3, 3, 5 at offsets 10.., with record counts 1, 3, 1, 2, 1.
    fn epochs_store() -> LogStore {
        let mut s = LogStore::new(&RaftMeta::new(vec![1, 2, 3], 10));
        s.append(&[
            noop(1, 1),
            data(2, 1, 3),
            noop(3, 3),
            data(4, 3, 2),
            noop(5, 5),
        ])
        .unwrap();
        // Offsets: term 1 at 10..14, term 3 at 14..17, term 5 at 17, end 18.
        assert_eq!(s.next_offset(), 18);
        s
    }

    fn assert_epoch_answers(s: &LogStore) {
        // Older than anything known: itself, ending where term 1 starts.
        assert_eq!(s.end_offset_for_epoch(0), Some((0, 10)));
        assert_eq!(s.end_offset_for_epoch(1), Some((1, 14)));
        // No entry of term 2: the largest epoch below it, ending at term 3.
        assert_eq!(s.end_offset_for_epoch(2), Some((1, 14)));
        assert_eq!(s.end_offset_for_epoch(3), Some((3, 17)));
        assert_eq!(s.end_offset_for_epoch(4), Some((3, 17)));
        // The last epoch ends at the log end; a newer one is unknown.
        assert_eq!(s.end_offset_for_epoch(5), Some((5, 18)));
        assert_eq!(s.end_offset_for_epoch(6), None);
        for (offset, epoch) in [(10, 1), (13, 1), (14, 3), (16, 3), (17, 5)] {
            assert_eq!(s.epoch_at_offset(offset), Some(epoch), "offset {offset}");
        }
        assert_eq!(s.epoch_at_offset(18), None);
        assert_eq!(s.epoch_at_offset(9), None);
    }

    #[test]
    fn epoch_lookups_survive_compaction_and_restarts() {
        let mut s = epochs_store();
        assert_epoch_answers(&s);
        // Compaction into the middle of term 3, then past everything: the
        // answers come from the epoch history below the anchor.
        s.compact_to(3);
        assert_eq!(s.anchor().offset, 15);
        assert_epoch_answers(&s);
        s.compact_to(5);
        assert_eq!(
            s.anchor(),
            Anchor {
                index: 5,
                term: 5,
                offset: 18
            }
        );
        assert_epoch_answers(&s);
        // The history is persisted with the anchor (JSON state file) and
        // recovery gives the same answers.
        let meta = s.meta();
        assert_eq!(
            meta.epochs
                .iter()
                .map(|e| (e.epoch, e.offset))
                .collect::<Vec<_>>(),
            vec![(1, 10), (3, 14), (5, 17)]
        );
        let json = serde_json::to_vec(&meta).unwrap();
        let back: RaftMeta = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, meta);
        let (r, _) = LogStore::recover(&back, Vec::new()).unwrap();
        assert_epoch_answers(&r);
        // New entries of a later term extend it.
        let mut r = r;
        r.append(&[noop(6, 7)]).unwrap();
        assert_eq!(r.end_offset_for_epoch(5), Some((5, 18)));
        assert_eq!(r.end_offset_for_epoch(6), Some((5, 18)));
        assert_eq!(r.end_offset_for_epoch(7), Some((7, 19)));
        // Retention removed everything below 15: the epochs ending before
        // it are forgotten, the one holding it stays.
        r.forget_epochs_below(15);
        assert_eq!(r.end_offset_for_epoch(3), Some((3, 17)));
        assert_eq!(r.end_offset_for_epoch(1), Some((1, 14)));
        r.forget_epochs_below(17);
        assert_eq!(r.end_offset_for_epoch(3), Some((3, 17)));
        assert_eq!(r.epoch_at_offset(17), Some(5));
    }

    #[test]
    fn old_state_files_use_the_anchor_as_history() {
        // A state file without `epochs` (written before they existed).
        let json = br#"{"term":5,"vote":1,"commit":5,"voters":[1],
            "anchor":{"index":5,"term":3,"offset":17}}"#;
        let meta: RaftMeta = serde_json::from_slice(json).unwrap();
        assert!(meta.epochs.is_empty());
        let mut s = LogStore::new(&meta);
        s.append(&[noop(6, 5), data(7, 5, 2)]).unwrap();
        // Term 3 is known to reach the anchor; older ones are bounded by it.
        assert_eq!(s.end_offset_for_epoch(3), Some((3, 17)));
        assert_eq!(s.end_offset_for_epoch(4), Some((3, 17)));
        assert_eq!(s.end_offset_for_epoch(2), Some((2, 17)));
        assert_eq!(s.end_offset_for_epoch(5), Some((5, 20)));
        // Compacting keeps that knowledge in the history.
        s.compact_to(6);
        assert_eq!(
            s.meta()
                .epochs
                .iter()
                .map(|e| (e.epoch, e.offset))
                .collect::<Vec<_>>(),
            vec![(3, 17), (5, 17)]
        );
        assert_eq!(s.end_offset_for_epoch(4), Some((3, 17)));
        assert_eq!(s.end_offset_for_epoch(5), Some((5, 20)));
        // Written without `epochs` when there are none: old readers agree.
        let none = RaftMeta::new(vec![1], 0);
        assert!(!String::from_utf8(serde_json::to_vec(&none).unwrap())
            .unwrap()
            .contains("epochs"));
    }

    #[test]
    fn truncation_rewrites_epoch_answers() {
        let mut s = epochs_store();
        // A new leader of term 4 overwrote entries 4 and 5 (offset 15 on).
        let w = s.append(&[noop(4, 4), data(5, 4, 2)]).unwrap();
        assert_eq!(w[0], LogWrite::Truncate { offset: 15 });
        assert_eq!(s.end_offset_for_epoch(3), Some((3, 15)));
        assert_eq!(s.end_offset_for_epoch(4), Some((4, 18)));
        assert_eq!(s.end_offset_for_epoch(5), None);
        assert_eq!(s.epoch_at_offset(16), Some(4));
        // Truncated back into term 1: term 3 is gone entirely.
        s.append(&[data(2, 6, 1)]).unwrap();
        assert_eq!(s.end_offset_for_epoch(3), Some((1, 11)));
        assert_eq!(s.end_offset_for_epoch(6), Some((6, 12)));
    }

    #[test]
    fn a_snapshot_restarts_the_epoch_history() {
        let mut leader = epochs_store();
        leader.compact_to(4);
        let snap = leader.snapshot(0, 2).unwrap();
        let mut s = epochs_store();
        s.compact_to(2);
        assert_eq!(s.apply_snapshot(&snap), 17);
        assert!(s.meta().epochs.is_empty());
        // Nothing below 17 is here: older epochs end at the log's start.
        assert_eq!(s.end_offset_for_epoch(1), Some((1, 17)));
        assert_eq!(s.end_offset_for_epoch(3), Some((3, 17)));
        assert_eq!(s.epoch_at_offset(15), None);
        s.append(&[noop(5, 5)]).unwrap();
        assert_eq!(s.end_offset_for_epoch(4), Some((3, 17)));
        assert_eq!(s.end_offset_for_epoch(5), Some((5, 18)));
    }

    /// Kafka's answer computed from every entry of the log, in order:
    /// (term, base offset, offset count).
    fn model_end(log: &[(u64, u64, u64)], epoch: u64) -> Option<(u64, u64)> {
        let end = log.last().map(|e| e.1 + e.2)?;
        let floor = log.iter().filter(|e| e.0 <= epoch).map(|e| e.0).max();
        let next = log.iter().find(|e| e.0 > epoch).map(|e| e.1);
        match (floor, next) {
            (Some(f), Some(n)) => Some((f, n)),
            (None, Some(n)) => Some((epoch, n)),
            (Some(f), None) if f == epoch => Some((epoch, end)),
            _ => None,
        }
    }

    proptest::proptest! {
        /// Appends that overwrite (truncate) and compactions in any order:
        /// the store answers OffsetForLeaderEpoch and epoch-at-offset as a
        /// model holding every entry does, and so does its recovery from
        /// the persisted state and the batches above the anchor.
        #[test]
        fn epoch_answers_match_a_full_log(
            ops in proptest::collection::vec((0u8..3, 0u64..6, 0u64..3, 1usize..4), 1..40)
        ) {
            let mut s = LogStore::new(&RaftMeta::new(vec![1], 5));
            let mut log: Vec<(u64, u64, u64)> = Vec::new();
            let mut batches: Vec<(u64, u64, Bytes)> = Vec::new();
            let mut term = 1;
            for (kind, back, bump, n) in ops {
                if kind == 2 {
                    // Compact up to `back` entries below the last.
                    let to = s.last().saturating_sub(back);
                    s.compact_to(to);
                    continue;
                }
                // Append n entries at `back` entries below the end (never
                // below the anchor), at a term that never goes back.
                let first = (s.last() + 1).saturating_sub(back).max(s.anchor().index + 1);
                term += bump;
                let entries: Vec<Entry> = (0..n as u64)
                    .map(|i| if kind == 0 { noop(first + i, term) } else { data(first + i, term, 1 + i as usize) })
                    .collect();
                let keep = (first - 1) as usize;
                log.truncate(keep);
                batches.truncate(keep);
                let w = s.append(&entries).unwrap();
                for (offset, t, b) in appended(w) {
                    let count = entry::offset_count(&entry::from_batch(0, t, b.clone()).unwrap()).unwrap();
                    log.push((t, offset, count));
                    batches.push((offset, t, b));
                }
            }
            let above = batches.iter().filter(|b| b.0 >= s.anchor().offset).cloned();
            let (r, _) = LogStore::recover(&s.meta(), above).unwrap();
            for store in [&s, &r] {
                for e in 0..=term + 1 {
                    proptest::prop_assert_eq!(store.end_offset_for_epoch(e), model_end(&log, e), "epoch {}", e);
                }
                for &(t, base, count) in &log {
                    for o in base..base + count {
                        proptest::prop_assert_eq!(store.epoch_at_offset(o), Some(t), "offset {}", o);
                    }
                }
            }
        }
    }
}
