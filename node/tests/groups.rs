//! The group coordinator over TCP: every served version of the group APIs,
//! a two-member rebalance, session expiry, and offsets across a restart.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{create_topic, start, Client};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as E;

const FAST: &[(&str, &str)] = &[
    ("group.initial.rebalance.delay.ms", "0"),
    ("group.min.session.timeout.ms", "100"),
    ("offsets.topic.num.partitions", "4"),
];

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn find_coordinator(c: &mut Client, group: &str, version: i16) {
    let mut req = FindCoordinatorRequest::default();
    if version >= 4 {
        req.coordinator_keys = vec![s(group)];
    } else {
        req.key = s(group);
    }
    let resp: FindCoordinatorResponse = c.send(ApiKey::FindCoordinator, version, &req);
    let (code, port) = if version >= 4 {
        (resp.coordinators[0].error_code, resp.coordinators[0].port)
    } else {
        (resp.error_code, resp.port)
    };
    assert_eq!(code, 0, "FindCoordinator v{version}");
    assert!(port > 0);
}

fn join_req(group: &str, member: &str, session_ms: i32) -> JoinGroupRequest {
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("range");
    p.metadata = Bytes::from_static(b"\0\x01\0\0\0\x01\0\x01t");
    let mut req = JoinGroupRequest::default();
    req.group_id = GroupId(s(group));
    req.session_timeout_ms = session_ms;
    req.rebalance_timeout_ms = 2000;
    req.member_id = s(member);
    req.protocol_type = s("consumer");
    req.protocols = vec![p];
    req
}

/// Join as a new member (with the KIP-394 round trip from v4).
fn join(c: &mut Client, group: &str, version: i16, session_ms: i32) -> JoinGroupResponse {
    let mut resp: JoinGroupResponse =
        c.send(ApiKey::JoinGroup, version, &join_req(group, "", session_ms));
    if version >= 4 {
        assert_eq!(
            resp.error_code,
            E::MemberIdRequired.code(),
            "JoinGroup v{version}"
        );
        let id = resp.member_id.to_string();
        resp = c.send(
            ApiKey::JoinGroup,
            version,
            &join_req(group, &id, session_ms),
        );
    }
    assert_eq!(resp.error_code, 0, "JoinGroup v{version}");
    resp
}

fn sync(
    c: &mut Client,
    group: &str,
    member: &str,
    generation: i32,
    version: i16,
    assign: &[(&str, &[u8])],
) -> SyncGroupResponse {
    let mut req = SyncGroupRequest::default();
    req.group_id = GroupId(s(group));
    req.generation_id = generation;
    req.member_id = s(member);
    if version >= 5 {
        req.protocol_type = Some(s("consumer"));
        req.protocol_name = Some(s("range"));
    }
    req.assignments = assign
        .iter()
        .map(|(m, a)| {
            let mut x = SyncGroupRequestAssignment::default();
            x.member_id = s(m);
            x.assignment = Bytes::copy_from_slice(a);
            x
        })
        .collect();
    c.send(ApiKey::SyncGroup, version, &req)
}

fn heartbeat(c: &mut Client, group: &str, member: &str, generation: i32, version: i16) -> i16 {
    let mut req = HeartbeatRequest::default();
    req.group_id = GroupId(s(group));
    req.generation_id = generation;
    req.member_id = s(member);
    let resp: HeartbeatResponse = c.send(ApiKey::Heartbeat, version, &req);
    resp.error_code
}

