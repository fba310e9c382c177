//! The report: table, JSON, SVG picture, progress line.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use crate::client::Topology;
use crate::stats::{latency, Latency, Side, Stats, Tick};
use crate::{Args, Compression};

#[derive(serde::Serialize, Default, Clone)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    pub cpu_model: String,
    /// 1/5/15-minute load averages before and after the run.
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    /// Share of all CPUs' time after the warm-up (the timeline's, weighted
    /// by tick length) that was busy (user, system, interrupts), and that the
    /// hypervisor took (steal): on a shared VM a latency spike with steal
    /// beside it is the machine's, not the broker's.
    pub cpu_busy_pct: Option<f64>,
    pub cpu_steal_pct: Option<f64>,
    /// The longest time after the warm-up the tool's once-a-second ticker
    /// (a thread of its own) ran late: its interval minus 1 s. Seconds here
    /// mean the benchmark process did not run (the machine or VM stalled,
    /// or the process was stopped), whatever the broker did.
    pub tool_stall_s: f64,
    /// The longest time after the warm-up the tool's async runtime (its
    /// producers, consumers and connections) ran no task while its ticker
    /// thread ran: a stall inside the tool, not of the machine.
    pub runtime_stall_s: f64,
}

#[derive(serde::Serialize, Clone)]
pub struct SideReport {
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// 10^6 bytes of message values per second.
    pub mb_per_s: f64,
    pub msgs_per_s: f64,
    /// produce: produce -> ack (from the scheduled send time); consume:
    /// end to end (scheduled send time -> fetched).
    pub latency: Option<Latency>,
    /// All messages incl. warm-up.
    pub messages_total: u64,
    /// RecordBatch bytes of all messages incl. warm-up, as sent or fetched
    /// (compressed size with `--compression`).
    pub wire_bytes_total: u64,
    pub errors: u64,
}

/// Machine limits, measured after the run on the same disk and loopback.
#[derive(serde::Serialize, Clone)]
pub struct Baseline {
    /// Write size (= --batch-size, 4 KiB..8 MiB).
    pub chunk_bytes: u64,
    /// pwrite back to back, one fdatasync at the end (page cache speed).
    pub disk_nosync_mb_per_s: f64,
    pub disk_nosync_bytes: u64,
    /// pwrite back to back, fdatasync + `POSIX_FADV_DONTNEED` every 16 MiB:
    /// the page cache recycled, as the broker's cache window does (acks=1's
    /// bound on a machine where fresh pages are dear).
    pub disk_recycled_mb_per_s: f64,
    pub disk_recycled_bytes: u64,
    /// pwrite back to back while another thread loops fdatasync: the
    /// broker's group commit (default flush policy: every append).
    pub disk_group_commit_mb_per_s: f64,
    pub disk_group_commit_bytes: u64,
    pub disk_group_commit_fsyncs: u64,
    /// acks=all only: fdatasync after every batch-size bytes.
    pub disk_fsync_per_batch_mb_per_s: Option<f64>,
    pub disk_fsync_per_batch_bytes: Option<u64>,
    /// One connection, 1 MiB writes, 3 s.
    pub loopback_tcp_mb_per_s: f64,
    pub produce_vs_disk_nosync: f64,
    pub produce_vs_disk_recycled: f64,
    pub produce_vs_disk_group_commit: f64,
    pub produce_vs_disk_fsync_per_batch: Option<f64>,
    pub produce_vs_loopback: f64,
    pub consume_vs_loopback: f64,
}

