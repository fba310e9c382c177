//! Decoding RecordBatch v2 from Fetch responses, written for untrusted
//! input: every length is checked against the bytes that are there, and
//! nothing is reserved from a count on the wire.

use bytes::Bytes;

/// One decoded record.
#[derive(Debug, Clone)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("batch at offset {0}: magic {1}, only RecordBatch v2 is supported")]
    Magic(i64, i8),
    #[error("batch at offset {0} uses unknown compression codec {1}")]
    Compressed(i64, i16),
    #[error("batch at offset {0}: {1}")]
    Corrupt(i64, String),
}

const HEADER_LEN: usize = 61;

/// Most bytes one compressed batch may expand to: a small batch from the
/// network must not become gigabytes in memory.
pub const MAX_DECOMPRESSED: usize = 64 << 20;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<i64> {
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self.b.get(self.at)?;
            self.at += 1;
            if shift == 63 && byte > 1 {
                return None;
            }
            z |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    /// A varint-length byte string; -1 is null.
    fn bytes(&mut self, whole: &Bytes, base: usize) -> Option<Option<Bytes>> {
        let len = self.varint()?;
        if len < 0 {
            return Some(None);
        }
        let start = self.at;
        self.take(usize::try_from(len).ok()?)?;
        Some(Some(whole.slice(base + start..base + self.at)))
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

/// Records of every complete batch in `data` (a Fetch partition's record
/// set), skipping control batches. A truncated batch at the end is normal
/// (the broker cuts at max bytes) and ignored. Also returns the offset just
/// after the last complete batch, so the caller can fetch on from there
/// even when a batch held no records for it (control batches).
pub fn decode(data: &Bytes) -> Result<(Vec<Record>, Option<i64>), RecordError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut next = None;
    while data.len() - at >= 12 {
        let base_offset = be_i64(data, at);
        let batch_len = be_i32(data, at + 8);
        if batch_len < (HEADER_LEN - 12) as i32 {
            return Err(RecordError::Corrupt(
                base_offset,
                "batch length too small".into(),
            ));
        }
        let total = 12 + batch_len as usize;
        if data.len() - at < total {
            break; // partial batch at the end of the response
        }
        let b = &data[at..at + total];
        let magic = b[16] as i8;
        if magic != 2 {
            return Err(RecordError::Magic(base_offset, magic));
        }
        let attributes = i16::from_be_bytes([b[21], b[22]]);
        let last_delta = be_i32(b, 23);
        let base_ts = be_i64(b, 27);
        let max_ts = be_i64(b, 35);
        let count = be_i32(b, 57);
        next = Some(
            base_offset
                .saturating_add(i64::from(last_delta))
                .saturating_add(1),
        );
        let control = attributes & 0x20 != 0;
        if !control {
            let log_append_time = attributes & 0x08 != 0;
            let raw = data.slice(at + HEADER_LEN..at + total);
            let body = match attributes & 0x07 {
                0 => raw,
                codec => Bytes::from(
                    odradek_engine::codec::decompress(codec, &raw, MAX_DECOMPRESSED).map_err(
                        |e| match e {
                            odradek_engine::codec::CodecError::Unknown(c) => {
                                RecordError::Compressed(base_offset, c)
                            }
                            e => RecordError::Corrupt(base_offset, e.to_string()),
                        },
                    )?,
                ),
            };
            let mut r = Reader { b: &body, at: 0 };
            let corrupt = |what: &str| RecordError::Corrupt(base_offset, what.to_string());
            for _ in 0..count.max(0) {
                let len = r.varint().ok_or(corrupt("record length"))?;
                let len = usize::try_from(len).map_err(|_| corrupt("negative record length"))?;
                let start = r.at;
                r.take(len).ok_or(corrupt("record past batch end"))?;
                let mut rec = Reader {
                    b: &r.b[..r.at],
                    at: start,
                };
                rec.take(1).ok_or(corrupt("record attributes"))?;
                let ts_delta = rec.varint().ok_or(corrupt("timestamp delta"))?;
                let off_delta = rec.varint().ok_or(corrupt("offset delta"))?;
                let key = rec.bytes(&body, 0).ok_or(corrupt("record key"))?;
                let value = rec.bytes(&body, 0).ok_or(corrupt("record value"))?;
                let n_headers = rec.varint().ok_or(corrupt("header count"))?;
                let mut headers = Vec::new();
                for _ in 0..n_headers.max(0) {
                    let k = rec.bytes(&body, 0).ok_or(corrupt("header key"))?;
                    let v = rec.bytes(&body, 0).ok_or(corrupt("header value"))?;
                    let k = k
                        .map(|k| String::from_utf8_lossy(&k).into_owned())
                        .unwrap_or_default();
                    headers.push((k, v));
                }
                out.push(Record {
                    offset: base_offset.saturating_add(off_delta),
                    timestamp: if log_append_time {
                        max_ts
                    } else {
                        base_ts.saturating_add(ts_delta)
                    },
                    key,
                    value,
                    headers,
                });
            }
        }
        at += total;
    }
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use odradek_engine::batch::{BatchBuilder, Record as BRecord};

    /// `batch` with its records replaced by `records` and codec bits set.
    fn compressed_raw(batch: &Bytes, codec: i16, records: &[u8]) -> Bytes {
        let mut b = batch[..HEADER_LEN].to_vec();
        b.extend_from_slice(records);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        let attrs = i16::from_be_bytes([b[21], b[22]]) | codec;
        b[21..23].copy_from_slice(&attrs.to_be_bytes());
        Bytes::from(b)
    }

    /// `batch` with its records compressed by `codec` (1 gzip, 2 snappy in
    /// xerial framing, 3 lz4 frame).
    fn compressed(batch: &Bytes, codec: i16) -> Bytes {
        use std::io::Write;
        let plain = &batch[HEADER_LEN..];
        let packed = match codec {
            1 => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(plain).unwrap();
                e.finish().unwrap()
            }
            2 => {
                let block = snap::raw::Encoder::new().compress_vec(plain).unwrap();
                let mut v = b"\x82SNAPPY\x00".to_vec();
                v.extend_from_slice(&1i32.to_be_bytes());
                v.extend_from_slice(&1i32.to_be_bytes());
                v.extend_from_slice(&(block.len() as u32).to_be_bytes());
                v.extend_from_slice(&block);
                v
            }
            _ => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(plain).unwrap();
                e.finish().unwrap()
            }
        };
        compressed_raw(batch, codec, &packed)
    }

    #[test]
    fn round_trip_with_keys_and_headers() {
        let mut b = BatchBuilder::new(1000);
        b.push(&BRecord {
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![("h".into(), Some(b"x".to_vec()))],
            timestamp_delta: 5,
        });
        b.value(b"second");
        let mut bytes = b.build();
        bytes[0..8].copy_from_slice(&40i64.to_be_bytes());
        let data = bytes.freeze();
        let (recs, next) = decode(&data).unwrap();
        assert_eq!(next, Some(42));
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].offset, 40);
        assert_eq!(recs[0].timestamp, 1005);
        assert_eq!(recs[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(recs[0].headers[0].0, "h");
        assert_eq!(recs[1].value.as_deref(), Some(&b"second"[..]));
        for codec in 1..=3 {
            let c = compressed(&data, codec);
            let (crecs, cnext) = decode(&c).unwrap();
            assert_eq!(cnext, Some(42), "codec {codec}");
            assert_eq!(crecs.len(), 2);
            assert_eq!(crecs[1].value.as_deref(), Some(&b"second"[..]));
            for cut in 0..c.len() {
                let _ = decode(&c.slice(..cut));
            }
        }
        // zstd comes from the engine's codecs too.
        let zstd = odradek_engine::codec::compress(4, &data[HEADER_LEN..]).unwrap();
        let (zrecs, _) = decode(&compressed_raw(&data, 4, &zstd)).unwrap();
        assert_eq!(zrecs[1].value.as_deref(), Some(&b"second"[..]));
        assert_eq!(
            decode(&compressed_raw(&data, 5, b"whatever")).unwrap_err(),
            RecordError::Compressed(40, 5)
        );
        // A gzip bomb stops at the cap.
        let zeros = vec![0u8; MAX_DECOMPRESSED + 1];
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(matches!(
            decode(&compressed_raw(&data, 1, &bomb)),
            Err(RecordError::Corrupt(40, _))
        ));
        // Every truncation is either a partial batch or an error, never a panic.
        for cut in 0..data.len() {
            let _ = decode(&data.slice(..cut));
        }
        // Corrupt every byte in turn.
        for i in 0..data.len() {
            let mut m = data.to_vec();
            m[i] ^= 0xff;
            let _ = decode(&Bytes::from(m));
        }
    }
}
