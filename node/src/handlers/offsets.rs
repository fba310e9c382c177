//! OffsetCommit (v2–v9), OffsetFetch (v1–v9, batched groups from v8) and
//! OffsetDelete (v0): committed offsets of consumer groups, kept by the
//! group coordinator in `__consumer_offsets`. A commit is answered once
//! its record is durable.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ApiKey, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as E;

use crate::broker::Ctx;
use crate::connection::{frame, Pending, Reply};
use crate::groups::coordinator::CommitArgs;
use crate::groups::state::Committed;
use crate::metadata::Topics;
use crate::protocol::{decode_body, encode_response, FrameError, Request};

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Add a partition's answer under its topic, making the topic entry on
/// first use (answers are grouped per topic, in request order).
fn push_partition<T, P>(
    topics: &mut Vec<T>,
    name: &str,
    partition: P,
    name_of: impl Fn(&T) -> &str,
    new_topic: impl FnOnce(&str) -> T,
    partitions: impl Fn(&mut T) -> &mut Vec<P>,
) {
    let i = match topics.iter().position(|t| name_of(t) == name) {
        Some(i) => i,
        None => {
            topics.push(new_topic(name));
            topics.len() - 1
        }
    };
    partitions(&mut topics[i]).push(partition);
}

/// Whether `topic`-`partition` exists in `topics`.
fn known(topics: &Topics, topic: &str, partition: i32) -> bool {
    topics
        .get(topic)
        .is_some_and(|m| (0..m.partitions).contains(&partition))
}

