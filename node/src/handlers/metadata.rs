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
                topics.push(describe(broker, meta, req.version));
            }
        }
        Some(list) => {
            for (name, id) in list {
                topics.push(lookup(ctx, name, id, auto_create, req.version).await);
            }
        }
    }
    let mut resp = MetadataResponse::default();
    let entry = |id: i32, host: &str, port: u16| {
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(id);
        b.host = StrBytes::from_string(host.to_string());
        b.port = port as i32;
        b
    };
    match &broker.cluster {
        Some(c) => {
            resp.brokers = c
                .brokers
                .iter()
                .map(|(id, (h, p))| entry(*id as i32, h, *p))
                .collect();
            resp.controller_id = BrokerId(c.controller_leader().map_or(-1, |l| l as i32));
        }
        None => {
            let (h, p) = &broker.config.advertised;
            resp.brokers = vec![entry(broker.config.node_id, h, *p)];
            resp.controller_id = BrokerId(broker.config.node_id);
        }
    }
    resp.cluster_id = Some(StrBytes::from_string(broker.cluster_id.clone()));
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
    let snap = broker.registry.snapshot();
    let Some(name) = name else {
        return match snap.by_id(id) {
            Some(meta) => describe(broker, meta, version),
            None => error_topic(
                None,
                id,
                &AdminError::new(ResponseError::UnknownTopicId, "unknown topic id"),
            ),
        };
    };
    if let Some(meta) = snap.get(&name) {
        return describe(broker, meta, version);
    }
    if let Err(e) = validate_topic_name(&name) {
        return error_topic(Some(name), id, &e);
    }
    if name == crate::groups::OFFSETS_TOPIC && auto_create {
        // Created the way the coordinator needs it, not with defaults.
        let _ = ctx.broker.groups.ensure(ctx).await;
        if let Some(meta) = broker.registry.snapshot().get(&name) {
            return describe(broker, meta, version);
        }
        // Never with defaults: the client asks again.
        return error_topic(
            Some(name),
            id,
            &AdminError::new(ResponseError::LeaderNotAvailable, "being created"),
        );
    }
    if !auto_create {
        return error_topic(
            Some(name),
            id,
            &AdminError::new(ResponseError::UnknownTopicOrPartition, "unknown topic"),
        );
    }
    match create_topic(
        ctx,
        &name,
        broker.config.num_partitions,
        -1,
        BTreeMap::new(),
    )
    .await
    {
        Ok(meta) => {
            tracing::info!(topic = %name, partitions = meta.partitions, "topic auto-created");
            describe(broker, &meta, version)
        }
        // Lost a race with another creator: describe what is there.
        Err(e) if e.code == ResponseError::TopicAlreadyExists => {
            match broker.registry.snapshot().get(&name) {
                Some(meta) => describe(broker, meta, version),
                None => error_topic(Some(name), id, &e),
            }
        }
        Err(e) => error_topic(Some(name), id, &e),
    }
}

/// Create a topic and open its partitions on their owner shards. In a
/// cluster the controller decides (placement, `replication_factor`, -1 =
/// the default) and every replica opens its partitions as it applies the
/// command.
pub async fn create_topic(
    ctx: &Ctx,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
) -> Result<Arc<TopicMeta>, AdminError> {
    use crate::cluster::Requester;
    if let Some(c) = &ctx.broker.cluster {
        return create_replicated(
            ctx,
            c,
            name,
            partitions,
            replication_factor,
            configs,
            Requester::Client,
        )
        .await;
    }
    create_local(ctx, name, partitions, configs).await
}

/// Create an internal (`__`) topic on the broker's own behalf. In a
/// cluster it is replicated, with `replication_factor` capped at the live
/// brokers (so a cluster smaller than the setting still gets its topic);
/// a lone broker keeps it local.
pub async fn create_internal_topic(
    ctx: &Ctx,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
) -> Result<Arc<TopicMeta>, AdminError> {
    use crate::cluster::Requester;
    let Some(c) = &ctx.broker.cluster else {
        return create_local(ctx, name, partitions, configs).await;
    };
    wait_for_registrations(c).await;
    let live = c.with_state(|ctl| ctl.state().live_brokers().len());
    let rf = replication_factor.min(live.max(1) as i16).max(1);
    create_replicated(ctx, c, name, partitions, rf, configs, Requester::Broker).await
}

async fn create_local(
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

/// Just after a cluster starts, brokers are still registering: give them
/// a moment before placing replicas on fewer than all of them (a
/// registered broker that is down is fenced by the controller).
async fn wait_for_registrations(c: &crate::cluster::runtime::Cluster) {
    for _ in 0..100 {
        if c.with_state(|ctl| ctl.state().brokers().len()) >= c.voters.len() {
            break;
        }
        compio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn create_replicated(
    ctx: &Ctx,
    c: &crate::cluster::runtime::Cluster,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
    by: crate::cluster::Requester,
) -> Result<Arc<TopicMeta>, AdminError> {
    use crate::cluster::{Command, NewTopic};
    wait_for_registrations(c).await;
    let id = Uuid::new_v4();
    let cmd = c.with_state(|ctl| {
        ctl.create_topic(
            &NewTopic {
                name: name.to_string(),
                partitions,
                replication_factor,
                configs,
            },
            id,
            by,
        )
    })?;
    debug_assert!(matches!(cmd, Command::CreateTopic { .. }));
    c.submit(cmd, |s| s.topic(name).is_some()).await?;
    let Some(topic) = c.topic(name) else {
        return Err(AdminError::new(
            ResponseError::UnknownServerError,
            "topic vanished",
        ));
    };
    if topic.meta.id != id {
        return Err(AdminError::new(
            ResponseError::TopicAlreadyExists,
            format!("topic `{name}` already exists"),
        ));
    }
    // The applier installs it locally right after applying it.
    for _ in 0..200 {
        if ctx.broker.registry.snapshot().get(name).is_some() {
            break;
        }
        compio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(Arc::new(topic.meta))
}

/// A topic as Metadata describes it: a replicated topic as its replicas
/// know it (leader, epoch = Raft term, replicas, ISR); a local one led by
/// this node.
pub fn describe(
    broker: &crate::broker::Broker,
    meta: &TopicMeta,
    _version: i16,
) -> MetadataResponseTopic {
    let node = broker.config.node_id;
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(meta.name.clone())));
    t.topic_id = meta.id;
    t.is_internal = meta.name.starts_with("__");
    if let Some((c, topic)) = broker
        .cluster
        .as_ref()
        .and_then(|c| c.topic(&meta.name).map(|t| (c, t)))
    {
        t.partitions = (0..topic.meta.partitions)
            .map(|p| {
                let v = c.partition_view(&topic, p);
                let mut mp = MetadataResponsePartition::default();
                mp.partition_index = p;
                match v.leader {
                    Some(l) => mp.leader_id = BrokerId(l),
                    None => {
                        mp.leader_id = BrokerId(-1);
                        mp.error_code = ResponseError::LeaderNotAvailable.code();
                    }
                }
                mp.leader_epoch = v.epoch;
                mp.replica_nodes = v.replicas.into_iter().map(BrokerId).collect();
                mp.isr_nodes = v.isr.into_iter().map(BrokerId).collect();
                mp
            })
            .collect();
        return t;
    }
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
