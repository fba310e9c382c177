#!/usr/bin/env bash
# Fuzzing the storage engine on the stable toolchain (see docs/fuzzing.md).
#
#   fuzz/run.sh smoke                    CI: build, replay seeds + regressions,
#                                        then fuzz each target briefly
#   fuzz/run.sh long SECONDS [TARGET...] fuzz each target (default: all) for
#                                        SECONDS, one after the other
#
# Environment: SMOKE_SECONDS (default 20) per target in smoke mode;
# FUZZ_OUT (default fuzz/target) for runtime corpora and logs.
# Exits non-zero if any target crashes.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGETS=(batch_validate index_load segment_recovery log_ops producer_snapshot compact_batch)
# --sanitizer none: AddressSanitizer needs nightly (-Zsanitizer). -O -a:
# optimized, but with debug assertions and overflow checks.
FLAGS=(--sanitizer none -O -a)
# Per-input timeout (s): catches hangs, e.g. a future that never completes.
LIBFUZZER=(-timeout=10 -print_final_stats=1)
OUT=${FUZZ_OUT:-$ROOT/fuzz/target}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found: installing it (takes about 1-2 minutes)" >&2
    cargo install cargo-fuzz --locked
fi

# The committed seed directory of a target, if it has one.
seeds() {
    if [ -d "fuzz/corpus/$1" ]; then echo "fuzz/corpus/$1"; fi
}

build() {
    cargo fuzz build "${FLAGS[@]}"
}

smoke() {
    local secs=${SMOKE_SECONDS:-20} t
    build
    for t in "${TARGETS[@]}"; do
        if compgen -G "fuzz/corpus/$t/*" >/dev/null; then
            echo "=== $t: replay seed corpus"
            cargo fuzz run "${FLAGS[@]}" "$t" "fuzz/corpus/$t" -- -runs=0 "${LIBFUZZER[@]}"
        fi
        if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
            echo "=== $t: replay regressions"
            cargo fuzz run "${FLAGS[@]}" "$t" fuzz/regressions/"$t"/* -- "${LIBFUZZER[@]}"
        fi
        echo "=== $t: fuzz ${secs}s"
        rm -rf "$OUT/smoke-corpus/$t"
        mkdir -p "$OUT/smoke-corpus/$t"
        cargo fuzz run "${FLAGS[@]}" "$t" "$OUT/smoke-corpus/$t" $(seeds "$t") -- \
            -max_total_time="$secs" "${LIBFUZZER[@]}"
    done
    echo "smoke: all targets passed"
}

long() {
    local secs=$1 t failed=0
    shift
    local targets=("$@")
    [ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")
    build
    mkdir -p "$OUT/logs"
    for t in "${targets[@]}"; do
        mkdir -p "$OUT/corpus/$t"
        local log="$OUT/logs/$t.log"
        echo "=== $t: ${secs}s, log $log"
        # One job, no -fork/-jobs: one core for the fuzzer.
        if ! cargo fuzz run "${FLAGS[@]}" "$t" "$OUT/corpus/$t" $(seeds "$t") -- \
            -max_total_time="$secs" "${LIBFUZZER[@]}" >"$log" 2>&1; then
            echo "!!! $t crashed: see $log and fuzz/artifacts/$t/"
            failed=1
        fi
        grep -E '^(Done|stat::)' "$log" || true
    done
    return $failed
}

case "${1:-}" in
    smoke) smoke ;;
    long)
        [ $# -ge 2 ] || { echo "usage: $0 long SECONDS [TARGET...]" >&2; exit 2; }
        shift
        long "$@"
        ;;
    *)
        echo "usage: $0 smoke | long SECONDS [TARGET...]" >&2
        exit 2
        ;;
esac
