//! Compression codecs of RecordBatch v2 records sections (attributes bits
//! 0–2): what compaction needs to filter the records of a compressed batch
//! and to check keys on produce to a compacted topic.
//!
//! Decompression works on untrusted bytes (a segment on disk, a producer's
//! batch), so every decoder is capped: output beyond `cap` bytes is an
//! error, not an allocation (a zip bomb cannot blow memory), and zstd's
//! window is limited so a frame cannot ask for a huge buffer.
//!
//! - gzip (1): `flate2`, multi-member streams accepted.
//! - snappy (2): raw snappy (librdkafka, franz-go) and the xerial framing
//!   the Java client writes (`\x82SNAPPY\0` + blocks) are both read; we
//!   always write raw snappy, which every client reads (Java's
//!   `SnappyInputStream` falls back to raw when the magic is absent).
//! - lz4 (3): the LZ4 *frame* format (Kafka since KIP-57), written with
//!   independent blocks, no content size and no dictionary, as Kafka's own
//!   `KafkaLZ4BlockOutputStream` requires on read.
//! - zstd (4): `zstd`, level 3 (Kafka's default).

use std::io::Read;

pub const NONE: i16 = 0;
pub const GZIP: i16 = 1;
pub const SNAPPY: i16 = 2;
pub const LZ4: i16 = 3;
pub const ZSTD: i16 = 4;

/// Largest zstd window accepted (2^24 = 16 MiB; producers' batches use far
/// smaller windows).
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("unknown compression codec {0}")]
    Unknown(i16),
    #[error("decompressed records exceed the limit of {0} bytes")]
    TooLarge(usize),
    #[error("{codec} data does not decode: {why}")]
    Corrupt { codec: &'static str, why: String },
}

fn name(codec: i16) -> &'static str {
    match codec {
        GZIP => "gzip",
        SNAPPY => "snappy",
        LZ4 => "lz4",
        ZSTD => "zstd",
        _ => "none",
    }
}

fn corrupt(codec: i16) -> impl FnOnce(std::io::Error) -> CodecError {
    move |e| CodecError::Corrupt {
        codec: name(codec),
        why: e.to_string(),
    }
}

/// Read all of `r`, but at most `cap` bytes.
fn read_capped(r: impl Read, cap: usize, codec: i16) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    r.take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt(codec))?;
    if out.len() > cap {
        return Err(CodecError::TooLarge(cap));
    }
    Ok(out)
}

fn snappy_raw(input: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let bad = |e: snap::Error| CodecError::Corrupt {
        codec: "snappy",
        why: e.to_string(),
    };
    let n = snap::raw::decompress_len(input).map_err(bad)?;
    if n > cap.saturating_sub(out.len()) {
        return Err(CodecError::TooLarge(cap));
    }
    let at = out.len();
    out.resize(at + n, 0);
    let got = snap::raw::Decoder::new()
        .decompress(input, &mut out[at..])
        .map_err(bad)?;
    out.truncate(at + got);
    Ok(())
}

fn snappy_decompress(input: &[u8], cap: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    let Some(mut rest) = input.strip_prefix(XERIAL_MAGIC) else {
        snappy_raw(input, cap, &mut out)?;
        return Ok(out);
    };
    // version i32, compatible version i32, then [length i32][raw block]...
    let short = || CodecError::Corrupt {
        codec: "snappy",
        why: "xerial frame cut short".into(),
    };
    rest = rest.get(8..).ok_or_else(short)?;
    while !rest.is_empty() {
        let len = rest.get(..4).ok_or_else(short)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let block = rest.get(4..4usize.saturating_add(len)).ok_or_else(short)?;
        snappy_raw(block, cap, &mut out)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// Decompress a records section compressed with `codec` (attributes bits
/// 0–2), producing at most `cap` bytes.
pub fn decompress(codec: i16, input: &[u8], cap: usize) -> Result<Vec<u8>, CodecError> {
    match codec {
        NONE => {
            if input.len() > cap {
                return Err(CodecError::TooLarge(cap));
            }
            Ok(input.to_vec())
        }
        GZIP => read_capped(flate2::read::MultiGzDecoder::new(input), cap, codec),
        SNAPPY => snappy_decompress(input, cap),
        LZ4 => read_capped(lz4_flex::frame::FrameDecoder::new(input), cap, codec),
        ZSTD => {
            let mut d = zstd::stream::read::Decoder::with_buffer(input).map_err(corrupt(codec))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(corrupt(codec))?;
            read_capped(d, cap, codec)
        }
        other => Err(CodecError::Unknown(other)),
    }
}

/// Compress a records section with `codec` (the batch's own codec).
pub fn compress(codec: i16, input: &[u8]) -> Result<Vec<u8>, CodecError> {
    use std::io::Write;
    match codec {
        NONE => Ok(input.to_vec()),
        GZIP => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(input).map_err(corrupt(codec))?;
            e.finish().map_err(corrupt(codec))
        }
        SNAPPY => snap::raw::Encoder::new()
            .compress_vec(input)
            .map_err(|e| CodecError::Corrupt {
                codec: "snappy",
                why: e.to_string(),
            }),
        LZ4 => {
            let mut info = lz4_flex::frame::FrameInfo::new();
            info.block_mode = lz4_flex::frame::BlockMode::Independent;
            let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            e.write_all(input).map_err(corrupt(codec))?;
            e.finish().map_err(|e| CodecError::Corrupt {
                codec: "lz4",
                why: e.to_string(),
            })
        }
        ZSTD => zstd::stream::encode_all(input, 3).map_err(corrupt(codec)),
        other => Err(CodecError::Unknown(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_respects_the_cap() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
            let c = compress(codec, &data).unwrap();
            assert_eq!(decompress(codec, &c, data.len()).unwrap(), data, "{codec}");
            assert_eq!(
                decompress(codec, &c, data.len() - 1),
                Err(CodecError::TooLarge(data.len() - 1)),
                "{codec}"
            );
            // Garbage and cuts are errors, not panics.
            let _ = decompress(codec, &c[..c.len() / 2], 1 << 20);
            let _ = decompress(codec, &[0xff; 40], 1 << 20);
        }
        assert_eq!(compress(5, b"x"), Err(CodecError::Unknown(5)));
    }

    #[test]
    fn xerial_framed_snappy_is_read() {
        let a = snap::raw::Encoder::new().compress_vec(b"hello ").unwrap();
        let b = snap::raw::Encoder::new().compress_vec(b"world").unwrap();
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        for blk in [&a, &b] {
            framed.extend_from_slice(&(blk.len() as u32).to_be_bytes());
            framed.extend_from_slice(blk);
        }
        assert_eq!(
            decompress(SNAPPY, &framed, 100).unwrap(),
            b"hello world".to_vec()
        );
        assert!(decompress(SNAPPY, &framed, 5).is_err());
        assert!(decompress(SNAPPY, &framed[..framed.len() - 1], 100).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(codec in 0i16..6, bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decompress(codec, &bytes, 4096);
        }
    }
}