pub fn handle_commit(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: OffsetCommitRequest = decode_body(req, "OffsetCommit request")?;
    let max_meta = ctx.broker.config.offset_metadata_max_bytes;
    let topics = ctx.broker.registry.snapshot();
    // (topic, partition, error or None = goes to the coordinator)
    let mut results: Vec<(String, i32, Option<E>)> = Vec::new();
    let mut commits = Vec::new();
    for t in &body.topics {
        let name = t.name.0.to_string();
        for p in &t.partitions {
            let meta = p.committed_metadata.as_deref().unwrap_or("");
            let early = if !known(&topics, &name, p.partition_index) {
                Some(E::UnknownTopicOrPartition)
            } else if meta.len() > max_meta {
                Some(E::OffsetMetadataTooLarge)
            } else {
                commits.push(CommitArgs {
                    topic: name.clone(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if req.version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: meta.to_string(),
                });
                None
            };
            results.push((name.clone(), p.partition_index, early));
        }
    }
    let started = ctx.broker.groups.commit_start(
        &body.group_id.0,
        &body.member_id,
        body.group_instance_id.as_deref(),
        body.generation_id_or_member_epoch,
        commits,
    );
    let ctx = ctx.clone();
    let (version, correlation) = (req.version, req.header.correlation_id);
    Ok(Box::pin(async move {
        let outcome = match started {
            Ok(pending) => ctx.broker.groups.commit_finish(pending).await.err(),
            Err(e) => Some(e),
        };
        let mut resp = OffsetCommitResponse::default();
        for (name, partition, early) in results {
            let code = early.or(outcome).map_or(0, |e| e.code());
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = partition;
            pr.error_code = code;
            push_partition(
                &mut resp.topics,
                &name,
                pr,
                |t: &OffsetCommitResponseTopic| t.name.0.as_str(),
                |n| {
                    let mut t = OffsetCommitResponseTopic::default();
                    t.name = topic(n);
                    t
                },
                |t| &mut t.partitions,
            )
        }
        match encode_response(ApiKey::OffsetCommit, version, correlation, &resp) {
            Ok(b) => Reply::Frame(b),
            Err(e) => Reply::Close(format!("encoding OffsetCommit response: {e}")),
        }
    }))
}

/// (committed offset, leader epoch, metadata) as OffsetFetch reports them.
fn fields(c: &Option<Committed>) -> (i64, i32, StrBytes) {
    match c {
        Some(c) => (
            c.offset,
            c.leader_epoch,
            StrBytes::from_string(c.metadata.clone()),
        ),
        None => (-1, -1, StrBytes::from_static_str("")),
    }
}

type Fetched = Result<Vec<(String, i32, Option<Committed>)>, E>;

pub fn handle_fetch(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: OffsetFetchRequest = decode_body(req, "OffsetFetch request")?;
    let groups = &ctx.broker.groups;
    let mut resp = OffsetFetchResponse::default();
    if req.version >= 8 {
        for g in &body.groups {
            let wanted = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let got: Fetched = groups.fetch(&g.group_id.0, wanted);
            let mut rg = OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id.clone();
            match got {
                Err(e) => rg.error_code = e.code(),
                Ok(list) => {
                    for (name, partition, c) in list {
                        let (offset, epoch, meta) = fields(&c);
                        let mut pr = OffsetFetchResponsePartitions::default();
                        pr.partition_index = partition;
                        pr.committed_offset = offset;
                        pr.committed_leader_epoch = epoch;
                        pr.metadata = Some(meta);
                        push_partition(
                            &mut rg.topics,
                            &name,
                            pr,
                            |t: &OffsetFetchResponseTopics| t.name.0.as_str(),
                            |n| {
                                let mut t = OffsetFetchResponseTopics::default();
                                t.name = topic(n);
                                t
                            },
                            |t| &mut t.partitions,
                        )
                    }
                }
            }
            resp.groups.push(rg);
        }
    } else {
        // v0-v1 list topics; v2+ may send null for "all".
        let wanted = body.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect::<Vec<_>>()
        });
        let got: Fetched = groups.fetch(&body.group_id.0, wanted.clone());
        let list = match got {
            Ok(list) => list,
            Err(e) => {
                // Before v2 the error can only be given per partition.
                resp.error_code = e.code();
                wanted
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p, None)))
                    .collect()
            }
        };
        let partition_error = if req.version < 2 { resp.error_code } else { 0 };
        for (name, partition, c) in list {
            let (offset, epoch, meta) = fields(&c);
            let mut pr = OffsetFetchResponsePartition::default();
            pr.partition_index = partition;
            pr.committed_offset = offset;
            pr.committed_leader_epoch = epoch;
            pr.metadata = Some(meta);
            pr.error_code = partition_error;
            push_partition(
                &mut resp.topics,
                &name,
                pr,
                |t: &OffsetFetchResponseTopic| t.name.0.as_str(),
                |n| {
                    let mut t = OffsetFetchResponseTopic::default();
                    t.name = topic(n);
                    t
                },
                |t| &mut t.partitions,
            )
        }
    }
    frame(encode_response(
        ApiKey::OffsetFetch,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}

pub fn handle_delete(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: OffsetDeleteRequest = decode_body(req, "OffsetDelete request")?;
    let topics = ctx.broker.registry.snapshot();
    let mut results: Vec<(String, i32, Option<E>)> = Vec::new();
    let mut partitions = Vec::new();
    for t in &body.topics {
        for p in &t.partitions {
            let name = t.name.0.to_string();
            if known(&topics, &name, p.partition_index) {
                partitions.push((name.clone(), p.partition_index));
                results.push((name, p.partition_index, None));
            } else {
                results.push((name, p.partition_index, Some(E::UnknownTopicOrPartition)));
            }
        }
    }
    let ctx = ctx.clone();
    let group = body.group_id.0.to_string();
    let (version, correlation) = (req.version, req.header.correlation_id);
    Ok(Box::pin(async move {
        let outcome = ctx.broker.groups.offset_delete(&group, partitions).await;
        let mut resp = OffsetDeleteResponse::default();
        let mut codes = match outcome {
            Ok(codes) => codes.into_iter(),
            Err(e) => {
                resp.error_code = e.code();
                Vec::new().into_iter()
            }
        };
        if resp.error_code == 0 {
            for (name, partition, early) in results {
                let code = match early {
                    Some(e) => Err(e),
                    None => codes.next().unwrap_or(Ok(())),
                };
                let mut pr = OffsetDeleteResponsePartition::default();
                pr.partition_index = partition;
                pr.error_code = code.err().map_or(0, |e| e.code());
                push_partition(
                    &mut resp.topics,
                    &name,
                    pr,
                    |t: &OffsetDeleteResponseTopic| t.name.0.as_str(),
                    |n| {
                        let mut t = OffsetDeleteResponseTopic::default();
                        t.name = topic(n);
                        t
                    },
                    |t| &mut t.partitions,
                )
            }
        }
        match encode_response(ApiKey::OffsetDelete, version, correlation, &resp) {
            Ok(b) => Reply::Frame(b),
            Err(e) => Reply::Close(format!("encoding OffsetDelete response: {e}")),
        }
    }))
}
