#!/bin/sh
# Rolls off the append path (docs/benchmarks.md): open-loop acks=1 at half
# the max rate, 1 partition, 64 KiB batches, with the default 1 GiB segments
# and with 128 MiB ones (8x the rolls), the build before and after,
# interleaved, 3 rounds.
#   OLD=dir-with-old-odradek-bench NEW=target/release sh run.sh OUT_DIR
set -e
out=${1:?OUT_DIR}
here=$(dirname "$0")
root=$here/../../../..
mkdir -p "$out" "$root/target/benchdata"
for r in 1 2 3; do
  for v in old new; do
    dir=$OLD; [ $v = new ] && dir=$NEW
    for seg in 1073741824 134217728; do
      "$dir/odradek-bench" --quiet --broker-bin "$dir/odradek" --data-dir "$root/target/benchdata" \
        --message-size 1024 --partitions 1 --batch-size 64KiB --consumers 0 --acks 1 \
        --duration 8s --warmup 4s --rate 412990 --broker-set log.segment.bytes=$seg \
        --json "$out/$v-seg$seg-$r.json" > /dev/null 2>&1
    done
  done
done
