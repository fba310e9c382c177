//! CreatePartitions (v0–v3): grow a topic to a larger partition count and
//! open the new partitions on their owner shards. Partitions are never
//! removed; replica assignments must be left null (one broker, no
//! replication yet).

use std::collections::HashSet;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Ctx;
use crate::connection::{frame, Pending};
use crate::handlers::{listed_twice, repeated, topic_name};
use crate::metadata::AdminError;
use crate::protocol::{decode_body, encode_response, FrameError, Request};

pub async fn handle(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: CreatePartitionsRequest = decode_body(req, "CreatePartitions request")?;
    let repeated = repeated(body.topics.iter().map(|t| topic_name(&t.name)));
    let mut answered = HashSet::new();
    let mut resp = CreatePartitionsResponse::default();
    for t in &body.topics {
        let name = topic_name(&t.name);
        let outcome = if repeated.contains(name) {
            if !answered.insert(name) {
                continue;
            }
            Err(listed_twice(name))
        } else {
            grow(ctx, t, body.validate_only).await
        };
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        if let Err(e) = outcome {
            r.error_code = e.code.code();
            r.error_message = Some(StrBytes::from_string(e.message));
        }
        resp.results.push(r);
    }
    frame(encode_response(
        ApiKey::CreatePartitions,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}

async fn grow(ctx: &Ctx, t: &CreatePartitionsTopic, validate_only: bool) -> Result<(), AdminError> {
    let name = topic_name(&t.name).to_string();
    // Null (or, leniently, empty): the broker places the new partitions.
    if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(AdminError::new(
            ResponseError::InvalidReplicaAssignment,
            "manual replica assignment is not supported yet: leave assignments null",
        ));
    }
    let (count, name2) = (t.count, name.clone());
    if let Some(c) = ctx.broker.replicated(&name) {
        // The controller places the new partitions; every replica opens
        // its own as it applies the command.
        let cmd = c.with_state(|ctl| ctl.create_partitions(&name, count))?;
        if validate_only {
            return Ok(());
        }
        return c
            .submit(cmd, move |s| {
                s.topic(&name2).is_some_and(|t| t.meta.partitions >= count)
            })
            .await;
    }
    let (meta, old) = ctx
        .registry(move |b| b.registry.set_partitions(&name2, count, validate_only))
        .await?;
    if validate_only {
        return Ok(());
    }
    ctx.open_partitions(&meta, old, meta.partitions)
        .await
        .map_err(|e| AdminError::new(ResponseError::KafkaStorageError, e))?;
    tracing::info!(topic = %name, from = old, to = meta.partitions, "partitions added");
    Ok(())
}
