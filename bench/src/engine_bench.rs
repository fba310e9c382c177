//! `odradek-engine-bench`: the storage engine against the raw disk.
//!
//! For every configuration (shards x flush policy x batch size) it
//!
//! 1. appends batches of ~1 KiB records to one partition per shard through
//!    the real engine (`ShardPool` -> `PartitionLog<UringStorage>`), with
//!    `--inflight` concurrent appender tasks per partition, and measures
//!    durable throughput (first append to last byte durable) and the
//!    append-to-durable latency of every batch;
//! 2. reads the whole log back in 1 MiB fetches, once with `read_bytes`
//!    (bytes copied out of the page cache) and once with `read` (file
//!    slice only, no data copy);
//! 3. writes the same batch bytes with the same fsync cadence to plain files
//!    in the same directory with `pwrite` + `fdatasync` from std threads
//!    (one per partition) and reads them back with `pread`: the raw baseline.
//!
//! It prints one row per configuration with the engine/raw ratio and
//! writes the same data as JSON (`--json`). See docs/benchmarks.md.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fs::File;
use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Parser;
use hdrhistogram::Histogram;
use odradek_engine::batch;
use odradek_engine::log::{FlushPolicy, LogConfig};
use odradek_engine::shard::{Shard, ShardConfig, ShardPool, TopicPartition};
use serde::Serialize;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// Fetch size of the read phase.
const FETCH_BYTES: u64 = MIB;

// ---------------------------------------------------------------- arguments

#[derive(Parser, Debug)]
#[command(
    name = "odradek-engine-bench",
    about = "Append/read throughput and append-to-durable latency of the Odradek storage engine, against plain pwrite+fdatasync on the same disk"
)]
struct Args {
    /// Directory to write in (a fresh subdirectory is created and removed).
    /// Default: a temporary directory under the current directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Bytes written per configuration (all partitions together), e.g. 256MiB.
    #[arg(long, value_parser = parse_size)]
    bytes_per_run: Option<u64>,
    /// Stop a configuration's write phase after this many seconds even if
    /// --bytes-per-run is not reached (fsync-bound configurations).
    #[arg(long)]
    max_seconds: Option<f64>,
    /// Batch sizes, e.g. 16KiB,64KiB,256KiB,1MiB.
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    batch_sizes: Option<Vec<u64>>,
    /// Flush policies: `append` (every append, group commit), a byte count
    /// (`1MiB`: flush every that many bytes) or a period (`100ms`).
    #[arg(long, value_delimiter = ',', value_parser = parse_policy)]
    policies: Option<Vec<Policy>>,
    /// Shard counts to run, e.g. 1,2 (`all` = one per CPU). One partition per shard.
    #[arg(long, value_delimiter = ',')]
    shards: Option<Vec<String>>,
    /// Concurrent appender tasks per partition.
    #[arg(long, default_value_t = 4)]
    inflight: usize,
    /// Repeat each configuration N times; report median and min/max.
    #[arg(long)]
    runs: Option<usize>,
    /// Record size on the wire (value + record framing), bytes.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Tiny sizes, a few seconds in total (CI smoke test).
    #[arg(long)]
    quick: bool,
    /// How append-to-durable latency is observed under the byte and time
    /// policies: `wait` spawns a task per append that awaits
    /// `wait_durable` (an acks=all producer); `poll` registers no waiter and
    /// checks `durable_end_offset()` every millisecond, so only the flush
    /// policy decides when the engine fsyncs. Every-append always waits.
    #[arg(long, value_enum, default_value_t = Probe::Wait)]
    durable_probe: Probe,
    /// Do not pin shard threads to CPUs.
    #[arg(long)]
    no_pin: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => 1024 * MIB,
        _ => return Err(format!("bad size unit in {s:?}")),
    };
    Ok(n * mult)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Probe {
    Wait,
    Poll,
}

/// A flush policy under test.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    EveryAppend,
    EveryBytes(u64),
    EveryMs(u64),
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "append" || t == "every-append" {
        return Ok(Policy::EveryAppend);
    }
    if let Some(ms) = t.strip_suffix("ms") {
        return ms
            .parse()
            .map(Policy::EveryMs)
            .map_err(|_| format!("bad policy {s:?}"));
    }
    parse_size(&t)
        .map(Policy::EveryBytes)
        .map_err(|_| format!("bad policy {s:?}: use append, <bytes> (1MiB) or <n>ms"))
}

impl Policy {
    fn name(&self) -> String {
        match *self {
            Policy::EveryAppend => "every-append".into(),
            Policy::EveryBytes(b) => format!("every-{}", fmt_size(b)),
            Policy::EveryMs(ms) => format!("every-{ms}ms"),
        }
    }
    fn engine(&self) -> FlushPolicy {
        match *self {
            Policy::EveryAppend => FlushPolicy::EVERY_APPEND,
            Policy::EveryBytes(b) => FlushPolicy::every_bytes(b),
            Policy::EveryMs(ms) => FlushPolicy::every_ms(ms),
        }
    }
}

