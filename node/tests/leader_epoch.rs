//! Leader epochs on a lone broker (KIP-101 / KIP-320): every partition is
//! at epoch 0, as Metadata reports. OffsetForLeaderEpoch answers epoch 0
//! with the log end, Fetch and ListOffsets check the current leader epoch.
//! (Replicated partitions: `raft_group.rs` and tests/clients/test_cluster.py.)

mod common;

use common::{batch, create_topic, start, Client};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

fn name(n: &str) -> TopicName {
    TopicName(StrBytes::from_string(n.to_string()))
}

/// OffsetForLeaderEpoch for one partition: (error, epoch, end offset).
fn epoch_end(
    c: &mut Client,
    version: i16,
    topic: &str,
    partition: i32,
    current: i32,
    epoch: i32,
) -> (i16, i32, i64) {
    let mut p = OffsetForLeaderPartition::default();
    p.partition = partition;
    p.current_leader_epoch = current;
    p.leader_epoch = epoch;
    let mut t = OffsetForLeaderTopic::default();
    t.topic = name(topic);
    t.partitions = vec![p];
    let mut req = OffsetForLeaderEpochRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    let resp: OffsetForLeaderEpochResponse = c.send(ApiKey::OffsetForLeaderEpoch, version, &req);
    assert_eq!(resp.topics.len(), 1);
    assert_eq!(resp.topics[0].topic, name(topic));
    let r = &resp.topics[0].partitions[0];
    assert_eq!(r.partition, partition);
    (r.error_code, r.leader_epoch, r.end_offset)
}

/// Fetch v12 from offset 0: (error, high watermark, record bytes).
fn fetch(c: &mut Client, topic: &str, current: i32) -> (i16, i64, usize) {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = 0;
    p.partition_max_bytes = 1 << 20;
    p.current_leader_epoch = current;
    p.last_fetched_epoch = -1;
    p.log_start_offset = -1;
    let mut t = FetchTopic::default();
    t.topic = name(topic);
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 0;
    req.max_bytes = 1 << 20;
    req.session_epoch = -1;
    req.topics = vec![t];
    let resp: FetchResponse = c.send(ApiKey::Fetch, 12, &req);
    let r = &resp.responses[0].partitions[0];
    (
        r.error_code,
        r.high_watermark,
        r.records.as_ref().map_or(0, |b| b.len()),
    )
}

/// ListOffsets v7: (error, offset, leader epoch).
fn list(c: &mut Client, topic: &str, timestamp: i64, current: i32) -> (i16, i64, i32) {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = timestamp;
    p.current_leader_epoch = current;
    let mut t = ListOffsetsTopic::default();
    t.name = name(topic);
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    let resp: ListOffsetsResponse = c.send(ApiKey::ListOffsets, 7, &req);
    let r = &resp.topics[0].partitions[0];
    (r.error_code, r.offset, r.leader_epoch)
}

#[test]
fn a_lone_broker_answers_leader_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("auto.create.topics.enable", "false")]);
    let mut c = Client::connect(server.local_addr);
    create_topic(&mut c, "epochs", 2);
    assert_eq!(c.produce("epochs", 0, -1, batch(&["a", "b", "c"])), (0, 0));
    assert_eq!(c.produce("epochs", 0, -1, batch(&["d", "e"])), (0, 3));

    let unknown_epoch = ResponseError::UnknownLeaderEpoch.code();
    let fenced = ResponseError::FencedLeaderEpoch.code();
    let unknown_tp = ResponseError::UnknownTopicOrPartition.code();
    for v in 2..=4 {
        // Epoch 0 (the only one) ends at the log end, with or without the
        // current epoch given; an empty partition ends at 0.
        assert_eq!(epoch_end(&mut c, v, "epochs", 0, -1, 0), (0, 0, 5), "v{v}");
        assert_eq!(epoch_end(&mut c, v, "epochs", 0, 0, 0), (0, 0, 5), "v{v}");
        assert_eq!(epoch_end(&mut c, v, "epochs", 1, 0, 0), (0, 0, 0), "v{v}");
        // A newer epoch than the log has, or none: UNDEFINED.
        assert_eq!(
            epoch_end(&mut c, v, "epochs", 0, -1, 3),
            (0, -1, -1),
            "v{v}"
        );
        assert_eq!(
            epoch_end(&mut c, v, "epochs", 0, -1, -1),
            (0, -1, -1),
            "v{v}"
        );
        // The client's current epoch is checked.
        assert_eq!(epoch_end(&mut c, v, "epochs", 0, 1, 0).0, unknown_epoch);
        assert_eq!(epoch_end(&mut c, v, "epochs", 0, -3, 0).0, fenced);
        assert_eq!(epoch_end(&mut c, v, "epochs", 2, -1, 0).0, unknown_tp);
        assert_eq!(epoch_end(&mut c, v, "nope", 0, -1, 0).0, unknown_tp);
    }

    // Fetch v12: the right epoch or none reads; another is refused.
    let (err, hw, len) = fetch(&mut c, "epochs", 0);
    assert_eq!((err, hw), (0, 5));
    assert!(len > 0);
    assert_eq!(fetch(&mut c, "epochs", -1).0, 0);
    assert_eq!(fetch(&mut c, "epochs", 1), (unknown_epoch, -1, 0));
    assert_eq!(fetch(&mut c, "epochs", -2).0, fenced);

    // ListOffsets v7: epoch 0 with each answer; the current epoch checked.
    assert_eq!(list(&mut c, "epochs", -1, 0), (0, 5, 0));
    assert_eq!(list(&mut c, "epochs", -2, -1), (0, 0, 0));
    assert_eq!(list(&mut c, "epochs", -1, 4).0, unknown_epoch);
    server.shutdown();
}
