#!/usr/bin/env python3
"""docs/benchmarks.md "The replicated path": a 3-broker Odradek cluster on
this machine (loopback, each broker its own data directory and one shard),
benchmarked through --bootstrap with topics of replication factor 3 and 1,
acks=all and acks=1, 1 and 4 partitions, max rate; RUNS rounds,
interleaved, a fresh cluster per run. The brokers' CPU (all three) comes
from /proc/PID/stat, the broker's Produce time from the metrics of the
broker the bench bootstraps from (it leads some partitions, not all).

    cargo build --release -p odradek-bench -p odradek
    python3 bench/results/kafka/2026-12-03-replicated/run.py OUT RUNS [NAME[@RATE],...]

With NAME or NAME@RATE arguments only those configurations run, at max
rate or open loop at RATE messages/s as NAME-half (the half-rate rows).
With OLD_ODRADEK set to an odradek binary, every configuration runs on it
(old-NAME) and on this build's (new-NAME), the order swapped every round.
"""
import json, os, shutil, socket, subprocess, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import matrix

out, runs = sys.argv[1], int(sys.argv[2])
exe, data = matrix.paths(out)
odradek = os.path.join(os.path.dirname(exe), "odradek")
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def start_cluster(root, odradek, n=3):
    ids = range(1, n + 1)
    kafka = {i: free_port() for i in ids}
    raft = {i: free_port() for i in ids}
    metrics = {i: free_port() for i in ids}
    voters = ",".join(f"{i}@127.0.0.1:{raft[i]}" for i in ids)
    brokers = ",".join(f"{i}@127.0.0.1:{kafka[i]}" for i in ids)
    procs = {}
    for i in ids:
        d = os.path.join(root, f"node{i}")
        os.makedirs(d)
        procs[i] = subprocess.Popen(
            [odradek, "serve", "--listeners", f"127.0.0.1:{kafka[i]}", "--log-dirs", d,
             "--metrics-listener", f"127.0.0.1:{metrics[i]}", "--shards", "1", "--log-level", "warn",
             "--set", f"node.id={i}", "--set", f"controller.quorum.voters={voters}",
             "--set", f"cluster.brokers={brokers}"],
            stdout=open(os.path.join(root, f"node{i}.log"), "w"), stderr=subprocess.STDOUT)
    for i in ids:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", kafka[i]), 1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit(f"broker {i} did not listen")
                time.sleep(0.1)
    return procs, kafka, metrics


configs = {
    f"rf{rf}-acks{acks}-p{p}": ["--replication-factor", str(rf), "--acks", acks, "--partitions", str(p)]
    for rf in (3, 1) for acks in ("all", "1") for p in (1, 4)
}
common = ["--quiet", "--message-size", "1024", "--consumers", "0", "--batch-size", "256KiB",
          "--duration", "8s", "--warmup", "4s"]
if len(sys.argv) > 3:
    chosen = {}
    for x in sys.argv[3].split(","):
        name, _, rate = x.partition("@")
        if rate:
            chosen[f"{name}-half"] = configs[name] + ["--rate", rate]
        else:
            chosen[name] = configs[name]
    configs = chosen
builds = [("", odradek)]
if os.environ.get("OLD_ODRADEK"):
    builds = [("old-", os.environ["OLD_ODRADEK"]), ("new-", odradek)]
runs_of = [(i, b + name, args, binary)
           for i in range(1, runs + 1)
           for name, args in configs.items()
           for b, binary in (builds if i % 2 else builds[::-1])]
for i, name, args, binary in runs_of:
        root = os.path.join(data, "cluster")
        shutil.rmtree(root, ignore_errors=True)
        procs, kafka, metrics = start_cluster(root, binary)
        before = {b: cpu_s(p.pid) for b, p in procs.items()}
        path = os.path.join(out, f"{name}-{i}.json")
        t0 = time.time()
        r = subprocess.run([exe, "--bootstrap", f"127.0.0.1:{kafka[1]}",
                            "--broker-metrics", f"127.0.0.1:{metrics[1]}"] + common + args
                           + ["--json", path], capture_output=True, text=True)
        cpu = sum(cpu_s(p.pid) - before[b] for b, p in procs.items())
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(30)
        if r.returncode != 0:
            print(name, i, "failed:", r.stdout[-2000:], r.stderr[-2000:], flush=True)
            continue
        j = json.load(open(path))
        # all three brokers' CPU over the whole run (setup and warm-up too),
        # per GB produced in all (warm-up included)
        gb = j["produce"]["messages_total"] * 1024 / 1e9
        j["cluster_cpu_s"] = cpu
        j["cluster_cpu_s_per_gb"] = cpu / gb if gb else None
        json.dump(j, open(path, "w"), indent=1)
        m, p = j["machine"], j["produce"]
        lat = p["latency"] or {}
        print(f"{name} #{i}: {p['mb_per_s']:.0f} MB/s p50 {lat.get('p50_ms', 0):.2f} p99 {lat.get('p99_ms', 0):.2f} ms "
              f"errors {p['errors']} cluster CPU {cpu:.1f} s ({j['cluster_cpu_s_per_gb'] or 0:.2f} s/GB) "
              f"client {j['client_cpu_s_per_gb']:.2f} s/GB steal {m['cpu_steal_pct']:.1f} % "
              f"({time.time() - t0:.0f} s)", flush=True)
