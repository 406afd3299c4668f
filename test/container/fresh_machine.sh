#!/usr/bin/env bash
# test/container/fresh_machine.sh
#
# The README's test command on a bare Debian 12, as a new user would run
# it: a container from the plain base image (debian:12, or the debootstrap
# minbase that test/container/lib.sh makes), only the sources copied in,
# nothing installed first, run as root.  Twice: with --init, and without
# an init process, where nobody reaps a killed postmaster.  After the test
# command, the README's demo command and demo-stop run there too.
#
# To stay short, each run is one pass (KEYSMITH_SANITIZE=0), without the
# fuzzers and the container suites, and runs the integration tests that
# crash and restart servers (KEYSMITH_INTEGRATION); the unit tests,
# pg_regress and pgTAP run in full.  The runs share nothing with the host
# but its network (loopback) and a copy of its downloaded packages.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
. "$ROOT/test/container/lib.sh"
ks_plan 10

W=${KS_WORK:-/tmp}/fresh-machine
rm -rf "$W"
mkdir -p "$W"
CRASHY="kek_restart leases_crash rotation_crash failover"
NAMES=()
T0=$SECONDS

cleanup() {
    for c in "${NAMES[@]}"; do kc_docker rm -f -v "$c" >/dev/null 2>&1; done
    kc_engine_down
    rm -rf "$W"/apt-*
    echo "# fresh-machine suite took $((SECONDS - T0)) s"
}

kc_engine_up >"$W/engine.log" 2>&1
ks_check_out $? "$(cat "$W/engine.log")" "a Docker engine answers"
BASE=$(kc_base_image 2>"$W/base.err")
out=$(kc_docker run --rm --network none "$BASE" sh -c \
    'for c in make gcc cc pg_config psql pgrep pkill sudo git; do command -v $c; done; id -u' 2>&1)
[ "$out" = 0 ]
ks_check_out $? "$(cat "$W/base.err") $out" "the base ($BASE) is bare: no make, compiler, PostgreSQL, procps, sudo or git; root"

kc_source_tar "$W/src.tar"

# run MODE DOCKER-OPTIONS...: the README's command in a new container
run() {
    local mode=$1 c=ks-fresh-$1-$$
    shift
    NAMES+=("$c")
    # the host's downloaded packages, so the run does not fetch them again
    mkdir -p "$W/apt-$mode"
    cp -al /var/cache/apt/archives/*.deb "$W/apt-$mode/" 2>/dev/null ||
        cp -a /var/cache/apt/archives/*.deb "$W/apt-$mode/" 2>/dev/null || true
    kc_docker create --name "$c" --network host "$@" \
        -e KEYSMITH_SANITIZE=0 -e KEYSMITH_SKIP_FUZZ=1 -e KEYSMITH_SKIP_CONTAINERS=1 \
        -e KEYSMITH_INTEGRATION="$CRASHY" \
        -v "$W/apt-$mode:/var/cache/apt/archives" \
        "$BASE" bash -c 'cd /root/keysmith && bash test/harness.sh test; rc=$?
            echo "######## the README demo command"
            bash test/harness.sh demo && bash test/harness.sh demo-stop
            echo "######## demo exit $?"
            exit $rc' >/dev/null &&
        kc_docker cp - "$c:/root" <"$W/src.tar" &&
        timeout -k 10 1400 "${KC_DOCKER:-/usr/bin/docker}" start -a "$c" >"$W/$mode.log" 2>&1
    echo $? >"$W/$mode.rc"
}
t=$SECONDS
run init --init &
p1=$!
run plain &
wait $p1 $!
echo "# both runs took $((SECONDS - t)) s"

for mode in init plain; do
    rc=$(cat "$W/$mode.rc" 2>/dev/null || echo 1)
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$W/$mode.log" | tail -1)
    passed=${line%% passed*}
    what="with --init"
    [ "$mode" = plain ] && what="without an init process"
    [ "$rc" = 0 ] && [ "$line" = "${passed:-x} passed, 0 failed" ] && [ "${passed:-0}" -ge 300 ]
    ks_check_out $? "exit $rc, closing line \"$line\"; $(grep -E '^not ok' "$W/$mode.log" | head -10)
$(tail -40 "$W/$mode.log")" "README test command on a bare Debian 12, $what: exit 0, \"$line\""
    missing=
    for t in $CRASHY; do
        grep -qE "^  integration/$t \([0-9]+ s\): [1-9][0-9]* passed, 0 failed(, [0-9]+ skipped)?$" "$W/$mode.log" || missing+=" $t"
    done
    [ -z "$missing" ]
    ks_check_out $? "not passed:$missing" "$what: the crash tests ran and passed ($CRASHY)"
    grep -q '^== C unit tests' "$W/$mode.log" && grep -qE '^  unit: [1-9][0-9]* passed, 0 failed(, [0-9]+ skipped)?$' "$W/$mode.log" &&
        grep -q '^== pgTAP' "$W/$mode.log"
    ks_check_out $? "$(grep -E '^==|^  [a-z/_0-9.]+: ' "$W/$mode.log" | head -20)" "$what: packages installed, built, unit tests, pg_regress and pgTAP ran"
    demo=$(sed -n '/^######## the README demo command$/,$p' "$W/$mode.log")
    grep -q '^keysmith demo server is running' <<<"$demo" && grep -q '^keysmith demo stopped and removed$' <<<"$demo" &&
        grep -q '^######## demo exit 0$' <<<"$demo"
    ks_check_out $? "$(tail -30 <<<"$demo")" "$what: the README demo command runs its demo and demo-stop removes it"
done
