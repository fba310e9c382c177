#!/bin/bash
# usage: ab4.sh OUT ROUNDS P B RATE variant...   variant = name:binary[:ENV=1]
OUT=$1; R=$2; P=$3; B=$4; RATE=$5; shift 5
mkdir -p $OUT
C="/tmp/bins/odradek-bench-new --quiet --message-size 1024 --data-dir ${DATA:-/work/main/target/benchdata} --consumers 0 --duration 8s --warmup 4s --acks 1"
n=p$P-$B
for i in $(seq 1 $R); do
  for spec in "$@"; do
    IFS=: read v bin envv <<< "$spec"
    env $envv $C --broker-bin $bin --partitions $P --batch-size $B --rate $RATE --json $OUT/$v-$n-$i.json > $OUT/$v-$n-$i.txt 2>&1
    echo "$n $v $i $(grep -E '^produce' $OUT/$v-$n-$i.txt | cut -c30-) | $(grep -o 'p99 ≤ [0-9.]* ms' $OUT/$v-$n-$i.txt) | $(grep -o 'stolen [0-9.]* %' $OUT/$v-$n-$i.txt) | $(grep -o 'broker [0-9.]* s ([0-9.]* s/GB)' $OUT/$v-$n-$i.txt) | $(grep -o '[0-9]* inline, [0-9]* on io-wq ([0-9]* sw' $OUT/$v-$n-$i.txt)"
  done
done
