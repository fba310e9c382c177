#!/bin/sh
# The first look (docs/benchmarks.md "Smaller background flushes"): acks=1,
# 64 KiB batches, 1 partition, open loop at 412990 msg/s (the half rate of
# the 2026-12-02 quiet matrix), one build, 3 rounds, with the background
# flush threshold (log.flush.interval.bytes) at 1, 2, 4, 8, 16 and 64 MiB
# (def = 16 MiB, the old default) and with no background flush at all
# (nobg: 64 GiB / 1 h). Then --tick-us 1000 / 250 / 100 at 496212 msg/s
# (half the new 64 KiB max) with the new default, the cap runs, backlog
# consume, and 4 partitions. JSON into OUT/raw-explore, OUT/raw-tick and
# OUT/raw-consume.
#   sh explore.sh OUT_DIR
set -e
out=${1:?OUT_DIR}
root=$(dirname "$0")/../../../..
b="$root/target/release/odradek-bench"
mkdir -p "$out/raw-explore" "$out/raw-tick" "$out/raw-consume" "$root/target/benchdata"
# bench NAME ARGS...: one run, JSON to OUT/NAME.json.
bench() { name=$1; shift
  "$b" --quiet --data-dir "$root/target/benchdata" --message-size 1024 "$@" \
    --json "$out/$name.json" > /dev/null 2>&1; }
# run: acks=1, 64 KiB, 1 partition, 8 s after 4 s; runc: backlog consume.
run() { name=$1; shift
  bench "$name" --partitions 1 --batch-size 64KiB --consumers 0 --acks 1 \
    --duration 8s --warmup 4s "$@"; }
runc() { name=$1; shift
  bench "$name" --batch-size 256KiB --consume-phase after --acks 1 "$@"; }
for r in 1 2 3; do
  run raw-explore/def-64k-$r --rate 412990 --broker-set log.flush.interval.bytes=16777216
  run raw-explore/nobg-64k-$r --rate 412990 --broker-set log.flush.interval.bytes=68719476736 \
    --broker-set log.flush.interval.ms=3600000
done
# Two passes: 4, 16, 64 MiB (fb*), then 1, 2, 4, 8 MiB (fc*).
for r in 1 2 3; do
  for m in 4 16 64; do
    run raw-explore/fb${m}m-64k-$r --rate 412990 --broker-set log.flush.interval.bytes=$((m << 20))
  done
done
for r in 1 2 3; do
  for m in 1 2 4 8; do
    run raw-explore/fc${m}m-64k-$r --rate 412990 --broker-set log.flush.interval.bytes=$((m << 20))
  done
done
for r in 1 2 3; do
  for t in 1000 250 100; do run raw-tick/tick$t-64k-$r --rate 496212 --tick-us $t; done
done
# 64 MiB with no timer, before the engine capped unsynced bytes (cap64),
# then background flushes off after it (capped-nobg, 6 runs) interleaved
# from run 4 with the default (capped-default).
for r in 1 2 3; do
  run raw-explore/cap64-$r --rate 412990 --broker-set log.flush.interval.bytes=67108864 \
    --broker-set log.flush.interval.ms=3600000
done
for r in 1 2 3 4 5 6; do
  run raw-explore/capped-nobg-64k-$r --rate 412990 --broker-set log.flush.interval.bytes=68719476736 \
    --broker-set log.flush.interval.ms=3600000
  [ $r -ge 4 ] && run raw-explore/capped-default-64k-$r --rate 412990
done
# Backlog consume (raw-consume/): the new default at 1 and 4 partitions,
# then 16 MiB (old) against the default (new), the OS managing the cache
# (oscache) and a 512 MB backlog (half).
for r in 1 2 3; do for p in 1 4; do
  runc raw-consume/backlog-256k-p$p-$r --messages 1000000 --partitions $p
done; done
for r in 1 2 3 4; do
  runc raw-consume/old-backlog-256k-p1-$r --messages 1000000 --broker-set log.flush.interval.bytes=16777216
  runc raw-consume/new-backlog-256k-p1-$r --messages 1000000
done
for r in 1 2 3 4; do
  runc raw-consume/oscache-$r --messages 1000000 --broker-set log.cache.bytes.per.shard=-1
  runc raw-consume/half-$r --messages 500000
done
# 4 partitions, 256 KiB, half rate: 1 MiB against 4 MiB per partition.
for r in 1 2 3; do for m in 1 4; do
  bench raw-explore/p4-fc${m}m-256k-$r --partitions 4 --batch-size 256KiB --consumers 0 \
    --acks 1 --duration 8s --warmup 4s --rate 763197 --broker-set log.flush.interval.bytes=$((m << 20))
done; done
