#!/usr/bin/env bash
# test/fuzz/run.sh [--seconds N | --runs N] [TARGET...]
#
# Builds the libFuzzer targets of kms/ with clang (ASan and UBSan on,
# -fsanitize=fuzzer) and runs each on a copy of its checked-in seed corpus
# (test/fuzz/corpus/<target>), either for N seconds (default 10) or for N
# executions.  Prints TAP, one check per target, with its executions and
# crashes; a crash leaves its input in $FUZZ_OUT and fails the check.
# `make fuzz` and the test suite (5 s a target) run this;
# test/bench/bench_fuzz.sh runs 10 million executions a target.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODE=-max_total_time=10
LABEL="10 s"
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) MODE=-max_total_time=$2; LABEL="$2 s"; shift 2 ;;
    --runs) MODE=-runs=$2; LABEL="$2 runs"; shift 2 ;;
    *) break ;;
    esac
done
TARGETS=${*:-ciphertext keyfile options pgremote secret wrapped}
OUT=${FUZZ_OUT:-$(mktemp -d /tmp/keysmith-fuzz.XXXXXX)}
BIN=$OUT/bin
mkdir -p "$BIN"
CC=${FUZZ_CC:-clang}
KMS=$(ls "$ROOT"/kms/*.c | tr "\n" " ")

n=$(wc -w <<<"$TARGETS")
echo "1..$n"
i=0
failed=0
for t in $TARGETS; do
    i=$((i + 1))
    if ! $CC -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
            -I"$ROOT/kms" -o "$BIN/fuzz_$t" "$ROOT/test/fuzz/fuzz_$t.c" $KMS \
            -lcrypto -ljansson -lcurl -lm >"$OUT/build-$t.log" 2>&1; then
        echo "not ok $i - fuzz_$t builds"
        sed 's/^/# /' "$OUT/build-$t.log" | head -20
        failed=1
        continue
    fi
    corpus=$OUT/corpus-$t
    rm -rf "$corpus"; cp -r "$ROOT/test/fuzz/corpus/$t" "$corpus"
    (cd "$OUT" && "$BIN/fuzz_$t" $MODE -print_final_stats=1 -artifact_prefix="$OUT/crash-$t-" \
        "$corpus" >"$OUT/run-$t.log" 2>&1)
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/run-$t.log" | tail -1)
    # A "slow unit" (libFuzzer: one input over 10 s) is a crash only if it
    # is slow again on its own: a loaded machine stalls a fuzzer too.
    for slow in "$OUT"/crash-"$t"-slow-unit-*; do
        [ -e "$slow" ] || continue
        if timeout 5 "$BIN/fuzz_$t" "$slow" >/dev/null 2>&1; then
            echo "# fuzz_$t: a unit took over 10 s under load and runs at once on its own: $slow"
            mv "$slow" "$OUT/noted-$t-$(basename "$slow")"
        fi
    done
    crashes=$(ls "$OUT"/crash-"$t"-* 2>/dev/null | wc -l)
    if [ $rc -eq 0 ] && [ "$crashes" = 0 ] && [ -n "$execs" ] && [ "$execs" -gt 0 ]; then
        echo "ok $i - fuzz_$t ($LABEL): ${execs} executions, 0 crashes"
    else
        echo "not ok $i - fuzz_$t ($LABEL): ${execs:-no} executions, $crashes crashes (exit $rc; inputs in $OUT)"
        grep -E 'ERROR|SUMMARY|runtime error' "$OUT/run-$t.log" | head -10 | sed 's/^/# /'
        failed=1
    fi
done
[ -z "${FUZZ_OUT:-}" ] && [ $failed = 0 ] && rm -rf "$OUT"
exit $failed
