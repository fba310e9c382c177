//! Prometheus metrics and health, on their own listener
//! (`metrics.listener`, default 127.0.0.1:9644): `GET /metrics` in the
//! text exposition format (encoded by the `prometheus-client` crate),
//! `GET /health` (200 once recovery finished and the listeners are up).
//!
//! The hot path only bumps relaxed atomics in its own shard's slot (no
//! shared cache line, no lock). Everything else — partition sizes and
//! offsets, group lag — is gathered when a scrape asks, by visiting the
//! shards, on the metrics thread.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::broker::Broker;
use crate::protocol::SERVED;

/// Upper bounds (seconds) of the request latency buckets.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Latency of one API on one shard.
#[derive(Default)]
struct Latency {
    /// Count per bucket (not cumulative); the last slot is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// What one shard counts. Only that shard's threads write it.
pub struct ShardMetrics {
    requests: Vec<AtomicU64>,
    latency: Vec<Latency>,
    pub connections: AtomicI64,
    pub connections_accepted: AtomicU64,
    pub connections_closed_bad_input: AtomicU64,
    pub produce_bytes: AtomicU64,
    pub fetch_bytes: AtomicU64,
    busy_micros: AtomicU64,
}

impl ShardMetrics {
    fn new() -> Self {
        Self {
            requests: SERVED.iter().map(|_| AtomicU64::new(0)).collect(),
            latency: SERVED.iter().map(|_| Latency::default()).collect(),
            connections: AtomicI64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_closed_bad_input: AtomicU64::new(0),
            produce_bytes: AtomicU64::new(0),
            fetch_bytes: AtomicU64::new(0),
            busy_micros: AtomicU64::new(0),
        }
    }
}

/// The broker's metrics: one slot per shard.
pub struct Metrics {
    shards: Vec<ShardMetrics>,
}

fn api_index(key: ApiKey) -> Option<usize> {
    SERVED.iter().position(|(k, _, _)| *k == key)
}

impl Metrics {
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| ShardMetrics::new()).collect(),
        }
    }

    pub fn shard(&self, shard: usize) -> &ShardMetrics {
        &self.shards[shard % self.shards.len()]
    }

    /// A request of `key` finished on `shard` after `took`.
    pub fn request(&self, shard: usize, key: ApiKey, took: Duration) {
        let Some(i) = api_index(key) else {
            return;
        };
        let m = self.shard(shard);
        m.requests[i].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let b = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        let l = &m.latency[i];
        l.buckets[b].fetch_add(1, Ordering::Relaxed);
        l.count.fetch_add(1, Ordering::Relaxed);
        l.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

/// A partition as a scrape sees it.
struct PartitionView {
    topic: String,
    partition: i32,
    size: u64,
    start: u64,
    end: u64,
}

/// One label set and its value.
type Series = (Vec<(String, String)>, Value);
/// One metric: name, help, type, series.
type Family = (String, String, MetricType, Vec<Series>);

/// Everything one scrape reports, gathered first, then encoded.
#[derive(Debug)]
struct Snapshot {
    text: Vec<Family>,
}

#[derive(Debug)]
enum Value {
    Counter(u64),
    Gauge(i64),
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, kind, series) in &self.text {
            let mut family = encoder.encode_descriptor(name, help, None, *kind)?;
            for (labels, value) in series {
                let labels: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let enc = family.encode_family(&labels)?;
                match value {
                    Value::Counter(v) => ConstCounter::new(*v).encode(enc)?,
                    Value::Gauge(v) => ConstGauge::new(*v).encode(enc)?,
                    Value::Histogram {
                        sum,
                        count,
                        buckets,
                    } => {
                        let mut enc = enc;
                        enc.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                            *sum, *count, buckets, None,
                        )?
                    }
                }
            }
        }
        Ok(())
    }
}

