#!/usr/bin/env python3
"""The matrix of docs/benchmarks.md "Page-cache recycling" (2026-12-01
evening): batch sizes 64 KiB to 1 MiB, N interleaved rounds, one JSON per
run, then open-loop runs at half the median max rate of the same config.

    cargo build --release -p odradek-bench -p odradek
    python3 bench/results/kafka/2026-12-01-cache/run.py OUT_DIR [RUNS]
    python3 bench/results/kafka/summarize.py OUT_DIR
"""
import os, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import matrix  # noqa: E402

out = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
exe, data = matrix.paths(out)
only = sys.argv[3] if len(sys.argv) > 3 else ""  # run only configs with this prefix
common = ["--quiet", "--message-size", "1024", "--data-dir", data]
timed = ["--duration", "8s", "--warmup", "4s"]

def bs(b):
    return ["--batch-size", b]

configs = {}
for p in (1, 4):
    P = ["--partitions", str(p)]
    configs[f"acks1-64k-p{p}"] = P + bs("64KiB") + ["--consumers", "0", "--acks", "1"]
    configs[f"acks1-256k-p{p}"] = P + bs("256KiB") + ["--consumers", "0", "--acks", "1", "--baseline"]
    configs[f"acksall-256k-p{p}"] = P + bs("256KiB") + ["--consumers", "0", "--acks", "all"]
    configs[f"acksall-1m-p{p}"] = P + bs("1MiB") + ["--consumers", "0", "--acks", "all", "--baseline"]
    configs[f"backlog-256k-p{p}"] = P + bs("256KiB") + ["--consume-phase", "after", "--messages", "1000000", "--acks", "1", "--baseline"]
    configs[f"e2e-acks1-256k-p{p}"] = P + bs("256KiB") + ["--consumers", "1", "--acks", "1"]
    configs[f"sink-256k-p{p}"] = ["--sink"] + P + bs("256KiB") + ["--consumers", "0", "--acks", "1"]




for i in range(1, runs + 1):
    for name, args in configs.items():
        if name.startswith(only):
            matrix.run(exe, out, name, common + ([] if "--messages" in args else timed) + args, i)
if only:
    sys.exit(0)




half = {}
for p in (1, 4):
    for name in (f"acks1-64k-p{p}", f"acks1-256k-p{p}", f"acksall-256k-p{p}", f"acksall-1m-p{p}"):
        args = [a for a in configs[name] if a != "--baseline"]
        half[f"half-{name}"] = args + ["--rate", str(round(matrix.median_rate(out, name, runs) / 2))]
for i in range(1, runs + 1):
    for name, args in half.items():
        matrix.run(exe, out, name, common + ([] if "--messages" in args else timed) + args, i)
