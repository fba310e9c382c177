//! Pipelined Produce requests on one connection: the broker reads the next
//! request while the previous one's appends are written, and must still
//! write every partition's batches in request order and answer in request
//! order. With two shards one partition is usually on another shard than
//! the connection's (a hop to its owner, awaited before the next request is
//! read); with one, every append is queued and awaited by the reply.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::{ApiKey, ProduceResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use common::{batch, create_topic, produce_request, Client};

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

/// 300 pipelined requests against a broker with `shards`; returns how
/// many writes of appended sets they took and how many sets were written.
fn pipeline(shards: &str) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &[("num.shards", shards)]);
    let mut admin = Client::connect(server.local_addr);
    create_topic(&mut admin, "pipe", 2);

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
        let parts: &[i32] = match i % 3 {
            0 => &[0],
            1 => &[1],
            _ => &[0, 1],
        };
        let mut req = produce_request("pipe", parts[0], 1, Bytes::new());
        req.topic_data[0].partition_data.clear();
        let mut want = Vec::new();
        for &p in parts {
            let mut records = BytesMut::from(&batch(&refs)[..]);
            let corrupt = p == 0 && i % 37 == 0;
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
                want.push((p, next[p as usize], false));
                next[p as usize] += refs.len() as i64;
            }
        }
        expect.push(want);
        out.extend(frame(i + 1, &req));
    }
    let (writes_before, sets_before) = odradek_engine::stats::writes();
    let mut s = TcpStream::connect(server.local_addr).unwrap();
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
    for p in 0..2 {
        assert_eq!(admin.end_offset("pipe", p), (0, next[p as usize]));
    }
    server.shutdown();
    (writes, sets)
}

#[test]
fn pipelined_produces_keep_their_order_per_partition() {
    // Two shards: one partition usually lives on another shard than the
    // connection's (a hop, awaited before the next request is read).
    pipeline("2");
    // One shard, every append local: the reader goes on to the next
    // requests while a write is under way, and the log's writer combines
    // their sets. Were each request's appends awaited before the next was
    // read, every set would be a write of its own.
    let (writes, sets) = pipeline("1");
    assert!(
        writes < sets,
        "no write combined two requests' sets: {writes} writes for {sets} sets"
    );
}
