#!/bin/bash
# usage: ab8.sh OUT ROUNDS P B RATE SEGBYTES   new vs preroll
OUT=$1; R=$2; P=$3; B=$4; RATE=$5; SB=$6
mkdir -p $OUT
C="/tmp/bins/odradek-bench-new --quiet --message-size 1024 --data-dir ${DATA:-/work/main/target/benchdata} --consumers 0 --duration 8s --warmup 4s --acks 1"
n=p$P-$B-seg$SB
for i in $(seq 1 $R); do
  for v in new preroll; do
    $C --broker-bin /tmp/bins/odradek-$v --partitions $P --batch-size $B --rate $RATE --broker-set log.segment.bytes=$SB --json $OUT/$v-$n-$i.json > $OUT/$v-$n-$i.txt 2>&1
    echo "$n $v $i $(grep -E '^produce' $OUT/$v-$n-$i.txt | cut -c30-) | rt $(grep 'request round trip' $OUT/$v-$n-$i.txt | awk '{print $7, $8}') | $(grep -o 'p99 ≤ [0-9.]* ms, p99.9 ≤ [0-9.]* ms' $OUT/$v-$n-$i.txt) | $(grep -o 'stolen [0-9.]* %' $OUT/$v-$n-$i.txt) | $(grep -o '[0-9]* fdatasyncs' $OUT/$v-$n-$i.txt)"
  done
done
