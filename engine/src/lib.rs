//! Odradek storage engine: partition logs of Kafka RecordBatch v2 bytes,
//! stored exactly as they travel on the wire, written and read through
//! io_uring by one shard thread per core.
//!
//! - [`batch`]: validate untrusted batches, assign offsets.
//! - [`codec`], [`compact`]: record codecs and log compaction's pure rules.
//! - [`segment`], [`index`]: a segment's files and sparse indexes.
//! - [`log`]: the partition log (pure [`log::LogState`] + async driver).
//! - [`producer`]: idempotent producers' sequence and epoch checks.
//! - [`io`]: the storage seam (io_uring, in-memory with crash simulation),
//!   and zero-copy splice of file slices to sockets.
//! - [`shard`]: thread-per-core shards and message passing to them.
//! - [`stats`]: counters of disk work (fdatasyncs) for metrics.

pub mod batch;
pub mod codec;
pub mod compact;
pub mod index;
pub mod io;
pub mod log;
pub mod process;
pub mod producer;
pub mod segment;
pub mod shard;
pub mod stats;
