#!/bin/sh
# Rolls off the append path (docs/benchmarks.md): open-loop acks=1 at half
# the max rate, 1 partition, 64 KiB batches, with the default 1 GiB segments
# and with 128 MiB ones (8x the rolls), the build before and after,
# interleaved, 3 rounds.
#   OLD=dir-of-the-build-before NEW=target/release sh run.sh OUT_DIR
set -e
ab=$(dirname "$0")/../ab.sh
for r in 1 2 3; do
  for seg in 1073741824 134217728; do
    sh "$ab" "${1:?OUT_DIR}" "seg$seg-$r" --message-size 1024 --partitions 1 --batch-size 64KiB \
      --consumers 0 --acks 1 --duration 8s --warmup 4s --rate 412990 \
      --broker-set log.segment.bytes=$seg
  done
done
