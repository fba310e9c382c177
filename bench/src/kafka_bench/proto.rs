//! Kafka wire protocol pieces the benchmark needs: request framing with the
//! `kafka-protocol` crate, a small async request/response connection for the
//! control plane (ApiVersions, Metadata, CreateTopics, ListOffsets), a
//! RecordBatch v2 builder that writes records straight into the batch buffer,
//! and a record parser for fetched batches.

use std::collections::HashMap;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use odradek_engine::batch::put_varint;
use odradek_engine::codec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

pub const CLIENT_ID: &str = "odradek-bench";

/// Encode a request frame (size prefix, header, body).
pub fn encode_request<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation: i32,
    req: &R,
    size_hint: usize,
) -> Result<BytesMut> {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation;
    header.client_id = Some(StrBytes::from_static_str(CLIENT_ID));
    let mut out = BytesMut::with_capacity(size_hint + 64);
    out.put_i32(0);
    header.encode(&mut out, key.request_header_version(version))?;
    req.encode(&mut out, version)?;
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// A broker that does not answer within this long fails the run.
pub const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads response frames into one buffer it reuses: once the previous
/// frame is dropped, the next one lands in the same memory. A fresh
/// allocation per frame (a 1 MiB fetch answer is above malloc's mmap
/// threshold) made the kernel copy every received byte into pages just
/// mapped, which on the benchmark VM cost ~90 % of a consumer's CPU.
#[derive(Default)]
pub struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// Read one response frame (without the size prefix); fails after
    /// [`RESPONSE_TIMEOUT`].
    pub async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<Bytes> {
        match tokio::time::timeout(RESPONSE_TIMEOUT, self.read_inner(r)).await {
            Ok(res) => res,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no response within {} s", RESPONSE_TIMEOUT.as_secs()),
            )),
        }
    }

    async fn read_inner<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<Bytes> {
        let size = r.read_i32().await?;
        if size <= 0 || size > 1 << 30 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame size {size}"),
            ));
        }
        let size = size as usize;
        // Reclaims the whole allocation when no earlier frame still
        // points into it; keeps at least 1 MiB so answers of any size up to
        // that reuse it.
        self.buf.clear();
        self.buf.reserve(size.max(1 << 20));
        while self.buf.len() < size {
            let mut limited = (&mut *r).take((size - self.buf.len()) as u64);
            if limited.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.split().freeze())
    }
}

/// Split a response frame into its header's correlation id and the body.
pub fn decode_response<Resp: Decodable>(
    key: ApiKey,
    version: i16,
    mut frame: Bytes,
) -> Result<(i32, Resp)> {
    let hv = if key == ApiKey::ApiVersions {
        0
    } else {
        key.response_header_version(version)
    };
    let header = ResponseHeader::decode(&mut frame, hv)?;
    let resp = Resp::decode(&mut frame, version)?;
    Ok((header.correlation_id, resp))
}

/// A control-plane connection: one request at a time.
pub struct Conn {
    pub stream: TcpStream,
    frames: FrameReader,
    correlation: i32,
    pub versions: HashMap<i16, (i16, i16)>,
}

impl Conn {
    pub async fn connect(addr: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true)?;
        let mut c = Self {
            stream,
            frames: FrameReader::default(),
            correlation: 0,
            versions: HashMap::new(),
        };
        let resp: kafka_protocol::messages::ApiVersionsResponse = c
            .request(
                ApiKey::ApiVersions,
                0,
                &kafka_protocol::messages::ApiVersionsRequest::default(),
            )
            .await?;
        if resp.error_code != 0 {
            return Err(format!("ApiVersions error {}", resp.error_code).into());
        }
        for k in resp.api_keys {
            c.versions.insert(k.api_key, (k.min_version, k.max_version));
        }
        Ok(c)
    }

    /// The highest version both sides speak, at most `want`, at least `min`.
    pub fn version(&self, key: ApiKey, min: i16, want: i16) -> Result<i16> {
        let (lo, hi) = self
            .versions
            .get(&(key as i16))
            .copied()
            .ok_or_else(|| format!("broker does not support {key:?}"))?;
        let v = hi.min(want);
        if v < min.max(lo) {
            return Err(format!("broker supports {key:?} v{lo}-v{hi}, need v{min}+").into());
        }
        Ok(v)
    }

    pub async fn request<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp> {
        self.send(key, version, req).await?;
        self.recv(key, version).await
    }

    /// Write a request; its answer is the next [`Conn::recv`] (one request
    /// in flight at a time on a `Conn`).
    pub async fn send<Req: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<()> {
        self.correlation += 1;
        let frame = encode_request(key, version, self.correlation, req, 256)?;
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Read the answer to the last request sent.
    pub async fn recv<Resp: Decodable>(&mut self, key: ApiKey, version: i16) -> Result<Resp> {
        let frame = self.frames.read(&mut self.stream).await?;
        let (corr, resp) = decode_response(key, version, frame)?;
        if corr != self.correlation {
            return Err(
                format!("{key:?}: correlation {corr}, expected {}", self.correlation).into(),
            );
        }
        Ok(resp)
    }
}

