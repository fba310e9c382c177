//! A classic-protocol consumer group member for `consume --group`:
//! JoinGroup (with the KIP-394 member id round trip), the range assignor
//! when elected leader, SyncGroup, Heartbeat, LeaveGroup.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::client::{decode_embedded, Cluster};
use super::error::{check, CliError, Result};

const SESSION_TIMEOUT_MS: i32 = 10_000;
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

// Error codes the member reacts to rather than fails on.
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR:
/// the group's coordinator is moving or loading (in a cluster, its offsets
/// partition changed leader); find it again and retry.
pub fn coordinator_moving(code: i16) -> bool {
    matches!(code, 14..=16)
}

/// Does this error code mean "rejoin the group"?
pub fn needs_rejoin(code: i16) -> bool {
    matches!(
        code,
        ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID | REBALANCE_IN_PROGRESS
    )
}

pub struct Member {
    pub group: String,
    topic: String,
    pub member_id: String,
    pub generation: i32,
    last_heartbeat: Instant,
}

/// Embedded consumer-protocol messages carry an i16 version first.
fn versioned<T: Encodable>(msg: &T, version: i16) -> Result<Bytes> {
    let mut b = BytesMut::new();
    b.put_i16(version);
    msg.encode(&mut b, version)
        .map_err(|e| CliError::Local(format!("encoding consumer protocol: {e}")))?;
    Ok(b.freeze())
}

