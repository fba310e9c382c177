//! `odradek-bench`: a Kafka-protocol throughput and latency benchmark.
//!
//! Talks the Kafka protocol itself (message types from the `kafka-protocol`
//! crate, RecordBatch v2 built in place), against any broker
//! (`--bootstrap`), a broker it starts (default: the `odradek` binary next
//! to this one, fresh data directory, free port), or a built-in sink that
//! answers Produce without storing (`--sink`, to show the client is not the
//! bottleneck). See docs/benchmarks.md.

mod baseline;
mod broker;
mod broker_metrics;
mod client;
mod proto;
mod report;
mod sink;
mod stats;
mod timer;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use client::{Keys, Payload, Topology, Tp, Work};
use proto::Result;
use stats::{clock, Stats};

fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = [
        ("KiB", 1u64 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("KB", 1000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("k", 1000),
        ("K", 1 << 10),
        ("M", 1 << 20),
        ("G", 1 << 30),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    num.trim()
        .parse::<f64>()
        .map(|n| (n * mult as f64) as u64)
        .map_err(|e| format!("{s}: {e}"))
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>()
        .map(|n| Duration::from_secs_f64(n * mult))
        .map_err(|e| format!("{s}: {e}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// RecordBatch attributes bits 0–2.
    pub fn codec(self) -> i16 {
        use odradek_engine::codec;
        match self {
            Compression::None => codec::NONE,
            Compression::Gzip => codec::GZIP,
            Compression::Snappy => codec::SNAPPY,
            Compression::Lz4 => codec::LZ4,
            Compression::Zstd => codec::ZSTD,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum Acks {
    #[value(name = "0")]
    Zero,
    #[value(name = "1")]
    One,
    #[value(name = "all", alias = "-1")]
    All,
}

impl Acks {
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::Zero => "0",
            Acks::One => "1",
            Acks::All => "all",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum ConsumeFrom {
    /// The end offsets when the run starts: exactly this run's messages.
    Latest,
    /// The log start: everything in the topic.
    Earliest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum ConsumePhase {
    /// Consumers run alongside the producers (end-to-end latency).
    During,
    /// Consumers start once all producers are done: read the backlog
    /// (from the page cache), no end-to-end latency.
    After,
}

#[derive(Parser, Debug, Clone, serde::Serialize)]
#[command(
    name = "odradek-bench",
    version,
    about = "Kafka-protocol throughput and latency benchmark (Odradek or any Kafka broker)"
)]
pub struct Args {
    /// Broker to benchmark, HOST:PORT. Without it an Odradek broker is
    /// started for the run (fresh temp data dir, free port).
    #[arg(long)]
    bootstrap: Option<String>,
    /// Benchmark a built-in sink that answers Produce at once without
    /// storing (measures the client alone).
    #[arg(long, conflicts_with = "bootstrap")]
    sink: bool,
    /// With --sink: answer each Produce request this long after reading
    /// it, one request at a time per connection (a broker slower than the
    /// load, to see how the tool behaves when it falls behind).
    #[arg(long, default_value = "0s", value_parser = parse_duration, requires = "sink")]
    sink_delay: Duration,
    /// The odradek binary to start (default: next to this binary).
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// Parent of the started broker's data directory (default: current dir).
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
    /// Shards of the started broker (default: its own, one per CPU).
    #[arg(long)]
    broker_shards: Option<usize>,
    /// Settings for the started broker (Kafka names), repeatable.
    #[arg(long = "broker-set", value_name = "KEY=VALUE")]
    broker_set: Vec<String>,
    /// An Odradek broker's metrics endpoint, for its own Produce latency
    /// beside the client's (default: the started broker's; none with
    /// --bootstrap unless given).
    #[arg(long, value_name = "HOST:PORT")]
    broker_metrics: Option<String>,
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Partitions per topic (created when the topic is missing).
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Replicas per partition of the topics created (-1: the broker's
    /// default, `default.replication.factor`).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    replication_factor: i16,
    /// Topic name prefix: topics are PREFIX-0 .. PREFIX-(N-1).
    #[arg(long, default_value = "odradek-bench")]
    topic_prefix: String,
    /// Value size in bytes (the first 8 carry the send time).
    #[arg(long, default_value = "1024", value_parser = parse_size)]
    message_size: u64,
    #[arg(long, value_enum, default_value = "none")]
    keys: Keys,
    /// Number of distinct keys (uniform/zipf).
    #[arg(long, default_value_t = 100_000)]
    key_space: u64,
    /// Zipf exponent.
    #[arg(long, default_value_t = 0.99)]
    zipf_exponent: f64,
    #[arg(long, value_enum, default_value = "1")]
    acks: Acks,
    /// Codec of the produced batches (the consumers decompress them).
    #[arg(long, value_enum, default_value = "none")]
    compression: Compression,
    /// Value bytes after the send time: random `bytes` (incompressible),
    /// random `letters` A–Z (as kafka-producer-perf-test), or `words` from
    /// a small vocabulary (repeats, as in logs).
    #[arg(long, value_enum, default_value = "bytes")]
    payload: Payload,
    /// Producer batch size per partition.
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    batch_size: u64,
    #[arg(long, default_value_t = 5.0)]
    linger_ms: f64,
    /// Target rate in messages/s over all producers (open loop: send times
    /// are scheduled, latency counts from the scheduled time). Default: max.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: a producer wakes at most once per this many µs to send
    /// the batches that are due (0: for every batch, on time). Each wake
    /// costs CPU in client and broker, which on a small shared machine
    /// can hurt the tail more than the up-to-one-tick wait (see
    /// docs/benchmarks.md); the "batch late" row shows the wait.
    #[arg(long, default_value_t = 1000)]
    tick_us: u64,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
    /// How long producers run (after warm-up).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Produce exactly N messages in total instead of running for --duration.
    #[arg(long)]
    messages: Option<u64>,
    /// Excluded from the results (default 5s with --duration, 0 with --messages).
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    #[arg(long, value_enum, default_value = "latest")]
    consume_from: ConsumeFrom,
    #[arg(long, value_enum, default_value = "during")]
    consume_phase: ConsumePhase,
    /// Fetch: max bytes per partition.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    fetch_max_bytes: u64,
    #[arg(long, default_value_t = 500)]
    fetch_max_wait_ms: i32,
    /// Client runtime threads (tokio workers).
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw throughput over time and latency percentiles as SVG.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Also measure the machine limits (disk write with the same fsync
    /// cadence, loopback TCP) and print the results as ratios to them.
    #[arg(long)]
    baseline: bool,
    /// No progress line every second.
    #[arg(long)]
    quiet: bool,
}

fn main() {
    // batch and request buffers reused warm (see the function)
    odradek_engine::process::keep_freed_memory();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("odradek-bench: {e}");
        std::process::exit(1);
    }
}

enum Target {
    External(String),
    Spawned(broker::Broker),
    Sink(sink::Sink),
}

fn run(args: Args) -> Result<()> {
    if args.message_size < 8 {
        return Err("--message-size must be at least 8 (send time prefix)".into());
    }
    if args.producers == 0 && args.consumers == 0 {
        return Err("nothing to do: --producers 0 --consumers 0".into());
    }
    let load_before = report::loadavg();
    let target = if let Some(b) = &args.bootstrap {
        Target::External(b.clone())
    } else if args.sink {
        Target::Sink(sink::Sink::start(args.partitions, args.sink_delay)?)
    } else {
        let bin = broker::find_binary(args.broker_bin.as_deref())?;
        let b = broker::Broker::start(&bin, &args.data_dir, args.broker_shards, &args.broker_set)?;
        eprintln!(
            "started {} (pid {}) on {}, data in {}",
            bin.display(),
            b.pid,
            b.addr,
            b.data_dir().display()
        );
        Target::Spawned(b)
    };
    let addr = match &target {
        Target::External(a) => a.clone(),
        Target::Spawned(b) => b.addr.clone(),
        Target::Sink(s) => s.addr.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    let broker_pid = match &target {
        Target::Spawned(b) => Some(b.pid),
        _ => None,
    };
    let metrics = match &target {
        Target::Spawned(b) => args.broker_metrics.clone().or(Some(b.metrics_addr.clone())),
        _ => args.broker_metrics.clone(),
    };
    let result = rt.block_on(bench(&args, &addr, broker_pid, metrics));
    drop(rt);
    let stop = match target {
        Target::Spawned(b) => b.stop(),
        Target::Sink(s) => {
            s.stop();
            Ok(())
        }
        Target::External(_) => Ok(()),
    };
    let mut rep = result?;
    stop?;
    rep.machine.load_before = load_before;
    rep.machine.load_after = report::loadavg();
    if args.baseline {
        rep.baseline = Some(baseline::measure(&args, &rep)?);
    }
    report::print(&rep);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&rep)?)?;
    }
    if let Some(p) = &args.svg {
        std::fs::write(p, report::svg(&rep))?;
    }
    if rep.produce.errors > 0 || rep.consume.errors > 0 {
        return Err(format!(
            "{} produce and {} consume errors",
            rep.produce.errors, rep.consume.errors
        )
        .into());
    }
    Ok(())
}

fn topic_names(args: &Args) -> Vec<String> {
    (0..args.topics)
        .map(|i| format!("{}-{i}", args.topic_prefix))
        .collect()
}

async fn metadata(conn: &mut proto::Conn, mv: i16, names: &[String]) -> Result<MetadataResponse> {
    let mut req = MetadataRequest::default();
    req.topics = Some(
        names
            .iter()
            .map(|n| {
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
            })
            .collect(),
    );
    req.allow_auto_topic_creation = false;
    conn.request(ApiKey::Metadata, mv, &req).await
}

/// Metadata for our topics; creates missing ones with CreateTopics.
async fn topology(args: &Args, addr: &str) -> Result<(Topology, i16, i16, i16)> {
    let mut conn = proto::Conn::connect(addr).await?;
    let mv = conn.version(ApiKey::Metadata, 1, 9)?;
    let pv = conn.version(ApiKey::Produce, 3, 9)?;
    let fv = conn.version(ApiKey::Fetch, 4, 12)?;
    let names = topic_names(args);
    let mut created = false;
    let deadline = clock().now() + 30_000_000_000;
    // In a cluster: when every partition first had a leader (see below).
    let mut led_since: Option<u64> = None;
    loop {
        let m = metadata(&mut conn, mv, &names).await?;
        let missing: Vec<String> = names
            .iter()
            .filter(|n| {
                !m.topics.iter().any(|t| {
                    t.name.as_ref().is_some_and(|x| &*x.0 == n.as_str())
                        && t.error_code == 0
                        && !t.partitions.is_empty()
                        && t.partitions.iter().all(|p| p.leader_id.0 >= 0)
                })
            })
            .cloned()
            .collect();
        // In a cluster, a new partition's first leader hands leadership to
        // its preferred (first) replica ~10 s later (Odradek; Kafka elects
        // it at once), and this tool does not follow leaders that move: it
        // got NOT_LEADER_OR_FOLLOWER for the rest of the run. So start once
        // every partition is led by its preferred replica with a full ISR,
        // or 30 s after they all had a leader, with a warning.
        let settled = m.topics.iter().flat_map(|t| t.partitions.iter()).all(|p| {
            p.replica_nodes.first().is_none_or(|r| r.0 == p.leader_id.0)
                && p.isr_nodes.len() >= p.replica_nodes.len()
        });
        if missing.is_empty() && m.brokers.len() > 1 && !settled {
            let now = clock().now();
            let since = *led_since.get_or_insert(now);
            if now - since < 30_000_000_000 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            eprintln!("warning: partitions not led by their preferred replicas with full ISRs after 30 s; starting anyway (leaders that move now give NOT_LEADER_OR_FOLLOWER errors)");
        }
        if missing.is_empty() {
            let mut brokers = std::collections::HashMap::new();
            for b in &m.brokers {
                brokers.insert(b.node_id.0, format!("{}:{}", &*b.host, b.port));
            }
            let mut parts = Vec::new();
            for n in &names {
                let t = m
                    .topics
                    .iter()
                    .find(|t| t.name.as_ref().is_some_and(|x| &*x.0 == n.as_str()))
                    .unwrap();
                let mut ps: Vec<_> = t.partitions.iter().collect();
                ps.sort_by_key(|p| p.partition_index);
                if ps.len() as i32 != args.partitions {
                    eprintln!(
                        "topic {n} exists with {} partitions (not --partitions {}); using them",
                        ps.len(),
                        args.partitions
                    );
                }
                for p in ps {
                    parts.push(Tp {
                        topic: n.clone(),
                        partition: p.partition_index,
                        leader: p.leader_id.0,
                    });
                }
            }
            return Ok((Topology { parts, brokers }, pv, fv, mv));
        }
        if clock().now() > deadline {
            return Err(format!("topics without leaders after 30 s: {missing:?}").into());
        }
        if !created {
            created = true;
            let cv = conn.version(ApiKey::CreateTopics, 2, 5)?;
            let mut req = CreateTopicsRequest::default();
            req.timeout_ms = 30_000;
            for n in &missing {
                req.topics.push(
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(n.clone())))
                        .with_num_partitions(args.partitions)
                        .with_replication_factor(args.replication_factor),
                );
            }
            let r: CreateTopicsResponse = conn.request(ApiKey::CreateTopics, cv, &req).await?;
            for t in &r.topics {
                // 36 = TOPIC_ALREADY_EXISTS
                if t.error_code != 0 && t.error_code != 36 {
                    return Err(format!(
                        "CreateTopics {}: error {} {:?}",
                        &*t.name.0,
                        t.error_code,
                        t.error_message.as_deref()
                    )
                    .into());
                }
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Earliest (-2) or latest (-1) offsets of every partition.
async fn list_offsets(topo: &Topology, addr_of: &str, which: i64) -> Result<Vec<i64>> {
    let mut out = vec![0; topo.parts.len()];
    let mut by_leader: std::collections::HashMap<i32, Vec<usize>> = Default::default();
    for (i, p) in topo.parts.iter().enumerate() {
        by_leader.entry(p.leader).or_default().push(i);
    }
    for (leader, idx) in by_leader {
        let addr = topo
            .brokers
            .get(&leader)
            .cloned()
            .unwrap_or(addr_of.to_string());
        let mut conn = proto::Conn::connect(&addr).await?;
        let v = conn.version(ApiKey::ListOffsets, 1, 5)?;
        let mut req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1));
        for &i in &idx {
            let tp = &topo.parts[i];
            let name = TopicName(StrBytes::from_string(tp.topic.clone()));
            let lp = ListOffsetsPartition::default()
                .with_partition_index(tp.partition)
                .with_timestamp(which)
                .with_current_leader_epoch(-1);
            match req.topics.iter_mut().find(|t| t.name == name) {
                Some(t) => t.partitions.push(lp),
                None => req.topics.push(
                    ListOffsetsTopic::default()
                        .with_name(name)
                        .with_partitions(vec![lp]),
                ),
            }
        }
        let r: ListOffsetsResponse = conn.request(ApiKey::ListOffsets, v, &req).await?;
        for t in &r.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(format!("ListOffsets error {}", p.error_code).into());
                }
                if let Some(&i) = idx.iter().find(|&&i| {
                    topo.parts[i].topic.as_str() == &*t.name.0
                        && topo.parts[i].partition == p.partition_index
                }) {
                    out[i] = p.offset;
                }
            }
        }
    }
    Ok(out)
}

/// The broker's metrics page (off the runtime's threads), or `None` with
/// the reason on stderr.
async fn read_metrics(addr: String) -> Option<String> {
    let page = tokio::task::spawn_blocking(move || broker_metrics::scrape(&addr))
        .await
        .map_err(proto::Error::from)
        .and_then(|r| r);
    page.map_err(|e| eprintln!("broker metrics not read: {e}"))
        .ok()
}

async fn bench(
    args: &Args,
    addr: &str,
    broker_pid: Option<u32>,
    metrics: Option<String>,
) -> Result<report::Report> {
    let c = clock();
    let (topo, pv, fv, _mv) = topology(args, addr).await?;
    let topo = Arc::new(topo);
    let start_offsets = if args.consumers > 0 {
        let which = match args.consume_from {
            ConsumeFrom::Latest => -1,
            ConsumeFrom::Earliest => -2,
        };
        list_offsets(&topo, addr, which).await?
    } else {
        vec![]
    };
    let warmup = args.warmup.unwrap_or(if args.messages.is_some() {
        Duration::ZERO
    } else {
        Duration::from_secs(5)
    });
    let t0 = c.now();
    let warm_end = t0 + warmup.as_nanos() as u64;
    let stop_at = if args.messages.is_some() {
        None
    } else {
        Some(warm_end + args.duration.as_nanos() as u64)
    };
    let producers = args.producers;
    let acks = match args.acks {
        Acks::Zero => 0,
        Acks::One => 1,
        Acks::All => -1,
    };
    let work = Arc::new(Work {
        producers: producers.max(1),
        message_size: args.message_size as usize,
        payload: args.payload,
        compression: args.compression.codec(),
        keys: args.keys,
        key_space: args.key_space.max(1),
        zipf_s: args.zipf_exponent,
        acks,
        batch_size: args.batch_size as usize,
        linger_ns: (args.linger_ms * 1e6) as u64,
        tick_ns: args.tick_us.saturating_mul(1000),
        rate: args.rate,
        max_in_flight: args.max_in_flight.max(1),
        produce_version: pv,
        fetch_version: fv,
        fetch_max_bytes: args.fetch_max_bytes as i32,
        fetch_max_wait_ms: args.fetch_max_wait_ms,
        warm_end,
        stop_at,
        messages: None,
        e2e: args.consume_phase == ConsumePhase::During,
    });
    let stats = Arc::new(Stats::default());
    let keygen = Arc::new(client::KeyGen::new(work.keys, work.key_space, work.zipf_s));
    let broker_cpu0 = broker_pid.and_then(broker::cpu_seconds);
    let client_cpu0 = report::self_cpu();
    let client_faults0 = report::self_minor_faults();
    // the broker's histogram as the warm-up ends
    let metrics_before = metrics.clone().map(|m| {
        let at = c.instant(warm_end);
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            read_metrics(m).await
        })
    });

    // producers
    let mut ptasks = Vec::new();
    for i in 0..producers {
        let mut w = (*work).clone();
        w.messages = args
            .messages
            .map(|n| n / producers as u64 + u64::from((i as u64) < n % producers as u64));
        if w.messages == Some(0) {
            continue;
        }
        ptasks.push(tokio::spawn(client::producer(
            i,
            topo.clone(),
            Arc::new(w),
            keygen.clone(),
            stats.clone(),
        )));
    }
    if ptasks.is_empty() {
        stats.producers_done.store(true, Relaxed);
    } else {
        stats.produce.begin(warm_end);
    }

    // consumers: partitions split round-robin
    let n_cons = args.consumers.min(topo.parts.len());
    if args.consumers > topo.parts.len() {
        eprintln!(
            "{} consumers for {} partitions: {} stay idle",
            args.consumers,
            topo.parts.len(),
            args.consumers - n_cons
        );
    }
    let expected: Arc<std::sync::atomic::AtomicU64> = Arc::new(u64::MAX.into());
    let idle_since: Arc<std::sync::atomic::AtomicU64> = Arc::new(0.into());
    let done: Arc<dyn Fn() -> bool + Send + Sync> = {
        let (stats, expected, idle_since) = (stats.clone(), expected.clone(), idle_since.clone());
        let no_producers = producers == 0;
        Arc::new(move || {
            let now = clock().now();
            if no_producers {
                // consume-only: run for the duration (or until --messages)
                return stop_at.is_some_and(|s| now >= s)
                    || stats.consume.all_msgs.load(Relaxed) >= expected.load(Relaxed);
            }
            if !stats.producers_done.load(Relaxed) {
                return false;
            }
            if stats.consume.all_msgs.load(Relaxed) >= expected.load(Relaxed) {
                return true;
            }
            // drain: give up 15 s after the producers finished
            let since = idle_since.load(Relaxed);
            since > 0 && now > since + 15_000_000_000
        })
    };
    if producers == 0 {
        if let Some(n) = args.messages {
            expected.store(n, Relaxed);
        }
    }
    let spawn_consumers = |stats: &Arc<Stats>| {
        stats.consume.begin(c.now().max(warm_end));
        let mut v = Vec::new();
        for ci in 0..n_cons {
            let parts: Vec<(usize, i64)> = (0..topo.parts.len())
                .filter(|p| p % n_cons == ci)
                .map(|p| (p, start_offsets[p]))
                .collect();
            v.push(tokio::spawn(client::consumer(
                parts,
                topo.clone(),
                work.clone(),
                stats.clone(),
                done.clone(),
            )));
        }
        v
    };
    let mut ctasks = if args.consume_phase == ConsumePhase::During {
        spawn_consumers(&stats)
    } else {
        Vec::new()
    };

    // The progress ticker runs on its own thread, so the timeline goes on
    // (and shows it) when the async runtime stops running its tasks; a
    // heartbeat task tells how late the runtime is.
    let stop_ticker = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heartbeat = Arc::new(std::sync::atomic::AtomicU64::new(c.now()));
    // beats until the ticker has made its last tick
    let stop_beat = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beat = {
        let (heartbeat, stop) = (heartbeat.clone(), stop_beat.clone());
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                heartbeat.store(clock().now(), Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let ticker = {
        let stats = stats.clone();
        let stop = stop_ticker.clone();
        let quiet = args.quiet;
        std::thread::Builder::new()
            .name("bench-ticker".into())
            .spawn(move || {
                let mut timeline = Vec::new();
                let mut last = (0u64, 0u64, 0u64, 0u64);
                let mut t_prev = clock().now();
                let mut cpu_prev = report::CpuTimes::now();
                loop {
                    // a second from the last tick (after a stall: from its
                    // end, so one long tick shows the gap), sampling the
                    // runtime's heartbeat meanwhile
                    let deadline = t_prev + 1_000_000_000;
                    let mut lag_ns = 0u64;
                    let mut woke_late = false;
                    loop {
                        let now = clock().now();
                        // A late wake-up of this thread is the process's
                        // stall (`interval_s`), not the runtime's.
                        if !woke_late {
                            lag_ns = lag_ns.max(now.saturating_sub(heartbeat.load(Relaxed)));
                        }
                        if now >= deadline {
                            break;
                        }
                        let nap = (deadline - now).min(50_000_000);
                        std::thread::sleep(Duration::from_nanos(nap));
                        woke_late = clock().now() > now + nap + 100_000_000;
                    }
                    let now = clock().now();
                    let cpu_now = report::CpuTimes::now();
                    let cpu = cpu_now.zip(cpu_prev).and_then(|(n, p)| n.since(&p));
                    cpu_prev = cpu_now;
                    let dt = (now - t_prev) as f64 / 1e9;
                    t_prev = now;
                    let pm = stats.produce.all_msgs.load(Relaxed);
                    let pb = stats.produce.all_bytes.load(Relaxed);
                    let cm = stats.consume.all_msgs.load(Relaxed);
                    let cb = stats.consume.all_bytes.load(Relaxed);
                    let (ack, e2e) = {
                        let mut a = stats.produce.interval.lock().unwrap();
                        let mut e = stats.consume.interval.lock().unwrap();
                        let r = (
                            (stats::pct_ms(&a, 0.5), stats::pct_ms(&a, 0.99)),
                            (stats::pct_ms(&e, 0.5), stats::pct_ms(&e, 0.99)),
                        );
                        a.reset();
                        e.reset();
                        r
                    };
                    let tick = stats::Tick {
                        t_s: (now - t0) as f64 / 1e9,
                        interval_s: dt,
                        warmup: now < warm_end,
                        produce_mb_s: (pb - last.1) as f64 / 1e6 / dt,
                        produce_msgs_s: (pm - last.0) as f64 / dt,
                        consume_mb_s: (cb - last.3) as f64 / 1e6 / dt,
                        consume_msgs_s: (cm - last.2) as f64 / dt,
                        ack_p50_ms: ack.0,
                        ack_p99_ms: ack.1,
                        e2e_p50_ms: e2e.0,
                        e2e_p99_ms: e2e.1,
                        cpu_busy_pct: cpu.map(|c| c.busy_pct),
                        cpu_steal_pct: cpu.map(|c| c.steal_pct),
                        runtime_lag_ms: lag_ns as f64 / 1e6,
                    };
                    last = (pm, pb, cm, cb);
                    if !quiet {
                        eprintln!("{}", report::progress_line(&tick));
                    }
                    timeline.push(tick);
                    if stop.load(Relaxed) {
                        break;
                    }
                }
                timeline
            })?
    };

    let mut first_err: Option<proto::Error> = None;
    for t in ptasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(format!("producer task: {e}").into());
            }
        }
    }
    let produced_at = c.now();
    let target_count = if acks == 0 {
        stats.sent.load(Relaxed)
    } else {
        stats.produce.all_msgs.load(Relaxed)
    };
    if producers > 0 {
        expected.store(target_count, Relaxed);
        idle_since.store(produced_at, Relaxed);
        stats.producers_done.store(true, Relaxed);
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if args.consume_phase == ConsumePhase::After {
        ctasks = spawn_consumers(&stats);
    }
    for t in ctasks {
        t.await.map_err(|e| format!("consumer task: {e}"))??;
    }
    let end = c.now();
    stop_ticker.store(true, Relaxed);
    let timeline = tokio::task::spawn_blocking(move || ticker.join().unwrap_or_default())
        .await
        .unwrap_or_default();
    stop_beat.store(true, Relaxed);
    let _ = beat.await;
    let broker_cpu = match (broker_cpu0, broker_pid.and_then(broker::cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let client_cpu = report::self_cpu() - client_cpu0;
    let client_faults = report::self_minor_faults().saturating_sub(client_faults0);
    let (broker_produce, broker_disk) = match (metrics_before, metrics) {
        (Some(before), Some(m)) => {
            let before = before.await.ok().flatten();
            let after = read_metrics(m).await;
            match before.zip(after) {
                Some((b, a)) => (
                    broker_metrics::Buckets::parse(&a).since(&broker_metrics::Buckets::parse(&b)),
                    broker_metrics::BrokerDisk::between(&b, &a),
                ),
                None => (None, None),
            }
        }
        _ => (None, None),
    };
    Ok(report::Report::build(
        args,
        &topo,
        &stats,
        timeline,
        report::Extra {
            produce_version: pv,
            fetch_version: fv,
            warmup_s: warmup.as_secs_f64(),
            wall_s: (end - t0) as f64 / 1e9,
            broker_cpu_s: broker_cpu,
            client_cpu_s: client_cpu,
            broker: match (args.bootstrap.as_deref(), args.sink) {
                (Some(b), _) => format!("external {b}"),
                (None, true) => "sink (built-in, answers Produce without storing)".into(),
                (None, false) => "odradek (started by the benchmark)".into(),
            },
            consume_expected: (producers > 0).then_some(target_count),
            broker_produce,
            broker_disk,
            client_minor_faults: client_faults,
        },
    ))
}
