//! How a Raft entry is stored: as exactly one RecordBatch of the partition
//! log, so the log *is* the Raft log and needs no second write.
//!
//! - A data entry (a producer's batch) is written as the batch itself; its
//!   `partitionLeaderEpoch` becomes the entry's term when it is written.
//! - Raft's own entries (a new leader's empty entry, configuration changes)
//!   are written as one-record *control* batches, which every Kafka client
//!   skips, so they take one offset and never reach an application.
//!
//! Offsets are not Raft indexes: entry `i` starts where entry `i - 1`
//! ended, and every replica gives the same entry the same offset because
//! their logs agree below any entry they share (Raft's log matching).
//! [`super::store::LogStore`] keeps the index → offset translation.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use odradek_engine::batch::{self, BatchBuilder, BatchHeader, Record, ATTR_CONTROL};
use raft::eraftpb::{Entry, EntryType};

/// The control-record type of a Raft entry's batch (Kafka's own control
/// types are small numbers; clients skip control batches of any type).
pub const RAFT_CONTROL_TYPE: i16 = 0x4f44;

/// Why bytes are not an entry's batch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("entry {index}: data is not one RecordBatch v2: {reason}")]
    NotABatch { index: u64, reason: String },
    #[error("control batch at offset {offset} is not a Raft entry")]
    NotRaftControl { offset: i64 },
}

/// How many offsets an entry takes in the partition log.
pub fn offset_count(entry: &Entry) -> Result<u64, EntryError> {
    match (entry.get_entry_type(), entry.data.is_empty()) {
        (EntryType::EntryNormal, false) => {
            let h = single_batch(&entry.data).map_err(|reason| EntryError::NotABatch {
                index: entry.index,
                reason,
            })?;
            Ok(h.last_offset_delta as u64 + 1)
        }
        _ => Ok(1),
    }
}

/// Check that `data` is exactly one batch and return its header.
pub fn single_batch(data: &[u8]) -> Result<BatchHeader, String> {
    let h = BatchHeader::parse(data).map_err(|e| e.to_string())?;
    if h.size() != data.len() {
        return Err(format!("batch is {} bytes, entry {}", h.size(), data.len()));
    }
    if h.magic != 2 || h.last_offset_delta < 0 {
        return Err(format!(
            "magic {} lastOffsetDelta {}",
            h.magic, h.last_offset_delta
        ));
    }
    Ok(h)
}

/// The bytes to write for an entry (the producer's batch, or a control
/// batch carrying Raft's entry); the writer assigns offset and epoch.
pub fn to_batch(entry: &Entry) -> Bytes {
    if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
        return entry.data.clone();
    }
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(RAFT_CONTROL_TYPE);
    let mut value = Vec::with_capacity(1 + entry.data.len());
    value.push(entry.get_entry_type() as u8);
    value.extend_from_slice(&entry.data);
    // Built from the entry alone (timestamp 0), so every replica writes
    // the same bytes.
    let mut b = BatchBuilder::new(0).attributes(ATTR_CONTROL);
    b.push(&Record {
        key: Some(key.to_vec()),
        value: Some(value),
        ..Record::default()
    });
    b.build().freeze()
}

/// Rebuild the entry a batch read back from the log holds (recovery, and
/// entries fetched to send to a lagging follower).
pub fn from_batch(index: u64, term: u64, data: Bytes) -> Result<Entry, EntryError> {
    let h = single_batch(&data).map_err(|reason| EntryError::NotABatch { index, reason })?;
    let mut e = Entry {
        index,
        term,
        ..Entry::default()
    };
    if !h.is_control() {
        e.set_entry_type(EntryType::EntryNormal);
        e.data = data;
        return Ok(e);
    }
    let not_raft = || EntryError::NotRaftControl {
        offset: h.base_offset,
    };
    let section = &data[batch::HEADER_LEN..];
    let recs = batch::decode_records(section, h.record_count).map_err(|_| not_raft())?;
    let [rec] = recs.as_slice() else {
        return Err(not_raft());
    };
    let (Some(mut key), Some(value)) = (rec.key, rec.value) else {
        return Err(not_raft());
    };
    if key.len() != 4 || key.get_i16() != 0 || key.get_i16() != RAFT_CONTROL_TYPE {
        return Err(not_raft());
    }
    let Some((&kind, rest)) = value.split_first() else {
        return Err(not_raft());
    };
    let kind = match kind {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => return Err(not_raft()),
    };
    e.set_entry_type(kind);
    e.data = Bytes::copy_from_slice(rest);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use odradek_engine::batch::sample_batch;

    #[test]
    fn data_entry_is_its_batch() {
        let b = sample_batch(5, 10, 1000).freeze();
        let e = Entry {
            index: 7,
            term: 3,
            data: b.clone(),
            ..Entry::default()
        };
        assert_eq!(offset_count(&e), Ok(5));
        assert_eq!(to_batch(&e), b);
        let back = from_batch(7, 3, to_batch(&e)).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn raft_entries_are_one_offset_control_batches() {
        for (kind, data) in [
            (EntryType::EntryNormal, Bytes::new()),
            (
                EntryType::EntryConfChangeV2,
                Bytes::from_static(b"\x01\x02cc"),
            ),
        ] {
            let mut e = Entry {
                index: 9,
                term: 4,
                data: data.clone(),
                ..Entry::default()
            };
            e.set_entry_type(kind);
            assert_eq!(offset_count(&e), Ok(1));
            let b = to_batch(&e);
            let h = single_batch(&b).unwrap();
            assert!(h.is_control());
            assert_eq!(h.record_count, 1);
            // Valid as a batch the engine accepts (CRC included).
            batch::validate(&b, 1 << 20, batch::Strictness::Produce).unwrap();
            assert_eq!(from_batch(9, 4, b).unwrap(), e);
        }
    }

    #[test]
    fn foreign_control_batches_and_garbage_are_refused() {
        let mut bb = BatchBuilder::new(0).attributes(ATTR_CONTROL);
        bb.push(&Record {
            key: Some(vec![0, 0, 0, 1]), // a Kafka COMMIT marker
            value: Some(vec![0, 0, 0, 0, 0, 0]),
            ..Record::default()
        });
        assert!(matches!(
            from_batch(1, 1, bb.build().freeze()),
            Err(EntryError::NotRaftControl { .. })
        ));
        assert!(matches!(
            from_batch(1, 1, Bytes::from_static(b"short")),
            Err(EntryError::NotABatch { .. })
        ));
        let two = [sample_batch(1, 1, 0), sample_batch(1, 1, 0)].concat();
        let e = Entry {
            data: two.into(),
            ..Entry::default()
        };
        assert!(offset_count(&e).is_err());
    }
}
