//! Log compaction, the pure part: which records of a batch survive, and the
//! bytes of the batch that holds only them. No I/O here; the driver in
//! [`crate::log::PartitionLog::compact`] reads segments, feeds every batch
//! to a [`KeyMap`] (pass 1), then asks [`clean_batch`] about each (pass 2)
//! and swaps the results in.
//!
//! Kafka's rules, as applied here:
//! - For every key only the record with the highest offset in the cleaned
//!   range survives (later records in the active segment do not count: the
//!   range is sealed segments only, so an older value there is kept until
//!   its successor is itself sealed).
//! - A record without a key cannot be compacted; Kafka refuses them on
//!   produce to a compacted topic ([`check_keys`]) and the cleaner drops any
//!   that is stored anyway.
//! - A tombstone (null value) that is the latest of its key survives until
//!   its batch's max timestamp is `delete.retention.ms` old, then goes.
//!   Kafka counts from when the segment was first cleaned (and, since
//!   KIP-534, marks the batch); counting from the batch's timestamp needs no
//!   state and no header change, and is the same when records are cleaned
//!   soon after they are written. A producer that sets timestamps far in
//!   the past makes its tombstones go at the first cleaning.
//! - Offsets never change: a cleaned batch keeps its base offset,
//!   lastOffsetDelta, producer id/epoch/base sequence, timestamps and
//!   attributes, and each surviving record keeps its bytes (offset and
//!   timestamp deltas included). Only records go, `recordCount` and
//!   `batchLength` shrink and the CRC is recomputed.
//! - A batch left without records is dropped, except the last batch of
//!   each idempotent producer in the range: that is kept as an empty batch
//!   (recordCount 0, no compression, as Kafka does), so producer state
//!   rebuilt from headers still knows the producer's epoch and last
//!   sequence. Older batches of a producer may go, so deduplication of a
//!   retry of a very old batch can be lost; Kafka keeps only the last five
//!   batches per producer too.
//! - Control batches are kept whole. Transactions are not supported by the
//!   broker, so transactional data batches are treated like any other.
//! - A batch whose records do not decode (corrupt, unknown codec, over the
//!   decompression cap) is kept unchanged and contributes no keys: what
//!   cannot be read is never removed.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::batch::{self, BatchError, BatchHeader, RecordError, RecordRef, HEADER_LEN};
use crate::codec::{self, CodecError};

/// Why a batch's records could not be examined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("record offset delta {0} lies outside its batch")]
    OffsetOutsideBatch(i32),
    #[error("Compacted topic cannot accept message without key")]
    MissingKey,
}

/// Settings of one cleaning pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanOptions {
    pub now_ms: u64,
    /// `delete.retention.ms`: how long a latest tombstone survives.
    pub delete_retention_ms: u64,
    /// Most bytes a compressed records section may decompress to.
    pub decompress_cap: usize,
}

/// The decompression cap for a topic: a batch may hold at most
/// `max.message.bytes` compressed; allow 32 times that (at least 1 MiB,
/// at most 256 MiB) decompressed.
pub fn decompress_cap(max_batch_bytes: usize) -> usize {
    max_batch_bytes.saturating_mul(32).clamp(1 << 20, 256 << 20)
}

/// The records section of a whole batch `b` with header `h`, decompressed.
fn records_section<'a>(
    b: &'a [u8],
    h: &BatchHeader,
    cap: usize,
) -> Result<Cow<'a, [u8]>, CompactError> {
    let body = b.get(HEADER_LEN..h.size()).ok_or(BatchError::Truncated {
        need: h.size(),
        have: b.len(),
    })?;
    match h.compression() {
        codec::NONE => Ok(Cow::Borrowed(body)),
        c => Ok(Cow::Owned(codec::decompress(c, body, cap)?)),
    }
}

/// Decoded records, each with its absolute offset (checked to lie inside
/// the batch).
fn offsets_of<'a>(
    section: &'a [u8],
    h: &BatchHeader,
) -> Result<Vec<(u64, RecordRef<'a>)>, CompactError> {
    let recs = batch::decode_records(section, h.record_count)?;
    let mut out = Vec::with_capacity(recs.len());
    for r in recs {
        if r.offset_delta < 0 || r.offset_delta > h.last_offset_delta {
            return Err(CompactError::OffsetOutsideBatch(r.offset_delta));
        }
        out.push((h.base_offset as u64 + r.offset_delta as u64, r));
    }
    Ok(out)
}

