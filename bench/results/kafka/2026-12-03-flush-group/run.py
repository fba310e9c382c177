#!/usr/bin/env python3
"""docs/benchmarks.md "One flush window per shard": the broker before the
flush group (OLD_BROKER, an odradek binary built earlier) against this
build's, acks=1, 4 partitions; max rate at 256 KiB, and open loop at fixed
rates (about half of this machine's max on 2026-12-03) at 256 and 64 KiB.
Builds interleaved, RUNS rounds; stalled runs repeated (matrix.run).

    cargo build --release -p odradek-bench -p odradek
    python3 bench/results/kafka/2026-12-03-flush-group/run.py OUT_DIR OLD_BROKER [RUNS]
    python3 bench/results/kafka/summarize.py OUT_DIR
"""
import os, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import matrix  # noqa: E402

out, old = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 4
exe, data = matrix.paths(out)
common = ["--quiet", "--message-size", "1024", "--data-dir", data, "--consumers", "0",
          "--duration", "8s", "--warmup", "4s", "--acks", "1", "--partitions", "4"]
builds = {"old": ["--broker-bin", old], "new": []}
configs = {
    "max-256k-p4": ["--batch-size", "256KiB"],
    "rate-256k-p4": ["--batch-size", "256KiB", "--rate", "462441"],
    "rate-64k-p4": ["--batch-size", "64KiB", "--rate", "383785"],
}
for i in range(1, runs + 1):
    for name, args in configs.items():
        for b, extra in builds.items():
            matrix.run(exe, out, f"{b}-{name}", common + args + extra, i)
