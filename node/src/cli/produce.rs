//! `odradek produce TOPIC`: lines from stdin, batched into RecordBatch v2
//! per partition, sent to each partition's leader.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use odradek_engine::batch::{BatchBuilder, Record};
use serde_json::json;

use super::client::{leader_moved, Cluster};
use super::error::{check, CliError, Result};
use super::output;
use super::{key_value, GlobalArgs};

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    pub topic: String,
    /// Split each line at the first SEP into key and value (no SEP: null key).
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Write every record to this partition (default: by key hash as Kafka's
    /// Java client does, unkeyed records round-robin per batch).
    #[arg(long)]
    pub partition: Option<i32>,
    /// 0 (no answer), 1 (leader appended) or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: i16,
    /// Header on every record, repeatable: --header source=cli
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = key_value)]
    pub headers: Vec<(String, String)>,
    /// Most records in one batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_records: usize,
}

fn parse_acks(s: &str) -> std::result::Result<i16, String> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        _ => Err(format!("expected 0, 1 or all, got {s:?}")),
    }
}

/// Batches stay well under the default `max.message.bytes` (1 MiB).
const BATCH_BYTES: usize = 512 << 10;

/// Kafka's murmur2 (the Java client's default partitioner hash), so keyed
/// records land where other clients would put them.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        if rest.len() >= 3 {
            h ^= u32::from(rest[2]) << 16;
        }
        if rest.len() >= 2 {
            h ^= u32::from(rest[1]) << 8;
        }
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Pending {
    builder: BatchBuilder,
    records: usize,
    bytes: usize,
    base_ts: i64,
}

struct Producer<'a> {
    cluster: Cluster,
    args: &'a ProduceArgs,
    leaders: BTreeMap<i32, i32>,
    pending: BTreeMap<i32, Pending>,
    /// partition -> (records written, first base offset)
    written: BTreeMap<i32, (usize, Option<i64>)>,
}

impl Producer<'_> {
    fn add(&mut self, partition: i32, key: Option<Vec<u8>>, value: Vec<u8>) -> Result<()> {
        let ts = now_ms();
        let p = self.pending.entry(partition).or_insert_with(|| Pending {
            builder: BatchBuilder::new(ts),
            records: 0,
            bytes: 0,
            base_ts: ts,
        });
        let size = key.as_ref().map_or(0, Vec::len) + value.len() + 16;
        p.builder.push(&Record {
            key,
            value: Some(value),
            headers: self
                .args
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.as_bytes().to_vec())))
                .collect(),
            timestamp_delta: (ts - p.base_ts).max(0),
        });
        p.records += 1;
        p.bytes += size;
        if p.records >= self.args.batch_records.max(1) || p.bytes >= BATCH_BYTES {
            self.flush(partition)?;
        }
        Ok(())
    }

    fn flush(&mut self, partition: i32) -> Result<()> {
        let Some(p) = self.pending.remove(&partition) else {
            return Ok(());
        };
        let topic = self.args.topic.clone();
        let mut pd = PartitionProduceData::default();
        pd.index = partition;
        pd.records = Some(Bytes::from(p.builder.build()));
        let mut td = TopicProduceData::default();
        td.name = TopicName(StrBytes::from_string(topic.clone()));
        td.partition_data = vec![pd];
        let mut req = ProduceRequest::default();
        req.acks = self.args.acks;
        req.timeout_ms = i32::try_from(self.cluster.timeout().as_millis()).unwrap_or(i32::MAX);
        req.topic_data = vec![td];
        // A leader change (NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, or
        // no leader known) is retried on the new leader until the request
        // timeout, as Kafka producers do (at least once: a batch the old
        // leader wrote may commit there too).
        let deadline = Instant::now() + self.cluster.timeout();
        loop {
            let leader = *self.leaders.get(&partition).ok_or_else(|| {
                CliError::kafka(format!("producing to {topic}-{partition}"), 3, None)
            })?;
            let code = if leader < 0 {
                5
            } else {
                self.send(partition, leader, &req, p.records)?
            };
            match code {
                0 => return Ok(()),
                c if leader_moved(c) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                    self.leaders = self.cluster.leaders(&topic)?;
                }
                _ => {
                    return Err(CliError::kafka(
                        format!("producing to {topic}-{partition}"),
                        code,
                        None,
                    ))
                }
            }
        }
    }

    /// Send one partition's batch to `leader`: 0 when it was taken, else a
    /// leader-change error code to retry on (other errors are returned).
    fn send(
        &mut self,
        partition: i32,
        leader: i32,
        req: &ProduceRequest,
        records: usize,
    ) -> Result<i16> {
        let topic = &self.args.topic;
        // A leader that cannot be reached (killed, say) is a leader change
        // that Metadata may not show yet.
        let Ok(conn) = self.cluster.broker(leader) else {
            return Ok(6);
        };
        // v3: the first with RecordBatch v2; v11: the newest Odradek serves
        // (v12 only adds tagged fields; v13 needs topic ids).
        let version = conn.version::<ProduceRequest>(3, 11)?;
        let entry = self.written.entry(partition).or_insert((0, None));
        if self.args.acks == 0 {
            conn.send_no_response(req, version)?;
            entry.0 += records;
            return Ok(0);
        }
        let resp = conn.send_at(req, version)?;
        for t in &resp.responses {
            for r in &t.partition_responses {
                if leader_moved(r.error_code) {
                    return Ok(r.error_code);
                }
                let detail = r.error_message.as_deref().map(str::to_string).or_else(|| {
                    r.record_errors
                        .first()
                        .and_then(|e| e.batch_index_error_message.as_deref().map(str::to_string))
                });
                check(
                    || format!("producing to {topic}-{}", r.index),
                    r.error_code,
                    detail.as_deref(),
                )?;
                entry.0 += records;
                entry.1.get_or_insert(r.base_offset);
            }
        }
        Ok(0)
    }
}

