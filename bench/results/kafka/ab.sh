#!/bin/sh
# Shared by the before/after scripts in the dated folders: run one
# configuration with the old and the new build, the old first.
#   OLD=dir NEW=dir sh ab.sh OUT_DIR NAME BENCH_ARGS...
# OLD and NEW are directories holding odradek-bench and the odradek it
# starts; the JSON goes to OUT_DIR/old-NAME.json and OUT_DIR/new-NAME.json.
set -e
out=${1:?OUT_DIR}
name=${2:?NAME}
shift 2
root=$(dirname "$0")/../../..
mkdir -p "$out" "$root/target/benchdata"
for v in old new; do
  dir=$OLD; [ $v = new ] && dir=$NEW
  "$dir/odradek-bench" --quiet --broker-bin "$dir/odradek" --data-dir "$root/target/benchdata" \
    "$@" --json "$out/$v-$name.json" > /dev/null 2>&1
done
