#!/bin/sh
# Consume of a 1 GB page-cache backlog, the bench client before and after
# fetching ahead (docs/benchmarks.md "Fetch ahead"): 3 interleaved rounds.
#   OLD=path/to/odradek-bench-before NEW=target/release/odradek-bench sh run.sh OUT_DIR
set -e
out=${1:?OUT_DIR}
here=$(dirname "$0")
root=$here/../../../..
mkdir -p "$out" "$root/target/benchdata"
for r in 1 2 3; do
  for v in old new; do
    exe=$OLD; [ $v = new ] && exe=$NEW
    for p in 1 4; do
      "$exe" --quiet --broker-bin "$root/target/release/odradek" --data-dir "$root/target/benchdata" \
        --message-size 1024 --partitions $p --batch-size 256KiB --consume-phase after \
        --messages 1000000 --acks 1 --json "$out/$v-p$p-$r.json" > /dev/null 2>&1
    done
  done
done