pub fn run(args: ProduceArgs, g: &GlobalArgs) -> Result<()> {
    let mut cluster = Cluster::connect(&g.bootstrap, g.timeout())?;
    let md = cluster.metadata(Some(std::slice::from_ref(&args.topic)))?;
    let t = md.topics.first().ok_or_else(|| CliError::Malformed {
        addr: g.bootstrap.clone(),
        detail: "Metadata answered no topic".into(),
    })?;
    check(
        || format!("producing to {}", args.topic),
        t.error_code,
        None,
    )?;
    let leaders: BTreeMap<i32, i32> = t
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    let count = leaders.len() as i32;
    if count == 0 {
        return Err(CliError::kafka(
            format!("producing to {}", args.topic),
            5,
            None,
        ));
    }
    if let Some(p) = args.partition {
        if !leaders.contains_key(&p) {
            return Err(CliError::kafka(
                format!("producing to {}-{p} ({count} partitions)", args.topic),
                3,
                None,
            ));
        }
    }
    let mut prod = Producer {
        cluster,
        args: &args,
        leaders,
        pending: BTreeMap::new(),
        written: BTreeMap::new(),
    };
    let sep = args
        .key_separator
        .as_deref()
        .map(str::as_bytes)
        .filter(|s| !s.is_empty());
    let mut unkeyed: usize = 0;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError::Local(format!("reading stdin: {e}")))?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let (key, value) = match sep {
            Some(sep) => match line.windows(sep.len()).position(|w| w == sep) {
                Some(i) => (Some(line[..i].to_vec()), line[i + sep.len()..].to_vec()),
                None => (None, line.clone()),
            },
            None => (None, line.clone()),
        };
        let partition = match (args.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => (murmur2(k) & 0x7fff_ffff) % count,
            (None, None) => {
                // Sticky: one batch's worth of records per partition in turn.
                let p = (unkeyed / args.batch_records.max(1)) as i64 % i64::from(count);
                unkeyed += 1;
                p as i32
            }
        };
        prod.add(partition, key, value)?;
    }
    let parts: Vec<i32> = prod.pending.keys().copied().collect();
    for p in parts {
        prod.flush(p)?;
    }
    let total: usize = prod.written.values().map(|w| w.0).sum();
    if g.json {
        let per: serde_json::Map<String, serde_json::Value> = prod
            .written
            .iter()
            .map(|(p, (n, base))| (p.to_string(), json!({"records": n, "base_offset": base})))
            .collect();
        output::json(
            &json!({"topic": args.topic, "records": total, "acks": args.acks, "partitions": per}),
        )
    } else {
        let verb = if args.acks == 0 { "sent" } else { "wrote" };
        output::line(&format!("{verb} {total} record(s) to {}", args.topic))
    }
}

#[cfg(test)]
mod tests {
    use super::murmur2;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's own partitioner tests.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(murmur2(b"abc"), 479470107);
    }
}
