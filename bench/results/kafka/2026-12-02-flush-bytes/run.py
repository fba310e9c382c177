#!/usr/bin/env python3
"""docs/benchmarks.md "Smaller background flushes": the default background
flush threshold (log.flush.interval.bytes) of 16 MiB (old) against 4 MiB
(new), one build. Max rate first, then open loop at half of each
variant's own median max rate; variants interleaved, RUNS rounds.

    cargo build --release -p odradek-bench -p odradek
    python3 bench/results/kafka/2026-12-02-flush-bytes/run.py OUT_DIR [RUNS]
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
variants = {"old": ["--broker-set", "log.flush.interval.bytes=16777216"], "new": []}
configs = {
    "acks1-64k-p1": ["--partitions", "1", "--batch-size", "64KiB", "--acks", "1"],
    "acks1-256k-p1": ["--partitions", "1", "--batch-size", "256KiB", "--acks", "1"],
    "acks1-256k-p4": ["--partitions", "4", "--batch-size", "256KiB", "--acks", "1"],
    "acksall-1m-p1": ["--partitions", "1", "--batch-size", "1MiB", "--acks", "all"],
    "acksall-1m-p4": ["--partitions", "4", "--batch-size", "1MiB", "--acks", "all"],
}
for i in range(1, runs + 1):
    for name, args in configs.items():
        for v, extra in variants.items():
            matrix.run(exe, out, f"{v}-{name}", common + args + extra, i)
for i in range(1, runs + 1):
    for name, args in configs.items():
        for v, extra in variants.items():
            rate = round(matrix.median_rate(out, f"{v}-{name}", runs) / 2)
            matrix.run(exe, out, f"{v}-half-{name}", common + args + extra + ["--rate", str(rate)], i)
