//! The admin CLI end to end: a real broker in-process, the real `odradek`
//! binary as a subprocess for every command, JSON output parsed and checked,
//! and the exit codes scripts rely on.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{start, Client};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;

const FAST: &[(&str, &str)] = &[("group.initial.rebalance.delay.ms", "0")];

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run `odradek --bootstrap ADDR ARGS...` with `stdin`.
fn cli(addr: &str, args: &[&str], stdin: &str) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_odradek"))
        .arg("--bootstrap")
        .arg(addr)
        .args(args)
        .env_remove("ODRADEK_BOOTSTRAP")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run odradek");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let o = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !o.stderr.contains("panicked"),
        "odradek {args:?} panicked: {}",
        o.stderr
    );
    o
}

/// Run and expect exit 0.
fn ok(addr: &str, args: &[&str], stdin: &str) -> String {
    let o = cli(addr, args, stdin);
    assert_eq!(o.code, 0, "odradek {args:?}: {}{}", o.stdout, o.stderr);
    o.stdout
}

/// Run with `--json` and expect exit 0 and one JSON document.
fn json(addr: &str, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = ok(addr, &a, "");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn partition(describe: &Value, p: i64) -> &Value {
    describe["topics"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["partition"] == p)
        .unwrap_or_else(|| panic!("partition {p} in {describe}"))
}

#[test]
fn topic_lifecycle_produce_consume() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let a = &server.local_addr.to_string();

    let out = ok(
        a,
        &[
            "topic",
            "create",
            "t1",
            "--partitions",
            "2",
            "--config",
            "retention.ms=3600000",
        ],
        "",
    );
    assert!(out.contains("created topic t1"), "{out}");
    let again = cli(a, &["topic", "create", "t1"], "");
    assert_eq!(again.code, 4, "{}", again.stderr);
    assert!(
        again.stderr.contains("TOPIC_ALREADY_EXISTS"),
        "{}",
        again.stderr
    );
    ok(a, &["topic", "create", "t1", "--if-not-exists"], "");

    let list = json(a, &["topic", "list"]);
    let t1 = list["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "t1")
        .expect("t1 listed");
    assert_eq!(t1["partitions"], 2);
    let table = ok(a, &["topic", "list"], "");
    assert!(
        table.lines().next().unwrap().starts_with("TOPIC"),
        "{table}"
    );

    // Produce keyed lines with a header; the key decides the partition.
    let lines: String = (0..10)
        .map(|i| format!("key{}:value-{i}\n", i % 4))
        .collect();
    let out = ok(
        a,
        &[
            "produce",
            "t1",
            "--key-separator",
            ":",
            "--header",
            "src=test",
            "--acks",
            "all",
        ],
        &lines,
    );
    assert!(out.contains("wrote 10 record(s)"), "{out}");
    // Empty stdin: nothing written, and JSON says so.
    let p = json(a, &["produce", "t1", "--partition", "1", "--acks", "1"]);
    assert_eq!(p["records"], 0);
    let d = json(a, &["topic", "describe", "t1"]);
    let t = &d["topics"][0];
    assert_eq!(t["name"], "t1");
    assert_eq!(t["partitions"].as_array().unwrap().len(), 2);
    let ends: i64 = (0..2)
        .map(|p| partition(&d, p)["log_end_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(ends, 10);
    assert_eq!(partition(&d, 0)["log_start_offset"], 0);
    assert_eq!(partition(&d, 0)["leader"], partition(&d, 0)["replicas"][0]);
    assert_eq!(partition(&d, 0)["isr"].as_array().unwrap().len(), 1);
    assert_eq!(t["configs"]["retention.ms"]["value"], "3600000");
    assert_eq!(
        t["configs"]["retention.ms"]["source"],
        "DYNAMIC_TOPIC_CONFIG"
    );
    let human = ok(a, &["topic", "describe", "t1"], "");
    assert!(human.contains("PARTITION  LEADER"), "{human}");

    // Consume everything back, formatted.
    let out = ok(
        a,
        &[
            "consume",
            "t1",
            "--from-beginning",
            "--max-messages",
            "10",
            "--format",
            "%p|%o|%k|%v|%h\\n",
        ],
        "",
    );
    let mut got: Vec<(i64, i64, String, String, String)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 5, "{l}");
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].into(),
                f[3].into(),
                f[4].into(),
            )
        })
        .collect();
    assert_eq!(got.len(), 10, "{out}");
    for (_, _, _, _, h) in &got {
        assert_eq!(h, "src=test");
    }
    // One partition per key; offsets dense per partition.
    for k in 0..4 {
        let key = format!("key{k}");
        let parts: std::collections::HashSet<i64> =
            got.iter().filter(|r| r.2 == key).map(|r| r.0).collect();
        assert_eq!(parts.len(), 1, "{key} in one partition: {out}");
    }
    got.sort();
    let mut values: Vec<String> = got.iter().map(|r| r.3.clone()).collect();
    values.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("value-{i}")).collect();
    want.sort();
    assert_eq!(values, want);

    // --max-messages stops early; --partition/--offset select; JSON lines.
    let two = ok(
        a,
        &["consume", "t1", "--from-beginning", "--max-messages", "2"],
        "",
    );
    assert_eq!(two.lines().count(), 2, "{two}");
    let p0_end = partition(&d, 0)["log_end_offset"].as_i64().unwrap();
    let out = ok(
        a,
        &[
            "--json",
            "consume",
            "t1",
            "--partition",
            "0",
            "--offset",
            "1",
            "--exit-at-end",
        ],
        "",
    );
    let recs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len() as i64, (p0_end - 1).max(0), "{out}");
    for r in &recs {
        assert_eq!(r["partition"], 0);
        assert!(r["offset"].as_i64().unwrap() >= 1);
        assert_eq!(r["headers"]["src"], "test");
        assert!(r["key"].as_str().unwrap().starts_with("key"));
        assert!(r["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    }
    let last = ok(
        a,
        &[
            "consume",
            "t1",
            "--partition",
            "0",
            "--offset=-1",
            "--exit-at-end",
            "-f",
            "%o\\n",
        ],
        "",
    );
    if p0_end > 0 {
        assert_eq!(last.trim(), (p0_end - 1).to_string());
    }
    // An offset past the end starts at the end (not over from the start).
    let past = cli(
        a,
        &[
            "consume",
            "t1",
            "--partition",
            "0",
            "--offset",
            "1000",
            "--timeout-ms",
            "300",
        ],
        "",
    );
    assert_eq!(
        (past.code, past.stdout.as_str()),
        (0, ""),
        "{}",
        past.stderr
    );
    assert!(past.stderr.contains("out of range"), "{}", past.stderr);
    // From the end with an idle timeout: nothing, exit 0, promptly.
    let t0 = Instant::now();
    let idle = ok(a, &["consume", "t1", "--timeout-ms", "300"], "");
    assert_eq!(idle, "");
    assert!(t0.elapsed() < Duration::from_secs(8));

    // Alter: more partitions, set and delete configs.
    ok(
        a,
        &[
            "topic",
            "alter",
            "t1",
            "--partitions",
            "3",
            "--config",
            "retention.ms=1000",
            "--config",
            "segment.ms=3600000",
        ],
        "",
    );
    let d = json(a, &["topic", "describe", "t1"]);
    assert_eq!(d["topics"][0]["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(d["topics"][0]["configs"]["retention.ms"]["value"], "1000");
    assert_eq!(d["topics"][0]["configs"]["segment.ms"]["value"], "3600000");
    ok(
        a,
        &["topic", "alter", "t1", "--delete-config", "retention.ms"],
        "",
    );
    let d = json(a, &["topic", "describe", "t1"]);
    assert_ne!(
        d["topics"][0]["configs"]["retention.ms"]["source"],
        "DYNAMIC_TOPIC_CONFIG"
    );
    // Shrinking is refused, and a bad config adds no partitions first.
    let shrink = cli(a, &["topic", "alter", "t1", "--partitions", "2"], "");
    assert_eq!(shrink.code, 4);
    assert!(
        shrink.stderr.contains("INVALID_PARTITIONS"),
        "{}",
        shrink.stderr
    );
    let bad = cli(
        a,
        &[
            "topic",
            "alter",
            "t1",
            "--partitions",
            "5",
            "--config",
            "no.such.config=1",
        ],
        "",
    );
    assert_eq!(bad.code, 4, "{}", bad.stderr);
    let d = json(a, &["topic", "describe", "t1"]);
    assert_eq!(d["topics"][0]["partitions"].as_array().unwrap().len(), 3);

    // acks=0: the broker does not answer; the records still arrive.
    let out = ok(
        a,
        &["produce", "t1", "--acks", "0", "--partition", "2"],
        "fire\nforget\n",
    );
    assert!(out.contains("sent 2 record(s)"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = json(a, &["topic", "describe", "t1"]);
        if partition(&d, 2)["log_end_offset"].as_i64().unwrap() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acks=0 records never arrived: {d}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Many lines: several batches, every record once, in order.
    let many: String = (0..2500).map(|i| format!("bulk-{i}\n")).collect();
    let w = cli(
        a,
        &[
            "--json",
            "produce",
            "t1",
            "--partition",
            "0",
            "--batch-records",
            "1000",
        ],
        &many,
    );
    assert_eq!(w.code, 0, "{}", w.stderr);
    let w: Value = serde_json::from_str(&w.stdout).unwrap();
    assert_eq!(w["records"], 2500);
    let bulk = ok(
        a,
        &[
            "consume",
            "t1",
            "--partition",
            "0",
            "--from-beginning",
            "--exit-at-end",
        ],
        "",
    );
    let bulk: Vec<&str> = bulk.lines().filter(|l| l.starts_with("bulk-")).collect();
    let want: Vec<String> = (0..2500).map(|i| format!("bulk-{i}")).collect();
    assert_eq!(bulk, want);

    // Delete; then it is unknown.
    let out = ok(a, &["topic", "delete", "t1"], "");
    assert!(out.contains("deleted topic t1"), "{out}");
    let gone = cli(a, &["topic", "describe", "t1"], "");
    assert_eq!(gone.code, 4);
    assert!(
        gone.stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "{}",
        gone.stderr
    );
    server.shutdown();
}

/// A ConsumerProtocolAssignment v0 for `topic` partitions `ps`.
fn assignment(topic: &str, ps: &[i32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(ps.len() as i32);
    for p in ps {
        b.put_i32(*p);
    }
    b.put_i32(-1);
    b.freeze()
}

#[test]
fn groups_offsets_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), FAST);
    let a = &server.local_addr.to_string();
    ok(a, &["topic", "create", "lagged", "--partitions", "2"], "");
    let lines: String = (0..5).map(|i| format!("m{i}\n")).collect();
    ok(a, &["produce", "lagged", "--partition", "0"], &lines);

    // A raw OffsetCommit of 2 for partition 0 (a "simple" consumer).
    let mut c = Client::connect(server.local_addr);
    let mut fc = FindCoordinatorRequest::default();
    fc.key = s("raw");
    let r: FindCoordinatorResponse = c.send(ApiKey::FindCoordinator, 3, &fc);
    assert_eq!(r.error_code, 0);
    let mut part = OffsetCommitRequestPartition::default();
    part.partition_index = 0;
    part.committed_offset = 2;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s("lagged"));
    t.partitions = vec![part];
    let mut oc = OffsetCommitRequest::default();
    oc.group_id = GroupId(s("raw"));
    oc.generation_id_or_member_epoch = -1;
    oc.member_id = s("");
    oc.topics = vec![t];
    let r: OffsetCommitResponse = c.send(ApiKey::OffsetCommit, 8, &oc);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);

    let list = json(a, &["group", "list"]);
    assert!(
        list["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == "raw"),
        "{list}"
    );
    let d = json(a, &["group", "describe", "raw"]);
    let off = d["offsets"].as_array().unwrap();
    assert_eq!(off.len(), 1, "{d}");
    assert_eq!(off[0]["topic"], "lagged");
    assert_eq!(off[0]["partition"], 0);
    assert_eq!(off[0]["committed_offset"], 2);
    assert_eq!(off[0]["log_end_offset"], 5);
    assert_eq!(off[0]["lag"], 3);
    assert_eq!(d["total_lag"], 3);
    let human = ok(a, &["group", "describe", "raw"], "");
    assert!(human.contains("LAG"), "{human}");

    // consume --group: a member; commits what it printed, leaves, and the
    // next member resumes from there.
    let out = ok(
        a,
        &[
            "consume",
            "lagged",
            "--group",
            "cg",
            "--from-beginning",
            "--max-messages",
            "4",
        ],
        "",
    );
    assert_eq!(out, "m0\nm1\nm2\nm3\n");
    let d = json(a, &["group", "describe", "cg"]);
    assert_eq!(d["protocol_type"], "consumer", "{d}");
    assert_eq!(
        d["members"].as_array().unwrap().len(),
        0,
        "left the group: {d}"
    );
    let p0 = d["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["partition"] == 0)
        .unwrap()
        .clone();
    assert_eq!(p0["committed_offset"], 4, "{d}");
    assert_eq!(p0["lag"], 1);
    let out = ok(
        a,
        &[
            "consume",
            "lagged",
            "--group",
            "cg",
            "--from-beginning",
            "--exit-at-end",
        ],
        "",
    );
    assert_eq!(out, "m4\n");

    // A live member with a consumer assignment shows up decoded.
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("range");
    p.metadata = Bytes::from_static(b"\0\x01\0\0\0\x01\0\x06lagged\xff\xff\xff\xff");
    let mut jr = JoinGroupRequest::default();
    jr.group_id = GroupId(s("live"));
    jr.session_timeout_ms = 30_000;
    jr.rebalance_timeout_ms = 5_000;
    jr.member_id = s("");
    jr.protocol_type = s("consumer");
    jr.protocols = vec![p];
    let mut fc = FindCoordinatorRequest::default();
    fc.key = s("live");
    let _: FindCoordinatorResponse = c.send(ApiKey::FindCoordinator, 3, &fc);
    let j: JoinGroupResponse = c.send(ApiKey::JoinGroup, 3, &jr);
    assert_eq!(j.error_code, 0);
    let mut sr = SyncGroupRequest::default();
    sr.group_id = GroupId(s("live"));
    sr.generation_id = j.generation_id;
    sr.member_id = j.member_id.clone();
    let mut sa = SyncGroupRequestAssignment::default();
    sa.member_id = j.member_id.clone();
    sa.assignment = assignment("lagged", &[0, 1]);
    sr.assignments = vec![sa];
    let sg: SyncGroupResponse = c.send(ApiKey::SyncGroup, 3, &sr);
    assert_eq!(sg.error_code, 0);
    let d = json(a, &["group", "describe", "live"]);
    assert_eq!(d["state"], "Stable", "{d}");
    let m = &d["members"][0];
    assert_eq!(m["member_id"], j.member_id.as_str());
    assert_eq!(m["assignment"][0]["topic"], "lagged");
    assert_eq!(m["assignment"][0]["partitions"], serde_json::json!([0, 1]));
    // No commits, but assigned partitions are listed with their end offsets.
    let offs = d["offsets"].as_array().unwrap();
    assert_eq!(offs.len(), 2, "{d}");
    assert!(offs
        .iter()
        .all(|o| o["member_id"] == j.member_id.as_str() && o["committed_offset"].is_null()));

    let missing = cli(a, &["group", "describe", "never-seen"], "");
    assert_eq!(missing.code, 4, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("GROUP_ID_NOT_FOUND"),
        "{}",
        missing.stderr
    );
    server.shutdown();
}

#[test]
fn cluster_info() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let a = &server.local_addr.to_string();
    let d = json(a, &["cluster", "info"]);
    assert!(!d["cluster_id"].as_str().unwrap().is_empty());
    let brokers = d["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 1);
    assert_eq!(brokers[0]["port"], server.local_addr.port());
    assert_eq!(d["controller_id"], brokers[0]["node_id"]);
    let fetch = d["api_versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "Fetch")
        .unwrap()
        .clone();
    assert_eq!(fetch["key"], 1);
    assert!(fetch["max_version"].as_i64().unwrap() >= 12);
    let human = ok(a, &["cluster", "info"], "");
    assert!(
        human.contains("Cluster id:") && human.contains("ApiVersions"),
        "{human}"
    );
    server.shutdown();
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

#[test]
fn exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let a = &server.local_addr.to_string();

    // Usage errors: 2.
    for args in [
        &["topic", "frobnicate"][..],
        &["produce"][..],
        &["produce", "t", "--acks", "7"][..],
        &["topic", "create", "x", "--config", "novalue"][..],
        &["consume", "t", "--offset", "sideways"][..],
        &["topic", "alter", "x"][..],
    ] {
        let o = cli(a, args, "");
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
    }
    // Unreachable bootstrap: 3.
    let closed = closed_port().to_string();
    let o = cli(&closed, &["topic", "list"], "");
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("cannot connect"), "{}", o.stderr);
    // A bootstrap list: the first reachable broker is used.
    ok(&format!("{closed},{a}"), &["topic", "list"], "");
    // A broker that accepts but never answers: 3, "timed out", promptly.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let t0 = Instant::now();
    let o = cli(
        &silent.local_addr().unwrap().to_string(),
        &["--request-timeout-ms", "300", "cluster", "info"],
        "",
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("timed out"), "{}", o.stderr);
    assert!(t0.elapsed() < Duration::from_secs(5));
    drop(silent);
    // The bootstrap comes from ODRADEK_BOOTSTRAP when no flag is given.
    let o = Command::new(env!("CARGO_BIN_EXE_odradek"))
        .args(["--json", "cluster", "info"])
        .env("ODRADEK_BOOTSTRAP", a)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Kafka errors: 4, with the error's name.
    let o = cli(a, &["topic", "describe", "nope"], "");
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(
        o.stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "{}",
        o.stderr
    );
    // With --json the error is JSON on stderr.
    let o = cli(a, &["--json", "topic", "describe", "nope"], "");
    assert_eq!(o.code, 4);
    let e: Value = serde_json::from_str(o.stderr.trim()).unwrap();
    assert_eq!(e["kafka_error"], "UNKNOWN_TOPIC_OR_PARTITION");
    assert_eq!(
        (e["kafka_error_code"].as_i64(), e["exit_code"].as_i64()),
        (Some(3), Some(4))
    );
    let o = cli(a, &["produce", "nope"], "x\n");
    assert_eq!(o.code, 4, "{}", o.stderr);
    let o = cli(
        a,
        &["topic", "create", "bad", "--replication-factor", "3"],
        "",
    );
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(
        o.stderr.contains("INVALID_REPLICATION_FACTOR"),
        "{}",
        o.stderr
    );
    // The codes are documented in --help.
    let help = ok(a, &["--help"], "");
    assert!(
        help.contains("Exit codes") && help.contains("3  cannot connect"),
        "{help}"
    );
    server.shutdown();
}

/// A fake broker that answers the first request with `reply` (written
/// raw, frame size included), then closes.
fn fake_broker(reply: Vec<u8>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut size = [0u8; 4];
            if s.read_exact(&mut size).is_ok() {
                let mut req = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
                let _ = s.read_exact(&mut req);
                let _ = s.write_all(&reply);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });
    addr
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[test]
fn malformed_responses_are_errors_not_crashes() {
    // Correlation id 1 (the CLI's first request), then a body.
    let with_corr = |body: &[u8]| {
        let mut b = 1i32.to_be_bytes().to_vec();
        b.extend_from_slice(body);
        frame(&b)
    };
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("oversized frame", i32::MAX.to_be_bytes().to_vec(), 5),
        ("negative frame", (-5i32).to_be_bytes().to_vec(), 5),
        ("garbage body", with_corr(&[0xde, 0xad]), 5),
        ("wrong correlation id", frame(&[0, 0, 0, 9, 0, 0]), 5),
        // error 0, then a compact array claiming 4 billion entries.
        (
            "huge array count",
            with_corr(&[0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            5,
        ),
        ("closed mid-frame", 100i32.to_be_bytes().to_vec(), 3),
        ("closed at once", Vec::new(), 3),
    ];
    for (what, reply, code) in cases {
        let addr = fake_broker(reply).to_string();
        let o = cli(
            &addr,
            &["--request-timeout-ms", "3000", "topic", "list"],
            "",
        );
        assert_eq!(o.code, code, "{what}: {}", o.stderr);
    }
}

/// (API key, version) of each request a fake broker received.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(i16, i16)>>>;

/// A fake broker that answers its requests with `replies` in turn (bodies
/// after the correlation id; the id is filled in), records each request's
/// (API key, version), and after the last reply records one more request
/// and closes.
fn scripted_broker(replies: Vec<Vec<u8>>) -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let n = replies.len();
        for (i, body) in replies.into_iter().chain([Vec::new()]).enumerate() {
            let mut size = [0u8; 4];
            if s.read_exact(&mut size).is_err() {
                return;
            }
            let mut req = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
            if s.read_exact(&mut req).is_err() || req.len() < 8 {
                return;
            }
            let key = i16::from_be_bytes([req[0], req[1]]);
            let version = i16::from_be_bytes([req[2], req[3]]);
            log.lock().unwrap().push((key, version));
            if i == n {
                return;
            }
            let mut resp = req[4..8].to_vec(); // correlation id
            resp.extend_from_slice(&body);
            let _ = s.write_all(&frame(&resp));
        }
    });
    (addr, seen)
}

/// ApiVersions response body, v0 (no throttle time) or v1/v2.
fn api_versions_body(version: i16, error: i16, apis: &[(i16, i16, i16)]) -> Vec<u8> {
    let mut b = error.to_be_bytes().to_vec();
    b.extend_from_slice(&(apis.len() as i32).to_be_bytes());
    for (k, min, max) in apis {
        for v in [k, min, max] {
            b.extend_from_slice(&v.to_be_bytes());
        }
    }
    if version >= 1 {
        b.extend_from_slice(&0i32.to_be_bytes());
    }
    b
}

/// ApiVersions v3 response body (flexible encoding).
fn api_versions_v3_body(apis: &[(i16, i16, i16)]) -> Vec<u8> {
    let mut b = 0i16.to_be_bytes().to_vec();
    b.push(apis.len() as u8 + 1); // compact array length
    for (k, min, max) in apis {
        for v in [k, min, max] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.push(0); // tagged fields
    }
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(0);
    b
}

#[test]
fn versions_follow_what_the_broker_advertises() {
    // KIP-511: a broker without ApiVersions v3 answers at v0 with
    // UNSUPPORTED_VERSION; the CLI retries at the broker's highest version,
    // then sends Metadata at the highest version both sides support.
    let (addr, seen) = scripted_broker(vec![
        api_versions_body(0, 35, &[(18, 0, 2)]),
        api_versions_body(2, 0, &[(18, 0, 2), (3, 1, 5)]),
    ]);
    let o = cli(
        &addr.to_string(),
        &["--request-timeout-ms", "3000", "topic", "list"],
        "",
    );
    assert_eq!(
        o.code, 3,
        "connection closed after the script: {}",
        o.stderr
    );
    assert_eq!(*seen.lock().unwrap(), vec![(18, 3), (18, 2), (3, 5)]);

    // No common Metadata version (the CLI needs v4+): exit 5, and nothing
    // beyond ApiVersions is sent.
    let (addr, seen) = scripted_broker(vec![api_versions_v3_body(&[(18, 0, 3), (3, 0, 3)])]);
    let o = cli(
        &addr.to_string(),
        &["--request-timeout-ms", "3000", "topic", "list"],
        "",
    );
    assert_eq!(o.code, 5, "{}", o.stderr);
    assert!(o.stderr.contains("Metadata"), "{}", o.stderr);
    assert_eq!(*seen.lock().unwrap(), vec![(18, 3)]);
}

/// Spawn `odradek --bootstrap ADDR ARGS...` with stdout piped.
fn spawn(addr: &str, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_odradek"))
        .arg("--bootstrap")
        .arg(addr)
        .args(args)
        .env_remove("ODRADEK_BOOTSTRAP")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run odradek")
}

/// Wait until `group` is Stable with members holding `sizes` partitions.
fn wait_for_split(a: &str, group: &str, sizes: &[usize]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = cli(a, &["--json", "group", "describe", group], "");
        if o.code == 0 {
            let d: Value = serde_json::from_str(&o.stdout).unwrap();
            let members = d["members"].as_array().unwrap();
            let got: Vec<usize> = members
                .iter()
                .filter_map(|m| m["assignment"][0]["partitions"].as_array().map(|p| p.len()))
                .collect();
            if d["state"] == "Stable" && got == sizes {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{group} never reached {sizes:?}: {}",
            o.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_group_members_split_the_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), FAST);
    let a = &server.local_addr.to_string();
    ok(a, &["topic", "create", "duo", "--partitions", "2"], "");
    let args = [
        "consume",
        "duo",
        "--group",
        "duo-g",
        "--max-messages",
        "1",
        "--timeout-ms",
        "30000",
        "-f",
        "%p:%v\\n",
    ];
    // The first member gets both partitions; when the second joins, the
    // first learns of the rebalance from its heartbeat and gives one up.
    let mut first = spawn(a, &args);
    wait_for_split(a, "duo-g", &[2]);
    let mut second = spawn(a, &args);
    wait_for_split(a, "duo-g", &[1, 1]);
    ok(a, &["produce", "duo", "--partition", "0"], "zero\n");
    ok(a, &["produce", "duo", "--partition", "1"], "one\n");
    let mut outs = Vec::new();
    for child in [&mut first, &mut second] {
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = child.wait().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(status.success(), "{status}: {err}");
        outs.push(out);
    }
    outs.sort();
    assert_eq!(outs, vec!["0:zero\n".to_string(), "1:one\n".to_string()]);
    // Both committed and left.
    let d = json(a, &["group", "describe", "duo-g"]);
    assert_eq!(d["members"].as_array().unwrap().len(), 0, "{d}");
    assert_eq!(d["total_lag"], 0, "{d}");
    server.shutdown();
}
