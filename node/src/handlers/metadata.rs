//! Metadata (v0–v12), with auto topic creation.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::broker::Ctx;
use crate::connection::{frame, Pending};
use crate::metadata::{validate_topic_name, AdminError, TopicMeta};
use crate::protocol::{decode_body, encode_response, FrameError, Request};

pub async fn handle(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: MetadataRequest = decode_body(req, "Metadata request")?;
    let broker = &ctx.broker;
    // v0: an empty list means all topics; v1+: null means all.
    let wanted: Option<Vec<(Option<String>, Uuid)>> = match body.topics {
        None => None,
        Some(ts) if ts.is_empty() && req.version == 0 => None,
        Some(ts) => Some(
            ts.into_iter()
                .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
                .collect(),
        ),
    };
    let auto_create =
        broker.config.auto_create_topics && (req.version < 4 || body.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match wanted {
        None => {
            for meta in broker.registry.snapshot().topics.values() {
                topics.push(describe(meta, req.version, broker.config.node_id));
            }
        }
        Some(list) => {
            for (name, id) in list {
                topics.push(lookup(ctx, name, id, auto_create, req.version).await);
            }
        }
    }
    let mut resp = MetadataResponse::default();
    let mut b = MetadataResponseBroker::default();
    b.node_id = BrokerId(broker.config.node_id);
    b.host = StrBytes::from_string(broker.config.advertised.0.clone());
    b.port = broker.config.advertised.1 as i32;
    resp.brokers = vec![b];
    resp.cluster_id = Some(StrBytes::from_string(broker.cluster_id.clone()));
    resp.controller_id = BrokerId(broker.config.node_id);
    resp.topics = topics;
    frame(encode_response(
        ApiKey::Metadata,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}

fn error_topic(name: Option<String>, id: Uuid, e: &AdminError) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = e.code.code();
    t.name = name.map(|n| TopicName(StrBytes::from_string(n)));
    t.topic_id = id;
    t
}

async fn lookup(
    ctx: &Ctx,
    name: Option<String>,
    id: Uuid,
    auto_create: bool,
    version: i16,
) -> MetadataResponseTopic {
    let broker = &ctx.broker;
    let node = broker.config.node_id;
    let snap = broker.registry.snapshot();
    let Some(name) = name else {
        return match snap.by_id(id) {
            Some(meta) => describe(meta, version, node),
            None => error_topic(
                None,
                id,
                &AdminError::new(ResponseError::UnknownTopicId, "unknown topic id"),
            ),
        };
    };
    if let Some(meta) = snap.get(&name) {
        return describe(meta, version, node);
    }
    if let Err(e) = validate_topic_name(&name) {
        return error_topic(Some(name), id, &e);
    }
    if name == crate::groups::OFFSETS_TOPIC && auto_create {
        // Created the way the coordinator needs it, not with defaults.
        let _ = ctx.broker.groups.ensure(ctx).await;
        if let Some(meta) = broker.registry.snapshot().get(&name) {
            return describe(meta, version, node);
        }
    }
    if !auto_create {
        return error_topic(
            Some(name),
            id,
            &AdminError::new(ResponseError::UnknownTopicOrPartition, "unknown topic"),
        );
    }
    match create_topic(ctx, &name, broker.config.num_partitions, BTreeMap::new()).await {
        Ok(meta) => {
            tracing::info!(topic = %name, partitions = meta.partitions, "topic auto-created");
            describe(&meta, version, node)
        }
        // Lost a race with another creator: describe what is there.
        Err(e) if e.code == ResponseError::TopicAlreadyExists => {
            match broker.registry.snapshot().get(&name) {
                Some(meta) => describe(meta, version, node),
                None => error_topic(Some(name), id, &e),
            }
        }
        Err(e) => error_topic(Some(name), id, &e),
    }
}

/// Create a topic and open its partitions on their owner shards.
pub async fn create_topic(
    ctx: &Ctx,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
) -> Result<Arc<TopicMeta>, AdminError> {
    let name2 = name.to_string();
    let meta = ctx
        .registry(move |b| b.registry.create(&b.config, &name2, partitions, configs))
        .await?;
    ctx.open_partitions(&meta, 0, meta.partitions)
        .await
        .map_err(|e| AdminError::new(ResponseError::KafkaStorageError, e))?;
    Ok(meta)
}

/// A topic as Metadata describes it: this node leads every partition.
pub fn describe(meta: &TopicMeta, _version: i16, node: i32) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(meta.name.clone())));
    t.topic_id = meta.id;
    t.is_internal = meta.name.starts_with("__");
    t.partitions = (0..meta.partitions)
        .map(|p| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = p;
            mp.leader_id = BrokerId(node);
            mp.leader_epoch = 0;
            mp.replica_nodes = vec![BrokerId(node)];
            mp.isr_nodes = vec![BrokerId(node)];
            mp
        })
        .collect();
    t
}
