//! Controller commands and their encoding: one command is the value of the
//! single record of one RecordBatch v2, so the controller log is made of
//! ordinary batches and one batch is one Raft entry, exactly like a
//! partition log (see [`crate::replication::entry`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use odradek_engine::batch::{self, BatchBuilder, Record, Strictness};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::replication::entry;

/// A broker's node id (`node.id`), as on the Kafka wire.
pub type BrokerId = i32;

/// A change to the cluster metadata. Commands carry every choice the
/// proposer made (ids, placement), so applying one is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// A broker starts (or restarts): it is registered and alive.
    RegisterBroker {
        id: BrokerId,
        host: String,
        port: u16,
        rack: Option<String>,
        /// Chosen by the broker process at start: a second process with
        /// the same id is refused while the first one is alive.
        incarnation: Uuid,
    },
    /// The controller stopped hearing from the broker.
    FenceBroker { id: BrokerId },
    /// The broker is heard from again.
    UnfenceBroker { id: BrokerId },
    /// The broker leaves the cluster; its replicas stay assigned (offline).
    UnregisterBroker { id: BrokerId },
    CreateTopic {
        name: String,
        id: Uuid,
        configs: BTreeMap<String, String>,
        /// One replica list per partition, first = preferred leader.
        replicas: Vec<Vec<BrokerId>>,
    },
    /// `id` is the topic's id the proposer saw: a stale delete cannot
    /// remove a topic re-created under the same name.
    DeleteTopic { name: String, id: Uuid },
    /// Append partitions `from..from + replicas.len()`; refused unless the
    /// topic still has `from` partitions.
    CreatePartitions {
        name: String,
        id: Uuid,
        from: i32,
        replicas: Vec<Vec<BrokerId>>,
    },
    /// Set (`Some`) or remove (`None`) config overrides; with `replace`,
    /// overrides not named are removed too (Kafka's legacy AlterConfigs).
    AlterConfigs {
        name: String,
        id: Uuid,
        changes: BTreeMap<String, Option<String>>,
        replace: bool,
    },
    /// A partition's leader reports its leader epoch (the Raft term) and
    /// ISR, like Kafka's AlterPartition: recorded unless an equal or newer
    /// epoch of another leader, or a newer one, is recorded already.
    PartitionState {
        name: String,
        id: Uuid,
        partition: i32,
        leader: BrokerId,
        epoch: u64,
        isr: Vec<BrokerId>,
    },
}

/// The record key of a command: names the encoding, so a future one can
/// be told apart instead of misread.
pub const COMMAND_KEY: &[u8] = b"odradek.controller.v1";

/// Why a batch is not a controller command. A replica that cannot read a
/// committed command must stop: skipping it would diverge its state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not one valid RecordBatch v2: {0}")]
    Batch(String),
    #[error("not a controller command: {0}")]
    NotACommand(String),
}

impl Command {
    /// The batch to propose: one uncompressed record, key [`COMMAND_KEY`],
    /// value the command as JSON. The leader assigns offset and epoch.
    pub fn to_batch(&self, timestamp_ms: i64) -> Bytes {
        let value = serde_json::to_vec(self).expect("commands always serialize");
        let mut b = BatchBuilder::new(timestamp_ms);
        b.push(&Record {
            key: Some(COMMAND_KEY.to_vec()),
            value: Some(value),
            ..Record::default()
        });
        b.build().freeze()
    }

    /// Read a command back from an entry's batch (CRC checked).
    pub fn from_batch(data: &[u8]) -> Result<Self, DecodeError> {
        let h = entry::single_batch(data).map_err(DecodeError::Batch)?;
        batch::validate(data, data.len(), Strictness::Produce)
            .map_err(|e| DecodeError::Batch(e.to_string()))?;
        let not = |why: &str| DecodeError::NotACommand(why.to_string());
        if h.is_control() {
            return Err(not("a control batch"));
        }
        if h.compression() != 0 {
            return Err(not("compressed"));
        }
        let recs = batch::decode_records(&data[batch::HEADER_LEN..], h.record_count)
            .map_err(|e| DecodeError::Batch(e.to_string()))?;
        let [rec] = recs.as_slice() else {
            return Err(not("not exactly one record"));
        };
        if rec.key != Some(COMMAND_KEY) {
            return Err(not("unknown record key"));
        }
        let value = rec.value.ok_or_else(|| not("null value"))?;
        serde_json::from_slice(value).map_err(|e| DecodeError::NotACommand(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Command> {
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "1000".to_string());
        vec![
            Command::RegisterBroker {
                id: 1,
                host: "10.0.0.1".into(),
                port: 9092,
                rack: Some("r1".into()),
                incarnation: Uuid::from_u128(7),
            },
            Command::FenceBroker { id: 1 },
            Command::CreateTopic {
                name: "t".into(),
                id: Uuid::from_u128(9),
                configs,
                replicas: vec![vec![1, 2], vec![2, 1]],
            },
            Command::AlterConfigs {
                name: "t".into(),
                id: Uuid::from_u128(9),
                changes: [("retention.ms".to_string(), None)].into(),
                replace: false,
            },
            Command::PartitionState {
                name: "t".into(),
                id: Uuid::from_u128(9),
                partition: 1,
                leader: 2,
                epoch: 4,
                isr: vec![1, 2],
            },
        ]
    }

    #[test]
    fn commands_round_trip_through_a_batch() {
        for c in sample() {
            let b = Command::to_batch(&c, 1234);
            let h = entry::single_batch(&b).unwrap();
            assert_eq!(h.record_count, 1);
            assert!(!h.is_control());
            batch::validate(&b, 1 << 20, Strictness::Produce).unwrap();
            assert_eq!(Command::from_batch(&b).unwrap(), c);
            // A data entry of the controller's Raft log, like any batch.
            let e = raft::eraftpb::Entry {
                index: 3,
                term: 1,
                data: b.clone(),
                ..Default::default()
            };
            assert_eq!(entry::offset_count(&e), Ok(1));
            assert_eq!(entry::to_batch(&e), b);
        }
    }

    #[test]
    fn other_batches_are_not_commands() {
        let mut corrupt = Command::FenceBroker { id: 1 }.to_batch(0).to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(matches!(
            Command::from_batch(&corrupt),
            Err(DecodeError::Batch(_))
        ));
        let plain = batch::sample_batch(1, 4, 0);
        assert!(matches!(
            Command::from_batch(&plain),
            Err(DecodeError::NotACommand(_))
        ));
        let two = batch::sample_batch(2, 4, 0);
        assert!(matches!(
            Command::from_batch(&two),
            Err(DecodeError::NotACommand(_))
        ));
        let mut b = BatchBuilder::new(0);
        b.push(&Record {
            key: Some(COMMAND_KEY.to_vec()),
            value: Some(br#"{"type":"reboot_universe"}"#.to_vec()),
            ..Record::default()
        });
        assert!(matches!(
            Command::from_batch(&b.build()),
            Err(DecodeError::NotACommand(_))
        ));
        let control = entry::to_batch(&raft::eraftpb::Entry::default());
        assert!(matches!(
            Command::from_batch(&control),
            Err(DecodeError::NotACommand(_))
        ));
    }
}
