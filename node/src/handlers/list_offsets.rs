//! ListOffsets (v1–v8): earliest (-2), latest (-1), max timestamp (-3), or
//! the first offset whose batch reaches a timestamp; a timestamp after the
//! last record gives offset -1.
//!
//! A replicated partition answers only on its leader, after the request's
//! current leader epoch is checked (v4+, KIP-320). The answer's leader
//! epoch (v4+) is, as in Kafka, the current epoch for "latest" and the
//! epoch of the batch holding the offset otherwise (0 on a lone broker).

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;
use odradek_engine::shard::TopicPartition;

use crate::broker::Ctx;
use crate::connection::{frame, Pending};
use crate::handlers::offset_for_leader_epoch::{check_epoch, holder, Holder};
use crate::handlers::topic_name;
use crate::protocol::{decode_body, encode_response, FrameError, Request};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: ListOffsetsRequest = decode_body(req, "ListOffsets request")?;
    let snap = ctx.broker.registry.snapshot();
    let mut resp = ListOffsetsResponse::default();
    for t in body.topics {
        let name = topic_name(&t.name).to_string();
        let meta = snap.get(&name);
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            pr.leader_epoch = -1;
            if !meta.is_some_and(|m| (0..m.partitions).contains(&p.partition_index)) {
                pr.error_code = ResponseError::UnknownTopicOrPartition.code();
                tr.partitions.push(pr);
                continue;
            }
            let tp = TopicPartition::new(&name, p.partition_index);
            let held = holder(ctx, &tp).and_then(|h| {
                check_epoch(p.current_leader_epoch, h.leadership(), true).map(|()| h)
            });
            let held = match held {
                Ok(h) => h,
                Err(e) => {
                    pr.error_code = e.code();
                    tr.partitions.push(pr);
                    continue;
                }
            };
            let ts = p.timestamp;
            let res = ctx
                .with_log(&tp, move |log| async move {
                    match ts {
                        LATEST => Ok(Some((log.visible_end() as i64, -1))),
                        EARLIEST => Ok(Some((log.log_start_offset() as i64, -1))),
                        MAX_TIMESTAMP => log
                            .max_timestamp_offset()
                            .await
                            .map(|o| o.map(|(off, t)| (off as i64, t))),
                        ts => log
                            .offset_for_timestamp(ts)
                            .await
                            .map(|o| o.map(|(off, t)| (off as i64, t))),
                    }
                    .map_err(|e| e.to_string())
                })
                .await;
            match res {
                Ok(Some(Ok(Some((offset, timestamp))))) => {
                    pr.offset = offset;
                    pr.timestamp = timestamp;
                    if req.version >= 4 {
                        pr.leader_epoch = answer_epoch(&held, ts, offset).await;
                    }
                }
                Ok(Some(Ok(None))) => {}
                Ok(Some(Err(e))) => {
                    tracing::warn!(partition = %tp, "list offsets failed: {e}");
                    pr.error_code = ResponseError::KafkaStorageError.code();
                }
                Ok(None) | Err(_) => pr.error_code = ResponseError::UnknownTopicOrPartition.code(),
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    frame(encode_response(
        ApiKey::ListOffsets,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}

/// The leader epoch to answer with `offset`: the current one for
/// "latest", else the epoch of the batch holding it (-1 if unknown).
async fn answer_epoch(held: &Holder, ts: i64, offset: i64) -> i32 {
    let epoch = match held {
        Holder::Local => Some(0),
        Holder::Group(g) if ts == LATEST => Some(g.leadership().epoch),
        Holder::Group(g) => match u64::try_from(offset) {
            Ok(o) => g.epochs(None, Some(o)).await.and_then(|a| a.at_offset),
            Err(_) => None,
        },
    };
    epoch.map_or(-1, |e| i32::try_from(e).unwrap_or(i32::MAX))
}