// ---------------------------------------------------------------------------
// RecordBatch v2

pub const BATCH_HEADER: usize = 61;

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Builds one RecordBatch v2 (no producer id) record by record, directly in
/// its final buffer; compressed, if asked, when it is finished.
pub struct BatchBuilder {
    pub buf: BytesMut,
    pub count: i32,
    base_ts: i64,
    max_ts: i64,
}

impl BatchBuilder {
    pub fn new(capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity + 256);
        buf.resize(BATCH_HEADER, 0);
        Self {
            buf,
            count: 0,
            base_ts: 0,
            max_ts: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes a record with these sizes adds to the batch (upper bound).
    pub fn record_size(key_len: usize, value_len: usize) -> usize {
        let body = 1
            + 10
            + 5
            + varint_len(key_len as i64)
            + key_len
            + varint_len(value_len as i64)
            + value_len
            + 1;
        body + varint_len(body as i64)
    }

    /// Append a record: `value` = 8-byte send time prefix + `filler`.
    /// Returns the bytes it added.
    pub fn push(&mut self, ts_ms: i64, key: Option<&[u8]>, send_ns: u64, filler: &[u8]) -> usize {
        if self.count == 0 {
            self.base_ts = ts_ms;
        }
        self.max_ts = self.max_ts.max(ts_ms);
        let ts_delta = ts_ms - self.base_ts;
        let off_delta = self.count as i64;
        let value_len = 8 + filler.len();
        let key_part = match key {
            Some(k) => varint_len(k.len() as i64) + k.len(),
            None => 1,
        };
        let body = 1
            + varint_len(ts_delta)
            + varint_len(off_delta)
            + key_part
            + varint_len(value_len as i64)
            + value_len
            + 1;
        let start = self.buf.len();
        let b = &mut self.buf;
        put_varint(b, body as i64);
        b.put_u8(0);
        put_varint(b, ts_delta);
        put_varint(b, off_delta);
        match key {
            Some(k) => {
                put_varint(b, k.len() as i64);
                b.put_slice(k);
            }
            None => put_varint(b, -1),
        }
        put_varint(b, value_len as i64);
        b.put_u64(send_ns);
        b.put_slice(filler);
        put_varint(b, 0);
        self.count += 1;
        self.buf.len() - start
    }

    /// Compress the records section with `codec` (attributes bits 0–2,
    /// `odradek_engine::codec`), write the header and CRC; returns the batch
    /// bytes.
    pub fn finish(mut self, codec: i16) -> Result<Bytes> {
        if codec != codec::NONE {
            let records = codec::compress(codec, &self.buf[BATCH_HEADER..])?;
            self.buf.truncate(BATCH_HEADER);
            self.buf.extend_from_slice(&records);
        }
        let len = self.buf.len();
        let mut h = &mut self.buf[..BATCH_HEADER];
        h.put_i64(0); // base offset (assigned by the broker)
        h.put_i32((len - 12) as i32);
        h.put_i32(-1); // partition leader epoch
        h.put_u8(2); // magic
        h.put_u32(0); // crc, below
        h.put_i16(codec); // attributes: codec, create time
        h.put_i32(self.count - 1);
        h.put_i64(self.base_ts);
        h.put_i64(self.max_ts);
        h.put_i64(-1); // producer id
        h.put_i16(-1); // producer epoch
        h.put_i32(-1); // base sequence
        h.put_i32(self.count);
        odradek_engine::batch::set_crc(&mut self.buf);
        Ok(self.buf.freeze())
    }
}

fn get_varint(b: &mut &[u8]) -> Option<i64> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        z |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((z >> 1) as i64) ^ -((z & 1) as i64))
}

