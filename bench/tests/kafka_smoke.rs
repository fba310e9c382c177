//! CI smoke test of `odradek-bench`: a tiny fixed-count workload against an
//! Odradek broker the benchmark starts itself, and against the built-in sink.
//! Checks the report's fields and that every produced message was consumed.
//!
//! The broker binary comes from the same target directory; when it is
//! missing the test builds it (`cargo build -p odradek`, same profile).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bench_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_odradek-bench"))
}

/// `target/<profile>/odradek`, built if missing.
fn broker_exe() -> PathBuf {
    let dir = bench_exe().parent().unwrap().to_path_buf();
    let bin = dir.join("odradek");
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "odradek", "--bin", "odradek"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        // target/<profile>/ -> target/
        if let Some(target) = dir.parent() {
            cmd.arg("--target-dir").arg(target);
        }
        let st = cmd.status().expect("run cargo build -p odradek");
        assert!(st.success(), "building odradek failed");
    }
    assert!(bin.is_file(), "no broker binary at {}", bin.display());
    bin
}

fn run(work: &Path, args: &[&str]) -> serde_json::Value {
    let json = work.join("report.json");
    let svg = work.join("report.svg");
    let mut child = Command::new(bench_exe())
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run odradek-bench");
    // generous for a loaded 2-CPU machine; a hang fails instead of blocking CI
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "odradek-bench {args:?} still running after 300 s:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "odradek-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("produce"), "no table:\n{stdout}");
    let svg = std::fs::read_to_string(&svg).expect("SVG written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written"))
        .expect("report is JSON")
}

fn check_side(r: &serde_json::Value, side: &str, messages: u64, latency: bool) {
    let s = &r[side];
    assert_eq!(s["messages"].as_u64(), Some(messages), "{side}: {s}");
    assert_eq!(s["messages_total"].as_u64(), Some(messages), "{side}: {s}");
    assert_eq!(s["errors"].as_u64(), Some(0), "{side}: {s}");
    for k in ["mb_per_s", "msgs_per_s"] {
        let v = s[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{side}.{k} missing"));
        assert!(v > 0.0 && v.is_finite(), "{side}.{k} = {v}");
    }
    if latency {
        let l = &s["latency"];
        let mut prev = 0.0;
        for k in [
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p99_9_ms",
            "p99_99_ms",
            "max_ms",
        ] {
            let v = l[k]
                .as_f64()
                .unwrap_or_else(|| panic!("{side}.latency.{k} missing"));
            assert!(
                v > 0.0 && v >= prev,
                "{side}.latency.{k} = {v} (previous {prev})"
            );
            prev = v;
        }
        assert_eq!(l["count"].as_u64(), Some(messages), "{side}: latency count");
    }
}

#[test]
fn produce_and_consume_against_a_started_broker() {
    let broker = broker_exe();
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let n = 3000;
    let r = run(
        work.path(),
        &[
            "--broker-bin",
            broker.to_str().unwrap(),
            "--data-dir",
            work.path().to_str().unwrap(),
            "--messages",
            &n.to_string(),
            "--message-size",
            "512",
            "--partitions",
            "3",
            "--producers",
            "2",
            "--consumers",
            "2",
            "--keys",
            "zipf",
            "--acks",
            "all",
            "--batch-size",
            "16KiB",
        ],
    );
    check_side(&r, "produce", n, true);
    check_side(&r, "consume", n, true);
    assert_eq!(r["produce"]["bytes"].as_u64(), Some(n * 512));
    assert_eq!(r["partitions_total"].as_u64(), Some(3));
    assert!(r["machine"]["load_before"].as_array().unwrap().len() == 3);
    assert!(r["broker_cpu_s"].as_f64().is_some());
    // the started broker's own histogram counted this run's Produce requests
    let bp = &r["broker_produce"];
    assert!(bp["requests"].as_u64().unwrap() > 0, "{bp}");
    // and its disk counters: every write is counted, those that met an
    // fdatasync of their file by where they ran (a subset of all writes)
    let bd = &r["broker_disk"];
    let writes = bd["log_writes"].as_u64().unwrap();
    assert!(writes > 0, "{bd}");
    let during_sync = bd["writes_during_sync_inline"].as_u64().unwrap()
        + bd["writes_during_sync_io_wq"].as_u64().unwrap();
    assert!(during_sync <= writes, "{bd}");
    assert!(bd["sync_write_handoffs"].as_u64().is_some(), "{bd}");
    let timeline = r["timeline"].as_array().unwrap();
    assert!(!timeline.is_empty());
    for t in timeline {
        assert!(t["interval_s"].as_f64().unwrap() > 0.5, "{t}");
        let busy = t["cpu_busy_pct"].as_f64().expect("/proc/stat is read");
        let steal = t["cpu_steal_pct"].as_f64().unwrap();
        assert!(
            (0.0..=100.0).contains(&busy) && (0.0..=100.0).contains(&steal),
            "{t}"
        );
    }
    assert!(r["machine"]["tool_stall_s"].as_f64().unwrap() >= 0.0);
    assert!(r["machine"]["runtime_stall_s"].as_f64().unwrap() >= 0.0);
    assert!(timeline
        .iter()
        .all(|t| t["runtime_lag_ms"].as_f64().is_some()));
    // the data directory is gone, only our report files are left
    let mut left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["report.json", "report.svg"], "data left behind");
}

