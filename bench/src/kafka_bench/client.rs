//! The load: pipelined producers and fetch-loop consumers.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, Semaphore};

use crate::proto::{self, BatchBuilder, Result};
use crate::stats::{clock, record_since, Stats};

#[derive(Clone, Debug)]
pub struct Tp {
    pub topic: String,
    pub partition: i32,
    pub leader: i32,
}

#[derive(Clone, Debug)]
pub struct Topology {
    pub parts: Vec<Tp>,
    pub brokers: HashMap<i32, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Keys {
    None,
    Uniform,
    Zipf,
}

/// What the value bytes after the send time hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Payload {
    /// Random bytes: incompressible, the worst case for a codec.
    Bytes,
    /// Random letters A–Z, as Kafka's `kafka-producer-perf-test` writes:
    /// about 4.7 bits of entropy per byte; codecs without entropy coding
    /// (lz4, snappy) find nothing to shorten.
    Letters,
    /// Words drawn at random from a vocabulary of 1024 made-up words,
    /// space-separated: repeats within a batch, as in logs or JSON, which
    /// every codec shortens.
    Words,
}

impl Payload {
    /// `len` bytes of this payload.
    fn fill(self, rng: &mut Rng, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 16);
        match self {
            Payload::Bytes => out.extend((0..len).map(|_| rng.next() as u8)),
            Payload::Letters => out.extend((0..len).map(|_| b'A' + (rng.next() % 26) as u8)),
            Payload::Words => {
                let vocabulary: Vec<Vec<u8>> = (0..1024)
                    .map(|_| {
                        let n = 2 + rng.next() % 9;
                        (0..n).map(|_| b'a' + (rng.next() % 26) as u8).collect()
                    })
                    .collect();
                while out.len() < len {
                    out.extend_from_slice(&vocabulary[(rng.next() % 1024) as usize]);
                    out.push(b' ');
                }
                out.truncate(len);
            }
        }
        out
    }
}

#[derive(Clone, Debug)]
pub struct Work {
    pub producers: usize,
    pub message_size: usize,
    pub payload: Payload,
    /// Codec of the produced batches (attributes bits 0–2).
    pub compression: i16,
    pub keys: Keys,
    pub key_space: u64,
    pub zipf_s: f64,
    pub acks: i16,
    pub batch_size: usize,
    pub linger_ns: u64,
    /// Open loop: least time between two wakes of a producer.
    pub tick_ns: u64,
    pub rate: Option<f64>,
    pub max_in_flight: usize,
    pub produce_version: i16,
    pub fetch_version: i16,
    pub fetch_max_bytes: i32,
    pub fetch_max_wait_ms: i32,
    /// Clock time (ns) the measurement window starts (end of warm-up).
    pub warm_end: u64,
    /// Producers stop generating at this clock time (duration mode).
    pub stop_at: Option<u64>,
    /// Messages per producer (messages mode).
    pub messages: Option<u64>,
    /// Record end-to-end latency (not when consuming a backlog afterwards).
    pub e2e: bool,
}

/// Small fast PRNG (splitmix64).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E3779B97F4A7C15) ^ 0xD1B54A32D192ED03)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Key chooser: none, uniform over `key_space`, or Zipf(s) over it (CDF
/// table + binary search).
pub struct KeyGen {
    keys: Keys,
    space: u64,
    cdf: Arc<Vec<f64>>,
}
impl KeyGen {
    pub fn new(keys: Keys, space: u64, s: f64) -> Self {
        let cdf = if keys == Keys::Zipf {
            let mut c = Vec::with_capacity(space as usize);
            let mut acc = 0.0;
            for k in 1..=space {
                acc += 1.0 / (k as f64).powf(s);
                c.push(acc);
            }
            let total = acc;
            c.iter_mut().for_each(|x| *x /= total);
            c
        } else {
            Vec::new()
        };
        Self {
            keys,
            space,
            cdf: Arc::new(cdf),
        }
    }
    fn clone_gen(&self) -> Self {
        Self {
            keys: self.keys,
            space: self.space,
            cdf: self.cdf.clone(),
        }
    }
    fn key(&self, rng: &mut Rng) -> Option<u64> {
        match self.keys {
            Keys::None => None,
            Keys::Uniform => Some(rng.next() % self.space),
            Keys::Zipf => {
                let u = rng.unit();
                Some(self.cdf.partition_point(|&c| c < u) as u64)
            }
        }
    }
}