#[derive(serde::Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub broker: String,
    pub settings: Args,
    pub partitions_total: usize,
    pub produce_api_version: i16,
    pub fetch_api_version: i16,
    pub warmup_s: f64,
    pub wall_s: f64,
    pub machine: Machine,
    pub produce: SideReport,
    /// Where produce latency goes (see `stats::ProduceBreakdown`); absent
    /// with acks=0 and for what was not measured.
    pub produce_breakdown: ProduceBreakdownReport,
    pub consume: SideReport,
    pub sent_messages: u64,
    /// Open loop: scheduled before the end but never sent (the producers
    /// were held back by full windows; see `stats::Stats::unsent`).
    pub unsent_messages: u64,
    pub consume_expected: Option<u64>,
    pub broker_cpu_s: Option<f64>,
    pub client_cpu_s: f64,
    /// CPU seconds per GB (10^9 bytes) produced + consumed.
    pub broker_cpu_s_per_gb: Option<f64>,
    pub client_cpu_s_per_gb: Option<f64>,
    /// Minor page faults of the client during the run (see
    /// `self_minor_faults`): fresh memory it touched.
    pub client_minor_faults: u64,
    pub baseline: Option<Baseline>,
    /// The broker's own Produce handling time after the warm-up (an
    /// Odradek broker's metrics, see `broker_metrics`).
    pub broker_produce: Option<crate::broker_metrics::BrokerLatency>,
    /// The broker's fdatasyncs and log writes after the warm-up (an
    /// Odradek broker's metrics).
    pub broker_disk: Option<crate::broker_metrics::BrokerDisk>,
    pub timeline: Vec<Tick>,
}

#[derive(serde::Serialize, Clone)]
pub struct ProduceBreakdownReport {
    /// Batches: closed after they were due (the generator's own delay).
    pub batch_late: Option<Latency>,
    /// Batches: waiting in the client for a request slot.
    pub batch_queued: Option<Latency>,
    /// Produce requests: written → answered (network and broker).
    pub request_round_trip: Option<Latency>,
    /// The producers' longest loop pass without a wait, and the longest
    /// time making messages and sending requests in one (ms, whole run;
    /// see `stats::ProduceBreakdown::pass_max_ns`).
    pub producer_pass_max_ms: f64,
    pub producer_generate_max_ms: f64,
    pub producer_send_max_ms: f64,
    /// The most batches one connection's queue held (whole run).
    pub queued_max_batches: u64,
}

pub struct Extra {
    pub produce_version: i16,
    pub fetch_version: i16,
    pub warmup_s: f64,
    pub wall_s: f64,
    pub broker_cpu_s: Option<f64>,
    pub client_cpu_s: f64,
    pub broker: String,
    pub consume_expected: Option<u64>,
    pub broker_produce: Option<crate::broker_metrics::BrokerLatency>,
    pub broker_disk: Option<crate::broker_metrics::BrokerDisk>,
    pub client_minor_faults: u64,
}

/// ", N replicas" when the run asked for a replication factor.
fn replicas(s: &Args) -> String {
    match s.replication_factor {
        n if n > 0 => format!(", {n} replicas"),
        _ => String::new(),
    }
}

fn side(s: &Side) -> SideReport {
    let msgs = s.msgs.load(Relaxed);
    let bytes = s.bytes.load(Relaxed);
    let first = s.first_ns.load(Relaxed);
    let last = s.last_ns.load(Relaxed);
    let seconds = if msgs > 0 && last > first {
        (last - first) as f64 / 1e9
    } else {
        0.0
    };
    let h = s.hist.lock().unwrap();
    SideReport {
        messages: msgs,
        bytes,
        seconds,
        mb_per_s: if seconds > 0.0 {
            bytes as f64 / 1e6 / seconds
        } else {
            0.0
        },
        msgs_per_s: if seconds > 0.0 {
            msgs as f64 / seconds
        } else {
            0.0
        },
        latency: latency(&h),
        messages_total: s.all_msgs.load(Relaxed),
        wire_bytes_total: s.wire_bytes.load(Relaxed),
        errors: s.errors.load(Relaxed),
    }
}

pub fn loadavg() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = s
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    [
        v.first().copied().unwrap_or(0.0),
        v.get(1).copied().unwrap_or(0.0),
        v.get(2).copied().unwrap_or(0.0),
    ]
}

/// The `cpu` line of /proc/stat: jiffies of all CPUs since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    busy: u64,
    idle: u64,
    steal: u64,
}

