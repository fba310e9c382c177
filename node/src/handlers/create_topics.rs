//! CreateTopics (v2–v7).
//!
//! Every topic is checked on its own: name, partition count (-1: the
//! broker's `num.partitions`), replication factor (-1 or 1 until
//! replication exists), no manual assignments, known configs with valid
//! values. `validate_only` checks and creates nothing. From v5 a result
//! carries the topic's partition count, replication factor and configs as
//! DescribeConfigs shows them; from v7 its id.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::broker::Ctx;
use crate::connection::{frame, Pending};
use crate::handlers::configs::topic_config_entries;
use crate::handlers::metadata::create_topic;
use crate::handlers::{listed_twice, repeated, topic_name};
use crate::metadata::AdminError;
use crate::protocol::{decode_body, encode_response, FrameError, Request};

/// What a created (or validated) topic looks like.
struct Created {
    id: Uuid,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
}

pub async fn handle(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: CreateTopicsRequest = decode_body(req, "CreateTopics request")?;
    let repeated = repeated(body.topics.iter().map(|t| topic_name(&t.name)));
    let mut answered = HashSet::new();
    let mut resp = CreateTopicsResponse::default();
    for t in &body.topics {
        let name = topic_name(&t.name);
        let outcome = if repeated.contains(name) {
            if !answered.insert(name) {
                continue;
            }
            Err(listed_twice(name))
        } else {
            create_one(ctx, t, body.validate_only).await
        };
        resp.topics.push(result(ctx, req.version, t, outcome));
    }
    frame(encode_response(
        ApiKey::CreateTopics,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}

/// Check a requested topic; the partition count and configs to create.
fn check(
    ctx: &Ctx,
    t: &CreatableTopic,
) -> Result<(i32, i16, BTreeMap<String, String>), AdminError> {
    let broker = &ctx.broker;
    let name = topic_name(&t.name);
    crate::metadata::refuse_internal(name, "created")?;
    if !t.assignments.is_empty() {
        return Err(AdminError::new(
            ResponseError::InvalidRequest,
            "manual replica assignment is not supported yet: leave assignments empty",
        ));
    }
    let clustered = broker.cluster.is_some();
    match t.replication_factor {
        -1 | 1 => {}
        // The controller checks it against the live brokers.
        n if n > 1 && clustered => {}
        n if n < 1 => {
            return Err(AdminError::new(
                ResponseError::InvalidReplicationFactor,
                "replication factor must be larger than 0, or -1 to use the default value",
            ))
        }
        n => {
            return Err(AdminError::new(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "unable to replicate the partition {n} time(s): the target replication factor of {n} cannot be reached because only 1 broker(s) are registered (replication is not implemented yet)"
                ),
            ))
        }
    }
    let partitions = match t.num_partitions {
        -1 => broker.config.num_partitions,
        n => n,
    };
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        let key = c.name.to_string();
        let Some(value) = &c.value else {
            return Err(AdminError::new(
                ResponseError::InvalidConfig,
                format!("null value for topic config `{key}`"),
            ));
        };
        if configs.insert(key.clone(), value.to_string()).is_some() {
            return Err(AdminError::new(
                ResponseError::InvalidRequest,
                format!("topic config `{key}` appears more than once"),
            ));
        }
    }
    // Name, existence, partition count, config keys and values.
    broker
        .registry
        .validate_new(&broker.config, name, partitions, &configs)?;
    let rf = match t.replication_factor {
        -1 if clustered => broker.config.default_replication_factor,
        -1 => 1,
        n => n,
    };
    Ok((partitions, rf, configs))
}

async fn create_one(
    ctx: &Ctx,
    t: &CreatableTopic,
    validate_only: bool,
) -> Result<Created, AdminError> {
    let (partitions, rf, configs) = check(ctx, t)?;
    if validate_only {
        return Ok(Created {
            id: Uuid::nil(),
            partitions,
            replication_factor: rf,
            configs,
        });
    }
    let name = topic_name(&t.name);
    let meta = create_topic(ctx, name, partitions, rf, configs).await?;
    tracing::info!(topic = %name, partitions = meta.partitions, replication_factor = rf, id = %meta.id, "topic created");
    Ok(Created {
        id: meta.id,
        partitions: meta.partitions,
        replication_factor: rf,
        configs: meta.configs.clone(),
    })
}

fn result(
    ctx: &Ctx,
    version: i16,
    t: &CreatableTopic,
    outcome: Result<Created, AdminError>,
) -> CreatableTopicResult {
    let mut r = CreatableTopicResult::default();
    r.name = t.name.clone();
    match outcome {
        Ok(c) => {
            r.error_message = None;
            if version >= 5 {
                r.num_partitions = c.partitions;
                r.replication_factor = c.replication_factor;
                r.configs = Some(
                    topic_config_entries(&ctx.broker.config, &c.configs)
                        .into_iter()
                        .map(|e| {
                            let mut cc = CreatableTopicConfigs::default();
                            cc.name = StrBytes::from_string(e.name);
                            cc.value = Some(StrBytes::from_string(e.value));
                            cc.read_only = e.read_only;
                            cc.config_source = e.source;
                            cc.is_sensitive = false;
                            cc
                        })
                        .collect(),
                );
            }
            if version >= 7 {
                r.topic_id = c.id;
            }
        }
        Err(e) => {
            r.error_code = e.code.code();
            r.error_message = Some(StrBytes::from_string(e.message));
        }
    }
    r
}