fn key_partition(key: u64, n: usize) -> usize {
    // fixed mixing so a key always lands on the same partition
    let mut z = key.wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    ((z ^ (z >> 31)) % n as u64) as usize
}

struct Open {
    b: BatchBuilder,
    first_sched: u64,
    sched: Vec<u64>,
}

struct Ready {
    part: usize,
    bytes: Bytes,
    sched: Vec<u64>,
    /// When it joined the connection's queue.
    ready_at: u64,
}

struct InFlight {
    corr: i32,
    batches: Vec<(usize, Vec<u64>)>,
    /// When the request was written, if it counts (after warm-up).
    sent_at: Option<u64>,
}

struct PConn {
    tx: OwnedWriteHalf,
    permits: Arc<Semaphore>,
    pending: mpsc::UnboundedSender<InFlight>,
    reader: tokio::task::JoinHandle<Result<()>>,
    corr: i32,
    queue: BatchQueue,
}

/// Closed batches waiting for a request slot, per partition, oldest first.
/// A request takes the oldest batch of each partition, so taking costs
/// O(partitions) however long the backlog grows: a client that falls
/// behind must not get slower per request, or it never catches up.
struct BatchQueue {
    parts: Vec<VecDeque<Ready>>,
    len: usize,
    /// Partition to look at first, rotated so a size cap is fair.
    next: usize,
}

impl BatchQueue {
    fn new(partitions: usize) -> Self {
        Self {
            parts: (0..partitions).map(|_| VecDeque::new()).collect(),
            len: 0,
            next: 0,
        }
    }

