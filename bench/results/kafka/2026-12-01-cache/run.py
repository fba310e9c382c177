#!/usr/bin/env python3
"""The matrix of docs/benchmarks.md "Page-cache recycling" (2026-12-01
evening): batch sizes 64 KiB to 1 MiB, N interleaved rounds, one JSON per
run, then open-loop runs at half the median max rate of the same config.

    cargo build --release -p odradek-bench -p odradek
    python3 bench/results/kafka/2026-12-01-cache/run.py OUT_DIR [RUNS]
    python3 bench/results/kafka/summarize.py OUT_DIR
"""
import json, os, statistics, subprocess, sys

out = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
here = os.path.dirname(os.path.abspath(__file__))
exe = os.path.join(here, "../../../../target/release/odradek-bench")
data = os.path.join(here, "../../../../target/benchdata")
os.makedirs(out, exist_ok=True)
os.makedirs(data, exist_ok=True)
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


def run(name, args, i):
    path = os.path.join(out, f"{name}-{i}.json")
    svg = os.path.join(out, f"{name}-{i}.svg")
    load = open("/proc/loadavg").read().split()[:3]
    length = [] if "--messages" in args else timed
    cmd = [exe] + common + length + args + ["--json", path, "--svg", svg]
    print(f"[{name} #{i}] load {' '.join(load)}: {' '.join(cmd[1:])}", flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
    else:
        for line in r.stdout.splitlines():
            if line.startswith(("produce", "consume", "ratios", "CPU")):
                print("   ", line, flush=True)


for i in range(1, runs + 1):
    for name, args in configs.items():
        if name.startswith(only):
            run(name, args, i)
if only:
    sys.exit(0)


def median_rate(name):
    vals = []
    for i in range(1, runs + 1):
        try:
            vals.append(json.load(open(os.path.join(out, f"{name}-{i}.json")))["produce"]["msgs_per_s"])
        except FileNotFoundError:
            pass
    return statistics.median(vals)


half = {}
for p in (1, 4):
    for name in (f"acks1-64k-p{p}", f"acks1-256k-p{p}", f"acksall-256k-p{p}", f"acksall-1m-p{p}"):
        args = [a for a in configs[name] if a != "--baseline"]
        half[f"half-{name}"] = args + ["--rate", str(round(median_rate(name) / 2))]
for i in range(1, runs + 1):
    for name, args in half.items():
        run(name, args, i)
