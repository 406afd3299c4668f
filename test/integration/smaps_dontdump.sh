#!/usr/bin/env bash
# test/integration/smaps_dontdump.sh
#
# kms_cache.sh checks that the shared DEK cache's mapping is kept out of
# core dumps by reading VmFlags "dd" in the postmaster's /proc/PID/smaps
# (test/lib.sh, ks_dontdump_count).  Run as root inside an unprivileged
# container (docker run without --privileged), that check failed: root may
# read another user's smaps only with CAP_SYS_PTRACE (or CAP_SYS_ADMIN,
# CAP_PERFMON), and Docker's default capabilities have none of them, so the
# read was refused and no flag was found.  ks_dontdump_count now reads as
# the process's owner where root may not, and kms_cache skips (saying why)
# only where the flags cannot be seen at all.  This script tests that
# detection on processes of its own, no server needed:
#  - the container's failure reproduced: root with exactly Docker's default
#    capabilities (setpriv) is refused the smaps of a process of the
#    server's OS user, which that user reads;
#  - a shared anonymous mapping marked MADV_DONTDUMP is counted, by root
#    and by root with Docker's default capabilities; the same mapping
#    unmarked is not: on a kernel that shows VmFlags, a cache that lost
#    its madvise fails kms_cache's check;
#  - smaps text without VmFlags lines, and no text at all, are "cannot
#    tell" (status 2, with the reason), never a pass or a count of 0;
#  - a process that does not exist is an error (status 1), not a skip.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 6

W=$KS_WORK/smaps-dontdump
rm -rf "$W"; mkdir -p "$W"; chmod 777 "$W"
mappers=()
cleanup() {
    local p
    for p in ${mappers[@]+"${mappers[@]}"}; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
}

# mapper NAME DONTDUMP: a process of the server's OS user holding one 8 kB
# shared anonymous mapping, marked MADV_DONTDUMP if DONTDUMP is 1; prints
# its PID once the mapping is made (it exits after 120 s, or when killed)
mapper() {
    rm -f "$W/$1.pid"
    ks_as_pg /usr/bin/python3 -c '
import mmap, os, sys, time
m = mmap.mmap(-1, 8192, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
m[0:1] = b"x"
if sys.argv[2] == "1":
    m.madvise(mmap.MADV_DONTDUMP)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(120)' "$W/$1.pid" "$2" >/dev/null 2>&1 &
    for _ in $(seq 1 100); do
        [ -s "$W/$1.pid" ] && break
        sleep 0.05
    done
    cat "$W/$1.pid" 2>/dev/null
}
marked=$(mapper marked 1)
plain=$(mapper plain 0)
mappers+=($marked $plain)

# 1. Docker's default capability set (moby's defaults), for root
DOCKER_CAPS=chown,dac_override,fowner,fsetid,kill,setgid,setuid,setpcap,net_bind_service,net_raw,sys_chroot,mknod,audit_write,setfcap
as_docker_root() { setpriv --bounding-set "-all,+${DOCKER_CAPS//,/,+}" --inh-caps -all "$@"; }
root_out=$(as_docker_root cat "/proc/$marked/smaps" 2>&1 >/dev/null)
root_rc=$?
owner_out=$(ks_as_pg cat "/proc/$marked/smaps" 2>&1 >/dev/null)
owner_rc=$?
if [[ $root_out == setpriv:* ]]; then
    ks_skip "root with Docker's default capabilities may not read another user's smaps" "setpriv cannot drop capabilities here: $root_out"
elif [ $owner_rc != 0 ]; then
    ks_skip "root with Docker's default capabilities may not read another user's smaps" "not even the owner reads it here: $owner_out"
else
    [ $root_rc != 0 ] && [[ $root_out == *"Permission denied"* ]]
    ks_check_out $? "root: $root_out (status $root_rc)" \
        "root with Docker's default capabilities is refused a $PG_OSUSER process's smaps (what kms_cache met in a container); $PG_OSUSER reads it"
fi

# 2. and 3. the count on a kernel that shows VmFlags
n_marked=$(ks_dontdump_count "$marked"); rc_marked=$?
n_docker=$(as_docker_root bash -c '. "$1/test/lib.sh"; ks_dontdump_count "$2"' - "$ROOT" "$marked"); rc_docker=$?
n_plain=$(ks_dontdump_count "$plain"); rc_plain=$?
if [ $rc_marked = 2 ]; then
    ks_skip "a MADV_DONTDUMP shared anonymous mapping is counted" "$n_marked"
else
    [ $rc_marked = 0 ] && [ "$n_marked" = 1 ] && [ $rc_docker = 0 ] && [ "$n_docker" = 1 ]
    ks_check_out $? "root: status $rc_marked: $n_marked; with Docker's capabilities: status $rc_docker: $n_docker" \
        "a MADV_DONTDUMP shared anonymous mapping is counted, by root ($n_marked) and by root with Docker's default capabilities ($n_docker)"
fi
if [ $rc_plain = 2 ]; then
    ks_skip "the same mapping without MADV_DONTDUMP is not counted" "$n_plain"
else
    [ $rc_plain = 0 ] && [ "$n_plain" = 0 ]
    ks_check_out $? "status $rc_plain: $n_plain" "the same mapping without MADV_DONTDUMP counts 0: a cache that lost its madvise fails kms_cache's check"
fi

# 4. and 5. what a kernel that shows no VmFlags, or an unreadable smaps,
# look like: "cannot tell", with the reason
ks_as_pg cat "/proc/$marked/smaps" >"$W/smaps" 2>&1
out=$(grep -v '^VmFlags:' "$W/smaps" | ks_smaps_dd); rc=$?
grep -q '^VmFlags:.* dd' "$W/smaps" && [ $rc = 2 ] && [[ $out == *"shows no VmFlags"* ]]
ks_check_out $? "status $rc: $out" "smaps without VmFlags lines: cannot tell (status 2, \"$out\"), neither a pass nor 0"
out=$(ks_smaps_dd </dev/null); rc=$?
[ $rc = 2 ] && [[ $out == *"could not be read"* ]]
ks_check_out $? "status $rc: $out" "no smaps text at all: cannot tell (status 2, \"$out\")"

# 6. a process that is gone is an error, not a skip
kill "$plain" 2>/dev/null
for _ in $(seq 1 100); do ks_pid_alive "$plain" || break; sleep 0.05; done
out=$(ks_dontdump_count "$plain"); rc=$?
[ $rc = 1 ]
ks_check_out $? "status $rc: $out" "a process that does not exist: an error (status 1, \"$out\"), not a skip"