fn gather(broker: &Broker) -> Snapshot {
    let mut out: Vec<Family> = Vec::new();
    let lbl = |pairs: &[(&str, String)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Vec<_>>()
    };
    let mut push =
        |name: &str, help: &str, kind: MetricType, series: Vec<(Vec<(String, String)>, Value)>| {
            out.push((name.to_string(), help.to_string(), kind, series));
        };
    let m = &broker.metrics;
    let per_shard = |f: &dyn Fn(&ShardMetrics) -> Value| {
        m.shards
            .iter()
            .enumerate()
            .map(|(i, s)| (lbl(&[("shard", i.to_string())]), f(s)))
            .collect::<Vec<_>>()
    };
    let mut reqs = Vec::new();
    let mut lats = Vec::new();
    for (i, s) in m.shards.iter().enumerate() {
        for (a, (key, _, _)) in SERVED.iter().enumerate() {
            let n = s.requests[a].load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let labels = lbl(&[("api", format!("{key:?}")), ("shard", i.to_string())]);
            reqs.push((labels.clone(), Value::Counter(n)));
            let l = &s.latency[a];
            // Per-bucket counts: the encoder makes them cumulative.
            let mut buckets: Vec<(f64, u64)> = BUCKETS
                .iter()
                .enumerate()
                .map(|(b, &le)| (le, l.buckets[b].load(Ordering::Relaxed)))
                .collect();
            buckets.push((
                f64::INFINITY,
                l.buckets[BUCKETS.len()].load(Ordering::Relaxed),
            ));
            lats.push((
                labels,
                Value::Histogram {
                    sum: l.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
                    count: l.count.load(Ordering::Relaxed),
                    buckets,
                },
            ));
        }
    }
    push(
        "odradek_requests",
        "Requests served, by API and shard.",
        MetricType::Counter,
        reqs,
    );
    push(
        "odradek_request_duration_seconds",
        "Time from a request's arrival to its response being ready.",
        MetricType::Histogram,
        lats,
    );
    push(
        "odradek_connections",
        "Open client connections.",
        MetricType::Gauge,
        per_shard(&|s| Value::Gauge(s.connections.load(Ordering::Relaxed))),
    );
    push(
        "odradek_connections_accepted",
        "Client connections accepted.",
        MetricType::Counter,
        per_shard(&|s| Value::Counter(s.connections_accepted.load(Ordering::Relaxed))),
    );
    push(
        "odradek_connections_closed_bad_input",
        "Connections closed because of a bad request.",
        MetricType::Counter,
        per_shard(&|s| Value::Counter(s.connections_closed_bad_input.load(Ordering::Relaxed))),
    );
    push(
        "odradek_produce_bytes",
        "Record bytes appended by Produce.",
        MetricType::Counter,
        per_shard(&|s| Value::Counter(s.produce_bytes.load(Ordering::Relaxed))),
    );
    push(
        "odradek_fetch_bytes",
        "Record bytes sent by Fetch.",
        MetricType::Counter,
        per_shard(&|s| Value::Counter(s.fetch_bytes.load(Ordering::Relaxed))),
    );
    use odradek_engine::io::splice::{copied_bytes_total, spliced_bytes_total};
    push(
        "odradek_spliced_bytes",
        "Bytes sent from segment files by splice (zero copy).",
        MetricType::Counter,
        vec![(vec![], Value::Counter(spliced_bytes_total()))],
    );
    push(
        "odradek_copied_bytes",
        "Bytes sent from segment files by the copy fallback.",
        MetricType::Counter,
        vec![(vec![], Value::Counter(copied_bytes_total()))],
    );
    let (writes, sets) = odradek_engine::stats::writes();
    push(
        "odradek_log_writes",
        "Writes of appended record sets to segment files.",
        MetricType::Counter,
        vec![(vec![], Value::Counter(writes))],
    );
    push(
        "odradek_log_sets_written",
        "Record sets (one partition's batches of a produce) those writes carried; more sets than writes is write combining.",
        MetricType::Counter,
        vec![(vec![], Value::Counter(sets))],
    );
    let (inline, io_wq) = odradek_engine::stats::writes_during_sync();
    push(
        "odradek_log_writes_during_sync",
        "Writes made while an fdatasync of their segment ran, by where they ran: inline on the shard thread, or on an io-wq worker.",
        MetricType::Counter,
        vec![
            (lbl(&[("path", "inline".to_string())]), Value::Counter(inline)),
            (lbl(&[("path", "io_wq".to_string())]), Value::Counter(io_wq)),
        ],
    );
    push(
        "odradek_log_sync_write_handoffs",
        "Times a shard found inline writes during fdatasyncs slow and sent them to io-wq for a back-off.",
        MetricType::Counter,
        vec![(vec![], Value::Counter(odradek_engine::stats::sync_write_handoffs()))],
    );
    let (fsyncs, fsync_us) = odradek_engine::stats::fsyncs();
    push(
        "odradek_fsyncs",
        "fdatasync calls on segment files.",
        MetricType::Counter,
        vec![(vec![], Value::Counter(fsyncs))],
    );
    push(
        "odradek_fsync_seconds",
        "Time spent in fdatasync on segment files.",
        MetricType::Counter,
        vec![(vec![], Value::Counter(fsync_us / 1_000_000))],
    );
    push(
        "odradek_shard_busy_seconds",
        "CPU time of each shard thread.",
        MetricType::Counter,
        per_shard(&|s| Value::Counter(s.busy_micros.load(Ordering::Relaxed) / 1_000_000)),
    );

    // Partitions, from their owner shards.
    let mut parts: Vec<PartitionView> = Vec::new();
    for i in 0..broker.shards.len() {
        let got = broker.shards.call(i, |shard| async move {
            shard
                .partitions()
                .into_iter()
                .map(|(tp, log)| PartitionView {
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                    size: log.size_bytes(),
                    start: log.log_start_offset(),
                    end: log.log_end_offset(),
                })
                .collect::<Vec<_>>()
        });
        parts.extend(got.unwrap_or_default());
    }
    parts.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let tp = |p: &PartitionView| {
        lbl(&[
            ("topic", p.topic.clone()),
            ("partition", p.partition.to_string()),
        ])
    };
    push(
        "odradek_partition_size_bytes",
        "Bytes in a partition's segment files.",
        MetricType::Gauge,
        parts
            .iter()
            .map(|p| (tp(p), Value::Gauge(p.size as i64)))
            .collect(),
    );
    push(
        "odradek_partition_log_start_offset",
        "First offset of a partition.",
        MetricType::Gauge,
        parts
            .iter()
            .map(|p| (tp(p), Value::Gauge(p.start as i64)))
            .collect(),
    );
    push(
        "odradek_partition_log_end_offset",
        "Offset the next record of a partition gets.",
        MetricType::Gauge,
        parts
            .iter()
            .map(|p| (tp(p), Value::Gauge(p.end as i64)))
            .collect(),
    );
    // Consumer group lag: log end minus committed offset.
    let ends: HashMap<(String, i32), u64> = parts
        .iter()
        .map(|p| ((p.topic.clone(), p.partition), p.end))
        .collect();
    let mut lag = Vec::new();
    for (group, topic, partition, committed) in broker.groups.all_offsets() {
        if let Some(end) = ends.get(&(topic.clone(), partition)) {
            let labels = lbl(&[
                ("group", group),
                ("topic", topic),
                ("partition", partition.to_string()),
            ]);
            lag.push((labels, Value::Gauge((*end as i64 - committed).max(0))));
        }
    }
    push(
        "odradek_group_lag",
        "Records between a group's committed offset and the log end.",
        MetricType::Gauge,
        lag,
    );
    Snapshot { text: out }
}

