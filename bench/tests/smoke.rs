//! CI smoke test: the engine benchmark runs end to end in `--quick` mode and
//! writes a JSON report whose every row has positive throughput and a ratio.

use std::process::Command;

#[test]
fn quick_run_writes_a_sane_json_report() {
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let json = work.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_odradek-engine-bench"))
        .arg("--quick")
        .arg("--dir")
        .arg(work.path())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run odradek-engine-bench");
    assert!(
        out.status.success(),
        "benchmark failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("engine/raw"),
        "no table in output:\n{stdout}"
    );

    let text = std::fs::read_to_string(&json).expect("JSON report written");
    let report: serde_json::Value = serde_json::from_str(&text).expect("report is JSON");
    let rows = report["rows"].as_array().expect("rows array");
    assert!(!rows.is_empty(), "no rows");
    for row in rows {
        let name = format!("{} {} {}", row["shards"], row["policy"], row["batch_bytes"]);
        let pos = |k: &str| {
            let v = row[k]["median"]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: no {k}"));
            assert!(v > 0.0 && v.is_finite(), "{name}: {k} = {v}");
        };
        for k in [
            "engine_mb_s",
            "engine_batches_s",
            "raw_mb_s",
            "ratio",
            "engine_read_bytes_mb_s",
            "engine_read_slice_mb_s",
            "raw_read_mb_s",
            "read_ratio",
        ] {
            pos(k);
        }
        assert!(
            row["engine_p99_us"]["median"].as_f64().unwrap() > 0.0,
            "{name}: no latency"
        );
    }

    // The benchmark removes what it wrote: only our report is left.
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("report.json")],
        "data left behind"
    );
}
