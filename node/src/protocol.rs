//! Kafka wire framing: request headers, the table of served API versions,
//! and response frames.
//!
//! A request frame is `size: i32` then `size` bytes: header, body. The size
//! is checked against `socket.request.max.bytes` before anything is
//! allocated; the header is checked (known API key, served version) before
//! the body is decoded with the `kafka-protocol` crate.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Served API versions: (key, min, max). ApiVersions advertises exactly this.
pub const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 0, 16),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 5),
];

/// The served range of `key`, if served at all.
pub fn served(key: ApiKey) -> Option<(i16, i16)> {
    SERVED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// Why a frame cannot be served: the connection is closed and this logged.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request size {0} is negative or zero")]
    BadSize(i32),
    #[error("request of {size} bytes exceeds socket.request.max.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("request too short for a header ({0} bytes)")]
    ShortHeader(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("API {key:?} version {version} is not served")]
    UnsupportedVersion { key: ApiKey, version: i16 },
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Check a frame size prefix.
pub fn check_size(size: i32, max: usize) -> Result<usize, FrameError> {
    if size <= 0 {
        return Err(FrameError::BadSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    Ok(size)
}

/// A request: its header and the undecoded body.
#[derive(Debug)]
pub struct Request {
    pub key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// What the header says before it is fully decoded.
pub fn peek_key_version(frame: &[u8]) -> Result<(i16, i16, i32), FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::ShortHeader(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Ok((key, version, correlation))
}

/// Split a frame into header and body. An ApiVersions request of a version
/// we do not serve is still parsed (KIP-511: it gets an answer).
pub fn parse_request(frame: Bytes) -> Result<Request, FrameError> {
    let (raw_key, version, _) = peek_key_version(&frame)?;
    let key = ApiKey::try_from(raw_key).map_err(|_| FrameError::UnknownApi(raw_key))?;
    let is_api_versions = key == ApiKey::ApiVersions;
    match served(key) {
        Some((lo, hi)) if (lo..=hi).contains(&version) => {}
        _ if is_api_versions => {}
        _ => return Err(FrameError::UnsupportedVersion { key, version }),
    }
    // Unknown (newer) ApiVersions versions: read the header as v2 would be
    // (flexible); only the correlation id matters for the answer.
    let header_version = if is_api_versions && version > 3 {
        2
    } else {
        key.request_header_version(version)
    };
    let mut buf = frame;
    let header =
        RequestHeader::decode(&mut buf, header_version).map_err(|e| FrameError::Malformed {
            what: "request header",
            why: e.to_string(),
        })?;
    Ok(Request {
        key,
        version,
        header,
        body: buf,
    })
}

/// Decode a request body of type `T` (trailing bytes are ignored, as Kafka does).
pub fn decode_body<T: Decodable>(req: &Request, what: &'static str) -> Result<T, FrameError> {
    let mut buf = req.body.clone();
    let msg = T::decode(&mut buf, req.version).map_err(|e| FrameError::Malformed {
        what,
        why: e.to_string(),
    })?;
    if !buf.is_empty() {
        // Kafka ignores trailing bytes, and librdkafka relies on it (it
        // writes a null topic array of Metadata v9+ as a 4-byte int).
        tracing::debug!(
            what,
            trailing = buf.len(),
            "ignoring trailing request bytes"
        );
    }
    Ok(msg)
}

/// Encode a whole response frame: size, header (v0, or v1 with an empty
/// tag buffer for flexible versions; ApiVersions always v0), body.
pub fn encode_response<T: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, FrameError> {
    let header_version = if key == ApiKey::ApiVersions {
        0
    } else {
        key.response_header_version(version)
    };
    let body_len = body
        .compute_size(version)
        .map_err(|e| FrameError::Malformed {
            what: "response",
            why: e.to_string(),
        })?;
    let header_len = 4 + usize::from(header_version >= 1);
    let mut out = BytesMut::with_capacity(4 + header_len + body_len);
    out.put_i32((header_len + body_len) as i32);
    put_response_header(&mut out, header_version, correlation_id);
    body.encode(&mut out, version)
        .map_err(|e| FrameError::Malformed {
            what: "response",
            why: e.to_string(),
        })?;
    Ok(out.freeze())
}

/// Response header: correlation id, plus an empty tagged-field section in v1.
pub fn put_response_header(out: &mut BytesMut, header_version: i16, correlation_id: i32) {
    out.put_i32(correlation_id);
    if header_version >= 1 {
        out.put_u8(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_before_allocation() {
        assert!(matches!(check_size(0, 100), Err(FrameError::BadSize(0))));
        assert!(matches!(check_size(-7, 100), Err(FrameError::BadSize(-7))));
        assert!(matches!(
            check_size(101, 100),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(check_size(100, 100).unwrap(), 100);
    }

    #[test]
    fn absurd_array_counts_fail_cleanly() {
        // Metadata v1 whose topic array claims 2^31-1 elements (the decoder
        // reserves that many before reading any): an error, not an abort.
        let mut frame = vec![0, 3, 0, 1, 0, 0, 0, 9, 0, 1, b'x'];
        frame.extend_from_slice(&i32::MAX.to_be_bytes());
        let req = parse_request(Bytes::from(frame)).unwrap();
        let r: Result<kafka_protocol::messages::MetadataRequest, _> =
            decode_body(&req, "Metadata request");
        assert!(matches!(r, Err(FrameError::Malformed { .. })));
    }

    #[test]
    fn headers_are_checked_before_bodies() {
        assert!(matches!(
            parse_request(Bytes::from_static(&[0, 1])),
            Err(FrameError::ShortHeader(2))
        ));
        let unknown = Bytes::from_static(&[0x7f, 0x00, 0, 1, 0, 0, 0, 1, 0xff, 0xff]);
        assert!(matches!(
            parse_request(unknown),
            Err(FrameError::UnknownApi(0x7f00))
        ));
        // Metadata v13 is not served.
        let old = Bytes::from_static(&[0, 3, 0, 13, 0, 0, 0, 1, 0xff, 0xff]);
        assert!(matches!(
            parse_request(old),
            Err(FrameError::UnsupportedVersion { .. })
        ));
        // ApiVersions v9 is parsed so it can be answered.
        let av = Bytes::from_static(&[0, 18, 0, 9, 0, 0, 0, 5, 0xff, 0xff, 0]);
        let r = parse_request(av).unwrap();
        assert_eq!(
            (r.key, r.version, r.header.correlation_id),
            (ApiKey::ApiVersions, 9, 5)
        );
    }
}
