//! Pipelined Produce requests on one connection: the broker reads the next
//! request while the previous one's appends are written, and must still
//! write every partition's batches in request order and answer in request
//! order, whether a partition's log is on the connection's shard or on
//! another (the set is queued there, in the order sent, with a hop).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::{ApiKey, ProduceResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use common::{batch, create_topic, http_get, produce_request, Client};
use odradek_engine::shard::{owner_of, TopicPartition};
use odradek_node::server::Server;

fn frame(correlation: i32, req: &impl Encodable) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Produce as i16;
    header.request_api_version = 9;
    header.correlation_id = correlation;
    header.client_id = Some(StrBytes::from_static_str("pipeline-test"));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, ApiKey::Produce.request_header_version(9))
        .unwrap();
    req.encode(&mut body, 9).unwrap();
    let mut out = Vec::with_capacity(4 + body.len());
    out.put_i32(body.len() as i32);
    out.extend_from_slice(&body);
    out
}

fn read_response(s: &mut TcpStream) -> (i32, ProduceResponse) {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).expect("response size");
    let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut buf).expect("response");
    let mut b = Bytes::from(buf);
    let h = ResponseHeader::decode(&mut b, ApiKey::Produce.response_header_version(9)).unwrap();
    let r = ProduceResponse::decode(&mut b, 9).unwrap();
    assert!(!b.has_remaining());
    (h.correlation_id, r)
}

/// The engine's write counters are per process: the tests of this file
/// take turns.
static COUNTERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// 300 pipelined requests on `s` to two partitions `parts` of `topic`;
/// returns how many writes of appended sets they took and how many sets
/// were written.
fn pipeline(server: &Server, topic: &str, parts: [i32; 2], mut s: TcpStream) -> (u64, u64) {
    let mut admin = Client::connect(server.local_addr);
    let _turn = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());

    // 300 requests written back to back before any answer is read: each
    // carries 1-3 records to partition 0, partition 1 or both; every 37th
    // batch of partition 0 has a corrupt CRC and must be refused alone.
    let n = 300;
    let mut expect: Vec<Vec<(i32, i64, bool)>> = Vec::new(); // (partition, base, refused)
    let mut next = [0i64; 2];
    let mut out = Vec::new();
    for i in 0..n {
        let values: Vec<String> = (0..1 + i % 3).map(|k| format!("r{i}-{k}")).collect();
        let refs: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
        let to: &[usize] = match i % 3 {
            0 => &[0],
            1 => &[1],
            _ => &[0, 1],
        };
        let mut req = produce_request(topic, parts[to[0]], 1, Bytes::new());
        req.topic_data[0].partition_data.clear();
        let mut want = Vec::new();
        for &k in to {
            let p = parts[k];
            let mut records = BytesMut::from(&batch(&refs)[..]);
            let corrupt = k == 0 && i % 37 == 0;
            if corrupt {
                let last = records.len() - 1;
                records[last] ^= 0xff;
            }
            let mut pd = PartitionProduceData::default();
            pd.index = p;
            pd.records = Some(records.freeze());
            req.topic_data[0].partition_data.push(pd);
            if corrupt {
                want.push((p, -1, true));
            } else {
                want.push((p, next[k], false));
                next[k] += refs.len() as i64;
            }
        }
        expect.push(want);
        out.extend(frame(i + 1, &req));
    }
    let (writes_before, sets_before) = odradek_engine::stats::writes();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    // Write from another thread: the broker may wait for answers to be read
    // before it takes more (its in-flight bound).
    let writer = std::thread::spawn(move || w.write_all(&out).unwrap());
    for (i, want) in expect.iter().enumerate() {
        let (corr, resp) = read_response(&mut s);
        assert_eq!(corr, i as i32 + 1, "answers in request order");
        let got: Vec<(i32, i64, bool)> = resp.responses[0]
            .partition_responses
            .iter()
            .map(|p| (p.index, p.base_offset, p.error_code != 0))
            .collect();
        for w in want {
            assert!(
                got.contains(w),
                "request {i}: want {w:?} in {got:?} (all wanted: {want:?})"
            );
        }
        assert_eq!(got.len(), want.len(), "request {i}: {got:?}");
    }
    writer.join().unwrap();
    let (writes, sets) = odradek_engine::stats::writes();
    let (writes, sets) = (writes - writes_before, sets - sets_before);
    let accepted = expect.iter().flatten().filter(|w| !w.2).count() as u64;
    assert_eq!(sets, accepted, "every accepted set written once");
    // Nothing more was written than was acknowledged.
    for k in 0..2 {
        assert_eq!(admin.end_offset(topic, parts[k]), (0, next[k]));
    }
    (writes, sets)
}