#[test]
fn sink_with_a_rate_and_the_baseline() {
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let n = 2000;
    let r = run(
        work.path(),
        &[
            "--sink",
            "--consumers",
            "0",
            "--messages",
            &n.to_string(),
            "--rate",
            "4000",
            "--linger-ms",
            "1",
            "--baseline",
        ],
    );
    check_side(&r, "produce", n, true);
    assert_eq!(r["consume"]["messages"].as_u64(), Some(0));
    let b = &r["baseline"];
    for k in [
        "disk_nosync_mb_per_s",
        "disk_group_commit_mb_per_s",
        "loopback_tcp_mb_per_s",
        "produce_vs_disk_nosync",
        "disk_recycled_mb_per_s",
        "produce_vs_disk_recycled",
        "produce_vs_disk_group_commit",
        "produce_vs_loopback",
    ] {
        assert!(b[k].as_f64().is_some_and(|v| v > 0.0), "baseline.{k}: {b}");
    }
    // the latency breakdown: every batch closed and sent once, each request
    // answered; at 4000/s with a 1 ms linger a batch holds a few messages
    let bd = &r["produce_breakdown"];
    let count = |k: &str| bd[k]["count"].as_u64().unwrap_or(0);
    let batches = count("batch_late");
    assert!(batches > 100 && batches < n, "batches: {bd}");
    assert_eq!(count("batch_queued"), batches, "{bd}");
    let requests = count("request_round_trip");
    assert!(requests > 0 && requests <= batches, "{bd}");
    // open loop at 4000/s: 2000 messages take about half a second
    let secs = r["produce"]["seconds"].as_f64().unwrap();
    assert!(secs > 0.3, "rate not applied: {secs} s");
}

/// 50 k msg/s open loop, 1 partition, 1 request in flight, against the sink
/// answering each Produce 20 ms after reading it.
fn slow_sink_run(work: &Path, duration: &str, warmup: &str) -> serde_json::Value {
    run(
        work,
        &[
            "--sink",
            "--sink-delay",
            "20ms",
            "--consumers",
            "0",
            "--partitions",
            "1",
            "--max-in-flight",
            "1",
            "--batch-size",
            "16KiB",
            "--rate",
            "50000",
            "--duration",
            duration,
            "--warmup",
            warmup,
        ],
    )
}

