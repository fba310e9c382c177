#!/usr/bin/env python3
"""docs/benchmarks.md "An open-loop producer that falls behind holds back":
the half-rate acks=1 rows of "Stalls, CPU steal and the broker's own
latency" (64 and 256 KiB batches, 1 and 4 partitions, open loop at the
rates given), the tool before (OLD_BENCH) and after, the same broker,
interleaved, RUNS rounds. Every run is kept, stalled or not: what is
compared is how often a run collapses.

    cargo build --release -p odradek-bench -p odradek
    python3 bench/results/kafka/2026-12-03-hold/run.py OUT OLD_BENCH RUNS
"""
import json, os, subprocess, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import matrix
out, old, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
exe, data = matrix.paths(out)
broker = os.path.join(os.path.dirname(exe), "odradek")
common = ["--quiet", "--message-size", "1024", "--data-dir", data, "--consumers", "0",
          "--duration", "8s", "--warmup", "4s", "--acks", "1", "--broker-bin", broker]
# msgs/s: half of the median max rate of each config at 13:16-13:20 UTC
configs = {
    "half-64k-p1": ["--partitions", "1", "--batch-size", "64KiB", "--rate", "311596"],
    "half-64k-p4": ["--partitions", "4", "--batch-size", "64KiB", "--rate", "430817"],
    "half-256k-p1": ["--partitions", "1", "--batch-size", "256KiB", "--rate", "735464"],
    "half-256k-p4": ["--partitions", "4", "--batch-size", "256KiB", "--rate", "630594"],
}
for i in range(1, runs + 1):
    for name, args in configs.items():
        for tool, bin in [("old", old), ("new", exe)]:
            path = os.path.join(out, f"{tool}-{name}-{i}.json")
            r = subprocess.run([bin] + common + args + ["--json", path], capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stdout, r.stderr)
                continue
            j = json.load(open(path))
            m, p = j["machine"], j["produce"]
            print(f"{tool} {name} #{i}: {p['mb_per_s']:.0f} MB/s p99 {p['latency']['p99_ms']:.2f} ms "
                  f"steal {m['cpu_steal_pct']:.1f} % stall {max(m['tool_stall_s'], m['runtime_stall_s']):.2f} s "
                  f"faults {j['client_minor_faults']} unsent {j.get('unsent_messages', '-')}", flush=True)
