//! Counters and latency histograms shared by the client tasks, and the
//! per-second timeline.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Process clock: ns since `start`, plus the Unix time of `start`, so send
/// times written into records can be compared by another process too.
pub struct Clock {
    start: Instant,
    unix_ns: u64,
}

static CLOCK: OnceLock<Clock> = OnceLock::new();

pub fn clock() -> &'static Clock {
    CLOCK.get_or_init(|| Clock {
        start: Instant::now(),
        unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    })
}

impl Clock {
    /// ns since the clock started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    pub fn to_unix_ns(&self, t: u64) -> u64 {
        self.unix_ns + t
    }
    pub fn since_start_of_unix_ns(&self, u: u64) -> u64 {
        u.saturating_sub(self.unix_ns)
    }
    pub fn unix_ms(&self, t: u64) -> i64 {
        (self.to_unix_ns(t) / 1_000_000) as i64
    }
    pub fn instant(&self, t: u64) -> Instant {
        self.start + std::time::Duration::from_nanos(t)
    }
}

pub fn new_hist() -> Histogram<u64> {
    // µs, 1 µs .. 1 h, 3 significant digits
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()
}

/// One direction (produce acks or consumed records).
pub struct Side {
    /// Events counted for throughput (after warm-up).
    pub msgs: AtomicU64,
    pub bytes: AtomicU64,
    /// All events incl. warm-up (timeline, completion).
    pub all_msgs: AtomicU64,
    pub all_bytes: AtomicU64,
    pub first_ns: AtomicU64,
    pub last_ns: AtomicU64,
    pub errors: AtomicU64,
    /// RecordBatch bytes sent or fetched, all (compressed size when the
    /// batches are).
    pub wire_bytes: AtomicU64,
    pub hist: Mutex<Histogram<u64>>,
    pub interval: Mutex<Histogram<u64>>,
}

impl Side {
    pub fn new() -> Self {
        Self {
            msgs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            all_msgs: AtomicU64::new(0),
            all_bytes: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            wire_bytes: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            hist: Mutex::new(new_hist()),
            interval: Mutex::new(new_hist()),
        }
    }

    /// The measurement window starts no later than `t` (the end of the
    /// warm-up, or when consumers of a backlog start), so the first counted
    /// answer's own time is in it: one fetch that brings a whole backlog
    /// still has a rate.
    pub fn begin(&self, t: u64) {
        self.first_ns.fetch_min(t, Relaxed);
    }

    /// Count `msgs`/`bytes` completed at `now`; `measured` says whether they
    /// fall in the measurement window (after warm-up).
    pub fn count(&self, now: u64, msgs: u64, bytes: u64, measured: bool) {
        self.all_msgs.fetch_add(msgs, Relaxed);
        self.all_bytes.fetch_add(bytes, Relaxed);
        if measured {
            self.msgs.fetch_add(msgs, Relaxed);
            self.bytes.fetch_add(bytes, Relaxed);
            self.first_ns.fetch_min(now, Relaxed);
            self.last_ns.fetch_max(now, Relaxed);
        }
    }

    /// Record latencies (µs) gathered by a task for one response: into the
    /// run histogram (those measured, after warm-up) and the interval
    /// histogram (all). One lock each per response.
    pub fn record(&self, measured: &mut Vec<u64>, warm: &mut Vec<u64>) {
        if !measured.is_empty() {
            let mut h = self.hist.lock().unwrap();
            for &v in measured.iter() {
                h.saturating_record(v);
            }
        }
        if !measured.is_empty() || !warm.is_empty() {
            let mut h = self.interval.lock().unwrap();
            for &v in measured.iter().chain(warm.iter()) {
                h.saturating_record(v);
            }
        }
        measured.clear();
        warm.clear();
    }
}

/// Record `now - since` (clock ns) in µs, at least 1 (the histogram's floor).
pub fn record_since(h: &mut Histogram<u64>, now: u64, since: u64) {
    h.saturating_record((now.saturating_sub(since) / 1000).max(1));
}

