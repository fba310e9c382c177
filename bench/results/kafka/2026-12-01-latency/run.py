#!/usr/bin/env python3
"""docs/benchmarks.md "Open-loop latency": the half-rate rows of the
page-cache matrix (same rates), before and after the changes, interleaved.

    cargo build --release -p odradek-bench -p odradek
    # BEFORE_BENCH: an odradek-bench built before, with its odradek beside it
    python3 bench/results/kafka/2026-12-01-latency/run.py OUT RUNS BEFORE_BENCH
    python3 bench/results/kafka/summarize.py OUT
"""
import os, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import matrix  # noqa: E402

out, runs, before = sys.argv[1], int(sys.argv[2]), sys.argv[3]
after, data = matrix.paths(out)
common = ["--quiet", "--message-size", "1024", "--data-dir", data, "--duration", "8s",
          "--warmup", "4s", "--consumers", "0", "--acks", "1", "--partitions", "1"]
configs = {
    "half-acks1-256k-p1": ["--batch-size", "256KiB", "--rate", "468000"],
    "half-acks1-64k-p1": ["--batch-size", "64KiB", "--rate", "268000"],
    "half-sink-256k-p1": ["--sink", "--batch-size", "256KiB", "--rate", "468000"],
}
for i in range(1, runs + 1):
    for name, args in configs.items():
        for tag, exe in (("before", before), ("after", after)):
            matrix.run(exe, out, f"{tag}-{name}", common + args, i)
