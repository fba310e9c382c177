#!/usr/bin/env python3
"""Markdown tables (median (min-max) over runs) from the JSON files that
run.py wrote; runs of the same config in several directories are pooled.
Usage: python3 bench/results/kafka/summarize.py OUT_DIR [OUT_DIR...]"""
import glob, json, os, re, statistics, sys

from matrix import STALL_S

groups = {}
files = [f for d in sys.argv[1:] for f in sorted(glob.glob(os.path.join(d, "*.json")))]
# runs in which the tool stalled and that matrix.run repeated
stalled = [f for f in files if ".stalled-" in f]
files = [f for f in files if ".stalled-" not in f]
for f in files:
    name = re.sub(r"-\d+\.json$", "", os.path.basename(f))
    groups.setdefault(name, []).append(json.load(open(f)))


def fmt(vals, nd=0):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    m = statistics.median(vals)
    f = f"{{:.{nd}f}}"
    return f"{f.format(m)} ({f.format(min(vals))}–{f.format(max(vals))})"


def lat(r, side, k):
    l = r[side].get("latency")
    return l[k] if l else None


def load(rs):
    lb = [r["machine"]["load_before"][0] for r in rs]
    la = [r["machine"]["load_after"][0] for r in rs]
    return f"{min(lb + la):.1f}–{max(lb + la):.1f}"


print("| config | runs | produce MB/s | produce msgs/s | ack p50 ms | p90 | p99 | p99.9 | p99.99 | max | consume MB/s | e2e p50 ms | e2e p99 | broker CPU s/GB | client CPU s/GB | load (1 min) | CPU steal % | tool stalls |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
for name, rs in groups.items():
    cells = [
        name,
        str(len(rs)),
        fmt([r["produce"]["mb_per_s"] for r in rs]),
        fmt([r["produce"]["msgs_per_s"] for r in rs]),
    ]
    for k in ["p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "p99_99_ms", "max_ms"]:
        cells.append(fmt([lat(r, "produce", k) for r in rs], 2))
    cells.append(fmt([r["consume"]["mb_per_s"] or None for r in rs]))
    cells.append(fmt([lat(r, "consume", "p50_ms") for r in rs], 2))
    cells.append(fmt([lat(r, "consume", "p99_ms") for r in rs], 2))
    cells.append(fmt([r.get("broker_cpu_s_per_gb") for r in rs], 2))
    cells.append(fmt([r.get("client_cpu_s_per_gb") for r in rs], 2))
    cells.append(load(rs))
    # absent in reports written before the tool measured them
    cells.append(fmt([r["machine"].get("cpu_steal_pct") for r in rs], 1))
    stalls = [max(r["machine"]["tool_stall_s"], r["machine"].get("runtime_stall_s", 0.0))
              for r in rs if "tool_stall_s" in r["machine"]]
    cells.append(f"{sum(s >= STALL_S for s in stalls)} of {len(stalls)}" if stalls else "-")
    print("| " + " | ".join(cells) + " |")

print()
print("| config | disk no fsync MB/s | disk recycled MB/s | disk group commit MB/s | fdatasync per batch MB/s | loopback TCP MB/s | produce / no-fsync | produce / recycled | produce / group commit | produce / per-batch | produce / loopback | consume / loopback |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, rs in groups.items():
    bs = [r["baseline"] for r in rs if r.get("baseline")]
    if not bs:
        continue
    print("| " + " | ".join([
        name,
        fmt([b["disk_nosync_mb_per_s"] for b in bs]),
        fmt([b.get("disk_recycled_mb_per_s") for b in bs]),
        fmt([b["disk_group_commit_mb_per_s"] for b in bs]),
        fmt([b.get("disk_fsync_per_batch_mb_per_s") for b in bs]),
        fmt([b["loopback_tcp_mb_per_s"] for b in bs]),
        fmt([b["produce_vs_disk_nosync"] for b in bs], 2),
        fmt([b.get("produce_vs_disk_recycled") for b in bs], 2),
        fmt([b["produce_vs_disk_group_commit"] for b in bs], 2),
        fmt([b.get("produce_vs_disk_fsync_per_batch") for b in bs], 2),
        fmt([b["produce_vs_loopback"] for b in bs], 2),
        fmt([b["consume_vs_loopback"] or None for b in bs], 2),
    ]) + " |")

if stalled:
    print()
    print(f"{len(stalled)} run(s) in which the tool stalled were repeated and are not in the tables: "
          + ", ".join(os.path.basename(f) for f in stalled))
