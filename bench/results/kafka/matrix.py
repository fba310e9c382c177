"""Shared by the matrix scripts (run.py here and in dated folders): run one
odradek-bench configuration into OUT, and the median max rate of a
configuration's runs."""
import json, os, statistics, subprocess


# A run in which the tool itself stalled this long measured the machine or
# the tool, not the broker (report `machine.tool_stall_s`, whole process,
# and `machine.runtime_stall_s`, its async runtime): it is kept aside as
# NAME-I.stalled-K.json and run again, at most STALL_RETRIES times.
STALL_S = 0.5
STALL_RETRIES = 2


def run(exe, out, name, argv, i):
    """Run `exe argv` as run `i` of `name`, JSON and SVG into `out`."""
    path = os.path.join(out, f"{name}-{i}.json")
    svg = os.path.join(out, f"{name}-{i}.svg")
    for attempt in range(STALL_RETRIES + 1):
        load = open("/proc/loadavg").read().split()[:3]
        cmd = [exe] + argv + ["--json", path, "--svg", svg]
        print(f"[{name} #{i}] load {' '.join(load)}: {' '.join(cmd[1:])}", flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout, r.stderr)
            return
        for line in r.stdout.splitlines():
            if line.startswith(("produce", "consume", "ratios", "CPU", "warning")):
                print("   ", line, flush=True)
        m = json.load(open(path))["machine"]
        stall = max(m.get("tool_stall_s", 0.0), m.get("runtime_stall_s", 0.0))
        if stall < STALL_S or attempt == STALL_RETRIES:
            return
        aside = os.path.join(out, f"{name}-{i}.stalled-{attempt + 1}")
        os.replace(path, aside + ".json")
        os.replace(svg, aside + ".svg")
        print(f"    the tool stalled {stall:.1f} s: kept as {aside}.json, run again", flush=True)


def median_rate(out, name, runs):
    """Median produce msgs/s over the runs of `name` found in `out`."""
    vals = []
    for i in range(1, runs + 1):
        try:
            vals.append(json.load(open(os.path.join(out, f"{name}-{i}.json")))["produce"]["msgs_per_s"])
        except FileNotFoundError:
            pass
    return statistics.median(vals)


def paths(out):
    """The release odradek-bench and the data directory under target/,
    with `out` and the data directory created."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../..")
    exe = os.path.join(root, "target/release/odradek-bench")
    data = os.path.join(root, "target/benchdata")
    os.makedirs(out, exist_ok=True)
    os.makedirs(data, exist_ok=True)
    return exe, data


def abba(exe, out, common, configs, variants, runs, only=None):
    """RUNS rounds of every configuration in `only` (default: all), each
    run once per variant (a name prefix and its extra arguments), the
    variants' order swapped every round: a run can be slowed by the one
    before it."""
    order = list(variants.items())
    for i in range(1, runs + 1):
        for name, args in configs.items():
            if only is not None and name not in only:
                continue
            for v, extra in (order if i % 2 else order[::-1]):
                run(exe, out, f"{v}-{name}", common + args + extra, i)
