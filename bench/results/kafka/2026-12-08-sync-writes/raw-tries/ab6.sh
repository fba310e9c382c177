#!/bin/bash
# usage: ab6.sh OUT ROUNDS P B RATE ticks...
OUT=$1; R=$2; P=$3; B=$4; RATE=$5; shift 5
mkdir -p $OUT
C="/tmp/bins/odradek-bench-new --broker-bin /tmp/bins/odradek-new --quiet --message-size 1024 --data-dir ${DATA:-/work/main/target/benchdata} --consumers 0 --duration 8s --warmup 4s --acks 1"
n=p$P-$B
for i in $(seq 1 $R); do
  for tk in "$@"; do
    v=tick$tk
    $C --partitions $P --batch-size $B --rate $RATE --tick-us $tk --json $OUT/$v-$n-$i.json > $OUT/$v-$n-$i.txt 2>&1
    echo "$n $v $i $(grep -E '^produce' $OUT/$v-$n-$i.txt | cut -c30-) | rt $(grep 'request round trip' $OUT/$v-$n-$i.txt | awk '{print $7}') late $(grep 'batch late' $OUT/$v-$n-$i.txt | awk '{print $7}') | $(grep -o 'p99 ≤ [0-9.]* ms' $OUT/$v-$n-$i.txt) | $(grep -o 'stolen [0-9.]* %' $OUT/$v-$n-$i.txt) | $(grep -o 'client [0-9.]* s ([0-9.]* s/GB)' $OUT/$v-$n-$i.txt) $(grep -o 'broker [0-9.]* s ([0-9.]* s/GB)' $OUT/$v-$n-$i.txt)"
  done
done