fn header_of(b: &[u8]) -> Result<BatchHeader, CompactError> {
    let h = BatchHeader::parse(b)?;
    if h.batch_length < batch::MIN_BATCH_LENGTH as i32 || b.len() < h.size() || h.base_offset < 0 {
        return Err(BatchError::Truncated {
            need: h.size(),
            have: b.len(),
        }
        .into());
    }
    Ok(h)
}

/// Pass 1 of a cleaning: for every key, the offset of its latest record in
/// the range; for every idempotent producer, the base offset of its last
/// batch there.
#[derive(Debug, Default, Clone)]
pub struct KeyMap {
    latest: HashMap<Vec<u8>, u64>,
    key_bytes: usize,
    last_producer_batch: HashMap<i64, u64>,
}

impl KeyMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Distinct keys seen.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Bytes of the distinct keys held (the driver bounds a pass by this).
    pub fn key_bytes(&self) -> usize {
        self.key_bytes
    }

    /// Rough bytes held: keys plus per-entry overhead.
    pub fn memory_estimate(&self) -> usize {
        self.key_bytes + (self.latest.len() + self.last_producer_batch.len()) * 64
    }

    /// Offset of the latest record seen with `key`.
    pub fn latest(&self, key: &[u8]) -> Option<u64> {
        self.latest.get(key).copied()
    }

    /// Add the records of a whole stored batch (batches in offset order).
    /// A control batch adds no keys; a batch that does not decode adds none
    /// either (and the error says why), so pass 2 keeps it unchanged.
    pub fn observe(&mut self, b: &[u8], cap: usize) -> Result<(), CompactError> {
        let h = header_of(b)?;
        if h.producer_id >= 0 {
            self.last_producer_batch
                .insert(h.producer_id, h.base_offset as u64);
        }
        if h.is_control() || h.record_count == 0 {
            return Ok(());
        }
        let section = records_section(b, &h, cap)?;
        let recs = offsets_of(&section, &h)?;
        for (offset, r) in recs {
            let Some(key) = r.key else { continue };
            match self.latest.get_mut(key) {
                Some(o) => *o = (*o).max(offset),
                None => {
                    self.key_bytes += key.len();
                    self.latest.insert(key.to_vec(), offset);
                }
            }
        }
        Ok(())
    }
}

/// What pass 2 does with one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleaned {
    /// Every record survives: keep the stored bytes as they are.
    Keep,
    /// No record survives and no header needs to stay: leave it out.
    Drop,
    /// The batch with only its surviving records (maybe none: an empty
    /// batch kept for its producer's state).
    Rewrite(Vec<u8>),
}

/// The verdict on one batch and how many records it loses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchClean {
    pub outcome: Cleaned,
    pub removed: usize,
}

/// Pass 2: which records of the whole stored batch `b` survive, given the
/// map of the range (see the module doc for the rules). An error means the
/// records could not be examined; the caller keeps the batch unchanged.
pub fn clean_batch(
    b: &[u8],
    map: &KeyMap,
    opts: &CleanOptions,
) -> Result<BatchClean, CompactError> {
    let h = header_of(b)?;
    let keep = BatchClean {
        outcome: Cleaned::Keep,
        removed: 0,
    };
    if h.is_control() {
        return Ok(keep);
    }
    let section = records_section(b, &h, opts.decompress_cap)?;
    let recs = offsets_of(&section, &h)?;
    let tombstones_expired = h.max_timestamp >= 0
        && (h.max_timestamp as u64).saturating_add(opts.delete_retention_ms) < opts.now_ms;
    let mut kept = Vec::with_capacity(section.len());
    let mut survivors = 0usize;
    for (offset, r) in &recs {
        let survives = match r.key {
            None => false,
            Some(k) => {
                let latest = map.latest(k).is_none_or(|o| o <= *offset);
                latest && (r.value.is_some() || !tombstones_expired)
            }
        };
        if survives {
            kept.extend_from_slice(r.raw);
            survivors += 1;
        }
    }
    let removed = recs.len() - survivors;
    if removed == 0 {
        return Ok(keep);
    }
    let last_of_producer = h.producer_id >= 0
        && map.last_producer_batch.get(&h.producer_id) == Some(&(h.base_offset as u64));
    if survivors == 0 {
        return Ok(BatchClean {
            outcome: if last_of_producer {
                Cleaned::Rewrite(empty_batch(b)?)
            } else {
                Cleaned::Drop
            },
            removed,
        });
    }
    let (attributes, body) = {
        match h.compression() {
            codec::NONE => (h.attributes, kept),
            c => (h.attributes, codec::compress(c, &kept)?),
        }
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&b[..HEADER_LEN]);
    out.extend_from_slice(&body);
    let batch_length =
        i32::try_from(out.len() - batch::LOG_OVERHEAD).map_err(|_| BatchError::TooLarge {
            size: out.len(),
            max: i32::MAX as usize,
        })?;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out[57..61].copy_from_slice(&(survivors as i32).to_be_bytes());
    batch::set_crc(&mut out);
    Ok(BatchClean {
        outcome: Cleaned::Rewrite(out),
        removed,
    })
}

