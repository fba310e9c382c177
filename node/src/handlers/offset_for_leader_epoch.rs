//! OffsetForLeaderEpoch (v2–v4, KIP-101/KIP-320), and the current-leader-
//! epoch check that Fetch and ListOffsets share with it.
//!
//! A partition's leader epoch is its Raft term in a cluster, and 0 for a
//! partition this broker holds alone (what Metadata reports). Given an
//! epoch E, a partition answers the largest epoch <= E its log has and the
//! offset where that epoch ends (the start of the next one, or the log end
//! for the last); an epoch newer than the log's last is UNDEFINED (-1, -1),
//! and one older than anything known gets itself and the start of the
//! first known epoch, as Kafka answers. Clients use it to detect that the
//! log was truncated below their position after a leader change.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;
use odradek_engine::shard::TopicPartition;

use crate::broker::Ctx;
use crate::connection::{frame, Pending};
use crate::handlers::topic_name;
use crate::protocol::{decode_body, encode_response, FrameError, Request};
use crate::replication::group::{GroupHandle, Leadership};

/// A request's "no current leader epoch": no check (Kafka's
/// `RecordBatch.NO_PARTITION_LEADER_EPOCH`).
pub const NO_EPOCH: i32 = -1;

/// Kafka's replica id for debugging tools, which may ask any replica.
const DEBUGGING_REPLICA_ID: i32 = -2;

/// How this broker holds a partition it has a log for.
pub enum Holder {
    /// Alone (a lone broker, or an unreplicated topic in a cluster): it
    /// leads, at epoch 0.
    Local,
    /// Through the partition's Raft group.
    Group(GroupHandle),
}

impl Holder {
    /// Its current epoch and whether it leads, without a round trip.
    pub fn leadership(&self) -> Leadership {
        match self {
            Holder::Local => Leadership {
                epoch: 0,
                leads: true,
            },
            Holder::Group(g) => g.leadership(),
        }
    }
}

/// How `tp` (a partition of a known topic) is held here; a replicated one
/// whose group is not running here is NOT_LEADER_OR_FOLLOWER.
pub fn holder(ctx: &Ctx, tp: &TopicPartition) -> Result<Holder, ResponseError> {
    match ctx
        .broker
        .cluster
        .as_ref()
        .filter(|c| c.replicates(&tp.topic))
    {
        None => Ok(Holder::Local),
        Some(c) => c
            .group(tp)
            .map(Holder::Group)
            .ok_or(ResponseError::NotLeaderOrFollower),
    }
}

