#!/usr/bin/env python3
# As run for docs/benchmarks.md ("Throughput work (issue #5)"); binaries were copies under /tmp/perf-*/ of each build.
"""A/B runner: python3 ab.py OUT RUNS variant=bindir ... -- config names"""
import json, os, subprocess, sys, statistics
out = sys.argv[1]; runs = int(sys.argv[2])
rest = sys.argv[3:]
sep = rest.index("--")
variants = dict(v.split("=", 1) for v in rest[:sep])
names = rest[sep+1:]
os.makedirs(out, exist_ok=True)
common = ["--duration", os.environ.get("DUR", "5s"), "--warmup", os.environ.get("WARM", "1s"), "--quiet", "--message-size", "1024",
          "--data-dir", "/work/wt-perf/target/benchdata"]
extra = os.environ.get("EXTRA", "").split()
configs = {}
for p in (1, 4):
    configs[f"acks1-p{p}"] = ["--partitions", str(p), "--consumers", "0", "--acks", "1"]
    configs[f"acksall-p{p}"] = ["--partitions", str(p), "--consumers", "0", "--acks", "all"]
    configs[f"backlog-p{p}"] = ["--partitions", str(p), "--consume-phase", "after", "--messages", "1000000", "--acks", "1"]
    configs[f"e2e-acks1-p{p}"] = ["--partitions", str(p), "--consumers", "1", "--acks", "1"]
for k in list(configs):
    configs[k + "-s1"] = configs[k] + ["--broker-shards", "1"]
for i in range(1, runs + 1):
    for name in names:
        order = list(variants.items())
        if i % 2 == 0: order.reverse()
        for vname, bindir in order:
            path = os.path.join(out, f"{name}-{vname}-{i}.json")
            load = open("/proc/loadavg").read().split()[:3]
            cmd = [os.path.join(bindir, "odradek-bench")] + common + configs[name] + extra + ["--json", path]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print("FAIL", name, vname, r.stdout[-2000:], r.stderr[-2000:], flush=True); continue
            j = json.load(open(path))
            pr = j.get("produce") or {}; co = j.get("consume") or {}
            lat = pr.get('latency') or {}
            print(f"[{name} {vname} #{i}] load {load[0]} prod {pr.get('mb_per_s', 0):.0f} MB/s cons {co.get('mb_per_s', 0):.0f} MB/s "
                  f"p99 {lat.get('p99_ms', '?')} broker {j['broker_cpu_s_per_gb']} s/GB client {j['client_cpu_s_per_gb']} s/GB", flush=True)
