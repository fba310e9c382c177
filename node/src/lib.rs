//! The Odradek broker node: a thin Kafka-protocol layer over the storage
//! engine's shards.
//!
//! - [`config`]: settings with Kafka's names.
//! - [`metadata`]: the topic registry.
//! - [`cluster`]: the controller's replicated cluster metadata and placement.
//! - [`durable`]: crash-safe replacement of small state files.
//! - [`metrics`]: Prometheus metrics and health endpoint.
//! - [`producer_ids`]: idempotent producers' ids, unique across restarts.
//! - [`protocol`]: framing, headers, served versions.
//! - [`broker`]: shared broker state and routing of partition work to the
//!   owner shard.
//! - [`server`]: listeners on every shard, start and shutdown.
//! - [`connection`]: one client connection: read, dispatch, write in order.
//! - [`groups`]: the group coordinator and committed offsets.
//! - [`handlers`]: one module per API.
//! - [`cli`]: the admin CLI (`odradek topic ...`), a Kafka-protocol client.

pub mod alloc;
pub mod broker;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod durable;
pub mod groups;
pub mod handlers;
pub mod metadata;
pub mod metrics;
pub mod producer_ids;
pub mod protocol;
pub mod replication;
pub mod server;
