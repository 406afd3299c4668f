#!/usr/bin/env bash
# test/run_suites.sh
#
# Runs every keysmith suite against a real server started here, counts
# results and prints the closing "N passed, N failed".  Called (as root) by
# test/harness.sh test.  Each suite's output goes to $WORK/<suite>.log;
# failures are printed in full.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/test/lib.sh"

PASSED=0
FAILED=0
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

# Count TAP lines ("ok"/"not ok") in a log into PASSED/FAILED.
count_tap() {
    local log=$1 ok nok
    ok=$(grep -cE '^[[:space:]]*ok [0-9]+' "$log" || true)
    nok=$(grep -cE '^[[:space:]]*not ok [0-9]+' "$log" || true)
    PASSED=$((PASSED + ok))
    FAILED=$((FAILED + nok))
    echo "  $ok passed, $nok failed"
}

echo "== installing packages and building (-Werror)"
ks_install_packages
if make -C "$ROOT" -s clean >/dev/null && make -C "$ROOT" -s KEYSMITH_WERROR=1 >"$WORK/build.log" 2>&1 \
        && make -C "$ROOT" -s install >>"$WORK/build.log" 2>&1; then
    pass "build with -Wall -Wextra -Werror and install"
else
    cat "$WORK/build.log"
    fail "build"
    echo "$PASSED passed, $FAILED failed"
    exit 1
fi

echo "== C unit tests of kms/"
if make -C "$ROOT" -s KEYSMITH_WERROR=1 test/unit/test_kms >"$WORK/unit-build.log" 2>&1; then
    (cd "$ROOT" && ./test/unit/test_kms) >"$WORK/unit.log" 2>&1
    rc=$?
    grep -E '^not ok' "$WORK/unit.log" || true
    count_tap "$WORK/unit.log"
    [ $rc -eq 0 ] || { echo "  unit test binary exited $rc"; tail -5 "$WORK/unit.log"; fail "unit test binary exit status"; }
else
    cat "$WORK/unit-build.log"
    fail "unit test build"
fi

echo "== starting PostgreSQL (as $PG_OSUSER, loopback only)"
ks_cluster_init "$CLUSTER"
# fixtures for the master-key-file refusals, owned by the server user
FIX=$CLUSTER/data/fixtures
ks_as_pg mkdir -m 700 "$FIX"
ks_as_pg sh -c "umask 077
printf '1:%s\n' \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') > $FIX/other.key
printf '2:%s\n' \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') > $FIX/only-v2.key
printf '1:%s\n' \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') > $FIX/unreadable.key
printf '1:%s\n' \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') > $FIX/loose.key
printf '1:%s\n' \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') > $FIX/rotate.key
printf '1:not-a-key-at-all\n' > $FIX/malformed.key
printf '1:0011223344556677\n' > $FIX/short.key
printf '# only comments\n\n' > $FIX/empty.key
mkdir $FIX/directory.key
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
PASSED=$((PASSED + ok)); FAILED=$((FAILED + nok))
echo "  $ok passed, $nok failed"
if [ $rc -ne 0 ]; then
    [ "$nok" -eq 0 ] && fail "pg_regress exit status $rc"
    cat "$WORK/regress.log"
    [ -f "$ROOT/regression.diffs" ] && cat "$ROOT/regression.diffs"
fi

echo "== pgTAP"
psql -X -q -d postgres -c 'CREATE DATABASE keysmith_tap' >/dev/null
psql -X -q -d keysmith_tap -c 'CREATE EXTENSION pgtap; CREATE EXTENSION keysmith' >/dev/null
pg_prove --verbose -d keysmith_tap "$ROOT"/test/pgtap/*.sql >"$WORK/pgtap.log" 2>&1
rc=$?
count_tap "$WORK/pgtap.log"
if [ $rc -ne 0 ]; then
    grep -E '^\s*not ok|Failed|Dubious|ERROR|psql:' "$WORK/pgtap.log" | head -50
    grep -q '^[[:space:]]*not ok' "$WORK/pgtap.log" || fail "pg_prove exit status $rc"
fi

echo "== pgTAP, leases (in postgres, the reaper's database)"
psql -X -q -d postgres -c 'CREATE EXTENSION pgtap; CREATE EXTENSION keysmith' >/dev/null
pg_prove --verbose -d postgres "$ROOT"/test/pgtap/leases/*.sql >"$WORK/pgtap-leases.log" 2>&1
rc=$?
count_tap "$WORK/pgtap-leases.log"
if [ $rc -ne 0 ]; then
    grep -E '^\s*not ok|Failed|Dubious|ERROR|psql:' "$WORK/pgtap-leases.log" | head -50
    grep -q '^[[:space:]]*not ok' "$WORK/pgtap-leases.log" || fail "pg_prove (leases) exit status $rc"
fi

echo "== integration"
for t in "$ROOT"/test/integration/*.sh; do
    name=$(basename "$t" .sh)
    bash "$t" >"$WORK/integration-$name.log" 2>&1
    rc=$?
    echo "  -- $name"
    count_tap "$WORK/integration-$name.log"
    if [ $rc -ne 0 ]; then
        tail -40 "$WORK/integration-$name.log"
        grep -q '^[[:space:]]*not ok' "$WORK/integration-$name.log" || fail "integration $name exit status $rc"
    fi
done

echo
if [ "$FAILED" -ne 0 ]; then
    echo "server log: $CLUSTER/server.log"
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
