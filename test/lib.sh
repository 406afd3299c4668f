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
KS_TAP_N=0
KS_TAP_FAILED=0
KS_TAP_PLAN=
ks_plan() {
    KS_TAP_PLAN=$1
    echo "1..$1"
    trap ks_tap_finish EXIT
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