/// Topics a member subscribed to, or none when its metadata is unreadable.
fn subscription(metadata: &Bytes) -> Vec<String> {
    if metadata.len() < 2 {
        return Vec::new();
    }
    let mut b = metadata.clone();
    let version = b.get_i16().clamp(0, 3);
    decode_embedded::<ConsumerProtocolSubscription>(b, version)
        .map(|s| s.topics.iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

/// Kafka's range assignor: per topic, members sorted by id take consecutive
/// runs of partitions, the first `partitions % members` one extra.
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> = subscriptions
        .keys()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    for (topic, &count) in partition_counts {
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() || count <= 0 {
            continue;
        }
        let n = members.len() as i32;
        let (each, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in members.into_iter().enumerate() {
            let take = each + i32::from((i as i32) < extra);
            let ps: Vec<i32> = (next..next + take).collect();
            next += take;
            if let Some(a) = out.get_mut(m) {
                a.insert(topic.clone(), ps);
            }
        }
    }
    out
}

impl Member {
    /// Join `group` subscribed to `topic`; returns the member and the
    /// partitions of `topic` it was assigned.
    pub fn join(cluster: &mut Cluster, group: &str, topic: &str) -> Result<(Member, Vec<i32>)> {
        let mut m = Member {
            group: group.into(),
            topic: topic.into(),
            member_id: String::new(),
            generation: -1,
            last_heartbeat: Instant::now(),
        };
        let parts = m.rejoin(cluster)?;
        Ok((m, parts))
    }

    /// (Re)join and sync; returns the assigned partitions of our topic.
    pub fn rejoin(&mut self, cluster: &mut Cluster) -> Result<Vec<i32>> {
        let mut sub = ConsumerProtocolSubscription::default();
        sub.topics = vec![sb(&self.topic)];
        let metadata = versioned(&sub, 0)?;
        let deadline = Instant::now() + Duration::from_millis(REBALANCE_TIMEOUT_MS as u64 * 2);
        loop {
            if Instant::now() > deadline {
                return Err(CliError::Timeout {
                    addr: format!("group {}", self.group),
                });
            }
            let timeout = cluster.timeout();
            let group = self.group.clone();
            let conn = cluster.coordinator(&group)?;
            let mut p = JoinGroupRequestProtocol::default();
            p.name = sb("range");
            p.metadata = metadata.clone();
            let mut req = JoinGroupRequest::default();
            req.group_id = GroupId(sb(&group));
            req.session_timeout_ms = SESSION_TIMEOUT_MS;
            req.rebalance_timeout_ms = REBALANCE_TIMEOUT_MS;
            req.member_id = sb(&self.member_id);
            req.protocol_type = sb("consumer");
            req.protocols = vec![p];
            // v1: rebalance timeout; v9: the newest.
            let version = conn.version::<JoinGroupRequest>(1, 9)?;
            // JoinGroup waits for the whole group to rejoin.
            conn.set_read_timeout(timeout + Duration::from_millis(REBALANCE_TIMEOUT_MS as u64))?;
            let resp = conn.send_at(&req, version);
            conn.set_read_timeout(timeout)?;
            let resp = resp?;
            if resp.error_code == MEMBER_ID_REQUIRED {
                self.member_id = resp.member_id.to_string();
                continue;
            }
            if resp.error_code == UNKNOWN_MEMBER_ID {
                self.member_id.clear();
                continue;
            }
            if resp.error_code == REBALANCE_IN_PROGRESS {
                continue;
            }
            if coordinator_moving(resp.error_code) {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            check(|| format!("joining group {group}"), resp.error_code, None)?;
            self.member_id = resp.member_id.to_string();
            self.generation = resp.generation_id;
            let leader = resp.leader.as_str() == resp.member_id.as_str();
            let protocol = resp.protocol_name.as_ref().map(|p| p.to_string());

            let mut assignments = Vec::new();
            if leader {
                let subs: BTreeMap<String, Vec<String>> = resp
                    .members
                    .iter()
                    .map(|m| (m.member_id.to_string(), subscription(&m.metadata)))
                    .collect();
                let topics: Vec<String> = subs
                    .values()
                    .flatten()
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let md = cluster.metadata(Some(&topics))?;
                let counts: BTreeMap<String, i32> = md
                    .topics
                    .iter()
                    .filter(|t| t.error_code == 0)
                    .filter_map(|t| {
                        t.name
                            .as_ref()
                            .map(|n| (n.0.to_string(), t.partitions.len() as i32))
                    })
                    .collect();
                for (member, topics) in range_assign(&subs, &counts) {
                    let mut a = ConsumerProtocolAssignment::default();
                    a.assigned_partitions = topics
                        .into_iter()
                        .map(|(t, ps)| {
                            let mut tp = TopicPartition::default();
                            tp.topic = TopicName(sb(&t));
                            tp.partitions = ps;
                            tp
                        })
                        .collect();
                    let mut sa = SyncGroupRequestAssignment::default();
                    sa.member_id = sb(&member);
                    sa.assignment = versioned(&a, 0)?;
                    assignments.push(sa);
                }
            }
            let conn = cluster.coordinator(&group)?;
            let mut req = SyncGroupRequest::default();
            req.group_id = GroupId(sb(&group));
            req.generation_id = self.generation;
            req.member_id = sb(&self.member_id);
            req.assignments = assignments;
            let version = conn.version::<SyncGroupRequest>(0, 5)?;
            if version >= 5 {
                req.protocol_type = Some(sb("consumer"));
                req.protocol_name = protocol.as_deref().map(sb);
            }
            conn.set_read_timeout(timeout + Duration::from_millis(REBALANCE_TIMEOUT_MS as u64))?;
            let resp = conn.send_at(&req, version);
            conn.set_read_timeout(timeout)?;
            let resp = resp?;
            if needs_rejoin(resp.error_code) || coordinator_moving(resp.error_code) {
                if resp.error_code == UNKNOWN_MEMBER_ID {
                    self.member_id.clear();
                }
                if coordinator_moving(resp.error_code) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            check(|| format!("syncing group {group}"), resp.error_code, None)?;
            self.last_heartbeat = Instant::now();
            let mut b = resp.assignment;
            if b.len() < 2 {
                return Ok(Vec::new()); // nothing assigned
            }
            let version = b.get_i16().clamp(0, 3);
            let a: ConsumerProtocolAssignment =
                decode_embedded(b, version).map_err(|detail| CliError::Malformed {
                    addr: format!("group {group}"),
                    detail: format!("assignment: {detail}"),
                })?;
            let mut mine: Vec<i32> = a
                .assigned_partitions
                .iter()
                .filter(|tp| tp.topic.0.as_str() == self.topic)
                .flat_map(|tp| tp.partitions.iter().copied())
                .collect();
            mine.sort_unstable();
            mine.dedup();
            return Ok(mine);
        }
    }

    /// Heartbeat if one is due; `Ok(true)` when the group is rebalancing
    /// (or forgot us) and the caller must commit and rejoin.
    pub fn heartbeat(&mut self, cluster: &mut Cluster) -> Result<bool> {
        if self.last_heartbeat.elapsed() < HEARTBEAT_EVERY {
            return Ok(false);
        }
        let group = self.group.clone();
        let conn = cluster.coordinator(&group)?;
        let mut req = HeartbeatRequest::default();
        req.group_id = GroupId(sb(&group));
        req.generation_id = self.generation;
        req.member_id = sb(&self.member_id);
        let (_, resp) = conn.send(&req, 0, 4)?;
        self.last_heartbeat = Instant::now();
        if coordinator_moving(resp.error_code) {
            // Found again at the next heartbeat.
            return Ok(false);
        }
        if needs_rejoin(resp.error_code) {
            if resp.error_code == UNKNOWN_MEMBER_ID {
                self.member_id.clear();
            }
            return Ok(true);
        }
        check(
            || format!("heartbeat to group {group}"),
            resp.error_code,
            None,
        )?;
        Ok(false)
    }

    /// Leave the group so the others rebalance at once (best effort).
    pub fn leave(&self, cluster: &mut Cluster) -> Result<()> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let conn = cluster.coordinator(&self.group)?;
        let version = conn.version::<LeaveGroupRequest>(0, 5)?;
        let mut req = LeaveGroupRequest::default();
        req.group_id = GroupId(sb(&self.group));
        if version >= 3 {
            let mut mi = MemberIdentity::default();
            mi.member_id = sb(&self.member_id);
            req.members = vec![mi];
        } else {
            req.member_id = sb(&self.member_id);
        }
        conn.send_at(&req, version).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignor_splits_like_kafka() {
        let subs: BTreeMap<String, Vec<String>> = [
            ("b".to_string(), vec!["t".to_string()]),
            ("a".to_string(), vec!["t".to_string(), "u".to_string()]),
        ]
        .into_iter()
        .collect();
        let counts: BTreeMap<String, i32> = [("t".to_string(), 5), ("u".to_string(), 2)]
            .into_iter()
            .collect();
        let a = range_assign(&subs, &counts);
        assert_eq!(a["a"]["t"], vec![0, 1, 2]);
        assert_eq!(a["b"]["t"], vec![3, 4]);
        assert_eq!(a["a"]["u"], vec![0, 1]);
        assert!(!a["b"].contains_key("u"));
    }
}
