#!/usr/bin/env python3
"""docs/benchmarks.md "Produce requests read while the last one is
written": the broker before (OLD_BROKER, an odradek binary built earlier)
against this build's; acks=1 at max rate and open loop at fixed rates
(half of this machine's max at 13:16-13:20 UTC on 2026-12-03), acks=all at
max rate. Builds interleaved, RUNS rounds; stalled runs repeated
(matrix.run).

    cargo build --release -p odradek-bench -p odradek
    python3 bench/results/kafka/2026-12-03-pipeline/run.py OUT_DIR OLD_BROKER [RUNS [CONFIG,...]]
    python3 bench/results/kafka/summarize.py OUT_DIR
"""
import os, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import matrix  # noqa: E402

out, old = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
exe, data = matrix.paths(out)
common = ["--quiet", "--message-size", "1024", "--data-dir", data, "--consumers", "0",
          "--duration", "8s", "--warmup", "4s"]
builds = {"old": ["--broker-bin", old], "new": []}
configs = {
    "max-acks1-64k-p1": ["--acks", "1", "--partitions", "1", "--batch-size", "64KiB"],
    "max-acks1-256k-p4": ["--acks", "1", "--partitions", "4", "--batch-size", "256KiB"],
    "max-acksall-256k-p4": ["--acks", "all", "--partitions", "4", "--batch-size", "256KiB"],
    "half-acks1-64k-p1": ["--acks", "1", "--partitions", "1", "--batch-size", "64KiB", "--rate", "311596"],
    "half-acks1-64k-p4": ["--acks", "1", "--partitions", "4", "--batch-size", "64KiB", "--rate", "430817"],
    "half-acks1-256k-p1": ["--acks", "1", "--partitions", "1", "--batch-size", "256KiB", "--rate", "735464"],
    "half-acks1-256k-p4": ["--acks", "1", "--partitions", "4", "--batch-size", "256KiB", "--rate", "630594"],
}
only = sys.argv[4].split(",") if len(sys.argv) > 4 else list(configs)
for i in range(1, runs + 1):
    for name, args in configs.items():
        if name not in only:
            continue
        for b, extra in builds.items():
            matrix.run(exe, out, f"{b}-{name}", common + args + extra, i)