fn commit(
    c: &mut Client,
    group: &str,
    member: &str,
    generation: i32,
    version: i16,
    offsets: &[(&str, i32, i64)],
) -> Vec<i16> {
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(s(group));
    req.generation_id_or_member_epoch = generation;
    req.member_id = s(member);
    req.retention_time_ms = -1;
    for (t, p, o) in offsets {
        let mut part = OffsetCommitRequestPartition::default();
        part.partition_index = *p;
        part.committed_offset = *o;
        part.committed_metadata = Some(s(&format!("meta-{o}")));
        match req.topics.iter_mut().find(|x| x.name.0.as_str() == *t) {
            Some(x) => x.partitions.push(part),
            None => {
                let mut x = OffsetCommitRequestTopic::default();
                x.name = TopicName(s(t));
                x.partitions.push(part);
                req.topics.push(x);
            }
        }
    }
    let resp: OffsetCommitResponse = c.send(ApiKey::OffsetCommit, version, &req);
    resp.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// (partition, offset, metadata) committed for `topic` partitions 0..n.
fn fetch_offsets(
    c: &mut Client,
    group: &str,
    topic: &str,
    n: i32,
    version: i16,
) -> Vec<(i32, i64, String)> {
    let mut req = OffsetFetchRequest::default();
    if version >= 8 {
        let mut t = OffsetFetchRequestTopics::default();
        t.name = TopicName(s(topic));
        t.partition_indexes = (0..n).collect();
        let mut g = OffsetFetchRequestGroup::default();
        g.group_id = GroupId(s(group));
        g.topics = Some(vec![t]);
        req.groups = vec![g];
        let resp: OffsetFetchResponse = c.send(ApiKey::OffsetFetch, version, &req);
        assert_eq!(resp.groups[0].error_code, 0);
        resp.groups[0]
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    let meta = p
                        .metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default();
                    (p.partition_index, p.committed_offset, meta)
                })
            })
            .collect()
    } else {
        let mut t = OffsetFetchRequestTopic::default();
        t.name = TopicName(s(topic));
        t.partition_indexes = (0..n).collect();
        req.group_id = GroupId(s(group));
        req.topics = Some(vec![t]);
        let resp: OffsetFetchResponse = c.send(ApiKey::OffsetFetch, version, &req);
        assert_eq!(resp.error_code, 0);
        resp.topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    assert_eq!(p.error_code, 0);
                    let meta = p
                        .metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default();
                    (p.partition_index, p.committed_offset, meta)
                })
            })
            .collect()
    }
}

fn describe(c: &mut Client, group: &str, version: i16) -> (String, usize) {
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![GroupId(s(group))];
    let resp: DescribeGroupsResponse = c.send(ApiKey::DescribeGroups, version, &req);
    let g = &resp.groups[0];
    assert_eq!(g.error_code, 0);
    (g.group_state.to_string(), g.members.len())
}

#[test]
fn every_version_of_the_group_apis_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), FAST);
    let mut c = Client::connect(server.local_addr);
    create_topic(&mut c, "t", 2);
    for v in 0..=9i16 {
        let group = format!("g-v{v}");
        find_coordinator(&mut c, &group, v.min(5));
        let j = join(&mut c, &group, v, 10_000);
        let me = j.member_id.to_string();
        assert_eq!(
            (j.generation_id, j.leader.as_str()),
            (1, me.as_str()),
            "v{v}"
        );
        assert_eq!(j.members.len(), 1, "the leader sees itself");
        let sv = v.min(5);
        let r = sync(&mut c, &group, &me, 1, sv, &[(&me, b"assigned")]);
        assert_eq!(
            (r.error_code, &r.assignment[..]),
            (0, &b"assigned"[..]),
            "SyncGroup v{sv}"
        );
        assert_eq!(heartbeat(&mut c, &group, &me, 1, v.min(4)), 0);
        assert_eq!(
            heartbeat(&mut c, &group, &me, 7, v.min(4)),
            E::IllegalGeneration.code()
        );
        assert_eq!(
            heartbeat(&mut c, &group, "stranger", 1, v.min(4)),
            E::UnknownMemberId.code()
        );
        let cv = v.clamp(2, 9);
        let off = 10 + v as i64;
        assert_eq!(
            commit(
                &mut c,
                &group,
                &me,
                1,
                cv,
                &[("t", 0, off), ("t", 1, off + 1)]
            ),
            vec![0, 0]
        );
        assert_eq!(
            commit(&mut c, &group, &me, 0, cv, &[("t", 0, 99)]),
            vec![E::IllegalGeneration.code()]
        );
        assert_eq!(
            commit(&mut c, &group, &me, 1, cv, &[("nope", 0, 1)]),
            vec![E::UnknownTopicOrPartition.code()]
        );
        let fv = v.clamp(1, 9);
        let got = fetch_offsets(&mut c, &group, "t", 2, fv);
        let meta = |o: i64| {
            if fv >= 1 {
                format!("meta-{o}")
            } else {
                String::new()
            }
        };
        assert_eq!(
            got,
            vec![(0, off, meta(off)), (1, off + 1, meta(off + 1))],
            "OffsetFetch v{fv}"
        );
        assert_eq!(
            describe(&mut c, &group, v.min(5)),
            ("Stable".to_string(), 1)
        );
        let mut leave = LeaveGroupRequest::default();
        leave.group_id = GroupId(s(&group));
        let lv = v.min(5);
        if lv >= 3 {
            let mut m = MemberIdentity::default();
            m.member_id = s(&me);
            leave.members = vec![m];
        } else {
            leave.member_id = s(&me);
        }
        let resp: LeaveGroupResponse = c.send(ApiKey::LeaveGroup, lv, &leave);
        assert_eq!(resp.error_code, 0);
        if lv >= 3 {
            assert_eq!(resp.members[0].error_code, 0);
        }
        assert_eq!(describe(&mut c, &group, v.min(5)), ("Empty".to_string(), 0));
    }
    for v in 0..=5 {
        let resp: ListGroupsResponse = c.send(ApiKey::ListGroups, v, &ListGroupsRequest::default());
        assert_eq!(resp.error_code, 0);
        let names: Vec<String> = resp
            .groups
            .iter()
            .map(|g| g.group_id.0.to_string())
            .collect();
        for g in 0..=9 {
            assert!(
                names.contains(&format!("g-v{g}")),
                "ListGroups v{v}: {names:?}"
            );
        }
    }
    for v in 0..=2 {
        let mut req = DeleteGroupsRequest::default();
        req.groups_names = vec![GroupId(s(&format!("g-v{v}"))), GroupId(s("never-existed"))];
        let resp: DeleteGroupsResponse = c.send(ApiKey::DeleteGroups, v, &req);
        assert_eq!(resp.results[0].error_code, 0, "DeleteGroups v{v}");
        assert_eq!(resp.results[1].error_code, E::GroupIdNotFound.code());
        let got = fetch_offsets(&mut c, &format!("g-v{v}"), "t", 1, 5);
        assert_eq!(got[0].1, -1, "deleted group has no offsets");
    }
    // OffsetDelete on an empty group removes one partition's offset.
    let mut req = OffsetDeleteRequest::default();
    req.group_id = GroupId(s("g-v5"));
    let mut t =
        kafka_protocol::messages::offset_delete_request::OffsetDeleteRequestTopic::default();
    t.name = TopicName(s("t"));
    let mut p =
        kafka_protocol::messages::offset_delete_request::OffsetDeleteRequestPartition::default();
    p.partition_index = 1;
    t.partitions = vec![p];
    req.topics = vec![t];
    let resp: OffsetDeleteResponse = c.send(ApiKey::OffsetDelete, 0, &req);
    assert_eq!(
        (resp.error_code, resp.topics[0].partitions[0].error_code),
        (0, 0)
    );
    let got = fetch_offsets(&mut c, "g-v5", "t", 2, 5);
    assert_eq!((got[0].1, got[1].1), (15, -1));
    server.shutdown();
}