/// What the CPUs did between two [`CpuTimes`], in percent of their time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuShare {
    pub busy_pct: f64,
    pub steal_pct: f64,
}

impl CpuTimes {
    pub fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal (guest time is
        // already in user and nice)
        let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = v[..] else {
            return None;
        };
        Some(Self {
            busy: user + nice + system + irq + softirq,
            idle: idle + iowait,
            steal,
        })
    }

    /// The share since `earlier`; `None` if no time passed (or the
    /// counters went back).
    pub fn since(&self, earlier: &Self) -> Option<CpuShare> {
        let busy = self.busy.checked_sub(earlier.busy)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        let steal = self.steal.checked_sub(earlier.steal)?;
        let total = (busy + idle + steal) as f64;
        (total > 0.0).then(|| CpuShare {
            busy_pct: 100.0 * busy as f64 / total,
            steal_pct: 100.0 * steal as f64 / total,
        })
    }
}

/// Mean of the timeline after the warm-up, each tick weighted by its length
/// (a tick after a stall stands for all of it).
fn mean_after_warmup(tl: &[Tick], f: impl Fn(&Tick) -> Option<f64>) -> Option<f64> {
    let (sum, time) = tl
        .iter()
        .filter(|t| !t.warmup)
        .filter_map(|t| f(t).map(|v| (v * t.interval_s, t.interval_s)))
        .fold((0.0, 0.0), |(s, w), (v, i)| (s + v, w + i));
    (time > 0.0).then(|| sum / time)
}

fn ms(ns: &std::sync::atomic::AtomicU64) -> f64 {
    ns.load(Relaxed) as f64 / 1e6
}

/// See [`Machine::tool_stall_s`].
fn tool_stall_s(tl: &[Tick]) -> f64 {
    tl.iter()
        .filter(|t| !t.warmup)
        .map(|t| t.interval_s - 1.0)
        .fold(0.0, f64::max)
}

/// See [`Machine::runtime_stall_s`].
fn runtime_stall_s(tl: &[Tick]) -> f64 {
    tl.iter()
        .filter(|t| !t.warmup)
        .map(|t| t.runtime_lag_ms / 1e3)
        .fold(0.0, f64::max)
}

/// Runs whose tool stalled this long are flagged in the table.
const STALL_WARN_S: f64 = 0.5;

/// This process's resource usage so far.
fn rusage() -> libc::rusage {
    // SAFETY: getrusage fills the zeroed struct.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    }
}

/// Page faults this process took so far that needed no I/O (its first
/// touches of fresh memory, mostly).
pub fn self_minor_faults() -> u64 {
    rusage().ru_minflt.max(0) as u64
}

/// User + system CPU seconds of this process so far.
pub fn self_cpu() -> f64 {
    let ru = rusage();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpu_model,
        ..Default::default()
    }
}