// `%` rather than `is_multiple_of`: the workspace MSRV is 1.85.
#[allow(clippy::manual_is_multiple_of)]
fn fmt_size(b: u64) -> String {
    if b >= MIB && b % MIB == 0 {
        format!("{}MiB", b / MIB)
    } else if b >= KIB && b % KIB == 0 {
        format!("{}KiB", b / KIB)
    } else {
        format!("{b}B")
    }
}

/// Settings after applying `--quick` and defaults.
#[derive(Debug, Clone, Serialize)]
struct Settings {
    dir: PathBuf,
    bytes_per_run: u64,
    max_seconds: f64,
    batch_sizes: Vec<u64>,
    policies: Vec<String>,
    #[serde(skip)]
    policy_list: Vec<Policy>,
    shards: Vec<usize>,
    inflight: usize,
    runs: usize,
    record_size: usize,
    durable_probe: Probe,
    pin: bool,
    quick: bool,
}

// ---------------------------------------------------------------- results

#[derive(Debug, Clone, Default, Serialize)]
struct Latency {
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    count: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            count: h.len(),
        }
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// One write+read measurement (engine or raw) of one configuration.
#[derive(Debug, Clone, Default, Serialize)]
struct Sample {
    bytes: u64,
    batches: u64,
    secs: f64,
    mb_s: f64,
    batches_s: f64,
    /// Data fdatasyncs: exact for raw; for the engine, the number of
    /// distinct durable end offsets its waiters were woken with (one per
    /// group-commit fdatasync that made new data durable).
    fsyncs: u64,
    /// Cache flushes completed by the block device during the write phase
    /// (/proc/diskstats; device-wide, so it includes other processes' I/O).
    device_flushes: u64,
    /// MiB the block device wrote during the write phase (device-wide).
    device_write_mib: f64,
    /// Process CPU (user+sys, all threads incl. io_uring workers) per GiB written.
    cpu_s_per_gib: f64,
    latency: Latency,
    read_bytes_mb_s: f64,
    /// Engine only: `read` (slice lookup, no data copy).
    read_slice_mb_s: f64,
    read_fetches: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(v: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = v.into_iter().collect();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return Self {
                median: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Self {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    shards: usize,
    policy: String,
    batch_bytes: u64,
    records_per_batch: usize,
    inflight: usize,
    runs: usize,
    engine_mb_s: Spread,
    engine_batches_s: Spread,
    raw_mb_s: Spread,
    /// engine/raw of the paired runs (run i of each).
    ratio: Spread,
    engine_fsyncs: Spread,
    raw_fsyncs: Spread,
    engine_p50_us: Spread,
    engine_p90_us: Spread,
    engine_p99_us: Spread,
    engine_p999_us: Spread,
    engine_max_us: Spread,
    raw_p50_us: Spread,
    raw_p99_us: Spread,
    raw_p999_us: Spread,
    engine_read_bytes_mb_s: Spread,
    engine_read_slice_mb_s: Spread,
    raw_read_mb_s: Spread,
    read_ratio: Spread,
    engine_cpu_s_per_gib: Spread,
    raw_cpu_s_per_gib: Spread,
    engine: Vec<Sample>,
    raw: Vec<Sample>,
}

#[derive(Debug, Serialize)]
struct Report {
    tool: &'static str,
    machine: Machine,
    settings: Settings,
    rows: Vec<Row>,
    total_secs: f64,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    kernel: String,
    filesystem: String,
    device: String,
    loadavg_start: String,
    loadavg_end: String,
}

// ---------------------------------------------------------------- helpers

/// Block the calling (non-runtime) thread on a future.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// A batch template of about `target` bytes made of `target / record_size`
/// records of about `record_size` bytes each (framing included), never
/// larger than `target`.
fn make_template(target: u64, record_size: usize) -> (BytesMut, usize) {
    let count = ((target as usize) / record_size).max(1);
    let mut value = record_size;
    loop {
        let b = batch::sample_batch(count, value, 0);
        if b.len() as u64 <= target || value == 0 {
            return (b, count);
        }
        let over = b.len() - target as usize;
        value = value.saturating_sub(over.div_ceil(count).max(1));
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct DiskStats {
    sectors_written: u64,
    flushes: u64,
}

/// The /proc/diskstats line of the device holding `dir`.
fn disk_line(dir: &Path) -> Option<String> {
    let dev = std::fs::metadata(dir).ok()?.dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let text = std::fs::read_to_string("/proc/diskstats").ok()?;
    text.lines()
        .find(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[0] == maj.to_string() && f[1] == min.to_string()
        })
        .map(str::to_owned)
}

fn disk_stats(dir: &Path) -> DiskStats {
    let Some(line) = disk_line(dir) else {
        return DiskStats::default();
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(3)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    DiskStats {
        sectors_written: f.get(6).copied().unwrap_or(0),
        flushes: f.get(14).copied().unwrap_or(0),
    }
}

fn cpu_secs() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn fs_type(dir: &Path) -> String {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return "?".into();
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "?".into();
    }
    match st.f_type as i64 {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        t => format!("0x{t:x}"),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Let the disk settle after deleting a configuration's files (the
/// filesystem may be mounted with `discard`).
fn settle(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        // SAFETY: valid fd.
        unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
    }
    std::thread::sleep(Duration::from_millis(50));
}

// ---------------------------------------------------------------- engine

struct Job {
    tp: TopicPartition,
    template: BytesMut,
    policy: Policy,
    batches: u64,
    max: Duration,
    inflight: usize,
    probe: Probe,
}

/// What one shard measured.
struct ShardOut {
    start: Instant,
    durable_at: Instant,
    bytes: u64,
    batches: u64,
    fsyncs: u64,
    hist: Histogram<u64>,
}

struct WriterState {
    remaining: Cell<u64>,
    appended: Cell<u64>,
    hist: RefCell<Histogram<u64>>,
    durables: RefCell<HashSet<u64>>,
    waiters: RefCell<Vec<compio::runtime::JoinHandle<()>>>,
    /// Poll probe: (last offset, append start) not yet seen durable.
    polled: RefCell<std::collections::VecDeque<(u64, Instant)>>,
    appending: Cell<usize>,
    error: RefCell<Option<String>>,
}

impl WriterState {
    fn durable(&self, t0: Instant, durable_end: u64) {
        self.hist
            .borrow_mut()
            .saturating_record(t0.elapsed().as_micros() as u64);
        self.durables.borrow_mut().insert(durable_end);
    }
    fn fail(&self, e: impl std::fmt::Display) {
        self.error.borrow_mut().get_or_insert_with(|| e.to_string());
    }
}

type Log = odradek_engine::shard::Log;

async fn appender(
    log: Rc<Log>,
    st: Rc<WriterState>,
    tpl: BytesMut,
    policy: Policy,
    probe: Probe,
    deadline: Instant,
) {
    loop {
        let left = st.remaining.get();
        if left == 0 || st.error.borrow().is_some() || Instant::now() >= deadline {
            break;
        }
        st.remaining.set(left - 1);
        let t0 = Instant::now();
        let info = match log.append(tpl.clone(), 0).await {
            Ok(i) => i,
            Err(e) => {
                st.fail(e);
                break;
            }
        };
        st.appended.set(st.appended.get() + 1);
        if policy == Policy::EveryAppend {
            // acks=all: the appender waits for its own batch to be durable.
            match log.wait_durable(info.last_offset).await {
                Ok(d) => st.durable(t0, d),
                Err(e) => {
                    st.fail(e);
                    break;
                }
            }
        } else if probe == Probe::Poll {
            st.polled.borrow_mut().push_back((info.last_offset, t0));
        } else {
            // Keep appending; a waiter task per batch times append -> durable.
            let (log, st2) = (log.clone(), st.clone());
            let h = compio::runtime::spawn(async move {
                match log.wait_durable(info.last_offset).await {
                    Ok(d) => st2.durable(t0, d),
                    Err(e) => st2.fail(e),
                }
            });
            st.waiters.borrow_mut().push(h);
        }
    }
    st.appending.set(st.appending.get() - 1);
}

/// The poll probe: every millisecond, resolve the appends that became
/// durable. Registers no waiter, so it cannot make the engine flush.
async fn durable_poller(log: Rc<Log>, st: Rc<WriterState>) {
    loop {
        let d = log.durable_end_offset();
        let empty = {
            let mut q = st.polled.borrow_mut();
            while q.front().is_some_and(|&(last, _)| last < d) {
                let (_, t0) = q.pop_front().expect("front");
                st.durable(t0, d);
            }
            q.is_empty()
        };
        let done = empty && st.appending.get() == 0;
        if done || st.error.borrow().is_some() {
            break;
        }
        compio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn engine_write(shard: Rc<Shard>, job: Job) -> Result<ShardOut, String> {
    let batch_len = job.template.len() as u64;
    let config = LogConfig {
        flush: job.policy.engine(),
        max_batch_bytes: LogConfig::default().max_batch_bytes.max(batch_len as usize),
        ..LogConfig::default()
    };
    let (log, _) = shard
        .open_partition(&job.tp, config)
        .await
        .map_err(|e| format!("open {}: {e}", job.tp))?;
    let st = Rc::new(WriterState {
        remaining: Cell::new(job.batches),
        appended: Cell::new(0),
        hist: RefCell::new(new_hist()),
        durables: RefCell::new(HashSet::new()),
        waiters: RefCell::new(Vec::new()),
        polled: RefCell::new(Default::default()),
        appending: Cell::new(job.inflight.max(1)),
        error: RefCell::new(None),
    });

    // Write phase: first append to last byte durable.
    let start = Instant::now();
    let deadline = start + job.max;
    let tasks: Vec<_> = (0..job.inflight.max(1))
        .map(|_| {
            compio::runtime::spawn(appender(
                log.clone(),
                st.clone(),
                job.template.clone(),
                job.policy,
                job.probe,
                deadline,
            ))
        })
        .collect();
    let poller = (job.probe == Probe::Poll && job.policy != Policy::EveryAppend)
        .then(|| compio::runtime::spawn(durable_poller(log.clone(), st.clone())));
    for t in tasks {
        let _ = t.await;
    }
    // The tail under a byte or time policy: one last fdatasync.
    match log.flush().await {
        Ok(d) => {
            if d > 0 {
                st.durables.borrow_mut().insert(d);
            }
        }
        Err(e) => st.fail(e),
    }
    let waiters = std::mem::take(&mut *st.waiters.borrow_mut());
    for w in waiters {
        let _ = w.await;
    }
    if let Some(p) = poller {
        let _ = p.await;
    }
    let durable_at = Instant::now();
    if let Some(e) = st.error.borrow().clone() {
        return Err(e);
    }
    let batches = st.appended.get();
    let hist = st.hist.borrow().clone();
    let fsyncs = st.durables.borrow().len() as u64;
    Ok(ShardOut {
        start,
        durable_at,
        bytes: batches * batch_len,
        batches,
        fsyncs,
        hist,
    })
}

/// Read the whole log of `tp` back in 1 MiB fetches: with `read_bytes`
/// (data copied out of the page cache) or with `read` (the file slice only).
/// Returns (start, end, bytes, fetches).
async fn engine_read(
    shard: Rc<Shard>,
    tp: TopicPartition,
    slices: bool,
    batch_len: u64,
    records_per_batch: u64,
) -> Result<(Instant, Instant, u64, u64), String> {
    let log = shard
        .partition(&tp)
        .ok_or_else(|| format!("{tp} is not open"))?;
    let end = log.log_end_offset();
    let t0 = Instant::now();
    let (mut off, mut bytes, mut fetches) = (0u64, 0u64, 0u64);
    while off < end {
        if slices {
            // Every batch has the same size and record count, so the next
            // offset follows from the slice length.
            let s = log
                .read(off, FETCH_BYTES)
                .await
                .map_err(|e| format!("read at {off}: {e}"))?
                .ok_or_else(|| format!("read at {off} returned nothing"))?;
            if s.len == 0 || s.len % batch_len != 0 {
                return Err(format!(
                    "slice at {off}: length {} is not whole batches",
                    s.len
                ));
            }
            off = s.first_offset + (s.len / batch_len) * records_per_batch;
            bytes += s.len;
        } else {
            let b = log
                .read_bytes(off, FETCH_BYTES)
                .await
                .map_err(|e| format!("read_bytes at {off}: {e}"))?;
            let Some((_, last)) = batch::headers(&b).last() else {
                return Err(format!("read_bytes at {off} returned no batch"));
            };
            off = last.last_offset() as u64 + 1;
            bytes += b.len() as u64;
        }
        fetches += 1;
    }
    Ok((t0, Instant::now(), bytes, fetches))
}

/// Run `f` on the owner shard of every partition at once; wait for all.
fn on_all<T, F, Fut>(pool: &ShardPool, parts: &[TopicPartition], f: F) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(Rc<Shard>, usize, TopicPartition) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = Result<T, String>> + 'static,
{
    let futs: Vec<_> = parts
        .iter()
        .enumerate()
        .map(|(i, tp)| {
            let (f, tp2) = (f.clone(), tp.clone());
            pool.run_on(pool.owner_of(tp), move |sh: Rc<Shard>| f(sh, i, tp2))
        })
        .collect();
    let mut out = Vec::new();
    for fut in futs {
        out.push(block_on(fut).map_err(|e| e.to_string())??);
    }
    Ok(out)
}

fn mb_s(bytes: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / 1e6 / secs
    }
}

/// Span of the union of per-shard intervals.
fn span(iv: impl Iterator<Item = (Instant, Instant)>) -> f64 {
    let (mut lo, mut hi): (Option<Instant>, Option<Instant>) = (None, None);
    for (a, b) in iv {
        lo = Some(lo.map_or(a, |l| l.min(a)));
        hi = Some(hi.map_or(b, |h| h.max(b)));
    }
    match (lo, hi) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    }
}

#[allow(clippy::too_many_arguments)]
fn run_engine(
    pool: &ShardPool,
    parts: &[TopicPartition],
    template: &BytesMut,
    records_per_batch: usize,
    policy: Policy,
    total_batches: u64,
    s: &Settings,
    dir: &Path,
) -> Result<Sample, String> {
    let n = parts.len() as u64;
    let d0 = disk_stats(dir);
    let c0 = cpu_secs();
    let (tpl, max, inflight, probe) = (
        template.clone(),
        Duration::from_secs_f64(s.max_seconds),
        s.inflight,
        s.durable_probe,
    );
    let outs = on_all(pool, parts, move |sh, i, tp| {
        let job = Job {
            tp,
            template: tpl.clone(),
            policy,
            batches: total_batches / n + u64::from((i as u64) < total_batches % n),
            max,
            inflight,
            probe,
        };
        engine_write(sh, job)
    });
    // Disk and CPU counters cover the write phase only.
    let d1 = disk_stats(dir);
    let c1 = cpu_secs();
    let batch_len = template.len() as u64;
    let rpb = records_per_batch as u64;
    let reads = outs.as_ref().ok().map(|_| {
        let rb = on_all(pool, parts, move |sh, _, tp| {
            engine_read(sh, tp, false, batch_len, rpb)
        });
        let rs = on_all(pool, parts, move |sh, _, tp| {
            engine_read(sh, tp, true, batch_len, rpb)
        });
        (rb, rs)
    });
    // Delete the partitions whatever happened.
    let del = on_all(pool, parts, |sh, _, tp| async move {
        sh.delete_partition(&tp)
            .await
            .map(|_| ())
            .map_err(|e| format!("delete {tp}: {e}"))
    });
    let outs = outs?;
    let (rb, rs) = reads.expect("reads ran");
    let (rb, rs) = (rb?, rs?);
    del?;
    let mut hist = new_hist();
    for o in &outs {
        hist.add(&o.hist).map_err(|e| format!("{e:?}"))?;
    }
    let bytes: u64 = outs.iter().map(|o| o.bytes).sum();
    let batches: u64 = outs.iter().map(|o| o.batches).sum();
    let secs = span(outs.iter().map(|o| (o.start, o.durable_at)));
    let rsecs = span(rb.iter().map(|o| (o.0, o.1)));
    let ssecs = span(rs.iter().map(|o| (o.0, o.1)));
    Ok(Sample {
        bytes,
        batches,
        secs,
        mb_s: mb_s(bytes, secs),
        batches_s: batches as f64 / secs.max(1e-9),
        fsyncs: outs.iter().map(|o| o.fsyncs).sum(),
        device_flushes: d1.flushes.saturating_sub(d0.flushes),
        device_write_mib: d1.sectors_written.saturating_sub(d0.sectors_written) as f64 * 512.0
            / MIB as f64,
        cpu_s_per_gib: (c1 - c0) / (bytes as f64 / (1024.0 * MIB as f64)).max(1e-9),
        latency: Latency::of(&hist),
        read_bytes_mb_s: mb_s(rb.iter().map(|o| o.2).sum(), rsecs),
        read_slice_mb_s: mb_s(rs.iter().map(|o| o.2).sum(), ssecs),
        read_fetches: rb.iter().map(|o| o.3).sum(),
    })
}

// ---------------------------------------------------------------- raw

struct RawOut {
    file: File,
    path: PathBuf,
    start: Instant,
    end: Instant,
    bytes: u64,
    batches: u64,
    fsyncs: u64,
    hist: Histogram<u64>,
}

/// pwrite the batch bytes back to back into a fresh file and fdatasync at
/// the policy's cadence (plus once at the end for the tail).
fn raw_write(
    path: PathBuf,
    buf: Arc<Vec<u8>>,
    policy: Policy,
    batches: u64,
    max: Duration,
) -> std::io::Result<RawOut> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let mut hist = new_hist();
    let mut pending: Vec<Instant> = Vec::new();
    let (mut pos, mut unsynced, mut fsyncs, mut written) = (0u64, 0u64, 0u64, 0u64);
    let start = Instant::now();
    let deadline = start + max;
    let mut last_sync = start;
    let sync =
        |pending: &mut Vec<Instant>, hist: &mut Histogram<u64>| -> std::io::Result<Instant> {
            file.sync_data()?;
            let now = Instant::now();
            for t0 in pending.drain(..) {
                hist.saturating_record((now - t0).as_micros() as u64);
            }
            Ok(now)
        };
    while written < batches && Instant::now() < deadline {
        pending.push(Instant::now());
        file.write_all_at(&buf, pos)?;
        pos += buf.len() as u64;
        unsynced += buf.len() as u64;
        written += 1;
        let due = match policy {
            Policy::EveryAppend => true,
            Policy::EveryBytes(b) => unsynced >= b,
            Policy::EveryMs(ms) => last_sync.elapsed() >= Duration::from_millis(ms),
        };
        if due {
            last_sync = sync(&mut pending, &mut hist)?;
            unsynced = 0;
            fsyncs += 1;
        }
    }
    if !pending.is_empty() {
        sync(&mut pending, &mut hist)?;
        fsyncs += 1;
    }
    let end = Instant::now();
    Ok(RawOut {
        file,
        path,
        start,
        end,
        bytes: pos,
        batches: written,
        fsyncs,
        hist,
    })
}

/// pread the file back (page cache), 1 MiB at a time; returns (start, end, bytes, fetches).
fn raw_read(file: &File, len: u64) -> std::io::Result<(Instant, Instant, u64, u64)> {
    let mut chunk = vec![0u8; FETCH_BYTES as usize];
    let t0 = Instant::now();
    let (mut off, mut fetches) = (0u64, 0u64);
    while off < len {
        let want = (len - off).min(FETCH_BYTES) as usize;
        file.read_exact_at(&mut chunk[..want], off)?;
        std::hint::black_box(&chunk);
        off += want as u64;
        fetches += 1;
    }
    Ok((t0, Instant::now(), off, fetches))
}

fn join_all<T>(
    handles: Vec<std::thread::JoinHandle<std::io::Result<T>>>,
) -> Vec<Result<T, String>> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| "raw thread panicked".to_string())?
                .map_err(|e| format!("raw: {e}"))
        })
        .collect()
}

