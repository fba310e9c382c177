#!/bin/sh
# Compressed produce + consume against a started broker and against the sink
# (docs/benchmarks.md "Compression"): 3 interleaved rounds.
#   cargo build --release -p odradek-bench -p odradek
#   sh bench/results/kafka/2026-12-01-compression/run.sh OUT_DIR
set -e
out=${1:?OUT_DIR}
here=$(dirname "$0")
exe=$here/../../../../target/release/odradek-bench
mkdir -p "$out" "$here/../../../../target/benchdata"
common="--quiet --message-size 1024 --partitions 2 --producers 2 --batch-size 256KiB --payload words --duration 6s --warmup 2s --data-dir $here/../../../../target/benchdata"
for round in 1 2 3; do
  for c in none lz4 zstd; do
    "$exe" $common --compression $c --consumers 1 --json "$out/broker-$c-$round.json" > "$out/broker-$c-$round.txt" 2>&1
    "$exe" $common --compression $c --consumers 0 --sink --json "$out/sink-$c-$round.json" > "$out/sink-$c-$round.txt" 2>&1
  done
done