    fn push(&mut self, r: Ready) {
        self.parts[r.part].push_back(r);
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The oldest batch of each partition, at most `max_bytes` in all
    /// unless one batch alone is larger.
    fn take_request(&mut self, max_bytes: usize) -> Vec<Ready> {
        let n = self.parts.len();
        let mut taken: Vec<Ready> = Vec::new();
        let mut size = 0;
        for i in 0..n {
            let q = &mut self.parts[(self.next + i) % n];
            let Some(front) = q.front() else { continue };
            if !taken.is_empty() && size + front.bytes.len() > max_bytes {
                continue;
            }
            size += front.bytes.len();
            taken.extend(q.pop_front());
        }
        self.next = (self.next + 1) % n.max(1);
        self.len -= taken.len();
        taken
    }
}

/// One producer: its own connection per leader, batches per partition.
pub async fn producer(
    id: usize,
    topo: Arc<Topology>,
    w: Arc<Work>,
    keygen: Arc<KeyGen>,
    stats: Arc<Stats>,
) -> Result<()> {
    let c = clock();
    let n = topo.parts.len();
    let keygen = keygen.clone_gen();
    let mut rng = Rng::new(id as u64 + 1);
    // Values are slices of a pool, different per producer. Uncompressed,
    // a small pool (cache-resident) with a fixed stride; compressed, a
    // large one at random offsets, so a batch's records do not repeat each
    // other and the codec sees only what the payload itself offers.
    let filler_len = w.message_size - 8;
    let compressed = w.compression != odradek_engine::codec::NONE;
    let pool = if compressed { 16 << 20 } else { 4096 };
    let filler = w.payload.fill(&mut rng, filler_len + pool);
    let mut conns: HashMap<i32, PConn> = HashMap::new();
    for tp in &topo.parts {
        if conns.contains_key(&tp.leader) {
            continue;
        }
        let addr = topo
            .brokers
            .get(&tp.leader)
            .ok_or("leader not in metadata")?;
        let conn = proto::Conn::connect(addr).await?;
        let (rx, tx) = conn.stream.into_split();
        let permits = Arc::new(Semaphore::new(w.max_in_flight));
        let (ptx, prx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(produce_reader(
            rx,
            prx,
            permits.clone(),
            w.clone(),
            stats.clone(),
            topo.clone(),
        ));
        conns.insert(
            tp.leader,
            PConn {
                tx,
                permits,
                pending: ptx,
                reader,
                corr: 0,
                queue: BatchQueue::new(n),
            },
        );
    }
    let mut open: Vec<Option<Open>> = (0..n).map(|_| None).collect();
    let mut sticky = id % n;
    let mut remaining = w.messages.unwrap_or(u64::MAX);
    let interval = w.rate.map(|r| (1e9 * w.producers as f64 / r) as u64);
    let mut next_sched = c.now() + interval.map_or(0, |iv| iv * id as u64 / w.producers as u64);
    let key_buf_len = 16;
    let max_record = BatchBuilder::record_size(
        if w.keys == Keys::None { 0 } else { key_buf_len },
        w.message_size,
    );
    let mut record_est = max_record;
    // open loop: no timer wake before this (see `Work::tick_ns`)
    let mut tick_end = 0u64;
    let mut timer = crate::timer::PreciseTimer::new()?;
    let mut filler_off = 0usize;
    let topic_names: Vec<TopicName> = topo
        .parts
        .iter()
        .map(|t| TopicName(StrBytes::from_string(t.topic.clone())))
        .collect();
    // when this pass of the loop began: the first iteration after a wait
    let mut pass_start: Option<u64> = None;
    // open loop: messages that are due wait for room in the queue
    let mut held = false;
    // open loop: the pass that stops has made what was due before the end
    let mut made_all = false;
    loop {
        let now = c.now();
        let iter_start = now;
        let pass_began = *pass_start.get_or_insert(now);
        let stopping = remaining == 0 || w.stop_at.is_some_and(|s| now >= s);
        // the messages held back until now were waiting for the window
        let resumed = held.then_some(now);
        // 1. generate what is due (open loop: on the pass that stops too,
        // up to the end)
        let mut capped = false;
        if !made_all && remaining > 0 && (!stopping || interval.is_some()) {
            let mut made = 0;
            // Make no message while a batch beyond what the windows take now
            // is queued. More would only grow the queue: in open loop, a
            // client that fell behind made up to 64 MiB per pass while its
            // windows took one request each, on fresh pages, and never caught
            // up (the runs that collapsed to ~100 MB/s). The messages not
            // made yet keep their scheduled times, so their latency still
            // counts from then. Only an enqueue fills the queue, so the check
            // is redone after one (windows that free up meanwhile are seen
            // on the next pass).
            let mut full = queue_full(&conns);
            loop {
                if full {
                    break;
                }
                let sched = match interval {
                    Some(_) if next_sched > now || w.stop_at.is_some_and(|s| next_sched >= s) => {
                        break
                    }
                    Some(iv) => {
                        let s = next_sched;
                        next_sched += iv;
                        s
                    }
                    None => now,
                };
                let key = keygen.key(&mut rng);
                let part = match key {
                    Some(k) => key_partition(k, n),
                    None => sticky,
                };
                let mut keybuf = [0u8; 16];
                let key_bytes = key.map(|k| {
                    let s = format!("{k:016}");
                    keybuf.copy_from_slice(&s.as_bytes()[s.len() - key_buf_len..]);
                    &keybuf[..]
                });
                let slot = &mut open[part];
                // Full batches closed when their last record went in (below);
                // one whose linger ended before this record (making messages
                // late, after a stall) closes now, as it would have then.
                let closed = slot
                    .as_ref()
                    .map(|o| o.first_sched + w.linger_ns)
                    .filter(|&linger_end| linger_end <= sched);
                if let Some(due) = closed {
                    let o = slot.take().unwrap();
                    enqueue(&mut conns, &topo, part, o, due, resumed, &w, &stats)?;
                    full = queue_full(&conns);
                    if key.is_none() {
                        sticky = (sticky + 1) % n;
                    }
                }
                let part = if key.is_none() { sticky } else { part };
                let o = open[part].get_or_insert_with(|| Open {
                    b: BatchBuilder::new(w.batch_size),
                    first_sched: sched,
                    sched: Vec::new(),
                });
                filler_off = if compressed {
                    (rng.next() % pool as u64) as usize
                } else {
                    (filler_off + 61) % pool
                };
                let added = o.b.push(
                    c.unix_ms(sched),
                    key_bytes,
                    c.to_unix_ns(sched),
                    &filler[filler_off..filler_off + filler_len],
                );
                // the next record's varints (deltas, length) grow by at
                // most a few bytes
                record_est = (added + 3).min(max_record);
                o.sched.push(sched);
                if o.b.len() + max_record > w.batch_size {
                    // full: ready now, as a Kafka producer's accumulator
                    // sends a full batch without waiting for the next record;
                    // it was due at its last record's time
                    if let Some(o) = open[part].take() {
                        enqueue(&mut conns, &topo, part, o, sched, resumed, &w, &stats)?;
                        full = queue_full(&conns);
                    }
                    if key.is_none() {
                        sticky = (sticky + 1) % n;
                    }
                }
                remaining -= 1;
                made += 1;
                if remaining == 0 {
                    break;
                }
                if made >= if interval.is_none() { 4096 } else { 65536 } {
                    capped = true;
                    break;
                }
            }
            // messages are due that wait for room
            held = full && interval.is_some_and(|_| next_sched <= now);
        }
        if stopping && !made_all {
            made_all = true;
            if let (Some(iv), Some(stop)) = (interval, w.stop_at) {
                // due before the end and never made: the windows were full;
                // they have no latency sample
                let unsent = stop.saturating_sub(next_sched).div_ceil(iv);
                stats.unsent.fetch_add(unsent.min(remaining), Relaxed);
            }
        }
        // 2. linger expired (or stopping): batches become ready
        let now = c.now();
        let bd = &stats.breakdown;
        bd.generate_max_ns
            .fetch_max(now.saturating_sub(iter_start), Relaxed);
        for (part, slot) in open.iter_mut().enumerate() {
            if slot
                .as_ref()
                .is_some_and(|o| stopping || now >= o.first_sched + w.linger_ns)
            {
                let o = slot.take().unwrap();
                let due = if stopping {
                    now
                } else {
                    o.first_sched + w.linger_ns
                };
                enqueue(&mut conns, &topo, part, o, due, resumed, &w, &stats)?;
                if part == sticky && w.keys == Keys::None {
                    sticky = (sticky + 1) % n;
                }
            }
        }
        // 3. send what the windows allow
        for pc in conns.values_mut() {
            while !pc.queue.is_empty() {
                let permit = if w.acks == 0 {
                    None
                } else {
                    match pc.permits.clone().try_acquire_owned() {
                        Ok(p) => Some(p),
                        Err(_) => break,
                    }
                };
                send_request(pc, &w, &topo, &topic_names, &stats).await?;
                if let Some(p) = permit {
                    p.forget(); // returned by the reader
                }
            }
        }
        let sent = c.now();
        bd.send_max_ns.fetch_max(sent.saturating_sub(now), Relaxed);
        bd.pass_max_ns
            .fetch_max(sent.saturating_sub(pass_began), Relaxed);
        let queued: usize = conns.values().map(|p| p.queue.len()).sum();
        if stopping && queued == 0 && open.iter().all(|o| o.is_none()) {
            break;
        }
        // 4. wait for the next thing to do
        let mut wake = u64::MAX;
        if let Some(iv) = interval {
            if !stopping {
                // Wake when the first open batch can be full, not for every
                // message: the messages before it are made then, stamped
                // with their scheduled times. `record_est` bounds the next
                // records' size, so this is not late (at worst one wake
                // early).
                let room = |p: usize| {
                    let used = open[p].as_ref().map_or(proto::BATCH_HEADER, |o| o.b.len());
                    (w.batch_size.saturating_sub(used) / record_est).max(1) as u64
                };
                let k = match w.keys {
                    Keys::None => room(sticky),
                    _ => (0..n).map(room).min().unwrap_or(1),
                };
                wake = wake.min(next_sched + (k - 1) * iv);
                // a batch the next message starts lingers from that message
                if open.iter().any(|o| o.is_none()) {
                    wake = wake.min(next_sched + w.linger_ns);
                }
            }
        }
        for o in open.iter().flatten() {
            wake = wake.min(o.first_sched + w.linger_ns);
        }
        if let Some(s) = w.stop_at.filter(|_| !stopping) {
            wake = wake.min(s);
        }
        let blocked = queued > 0;
        // max rate, or open loop behind its schedule (messages held back,
        // or more due than a pass makes): generate more now, no timer
        if (interval.is_none() || held || capped) && !blocked && !stopping {
            continue;
        }
        if blocked {
            // wait for a permit on a connection with queued requests, or the
            // next scheduled message (open loop: keep generating)
            let pc = conns.values().find(|p| !p.queue.is_empty()).unwrap();
            let permits = pc.permits.clone();
            let until = c.instant(wake.max(tick_end).min(c.now() + 1_000_000_000));
            tokio::select! {
                p = permits.acquire() => { drop(p); }
                r = timer.sleep_until(until), if interval.is_some() => {
                    r?;
                    tick_end = c.now() + w.tick_ns;
                }
            }
            pass_start = None;
        } else if wake != u64::MAX {
            let ticked = interval.is_some();
            let until = if ticked { wake.max(tick_end) } else { wake };
            timer.sleep_until(c.instant(until)).await?;
            pass_start = None;
            if ticked {
                tick_end = c.now() + w.tick_ns;
            }
        }
    }
    // wait for all answers: drop the pending senders, join readers
    for (_, pc) in conns {
        drop(pc.pending);
        let mut tx = pc.tx;
        pc.reader.await.map_err(|e| format!("reader task: {e}"))??;
        let _ = tx.shutdown().await;
    }
    Ok(())
}

/// More batches queued than the connections' windows take now.
fn queue_full(conns: &HashMap<i32, PConn>) -> bool {
    let queued: usize = conns.values().map(|p| p.queue.len()).sum();
    let free: usize = conns.values().map(|p| p.permits.available_permits()).sum();
    queued > free
}

/// Hand a closed batch to its leader's queue; `due` is when it should have
/// been (see [`crate::stats::ProduceBreakdown::late`]). `resumed`: when
/// the producer went on making messages it had held back for want of room
/// in the queue; the wait from `due` until then is the window's, so it
/// counts as queued, and only the rest as late.
#[allow(clippy::too_many_arguments)]
fn enqueue(
    conns: &mut HashMap<i32, PConn>,
    topo: &Topology,
    part: usize,
    o: Open,
    due: u64,
    resumed: Option<u64>,
    w: &Work,
    stats: &Stats,
) -> Result<()> {
    let now = clock().now();
    let waited = resumed.map_or(0, |r| r.min(now).saturating_sub(due));
    if o.first_sched >= w.warm_end {
        record_since(&mut stats.breakdown.late.lock().unwrap(), now, due + waited);
    }
    let ready_at = now - waited;
    let leader = topo.parts[part].leader;
    // compressed here, in the producer's loop, as a Kafka producer does
    // before it sends
    let bytes = o.b.finish(w.compression)?;
    stats
        .produce
        .wire_bytes
        .fetch_add(bytes.len() as u64, Relaxed);
    let queue = &mut conns.get_mut(&leader).unwrap().queue;
    queue.push(Ready {
        part,
        bytes,
        sched: o.sched,
        ready_at,
    });
    stats
        .breakdown
        .queued_max
        .fetch_max(queue.len() as u64, Relaxed);
    Ok(())
}

/// One Produce request with at most one batch per partition from the queue.
async fn send_request(
    pc: &mut PConn,
    w: &Work,
    topo: &Topology,
    names: &[TopicName],
    stats: &Stats,
) -> Result<()> {
    let taken = pc.queue.take_request(8 << 20);
    let size = taken.iter().map(|r| r.bytes.len()).sum();
    let mut req = ProduceRequest::default();
    req.acks = w.acks;
    req.timeout_ms = 30_000;
    let now = clock().now();
    let measured = taken
        .iter()
        .any(|r| r.sched.first().is_some_and(|&s| s >= w.warm_end));
    if measured {
        let mut h = stats.breakdown.queued.lock().unwrap();
        for r in &taken {
            record_since(&mut h, now, r.ready_at);
        }
    }
    let mut msgs = 0;
    for r in &taken {
        msgs += r.sched.len() as u64;
        let name = &names[r.part];
        let pd = PartitionProduceData::default()
            .with_index(topo.parts[r.part].partition)
            .with_records(Some(r.bytes.clone()));
        match req.topic_data.iter_mut().find(|t| &t.name == name) {
            Some(t) => t.partition_data.push(pd),
            None => req.topic_data.push(
                TopicProduceData::default()
                    .with_name(name.clone())
                    .with_partition_data(vec![pd]),
            ),
        }
    }
    pc.corr += 1;
    let frame = proto::encode_request(ApiKey::Produce, w.produce_version, pc.corr, &req, size)?;
    if w.acks != 0 {
        let _ = pc.pending.send(InFlight {
            corr: pc.corr,
            batches: taken.into_iter().map(|r| (r.part, r.sched)).collect(),
            sent_at: measured.then(|| clock().now()),
        });
    }
    pc.tx.write_all(&frame).await?;
    stats.sent.fetch_add(msgs, Relaxed);
    if w.acks == 0 {
        let now = clock().now();
        stats
            .produce
            .count(now, msgs, msgs * w.message_size as u64, now >= w.warm_end);
    }
    Ok(())
}

async fn produce_reader(
    mut rx: tokio::net::tcp::OwnedReadHalf,
    mut pending: mpsc::UnboundedReceiver<InFlight>,
    permits: Arc<Semaphore>,
    w: Arc<Work>,
    stats: Arc<Stats>,
    topo: Arc<Topology>,
) -> Result<()> {
    let c = clock();
    let (mut lat_m, mut lat_w) = (Vec::new(), Vec::new());
    let mut reported = 0u64;
    let mut frames = proto::FrameReader::default();
    while let Some(inflight) = pending.recv().await {
        let frame = frames.read(&mut rx).await?;
        let (corr, resp): (i32, ProduceResponse) =
            proto::decode_response(ApiKey::Produce, w.produce_version, frame)?;
        if corr != inflight.corr {
            return Err(format!("produce: correlation {corr}, expected {}", inflight.corr).into());
        }
        permits.add_permits(1);
        let now = c.now();
        if let Some(sent) = inflight.sent_at {
            record_since(&mut stats.breakdown.round_trip.lock().unwrap(), now, sent);
        }
        let mut errs: HashMap<(String, i32), i16> = HashMap::new();
        for t in &resp.responses {
            for p in &t.partition_responses {
                if p.error_code != 0 {
                    errs.insert((t.name.0.to_string(), p.index), p.error_code);
                }
            }
        }
        let mut ok_msgs = 0u64;
        for (part, sched) in &inflight.batches {
            let tp = &topo.parts[*part];
            if let Some(code) = errs.get(&(tp.topic.clone(), tp.partition)) {
                let n = sched.len() as u64;
                if stats.produce.errors.fetch_add(n, Relaxed) == 0 || reported < 3 {
                    reported += 1;
                    eprintln!(
                        "produce error {code} on {}-{} ({n} messages)",
                        tp.topic, tp.partition
                    );
                }
                continue;
            }
            for &s in sched {
                ok_msgs += 1;
                let us = (now.saturating_sub(s) / 1000).max(1);
                if s >= w.warm_end {
                    lat_m.push(us);
                } else {
                    lat_w.push(us);
                }
            }
        }
        // Throughput counts what was acked after the warm-up, latency what
        // was scheduled after it: an open-loop client that is behind sends
        // messages scheduled before the warm-up's end well after it.
        let size = w.message_size as u64;
        if ok_msgs > 0 {
            stats
                .produce
                .count(now, ok_msgs, ok_msgs * size, now >= w.warm_end);
        }
        stats.produce.record(&mut lat_m, &mut lat_w);
    }
    Ok(())
}

/// One consumer: a fetch loop per leader over its partitions, starting at
/// `start` offsets; stops when `done()` says so.
pub async fn consumer(
    parts: Vec<(usize, i64)>,
    topo: Arc<Topology>,
    w: Arc<Work>,
    stats: Arc<Stats>,
    done: Arc<dyn Fn() -> bool + Send + Sync>,
) -> Result<()> {
    let mut by_leader: HashMap<i32, Vec<(usize, i64)>> = HashMap::new();
    for (p, off) in parts {
        by_leader
            .entry(topo.parts[p].leader)
            .or_default()
            .push((p, off));
    }
    let mut tasks = Vec::new();
    for (leader, parts) in by_leader {
        let addr = topo.brokers[&leader].clone();
        let (topo, w, stats, done) = (topo.clone(), w.clone(), stats.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            fetch_loop(addr, parts, topo, w, stats, done).await
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("consumer task: {e}"))??;
    }
    Ok(())
}

/// One Fetch request for `parts` at their offsets.
fn fetch_request(parts: &[(usize, i64)], topo: &Topology, w: &Work) -> FetchRequest {
    let mut req = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(w.fetch_max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(64 << 20)
        .with_session_id(0)
        .with_session_epoch(-1);
    for &(p, off) in parts {
        let tp = &topo.parts[p];
        let name = TopicName(StrBytes::from_string(tp.topic.clone()));
        let fp = FetchPartition::default()
            .with_partition(tp.partition)
            .with_fetch_offset(off)
            .with_partition_max_bytes(w.fetch_max_bytes)
            .with_current_leader_epoch(-1)
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(-1);
        match req.topics.iter_mut().find(|t| t.topic == name) {
            Some(t) => t.partitions.push(fp),
            None => req.topics.push(
                FetchTopic::default()
                    .with_topic(name)
                    .with_partitions(vec![fp]),
            ),
        }
    }
    req
}

/// A Fetch loop over the partitions one leader serves. Like librdkafka,
/// whose broker thread fetches while the application reads the records of
/// the last answer, the next fetch goes out as soon as an answer's batch
/// headers give the next offsets, and the records are walked while it is
/// on its way: still one request in flight.
async fn fetch_loop(
    addr: String,
    mut parts: Vec<(usize, i64)>,
    topo: Arc<Topology>,
    w: Arc<Work>,
    stats: Arc<Stats>,
    done: Arc<dyn Fn() -> bool + Send + Sync>,
) -> Result<()> {
    let c = clock();
    let run_start_unix = c.to_unix_ns(0);
    let mut conn = proto::Conn::connect(&addr).await?;
    let (mut lat_m, mut lat_w) = (Vec::new(), Vec::new());
    // a fetch error or a batch that does not decode: counted, and the
    // first three logged
    let mut reported = 0;
    let mut failed = |what: String| {
        if reported < 3 {
            reported += 1;
            eprintln!("{what}");
        }
        stats.consume.errors.fetch_add(1, Relaxed);
    };
    let slot_of = |parts: &[(usize, i64)], topic: &str, partition: i32| {
        parts.iter().position(|(p, _)| {
            topo.parts[*p].partition == partition && topo.parts[*p].topic.as_str() == topic
        })
    };
    let mut in_flight = false;
    while !done() {
        if !in_flight {
            conn.send(
                ApiKey::Fetch,
                w.fetch_version,
                &fetch_request(&parts, &topo, &w),
            )
            .await?;
        }
        let resp: FetchResponse = conn.recv(ApiKey::Fetch, w.fetch_version).await?;
        if resp.error_code != 0 {
            return Err(format!("fetch error {}", resp.error_code).into());
        }
        let now = c.now();
        let now_unix = c.to_unix_ns(now);
        // the next offsets, from the batch headers; the walk below reads
        // from the offsets this answer was for
        let from: Vec<i64> = parts.iter().map(|&(_, off)| off).collect();
        let mut advanced = false;
        for t in &resp.responses {
            for pr in &t.partitions {
                let Some(i) = slot_of(&parts, &t.topic.0, pr.partition_index) else {
                    continue;
                };
                let next = pr
                    .records
                    .as_ref()
                    .filter(|_| pr.error_code == 0)
                    .and_then(|r| proto::next_offset(r, from[i]));
                if let Some(next) = next.filter(|&n| n > from[i]) {
                    parts[i].1 = next;
                    advanced = true;
                }
            }
        }
        // an answer with data: fetch on now; one without waits below
        in_flight = advanced && !done();
        if in_flight {
            conn.send(
                ApiKey::Fetch,
                w.fetch_version,
                &fetch_request(&parts, &topo, &w),
            )
            .await?;
        }
        let (mut msgs, mut measured, mut bytes_m, mut bytes_w) = (0u64, 0u64, 0u64, 0u64);
        for t in &resp.responses {
            for pr in &t.partitions {
                let Some(i) = slot_of(&parts, &t.topic.0, pr.partition_index) else {
                    continue;
                };
                if pr.error_code != 0 {
                    failed(format!(
                        "fetch error {} on {}-{}",
                        pr.error_code, &*t.topic.0, pr.partition_index
                    ));
                    continue;
                }
                let Some(records) = &pr.records else { continue };
                let mut m_here = 0u64;
                let mut b_here = 0u64;
                let p = proto::parse_records(records, from[i], |send_unix| {
                    // A record written before this run (a backlog read with
                    // `--consume-from earliest`) counts by when it arrived,
                    // and its age is lag, not a latency.
                    if send_unix < run_start_unix {
                        if now >= w.warm_end {
                            m_here += 1;
                        }
                        return;
                    }
                    let sent = c.since_start_of_unix_ns(send_unix);
                    let us = (now_unix.saturating_sub(send_unix) / 1000).max(1);
                    if sent >= w.warm_end {
                        m_here += 1;
                        if w.e2e {
                            lat_m.push(us);
                        }
                    } else if w.e2e {
                        lat_w.push(us);
                    }
                });
                if let Some(why) = &p.corrupt {
                    failed(format!(
                        "fetch {}-{}: {why}",
                        &*t.topic.0, pr.partition_index
                    ));
                }
                msgs += p.messages;
                stats.consume.wire_bytes.fetch_add(p.wire_bytes, Relaxed);
                if let Some(b) = (p.value_bytes * m_here).checked_div(p.messages) {
                    b_here = b;
                }
                measured += m_here;
                bytes_m += b_here;
                bytes_w += p.value_bytes - b_here;
            }
        }
        if msgs > measured {
            stats.consume.count(now, msgs - measured, bytes_w, false);
        }
        if measured > 0 {
            stats.consume.count(now, measured, bytes_m, true);
        }
        stats.consume.record(&mut lat_m, &mut lat_w);
        if !in_flight {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(part: usize, len: usize, tag: u64) -> Ready {
        Ready {
            part,
            bytes: Bytes::from(vec![0u8; len]),
            sched: vec![tag],
            ready_at: tag,
        }
    }

    #[test]
    fn a_request_takes_the_oldest_batch_of_each_partition() {
        let mut q = BatchQueue::new(3);
        for (i, part) in [0, 0, 2, 0, 2].into_iter().enumerate() {
            q.push(ready(part, 10, i as u64));
        }
        assert_eq!(q.len(), 5);
        let tags = |v: Vec<Ready>| {
            let mut t: Vec<(usize, u64)> = v.iter().map(|r| (r.part, r.sched[0])).collect();
            t.sort();
            t
        };
        assert_eq!(tags(q.take_request(1 << 20)), [(0, 0), (2, 2)]);
        assert_eq!(tags(q.take_request(1 << 20)), [(0, 1), (2, 4)]);
        assert_eq!(tags(q.take_request(1 << 20)), [(0, 3)]);
        assert!(q.is_empty());
        assert!(q.take_request(1 << 20).is_empty());
    }

    #[test]
    fn the_size_cap_leaves_the_rest_for_the_next_request() {
        let mut q = BatchQueue::new(3);
        for part in 0..3 {
            q.push(ready(part, 600, part as u64));
        }
        // one batch over the cap still goes alone; the cap rotates
        let first = q.take_request(1000);
        assert_eq!(first.len(), 1);
        let second = q.take_request(1000);
        assert_eq!(second.len(), 1);
        assert_ne!(first[0].part, second[0].part);
        assert_eq!(q.take_request(100).len(), 1);
        assert!(q.is_empty());
    }
}
