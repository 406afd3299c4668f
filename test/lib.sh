# test/lib.sh
#
# Shell helpers shared by test/harness.sh and the integration tests:
# installing Debian packages, and starting throwaway PostgreSQL clusters
# that run as the unprivileged `postgres` OS user, listen on loopback only
# and preload keysmith.  Source it; it defines functions only.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_OSUSER=${PG_OSUSER:-postgres}

KEYSMITH_PACKAGES="gcc make libc6-dev postgresql-15 postgresql-server-dev-15 \
postgresql-15-pgtap postgresql-15-pgaudit libtap-parser-sourcehandler-pgtap-perl libssl-dev \
python3 python3-cryptography python3-botocore python3-psycopg2 libkrb5-dev libjansson-dev libcurl4-openssl-dev openssl \
clang libclang-rt-14-dev procps patroni etcd-server"

# Install whatever of KEYSMITH_PACKAGES is missing (needs root).
ks_install_packages() {
    local missing=() p
    for p in $KEYSMITH_PACKAGES; do
        if ! grep -q 'install ok installed' <<<"$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)"; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "keysmith: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Run a command as the server's OS user.
ks_as_pg() {
    runuser -u "$PG_OSUSER" -- "$@"
}

# A TCP port on 127.0.0.1 that nothing listens on.
ks_free_port() {
    local p lo
    # below the kernel's ephemeral range: a port there can be taken as the
    # source port of any outgoing connection (a test login, a walreceiver)
    # between this probe and the server's bind, which then fails
    lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)
    [ "${lo:-0}" -gt 12000 ] 2>/dev/null || lo=32768
    for _ in $(seq 1 200); do
        p=$(( 10000 + RANDOM % (lo - 10000) ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# ks_new_master_key FILE: one fresh 256-bit key, version 1, mode 0600,
# owned by the server's OS user.
ks_new_master_key() {
    local file=$1 hex
    hex=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    ks_as_pg sh -c "umask 077; printf '# keysmith local master keys: <version>:<64 hex>\n1:%s\n' '$hex' > '$file'"
}

# ks_cluster_init DIR [PRELOAD]: initdb into DIR/data as the postgres user,
# configure loopback-only, preload keysmith unless PRELOAD=no.  Sets
# KS_PORT and writes DIR/env with PGHOST/PGPORT/PGUSER.
ks_cluster_init() {
    local dir=$1 preload=${2:-yes}
    mkdir -p "$dir"
    chown "$PG_OSUSER": "$dir"
    chmod 700 "$dir"
    ks_as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust \
        --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1
    KS_PORT=$(ks_free_port)
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $KS_PORT"
        echo "unix_socket_directories = '$dir'"
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "max_connections = 50"
        if [ "$preload" = yes ]; then
            echo "shared_preload_libraries = 'keysmith'"
            echo "keysmith.local_master_key_file = 'keysmith_master.key'"
        fi
    } >>"$dir/data/postgresql.conf"
    cat >"$dir/data/pg_hba.conf" <<HBA
local   all   all                  trust
host    all   postgres  127.0.0.1/32  trust
host    all   all       127.0.0.1/32  scram-sha-256
HBA
    if [ "$preload" = yes ]; then
        ks_new_master_key "$dir/data/keysmith_master.key"
    fi
    cat >"$dir/env" <<ENV
export PGHOST='$dir'
export PGPORT=$KS_PORT
export PGUSER=postgres
export PGDATABASE=postgres
ENV
    chmod 644 "$dir/env"
}

# ks_cluster_password DIR PASSFILE OWNER: make TCP logins to DIR's cluster
# need a password, postgres's included.  A random password is set for
# postgres and written to PASSFILE (a libpq password file, mode 0600,
# owned by OWNER), and pg_hba.conf asks for SCRAM on 127.0.0.1 for every
# role.  The socket stays trust, but its directory is private to the
# server's OS user.  Run before ks_cluster_start.
ks_cluster_password() {
    local dir=$1 passfile=$2 owner=$3 pw port
    pw=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
    port=$(sed -n "s/^export PGPORT=//p" "$dir/env")
    (umask 077; printf '127.0.0.1:%s:*:postgres:%s\n' "$port" "$pw" >"$passfile")
    chown "$owner" "$passfile"
    chmod 600 "$passfile"
    cat >"$dir/data/pg_hba.conf" <<HBA
local   all   all                  trust
host    all   all       127.0.0.1/32  scram-sha-256
HBA
    # the password goes in through single-user mode: no server, no log line
    ks_sanitizer_env "$dir"
    printf "ALTER ROLE postgres PASSWORD '%s';\n" "$pw" |
        ks_as_pg env "${KS_SAN_ENV[@]}" "$PG_BIN/postgres" --single -D "$dir/data" -j postgres >/dev/null 2>&1
}

# Is process PID alive?  A zombie is not: in a container without an init
# process, nobody reaps a killed postmaster.
ks_pid_alive() {
    [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# ks_cluster_kill9 DIR: a crash.  SIGKILL to the postmaster and all its
# children at once, no shutdown code runs; wait until they are gone.  The
# children are found through /proc, so procps is not needed.  A killed
# postmaster is normally reaped by init within a few seconds.  Where nobody
# reaps it (a container without an init process) it stays a zombie, which
# kill -0 still finds, and the next start would take its postmaster.pid
# and socket lock file for a running server: after 5 s those stale files
# are removed (every process of the cluster is dead by then).
ks_cluster_kill9() {
    local dir=$1 pm kids p alive
    pm=$(head -1 "$dir/data/postmaster.pid")
    kids=$(grep -l "^PPid:[[:space:]]*$pm\$" /proc/[0-9]*/status 2>/dev/null | cut -d/ -f3)
    kill -9 "$pm" $kids 2>/dev/null
    for _ in $(seq 1 100); do
        alive=0
        for p in $pm $kids; do ks_pid_alive "$p" && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for _ in $(seq 1 50); do
        [ -d "/proc/$pm" ] || return 0
        sleep 0.1
    done
    rm -f "$dir/data/postmaster.pid" "$dir"/.s.PGSQL.*.lock
}

# ks_sanitizer_env DIR: sets KS_SAN_ENV, the environment (for `env`) of a
# server of DIR's cluster.  Empty unless KEYSMITH_SANITIZE=1 (make test
# SANITIZE=1), where keysmith.so is built with ASan and UBSan and loads only
# into a server that has the ASan runtime preloaded: gcc's libasan, then
# keysmith_asan_init.so (test/asan_init.c), without which Debian's postgres
# deadlocks at start.  Leak detection is off (a postmaster's children exit
# without freeing, by design); ASan and UBSan reports go to
# DIR/sanitizer.<pid>.
ks_sanitizer_env() {
    local dir=$1 asan
    KS_SAN_ENV=()
    [ "${KEYSMITH_SANITIZE:-0}" = 1 ] || return 0
    asan=$(readlink -f "$(gcc -print-file-name=libasan.so)")
    KS_SAN_ENV=(
        "LD_PRELOAD=$asan $("$PG_BIN/pg_config" --pkglibdir)/keysmith_asan_init.so"
        "ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:log_path=$dir/sanitizer"
        "UBSAN_OPTIONS=print_stacktrace=1:log_path=$dir/sanitizer"
    )
}

ks_cluster_start() {
    local dir=$1
    ks_sanitizer_env "$dir"
    ks_as_pg env "${KS_SAN_ENV[@]}" \
        "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
}

# ks_sanitizer_reports DIR...: how many sanitizer reports the clusters
# under these directories left, in report files or (where a runtime wrote
# to stderr) as UBSan "runtime error:" or ASan "ERROR: AddressSanitizer"
# lines in their server logs
ks_sanitizer_reports() {
    local files lines
    files=$(find "$@" -maxdepth 2 -name 'sanitizer.*' 2>/dev/null | wc -l)
    lines=$(find "$@" -maxdepth 2 -name 'server.log' -exec cat {} + 2>/dev/null |
        grep -c 'runtime error:\|ERROR: AddressSanitizer')
    echo $((files + lines))
}

ks_cluster_stop() {
    local dir=$1 mode=${2:-fast}
    if [ -f "$dir/data/postmaster.pid" ]; then
        ks_as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
    fi
}

# TAP for the integration scripts.  A script declares its plan first,
# `ks_plan N`, then makes exactly N `ks_check STATUS "what"` calls.  At exit
# it says how many it ran, and exits non-zero if any failed, if it ran
# fewer or more than planned, or if it died: test/run_suites.sh counts
# every planned check that did not run as failed.
#
# ks_plan also sets the script's exit trap (ks_tap_exit): it calls
# `cleanup` (below; a script with more to stop defines its own), then
# ks_tap_finish, keeping the script's exit status.  Scripts set no EXIT
# trap of their own.
KS_TAP_N=0
KS_TAP_FAILED=0
KS_TAP_PLAN=
ks_plan() {
    KS_TAP_PLAN=$1
    echo "1..$1"
    trap ks_tap_exit EXIT
}
ks_tap_exit() {
    local rc=$?
    cleanup
    (exit $rc)
    ks_tap_finish
}
ks_check() {
    KS_TAP_N=$((KS_TAP_N + 1))
    if [ "$1" = 0 ]; then
        echo "ok $KS_TAP_N - $2"
    else
        KS_TAP_FAILED=$((KS_TAP_FAILED + 1))
        echo "not ok $KS_TAP_N - $2"
    fi
}
# ks_skip NAME REASON: a planned check that cannot be made here, and why
# (TAP's "# SKIP" directive); test/run_suites.sh counts it as skipped,
# not passed, and lists it in its closing summary
ks_skip() {
    ks_check 0 "$1 # SKIP $2"
}
# ks_check_out RC OUTPUT NAME: ks_check, and on failure OUTPUT as comments;
# returns whether the check passed.
ks_check_out() {
    ks_check "$1" "$3"
    [ "$1" = 0 ] && return 0
    printf '%s\n' "$2" | head -20 | sed 's/^/#   /'
    return 1
}
ks_tap_finish() {
    local rc=$?
    if [ -n "$KS_TAP_PLAN" ] && [ "$KS_TAP_N" -ne "$KS_TAP_PLAN" ]; then
        echo "# planned $KS_TAP_PLAN checks, ran $KS_TAP_N"
        rc=1
    fi
    [ "$KS_TAP_FAILED" -gt 0 ] && rc=1
    exit $rc
}

# ks_wait_for SQL [TRIES]: until SQL, asked of database postgres of the
# cluster in the environment, returns t (every 0.1 s, 30 s by default)
ks_wait_for() {
    for _ in $(seq 1 "${2:-300}"); do
        [ "$(psql -X -q -t -A -d postgres -c "$1" 2>/dev/null)" = t ] && return 0
        sleep 0.1
    done
    return 1
}

# ks_wait_rotation TOKEN: wait (up to 30 s) until the rotation is no
# longer in flight, asking database postgres of the cluster in the
# environment; prints its state ("missing" if there is no such rotation)
ks_wait_rotation() {
    local st
    for _ in $(seq 1 600); do
        st=$(psql -X -q -t -A -d postgres -c "SELECT state FROM keysmith.rotations WHERE token = '$1'")
        case $st in finished|failed|cancelled) echo "$st"; return 0 ;; esac
        sleep 0.05
    done
    echo "${st:-missing}"
}

# ks_rotate_paused SECRET STEP: make the rotation worker of the cluster in
# the environment pause after STEP's effect (keysmith.rotation_pause_at,
# by ALTER SYSTEM: not replicated), start a rotation of SECRET and wait (up
# to 10 s) until the worker is paused there.  Prints the rotation's token;
# the status says whether it paused.
ks_rotate_paused() {
    local tok
    psql -X -q -t -A -d postgres -c "ALTER SYSTEM SET keysmith.rotation_pause_at = '$2:after'" \
        -c "SELECT pg_reload_conf()" >/dev/null
    sleep 0.3
    tok=$(psql -X -q -t -A -d postgres -c "SELECT keysmith.rotate_secret('$1')")
    echo "$tok"
    for _ in $(seq 1 100); do
        [ "$(psql -X -q -t -A -d postgres -c "SELECT count(*) FROM pg_stat_activity
                 WHERE query = 'keysmith rotation paused at $2:after'")" = 1 ] && return 0
        sleep 0.1
    done
    return 1
}

# ks_sqlstate SQLSTATE MESSAGE-GLOB OUTPUT: does psql's OUTPUT (run with
# VERBOSITY verbose) hold an error with exactly this SQLSTATE and a
# message matching the glob?  "Expect an error" checks use it, so a
# missing function or a typo cannot pass for the refusal they test.
ks_sqlstate() {
    local code=$1 glob=$2 out=$3
    [[ $out == *"ERROR:  $code: "$glob* ]]
}

# The integration scripts' one-line helpers.  They keep their short names
# (every script calls them hundreds of times); the environment each reads
# is the cluster's (PGHOST, PGPORT: source its env file first), and a
# script that needs another database or psql setting sets these first:
#   KS_DB             database of q, qv and login (default postgres); a -d
#                     among q's or qv's arguments wins (psql takes the last)
#   KS_ON_ERROR_STOP  q stops at the first error (1, the default) or goes
#                     on (0: the redaction scripts, which log failing
#                     statements on purpose)
#   KS_VERBOSITY      q's psql VERBOSITY (default: psql's default); verbose
#                     puts the SQLSTATE in each error, for ks_sqlstate

# q ARGS...: psql with ARGS, tuples only, unaligned, no psqlrc
q() {
    psql -X -q -t -A -v ON_ERROR_STOP="${KS_ON_ERROR_STOP:-1}" -v VERBOSITY="${KS_VERBOSITY:-default}" \
        -d "${KS_DB:-postgres}" "$@"
}

# qv ARGS...: psql with ARGS for an "expect an error" check: errors with
# their SQLSTATE (VERBOSITY verbose), on stdout, and no stop at an error
qv() {
    psql -X -q -t -A -v VERBOSITY=verbose -d "${KS_DB:-postgres}" "$@" 2>&1
}

# field JSON NAME: the value of NAME in the JSON object JSON
field() {
    python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}

# login ROLE PASSWORD [SQL]: a TCP login to 127.0.0.1 at $PGPORT as ROLE,
# which must use PASSWORD (pg_hba.conf asks for it there).  Without SQL it
# prints nothing and its status says whether the login worked; with SQL it
# runs SQL and prints the result, or the error.  Another server's port:
# `PGPORT=N login ...`.
login() {
    if [ $# -ge 3 ]; then
        PGPASSWORD=$2 psql -X -q -t -A -h 127.0.0.1 -p "$PGPORT" -U "$1" -d "${KS_DB:-postgres}" -c "$3" 2>&1
    else
        PGPASSWORD=$2 psql -X -q -t -A -h 127.0.0.1 -p "$PGPORT" -U "$1" -d "${KS_DB:-postgres}" \
            -c 'SELECT 1' >/dev/null 2>&1
    fi
}

# cleanup: run at exit by ks_plan's trap.  This one kills the background
# processes whose PIDs the script put in its array `pids` (kms_start of
# test/kms/lib.sh does) and waits for them; a script with more to stop
# (a cluster, a fake server) defines its own cleanup after sourcing this
# file, which replaces it.
cleanup() {
    local p
    declare -p pids >/dev/null 2>&1 || return 0
    for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
}

# pgTAP files (test/pgtap/*.sql) are named by feature; the database each
# runs in is a line of its opening comment block:
#   -- keysmith-test-database: NAME
# NAME is one of KS_PGTAP_DATABASES: keysmith_tap, a database of its own
# (not keysmith.database_name: no worker acts on it), or postgres, the
# workers' database (keysmith.database_name), where leases, secrets and
# schedules can be made.  test/run_suites.sh prepares both.
KS_PGTAP_DATABASES="keysmith_tap postgres"

# ks_pgtap_database FILE: prints the database FILE's header names; or says
# on stderr why there is none (no header, two, a name with spaces, an
# unknown database) and returns 1: a file without one is an error, never
# a default.
ks_pgtap_database() {
    local f=$1 names
    names=$(awk '!/^--/ {exit} $1 == "--" && $2 == "keysmith-test-database:" {print (NF == 3 ? $3 : "?")}' "$f")
    case $names in
    "")
        echo "no '-- keysmith-test-database: NAME' line in its opening comment" >&2
        return 1 ;;
    *$'\n'*)
        echo "more than one keysmith-test-database line" >&2
        return 1 ;;
    esac
    if [[ " $KS_PGTAP_DATABASES " != *" $names "* ]]; then
        echo "keysmith-test-database '$names' is none of: $KS_PGTAP_DATABASES" >&2
        return 1
    fi
    echo "$names"
}

# ks_smaps_dd: reads a process's /proc/PID/smaps on stdin and prints how
# many of its shared anonymous mappings ("/dev/zero (deleted)", as
# keysmith's shared DEK cache is) the kernel marks do-not-dump (MADV_DONTDUMP
# shows as "dd" in VmFlags).  Where that cannot be told it prints why and
# returns 2: no mapping in the text (smaps could not be read), or no
# VmFlags line at all (a kernel, or a sandbox's /proc, that does not show
# them).  Text with VmFlags but no dd on such a mapping prints 0.
ks_smaps_dd() {
    awk '/^[0-9a-f]+-[0-9a-f]+ / { m = $0; maps++ }
         /^VmFlags:/ { flags++; if (m ~ /\/dev\/zero/ && $0 ~ / dd( |$)/) n++ }
         END {
             if (maps == 0) { print "no mapping in the smaps text (it could not be read)"; exit 2 }
             if (flags == 0) { print "this kernel shows no VmFlags in /proc/PID/smaps"; exit 2 }
             print n + 0
         }'
}

# ks_dontdump_count PID: ks_smaps_dd for process PID's smaps, read as
# root or, where root may not, as the process's own OS user.  Root may
# read another user's smaps only with CAP_SYS_PTRACE (or CAP_SYS_ADMIN,
# CAP_PERFMON), which an unprivileged container (Docker's default
# capabilities) does not give it: there root gets "Permission denied", and
# the owner does not.  Status 0 with the count; 2 with the reason where it
# cannot be told (neither can read it, or ks_smaps_dd's reasons); 1 if
# there is no such process.
ks_dontdump_count() {
    local pid=$1 owner text why
    owner=$(stat -c %U "/proc/$pid" 2>/dev/null) || { echo "no process $pid"; return 1; }
    if ! text=$(cat "/proc/$pid/smaps" 2>&1); then
        why=${text##*: }
        if ! text=$(runuser -u "$owner" -- cat "/proc/$pid/smaps" 2>&1); then
            echo "/proc/$pid/smaps cannot be read, by root ($why) nor by its owner $owner (${text##*: })"
            return 2
        fi
    fi
    ks_smaps_dd <<<"$text"
}
