#!/usr/bin/env python3
"""docs/benchmarks.md "Writeback instead of background fdatasyncs": one
build, the default flush (an fdatasync every 4 MiB or 100 ms) against
log.flush.writeback=true (every 4 MiB only sync_file_range WRITE; the
100 ms timer syncs), at the fixed open-loop rates of ../2026-12-03-pipeline
and at max rate. ABBA order over RUNS rounds; stalled runs repeated
(matrix.run).

    cargo build --release -p odradek-bench -p odradek
    python3 bench/results/kafka/2026-12-03-writeback/run.py OUT_DIR [RUNS [CONFIG,...]]
    python3 bench/results/kafka/summarize.py OUT_DIR
"""
import os, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import matrix  # noqa: E402

out = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
exe, data = matrix.paths(out)
common = ["--quiet", "--message-size", "1024", "--data-dir", data, "--consumers", "0",
          "--duration", "8s", "--warmup", "4s"]
variants = {"sync": [], "writeback": ["--broker-set", "log.flush.writeback=true"]}
p1, p4 = ["--partitions", "1"], ["--partitions", "4"]
b64, b256 = ["--batch-size", "64KiB"], ["--batch-size", "256KiB"]
configs = {
    "half-acks1-256k-p4": ["--acks", "1"] + p4 + b256 + ["--rate", "630594"],
    "half-acks1-64k-p4": ["--acks", "1"] + p4 + b64 + ["--rate", "430817"],
    "half-acks1-64k-p1": ["--acks", "1"] + p1 + b64 + ["--rate", "311596"],
    "half-acks1-256k-p1": ["--acks", "1"] + p1 + b256 + ["--rate", "735464"],
    "max-acks1-256k-p4": ["--acks", "1"] + p4 + b256,
    "max-acksall-256k-p4": ["--acks", "all"] + p4 + b256,
}
matrix.abba(exe, out, common, configs, variants, runs,
            sys.argv[3].split(",") if len(sys.argv) > 3 else None)