fn run_raw(
    dir: &Path,
    n: usize,
    template: &BytesMut,
    policy: Policy,
    total_batches: u64,
    s: &Settings,
) -> Result<Sample, String> {
    let buf = Arc::new(template.to_vec());
    let d0 = disk_stats(dir);
    let c0 = cpu_secs();
    let max = Duration::from_secs_f64(s.max_seconds);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let path = dir.join(format!("raw-{i}.log"));
            let buf = buf.clone();
            let batches =
                total_batches / n as u64 + u64::from((i as u64) < total_batches % n as u64);
            std::thread::spawn(move || raw_write(path, buf, policy, batches, max))
        })
        .collect();
    let results = join_all(handles);
    let d1 = disk_stats(dir);
    let c1 = cpu_secs();
    // Files that were created are removed whatever happened.
    let mut outs = Vec::new();
    let mut err = None;
    for r in results {
        match r {
            Ok(o) => outs.push(o),
            Err(e) => err = Some(e),
        }
    }
    let reads = if err.is_none() {
        let handles: Vec<_> = outs
            .iter()
            .map(|o| {
                let (f, len) = (o.file.try_clone(), o.bytes);
                std::thread::spawn(move || raw_read(&f?, len))
            })
            .collect();
        join_all(handles).into_iter().collect::<Result<Vec<_>, _>>()
    } else {
        Ok(Vec::new())
    };
    for o in &outs {
        let _ = std::fs::remove_file(&o.path);
    }
    for i in 0..n {
        let _ = std::fs::remove_file(dir.join(format!("raw-{i}.log")));
    }
    if let Some(e) = err {
        return Err(e);
    }
    let reads = reads?;
    let mut hist = new_hist();
    for o in &outs {
        hist.add(&o.hist).map_err(|e| format!("{e:?}"))?;
    }
    let bytes: u64 = outs.iter().map(|o| o.bytes).sum();
    let batches: u64 = outs.iter().map(|o| o.batches).sum();
    let secs = span(outs.iter().map(|o| (o.start, o.end)));
    let rsecs = span(reads.iter().map(|o| (o.0, o.1)));
    Ok(Sample {
        bytes,
        batches,
        secs,
        mb_s: mb_s(bytes, secs),
        batches_s: batches as f64 / secs.max(1e-9),
        fsyncs: outs.iter().map(|o| o.fsyncs).sum(),
        device_flushes: d1.flushes.saturating_sub(d0.flushes),
        device_write_mib: d1.sectors_written.saturating_sub(d0.sectors_written) as f64 * 512.0
            / MIB as f64,
        cpu_s_per_gib: (c1 - c0) / (bytes as f64 / (1024.0 * MIB as f64)).max(1e-9),
        latency: Latency::of(&hist),
        read_bytes_mb_s: mb_s(reads.iter().map(|o| o.2).sum(), rsecs),
        read_slice_mb_s: 0.0,
        read_fetches: reads.iter().map(|o| o.3).sum(),
    })
}

