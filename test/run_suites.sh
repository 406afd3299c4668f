#!/usr/bin/env bash
# test/run_suites.sh
#
# Runs every keysmith suite against a real server started here, counts
# results and prints the closing "N passed, N failed", after a list of
# what was skipped and why and "N skipped".  Called (as root) by test/harness.sh
# test.  Each suite's output goes to $WORK/<suite>.log; failures are
# printed in full.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/test/lib.sh"

PASSED=0
FAILED=0
SKIPPED=0
SKIP_NOTES=()
WORK=$(mktemp -d /tmp/keysmith-test.XXXXXX)
export KS_WORK=$WORK
chmod 755 "$WORK"
CLUSTER=$WORK/cluster

cleanup() {
    ks_cluster_stop "$CLUSTER" immediate
    for d in "$WORK"/extra-*; do
        [ -d "$d" ] && ks_cluster_stop "$d" immediate
    done
    if [ "$FAILED" -eq 0 ] && [ -z "${KEYSMITH_KEEP:-}" ]; then
        rm -rf "$WORK"
    else
        echo "keysmith: test files kept in $WORK"
    fi
}
trap cleanup EXIT

pass() { PASSED=$((PASSED + 1)); echo "ok - $1"; }
fail() { FAILED=$((FAILED + 1)); echo "not ok - $1"; }
skip() { SKIPPED=$((SKIPPED + 1)); SKIP_NOTES+=("$1"); echo "skip - $1"; }

# closing: what was skipped and why, then the closing line
closing() {
    local n
    if [ "$SKIPPED" -gt 0 ]; then
        echo "skipped:"
        for n in "${SKIP_NOTES[@]}"; do echo "  $n"; done
    fi
    echo "$SKIPPED skipped"
    echo "$PASSED passed, $FAILED failed"
}

# tap_count NAME LOG RC: count one TAP stream (a pgTAP file, a script, the
# unit binary).  Its plan must come first; every planned check that did
# not run counts as failed, so does a missing plan, and so does a non-zero
# exit with nothing else failed.  A check marked "# SKIP reason" (ks_skip)
# counts as skipped, with its reason in the closing summary.  Failures are
# printed with their output.
tap_count() {
    local name=$1 log=$2 rc=$3 plan ok nok sk missing=0 bad=0 line
    plan=$(grep -m1 -E '^[[:space:]]*1\.\.[0-9]+[[:space:]]*$' "$log" | tr -d ' ' | cut -d. -f3)
    ok=$(grep -cE '^[[:space:]]*ok [0-9]+' "$log" || true)
    nok=$(grep -cE '^[[:space:]]*not ok [0-9]+' "$log" || true)
    sk=$(grep -cE '^[[:space:]]*ok [0-9]+.*#[[:space:]]*[Ss][Kk][Ii][Pp]' "$log" || true)
    PASSED=$((PASSED + ok - sk))
    FAILED=$((FAILED + nok))
    while IFS= read -r line; do
        skip "$name, check $(sed -E -e 's/^[[:space:]]*ok ([0-9]+)( -)?[[:space:]]*(.*[^[:space:]])?[[:space:]]*#[[:space:]]*[Ss][Kk][Ii][Pp][[:space:]]*/\1 (\3): /' \
            -e 's/ \(\): /: /' <<<"$line")" >/dev/null
    done < <(grep -E '^[[:space:]]*ok [0-9]+.*#[[:space:]]*[Ss][Kk][Ii][Pp]' "$log")
    if [ -z "$plan" ]; then
        fail "$name: no plan declared (it died before its first check?)"
        bad=1
    elif [ "$plan" -gt $((ok + nok)) ]; then
        missing=$((plan - ok - nok))
        FAILED=$((FAILED + missing))
        echo "not ok - $name: $missing of $plan planned checks did not run"
        bad=1
    elif [ "$plan" -lt $((ok + nok)) ]; then
        fail "$name: ran $((ok + nok)) checks but planned $plan"
        bad=1
    fi
    if [ "$rc" -ne 0 ] && [ "$nok" -eq 0 ] && [ "$bad" -eq 0 ]; then
        fail "$name: exited with status $rc"
        bad=1
    fi
    [ "$rc" -eq 124 ] && echo "  $name: timed out"
    echo "  $name: $((ok - sk)) passed, $((nok + missing)) failed$([ "$sk" -gt 0 ] && echo ", $sk skipped")"
    if [ "$nok" -gt 0 ] || [ "$bad" -ne 0 ]; then
        echo "  ---- failing checks of $name, with their output:"
        grep -E -A6 '^[[:space:]]*not ok [0-9]+' "$log" | sed 's/^/  | /' | head -80
        echo "  ---- last lines of $name:"
        tail -25 "$log" | sed 's/^/  | /'
    fi
}

