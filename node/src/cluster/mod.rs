//! The controller: cluster metadata (brokers, topics, replica assignments)
//! as a state machine replicated by its own Raft group, like KRaft's or
//! Redpanda's controller. Everything here is pure: proposals are computed
//! from the committed state, committed commands are applied in log order,
//! and nothing does I/O, so a controller [`crate::replication::Replica`]
//! (or the simulator) can drive it.
//!
//! - [`command`]: the commands and their encoding as one-record batches.
//! - [`state`]: the state and its deterministic `apply`.
//! - [`placement`]: where new partitions' replicas go.
//! - [`controller`]: admin requests checked and turned into commands.

pub mod command;
pub mod controller;
pub mod placement;
pub mod report;
pub mod runtime;
pub mod state;

pub use command::{BrokerId, Command, DecodeError};
pub use controller::{Controller, NewTopic, Requester, TopicDefaults};
pub use placement::{place, Load};
pub use state::{Applied, Broker, ClusterState, CommandError, LeaderAndIsr, SnapshotError, Topic};

#[cfg(test)]
mod proptests;