/// The whole batch `b` without its records: `recordCount` 0, no
/// compression, everything else (offsets, producer fields, timestamps) as
/// it was. What stays of a batch whose header must outlive its records.
pub fn empty_batch(b: &[u8]) -> Result<Vec<u8>, CompactError> {
    let h = header_of(b)?;
    let mut out = b[..HEADER_LEN].to_vec();
    out[8..12].copy_from_slice(&(batch::MIN_BATCH_LENGTH as i32).to_be_bytes());
    let attributes = h.attributes & !batch::ATTR_COMPRESSION_MASK;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out[57..61].copy_from_slice(&0i32.to_be_bytes());
    batch::set_crc(&mut out);
    Ok(out)
}

/// Produce to a compacted topic: every record of every batch of `set` (a
/// validated record set) must have a key. Compressed batches are
/// decompressed (capped) to look; a batch that does not decode is refused.
pub fn check_keys(set: &[u8], cap: usize) -> Result<(), CompactError> {
    for (pos, h) in batch::headers(set) {
        if h.is_control() {
            continue;
        }
        let section = records_section(&set[pos..], &h, cap)?;
        for r in batch::records(&section) {
            if r?.key.is_none() {
                return Err(CompactError::MissingKey);
            }
        }
    }
    Ok(())
}

