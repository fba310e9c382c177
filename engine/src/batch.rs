//! Kafka RecordBatch v2 (magic 2): validation, offset assignment, building.
//!
//! The engine stores batches exactly as they came off the wire. Only two
//! header fields are rewritten on append, both outside the CRC: `baseOffset`
//! and `partitionLeaderEpoch`. Everything here works on untrusted bytes and
//! returns a typed error instead of panicking.
//!
//! Header layout (big endian), 61 bytes:
//! ```text
//!  0 baseOffset i64        8 batchLength i32      12 partitionLeaderEpoch i32
//! 16 magic i8             17 crc u32 (CRC-32C of bytes 21..end)
//! 21 attributes i16       23 lastOffsetDelta i32  27 baseTimestamp i64
//! 35 maxTimestamp i64     43 producerId i64       51 producerEpoch i16
//! 53 baseSequence i32     57 recordCount i32      61 records...
//! ```

use bytes::{BufMut, BytesMut};

/// Size of the fixed RecordBatch v2 header.
pub const HEADER_LEN: usize = 61;
/// Bytes before (and including) the `batchLength` field.
pub const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength`: a header with no records.
pub const MIN_BATCH_LENGTH: usize = HEADER_LEN - LOG_OVERHEAD;
const CRC_START: usize = 21;
const MAGIC: i8 = 2;

/// Attribute bits.
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
pub const ATTR_CONTROL: i16 = 0x20;

/// Why a byte string is not an acceptable record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("batch length {0} is below the minimum of {MIN_BATCH_LENGTH}")]
    LengthTooSmall(i32),
    #[error("batch of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("unsupported magic {0} (only RecordBatch v2 is accepted)")]
    BadMagic(i8),
    #[error("CRC mismatch: header says {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record count {count} does not fit lastOffsetDelta {last_offset_delta}")]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("empty record set")]
    Empty,
    #[error("unknown compression codec {0}")]
    BadCompression(i16),
}

/// The parsed fixed header of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl BatchHeader {
    /// Parse the fixed header; checks only that 61 bytes are there.
    pub fn parse(b: &[u8]) -> Result<Self, BatchError> {
        if b.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                need: HEADER_LEN,
                have: b.len(),
            });
        }
        Ok(Self {
            base_offset: be_i64(b, 0),
            batch_length: be_i32(b, 8),
            partition_leader_epoch: be_i32(b, 12),
            magic: b[16] as i8,
            crc: be_i32(b, 17) as u32,
            attributes: be_i16(b, 21),
            last_offset_delta: be_i32(b, 23),
            base_timestamp: be_i64(b, 27),
            max_timestamp: be_i64(b, 35),
            producer_id: be_i64(b, 43),
            producer_epoch: be_i16(b, 51),
            base_sequence: be_i32(b, 53),
            record_count: be_i32(b, 57),
        })
    }

    /// Total size of the batch on the wire and on disk.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record (base + lastOffsetDelta).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta.max(0) as i64)
    }

    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
}

/// How strictly to check the record count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// A producer's batch: `recordCount == lastOffsetDelta + 1`, at least one record.
    Produce,
    /// A stored batch: compaction may have removed records, so
    /// `recordCount <= lastOffsetDelta + 1` (and may be zero).
    Stored,
}

/// Validate the batch at the start of `b` and return its header. `b` may
/// hold more bytes after the batch; the batch's own size is `header.size()`.
pub fn validate(b: &[u8], max_size: usize, strict: Strictness) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(b)?;
    if h.batch_length < MIN_BATCH_LENGTH as i32 {
        return Err(BatchError::LengthTooSmall(h.batch_length));
    }
    let size = h.size();
    if size > max_size {
        return Err(BatchError::TooLarge {
            size,
            max: max_size,
        });
    }
    if b.len() < size {
        return Err(BatchError::Truncated {
            need: size,
            have: b.len(),
        });
    }
    if h.magic != MAGIC {
        return Err(BatchError::BadMagic(h.magic));
    }
    let computed = crc32c::crc32c(&b[CRC_START..size]);
    if computed != h.crc {
        return Err(BatchError::CrcMismatch {
            stored: h.crc,
            computed,
        });
    }
    if h.compression() > 4 {
        return Err(BatchError::BadCompression(h.compression()));
    }
    let count_ok = match strict {
        Strictness::Produce => {
            h.record_count > 0
                && h.last_offset_delta >= 0
                && h.record_count as i64 == h.last_offset_delta as i64 + 1
        }
        Strictness::Stored => {
            h.record_count >= 0
                && h.last_offset_delta >= 0
                && h.record_count as i64 <= h.last_offset_delta as i64 + 1
        }
    };
    if !count_ok {
        return Err(BatchError::CountMismatch {
            count: h.record_count,
            last_offset_delta: h.last_offset_delta,
        });
    }
    Ok(h)
}

/// Validate every batch in a record set (the `records` of a produce
/// request). Returns the headers in order; an empty set is an error.
pub fn validate_all(
    b: &[u8],
    max_size: usize,
    strict: Strictness,
) -> Result<Vec<BatchHeader>, BatchError> {
    if b.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let h = validate(&b[at..], max_size, strict)?;
        at += h.size();
        out.push(h);
    }
    Ok(out)
}

/// Bytes of a batch header that hold what the log assigns: `baseOffset`,
/// `batchLength` (unchanged) and `partitionLeaderEpoch`, none under the CRC.
pub const ASSIGNED_PREFIX_LEN: usize = 16;

/// The first [`ASSIGNED_PREFIX_LEN`] bytes of a batch once the log assigned
/// its base offset and leader epoch.
pub fn assigned_prefix(base_offset: i64, batch_length: i32, leader_epoch: i32) -> [u8; 16] {
    let mut p = [0u8; ASSIGNED_PREFIX_LEN];
    p[0..8].copy_from_slice(&base_offset.to_be_bytes());
    p[8..12].copy_from_slice(&batch_length.to_be_bytes());
    p[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    p
}

/// Rewrite `baseOffset` and `partitionLeaderEpoch` of the batch at the start
/// of `b` in place. `b` must hold a validated header.
pub fn assign(b: &mut [u8], base_offset: i64, leader_epoch: i32) {
    let h = BatchHeader::parse(b).expect("assign needs a whole header");
    b[..ASSIGNED_PREFIX_LEN].copy_from_slice(&assigned_prefix(
        base_offset,
        h.batch_length,
        leader_epoch,
    ));
}

/// Walk the batch headers in `b` (stored bytes, e.g. a segment) without
/// checking CRCs: yields `(position, header)` for each complete batch and
/// stops at the first one that is cut short or has a bad length.
pub fn headers(b: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let h = BatchHeader::parse(b.get(at..)?).ok()?;
        if h.batch_length < MIN_BATCH_LENGTH as i32 || at + h.size() > b.len() {
            return None;
        }
        let pos = at;
        at += h.size();
        Some((pos, h))
    })
}

/// Why the records section of a batch does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("records cut short at byte {0}")]
    Truncated(usize),
    #[error("varint longer than allowed at byte {0}")]
    BadVarint(usize),
    #[error("bad length {len} at byte {at}")]
    BadLength { len: i64, at: usize },
    #[error("record has {0} bytes left over after its fields")]
    Trailing(usize),
    #[error("batch says {declared} records, found {found}")]
    CountMismatch { declared: i32, found: usize },
}

/// One record of a decoded (uncompressed) records section, borrowed from
/// the section's bytes. `raw` is the whole record, length prefix included,
/// so a filtered batch is the concatenation of its survivors' `raw` bytes
/// (each keeps its offset and timestamp deltas: offsets never change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub raw: &'a [u8],
}

/// Zigzag varint of at most `max_bytes` bytes at `*at`.
fn get_varint(b: &[u8], at: &mut usize, max_bytes: usize) -> Result<i64, RecordError> {
    let start = *at;
    let mut z: u64 = 0;
    for i in 0..max_bytes {
        let byte = *b.get(*at).ok_or(RecordError::Truncated(*at))?;
        *at += 1;
        z |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    Err(RecordError::BadVarint(start))
}

fn get_varint32(b: &[u8], at: &mut usize) -> Result<i32, RecordError> {
    let start = *at;
    let v = get_varint(b, at, 5)?;
    i32::try_from(v).map_err(|_| RecordError::BadVarint(start))
}

/// A length-prefixed byte string (`-1` is null when `nullable`): a slice of
/// `b`, after checking the length against what is there.
fn get_bytes<'a>(
    b: &'a [u8],
    at: &mut usize,
    nullable: bool,
) -> Result<Option<&'a [u8]>, RecordError> {
    let pos = *at;
    let len = get_varint32(b, at)? as i64;
    if len == -1 && nullable {
        return Ok(None);
    }
    if len < 0 || len as usize > b.len() - *at {
        return Err(RecordError::BadLength { len, at: pos });
    }
    let s = &b[*at..*at + len as usize];
    *at += len as usize;
    Ok(Some(s))
}

/// Decode one record at the start of `b`; returns it and its total size.
fn decode_record(b: &[u8]) -> Result<RecordRef<'_>, RecordError> {
    let mut at = 0;
    let len = get_varint32(b, &mut at)? as i64;
    if len < 0 || len as usize > b.len() - at {
        return Err(RecordError::BadLength { len, at: 0 });
    }
    let end = at + len as usize;
    let body = &b[..end];
    if at >= end {
        return Err(RecordError::Truncated(at));
    }
    at += 1; // attributes (unused in v2)
    let timestamp_delta = get_varint(body, &mut at, 10)?;
    let offset_delta = get_varint32(body, &mut at)?;
    let key = get_bytes(body, &mut at, true)?;
    let value = get_bytes(body, &mut at, true)?;
    let headers = get_varint32(body, &mut at)?;
    if headers < 0 {
        return Err(RecordError::BadLength {
            len: headers as i64,
            at,
        });
    }
    for _ in 0..headers {
        get_bytes(body, &mut at, false)?;
        get_bytes(body, &mut at, true)?;
    }
    if at != end {
        return Err(RecordError::Trailing(end - at));
    }
    Ok(RecordRef {
        offset_delta,
        timestamp_delta,
        key,
        value,
        raw: body,
    })
}

/// Iterate the records of an uncompressed records section. Yields an
/// error (and then stops) at the first record that does not decode;
/// nothing is allocated by a length read from the bytes.
pub fn records(section: &[u8]) -> impl Iterator<Item = Result<RecordRef<'_>, RecordError>> + '_ {
    let mut at = 0usize;
    let mut done = false;
    std::iter::from_fn(move || {
        if done || at >= section.len() {
            return None;
        }
        match decode_record(&section[at..]) {
            Ok(r) => {
                at += r.raw.len();
                Some(Ok(r))
            }
            Err(e) => {
                done = true;
                Some(Err(e))
            }
        }
    })
}

/// Every record of an uncompressed section, checked against the batch's
/// declared count.
pub fn decode_records(section: &[u8], declared: i32) -> Result<Vec<RecordRef<'_>>, RecordError> {
    let mut out = Vec::new();
    for r in records(section) {
        out.push(r?);
    }
    if declared < 0 || out.len() != declared as usize {
        return Err(RecordError::CountMismatch {
            declared,
            found: out.len(),
        });
    }
    Ok(out)
}

/// Recompute the CRC-32C of a whole batch in place (after its records or
/// header fields under the CRC changed).
pub fn set_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// One record to put in a batch built by [`BatchBuilder`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp_delta: i64,
}

/// Builds uncompressed RecordBatch v2 bytes, as a producer would (tests,
/// benchmarks, fuzzing; the broker itself never builds batches from records).
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    base_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
    records: BytesMut,
    count: i32,
    max_delta: i64,
}

/// Append `v` as a zigzag varint, as RecordBatch v2 records encode it.
pub fn put_varint(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn put_bytes(out: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.put_slice(b);
        }
    }
}

impl BatchBuilder {
    pub fn new(base_timestamp: i64) -> Self {
        Self {
            base_timestamp,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: 0,
            records: BytesMut::new(),
            count: 0,
            max_delta: 0,
        }
    }

    /// Mark the batch as from an idempotent producer.
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Set the attributes field (compression bits are not acted on here).
    pub fn attributes(mut self, attributes: i16) -> Self {
        self.attributes = attributes;
        self
    }

    pub fn push(&mut self, r: &Record) -> &mut Self {
        let mut body = BytesMut::new();
        body.put_i8(0);
        put_varint(&mut body, r.timestamp_delta);
        put_varint(&mut body, self.count as i64);
        put_bytes(&mut body, r.key.as_deref());
        put_bytes(&mut body, r.value.as_deref());
        put_varint(&mut body, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut body, Some(k.as_bytes()));
            put_bytes(&mut body, v.as_deref());
        }
        put_varint(&mut self.records, body.len() as i64);
        self.records.put_slice(&body);
        self.count += 1;
        self.max_delta = self.max_delta.max(r.timestamp_delta);
        self
    }

    /// A record with just a value.
    pub fn value(&mut self, value: &[u8]) -> &mut Self {
        self.push(&Record {
            value: Some(value.to_vec()),
            ..Record::default()
        })
    }

    pub fn build(&self) -> BytesMut {
        let mut b = BytesMut::with_capacity(HEADER_LEN + self.records.len());
        b.put_i64(0);
        b.put_i32((HEADER_LEN - LOG_OVERHEAD + self.records.len()) as i32);
        b.put_i32(-1);
        b.put_i8(MAGIC);
        b.put_u32(0);
        b.put_i16(self.attributes);
        b.put_i32((self.count - 1).max(0));
        b.put_i64(self.base_timestamp);
        b.put_i64(self.base_timestamp + self.max_delta);
        b.put_i64(self.producer_id);
        b.put_i16(self.producer_epoch);
        b.put_i32(self.base_sequence);
        b.put_i32(self.count);
        b.put_slice(&self.records);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

/// A batch of `count` records of `value_len` bytes each (benchmarks, tests).
pub fn sample_batch(count: usize, value_len: usize, timestamp: i64) -> BytesMut {
    let mut bb = BatchBuilder::new(timestamp);
    let value = vec![b'x'; value_len];
    for _ in 0..count {
        bb.value(&value);
    }
    bb.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn built_batch_validates_and_reports_fields() {
        let mut bb = BatchBuilder::new(1_000).producer(7, 1, 0);
        bb.push(&Record {
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![("h".into(), None)],
            timestamp_delta: 5,
        });
        bb.value(b"second");
        let b = bb.build();
        let h = validate(&b, MAX, Strictness::Produce).unwrap();
        assert_eq!(h.record_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!(h.max_timestamp, 1_005);
        assert_eq!(h.producer_id, 7);
        assert_eq!(h.size(), b.len());
    }

    #[test]
    fn assigning_offset_and_epoch_keeps_crc_valid() {
        let mut b = sample_batch(3, 10, 0);
        assign(&mut b, 1234, 9);
        let h = validate(&b, MAX, Strictness::Produce).unwrap();
        assert_eq!(h.base_offset, 1234);
        assert_eq!(h.partition_leader_epoch, 9);
        assert_eq!(h.last_offset(), 1236);
    }

    #[test]
    fn every_corruption_is_a_typed_error() {
        let good = sample_batch(2, 8, 0);
        let mut flipped = good.clone();
        flipped[70] ^= 1;
        assert!(matches!(
            validate(&flipped, MAX, Strictness::Produce),
            Err(BatchError::CrcMismatch { .. })
        ));
        let mut magic = good.clone();
        magic[16] = 1;
        assert_eq!(
            validate(&magic, MAX, Strictness::Produce),
            Err(BatchError::BadMagic(1))
        );
        assert!(matches!(
            validate(&good[..good.len() - 1], MAX, Strictness::Produce),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate(&good, 20, Strictness::Produce),
            Err(BatchError::TooLarge { .. })
        ));
        let mut neg = good.clone();
        neg[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(
            validate(&neg, MAX, Strictness::Produce),
            Err(BatchError::LengthTooSmall(-5))
        );
        // lastOffsetDelta that disagrees with the count (re-CRC so only the count is wrong)
        let mut cnt = good.clone();
        cnt[23..27].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&cnt[CRC_START..]);
        cnt[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&cnt, MAX, Strictness::Produce),
            Err(BatchError::CountMismatch { .. })
        ));
        // ...which a stored (compacted) batch may legally have
        assert!(validate(&cnt, MAX, Strictness::Stored).is_ok());
        assert_eq!(
            validate_all(&[], MAX, Strictness::Produce),
            Err(BatchError::Empty)
        );
    }

    #[test]
    fn validate_all_splits_concatenated_batches() {
        let mut set = sample_batch(2, 4, 0);
        set.extend_from_slice(&sample_batch(5, 4, 0));
        let hs = validate_all(&set, MAX, Strictness::Produce).unwrap();
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[1].record_count, 5);
        let trailing = &set[..set.len() - 3];
        assert!(validate_all(trailing, MAX, Strictness::Produce).is_err());
        assert_eq!(headers(trailing).count(), 1);
    }

    #[test]
    fn records_decode_keys_values_and_tombstones() {
        let mut bb = BatchBuilder::new(0);
        bb.push(&Record {
            key: Some(b"k1".to_vec()),
            value: None,
            headers: vec![("h".into(), Some(b"x".to_vec()))],
            timestamp_delta: 3,
        });
        bb.value(b"v");
        let b = bb.build();
        let rs = decode_records(&b[HEADER_LEN..], 2).unwrap();
        assert_eq!(rs[0].key, Some(&b"k1"[..]));
        assert_eq!(rs[0].value, None);
        assert_eq!(rs[0].timestamp_delta, 3);
        assert_eq!(rs[1].offset_delta, 1);
        assert_eq!(rs[1].key, None);
        assert_eq!(rs[1].value, Some(&b"v"[..]));
        let total: usize = rs.iter().map(|r| r.raw.len()).sum();
        assert_eq!(total, b.len() - HEADER_LEN);
        assert!(matches!(
            decode_records(&b[HEADER_LEN..], 3),
            Err(RecordError::CountMismatch { .. })
        ));
        // Every cut of the section is an error, never a panic.
        for cut in 0..b.len() - HEADER_LEN {
            let r = decode_records(&b[HEADER_LEN..HEADER_LEN + cut], 2);
            assert!(r.is_err(), "cut at {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = validate_all(&bytes, MAX, Strictness::Produce);
            let _ = headers(&bytes).count();
            let _ = decode_records(&bytes, 3);
            let _ = records(&bytes).count();
        }
    }
}