impl Report {
    pub fn build(
        args: &Args,
        topo: &Topology,
        stats: &Stats,
        timeline: Vec<Tick>,
        x: Extra,
    ) -> Self {
        let produce = side(&stats.produce);
        let consume = side(&stats.consume);
        let gb = (produce.bytes + consume.bytes) as f64 / 1e9;
        Self {
            tool: "odradek-bench",
            version: env!("CARGO_PKG_VERSION"),
            broker: x.broker,
            settings: args.clone(),
            partitions_total: topo.parts.len(),
            produce_api_version: x.produce_version,
            fetch_api_version: x.fetch_version,
            warmup_s: x.warmup_s,
            wall_s: x.wall_s,
            machine: Machine {
                cpu_busy_pct: mean_after_warmup(&timeline, |t| t.cpu_busy_pct),
                cpu_steal_pct: mean_after_warmup(&timeline, |t| t.cpu_steal_pct),
                tool_stall_s: tool_stall_s(&timeline),
                runtime_stall_s: runtime_stall_s(&timeline),
                ..machine()
            },
            produce,
            produce_breakdown: ProduceBreakdownReport {
                batch_late: latency(&stats.breakdown.late.lock().unwrap()),
                batch_queued: latency(&stats.breakdown.queued.lock().unwrap()),
                request_round_trip: latency(&stats.breakdown.round_trip.lock().unwrap()),
                producer_pass_max_ms: ms(&stats.breakdown.pass_max_ns),
                producer_generate_max_ms: ms(&stats.breakdown.generate_max_ns),
                producer_send_max_ms: ms(&stats.breakdown.send_max_ns),
                queued_max_batches: stats.breakdown.queued_max.load(Relaxed),
            },
            consume,
            sent_messages: stats.sent.load(Relaxed),
            unsent_messages: stats.unsent.load(Relaxed),
            consume_expected: x.consume_expected,
            broker_cpu_s: x.broker_cpu_s,
            client_cpu_s: x.client_cpu_s,
            broker_cpu_s_per_gb: x.broker_cpu_s.filter(|_| gb > 0.0).map(|c| c / gb),
            client_cpu_s_per_gb: (gb > 0.0).then(|| x.client_cpu_s / gb),
            client_minor_faults: x.client_minor_faults,
            baseline: None,
            broker_produce: x.broker_produce,
            broker_disk: x.broker_disk,
            timeline,
        }
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

pub fn progress_line(t: &Tick) -> String {
    format!(
        "{:6.1}s{} produce {:8.1} MB/s {:9.0} msg/s ack p50 {} p99 {} ms | consume {:8.1} MB/s {:9.0} msg/s e2e p50 {} p99 {} ms | CPU steal {} % | tool runtime lag {:.0} ms",
        t.t_s,
        if t.warmup { " (warm-up)" } else { "" },
        t.produce_mb_s,
        t.produce_msgs_s,
        opt_ms(t.ack_p50_ms),
        opt_ms(t.ack_p99_ms),
        t.consume_mb_s,
        t.consume_msgs_s,
        opt_ms(t.e2e_p50_ms),
        opt_ms(t.e2e_p99_ms),
        opt_pct(t.cpu_steal_pct),
        t.runtime_lag_ms,
    )
}

pub fn print(r: &Report) {
    let s = &r.settings;
    println!();
    println!(
        "odradek-bench: {} | {} topic(s) x {} partition(s){}, {} producer(s), {} consumer(s), {} B messages, keys {:?}, acks {}, batch {} B, linger {} ms, rate {}",
        r.broker,
        s.topics,
        r.partitions_total / s.topics.max(1),
        replicas(s),
        s.producers,
        s.consumers,
        s.message_size,
        s.keys,
        s.acks.as_str(),
        s.batch_size,
        s.linger_ms,
        s.rate.map_or("max".into(), |x| format!("{x} msg/s")),
    );
    println!(
        "load average before {:.2} {:.2} {:.2}, after {:.2} {:.2} {:.2} ({} CPUs); after warm-up CPUs busy {} %, stolen {} %",
        r.machine.load_before[0],
        r.machine.load_before[1],
        r.machine.load_before[2],
        r.machine.load_after[0],
        r.machine.load_after[1],
        r.machine.load_after[2],
        r.machine.cpus,
        opt_pct(r.machine.cpu_busy_pct),
        opt_pct(r.machine.cpu_steal_pct),
    );
    if r.machine.runtime_stall_s >= STALL_WARN_S {
        println!(
            "warning: the benchmark's async runtime ran no task for {:.1} s after the warm-up (a stall inside the tool); the numbers below include it",
            r.machine.runtime_stall_s
        );
    }
    if r.machine.tool_stall_s >= STALL_WARN_S {
        println!(
            "warning: this benchmark's process did not run for {:.1} s after the warm-up (the machine stalled?); the numbers below include it",
            r.machine.tool_stall_s
        );
    }
    if r.unsent_messages > 0 {
        println!(
            "warning: the producers fell behind the schedule: {} messages due before the end were never sent (their windows were full); the latencies below are the sent messages'",
            r.unsent_messages
        );
    }
    println!(
        "{:<26} {:>10} {:>12} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "",
        "MB/s",
        "msgs/s",
        "messages",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "p99.99 ms",
        "max ms"
    );
    let row = |name: &str, rate: Option<(f64, f64)>, count: u64, l: Option<&Latency>| {
        let f = |g: fn(&Latency) -> f64| l.map_or("-".to_string(), |l| format!("{:.2}", g(l)));
        let (mb, msgs) = rate.map_or(("".into(), "".into()), |(mb, m)| {
            (format!("{mb:.1}"), format!("{m:.0}"))
        });
        println!(
            "{:<26} {:>10} {:>12} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}",
            name,
            mb,
            msgs,
            count,
            f(|l| l.p50_ms),
            f(|l| l.p90_ms),
            f(|l| l.p99_ms),
            f(|l| l.p99_9_ms),
            f(|l| l.p99_99_ms),
            f(|l| l.max_ms),
        );
    };
    let side_row = |name: &str, s: &SideReport| {
        row(
            name,
            Some((s.mb_per_s, s.msgs_per_s)),
            s.messages,
            s.latency.as_ref(),
        )
    };
    side_row("produce (lat: ->ack)", &r.produce);
    let b = &r.produce_breakdown;
    for (name, l) in [
        ("  batch late (client)", &b.batch_late),
        ("  batch queued (client)", &b.batch_queued),
        ("  request round trip", &b.request_round_trip),
    ] {
        if let Some(l) = l {
            row(name, None, l.count, Some(l));
        }
    }
    if let Some(l) = &r.broker_produce {
        let le = |v: Option<f64>| v.map_or("above its buckets".into(), |v| format!("≤ {v} ms"));
        println!(
            "  broker's own Produce time (its metrics, after warm-up; bucket bounds): p50 {}, p90 {}, p99 {}, p99.9 {} ({} requests)",
            le(l.p50_le_ms),
            le(l.p90_le_ms),
            le(l.p99_le_ms),
            le(l.p99_9_le_ms),
            l.requests
        );
    }
    if let Some(d) = &r.broker_disk {
        println!(
            "  broker's disk after warm-up: {} fdatasyncs, {} log writes carrying {} record sets",
            d.fsyncs, d.log_writes, d.log_sets_written
        );
        if let (Some(inline), Some(io_wq)) =
            (d.writes_during_sync_inline, d.writes_during_sync_io_wq)
        {
            println!(
                "  writes during an fdatasync of their file: {inline} inline, {io_wq} on io-wq ({} switches to io-wq)",
                d.sync_write_handoffs.unwrap_or(0)
            );
        }
    }
    side_row("consume (lat: end-to-end)", &r.consume);
    println!(
        "all messages: sent {}, acked {}, consumed {}{}; errors: produce {}, consume {}",
        r.sent_messages,
        r.produce.messages_total,
        r.consume.messages_total,
        r.consume_expected
            .map_or(String::new(), |e| format!(" (expected {e})")),
        r.produce.errors,
        r.consume.errors
    );
    if r.settings.compression != Compression::None {
        let wire = |s: &SideReport| {
            let values = s.messages_total * r.settings.message_size;
            format!(
                "{:.1} MB ({:.2} of the values)",
                s.wire_bytes_total as f64 / 1e6,
                s.wire_bytes_total as f64 / values.max(1) as f64
            )
        };
        println!(
            "{} batches on the wire: produced {}, fetched {}",
            r.settings.compression.as_str(),
            wire(&r.produce),
            wire(&r.consume)
        );
    }
    println!(
        "CPU: client {:.2} s{} ({} minor page faults){}",
        r.client_cpu_s,
        r.client_cpu_s_per_gb
            .map_or(String::new(), |x| format!(" ({x:.2} s/GB)")),
        r.client_minor_faults,
        r.broker_cpu_s.map_or(String::new(), |b| format!(
            ", broker {b:.2} s{}",
            r.broker_cpu_s_per_gb
                .map_or(String::new(), |x| format!(" ({x:.2} s/GB)"))
        )),
    );
    if let Some(b) = &r.baseline {
        println!(
            "baseline ({} B writes): disk no fsync {:.1} MB/s, disk recycled cache {:.1} MB/s, disk group commit {:.1} MB/s ({} fdatasyncs){}, loopback TCP {:.1} MB/s",
            b.chunk_bytes,
            b.disk_nosync_mb_per_s,
            b.disk_recycled_mb_per_s,
            b.disk_group_commit_mb_per_s,
            b.disk_group_commit_fsyncs,
            b.disk_fsync_per_batch_mb_per_s
                .map_or(String::new(), |x| format!(", fdatasync per batch {x:.1} MB/s")),
            b.loopback_tcp_mb_per_s
        );
        println!(
            "ratios: produce/disk-nosync {:.2}, produce/disk-recycled {:.2}, produce/disk-group-commit {:.2}{}, produce/loopback {:.2}, consume/loopback {:.2}",
            b.produce_vs_disk_nosync,
            b.produce_vs_disk_recycled,
            b.produce_vs_disk_group_commit,
            b.produce_vs_disk_fsync_per_batch
                .map_or(String::new(), |x| format!(", produce/fsync-per-batch {x:.2}")),
            b.produce_vs_loopback,
            b.consume_vs_loopback
        );
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Two panels: throughput per second over time; p50/p99 latency per second
/// over time (log scale), with the run's percentiles as text.
pub fn svg(r: &Report) -> String {
    let (w, h) = (900.0, 620.0);
    let (l, rgt) = (70.0, 20.0);
    let pw = w - l - rgt;
    let (t1, h1) = (62.0, 210.0);
    let (t2, h2) = (330.0, 200.0);
    let tl = &r.timeline;
    let tmax = tl.iter().map(|t| t.t_s).fold(1.0, f64::max);
    let x = |t: f64| l + pw * t / tmax;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let st = &r.settings;
    let title = format!("odradek-bench against {}", r.broker);
    let settings = format!(
        "{} topic(s) x {} partition(s){}, {} producer(s), {} consumer(s), {} B messages, acks {}, batch {} B, linger {} ms, rate {}",
        st.topics,
        r.partitions_total / st.topics.max(1),
        replicas(st),
        st.producers,
        st.consumers,
        st.message_size,
        st.acks.as_str(),
        st.batch_size,
        st.linger_ms,
        st.rate.map_or("max".into(), |x| format!("{x} msg/s"))
    );
    let _ = writeln!(
        s,
        r#"<text x="{l}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        esc(&title)
    );
    let _ = writeln!(s, r#"<text x="{l}" y="34">{}</text>"#, esc(&settings));
    let _ = writeln!(
        s,
        r#"<text x="{l}" y="50">load average before {:.2}, after {:.2} ({} CPUs); CPU time stolen by the host {} %; shaded = warm-up</text>"#,
        r.machine.load_before[0],
        r.machine.load_after[0],
        r.machine.cpus,
        opt_pct(r.machine.cpu_steal_pct)
    );
    // panel 1: throughput
    let ymax = tl
        .iter()
        .map(|t| t.produce_mb_s.max(t.consume_mb_s))
        .fold(1.0, f64::max)
        * 1.1;
    let y1 = |v: f64| t1 + h1 - h1 * v / ymax;
    let _ = writeln!(
        s,
        r##"<rect x="{l}" y="{t1}" width="{pw}" height="{h1}" fill="none" stroke="#888"/>"##
    );
    if r.warmup_s > 0.0 {
        let _ = writeln!(
            s,
            r##"<rect x="{l}" y="{t1}" width="{:.1}" height="{h1}" fill="#eee"/>"##,
            (x(r.warmup_s) - l).max(0.0)
        );
    }
    for i in 0..=4 {
        let v = ymax * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}</text><line x1="{l}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            l - 5.0,
            y1(v) + 4.0,
            v,
            l + pw,
            y1(v),
            y1(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="15" y="{:.1}" transform="rotate(-90 15 {:.1})" text-anchor="middle">MB/s</text>"#,
        t1 + h1 / 2.0,
        t1 + h1 / 2.0
    );
    let line = |s: &mut String, pts: Vec<(f64, f64)>, color: &str| {
        if pts.is_empty() {
            return;
        }
        let p: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            p.join(" ")
        );
    };
    line(
        &mut s,
        tl.iter().map(|t| (x(t.t_s), y1(t.produce_mb_s))).collect(),
        "#1f77b4",
    );
    line(
        &mut s,
        tl.iter().map(|t| (x(t.t_s), y1(t.consume_mb_s))).collect(),
        "#ff7f0e",
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" fill="#1f77b4">produce {:.0} MB/s</text><text x="{:.1}" y="{:.1}" fill="#ff7f0e">consume {:.0} MB/s</text>"##,
        l + 10.0,
        t1 + 16.0,
        r.produce.mb_per_s,
        l + 170.0,
        t1 + 16.0,
        r.consume.mb_per_s
    );
    // panel 2: latency per second, log scale
    let vals: Vec<f64> = tl
        .iter()
        .flat_map(|t| [t.ack_p50_ms, t.ack_p99_ms, t.e2e_p50_ms, t.e2e_p99_ms])
        .flatten()
        .filter(|v| *v > 0.0)
        .collect();
    // no latency at all (a consume-only run over a backlog): an empty
    // 1–10 ms panel, not an axis from f64::MAX to infinity
    let lo = if vals.is_empty() {
        1.0
    } else {
        vals.iter().copied().fold(f64::MAX, f64::min).max(0.001)
    };
    let hi = vals.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (llo, lhi) = (lo.log10().floor(), hi.log10().ceil());
    let y2 = |v: f64| t2 + h2 - h2 * (v.max(lo).log10() - llo) / (lhi - llo).max(1.0);
    let _ = writeln!(
        s,
        r##"<rect x="{l}" y="{t2}" width="{pw}" height="{h2}" fill="none" stroke="#888"/>"##
    );
    if r.warmup_s > 0.0 {
        let _ = writeln!(
            s,
            r##"<rect x="{l}" y="{t2}" width="{:.1}" height="{h2}" fill="#eee"/>"##,
            (x(r.warmup_s) - l).max(0.0)
        );
    }
    let mut e = llo;
    while e <= lhi {
        let v = 10f64.powf(e);
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><line x1="{l}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            l - 5.0,
            y2(v) + 4.0,
            if v < 1.0 {
                format!("{v}")
            } else {
                format!("{v:.0}")
            },
            l + pw,
            y2(v),
            y2(v)
        );
        e += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="15" y="{:.1}" transform="rotate(-90 15 {:.1})" text-anchor="middle">latency ms (per second)</text>"#,
        t2 + h2 / 2.0,
        t2 + h2 / 2.0
    );
    for (get, color, dash) in [
        (
            (|t: &Tick| t.ack_p50_ms) as fn(&Tick) -> Option<f64>,
            "#1f77b4",
            "4,3",
        ),
        (|t: &Tick| t.ack_p99_ms, "#1f77b4", ""),
        (|t: &Tick| t.e2e_p50_ms, "#ff7f0e", "4,3"),
        (|t: &Tick| t.e2e_p99_ms, "#ff7f0e", ""),
    ] {
        let pts: Vec<String> = tl
            .iter()
            .filter_map(|t| get(t).map(|v| format!("{:.1},{:.1}", x(t.t_s), y2(v))))
            .collect();
        if !pts.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>"#,
                pts.join(" ")
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}">dashed p50, solid p99; <tspan fill="#1f77b4">produce→ack</tspan>, <tspan fill="#ff7f0e">end to end</tspan></text>"##,
        l + 10.0,
        t2 + 16.0
    );
    for i in 0..=5 {
        let t = tmax * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0} s</text>"#,
            x(t),
            t2 + h2 + 16.0,
            t
        );
    }
    // percentiles as text
    let mut y = t2 + h2 + 45.0;
    for (name, sr) in [("produce→ack", &r.produce), ("end to end", &r.consume)] {
        if let Some(lt) = &sr.latency {
            let _ = writeln!(
                s,
                r#"<text x="{l}" y="{y:.1}">{name} (whole run, ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  p99.99 {:.2}  max {:.2}</text>"#,
                lt.p50_ms, lt.p90_ms, lt.p99_ms, lt.p99_9_ms, lt.p99_99_ms, lt.max_ms
            );
            y += 18.0;
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str =
        "cpu  100 5 50 800 20 3 2 20 7 0\ncpu0 50 2 25 400 10 1 1 10 0 0\nintr 1 2\n";

    #[test]
    fn cpu_times_split_busy_idle_and_steal_from_the_all_cpus_line() {
        let t = CpuTimes::parse(STAT).expect("parses");
        assert_eq!(
            t,
            CpuTimes {
                busy: 160,
                idle: 820,
                steal: 20
            }
        );
        let later = CpuTimes::parse("cpu  200 5 100 850 20 3 2 70 0 0\n").expect("parses");
        // 150 busy, 50 idle, 50 stolen jiffies of 250
        let share = later.since(&t).expect("time passed");
        assert!((share.busy_pct - 60.0).abs() < 1e-9, "{share:?}");
        assert!((share.steal_pct - 20.0).abs() < 1e-9, "{share:?}");
        assert_eq!(t.since(&t), None, "no time passed");
        assert_eq!(t.since(&later), None, "counters went back");
    }

    #[test]
    fn cpu_times_refuse_short_or_garbled_lines() {
        assert_eq!(CpuTimes::parse("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 x 4 5 6 7 8\n"), None);
        assert_eq!(CpuTimes::parse("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(CpuTimes::parse(""), None);
    }

    #[test]
    fn the_machine_share_is_the_time_weighted_mean_after_the_warm_up() {
        let tick = |warmup, interval_s, cpu_steal_pct| Tick {
            warmup,
            interval_s,
            cpu_steal_pct,
            ..Tick::default()
        };
        let tl = [
            tick(true, 1.0, Some(90.0)),
            tick(false, 1.0, Some(10.0)),
            tick(false, 1.0, None),
            tick(false, 3.0, Some(30.0)),
        ];
        // (10 * 1 + 30 * 3) / 4
        assert_eq!(mean_after_warmup(&tl, |t| t.cpu_steal_pct), Some(25.0));
        assert_eq!(mean_after_warmup(&tl[..1], |t| t.cpu_steal_pct), None);
    }

    #[test]
    fn a_late_tick_after_the_warm_up_is_the_tool_stall() {
        let tick = |warmup, interval_s| Tick {
            interval_s,
            warmup,
            ..Tick::default()
        };
        let tl = [
            tick(true, 30.0),
            tick(false, 1.02),
            tick(false, 11.5),
            tick(false, 1.0),
        ];
        assert!((tool_stall_s(&tl) - 10.5).abs() < 1e-9);
        assert_eq!(
            tool_stall_s(&tl[..1]),
            0.0,
            "a warm-up stall is not counted"
        );
        assert_eq!(tool_stall_s(&[tick(false, 0.98)]), 0.0);
    }

    #[test]
    fn the_runtime_stall_is_the_longest_heartbeat_lag_after_the_warm_up() {
        let tick = |warmup, runtime_lag_ms| Tick {
            warmup,
            runtime_lag_ms,
            interval_s: 1.0,
            ..Tick::default()
        };
        let tl = [
            tick(true, 9000.0),
            tick(false, 12.0),
            tick(false, 2500.0),
            tick(false, 30.0),
        ];
        assert!((runtime_stall_s(&tl) - 2.5).abs() < 1e-9);
        assert_eq!(runtime_stall_s(&tl[..1]), 0.0);
    }
}
