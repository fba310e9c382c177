#!/bin/sh
# Consume of a 1 GB page-cache backlog, the bench client before and after
# fetching ahead (docs/benchmarks.md "Fetch ahead"): 3 interleaved rounds.
#   OLD=dir-of-the-build-before NEW=target/release sh run.sh OUT_DIR
# (the run in the docs had the same odradek in both directories)
set -e
ab=$(dirname "$0")/../ab.sh
for r in 1 2 3; do
  for p in 1 4; do
    sh "$ab" "${1:?OUT_DIR}" "p$p-$r" --message-size 1024 --partitions $p --batch-size 256KiB \
      --consume-phase after --messages 1000000 --acks 1
  done
done
