#!/bin/bash
OUT=$1; R=$2; P=$3; B=$4; RATE=$5
mkdir -p $OUT
C="/tmp/bins/odradek-bench-new --broker-bin /tmp/bins/odradek-new --quiet --message-size 1024 --data-dir ${DATA:-/work/main/target/benchdata} --consumers 0 --duration 8s --warmup 4s --acks 1"
n=p$P-$B
for i in $(seq 1 $R); do
  for v in plain nice; do
    if [ $v = nice ]; then /tmp/b/renicer.sh & RN=$!; fi
    $C --partitions $P --batch-size $B --rate $RATE --json $OUT/$v-$n-$i.json > $OUT/$v-$n-$i.txt 2>&1
    if [ $v = nice ]; then kill $RN; wait $RN 2>/dev/null; fi
    echo "$n $v $i $(grep -E '^produce' $OUT/$v-$n-$i.txt | cut -c30-) | rt $(grep 'request round trip' $OUT/$v-$n-$i.txt | awk '{print $7}') | $(grep -o 'p99 ≤ [0-9.]* ms' $OUT/$v-$n-$i.txt) | $(grep -o 'stolen [0-9.]* %' $OUT/$v-$n-$i.txt) | $(grep -o 'broker [0-9.]* s ([0-9.]* s/GB)' $OUT/$v-$n-$i.txt)"
  done
done
