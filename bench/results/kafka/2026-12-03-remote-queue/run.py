#!/usr/bin/env python3
"""docs/benchmarks.md "Produce sets for another shard queued there": the
broker before (OLD_BROKER, built at e86f586) against this build's, with
the configurations and fixed open-loop rates of ../2026-12-03-pipeline.
Builds interleaved, RUNS rounds, the builds' order swapped every round
(ABBA: a run can be slowed by the one before it); stalled runs repeated
(matrix.run).

    cargo build --release -p odradek-bench -p odradek
    python3 bench/results/kafka/2026-12-03-remote-queue/run.py OUT_DIR OLD_BROKER [RUNS [CONFIG,...]]
    python3 bench/results/kafka/summarize.py OUT_DIR
"""
import os, sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, ".."))
import matrix  # noqa: E402

out, old = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
exe, data = matrix.paths(out)
common = ["--quiet", "--message-size", "1024", "--data-dir", data, "--consumers", "0",
          "--duration", "8s", "--warmup", "4s"]
builds = {"old": ["--broker-bin", old], "new": []}
p1, p4 = ["--partitions", "1"], ["--partitions", "4"]
b64, b256 = ["--batch-size", "64KiB"], ["--batch-size", "256KiB"]
configs = {
    "half-acks1-64k-p4": ["--acks", "1"] + p4 + b64 + ["--rate", "430817"],
    "half-acks1-256k-p4": ["--acks", "1"] + p4 + b256 + ["--rate", "630594"],
    "half-acks1-64k-p1": ["--acks", "1"] + p1 + b64 + ["--rate", "311596"],
    "half-acks1-256k-p1": ["--acks", "1"] + p1 + b256 + ["--rate", "735464"],
    "max-acks1-256k-p4": ["--acks", "1"] + p4 + b256,
    "max-acksall-256k-p4": ["--acks", "all"] + p4 + b256,
    "max-acks1-64k-p1": ["--acks", "1"] + p1 + b64,
}
matrix.abba(exe, out, common, configs, builds, runs,
            sys.argv[4].split(",") if len(sys.argv) > 4 else None)
