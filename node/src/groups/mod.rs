//! Consumer groups: the classic group protocol and committed offsets.
//!
//! - [`state`]: one group's membership state machine (no I/O).
//! - [`records`]: the key/value records of `__consumer_offsets`.
//! - [`coordinator`]: groups per offsets partition, parked requests, the
//!   log writes that make groups and offsets durable, replay on start.

pub mod coordinator;
pub mod records;
pub mod state;

pub use coordinator::{Coordinator, OFFSETS_TOPIC};
