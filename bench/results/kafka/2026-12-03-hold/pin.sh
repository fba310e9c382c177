#!/bin/bash
# docs/benchmarks.md "Tried, not kept: client and broker on their own CPUs":
# half-rate acks=1 rows, the broker started by hand (pinned: taskset -c 1,
# the tool taskset -c 0) against both unpinned. Usage: pin.sh OUT ROUNDS
root=$(cd "$(dirname "$0")/../../../.." && pwd)
B=$root/target/release/odradek-bench; O=$root/target/release/odradek
out=$1; rounds=$2; mkdir -p $out
for i in $(seq 1 $rounds); do
 for cfg in "64k-p1 1 64KiB 311596" "256k-p4 4 256KiB 630594"; do
  set -- $cfg; name=$1; p=$2; bs=$3; rate=$4
  for mode in free pinned; do
    d=$root/target/benchdata/pin; rm -rf $d; mkdir -p $d
    if [ $mode = pinned ]; then pre="taskset -c 1"; cpre="taskset -c 0"; else pre=""; cpre=""; fi
    $pre $O serve --listeners 127.0.0.1:19092 --log-dirs $d --metrics-listener 127.0.0.1:19644 > $out/broker.log 2>&1 &
    bp=$!; sleep 1
    $cpre $B --bootstrap 127.0.0.1:19092 --broker-metrics 127.0.0.1:19644 --topic-prefix pin-$name-$mode-$i --partitions $p --batch-size $bs --rate $rate --acks 1 --consumers 0 --duration 8s --warmup 4s --quiet --json $out/$mode-$name-$i.json > $out/last.txt 2>&1
    bcpu=$(awk '{print ($14+$15)/100}' /proc/$bp/stat)
    kill $bp; wait $bp 2>/dev/null
    python3 -c "
import json; r=json.load(open('$out/$mode-$name-$i.json')); p=r['produce']; b=r['produce_breakdown']; bp=r.get('broker_produce') or {}; m=r['machine']
cum=dict((a,c) for a,c in bp.get('cumulative',[]))
g=lambda k: (b.get(k) or {}).get('p99_ms',0)
print('$mode $name #$i: %.0f MB/s p99 %.2f late %.2f q %.2f rt %.2f b<=1ms %.3f steal %.1f broker cpu $bcpu s' % (p['mb_per_s'], p['latency']['p99_ms'], g('batch_late'), g('batch_queued'), g('request_round_trip'), cum.get(1.0,0), m['cpu_steal_pct']))"
  done
 done
done
