#!/usr/bin/env bash
# test/harness.sh
#
# The README's two commands end here.
#   demo       install packages, build, install, start a throwaway cluster
#              (loopback, keysmith preloaded, fresh local master key), run
#              test/demo.sql, leave the server running
#   demo-stop  stop the demo cluster and delete it
#   test       the same set-up in a scratch directory, then every suite
#              once, as built for users: C unit tests, fuzzers (briefly),
#              pg_regress, pgTAP, integration; the container suites are
#              counted as skipped.  Prints what was skipped and why, then
#              "N skipped" and "N passed, N failed"; exits non-zero on any
#              failure, and stops what it started.
#   test --full  all of that, then the slow passes: the container suites
#              on a real Docker engine (one that cannot run containers is
#              a failure here), and every suite again built with
#              sanitizers (ASan and UBSan).  What .ci/run runs.
#
# Needs root (or sudo) for apt-get and `make install`; the server itself
# always runs as the unprivileged postgres OS user.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=${1:-test}
DEMO_DIR=/var/tmp/keysmith-demo

if [ "$(id -u)" -ne 0 ]; then
    exec sudo -E bash "$0" "$@"
fi

# shellcheck source=test/lib.sh
. "$ROOT/test/lib.sh"

build_and_install() {
    ks_install_packages
    make -C "$ROOT" -s clean >/dev/null
    make -C "$ROOT" -s KEYSMITH_WERROR=1 >/dev/null
    make -C "$ROOT" -s install >/dev/null
}

case "$MODE" in
demo)
    build_and_install
    ks_cluster_stop "$DEMO_DIR"
    rm -rf "$DEMO_DIR"
    ks_cluster_init "$DEMO_DIR"
    # the demo's leases live in its own database
    echo "keysmith.database_name = 'demo'" >>"$DEMO_DIR/data/postgresql.conf"
    # TCP on loopback needs postgres's password, generated here and kept in
    # a mode-0600 password file that only the user who ran the demo reads
    ks_cluster_password "$DEMO_DIR" "$ROOT/.demo.pgpass" "${SUDO_USER:-$(id -un)}"
    ks_cluster_start "$DEMO_DIR"
    {
        sed "s|^export PGHOST=.*|export PGHOST=127.0.0.1|" "$DEMO_DIR/env"
        echo "export PGPASSFILE='$ROOT/.demo.pgpass'"
    } >"$ROOT/demo.env"
    . "$DEMO_DIR/env"
    psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE demo'
    # the workers retry their connections every 5 s until database demo exists
    for _ in $(seq 1 40); do
        [ "$(psql -X -t -A -d postgres -c "SELECT count(*) FROM pg_stat_activity
              WHERE backend_type IN ('keysmith lease reaper', 'keysmith rotation worker')
                AND datname = 'demo'")" = 2 ] && break
        sleep 0.25
    done
    psql -X -v ON_ERROR_STOP=0 -d demo -f "$ROOT/test/demo.sql"
    cat <<MSG

keysmith demo server is running (data in $DEMO_DIR, port $PGPORT, loopback only).
  connect:  source $ROOT/demo.env && psql -d demo
  stop:     bash test/harness.sh demo-stop
MSG
    ;;
demo-stop)
    ks_cluster_stop "$DEMO_DIR"
    rm -rf "$DEMO_DIR" "$ROOT/demo.env" "$ROOT/.demo.pgpass"
    echo "keysmith demo stopped and removed"
    ;;
test)
    # test: one pass, as built for users, without the container suites (the
    # everyday command).  test --full (CI): that pass with the container
    # suites, which must run, then the sanitizer pass (docs/testing.md),
    # one closing line for both.  KEYSMITH_SANITIZE=1 or 0 (make test
    # SANITIZE=1 or 0): that pass alone, with the container suites where an
    # engine can run them (skipped, saying why, where none can).
    case "${KEYSMITH_SANITIZE:-}" in
    0 | 1)
        exec bash "$ROOT/test/run_suites.sh"
        ;;
    esac
    if [ "${2:-}" != --full ]; then
        if [ -n "${2:-}" ]; then
            echo "usage: $0 test [--full]" >&2
            exit 2
        fi
        KEYSMITH_SANITIZE=0 KEYSMITH_SKIP_CONTAINERS=${KEYSMITH_SKIP_CONTAINERS:-1} exec bash "$ROOT/test/run_suites.sh"
    fi
    total_p=0; total_f=0; total_s=0; rc=0
    for san in 0 1; do
        echo "######## pass $((san + 1)) of 2: $([ $san = 0 ] && echo "plain build" || echo "SANITIZE=1")"
        # the fuzzers build with sanitizers either way: once is enough
        # a failing pass must not end the script (set -e with pipefail):
        # the other pass still runs, and the closing line adds up both
        set +e
        KEYSMITH_SANITIZE=$san KEYSMITH_SKIP_FUZZ=$san KEYSMITH_SKIP_CONTAINERS=0 KEYSMITH_REQUIRE_CONTAINERS=1 \
            bash "$ROOT/test/run_suites.sh" | tee "/tmp/keysmith-pass-$san.$$"
        prc=${PIPESTATUS[0]}
        set -e
        [ "$prc" -eq 0 ] || rc=1
        line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "/tmp/keysmith-pass-$san.$$" | tail -1)
        skipline=$(grep -E '^[0-9]+ skipped$' "/tmp/keysmith-pass-$san.$$" | tail -1)
        rm -f "/tmp/keysmith-pass-$san.$$"
        if [ -z "$line" ]; then
            echo "not ok - pass $((san + 1)) printed no closing line"
            total_f=$((total_f + 1)); rc=1
        else
            total_p=$((total_p + ${line%% passed*}))
            f=${line#*passed, }; total_f=$((total_f + ${f%% failed*}))
            total_s=$((total_s + ${skipline%% skipped*}))
        fi
    done
    echo
    echo "both passes (each listed what it skipped, and why, above its closing line):"
    echo "$total_s skipped"
    echo "$total_p passed, $total_f failed"
    [ $rc -eq 0 ] && [ $total_f -eq 0 ]
    exit $?
    ;;
*)
    echo "usage: $0 demo|demo-stop|test [--full]" >&2
    exit 2
    ;;
esac
