//! DeleteTopics (v1–v6; by name, and from v6 by topic id).
//!
//! Order matters for what a failure or a concurrent request can leave
//! behind: first every partition log is closed and its directory removed
//! on its owner shard, then the topic leaves the registry. A failure on
//! the way leaves the topic listed (and the delete can be retried); it
//! never leaves an unlisted directory that a later topic of the same name
//! would recover old records from, and a topic re-created right after
//! (auto-creation by a producer) cannot be handed a log that is about to
//! be deleted.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use odradek_engine::shard::TopicPartition;
use uuid::Uuid;

use crate::broker::Ctx;
use crate::connection::{frame, Pending};
use crate::metadata::{AdminError, TopicMeta};
use crate::protocol::{decode_body, encode_response, FrameError, Request};

/// One requested deletion: by name or by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Name(String),
    Id(Uuid),
    /// Both or neither given (v6).
    Bad(Option<String>, Uuid, &'static str),
}

pub async fn handle(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: DeleteTopicsRequest = decode_body(req, "DeleteTopics request")?;
    let targets: Vec<Target> = if req.version >= 6 {
        body.topics
            .iter()
            .map(|t| match (&t.name, t.topic_id.is_nil()) {
                (Some(n), true) => Target::Name(n.0.to_string()),
                (None, false) => Target::Id(t.topic_id),
                (Some(n), false) => Target::Bad(
                    Some(n.0.to_string()),
                    t.topic_id,
                    "give a topic name or a topic id, not both",
                ),
                (None, true) => Target::Bad(None, t.topic_id, "neither topic name nor id given"),
            })
            .collect()
    } else {
        body.topic_names
            .iter()
            .map(|n| Target::Name(n.0.to_string()))
            .collect()
    };
    let mut count: HashMap<&Target, usize> = HashMap::new();
    for t in &targets {
        *count.entry(t).or_default() += 1;
    }
    let mut answered = std::collections::HashSet::new();
    let mut resp = DeleteTopicsResponse::default();
    for t in &targets {
        let (name, id, outcome) = if count[t] > 1 {
            if !answered.insert(t) {
                continue;
            }
            let (name, id) = match t {
                Target::Name(n) => (Some(n.clone()), Uuid::nil()),
                Target::Id(id) => (None, *id),
                Target::Bad(n, id, _) => (n.clone(), *id),
            };
            let e = AdminError::new(
                ResponseError::InvalidRequest,
                "topic listed more than once in the request",
            );
            (name, id, Err(e))
        } else {
            delete_one(ctx, t).await
        };
        let mut r = DeletableTopicResult::default();
        r.name = name.map(|n| TopicName(StrBytes::from_string(n)));
        if req.version >= 6 {
            r.topic_id = id;
        }
        match outcome {
            Ok(()) => {}
            Err(e) => {
                r.error_code = e.code.code();
                if req.version >= 5 {
                    r.error_message = Some(StrBytes::from_string(e.message));
                }
            }
        }
        resp.responses.push(r);
    }
    frame(encode_response(
        ApiKey::DeleteTopics,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}

/// Delete one topic: (name, id, outcome) for its result.
async fn delete_one(ctx: &Ctx, t: &Target) -> (Option<String>, Uuid, Result<(), AdminError>) {
    let snap = ctx.broker.registry.snapshot();
    let meta: Arc<TopicMeta> = match t {
        Target::Bad(n, id, why) => {
            return (
                n.clone(),
                *id,
                Err(AdminError::new(ResponseError::InvalidRequest, *why)),
            )
        }
        Target::Name(n) => match snap.get(n) {
            Some(m) => m.clone(),
            None => {
                return (
                    Some(n.clone()),
                    Uuid::nil(),
                    Err(AdminError::new(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no topic `{n}`"),
                    )),
                )
            }
        },
        Target::Id(id) => match snap.by_id(*id) {
            Some(m) => m.clone(),
            None => {
                return (
                    None,
                    *id,
                    Err(AdminError::new(
                        ResponseError::UnknownTopicId,
                        format!("no topic with id {id}"),
                    )),
                )
            }
        },
    };
    let outcome = delete_topic(ctx, &meta).await;
    if outcome.is_ok() {
        tracing::info!(topic = %meta.name, id = %meta.id, partitions = meta.partitions, "topic deleted");
    }
    (Some(meta.name.clone()), meta.id, outcome)
}

/// Remove a topic's partition logs (files included), then the topic.
pub async fn delete_topic(ctx: &Ctx, meta: &TopicMeta) -> Result<(), AdminError> {
    if let Some(c) = ctx.broker.replicated(&meta.name) {
        // The controller decides; every replica deletes its partitions as
        // it applies the command.
        let cmd = c.with_state(|ctl| ctl.delete_topic(&meta.name))?;
        let (name, id) = (meta.name.clone(), meta.id);
        return c
            .submit(cmd, move |s| s.topic(&name).is_none_or(|t| t.meta.id != id))
            .await;
    }
    for p in 0..meta.partitions {
        let tp = TopicPartition::new(&meta.name, p);
        delete_partition(ctx, &tp).await.map_err(|why| {
            tracing::error!(partition = %tp, "deleting partition failed: {why}");
            AdminError::new(
                ResponseError::KafkaStorageError,
                format!("deleting partition {tp} failed: {why}"),
            )
        })?;
    }
    let name = meta.name.clone();
    ctx.registry(move |b| b.registry.delete(&name).map(|_| ()))
        .await
}

/// Close and remove one partition's log on its owner; a directory of a
/// partition that is not open (it failed to open, or an earlier delete
/// stopped half way) is removed too.
async fn delete_partition(ctx: &Ctx, tp: &TopicPartition) -> Result<(), String> {
    let tp2 = tp.clone();
    let deleted = ctx
        .on_owner(tp, move |shard| async move {
            shard
                .delete_partition(&tp2)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
    if deleted {
        return Ok(());
    }
    let dir = ctx.broker.config.log_dir.join(tp.dir_name());
    compio::runtime::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", dir.display())),
    })
    .await
    .unwrap_or_else(|_| Err("remove task panicked".into()))
}
