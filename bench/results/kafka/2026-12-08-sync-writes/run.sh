#!/bin/bash
# docs/benchmarks.md "Writes during a sync": half-rate acks=1, a broker built
# before the change (OLD = an odradek binary) against this build's, OLD and
# NEW alternated, ROUNDS rounds per config; a config is "PARTITIONS BATCH RATE".
#
#   cargo build --release -p odradek-bench -p odradek
#   bash bench/results/kafka/2026-12-08-sync-writes/run.sh OUT OLD 5 \
#       "4 256KiB 684000" "4 64KiB 482791" "1 64KiB 419027" "1 256KiB 692409"
#   python3 bench/results/kafka/summarize.py OUT
#
# DATA=DIR puts the brokers' data there (default target/benchdata); see
# journaled-ext4.sh for a journaled ext4 to point it at.
set -u
OUT=$1; OLD=$2; R=$3; shift 3
ROOT=$(cd "$(dirname "$0")/../../../.." && pwd)
DATA=${DATA:-$ROOT/target/benchdata}
mkdir -p "$OUT" "$DATA"
C="$ROOT/target/release/odradek-bench --quiet --message-size 1024 --data-dir $DATA --consumers 0 --duration 8s --warmup 4s --acks 1"
for cfg in "$@"; do
  set -- $cfg; P=$1; B=$2; RATE=$3; n=p$P-$B
  for i in $(seq 1 "$R"); do
    for v in base new; do
      bin=$ROOT/target/release/odradek; [ $v = base ] && bin=$OLD
      $C --broker-bin "$bin" --partitions "$P" --batch-size "$B" --rate "$RATE" \
        --json "$OUT/$v-$n-$i.json" > "$OUT/$v-$n-$i.txt" 2>&1
      echo "$n $v $i $(grep -E '^produce' "$OUT/$v-$n-$i.txt" | cut -c30-)"
    done
  done
done