// ---------------------------------------------------------------- driver

fn settings(a: &Args, dir: PathBuf) -> Result<Settings, String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = match &a.shards {
        Some(v) => v
            .iter()
            .map(|s| match s.trim() {
                "all" | "0" => Ok(cpus),
                t => t
                    .parse::<usize>()
                    .map_err(|_| format!("bad shard count {s:?}"))
                    .and_then(|n| {
                        if n == 0 {
                            Err("0 shards".into())
                        } else {
                            Ok(n)
                        }
                    }),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            let mut v = vec![1, cpus];
            v.dedup();
            v
        }
    };
    let (bytes, max_s, sizes, runs) = if a.quick {
        (MIB, 0.5, vec![16 * KIB, MIB], 1)
    } else {
        (256 * MIB, 3.0, vec![16 * KIB, 64 * KIB, 256 * KIB, MIB], 1)
    };
    let policy_list = a.policies.clone().unwrap_or_else(|| {
        vec![
            Policy::EveryAppend,
            Policy::EveryBytes(MIB),
            Policy::EveryBytes(16 * MIB),
            Policy::EveryMs(100),
        ]
    });
    let s = Settings {
        dir,
        bytes_per_run: a.bytes_per_run.unwrap_or(bytes),
        max_seconds: a.max_seconds.unwrap_or(max_s),
        batch_sizes: a.batch_sizes.clone().unwrap_or(sizes),
        policies: policy_list.iter().map(Policy::name).collect(),
        policy_list,
        shards,
        inflight: a.inflight.max(1),
        runs: a.runs.unwrap_or(runs).max(1),
        record_size: a.record_size.max(16),
        durable_probe: a.durable_probe,
        pin: !a.no_pin,
        quick: a.quick,
    };
    if s.batch_sizes.iter().any(|&b| b < 128) {
        return Err("batch sizes must be at least 128 bytes".into());
    }
    Ok(s)
}