# pgtap_file DB FILE: one pgTAP file in database DB, with a timeout
pgtap_file() {
    local db=$1 f=$2 name rc
    name=$(basename "$f" .sql)
    timeout -k 10 300 psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$db" -f "$f" >"$WORK/pgtap-$name.log" 2>&1
    rc=$?
    tap_count "pgtap/$name.sql ($db)" "$WORK/pgtap-$name.log" $rc
}

echo "== installing packages and building (-Werror)"
ks_install_packages
SAN=${KEYSMITH_SANITIZE:-0}
export KEYSMITH_SANITIZE=$SAN
[ "$SAN" = 1 ] && echo "   (SANITIZE=1: keysmith.so and the unit tests built with ASan and UBSan; servers run with the ASan runtime preloaded)"
if make -C "$ROOT" -s clean >/dev/null && make -C "$ROOT" -s KEYSMITH_WERROR=1 SANITIZE="$SAN" >"$WORK/build.log" 2>&1 \
        && make -C "$ROOT" -s install SANITIZE="$SAN" >>"$WORK/build.log" 2>&1; then
    pass "build with -Wall -Wextra -Werror and install"
else
    cat "$WORK/build.log"
    fail "build"
    closing
    exit 1
fi

echo "== C unit tests of kms/"
if make -C "$ROOT" -s KEYSMITH_WERROR=1 SANITIZE="$SAN" test/unit/test_kms >"$WORK/unit-build.log" 2>&1; then
    (cd "$ROOT" && timeout -k 10 300 ./test/unit/test_kms) >"$WORK/unit.log" 2>&1
    tap_count unit "$WORK/unit.log" $?
else
    cat "$WORK/unit-build.log"
    fail "unit test build"
fi

if [ "${KEYSMITH_SKIP_FUZZ:-0}" != 1 ]; then
    echo "== fuzzing kms/ parsers (libFuzzer, 5 s a target)"
    timeout -k 10 300 bash "$ROOT/test/fuzz/run.sh" --seconds 5 >"$WORK/fuzz.log" 2>&1
    tap_count fuzz "$WORK/fuzz.log" $?
    grep -E '^(not )?ok' "$WORK/fuzz.log" | sed 's/^/  /'
fi

echo "== starting PostgreSQL (as $PG_OSUSER, loopback only)"
ks_cluster_init "$CLUSTER"
# fixtures for the master-key-file refusals, owned by the server user;
# rotate.key is a copy of the cluster's own file (keys_lifecycle.sql adds a
# version to it): another key under version 1 would be refused (KS019)
FIX=$CLUSTER/data/fixtures
ks_as_pg mkdir -m 700 "$FIX"
ks_as_pg sh -c "umask 077
printf '1:%s\n' \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') > $FIX/other.key
printf '2:%s\n' \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') > $FIX/only-v2.key
printf '1:%s\n' \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') > $FIX/unreadable.key
printf '1:%s\n' \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') > $FIX/loose.key
cp $CLUSTER/data/keysmith_master.key $FIX/rotate.key
printf '1:not-a-key-at-all\n' > $FIX/malformed.key
printf '1:0011223344556677\n' > $FIX/short.key
printf '# only comments\n\n' > $FIX/empty.key
mkdir $FIX/directory.key
k1=\$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
printf '1:%s\n' \$k1 > $FIX/tenant.key
printf '1:%s\n2:%s\n' \$k1 \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') > $FIX/tenant-v2.key
printf '7:%s\n' \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') > $FIX/tenant-other.key
chmod 000 $FIX/unreadable.key
chmod 644 $FIX/loose.key"
ks_cluster_start "$CLUSTER"
. "$CLUSTER/env"
export KS_CLUSTER=$CLUSTER