/// The current-leader-epoch check, then (if `need_leader`) leadership, in
/// Kafka's order: an older epoch than ours is FENCED_LEADER_EPOCH (the
/// client's metadata is stale), a newer one UNKNOWN_LEADER_EPOCH (ours
/// is); -1 skips the epoch check.
pub fn check_epoch(current: i32, l: Leadership, need_leader: bool) -> Result<(), ResponseError> {
    if current != NO_EPOCH {
        let ours = i64::try_from(l.epoch).unwrap_or(i64::MAX);
        match i64::from(current).cmp(&ours) {
            std::cmp::Ordering::Less => return Err(ResponseError::FencedLeaderEpoch),
            std::cmp::Ordering::Greater => return Err(ResponseError::UnknownLeaderEpoch),
            std::cmp::Ordering::Equal => {}
        }
    }
    if need_leader && !l.leads {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    Ok(())
}

/// A lone partition's answer: one epoch, 0, covering the whole log.
pub fn local_end_for_epoch(epoch: i32, log_end: u64) -> Option<(u64, u64)> {
    (epoch == 0).then_some((0, log_end))
}

pub async fn handle(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: OffsetForLeaderEpochRequest = decode_body(req, "OffsetForLeaderEpoch request")?;
    let need_leader = body.replica_id.0 != DEBUGGING_REPLICA_ID;
    let snap = ctx.broker.registry.snapshot();
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in body.topics {
        let name = topic_name(&t.topic).to_string();
        let meta = snap.get(&name);
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        for p in t.partitions {
            let mut pr = EpochEndOffset::default();
            pr.partition = p.partition;
            let known = meta.is_some_and(|m| (0..m.partitions).contains(&p.partition));
            let res = if known {
                let tp = TopicPartition::new(&name, p.partition);
                answer(
                    ctx,
                    &tp,
                    p.current_leader_epoch,
                    p.leader_epoch,
                    need_leader,
                )
                .await
            } else {
                Err(ResponseError::UnknownTopicOrPartition)
            };
            match res {
                Ok(Some((epoch, end))) => {
                    pr.leader_epoch = i32::try_from(epoch).unwrap_or(i32::MAX);
                    pr.end_offset = i64::try_from(end).unwrap_or(i64::MAX);
                }
                Ok(None) => {} // UNDEFINED: -1, -1 (the defaults)
                Err(e) => pr.error_code = e.code(),
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    frame(encode_response(
        ApiKey::OffsetForLeaderEpoch,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}

/// One partition's answer: `Ok(None)` is UNDEFINED.
async fn answer(
    ctx: &Ctx,
    tp: &TopicPartition,
    current: i32,
    epoch: i32,
    need_leader: bool,
) -> Result<Option<(u64, u64)>, ResponseError> {
    match holder(ctx, tp)? {
        Holder::Local => {
            check_epoch(current, Holder::Local.leadership(), need_leader)?;
            let end = ctx
                .with_log(tp, |log| async move { log.log_end_offset() })
                .await
                .map_err(|_| ResponseError::KafkaStorageError)?
                .ok_or(ResponseError::UnknownTopicOrPartition)?;
            Ok(local_end_for_epoch(epoch, end))
        }
        Holder::Group(g) => {
            // A cheap refusal first; the answer then comes from one state
            // of the replica (its epoch and log agree).
            check_epoch(current, g.leadership(), need_leader)?;
            let asked = u64::try_from(epoch).ok();
            let a = g
                .epochs(asked, None)
                .await
                .ok_or(ResponseError::NotLeaderOrFollower)?;
            check_epoch(current, a.leadership, need_leader)?;
            Ok(a.end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, leads: bool) -> Leadership {
        Leadership { epoch, leads }
    }

    #[test]
    fn current_epochs_are_checked_before_leadership() {
        assert_eq!(check_epoch(5, at(5, true), true), Ok(()));
        assert_eq!(check_epoch(NO_EPOCH, at(5, true), true), Ok(()));
        assert_eq!(
            check_epoch(4, at(5, true), true),
            Err(ResponseError::FencedLeaderEpoch)
        );
        assert_eq!(
            check_epoch(6, at(5, true), true),
            Err(ResponseError::UnknownLeaderEpoch)
        );
        // Any other negative epoch is just old.
        assert_eq!(
            check_epoch(-7, at(0, true), true),
            Err(ResponseError::FencedLeaderEpoch)
        );
        // A follower: a stale epoch is still FENCED (the client learns
        // its metadata is old), the right one NOT_LEADER_OR_FOLLOWER.
        assert_eq!(
            check_epoch(4, at(5, false), true),
            Err(ResponseError::FencedLeaderEpoch)
        );
        assert_eq!(
            check_epoch(5, at(5, false), true),
            Err(ResponseError::NotLeaderOrFollower)
        );
        assert_eq!(check_epoch(5, at(5, false), false), Ok(()));
        assert_eq!(check_epoch(NO_EPOCH, at(5, false), false), Ok(()));
    }

    #[test]
    fn a_lone_partition_has_epoch_zero() {
        assert_eq!(local_end_for_epoch(0, 42), Some((0, 42)));
        assert_eq!(local_end_for_epoch(1, 42), None);
        assert_eq!(local_end_for_epoch(-1, 42), None);
    }
}