type Key = (usize, String, u64);

fn main() {
    if let Err(e) = real_main() {
        eprintln!("odradek-engine-bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    let args = Args::parse();
    let t_start = Instant::now();
    // The data directory: a fresh one under --dir (or the current
    // directory), removed when done, also on error.
    let parent = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("odradek-bench-")
        .tempdir_in(&parent)
        .map_err(|e| format!("temp dir in {}: {e}", parent.display()))?;
    let dir = tmp.path().canonicalize().map_err(|e| e.to_string())?;
    let s = settings(&args, dir.clone())?;
    let fs = fs_type(&dir);
    if fs == "tmpfs" {
        eprintln!(
            "warning: {} is on tmpfs: fdatasync is free there; use --dir on the data disk",
            dir.display()
        );
    }
    let machine = Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        filesystem: fs,
        device: disk_line(&dir)
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
            .unwrap_or_else(|| "?".into()),
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
    };
    eprintln!(
        "odradek-engine-bench: dir {} ({}, {}), {} per configuration (max {}s), inflight {}, runs {}",
        dir.display(),
        machine.filesystem,
        machine.device,
        fmt_size(s.bytes_per_run),
        s.max_seconds,
        s.inflight,
        s.runs
    );

    let templates: Vec<(u64, BytesMut, usize)> = s
        .batch_sizes
        .iter()
        .map(|&b| {
            let (t, c) = make_template(b, s.record_size);
            (b, t, c)
        })
        .collect();

    let mut samples: Vec<(Key, usize, Sample, Sample)> = Vec::new();
    for run in 0..s.runs {
        for &shards in &s.shards {
            let edir = dir.join("engine");
            let mut cfg = ShardConfig::new(&edir);
            cfg.shards = shards;
            cfg.pin = s.pin;
            let pool = ShardPool::start(cfg).map_err(|e| format!("shard pool: {e}"))?;
            // One partition per shard, routed by the pool's own hash.
            let mut parts: Vec<Option<TopicPartition>> = vec![None; shards];
            let mut p = 0;
            while parts.iter().any(Option::is_none) && p < 100_000 {
                let tp = TopicPartition::new("bench", p);
                let o = pool.owner_of(&tp);
                if parts[o].is_none() {
                    parts[o] = Some(tp);
                }
                p += 1;
            }
            let parts: Vec<TopicPartition> = parts.into_iter().flatten().collect();
            for &policy in &s.policy_list {
                for (target, tpl, count) in &templates {
                    let total = (s.bytes_per_run / tpl.len() as u64).max(parts.len() as u64);
                    // Alternate who goes first so drift in the disk's state
                    // does not always favour the same side.
                    let engine_first = run % 2 == 0;
                    let mut eng = None;
                    let mut raw = None;
                    for side in 0..2 {
                        if (side == 0) == engine_first {
                            eng = Some(run_engine(
                                &pool, &parts, tpl, *count, policy, total, &s, &dir,
                            )?);
                        } else {
                            raw = Some(run_raw(&dir, parts.len(), tpl, policy, total, &s)?);
                        }
                        settle(&dir);
                    }
                    let (e, r) = (eng.unwrap(), raw.unwrap());
                    eprintln!(
                        "run {} shards {} {:<14} {:>7}: engine {:>8.1} MB/s p99 {:>7}us fsyncs {:>5} | raw {:>8.1} MB/s fsyncs {:>5} | ratio {:.2}",
                        run + 1,
                        shards,
                        policy.name(),
                        fmt_size(*target),
                        e.mb_s,
                        e.latency.p99_us,
                        e.fsyncs,
                        r.mb_s,
                        r.fsyncs,
                        e.mb_s / r.mb_s.max(1e-9)
                    );
                    samples.push(((shards, policy.name(), *target), *count, e, r));
                }
            }
            pool.shutdown();
        }
    }

    // Aggregate per configuration, in first-seen order.
    let mut keys: Vec<(Key, usize)> = Vec::new();
    for (k, c, _, _) in &samples {
        if !keys.iter().any(|(x, _)| x == k) {
            keys.push((k.clone(), *c));
        }
    }
    let rows: Vec<Row> = keys
        .into_iter()
        .map(|(k, count)| {
            let mine: Vec<&(Key, usize, Sample, Sample)> =
                samples.iter().filter(|x| x.0 == k).collect();
            let e: Vec<Sample> = mine.iter().map(|x| x.2.clone()).collect();
            let r: Vec<Sample> = mine.iter().map(|x| x.3.clone()).collect();
            let sp = |f: &dyn Fn(&Sample) -> f64, v: &[Sample]| Spread::of(v.iter().map(f));
            Row {
                shards: k.0,
                policy: k.1.clone(),
                batch_bytes: k.2,
                records_per_batch: count,
                inflight: s.inflight,
                runs: e.len(),
                engine_mb_s: sp(&|x| x.mb_s, &e),
                engine_batches_s: sp(&|x| x.batches_s, &e),
                raw_mb_s: sp(&|x| x.mb_s, &r),
                ratio: Spread::of(e.iter().zip(&r).map(|(a, b)| a.mb_s / b.mb_s.max(1e-9))),
                engine_fsyncs: sp(&|x| x.fsyncs as f64, &e),
                raw_fsyncs: sp(&|x| x.fsyncs as f64, &r),
                engine_p50_us: sp(&|x| x.latency.p50_us as f64, &e),
                engine_p90_us: sp(&|x| x.latency.p90_us as f64, &e),
                engine_p99_us: sp(&|x| x.latency.p99_us as f64, &e),
                engine_p999_us: sp(&|x| x.latency.p999_us as f64, &e),
                engine_max_us: sp(&|x| x.latency.max_us as f64, &e),
                raw_p50_us: sp(&|x| x.latency.p50_us as f64, &r),
                raw_p99_us: sp(&|x| x.latency.p99_us as f64, &r),
                raw_p999_us: sp(&|x| x.latency.p999_us as f64, &r),
                engine_read_bytes_mb_s: sp(&|x| x.read_bytes_mb_s, &e),
                engine_read_slice_mb_s: sp(&|x| x.read_slice_mb_s, &e),
                raw_read_mb_s: sp(&|x| x.read_bytes_mb_s, &r),
                read_ratio: Spread::of(
                    e.iter()
                        .zip(&r)
                        .map(|(a, b)| a.read_bytes_mb_s / b.read_bytes_mb_s.max(1e-9)),
                ),
                engine_cpu_s_per_gib: sp(&|x| x.cpu_s_per_gib, &e),
                raw_cpu_s_per_gib: sp(&|x| x.cpu_s_per_gib, &r),
                engine: e,
                raw: r,
            }
        })
        .collect();

    print_tables(&rows, &s);
    let mut machine = machine;
    machine.loadavg_end = loadavg();
    let report = Report {
        tool: "odradek-engine-bench",
        machine,
        settings: s,
        rows,
        total_secs: t_start.elapsed().as_secs_f64(),
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    tmp.close()
        .map_err(|e| format!("removing {}: {e}", dir.display()))?;
    eprintln!("done in {:.1}s", report.total_secs);
    Ok(())
}

fn fmt_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.1}ms", us / 1e3)
    } else {
        format!("{us:.0}us")
    }
}

