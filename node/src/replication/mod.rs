//! Replication: one Raft group (tikv raft-rs) per partition, whose log is
//! the partition log. Everything here decides and does no I/O: it takes
//! events (ticks, messages, proposals, completed writes) and returns what
//! to write, send and answer, so the same code runs under the deterministic
//! simulator (`node/tests/raft_sim.rs`) and on the shards.

pub mod entry;
pub mod group;
pub mod replica;
pub mod store;
pub mod transport;

pub use replica::{Completion, ProduceError, Replica, ReplicaConfig, Role};
pub use store::{Anchor, FetchRequest, LogStore, LogWrite, RaftMeta};