/// Open loop against a broker far slower than the schedule (the sink
/// answering each Produce after 20 ms, one at a time): the producer holds
/// back what its windows cannot take, so its queue stays a few batches
/// and the run ends on time, while latency still counts from each
/// message's scheduled time and the messages never sent are reported.
#[test]
fn open_loop_against_a_slow_broker_holds_back_and_says_so() {
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let (rate, secs) = (50_000.0, 2.0);
    let started = Instant::now();
    let r = slow_sink_run(work.path(), "2s", "0s");
    let bd = &r["produce_breakdown"];
    // a batch beyond the window, plus one whose linger ended meanwhile
    let queued_max = bd["queued_max_batches"].as_u64().unwrap();
    assert!(queued_max <= 3, "the queue grew: {bd}");
    let sent = r["sent_messages"].as_u64().unwrap();
    let unsent = r["unsent_messages"].as_u64().unwrap();
    assert!(unsent > 0, "nothing held back: {r}");
    // every scheduled message is either sent or counted as not sent
    let scheduled = (sent + unsent) as f64;
    assert!(
        scheduled > 0.8 * rate * secs && scheduled <= rate * secs * 1.01,
        "sent {sent} + unsent {unsent} against {} scheduled",
        rate * secs
    );
    // the ones sent waited in the client for the window: counted from
    // their scheduled time, that wait is their latency (no coordinated
    // omission), and it is the queue's, not the generator's
    let p99 = r["produce"]["latency"]["p99_ms"].as_f64().unwrap();
    assert!(
        p99 > 500.0,
        "latency not counted from the schedule: {p99} ms"
    );
    let queued = bd["batch_queued"]["p99_ms"].as_f64().unwrap();
    let late = bd["batch_late"]["p99_ms"].as_f64().unwrap();
    assert!(queued > 500.0 && late < queued / 10.0, "{bd}");
    // the run did not go on draining a backlog after its end
    let took = started.elapsed().as_secs_f64();
    assert!(took < 60.0, "the run took {took:.0} s");
    // With a warm-up, throughput counts what was acked after it; so far
    // behind, nothing scheduled after the warm-up was sent, so there is no
    // latency sample, but the messages acked then count.
    let r = slow_sink_run(work.path(), "1s", "1s");
    let p = &r["produce"];
    assert!(p["messages"].as_u64().unwrap() > 0, "{p}");
    assert!(p["mb_per_s"].as_f64().unwrap() > 0.0, "{p}");
    assert!(p["latency"].is_null(), "{p}");
}

/// An Odradek broker this test runs itself, as a user's would be: the
/// benchmark only gets `--bootstrap`. Killed on drop.
struct OwnBroker {
    child: std::process::Child,
    addr: String,
}

impl OwnBroker {
    fn start(data: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(broker_exe())
            .args(["serve", "--metrics-listener", "none", "--shards", "1"])
            .arg("--listeners")
            .arg(&addr)
            .arg("--log-dirs")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start odradek");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "broker did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Compressed batches go through the broker and are decompressed by the
/// consumers; a second run with no producers reads them back as a backlog
/// (`--consume-from earliest`) and counts them, although they were written
/// before it started.
#[test]
fn compressed_batches_then_a_consume_only_run_over_the_backlog() {
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let broker = OwnBroker::start(&work.path().join("data"));
    let n = 3000u64;
    let common = [
        "--bootstrap",
        broker.addr.as_str(),
        "--message-size",
        "512",
        "--partitions",
        "2",
    ];
    let mut args = common.to_vec();
    let n_s = n.to_string();
    args.extend([
        "--messages",
        &n_s,
        "--compression",
        "zstd",
        "--payload",
        "letters",
        "--batch-size",
        "32KiB",
    ]);
    let r = run(work.path(), &args);
    check_side(&r, "produce", n, true);
    check_side(&r, "consume", n, true);
    // random letters: zstd gets them to about 0.6 of their size
    let values = (n * 512) as f64;
    for side in ["produce", "consume"] {
        let wire = r[side]["wire_bytes_total"].as_u64().unwrap() as f64;
        assert!(
            wire > 0.4 * values && wire < 0.8 * values,
            "{side}: {wire} wire bytes for {values}"
        );
    }
    let mut args = common.to_vec();
    // no latency to draw: the picture must still come out (its log axis
    // once looped forever on an empty panel)
    args.extend([
        "--producers",
        "0",
        "--consume-from",
        "earliest",
        "--messages",
        &n_s,
    ]);
    let r = run(work.path(), &args);
    check_side(&r, "consume", n, false);
    assert_eq!(r["produce"]["messages_total"].as_u64(), Some(0));
}
