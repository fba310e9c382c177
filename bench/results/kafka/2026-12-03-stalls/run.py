#!/usr/bin/env python3
"""docs/benchmarks.md "Stalls, CPU steal and the broker's own latency":
acks=1 at 64 and 256 KiB batches, 1 and 4 partitions, max rate, then open
loop at half of each config's median max; RUNS rounds, interleaved. Runs in
which the tool stalled are kept aside and repeated (matrix.run).

    cargo build --release -p odradek-bench -p odradek
    python3 bench/results/kafka/2026-12-03-stalls/run.py OUT_DIR [RUNS]
    python3 bench/results/kafka/summarize.py OUT_DIR
"""
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import matrix
out = sys.argv[1]; runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
exe, data = matrix.paths(out)
common = ["--quiet", "--message-size", "1024", "--data-dir", data, "--consumers", "0", "--duration", "8s", "--warmup", "4s"]
configs = {
    "acks1-64k-p1": ["--partitions", "1", "--batch-size", "64KiB", "--acks", "1"],
    "acks1-64k-p4": ["--partitions", "4", "--batch-size", "64KiB", "--acks", "1"],
    "acks1-256k-p1": ["--partitions", "1", "--batch-size", "256KiB", "--acks", "1"],
    "acks1-256k-p4": ["--partitions", "4", "--batch-size", "256KiB", "--acks", "1"],
}
for i in range(1, runs + 1):
    for name, args in configs.items():
        matrix.run(exe, out, name, common + args, i)
for i in range(1, runs + 1):
    for name, args in configs.items():
        rate = round(matrix.median_rate(out, name, runs) / 2)
        matrix.run(exe, out, f"half-{name}", common + args + ["--rate", str(rate)], i)
