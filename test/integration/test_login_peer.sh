#!/usr/bin/env bash
# test/integration/test_login_peer.sh
#
# Finding 5 of issue 20: the test login reaches only this cluster.  A
# cluster that does not listen on TCP (listen_addresses = ''); an attacker,
# OS user nobody, listens on 127.0.0.1 at the cluster's port and asks every
# client for a cleartext password (test/servers/fake_pg_server.py, mode
# capture).  First the attack is shown to work on a client that does not
# check its peer (psql gives it a marker password).  Then a rotation's test
# login connects there: keysmith must see that the listener is not this
# server's OS user, send nothing, and record a clear test failure, not
# 'finished'.  The positive cases: the test login over this server's Unix
# socket (SO_PEERCRED) with a pg_hba.conf line asking the role for its
# password, and over loopback TCP once the server listens there.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 7
fdir=$KS_WORK/extra-attacker
cleanup() {
    [ -s "$fdir/ready" ] && kill "$(cat "$fdir/ready")" 2>/dev/null
    [ -n "${dir:-}" ] && ks_cluster_stop "$dir"
}

dir=$KS_WORK/extra-test-login-peer
ks_cluster_init "$dir"
{
    echo "listen_addresses = ''"
    echo "keysmith.rotation_naptime = '200ms'"
    echo "keysmith.rotation_step_timeout = '2s'"
    echo "keysmith.rotation_max_attempts = 1"
} >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('k');
CREATE ROLE app LOGIN;
SELECT keysmith.create_secret('app', 'k', 'postgres_role', '{"role": "app"}');
SQL

mkdir -p "$fdir"
chown nobody "$fdir"
runuser -u nobody -- /usr/bin/python3 "$ROOT/test/servers/fake_pg_server.py" --port "$PGPORT" --mode capture \
    --capture "$fdir/captured" --log "$fdir/log.jsonl" --ready "$fdir/ready" >"$fdir/out.log" 2>&1 &
for _ in $(seq 1 100); do [ -s "$fdir/ready" ] && break; sleep 0.05; done
PGPASSWORD=marker-e6c1 psql -X -q -h 127.0.0.1 -p "$PGPORT" -U app -d postgres -c 'SELECT 1' >/dev/null 2>&1
grep -qx marker-e6c1 "$fdir/captured" 2>/dev/null
ks_check $? "attack: OS user nobody listens on 127.0.0.1:$PGPORT (the server does not) and a client that checks nothing gives it its password"
runuser -u nobody -- truncate -s 0 "$fdir/captured"
: >"$fdir/log.jsonl"

before=$(q -c "SELECT keysmith.get_secret('app')")
tok=$(q -c "SELECT keysmith.rotate_secret('app')")
st=$(ks_wait_rotation "$tok")
e=$(q -c "SELECT last_error FROM keysmith.rotations WHERE token = '$tok'")
[ "$st" = failed ] && [[ $e == "test login refused: what listens there runs as OS user $(id -u nobody), not as this server's OS user ($(id -u postgres)); the password was not sent" ]]
ks_check_out $? "$st: $e" "the rotation's test login refuses the listener of another OS user and fails the rotation ($st)"
[ ! -s "$fdir/captured" ] && ! grep -q '"user"' "$fdir/log.jsonl"
ks_check_out $? "$(cat "$fdir/captured" "$fdir/log.jsonl")" "the attacker captured nothing, not even a startup packet"
[ "$(q -c "SELECT keysmith.get_secret('app')")" = "$before" ]
ks_check $? "current is the credential it was"

# over this server's own Unix socket, where pg_hba.conf asks app for its password
kill "$(cat "$fdir/ready")"
sed -i '1i local all app scram-sha-256' "$dir/data/pg_hba.conf"
q -c "ALTER SYSTEM SET keysmith.rotation_test_conninfo = 'host=$dir port=$PGPORT dbname=postgres'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
tok=$(q -c "SELECT keysmith.rotate_secret('app')")
st=$(ks_wait_rotation "$tok")
e=$(q -c "SELECT coalesce(last_error, '') FROM keysmith.rotations WHERE token = '$tok'")
[ "$st" = finished ]; ks_check_out $? "$e" "the test login over this server's Unix socket (peer checked by SO_PEERCRED) passes ($st)"

# the usual set-up: the server listens on loopback
q -c "ALTER SYSTEM RESET keysmith.rotation_test_conninfo" -c "ALTER SYSTEM SET listen_addresses = '127.0.0.1'" >/dev/null
sed -i '1d' "$dir/data/pg_hba.conf"
ks_cluster_stop "$dir"
ks_cluster_start "$dir"
tok=$(q -c "SELECT keysmith.rotate_secret('app')")
st=$(ks_wait_rotation "$tok")
e=$(q -c "SELECT coalesce(last_error, '') FROM keysmith.rotations WHERE token = '$tok'")
[ "$st" = finished ]; ks_check_out $? "$e" "with the server on 127.0.0.1 the test login over loopback TCP (peer found in /proc/net/tcp) passes ($st)"
c=$(q -c "SELECT keysmith.get_secret('app')")
pw=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["password"])' "$c")
PGPASSWORD=$pw psql -X -q -h 127.0.0.1 -U app -d postgres -c 'SELECT 1' >/dev/null 2>&1
ks_check $? "and the rotated password logs in"