/// What a fetched records blob held.
#[derive(Default, Debug)]
pub struct Parsed {
    pub messages: u64,
    pub value_bytes: u64,
    pub wire_bytes: u64,
    /// The first batch whose records did not decompress.
    pub corrupt: Option<String>,
}

/// Largest records section a compressed batch may decompress to (fetched
/// bytes are not trusted: a bad batch is an error, not an allocation).
const DECOMPRESS_CAP: usize = 256 << 20;

/// Walk the batches in `records`, calling `each(send_ns)` for every record at
/// or after offset `from` whose value starts with an 8-byte send time.
/// Compressed batches are decompressed, as a consumer would. A truncated
/// batch at the end is ignored (it comes again in the next fetch).
pub fn parse_records(records: &[u8], from: i64, mut each: impl FnMut(u64)) -> Parsed {
    let mut p = Parsed::default();
    for (base, _end, batch) in batches(records, from) {
        let attributes = (&batch[21..23]).get_i16();
        let count = (&batch[57..61]).get_i32();
        p.wire_bytes += batch.len() as u64;
        if attributes & 0x20 != 0 {
            continue; // control batch (transaction marker)
        }
        let section = &batch[BATCH_HEADER..];
        match attributes & 0x07 {
            codec::NONE => walk_records(section, base, count, from, &mut p, &mut each),
            c => match codec::decompress(c, section, DECOMPRESS_CAP) {
                Ok(plain) => walk_records(&plain, base, count, from, &mut p, &mut each),
                Err(e) => {
                    if p.corrupt.is_none() {
                        p.corrupt = Some(format!("batch at offset {base}: {e}"));
                    }
                }
            },
        }
    }
    p
}

/// The complete batches in `records` that end after offset `from`, as
/// (base offset, offset after the last, batch bytes); reads headers only.
fn batches(mut records: &[u8], from: i64) -> impl Iterator<Item = (i64, i64, &[u8])> {
    std::iter::from_fn(move || loop {
        if records.len() < BATCH_HEADER {
            return None;
        }
        let base = (&records[0..8]).get_i64();
        let blen = (&records[8..12]).get_i32();
        if blen < 49 || records.len() < 12 + blen as usize {
            return None;
        }
        let (batch, rest) = records.split_at(12 + blen as usize);
        records = rest;
        let last_delta = (&batch[23..27]).get_i32();
        let end = base.saturating_add(last_delta as i64 + 1);
        if end > from {
            return Some((base, end, batch));
        }
    })
}

/// The offset after the last complete batch in `records` (what the next
/// fetch asks for), from the batch headers alone: a consumer can send its
/// next fetch before it walks the records.
pub fn next_offset(records: &[u8], from: i64) -> Option<i64> {
    batches(records, from)
        .map(|(_, end, _)| end)
        .max()
        .map(|e| e.max(from))
}

