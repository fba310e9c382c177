//! Request handlers, one module per API, and the dispatch between them.

pub mod api_versions;
pub mod configs;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_topics;
pub mod fetch;
pub mod find_coordinator;
pub mod group_admin;
pub mod group_membership;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod offsets;
pub mod produce;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

use crate::broker::Ctx;
use crate::connection::Pending;
use crate::protocol::{self, FrameError};

/// Parse a frame and run the request's first phase; the returned future
/// produces the reply. An error closes the connection.
pub async fn dispatch(ctx: &Ctx, frame: Bytes) -> Result<(ApiKey, Pending), FrameError> {
    let req = protocol::parse_request(frame)?;
    tracing::trace!(key = ?req.key, version = req.version, "request");
    let key = req.key;
    Ok((key, route(ctx, req).await?))
}

async fn route(ctx: &Ctx, req: protocol::Request) -> Result<Pending, FrameError> {
    match req.key {
        ApiKey::ApiVersions => api_versions::handle(&req),
        ApiKey::Metadata => metadata::handle(ctx, &req).await,
        ApiKey::Produce => produce::handle(ctx, &req).await,
        ApiKey::Fetch => fetch::handle(ctx, &req).await,
        ApiKey::ListOffsets => list_offsets::handle(ctx, &req).await,
        ApiKey::FindCoordinator => find_coordinator::handle(ctx, &req).await,
        ApiKey::JoinGroup => group_membership::handle_join(ctx, &req),
        ApiKey::SyncGroup => group_membership::handle_sync(ctx, &req),
        ApiKey::Heartbeat => group_membership::handle_heartbeat(ctx, &req),
        ApiKey::LeaveGroup => group_membership::handle_leave(ctx, &req),
        ApiKey::OffsetForLeaderEpoch => offset_for_leader_epoch::handle(ctx, &req).await,
        ApiKey::OffsetCommit => offsets::handle_commit(ctx, &req),
        ApiKey::OffsetFetch => offsets::handle_fetch(ctx, &req),
        ApiKey::OffsetDelete => offsets::handle_delete(ctx, &req),
        ApiKey::ListGroups => group_admin::handle_list(ctx, &req),
        ApiKey::DescribeGroups => group_admin::handle_describe(ctx, &req),
        ApiKey::DeleteGroups => group_admin::handle_delete(ctx, &req),
        ApiKey::InitProducerId => init_producer_id::handle(ctx, &req).await,
        ApiKey::CreateTopics => create_topics::handle(ctx, &req).await,
        ApiKey::DeleteTopics => delete_topics::handle(ctx, &req).await,
        ApiKey::CreatePartitions => create_partitions::handle(ctx, &req).await,
        ApiKey::DescribeConfigs => configs::handle_describe(ctx, &req).await,
        ApiKey::IncrementalAlterConfigs => configs::handle_incremental_alter(ctx, &req).await,
        key => Err(FrameError::UnsupportedVersion {
            key,
            version: req.version,
        }),
    }
}

/// Names that occur more than once in a request: Kafka answers each such
/// topic once, with INVALID_REQUEST, and acts on none of them.
pub fn repeated<'a>(names: impl Iterator<Item = &'a str>) -> std::collections::HashSet<&'a str> {
    let mut seen = std::collections::HashSet::new();
    names.filter(|n| !seen.insert(*n)).collect()
}

/// The error for a name listed more than once.
pub fn listed_twice(name: &str) -> crate::metadata::AdminError {
    crate::metadata::AdminError::new(
        kafka_protocol::ResponseError::InvalidRequest,
        format!("topic `{name}` is listed more than once in the request"),
    )
}

/// A topic name as a `&str`.
pub fn topic_name(name: &kafka_protocol::messages::TopicName) -> &str {
    name.0.as_str()
}