#[test]
fn a_second_member_rebalances_the_first_and_both_get_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), FAST);
    let addr = server.local_addr;
    let mut a = Client::connect(addr);
    find_coordinator(&mut a, "pair", 3);
    let ja = join(&mut a, "pair", 5, 10_000);
    let ida = ja.member_id.to_string();
    let r = sync(&mut a, "pair", &ida, 1, 3, &[(&ida, b"all")]);
    assert_eq!(r.error_code, 0);
    // b joins on its own connection and waits for a to rejoin.
    let b = std::thread::spawn(move || {
        let mut b = Client::connect(addr);
        let jb = join(&mut b, "pair", 5, 10_000);
        let idb = jb.member_id.to_string();
        let r = sync(&mut b, "pair", &idb, jb.generation_id, 3, &[]);
        (jb, r)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match heartbeat(&mut a, "pair", &ida, 1, 3) {
            0 => assert!(Instant::now() < deadline, "rebalance never signalled"),
            code => {
                assert_eq!(code, E::RebalanceInProgress.code());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ja2: JoinGroupResponse = a.send(ApiKey::JoinGroup, 5, &join_req("pair", &ida, 10_000));
    assert_eq!((ja2.error_code, ja2.generation_id), (0, 2));
    assert_eq!(ja2.leader.as_str(), ida, "the leader stays");
    assert_eq!(ja2.members.len(), 2);
    let idb = ja2
        .members
        .iter()
        .map(|m| m.member_id.to_string())
        .find(|m| *m != ida)
        .unwrap();
    let r = sync(&mut a, "pair", &ida, 2, 3, &[(&ida, b"p0"), (&idb, b"p1")]);
    assert_eq!(&r.assignment[..], b"p0");
    let (jb, rb) = b.join().unwrap();
    assert_eq!(
        (jb.generation_id, jb.members.len()),
        (2, 0),
        "followers see no members"
    );
    assert_eq!((rb.error_code, &rb.assignment[..]), (0, &b"p1"[..]));
    server.shutdown();
}

#[test]
fn a_member_that_stops_heartbeating_expires() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), FAST);
    let mut c = Client::connect(server.local_addr);
    find_coordinator(&mut c, "lazy", 3);
    let j = join(&mut c, "lazy", 5, 300);
    let me = j.member_id.to_string();
    assert_eq!(sync(&mut c, "lazy", &me, 1, 3, &[]).error_code, 0);
    assert_eq!(describe(&mut c, "lazy", 3).0, "Stable");
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(describe(&mut c, "lazy", 3), ("Empty".to_string(), 0));
    assert_eq!(
        heartbeat(&mut c, "lazy", &me, 1, 3),
        E::UnknownMemberId.code()
    );
    server.shutdown();
}