/// The shard each connection accepted so far went to, by the broker's
/// `odradek_connections_accepted` counters.
fn accepted_per_shard(metrics: SocketAddr) -> Vec<f64> {
    let (_, body) = http_get(metrics, "/metrics");
    let mut per = Vec::new();
    for l in body
        .lines()
        .filter(|l| l.starts_with("odradek_connections_accepted"))
    {
        let shard = l
            .split_once("shard=\"")
            .and_then(|(_, r)| r.split_once('"'))
            .and_then(|(n, _)| n.parse::<usize>().ok());
        let v = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(i), Some(v)) = (shard, v) {
            per.resize(per.len().max(i + 1), 0.0);
            per[i] = v;
        }
    }
    per
}

/// A connection to `server` that the broker put on shard `want` (the
/// kernel picks among the shards' SO_REUSEPORT listeners by a hash of the
/// client's port, so connect until one lands there).
fn connect_on_shard(server: &Server, want: usize) -> TcpStream {
    let metrics = server.metrics_addr.expect("metrics listener bound");
    for _ in 0..64 {
        let before = accepted_per_shard(metrics);
        let s = TcpStream::connect(server.local_addr).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = accepted_per_shard(metrics);
            let grew: Vec<usize> = (0..now.len())
                .filter(|&i| now[i] > before.get(i).copied().unwrap_or(0.0))
                .collect();
            if let [i] = grew[..] {
                if i == want {
                    return s;
                }
                break;
            }
            assert!(std::time::Instant::now() < deadline, "accept not counted");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    panic!("no connection landed on shard {want} in 64 tries");
}

#[test]
fn pipelined_produces_keep_their_order_per_partition() {
    // Two shards: the partitions of "pipe" may be on either, so the
    // connection's sets go to its own shard's logs and through a hop.
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &[("num.shards", "2")]);
    create_topic(&mut Client::connect(server.local_addr), "pipe", 2);
    let conn = TcpStream::connect(server.local_addr).unwrap();
    pipeline(&server, "pipe", [0, 1], conn);
    server.shutdown();

    // One shard, every append local: the reader goes on to the next
    // requests while a write is under way, and the log's writer combines
    // their sets. Were each request's appends awaited before the next was
    // read, every set would be a write of its own.
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &[("num.shards", "1")]);
    create_topic(&mut Client::connect(server.local_addr), "pipe", 2);
    let conn = TcpStream::connect(server.local_addr).unwrap();
    let (writes, sets) = pipeline(&server, "pipe", [0, 1], conn);
    server.shutdown();
    assert!(
        writes < sets,
        "no write combined two requests' sets: {writes} writes for {sets} sets"
    );
}

#[test]
fn pipelined_produces_to_another_shard_are_queued_there_without_a_wait() {
    // Both partitions on one shard, the connection on the other: every set
    // goes through the hop. Were the hop awaited before the next request is
    // read, each log would get one set at a time: as many writes as sets.
    // (With two shards, partitions 0 and 1 of a topic never share an
    // owner: FNV-1a's last step keeps the partition's parity. 0 and 2 do.)
    let topic = "remote";
    let owner = owner_of(&TopicPartition::new(topic, 0), 2);
    assert_eq!(owner, owner_of(&TopicPartition::new(topic, 2), 2));
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &[("num.shards", "2")]);
    create_topic(&mut Client::connect(server.local_addr), topic, 3);
    let conn = connect_on_shard(&server, 1 - owner);
    let (writes, sets) = pipeline(&server, topic, [0, 2], conn);
    server.shutdown();
    assert!(
        writes < sets,
        "no write combined two requests' sets: {writes} writes for {sets} sets"
    );
}
