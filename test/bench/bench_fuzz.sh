#!/usr/bin/env bash
# test/bench/bench_fuzz.sh [RUNS]
#
# The long fuzz run: each libFuzzer target of kms/ (test/fuzz/) for RUNS
# executions (default 10 million), with ASan and UBSan.  Prints each
# target's executions and crashes, and exits non-zero if any target
# crashed or stopped short: a figure is printed only for work that finished.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUNS=${1:-10000000}
start=$(date +%s)
out=$(bash "$ROOT/test/fuzz/run.sh" --runs "$RUNS")
rc=$?
echo "$out"
short=0
while read -r line; do
    execs=$(sed -n 's/.*: \([0-9]*\) executions.*/\1/p' <<<"$line")
    [ -n "$execs" ] && [ "$execs" -lt "$RUNS" ] && short=1
done < <(grep '^ok' <<<"$out")
echo "fuzz: $(grep -c '^ok' <<<"$out") targets at $RUNS executions each in $(( $(date +%s) - start )) s"
if [ $rc -ne 0 ] || [ $short -ne 0 ]; then
    echo "fuzz: FAILED (a crash, or a target that stopped before $RUNS executions)"
    exit 1
fi