/// A record as its contents: (offset, key, value).
pub type RecordContents = (u64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Every record of the whole batch `b`, decompressed (tests, tools).
pub fn batch_contents(b: &[u8], cap: usize) -> Result<Vec<RecordContents>, CompactError> {
    let h = header_of(b)?;
    let section = records_section(b, &h, cap)?;
    Ok(offsets_of(&section, &h)?
        .into_iter()
        .map(|(o, r)| (o, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{assign, validate, BatchBuilder, Record, Strictness};

    const CAP: usize = 1 << 20;

    fn rec(key: Option<&str>, value: Option<&str>) -> Record {
        Record {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            ..Record::default()
        }
    }

    /// A batch at `base` with records (key, value), compressed with `codec`.
    fn batch_at(base: i64, ts: i64, codec: i16, pid: i64, recs: &[Record]) -> Vec<u8> {
        let mut bb = BatchBuilder::new(ts).attributes(codec);
        if pid >= 0 {
            bb = bb.producer(pid, 0, base as i32);
        }
        for r in recs {
            bb.push(r);
        }
        let mut b = bb.build().to_vec();
        if codec != codec::NONE {
            let body = codec::compress(codec, &b[HEADER_LEN..]).unwrap();
            b.truncate(HEADER_LEN);
            b.extend_from_slice(&body);
            let len = (b.len() - 12) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
            batch::set_crc(&mut b);
        }
        assign(&mut b, base, 0);
        b
    }

    fn opts(now_ms: u64) -> CleanOptions {
        CleanOptions {
            now_ms,
            delete_retention_ms: 1000,
            decompress_cap: CAP,
        }
    }

    /// Run both passes over batches; the surviving batches' bytes.
    fn clean_all(batches: &[Vec<u8>], o: &CleanOptions) -> Vec<Vec<u8>> {
        let mut map = KeyMap::new();
        for b in batches {
            map.observe(b, o.decompress_cap).unwrap();
        }
        batches
            .iter()
            .filter_map(|b| match clean_batch(b, &map, o).unwrap().outcome {
                Cleaned::Keep => Some(b.clone()),
                Cleaned::Drop => None,
                Cleaned::Rewrite(n) => Some(n),
            })
            .collect()
    }

    /// (offset, key, value) of every record of stored batches.
    fn contents(batches: &[Vec<u8>]) -> Vec<RecordContents> {
        let mut out = Vec::new();
        for b in batches {
            let h = validate(b, usize::MAX, Strictness::Stored).unwrap();
            let section = records_section(b, &h, CAP).unwrap();
            for (o, r) in offsets_of(&section, &h).unwrap() {
                out.push((o, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)));
            }
        }
        out
    }

    #[test]
    fn keeps_latest_per_key_at_original_offsets_for_every_codec() {
        for c in [
            codec::NONE,
            codec::GZIP,
            codec::SNAPPY,
            codec::LZ4,
            codec::ZSTD,
        ] {
            let batches = vec![
                batch_at(
                    0,
                    100,
                    c,
                    -1,
                    &[rec(Some("a"), Some("1")), rec(Some("b"), Some("1"))],
                ),
                batch_at(
                    2,
                    100,
                    c,
                    -1,
                    &[rec(Some("a"), Some("2")), rec(None, Some("x"))],
                ),
                batch_at(
                    4,
                    100,
                    c,
                    -1,
                    &[rec(Some("c"), Some("1")), rec(Some("a"), Some("3"))],
                ),
            ];
            let out = clean_all(&batches, &opts(0));
            for b in &out {
                let h = validate(b, usize::MAX, Strictness::Stored).unwrap();
                let orig = batches
                    .iter()
                    .map(|o| BatchHeader::parse(o).unwrap())
                    .find(|o| o.base_offset == h.base_offset)
                    .unwrap();
                assert_eq!(h.last_offset_delta, orig.last_offset_delta);
                assert_eq!(h.attributes, orig.attributes, "codec {c}");
                assert_eq!(h.max_timestamp, orig.max_timestamp);
            }
            let got = contents(&out);
            let want = vec![
                (1, Some(b"b".to_vec()), Some(b"1".to_vec())),
                (4, Some(b"c".to_vec()), Some(b"1".to_vec())),
                (5, Some(b"a".to_vec()), Some(b"3".to_vec())),
            ];
            assert_eq!(got, want, "codec {c}");
            // The second batch lost every record and is gone.
            assert_eq!(out.len(), 2);
        }
    }

    #[test]
    fn tombstones_stay_for_delete_retention_then_go() {
        let batches = vec![
            batch_at(0, 100, codec::NONE, -1, &[rec(Some("a"), Some("1"))]),
            batch_at(
                1,
                100,
                codec::NONE,
                -1,
                &[rec(Some("a"), None), rec(Some("b"), Some("2"))],
            ),
        ];
        let young = contents(&clean_all(&batches, &opts(1000)));
        assert_eq!(
            young,
            vec![
                (1, Some(b"a".to_vec()), None),
                (2, Some(b"b".to_vec()), Some(b"2".to_vec()))
            ]
        );
        let old = contents(&clean_all(&batches, &opts(1101)));
        assert_eq!(old, vec![(2, Some(b"b".to_vec()), Some(b"2".to_vec()))]);
    }

    #[test]
    fn a_producers_last_batch_stays_as_an_empty_batch_and_control_batches_stay() {
        let control = {
            let mut b = batch_at(2, 0, codec::NONE, -1, &[rec(Some("ctl"), Some("x"))]);
            b[21..23].copy_from_slice(&batch::ATTR_CONTROL.to_be_bytes());
            batch::set_crc(&mut b);
            b
        };
        let batches = vec![
            batch_at(0, 0, codec::LZ4, 7, &[rec(Some("a"), Some("1"))]),
            batch_at(1, 0, codec::LZ4, 7, &[rec(Some("a"), Some("2"))]),
            control.clone(),
            batch_at(3, 0, codec::NONE, -1, &[rec(Some("a"), Some("3"))]),
        ];
        let out = clean_all(&batches, &opts(0));
        assert_eq!(out.len(), 3);
        let empty = validate(&out[0], usize::MAX, Strictness::Stored).unwrap();
        assert_eq!((empty.base_offset, empty.record_count), (1, 0));
        assert_eq!(empty.compression(), 0);
        assert_eq!((empty.producer_id, empty.base_sequence), (7, 1));
        assert_eq!(out[1], control);
        let mut ps = crate::producer::ProducerStates::new();
        for b in &out {
            ps.replay(&BatchHeader::parse(b).unwrap());
        }
        assert_eq!(ps.get(7).unwrap().last().unwrap().last_offset, 1);
    }

    #[test]
    fn undecodable_batches_are_kept_and_add_no_keys() {
        let mut bad = batch_at(0, 0, codec::GZIP, -1, &[rec(Some("a"), Some("1"))]);
        let n = bad.len();
        bad[n - 3] ^= 0xff; // corrupt the gzip trailer, re-CRC the batch
        batch::set_crc(&mut bad);
        let good = batch_at(1, 0, codec::NONE, -1, &[rec(Some("a"), Some("2"))]);
        let mut map = KeyMap::new();
        assert!(map.observe(&bad, CAP).is_err());
        map.observe(&good, CAP).unwrap();
        assert!(clean_batch(&bad, &map, &opts(0)).is_err());
        assert_eq!(
            clean_batch(&good, &map, &opts(0)).unwrap().outcome,
            Cleaned::Keep
        );
    }

    #[test]
    fn keyless_records_are_refused_for_compacted_topics() {
        let keyed = batch_at(0, 0, codec::ZSTD, -1, &[rec(Some("a"), Some("1"))]);
        let mut set = keyed.clone();
        set.extend_from_slice(&batch_at(1, 0, codec::SNAPPY, -1, &[rec(None, Some("1"))]));
        assert_eq!(check_keys(&keyed, CAP), Ok(()));
        assert_eq!(check_keys(&set, CAP), Err(CompactError::MissingKey));
    }

    proptest::proptest! {
        /// Against a model: for random keyed updates (with tombstones) in
        /// random batches, the cleaned batches hold exactly the latest record
        /// of each key (tombstones while young), at their original offsets,
        /// in increasing order.
        #[test]
        fn cleaning_matches_a_latest_value_model(
            batches in proptest::collection::vec(
                (proptest::collection::vec((0u8..6, proptest::option::of(0u8..50)), 1..6), 0i16..5, proptest::bool::ANY),
                1..12),
            now in 0u64..3000,
        ) {
            let mut stored = Vec::new();
            let mut model: std::collections::BTreeMap<u8, (u64, Option<u8>, i64)> = Default::default();
            let mut off = 0i64;
            for (i, (recs, c, idem)) in batches.iter().enumerate() {
                let ts = i as i64 * 200;
                let rs: Vec<Record> = recs.iter().map(|(k, v)| Record {
                    key: Some(vec![*k]),
                    value: v.map(|v| vec![v]),
                    ..Record::default()
                }).collect();
                for (j, (k, v)) in recs.iter().enumerate() {
                    model.insert(*k, (off as u64 + j as u64, *v, ts));
                }
                stored.push(batch_at(off, ts, *c, if *idem { 9 } else { -1 }, &rs));
                off += recs.len() as i64;
            }
            let o = opts(now);
            let out = clean_all(&stored, &o);
            let got = contents(&out);
            let want: Vec<_> = {
                let mut w: Vec<_> = model.iter()
                    .filter(|(_, (_, v, ts))| v.is_some() || (*ts as u64) + o.delete_retention_ms >= now)
                    .map(|(k, (o, v, _))| (*o, Some(vec![*k]), v.map(|v| vec![v])))
                    .collect();
                w.sort();
                w
            };
            proptest::prop_assert_eq!(got, want);
            let mut last = -1i64;
            for b in &out {
                let h = validate(b, usize::MAX, Strictness::Stored).unwrap();
                proptest::prop_assert!(h.base_offset > last);
                last = h.last_offset();
            }
        }
    }
}