/// The records of one uncompressed section (`count` of them, offsets from
/// `base`); stops at the first that does not parse.
fn walk_records(
    mut r: &[u8],
    base: i64,
    count: i32,
    from: i64,
    p: &mut Parsed,
    each: &mut impl FnMut(u64),
) {
    for _ in 0..count {
        let Some(len) = get_varint(&mut r) else { break };
        if len < 0 || r.len() < len as usize {
            break;
        }
        let (mut rec, rest) = r.split_at(len as usize);
        r = rest;
        let Some((_attributes, body)) = rec.split_first() else {
            break;
        };
        rec = body;
        let _ts = get_varint(&mut rec);
        let Some(od) = get_varint(&mut rec) else {
            break;
        };
        let Some(kl) = get_varint(&mut rec) else {
            break;
        };
        if kl > 0 {
            rec = &rec[(kl as usize).min(rec.len())..];
        }
        let Some(vl) = get_varint(&mut rec) else {
            break;
        };
        if base.saturating_add(od) < from {
            continue;
        }
        p.messages += 1;
        if vl > 0 {
            p.value_bytes += vl as u64;
            if vl >= 8 && rec.len() >= 8 {
                each((&rec[..8]).get_u64());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_roundtrip_through_kafka_protocol_decoder() {
        let filler = vec![7u8; 100];
        let mut b = BatchBuilder::new(4096);
        for i in 0..10u64 {
            let key = format!("k{i}");
            b.push(
                1_700_000_000_000 + i as i64,
                Some(key.as_bytes()),
                1000 + i,
                &filler,
            );
        }
        let bytes = b.finish(codec::NONE).unwrap();
        let mut buf = bytes.clone();
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).unwrap();
        assert_eq!(set.records.len(), 10);
        assert_eq!(set.records[3].value.as_ref().unwrap().len(), 108);
        assert_eq!(&set.records[3].key.as_ref().unwrap()[..], b"k3");
        let mut seen = vec![];
        let p = parse_records(&bytes, 2, |ns| seen.push(ns));
        assert_eq!(p.messages, 8);
        assert_eq!(next_offset(&bytes, 2), Some(10));
        assert_eq!(seen, (1002..1010).collect::<Vec<_>>());
    }

    /// Every codec: the engine's validator accepts the batch, its records
    /// decompress to what was pushed, and `parse_records` reads them back.
    #[test]
    fn compressed_batches_validate_and_parse_back() {
        use odradek_engine::batch::{decode_records, validate, Strictness};
        let filler: Vec<u8> = (0..300u32).map(|i| b'A' + (i * 7 % 26) as u8).collect();
        for c in [codec::GZIP, codec::SNAPPY, codec::LZ4, codec::ZSTD] {
            let mut b = BatchBuilder::new(64 << 10);
            for i in 0..50u64 {
                b.push(1_700_000_000_000, None, 5000 + i, &filler);
            }
            let plain_len = b.len();
            let bytes = b.finish(c).unwrap();
            assert!(bytes.len() < plain_len, "codec {c}: not compressed");
            let h = validate(&bytes, 1 << 20, Strictness::Produce).unwrap();
            assert_eq!((h.compression(), h.record_count), (c, 50));
            let plain = codec::decompress(c, &bytes[BATCH_HEADER..], 1 << 20).unwrap();
            let recs = decode_records(&plain, 50).unwrap();
            assert_eq!(recs[49].value.unwrap().len(), 308);
            // two batches back to back, the first partly before `from`
            let mut set = bytes.to_vec();
            let mut second = bytes.to_vec();
            second[..8].copy_from_slice(&50i64.to_be_bytes());
            set.extend_from_slice(&second);
            let mut seen = vec![];
            let p = parse_records(&set, 40, |ns| seen.push(ns));
            assert_eq!(
                (p.messages, next_offset(&set, 40), p.corrupt),
                (60, Some(100), None)
            );
            assert_eq!(next_offset(&set, 40), Some(100));
            assert_eq!(next_offset(&set, 100), None);
            assert_eq!(
                next_offset(&set[..set.len() - 1], 40),
                Some(50),
                "truncated"
            );
            assert_eq!(seen[..10], (5040..5050).collect::<Vec<_>>()[..]);
            assert_eq!(seen[10..], (5000..5050).collect::<Vec<_>>()[..]);
        }
    }

    /// A compressed batch whose records do not decode is reported, not a
    /// panic, and the walk goes on past it.
    #[test]
    fn a_corrupt_compressed_batch_is_reported() {
        let mut b = BatchBuilder::new(4096);
        b.push(0, None, 1, &[0u8; 100]);
        let mut bad = b.finish(codec::ZSTD).unwrap().to_vec();
        for x in &mut bad[BATCH_HEADER..] {
            *x ^= 0x5a;
        }
        let mut good = BatchBuilder::new(4096);
        good.push(0, None, 2, &[0u8; 100]);
        let mut good = good.finish(codec::LZ4).unwrap().to_vec();
        good[..8].copy_from_slice(&1i64.to_be_bytes());
        bad.extend_from_slice(&good);
        let mut seen = vec![];
        let p = parse_records(&bad, 0, |ns| seen.push(ns));
        assert!(p.corrupt.as_deref().unwrap().contains("offset 0"), "{p:?}");
        assert_eq!(
            (p.messages, next_offset(&bad, 0), seen),
            (1, Some(2), vec![2])
        );
    }
}
