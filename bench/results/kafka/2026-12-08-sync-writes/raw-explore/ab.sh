#!/bin/bash
# usage: ab.sh OUT ROUNDS RATE PARTS BATCH
OUT=$1; R=$2; RATE=$3; P=$4; B=$5
mkdir -p $OUT
for i in $(seq 1 $R); do
  for v in base exp; do
    if [ $v = exp ]; then export ODRADEK_EXP_INLINE=1; else unset ODRADEK_EXP_INLINE; fi
    /tmp/bins/odradek-bench --broker-bin ${BIN:-/tmp/bins/odradek-exp} --quiet --message-size 1024 --data-dir ${DATA:-/work/main/target/benchdata} --consumers 0 --duration 8s --warmup 4s --partitions $P --batch-size $B --acks 1 --rate $RATE --json $OUT/$v-$i.json > $OUT/$v-$i.txt 2>&1
    echo "$v $i $(grep -E '^produce' $OUT/$v-$i.txt) | $(grep -o 'p99 ≤ [0-9.]* ms' $OUT/$v-$i.txt) | $(grep -o 'stolen [0-9.]* %' $OUT/$v-$i.txt)"
  done
done
