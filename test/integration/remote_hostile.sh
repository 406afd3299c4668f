#!/usr/bin/env bash
# test/integration/remote_hostile.sh
#
# Findings 3 and 4 of issue 20 for postgres_remote: everything a remote
# sends is hostile, and no remote stalls another owner's rotation.  A fake
# PostgreSQL server (test/servers/fake_pg_server.py, as OS user nobody)
# first plays a good remote, then, per database name, each malformed
# answer in turn: no row, NULL, wrong columns, a 16 MB value, 100000 rows,
# a version of 16 without scram_iterations, 2^31-1 iterations, an error
# with and without a message, a stall after connect and mid-statement,
# garbage bytes.  Each is tried through create_secret (a backend: its
# SQLSTATE and message) and through a rotation (the worker: last_error).
# Neither may crash: the postmaster's start time stays, and no process was
# terminated by a signal.  Then the stall attack of finding 4: owner A's
# remote tarpits (connect_timeout=2000000 in its conninfo, then a stall
# mid-statement), owner B's secret rotates in the same rounds; B's extra
# delay over its baseline is printed and must stay within a generous
# multiple of keysmith.rotation_step_timeout (2 s here).  Last, conninfo
# keywords that would use the server's own credentials are refused.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 27
cleanup() {
    for p in ${fport:-} ${tport:-}; do [ -s "$fdir/ready-$p" ] && kill "$(cat "$fdir/ready-$p")" 2>/dev/null; done
    [ -n "${dir:-}" ] && ks_cluster_stop "$dir"
}

