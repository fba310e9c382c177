//! The metrics endpoint of a real broker: scrape while producing and
//! fetching, and the counters move; /health answers; lag of a group shows.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{batch, start, Client};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to metrics");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the series whose line starts with `prefix` (name and labels).
fn value(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Sum of the series whose line starts with `prefix` (a name and some labels).
fn sum_prefix(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sum of every series of `name` (all label sets).
fn total(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn counters_move_while_producing_and_fetching() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("group.initial.rebalance.delay.ms", "0")]);
    let maddr = server.metrics_addr.expect("metrics listener bound");
    let mut c = Client::connect(server.local_addr);

    assert_eq!(get(maddr, "/health"), (200, "ok\n".to_string()));
    assert_eq!(get(maddr, "/nope").0, 404);
    let (status, before) = get(maddr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        before.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    let produced_before = total(&before, "odradek_produce_bytes_total");
    let fsyncs_before = total(&before, "odradek_fsyncs_total");

    // Metadata auto-creates the topic; then produce with acks=all.
    let mut md = MetadataRequest::default();
    let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_static_str("m")));
    md.topics = Some(vec![t]);
    md.allow_auto_topic_creation = true;
    let _: MetadataResponse = c.send(ApiKey::Metadata, 9, &md);
    for _ in 0..10 {
        assert_eq!(c.produce("m", 0, -1, batch(&["a", "b", "c"])).0, 0);
    }
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = 0;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_static_str("m"));
    ft.partitions = vec![fp];
    let mut fr = FetchRequest::default();
    fr.max_wait_ms = 0;
    fr.max_bytes = 1 << 20;
    fr.topics = vec![ft];
    fr.replica_id = BrokerId(-1);
    let _: FetchResponse = c.send(ApiKey::Fetch, 11, &fr);

    // A simple-commit group 10 records behind the log end.
    let mut fc = FindCoordinatorRequest::default();
    fc.key = StrBytes::from_static_str("lagging");
    let _: FindCoordinatorResponse = c.send(ApiKey::FindCoordinator, 3, &fc);
    let mut oc = OffsetCommitRequest::default();
    oc.group_id = GroupId(StrBytes::from_static_str("lagging"));
    oc.generation_id_or_member_epoch = -1;
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = 20;
    let mut ot = OffsetCommitRequestTopic::default();
    ot.name = TopicName(StrBytes::from_static_str("m"));
    ot.partitions = vec![p];
    oc.topics = vec![ot];
    let resp: OffsetCommitResponse = c.send(ApiKey::OffsetCommit, 8, &oc);
    assert_eq!(resp.topics[0].partitions[0].error_code, 0);

    let (_, after) = get(maddr, "/metrics");
    let produce_requests = sum_prefix(&after, "odradek_requests_total{api=\"Produce\"");
    assert_eq!(
        produce_requests, 10.0,
        "ten Produce requests counted:\n{after}"
    );
    assert!(total(&after, "odradek_produce_bytes_total") > produced_before);
    assert!(total(&after, "odradek_fetch_bytes_total") > 0.0);
    assert!(
        total(&after, "odradek_fsyncs_total") > fsyncs_before,
        "acks=all fsynced"
    );
    assert!(
        total(&after, "odradek_spliced_bytes_total") + total(&after, "odradek_copied_bytes_total")
            > 0.0
    );
    assert_eq!(
        value(
            &after,
            "odradek_partition_log_end_offset{topic=\"m\",partition=\"0\"}"
        ),
        Some(30.0)
    );
    assert!(
        value(
            &after,
            "odradek_partition_size_bytes{topic=\"m\",partition=\"0\"}"
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        value(
            &after,
            "odradek_group_lag{group=\"lagging\",topic=\"m\",partition=\"0\"}"
        ),
        Some(10.0)
    );
    assert!(
        total(&after, "odradek_connections") >= 1.0,
        "our connection is open"
    );
    assert!(
        after.lines().any(|l| l
            .starts_with("odradek_request_duration_seconds_bucket{le=\"+Inf\",api=\"Produce\"")
            && l.ends_with(" 10")),
        "latency histogram per API:\n{after}"
    );
    server.shutdown();
}