#[test]
fn offsets_and_groups_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), FAST);
    let mut c = Client::connect(server.local_addr);
    create_topic(&mut c, "t", 3);
    find_coordinator(&mut c, "keep", 3);
    // A "simple" consumer commits without membership (generation -1).
    for round in 0..50 {
        let codes = commit(
            &mut c,
            "keep",
            "",
            -1,
            8,
            &[("t", 0, round), ("t", 2, 1000 + round)],
        );
        assert_eq!(codes, vec![0, 0]);
    }
    let j = join(&mut c, "members", 5, 10_000);
    let me = j.member_id.to_string();
    assert_eq!(
        sync(&mut c, "members", &me, 1, 3, &[(&me, b"x")]).error_code,
        0
    );
    server.shutdown();

    let server = start(dir.path(), FAST);
    let mut c = Client::connect(server.local_addr);
    let got = fetch_offsets(&mut c, "keep", "t", 3, 8);
    assert_eq!(
        got,
        vec![
            (0, 49, "meta-49".into()),
            (1, -1, String::new()),
            (2, 1049, "meta-1049".into())
        ]
    );
    // The member's group came back with its generation; the member is
    // still known until its session runs out.
    assert_eq!(describe(&mut c, "members", 3), ("Stable".to_string(), 1));
    assert_eq!(heartbeat(&mut c, "members", &me, 1, 3), 0);
    server.shutdown();
}

#[test]
fn offsets_of_empty_groups_expire_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut extra = FAST.to_vec();
    extra.push(("offsets.retention.minutes", "0"));
    extra.push(("offsets.retention.check.interval.ms", "100"));
    let server = start(dir.path(), &extra);
    let mut c = Client::connect(server.local_addr);
    create_topic(&mut c, "t", 1);
    find_coordinator(&mut c, "short", 3);
    assert_eq!(commit(&mut c, "short", "", -1, 8, &[("t", 0, 7)]), vec![0]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fetch_offsets(&mut c, "short", "t", 1, 8)[0].1 != -1 {
        assert!(Instant::now() < deadline, "offset never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    let resp: ListGroupsResponse = c.send(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    assert!(
        resp.groups.iter().all(|g| g.group_id.0.as_str() != "short"),
        "the dead group is forgotten"
    );
    server.shutdown();
    // The tombstones are durable: after a restart the offset stays gone.
    let server = start(dir.path(), FAST);
    let mut c = Client::connect(server.local_addr);
    assert_eq!(fetch_offsets(&mut c, "short", "t", 1, 8)[0].1, -1);
    server.shutdown();
}

#[test]
fn clients_cannot_delete_or_grow_the_offsets_topic() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), FAST);
    let mut c = Client::connect(server.local_addr);
    find_coordinator(&mut c, "any", 3);
    let mut del = DeleteTopicsRequest::default();
    del.topic_names = vec![TopicName(s("__consumer_offsets"))];
    del.timeout_ms = 5000;
    let resp: DeleteTopicsResponse = c.send(ApiKey::DeleteTopics, 4, &del);
    assert_eq!(resp.responses[0].error_code, E::InvalidRequest.code());
    let mut grow = CreatePartitionsRequest::default();
    let mut t =
        kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default();
    t.name = TopicName(s("__consumer_offsets"));
    t.count = 10;
    grow.topics = vec![t];
    grow.timeout_ms = 5000;
    let resp: CreatePartitionsResponse = c.send(ApiKey::CreatePartitions, 1, &grow);
    assert_eq!(resp.results[0].error_code, E::InvalidRequest.code());
    // Metadata lists it as internal, with the coordinator's partition count.
    let mut md = MetadataRequest::default();
    let mut mt = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    mt.name = Some(TopicName(s("__consumer_offsets")));
    md.topics = Some(vec![mt]);
    let resp: MetadataResponse = c.send(ApiKey::Metadata, 9, &md);
    assert!(resp.topics[0].is_internal);
    assert_eq!(resp.topics[0].partitions.len(), 4);
    server.shutdown();
}