/// Where a produced message's latency goes, per batch or request (µs,
/// measured after warm-up): so a reader can tell the tool's own delays from
/// the broker's.
pub struct ProduceBreakdown {
    /// A batch handed to its connection's queue after it was due (full: its
    /// last record's scheduled time; lingered: first record + linger): the
    /// generator's timer and CPU.
    pub late: Mutex<Histogram<u64>>,
    /// A batch waiting in the client for a free request slot
    /// (`--max-in-flight`): the broker answering slower than the load.
    pub queued: Mutex<Histogram<u64>>,
    /// A Produce request written → its answer read: network and broker.
    pub round_trip: Mutex<Histogram<u64>>,
    /// The longest stretch of a producer's loop (makes, queues and sends
    /// batches) from one wait (timer or request slot) to the next, whole
    /// run (ns). In open loop a long one means the generator, not the
    /// broker, held messages back; at max rate the loop may legitimately
    /// go on without waiting while the window has room.
    pub pass_max_ns: std::sync::atomic::AtomicU64,
    /// The longest time in one loop iteration making messages (step 1),
    /// and closing lingered batches and sending requests (steps 2 and 3).
    pub generate_max_ns: std::sync::atomic::AtomicU64,
    pub send_max_ns: std::sync::atomic::AtomicU64,
    /// The most closed batches one connection's queue held, whole run: the
    /// producer stops making messages once the queue is a batch beyond
    /// what the windows take, so this stays near partitions + windows.
    pub queued_max: std::sync::atomic::AtomicU64,
}

impl Default for ProduceBreakdown {
    fn default() -> Self {
        Self {
            late: Mutex::new(new_hist()),
            queued: Mutex::new(new_hist()),
            round_trip: Mutex::new(new_hist()),
            pass_max_ns: Default::default(),
            generate_max_ns: Default::default(),
            send_max_ns: Default::default(),
            queued_max: Default::default(),
        }
    }
}

#[derive(Default)]
pub struct Stats {
    pub produce: SideBox,
    pub consume: SideBox,
    pub breakdown: ProduceBreakdown,
    /// Messages the producers handed to the network (acks=0: = produced).
    pub sent: AtomicU64,
    /// Open loop: messages scheduled before the end that were never made,
    /// because the producer was held back by full windows (no latency
    /// sample: the percentiles cover the messages sent).
    pub unsent: AtomicU64,
    /// Producers are done (all answers in).
    pub producers_done: std::sync::atomic::AtomicBool,
}

pub struct SideBox(pub Side);
impl Default for SideBox {
    fn default() -> Self {
        Self(Side::new())
    }
}
impl std::ops::Deref for SideBox {
    type Target = Side;
    fn deref(&self) -> &Side {
        &self.0
    }
}

/// One second of the timeline.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Tick {
    pub t_s: f64,
    /// Seconds since the previous tick: 1 unless the tool's process could
    /// not run (see `report::Machine::tool_stall_s`).
    pub interval_s: f64,
    pub warmup: bool,
    pub produce_mb_s: f64,
    pub produce_msgs_s: f64,
    pub consume_mb_s: f64,
    pub consume_msgs_s: f64,
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
    pub e2e_p50_ms: Option<f64>,
    pub e2e_p99_ms: Option<f64>,
    /// All CPUs of the machine in this second (see `report::CpuShare`).
    pub cpu_busy_pct: Option<f64>,
    pub cpu_steal_pct: Option<f64>,
    /// The longest the async runtime went without running its heartbeat
    /// task (every 10 ms) in this tick (see `report::Machine::runtime_stall_s`).
    pub runtime_lag_ms: f64,
}

pub fn pct_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub p99_99_ms: f64,
    pub max_ms: f64,
}

pub fn latency(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    let q = |x| h.value_at_quantile(x) as f64 / 1000.0;
    Some(Latency {
        count: h.len(),
        mean_ms: h.mean() / 1000.0,
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        p99_9_ms: q(0.999),
        p99_99_ms: q(0.9999),
        max_ms: h.max() as f64 / 1000.0,
    })
}
