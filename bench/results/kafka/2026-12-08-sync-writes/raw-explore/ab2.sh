#!/bin/bash
# usage: ab2.sh OUT ROUNDS "P B" ...   max once (base), then half-rate A/B
OUT=$1; R=$2; shift 2
mkdir -p $OUT
C="/tmp/bins/odradek-bench --broker-bin ${BIN:-/tmp/bins/odradek-exp} --quiet --message-size 1024 --data-dir ${DATA:-/work/main/target/benchdata} --consumers 0 --duration 8s --warmup 4s --acks 1"
for cfg in "$@"; do
  set -- $cfg; P=$1; B=$2; n=p$P-$B
  unset ODRADEK_EXP_INLINE
  $C --partitions $P --batch-size $B --json $OUT/max-$n.json > $OUT/max-$n.txt 2>&1
  RATE=$(python3 -c "import json;print(round(json.load(open('$OUT/max-$n.json'))['produce']['msgs_per_s']/2))")
  echo "$n max $(grep ^produce $OUT/max-$n.txt | cut -c30-) -> half $RATE"
  for i in $(seq 1 $R); do
    for v in base exp; do
      if [ $v = exp ]; then export ODRADEK_EXP_INLINE=1; else unset ODRADEK_EXP_INLINE; fi
      $C --partitions $P --batch-size $B --rate $RATE --json $OUT/$v-$n-$i.json > $OUT/$v-$n-$i.txt 2>&1
      echo "$n $v $i $(grep -E '^produce' $OUT/$v-$n-$i.txt | cut -c30-) | rt $(grep 'request round trip' $OUT/$v-$n-$i.txt | awk '{print $6}') | $(grep -o 'p99 ≤ [0-9.]* ms' $OUT/$v-$n-$i.txt) | $(grep -o 'stolen [0-9.]* %' $OUT/$v-$n-$i.txt) | $(grep -o 'broker [0-9.]* s ([0-9.]* s/GB)' $OUT/$v-$n-$i.txt)"
    done
  done
done