/// `median` or `median (min-max)` when there was more than one run.
fn fmt_spread(sp: &Spread, runs: usize, prec: usize) -> String {
    if runs > 1 {
        format!(
            "{:.p$} ({:.p$}-{:.p$})",
            sp.median,
            sp.min,
            sp.max,
            p = prec
        )
    } else {
        format!("{:.p$}", sp.median, p = prec)
    }
}

fn print_tables(rows: &[Row], s: &Settings) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nWRITE: durable throughput (first append -> last byte durable); {} run(s), median (min-max); latency = append -> durable, median of runs",
        s.runs
    );
    let _ = writeln!(
        out,
        "{:>6} {:<15} {:>7} {:>22} {:>10} {:>22} {:>18} {:>8} {:>8} {:>8} {:>8} {:>13}",
        "shards",
        "policy",
        "batch",
        "engine MB/s",
        "batches/s",
        "raw MB/s",
        "engine/raw",
        "p50",
        "p99",
        "p99.9",
        "max",
        "fsyncs e/raw"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>6} {:<15} {:>7} {:>22} {:>10.0} {:>22} {:>18} {:>8} {:>8} {:>8} {:>8} {:>13}",
            r.shards,
            r.policy,
            fmt_size(r.batch_bytes),
            fmt_spread(&r.engine_mb_s, r.runs, 1),
            r.engine_batches_s.median,
            fmt_spread(&r.raw_mb_s, r.runs, 1),
            fmt_spread(&r.ratio, r.runs, 2),
            fmt_us(r.engine_p50_us.median),
            fmt_us(r.engine_p99_us.median),
            fmt_us(r.engine_p999_us.median),
            fmt_us(r.engine_max_us.median),
            format!("{:.0}/{:.0}", r.engine_fsyncs.median, r.raw_fsyncs.median),
        );
    }
    let _ = writeln!(
        out,
        "\nREAD: whole log back in {} fetches from the page cache, MB/s median (min-max)",
        fmt_size(FETCH_BYTES)
    );
    let _ = writeln!(
        out,
        "{:>6} {:<15} {:>7} {:>24} {:>24} {:>24} {:>18}",
        "shards",
        "policy",
        "batch",
        "engine read_bytes",
        "engine read (slice)",
        "raw pread",
        "read_bytes/raw"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>6} {:<15} {:>7} {:>24} {:>24} {:>24} {:>18}",
            r.shards,
            r.policy,
            fmt_size(r.batch_bytes),
            fmt_spread(&r.engine_read_bytes_mb_s, r.runs, 0),
            fmt_spread(&r.engine_read_slice_mb_s, r.runs, 0),
            fmt_spread(&r.raw_read_mb_s, r.runs, 0),
            fmt_spread(&r.read_ratio, r.runs, 2),
        );
    }
}
