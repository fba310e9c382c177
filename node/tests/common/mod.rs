//! Shared by the integration tests: start a real broker in-process on a
//! free port, and a blocking Kafka-protocol client that sends one request
//! and reads its response frame.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use odradek_node::config::BrokerConfig;
use odradek_node::server::Server;

/// Broker settings for a test: any free port on loopback, data in `dir`,
/// two shards, plus `extra` settings (Kafka names).
pub fn config(dir: &Path, extra: &[(&str, &str)]) -> BrokerConfig {
    let mut c = BrokerConfig::default();
    c.set("listeners", "127.0.0.1:0").unwrap();
    c.set("log.dirs", dir.to_str().unwrap()).unwrap();
    c.set("num.shards", "2").unwrap();
    // Tests run in parallel: any free port, never the default one.
    c.set("metrics.listener", "127.0.0.1:0").unwrap();
    for (k, v) in extra {
        c.set(k, v).unwrap();
    }
    c
}

/// Start a broker on `dir` (a restart when the directory has data).
pub fn start(dir: &Path, extra: &[(&str, &str)]) -> Server {
    Server::start(config(dir, extra), false).expect("broker starts")
}

/// A blocking client connection.
pub struct Client {
    stream: TcpStream,
    correlation: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to broker");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            stream,
            correlation: 0,
        }
    }

    /// Send `req` as API `key` version `version`, return the decoded response.
    pub fn send<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Resp {
        let frame = self.send_raw(key, version, req);
        let mut buf = frame;
        let header_version = if key == ApiKey::ApiVersions {
            0
        } else {
            key.response_header_version(version)
        };
        let header = ResponseHeader::decode(&mut buf, header_version).expect("response header");
        assert_eq!(header.correlation_id, self.correlation, "correlation id");
        let resp = Resp::decode(&mut buf, version)
            .unwrap_or_else(|e| panic!("decoding {key:?} v{version} response: {e}"));
        assert!(
            !buf.has_remaining(),
            "{} trailing bytes in {key:?} v{version} response",
            buf.remaining()
        );
        resp
    }

    /// Send a request, return the response frame (header and body).
    pub fn send_raw<Req: Encodable>(&mut self, key: ApiKey, version: i16, req: &Req) -> Bytes {
        self.correlation += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(StrBytes::from_static_str("odradek-test"));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .expect("encode header");
        req.encode(&mut body, version)
            .unwrap_or_else(|e| panic!("encoding {key:?} v{version} request: {e}"));
        let mut out = BytesMut::with_capacity(4 + body.len());
        out.put_i32(body.len() as i32);
        out.extend_from_slice(&body);
        self.stream.write_all(&out).expect("write request");
        self.read_frame()
    }

    fn read_frame(&mut self) -> Bytes {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).expect("read frame size");
        let size = i32::from_be_bytes(size);
        assert!(size > 0, "frame size {size}");
        let mut frame = vec![0u8; size as usize];
        self.stream.read_exact(&mut frame).expect("read frame");
        Bytes::from(frame)
    }
}

/// One RecordBatch v2 with `values` as records (no keys).
/// CreateTopics (v5) of one topic with the broker's default replication;
/// asserts it was created.
pub fn create_topic(c: &mut Client, name: &str, partitions: i32) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
    let mut t = CreatableTopic::default();
    t.name = TopicName(StrBytes::from_string(name.to_string()));
    t.num_partitions = partitions;
    t.replication_factor = -1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 5000;
    let resp: CreateTopicsResponse = c.send(ApiKey::CreateTopics, 5, &req);
    assert_eq!(resp.topics[0].error_code, 0, "creating {name}");
}

pub fn batch(values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Sequences keep the encoder from splitting the batch.
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    encode_records(&records)
}

/// Records as uncompressed RecordBatch v2 bytes (one batch when offsets
/// and sequences advance together).
pub fn encode_records(records: &[Record]) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

/// A Produce request for one partition.
pub fn produce_request(name: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(name.to_string()));
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = acks;
    r.timeout_ms = 10_000;
    r.topic_data = vec![t];
    r
}

impl Client {
    /// Produce one record set: (error code, base offset).
    pub fn produce(&mut self, name: &str, partition: i32, acks: i16, records: Bytes) -> (i16, i64) {
        let resp: ProduceResponse = self.send(
            ApiKey::Produce,
            9,
            &produce_request(name, partition, acks, records),
        );
        let pr = &resp.responses[0].partition_responses[0];
        (pr.error_code, pr.base_offset)
    }

    /// Log end offset of a partition (ListOffsets latest): (error code, offset).
    pub fn end_offset(&mut self, name: &str, partition: i32) -> (i16, i64) {
        let mut p = ListOffsetsPartition::default();
        p.partition_index = partition;
        p.timestamp = -1;
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(name.to_string()));
        t.partitions = vec![p];
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        req.topics = vec![t];
        let resp: ListOffsetsResponse = self.send(ApiKey::ListOffsets, 7, &req);
        let pr = &resp.topics[0].partitions[0];
        (pr.error_code, pr.offset)
    }
}
