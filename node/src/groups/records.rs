//! The records of `__consumer_offsets`, in Apache Kafka's own layout (so
//! its tools can read them): keys and values are versioned, non-flexible
//! structs of big-endian ints and i16-length strings.
//!
//! - Offset commit: key v1 `group, topic, partition:i32`; value v3
//!   `offset:i64, leader_epoch:i32, metadata, commit_timestamp:i64`.
//! - Group metadata: key v2 `group`; value v3 `protocol_type,
//!   generation:i32, protocol?, leader?, state_timestamp:i64, members[]`,
//!   each member `member_id, group_instance_id?, client_id, client_host,
//!   rebalance_timeout:i32, session_timeout:i32, subscription:bytes,
//!   assignment:bytes`.
//!
//! A null value is a tombstone. The bytes come back from disk, so decoding
//! checks every length and never panics.

use bytes::{BufMut, Bytes, BytesMut};

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record ends early")]
    Short,
    #[error("negative length {0}")]
    BadLength(i64),
    #[error("unknown {what} version {version}")]
    Version { what: &'static str, version: i16 },
}

/// A decoded key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group(String),
}

impl Key {
    pub fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group(group) => group,
        }
    }
}

/// The stored form of a committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// The stored form of one group member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// The stored form of a group's membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

fn put_str(out: &mut BytesMut, s: &str) {
    let b = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    out.put_i16(b.len() as i16);
    out.put_slice(b);
}

fn put_opt_str(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.put_slice(b);
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(1);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(2);
    put_str(&mut b, group);
    b.freeze()
}

impl OffsetValue {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(3);
        b.put_i64(self.offset);
        b.put_i32(self.leader_epoch);
        put_str(&mut b, &self.metadata);
        b.put_i64(self.commit_timestamp);
        b.freeze()
    }

    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader(b);
        r.version(3, "offset value")?;
        let offset = r.i64()?;
        let leader_epoch = r.i32()?;
        let metadata = r.str()?;
        let commit_timestamp = r.i64()?;
        Ok(Self {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
        })
    }
}

impl GroupValue {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(3);
        put_str(&mut b, &self.protocol_type);
        b.put_i32(self.generation);
        put_opt_str(&mut b, self.protocol.as_deref());
        put_opt_str(&mut b, self.leader.as_deref());
        b.put_i64(self.state_timestamp);
        b.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_str(&mut b, &m.member_id);
            put_opt_str(&mut b, m.instance_id.as_deref());
            put_str(&mut b, &m.client_id);
            put_str(&mut b, &m.client_host);
            b.put_i32(m.rebalance_timeout_ms);
            b.put_i32(m.session_timeout_ms);
            put_bytes(&mut b, &m.subscription);
            put_bytes(&mut b, &m.assignment);
        }
        b.freeze()
    }

    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader(b);
        r.version(3, "group value")?;
        let protocol_type = r.str()?;
        let generation = r.i32()?;
        let protocol = r.opt_str()?;
        let leader = r.opt_str()?;
        let state_timestamp = r.i64()?;
        let count = r.i32()?;
        if count < 0 {
            return Err(RecordError::BadLength(count as i64));
        }
        // Each member takes at least 28 bytes: bound the count by what is there.
        let mut members = Vec::with_capacity((count as usize).min(r.0.len() / 28));
        for _ in 0..count {
            members.push(MemberValue {
                member_id: r.str()?,
                instance_id: r.opt_str()?,
                client_id: r.str()?,
                client_host: r.str()?,
                rebalance_timeout_ms: r.i32()?,
                session_timeout_ms: r.i32()?,
                subscription: r.bytes()?,
                assignment: r.bytes()?,
            });
        }
        Ok(Self {
            protocol_type,
            generation,
            protocol,
            leader,
            state_timestamp,
            members,
        })
    }
}

pub fn decode_key(b: &[u8]) -> Result<Key, RecordError> {
    let mut r = Reader(b);
    match r.i16()? {
        0 | 1 => Ok(Key::Offset {
            group: r.str()?,
            topic: r.str()?,
            partition: r.i32()?,
        }),
        2 => Ok(Key::Group(r.str()?)),
        version => Err(RecordError::Version {
            what: "key",
            version,
        }),
    }
}

/// Bounds-checked big-endian reads.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The leading version field, which must be `want`.
    fn version(&mut self, want: i16, what: &'static str) -> Result<(), RecordError> {
        match self.i16()? {
            v if v == want => Ok(()),
            version => Err(RecordError::Version { what, version }),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Short);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn i16(&mut self) -> Result<i16, RecordError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    fn opt_str(&mut self) -> Result<Option<String>, RecordError> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(
            String::from_utf8_lossy(self.take(n as usize)?).into_owned(),
        ))
    }

    fn str(&mut self) -> Result<String, RecordError> {
        self.opt_str().map(Option::unwrap_or_default)
    }

    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(n as usize)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let k = offset_key("g", "orders", 7);
        assert_eq!(
            decode_key(&k).unwrap(),
            Key::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7
            }
        );
        assert_eq!(decode_key(&group_key("g")).unwrap(), Key::Group("g".into()));
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta ✓".into(),
            commit_timestamp: 1_700_000_000_000,
        };
        assert_eq!(OffsetValue::decode(&v.encode()).unwrap(), v);
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 9,
            members: vec![MemberValue {
                member_id: "m1".into(),
                instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"as"),
            }],
        };
        assert_eq!(GroupValue::decode(&g.encode()).unwrap(), g);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: None,
            leader: None,
            state_timestamp: 0,
            members: vec![],
        }
        .encode();
        for n in 0..g.len() {
            assert!(GroupValue::decode(&g[..n]).is_err());
        }
        let k = offset_key("group", "topic", 1);
        for n in 0..k.len() {
            assert!(decode_key(&k[..n]).is_err());
        }
        // An absurd member count with no bytes behind it.
        let mut b = BytesMut::new();
        b.put_i16(3);
        put_str(&mut b, "consumer");
        b.put_i32(1);
        b.put_i16(-1);
        b.put_i16(-1);
        b.put_i64(0);
        b.put_i32(i32::MAX);
        assert_eq!(GroupValue::decode(&b), Err(RecordError::Short));
        assert!(decode_key(&[0, 9]).is_err());
    }
}
