//! A sink broker: speaks enough Kafka (ApiVersions, Metadata, CreateTopics,
//! ListOffsets, Produce, Fetch) to be benchmarked, decodes every Produce
//! request and answers it at once without storing anything. Used to show
//! how much load one benchmark process can generate, and, with a delay per
//! answer, to act as a broker slower than the load (the tool's own tests).
//! Plain threads and blocking sockets, one thread per connection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::proto::Result;

pub struct Sink {
    pub addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 5),
    (ApiKey::Metadata, 1, 9),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 5),
];

impl Sink {
    /// `produce_delay`: how long each Produce answer waits; a connection's
    /// requests are answered one after the other.
    pub fn start(partitions: i32, produce_delay: std::time::Duration) -> Result<Self> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, addr2) = (stop.clone(), addr.clone());
        let thread = std::thread::spawn(move || {
            for s in l.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(s) = s else { continue };
                let addr = addr2.clone();
                std::thread::spawn(move || {
                    let _ = serve(s, &addr, partitions.max(1), produce_delay);
                });
            }
        });
        eprintln!("sink broker on {addr} (answers Produce without storing)");
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond<R: Encodable>(
    s: &mut TcpStream,
    key: ApiKey,
    version: i16,
    corr: i32,
    resp: &R,
) -> Result<()> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    let mut h = ResponseHeader::default();
    h.correlation_id = corr;
    let hv = if key == ApiKey::ApiVersions {
        0
    } else {
        key.response_header_version(version)
    };
    h.encode(&mut out, hv)?;
    resp.encode(&mut out, version)?;
    let n = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&n.to_be_bytes());
    s.write_all(&out)?;
    Ok(())
}

fn serve(
    mut s: TcpStream,
    addr: &str,
    partitions: i32,
    produce_delay: std::time::Duration,
) -> Result<()> {
    s.set_nodelay(true)?;
    let (host, port) = addr.rsplit_once(':').unwrap();
    let port: i32 = port.parse()?;
    let mut offsets: std::collections::HashMap<(String, i32), i64> = Default::default();
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return Ok(());
        }
        let n = i32::from_be_bytes(len) as usize;
        let mut frame = BytesMut::zeroed(n);
        s.read_exact(&mut frame)?;
        let mut buf: Bytes = frame.freeze();
        let key_raw = (&buf[0..2]).get_i16();
        let version = (&buf[2..4]).get_i16();
        let key = ApiKey::try_from(key_raw).map_err(|_| format!("api key {key_raw}"))?;
        let header = RequestHeader::decode(&mut buf, key.request_header_version(version))?;
        let corr = header.correlation_id;
        match key {
            ApiKey::ApiVersions => {
                let mut r = ApiVersionsResponse::default();
                for &(k, lo, hi) in VERSIONS {
                    r.api_keys.push(
                        ApiVersion::default()
                            .with_api_key(k as i16)
                            .with_min_version(lo)
                            .with_max_version(hi),
                    );
                }
                respond(&mut s, key, version.min(3), corr, &r)?;
            }
            ApiKey::Metadata => {
                let req = MetadataRequest::decode(&mut buf, version)?;
                let mut r = MetadataResponse::default();
                r.brokers.push(
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(0))
                        .with_host(StrBytes::from_string(host.to_string()))
                        .with_port(port),
                );
                r.controller_id = BrokerId(0);
                for t in req.topics.unwrap_or_default() {
                    let parts = (0..partitions)
                        .map(|i| {
                            MetadataResponsePartition::default()
                                .with_partition_index(i)
                                .with_leader_id(BrokerId(0))
                                .with_replica_nodes(vec![BrokerId(0)])
                                .with_isr_nodes(vec![BrokerId(0)])
                        })
                        .collect();
                    r.topics.push(
                        MetadataResponseTopic::default()
                            .with_name(t.name)
                            .with_partitions(parts),
                    );
                }
                respond(&mut s, key, version, corr, &r)?;
            }
            ApiKey::CreateTopics => {
                let req = CreateTopicsRequest::decode(&mut buf, version)?;
                let mut r = CreateTopicsResponse::default();
                for t in req.topics {
                    r.topics.push(
                        CreatableTopicResult::default()
                            .with_name(t.name)
                            .with_num_partitions(t.num_partitions)
                            .with_replication_factor(1),
                    );
                }
                respond(&mut s, key, version, corr, &r)?;
            }
            ApiKey::ListOffsets => {
                let req = ListOffsetsRequest::decode(&mut buf, version)?;
                let mut r = ListOffsetsResponse::default();
                for t in req.topics {
                    let ps = t
                        .partitions
                        .iter()
                        .map(|p| {
                            ListOffsetsPartitionResponse::default()
                                .with_partition_index(p.partition_index)
                                .with_offset(0)
                                .with_timestamp(-1)
                        })
                        .collect();
                    r.topics.push(
                        ListOffsetsTopicResponse::default()
                            .with_name(t.name)
                            .with_partitions(ps),
                    );
                }
                respond(&mut s, key, version, corr, &r)?;
            }
            ApiKey::Produce => {
                let req = ProduceRequest::decode(&mut buf, version)?;
                let mut r = ProduceResponse::default();
                for t in req.topic_data {
                    let mut tr = TopicProduceResponse::default().with_name(t.name.clone());
                    for p in t.partition_data {
                        let count = p
                            .records
                            .as_ref()
                            .filter(|b| b.len() >= 61)
                            .map_or(0, |b| (&b[57..61]).get_i32() as i64);
                        let off = offsets.entry((t.name.0.to_string(), p.index)).or_insert(0);
                        tr.partition_responses.push(
                            PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_base_offset(*off)
                                .with_log_append_time_ms(-1)
                                .with_log_start_offset(0),
                        );
                        *off += count;
                    }
                    r.responses.push(tr);
                }
                if req.acks != 0 {
                    if !produce_delay.is_zero() {
                        std::thread::sleep(produce_delay);
                    }
                    respond(&mut s, key, version, corr, &r)?;
                }
            }
            ApiKey::Fetch => {
                let req = FetchRequest::decode(&mut buf, version)?;
                std::thread::sleep(std::time::Duration::from_millis(
                    req.max_wait_ms.clamp(0, 100) as u64,
                ));
                let mut r = FetchResponse::default();
                for t in req.topics {
                    let ps = t
                        .partitions
                        .iter()
                        .map(|p| {
                            PartitionData::default()
                                .with_partition_index(p.partition)
                                .with_high_watermark(0)
                                .with_records(Some(Bytes::new()))
                        })
                        .collect();
                    r.responses.push(
                        FetchableTopicResponse::default()
                            .with_topic(t.topic)
                            .with_partitions(ps),
                    );
                }
                respond(&mut s, key, version, corr, &r)?;
            }
            _ => return Err(format!("sink: unsupported {key:?}").into()),
        }
    }
}
