#!/usr/bin/env python3
"""Run the odradek-bench matrix of docs/benchmarks.md ("Kafka-protocol
benchmark") N times, interleaved, one JSON per run in OUT, then the 50 %-rate
latency runs at half the median max rate measured. Usage:

    cargo build --release -p odradek-bench -p odradek
    python3 bench/results/kafka/run.py OUT_DIR [RUNS]
"""
import os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import matrix  # noqa: E402

out = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
exe = os.path.join(os.path.dirname(__file__), "../../../target/release/odradek-bench")
os.makedirs(out, exist_ok=True)
common = ["--duration", "8s", "--warmup", "2s", "--quiet", "--message-size", "1024"]

configs = {}
for p in (1, 4):
    configs[f"acks1-p{p}"] = ["--partitions", str(p), "--consumers", "0", "--acks", "1", "--baseline"]
    configs[f"acksall-p{p}"] = ["--partitions", str(p), "--consumers", "0", "--acks", "all", "--baseline"]
    configs[f"backlog-p{p}"] = ["--partitions", str(p), "--consume-phase", "after", "--messages", "1000000", "--acks", "1", "--baseline"]
    configs[f"e2e-acks1-p{p}"] = ["--partitions", str(p), "--consumers", "1", "--acks", "1"]
    configs[f"sink-p{p}"] = ["--sink", "--partitions", str(p), "--consumers", "0", "--acks", "1"]
configs["acks1-p4-flush1s"] = ["--partitions", "4", "--consumers", "0", "--acks", "1", "--broker-set", "log.flush.interval.ms=1000"]
configs["acks1-p4-shards1"] = ["--partitions", "4", "--consumers", "0", "--acks", "1", "--broker-shards", "1"]




for i in range(1, runs + 1):
    for name, args in configs.items():
        matrix.run(exe, out, name, common + args, i)




half = {}
for p in (1, 4):
    for acks in ("1", "all"):
        name = f"acks{acks}-p{p}"
        rate = round(matrix.median_rate(out, name, runs) / 2)
        half[f"half-{name}"] = ["--partitions", str(p), "--consumers", "0", "--acks", acks, "--rate", str(rate)]
for i in range(1, runs + 1):
    for name, args in half.items():
        matrix.run(exe, out, name, common + args, i)
