//! The fetch path sends record bytes by splice (zero copy).
//!
//! The broker runs in this test process, so the engine's process-wide
//! counters `spliced_bytes_total` / `copied_bytes_total` see exactly what
//! its connections sent. This file holds a single test so that nothing
//! else in the process moves the counters.
//!
//! Framing helpers are local to this file on purpose.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use odradek_engine::batch::{self, Strictness};
use odradek_engine::io::splice::{copied_bytes_total, spliced_bytes_total};
use odradek_node::config::BrokerConfig;
use odradek_node::server::Server;

const TOPIC: &str = "splice";

struct Client {
    s: TcpStream,
    next: i32,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        Self { s, next: 1 }
    }

    /// Send a request and return the raw response frame (after the size
    /// prefix) with the correlation id checked and the header removed.
    fn call_raw<Req: Encodable>(&mut self, key: ApiKey, version: i16, req: &Req) -> Bytes {
        let corr = self.next;
        self.next += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = corr;
        header.client_id = Some(StrBytes::from_static_str("splice-test"));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .unwrap();
        req.encode(&mut body, version).unwrap();
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.s.write_all(&frame).expect("send");
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).expect("response size");
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut buf).expect("response");
        let mut buf = Bytes::from(buf);
        let h = ResponseHeader::decode(&mut buf, key.response_header_version(version)).unwrap();
        assert_eq!(h.correlation_id, corr);
        buf
    }

    fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Resp {
        let mut buf = self.call_raw(key, version, req);
        let r = Resp::decode(&mut buf, version).expect("decode response");
        assert!(
            buf.is_empty(),
            "trailing bytes in {key:?} v{version} response"
        );
        r
    }
}

fn name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

fn fetch(c: &mut Client, version: i16, offset: i64, max_bytes: i32) -> (i64, Bytes) {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.partition_max_bytes = max_bytes;
    p.current_leader_epoch = -1;
    p.last_fetched_epoch = -1;
    p.log_start_offset = -1;
    let mut t = FetchTopic::default();
    t.topic = name();
    t.partitions = vec![p];
    let mut r = FetchRequest::default();
    r.replica_id = (-1).into();
    r.max_wait_ms = 500;
    r.min_bytes = 1;
    r.max_bytes = max_bytes;
    r.session_epoch = -1;
    r.topics = vec![t];
    let resp: FetchResponse = c.call(ApiKey::Fetch, version, &r);
    assert_eq!(resp.error_code, 0);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0, "fetch v{version} at {offset}");
    (p.high_watermark, p.records.clone().unwrap_or_default())
}

#[test]
fn fetch_sends_record_bytes_by_splice() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        listener: "127.0.0.1:0".parse().unwrap(),
        log_dir: dir.path().to_path_buf(),
        shards: 2,
        ..BrokerConfig::default()
    };
    let server = Server::start(config, false).expect("broker starts");
    let mut c = Client::connect(server.local_addr);

    // Create the topic.
    let mut t = MetadataRequestTopic::default();
    t.name = Some(name());
    let mut md = MetadataRequest::default();
    md.topics = Some(vec![t]);
    md.allow_auto_topic_creation = true;
    let resp: MetadataResponse = c.call(ApiKey::Metadata, 12, &md);
    assert_eq!(resp.topics[0].error_code, 0);

    // ~1 MiB in 8 batches of 128 records of 1 KiB, distinct values.
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut produced: Vec<BytesMut> = Vec::new();
    let mut next_offset = 0i64;
    for i in 0..8u8 {
        let mut bb = batch::BatchBuilder::new(ts + i as i64);
        for r in 0..128u32 {
            let mut v = vec![b'a' + i; 1024];
            v[..4].copy_from_slice(&r.to_be_bytes());
            bb.push(&batch::Record {
                key: Some(format!("k{i}-{r}").into_bytes()),
                value: Some(v),
                headers: vec![("h".into(), Some(vec![i]))],
                timestamp_delta: r as i64,
            });
        }
        let b = bb.build();
        let mut pd = PartitionProduceData::default();
        pd.index = 0;
        pd.records = Some(b.clone().freeze());
        let mut td = TopicProduceData::default();
        td.name = name();
        td.partition_data = vec![pd];
        let mut req = ProduceRequest::default();
        req.acks = -1;
        req.timeout_ms = 10_000;
        req.topic_data = vec![td];
        let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, next_offset));
        next_offset += 128;
        produced.push(b);
    }
    let produced_bytes: usize = produced.iter().map(|b| b.len()).sum();
    assert!(produced_bytes > 1 << 20);

    // Fetch it all back, at the newest and the oldest served version.
    for version in [12i16, 4] {
        let spliced_before = spliced_bytes_total();
        let copied_before = copied_bytes_total();
        let mut records = BytesMut::new();
        let mut offset = 0i64;
        while offset < next_offset {
            let (hw, got) = fetch(&mut c, version, offset, 4 << 20);
            assert_eq!(hw, next_offset);
            assert!(!got.is_empty(), "fetch v{version} at {offset}: no records");
            let headers = batch::validate_all(&got, usize::MAX, Strictness::Stored)
                .unwrap_or_else(|e| panic!("fetch v{version}: invalid batch: {e}"));
            offset = headers.last().unwrap().last_offset() + 1;
            records.extend_from_slice(&got);
        }
        let returned = records.len() as u64;
        assert_eq!(
            returned as usize, produced_bytes,
            "v{version}: every batch, once"
        );
        // Byte for byte what was produced, except the assigned base offset
        // (and leader epoch) in the first 16 bytes, outside the CRC.
        let mut at = 0;
        for (i, b) in produced.iter().enumerate() {
            let got = &records[at..at + b.len()];
            assert_eq!(
                i64::from_be_bytes(got[0..8].try_into().unwrap()),
                i as i64 * 128,
                "base offset"
            );
            assert_eq!(&got[8..12], &b[8..12], "batch length");
            assert_eq!(&got[16..], &b[16..], "v{version}: batch {i} bytes differ");
            at += b.len();
        }
        // The broker counts a splice when its completion comes back, which
        // can be after the client already read the bytes: wait a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while spliced_bytes_total() - spliced_before < returned
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let spliced = spliced_bytes_total() - spliced_before;
        let copied = copied_bytes_total() - copied_before;
        assert!(
            spliced >= returned,
            "v{version}: {returned} record bytes returned but only {spliced} spliced ({copied} copied)"
        );
        assert_eq!(
            copied, 0,
            "v{version}: record bytes went through the copy fallback"
        );
    }
    drop(c);
    server.shutdown();
}