/// The text exposition of every metric.
pub fn render(broker: &Broker) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(gather(broker)));
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        text = "# metrics encoding failed\n".into();
    }
    text
}

/// Record a shard thread's CPU time (called on that thread).
pub fn sample_busy(broker: &Broker, shard: usize) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec on this stack.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
        let us = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
        broker
            .metrics
            .shard(shard)
            .busy_micros
            .store(us, Ordering::Relaxed);
    }
}

/// Bind the metrics listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serve scrapes on a plain thread until the broker stops.
pub fn serve(broker: Arc<Broker>, listener: TcpListener) {
    let spawned = std::thread::Builder::new()
        .name("odradek-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if broker.is_stopping() {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Err(e) = answer(&broker, conn) {
                    tracing::debug!("metrics request: {e}");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the metrics thread: {e}");
    }
}

fn answer(broker: &Broker, mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    // Bounded: a request line longer than 8 KiB is refused.
    let mut reader = BufReader::new((&conn).take_bounded(8192));
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, kind, body) = match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(broker),
        ),
        "/health" if !broker.is_stopping() => ("200 OK", "text/plain", "ok\n".to_string()),
        "/health" => (
            "503 Service Unavailable",
            "text/plain",
            "stopping\n".to_string(),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics or /health\n".to_string(),
        ),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// `Read::take` for a reference, by name, so the intent reads.
trait TakeBounded: std::io::Read + Sized {
    fn take_bounded(self, n: u64) -> std::io::Take<Self> {
        self.take(n)
    }
}

impl<R: std::io::Read> TakeBounded for R {}