fdir=$KS_WORK/extra-fake
mkdir -p "$fdir"
chown nobody "$fdir"
fport=$(ks_free_port)
tport=$(ks_free_port)
while [ "$tport" = "$fport" ]; do tport=$(ks_free_port); done
echo '{}' >"$fdir/modes.json"
echo '{}' >"$fdir/tmodes.json"
chmod 644 "$fdir"/*.json
fake() {   # PORT MODES: a fake server as nobody; waits until it listens
    rm -f "$fdir/ready-$1"
    runuser -u nobody -- /usr/bin/python3 "$ROOT/test/servers/fake_pg_server.py" --port "$1" \
        --admin "radmin:admin-pw-1" --modes "$2" --log "$fdir/log-$1.jsonl" --ready "$fdir/ready-$1" \
        >"$fdir/out-$1.log" 2>&1 &
    for _ in $(seq 1 100); do [ -s "$fdir/ready-$1" ] && return 0; sleep 0.05; done
    return 1
}
fake "$fport" "$fdir/modes.json" && fake "$tport" "$fdir/tmodes.json"
started=$?

dir=$KS_WORK/extra-remote-hostile
ks_cluster_init "$dir"
{
    echo "keysmith.rotation_naptime = '200ms'"
    echo "keysmith.rotation_step_timeout = '2s'"
    echo "keysmith.rotation_max_attempts = 1"
} >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
ci() { echo "host=127.0.0.1 port=${2:-$fport} dbname=$1"; }
remote() {   # NAME DBNAME [PORT [EXTRA]]: a postgres_remote secret on the fake server
    echo "SELECT keysmith.create_secret('$1', 'k', 'postgres_remote',
        jsonb_build_object('conninfo', '$(ci "$2" "${3:-$fport}") ${4:-}', 'role', 'rapp', 'admin_secret', 'r/admin'))"
}
q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('k');
SELECT keysmith.create_secret('r/admin', 'k', 'none', '{}', '{"username": "radmin", "password": "admin-pw-1"}');
SQL
out=$(q -c "$(remote r/good good)" 2>&1)
[ $started = 0 ] && [ -n "$out" ]
ks_check_out $? "$out" "setup: the fake server plays a good remote; create_secret sets the first password there" || exit 1
pm_start=$(q -c "SELECT pg_postmaster_start_time()")
no_crash() {
    [ "$(q -c "SELECT pg_postmaster_start_time()")" = "$pm_start" ] && ! grep -q "terminated by signal" "$dir/server.log"
}

tok=$(q -c "SELECT keysmith.rotate_secret('r/good')")
st=$(ks_wait_rotation "$tok")
[ "$st" = finished ]; ks_check $? "a rotation against the good fake remote finishes: its test login passed the fake's PBKDF2 check ($st)"

# each malformed answer through create_secret, in a backend
declare -A want=(
    [norow]='42704 role "rapp" does not exist on the remote server'
    [null]='08P01 the remote server answered NULL for rolsuper'
    [twocols]='08P01 the remote server answered 1 rows of 2 columns for rolsuper, not one value'
    [nocols]="08P01 the remote server answered keysmith's statement with PGRES_COMMAND_OK, not PGRES_TUPLES_OK"
    [huge]='08P01 the remote server answered 16777216 bytes for rolsuper, more than keysmith reads (64)'
    [badbool]='08P01 the remote server answered a boolean that is neither t nor f'
    [manyrows]="08P01 the remote server answered keysmith's statement with more rows than it can have"
    [v16_norow]='08P01 the remote server answered 0 rows of 1 columns for scram_iterations, not one value'
    [v16_absurd]="22023 the remote server's scram_iterations (2147483647) is outside the range keysmith accepts (4096 to 1000000)"
    [v16_garbage]="08P01 the remote server's scram_iterations is not a number"
    [badversion]="08P01 the remote server's server_version does not start with a number"
    [error]='08000 remote server: permission denied???31mxxx*...'
    [error_nomsg]='08000 remote server: (no message)'
    [tarpit_query]='08006 the remote server did not answer within keysmith.rotation_step_timeout (2000 ms)'
    [garbage]='08* *'
    [garbage_auth]='08006 could not reach the remote server as its admin: login failed: *'
)
modes=(norow null twocols nocols huge badbool manyrows v16_norow v16_absurd v16_garbage badversion error error_nomsg tarpit_query garbage garbage_auth)
python3 -c 'import json, sys; print(json.dumps({m: m for m in sys.argv[1:]}))' "${modes[@]}" >"$fdir/modes.json"
for m in "${modes[@]}"; do
    t0=$(date +%s%N)
    out=$(qv -c "$(remote "c/$m" "$m")")
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    code=${want[$m]%% *}
    msg=${want[$m]#* }
    [[ $out == *"ERROR:  "$code": "$msg* ]]
    ks_check_out $? "$out" "create_secret, remote answers $m: $(sed -n 's/^ERROR:  //p' <<<"$out" | cut -c1-110) ($ms ms)"
done
echo '{"*": "tarpit_connect"}' >"$fdir/tmodes.json"
t0=$(date +%s%N)
out=$(qv -c "$(remote c/tarpit x "$tport" "connect_timeout=2000000")")
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
ks_sqlstate 08006 'could not reach the remote server as its admin: login timed out after 2000 ms*' "$out" && [ $ms -lt 10000 ]
ks_check_out $? "$out" "create_secret, remote accepts and stalls with connect_timeout=2000000 in conninfo: 08006 after $ms ms"
no_crash; ks_check $? "no backend crashed: the postmaster's start time is unchanged and no process ended by a signal"

# the same answers to the rotation worker: secrets made while the fake
# is good, then each turns hostile and all rotate in one round
echo '{}' >"$fdir/modes.json"
echo '{}' >"$fdir/tmodes.json"
for m in "${modes[@]}"; do q -c "$(remote "w/$m" "$m")" >/dev/null; done
q -c "$(remote w/tarpit_connect x "$tport" "connect_timeout=2000000")" >/dev/null
python3 -c 'import json, sys; print(json.dumps({m: m for m in sys.argv[1:]}))' "${modes[@]}" >"$fdir/modes.json"
echo '{"*": "tarpit_connect"}' >"$fdir/tmodes.json"
want[tarpit_connect]='08006 could not reach the remote server as its admin: login timed out after 2000 ms*'
q -c "SELECT keysmith.rotate_secret(name) FROM keysmith.secrets WHERE name LIKE 'w/%' ORDER BY name" >/dev/null
bad=""
for m in "${modes[@]}" tarpit_connect; do
    st=""
    for _ in $(seq 1 300); do
        st=$(q -c "SELECT state FROM keysmith.rotations WHERE secret = 'w/$m' ORDER BY started_at DESC LIMIT 1")
        [ "$st" = failed ] && break
        sleep 0.1
    done
    e=$(q -c "SELECT last_error FROM keysmith.rotations WHERE secret = 'w/$m' ORDER BY started_at DESC LIMIT 1")
    msg=${want[$m]#* }
    [ "$st" = failed ] && [[ $e == $msg* ]] || bad="$bad $m($st: $e)"
done
[ -z "$bad" ]; ks_check_out $? "$bad" "the worker records each hostile answer in keysmith.rotations.last_error and the rotation fails"
no_crash; ks_check $? "the worker never crashed either"

# finding 4: owner A's remote stalls, owner B's rotation is delayed by at
# most about one rotation_step_timeout
q <<'SQL' >/dev/null
ALTER SYSTEM SET keysmith.rotation_max_attempts = 5;
SELECT pg_reload_conf();
CREATE ROLE owner_a LOGIN IN ROLE keysmith_user;
CREATE ROLE owner_b LOGIN IN ROLE keysmith_user;
CREATE ROLE bapp LOGIN;
GRANT bapp TO owner_b WITH ADMIN OPTION;
SELECT keysmith.grant_key('k', 'owner_a', 'encrypt'), keysmith.grant_key('k', 'owner_a', 'decrypt');
SELECT keysmith.grant_key('k', 'owner_b', 'encrypt'), keysmith.grant_key('k', 'owner_b', 'decrypt');
SELECT keysmith.grant_secret('r/admin', 'owner_a', 'read');
SQL
echo '{}' >"$fdir/modes.json"
echo '{}' >"$fdir/tmodes.json"
q -c "SELECT pg_reload_conf()" >/dev/null
q -c "SET ROLE owner_a" -c "$(remote a/tarpit x "$tport" "connect_timeout=2000000")" \
  -c "$(remote a/stall a_stall)" >/dev/null
q -c "SET ROLE owner_b" -c "SELECT keysmith.create_secret('b/app', 'k', 'postgres_role', '{\"role\": \"bapp\"}')" >/dev/null
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
rotate_b() {   # prints how long B's rotation took to finish, in ms (or "never")
    local t0 tok st
    t0=$(now_ms)
    tok=$(q -c "SET ROLE owner_b" -c "SELECT keysmith.rotate_secret('b/app')")
    st=$(ks_wait_rotation "$tok")
    [ "$st" = finished ] && echo $(( $(now_ms) - t0 )) || echo never
}
base=$(rotate_b)
echo "# baseline: B's rotation alone finished in $base ms"
for attack in tarpit_connect tarpit_query; do
    if [ $attack = tarpit_connect ]; then a=a/tarpit; echo '{"*": "tarpit_connect"}' >"$fdir/tmodes.json"
    else a=a/stall; echo '{"a_stall": "tarpit_query"}' >"$fdir/modes.json"; fi
    atok=$(q -c "SET ROLE owner_a" -c "SELECT keysmith.rotate_secret('$a')")
    sleep 0.05
    late=$(rotate_b)
    r=$(q -c "SELECT state || ':' || attempts || ':' || coalesce(last_error, '') FROM keysmith.rotations WHERE token = '$atok'")
    delay=$(( ${late/never/999999} - ${base/never/0} ))
    echo "# $attack: with A's remote stalling, B finished in $late ms: $delay ms later than alone (rotation_step_timeout 2000 ms)"
    [ "$late" != never ] && [ "$delay" -lt 10000 ] && [[ $r == set:[1-9]*:*"2000 ms"* ]]
    ks_check_out $? "$r" "attack ($attack): A's rotation fails its attempt at the deadline and retries; B still finishes, $delay ms later than alone (bound 10000)"
    q -c "SET ROLE owner_a" -c "SELECT keysmith.cancel_rotation('$a')" >/dev/null 2>&1
done

# conninfo keywords that would lend the server's own credentials
out=$(qv -c "$(remote c/sslpw x "$fport" "sslpassword=x")")
ks_sqlstate 22023 'option conninfo must not hold a password' "$out"
ks_check_out $? "$out" "a conninfo with sslpassword is refused like one with a password (22023)"
bad=""
for kw in "krbsrvname=postgres" "gsslib=gssapi" "gssencmode=require" "replication=database"; do
    out=$(qv -c "$(remote c/kw x "$fport" "$kw")")
    ks_sqlstate 22023 "option conninfo must not set ${kw%%=*}" "$out" || bad="$bad $kw"
done
[ -z "$bad" ]; ks_check_out $? "$bad" "GSSAPI (krbsrvname, gsslib, gssencmode=require) and replication in conninfo are refused (22023)"
n=$(cat "$fdir"/log-*.jsonl | grep -c '"gssenc"')
[ "$n" = 0 ]; ks_check $? "no connection ever asked the fake server for GSSAPI encryption ($n)"