echo "== pg_regress"
chown -R "$PG_OSUSER": "$ROOT/expected" 2>/dev/null || true
rm -rf "$ROOT/results" "$ROOT/regression.diffs" "$ROOT/regression.out"
(cd "$ROOT" && make -s installcheck PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres) >"$WORK/regress.log" 2>&1
rc=$?
ok=$(grep -cE '\.\.\. ok' "$WORK/regress.log" || true)
nok=$(grep -cE '\.\.\. FAILED|\.\.\. failed' "$WORK/regress.log" || true)
planned=$(make -C "$ROOT" -s -f Makefile print-regress 2>/dev/null | wc -w)
PASSED=$((PASSED + ok)); FAILED=$((FAILED + nok))
if [ "$planned" -gt $((ok + nok)) ]; then
    FAILED=$((FAILED + planned - ok - nok))
    echo "not ok - pg_regress: $((planned - ok - nok)) of $planned suites did not run"
fi
echo "  $ok passed, $nok failed"
if [ $rc -ne 0 ]; then
    [ "$nok" -eq 0 ] && fail "pg_regress exit status $rc"
    cat "$WORK/regress.log"
    [ -f "$ROOT/regression.diffs" ] && cat "$ROOT/regression.diffs"
fi

# pgTAP: each file in the database its header names (test/lib.sh,
# ks_pgtap_database), database by database in KS_PGTAP_DATABASES order
# (keysmith_tap first, as before), files in name order; a file without a
# valid header is a failure
echo "== pgTAP"
declare -A tapdb=()
for f in "$ROOT"/test/pgtap/*.sql; do
    if db=$(ks_pgtap_database "$f" 2>"$WORK/pgtap-header.err"); then
        tapdb[$f]=$db
    else
        fail "pgtap/$(basename "$f"): $(cat "$WORK/pgtap-header.err")"
    fi
done
psql -X -q -d postgres -c 'CREATE DATABASE keysmith_tap' >/dev/null
for db in $KS_PGTAP_DATABASES; do
    case $db in
    keysmith_tap) echo "   in database keysmith_tap (not keysmith.database_name: no worker acts there)" ;;
    postgres) echo "   in database postgres (keysmith.database_name: the reaper's and rotation worker's)" ;;
    esac
    psql -X -q -d "$db" -c 'CREATE EXTENSION pgtap; CREATE EXTENSION keysmith' >/dev/null
    for f in "$ROOT"/test/pgtap/*.sql; do
        [ "${tapdb[$f]:-}" = "$db" ] && pgtap_file "$db" "$f"
    done
done

# Integration tests, KEYSMITH_TEST_JOBS (default 2) at a time: each has its
# own ports and directory, and most of their time is spent
# waiting (on a KMS timeout, a schedule's period, a worker's naptime), so
# two at a time on two cores nearly halve the wall time (three are no faster:
# the KMS suites use the CPU).  Their results are
# counted in name order once all have finished.
JOBS=${KEYSMITH_TEST_JOBS:-2}
run_integration() {
    local t=$1 name t0 rc
    name=$(basename "$t" .sh)
    t0=$SECONDS
    timeout -k 10 "${2:-600}" bash "$t" >"$WORK/integration-$name.log" 2>&1
    rc=$?
    echo "# integration/$name took $((SECONDS - t0)) s" >>"$WORK/integration-$name.log"
    echo "$rc $((SECONDS - t0))" >"$WORK/integration-$name.rc"
}
# The tests that work in the suite's own cluster (KS_CLUSTER) take turns
# in one lane; the others, each with a cluster of its own, fill the rest.
echo "== integration ($JOBS at a time)"
# KEYSMITH_INTEGRATION="name ...": only those (the fresh-machine test uses
# it to keep its runs short; every other caller runs them all)
selected=()
for t in "$ROOT"/test/integration/*.sh; do
    if [ -z "${KEYSMITH_INTEGRATION:-}" ] || [[ " $KEYSMITH_INTEGRATION " == *" $(basename "$t" .sh) "* ]]; then
        selected+=("$t")
    fi
done
shared=(); own=()
for t in "${selected[@]}"; do
    if grep -q KS_CLUSTER "$t"; then shared+=("$t"); else own+=("$t"); fi
done
( for t in "${shared[@]}"; do run_integration "$t"; done ) &
for t in "${own[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    run_integration "$t" &
done
wait
for t in "${selected[@]}"; do
    name=$(basename "$t" .sh)
    read -r rc secs <"$WORK/integration-$name.rc" 2>/dev/null || { rc=1; secs=0; }
    tap_count "integration/$name ($secs s)" "$WORK/integration-$name.log" "$rc"
done

# Container suites (test/container), in the plain pass only: the image and
# the fresh machine are built from the sources, whatever this pass built.
# They need a Docker engine that can run containers (started here if none
# runs, and stopped again).  KEYSMITH_SKIP_CONTAINERS=1 (the plain `test`
# command): not run, and counted as skipped.  Otherwise, where no engine
# can run a container (an unprivileged container, where runc cannot make
# its namespaces), they are counted as skipped, saying why; with
# KEYSMITH_REQUIRE_CONTAINERS=1 (`test --full`) that is a failure instead.
csuites=()
for t in "$ROOT"/test/container/*.sh; do
    [ "$(basename "$t")" = lib.sh ] || csuites+=("$t")
done
if [ "$SAN" = 0 ] && [ "${KEYSMITH_SKIP_CONTAINERS:-0}" = 1 ]; then
    echo "== containers: not in this pass (bash test/harness.sh test --full runs them)"
    for t in "${csuites[@]}"; do
        skip "container/$(basename "$t" .sh): not in this pass (KEYSMITH_SKIP_CONTAINERS=1; test --full runs it)"
    done
elif [ "$SAN" = 0 ]; then
    echo "== containers, on a real Docker engine (host networking, loopback only)"
    . "$ROOT/test/container/lib.sh"
    elog=$WORK/containers-engine.log
    if kc_engine_up >"$elog" 2>&1 && base=$(kc_base_image 2>>"$elog") && kc_can_run "$base" >>"$elog" 2>&1; then
        pass "a Docker engine runs containers of a Debian 12 base image ($base)"
        pids=()
        for t in "${csuites[@]}"; do
            run_integration "$t" 1500 &
            pids+=($!)
        done
        wait "${pids[@]}"
        for t in "${csuites[@]}"; do
            name=$(basename "$t" .sh)
            read -r rc secs <"$WORK/integration-$name.rc" 2>/dev/null || { rc=1; secs=0; }
            tap_count "container/$name ($secs s)" "$WORK/integration-$name.log" "$rc"
        done
    else
        # the engine's last error line, else its last line
        why=$(grep -i 'error' "$elog" | tail -1 | cut -c1-300)
        [ -n "$why" ] || why=$(grep -v '^[[:space:]]*$' "$elog" | tail -1 | cut -c1-300)
        if [ "${KEYSMITH_REQUIRE_CONTAINERS:-0}" = 1 ]; then
            fail "no Docker engine here can run the container suites, and test --full needs one: ${why:-no reason given}"
            tail -30 "$elog" | sed 's/^/  | /'
        else
            echo "   no Docker engine here can run the container suites: ${why:-no reason given}"
            for t in "${csuites[@]}"; do
                skip "container/$(basename "$t" .sh): no Docker engine here can run the container suites (${why:-no reason given})"
            done
        fi
    fi
    kc_engine_down
fi

if [ "$SAN" = 1 ]; then
    echo "== sanitizer reports"
    ks_cluster_stop "$CLUSTER"
    n=$(ks_sanitizer_reports "$WORK")
    if [ "$n" = 0 ]; then
        pass "no ASan or UBSan report from any server of the run"
    else
        fail "$n ASan or UBSan reports"
        find "$WORK" -maxdepth 2 -name 'sanitizer.*' | head -5 | while read -r f; do
            echo "  ---- $f"; head -30 "$f" | sed 's/^/  | /'
        done
        find "$WORK" -maxdepth 2 -name 'server.log' -exec grep -H -A3 'runtime error:\|ERROR: AddressSanitizer' {} + |
            head -30 | sed 's/^/  | /'
    fi
fi

echo
if [ "$FAILED" -ne 0 ]; then
    echo "server log: $CLUSTER/server.log"
fi
closing
[ "$FAILED" -eq 0 ]
