#!/usr/bin/env bash
# test/integration/patroni.sh
#
# Automatic failover with Debian's patroni and etcd-server, all on
# loopback and started by this test: one etcd, two PostgreSQL nodes with
# keysmith preloaded and one master key file kept outside both data
# directories.  While a lease is about to expire and a rotation is paused
# after its `set` step (keysmith.rotation_pause_at, on the leader only),
# the leader's patroni and PostgreSQL are killed with SIGKILL.  The other
# node takes over, and:
#  - the lease is revoked by the new primary (failover time and revocation
#    lag are printed);
#  - the rotation finishes exactly once, and its current credential logs in;
#  - the first encryption uses a new DEK version; no value is lost.
# Everything it started is stopped at the end.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
# Under UBSan (the suite's second pass) it is skipped: it reaches no keysmith
# code that failover.sh does not, and the pass must stay short.
if [ "${KEYSMITH_SANITIZE:-0}" = 1 ]; then
    ks_plan 0
    echo "# patroni.sh: skipped under UBSan (failover.sh covers the same keysmith code there)"
    exit 0
fi
ks_plan 8

D=$KS_WORK/extra-patroni
rm -rf "$D"; mkdir -p "$D"; chown "$PG_OSUSER": "$D"; chmod 711 "$D"
pids=()
# the pids are runuser's; patroni and etcd run below them, found by their
# arguments (this test's directory)
ours() { pgrep -f -- "$D/$1" 2>/dev/null; }
cleanup() {
    local p
    for p in $(ours n2.yml) $(ours n1.yml); do kill "$p" 2>/dev/null; done
    for _ in $(seq 1 100); do [ -z "$(ours n2.yml)$(ours n1.yml)" ] && break; sleep 0.1; done
    for p in $(ours etcd/data) "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for _ in $(seq 1 50); do [ -z "$(ours etcd/data)" ] && break; sleep 0.1; done
    pkill -KILL -f -- "$D/" 2>/dev/null
    wait 2>/dev/null
    for n in n1 n2; do
        [ -f "$D/$n/data/postmaster.pid" ] && ks_as_pg "$PG_BIN/pg_ctl" -D "$D/$n/data" -m immediate stop >/dev/null 2>&1
    done
}

EP=$(ks_free_port); EPP=$(ks_free_port)
mkdir -p "$D/etcd"; chown "$PG_OSUSER": "$D/etcd"; chmod 700 "$D/etcd"
ks_as_pg etcd --name ks --data-dir "$D/etcd/data" \
    --listen-client-urls "http://127.0.0.1:$EP" --advertise-client-urls "http://127.0.0.1:$EP" \
    --listen-peer-urls "http://127.0.0.1:$EPP" --initial-advertise-peer-urls "http://127.0.0.1:$EPP" \
    --initial-cluster "ks=http://127.0.0.1:$EPP" >"$D/etcd/etcd.log" 2>&1 &
pids+=($!)

# one master key for both nodes, outside their data directories
install -m 600 -o "$PG_OSUSER" /dev/null "$D/master.key"
ks_new_master_key "$D/master.key"
chown "$PG_OSUSER": "$D/master.key"; chmod 600 "$D/master.key"

node_conf() { # NAME PGPORT RESTPORT
    mkdir -p "$D/$1"; chown "$PG_OSUSER": "$D/$1"; chmod 700 "$D/$1"
    cat >"$D/$1.yml" <<YML
scope: keysmith-test
name: $1
restapi:
  listen: 127.0.0.1:$3
  connect_address: 127.0.0.1:$3
etcd3:
  hosts: 127.0.0.1:$EP
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: false
      parameters:
        shared_preload_libraries: keysmith
        keysmith.local_master_key_file: $D/master.key
        keysmith.reaper_naptime: 200ms
        keysmith.rotation_naptime: 200ms
        max_connections: 50
        fsync: 'off'
  initdb:
    - encoding: UTF8
    - locale: C
    - username: postgres
postgresql:
  # the whole pg_hba.conf: initdb's own lines would trust every role on
  # 127.0.0.1, and the rotation's test login refuses to prove anything then
  pg_hba:
    - local all all trust
    - host all postgres 127.0.0.1/32 trust
    - host replication postgres 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 scram-sha-256
  listen: 127.0.0.1:$2
  connect_address: 127.0.0.1:$2
  data_dir: $D/$1/data
  bin_dir: $PG_BIN
  pgpass: $D/$1/pgpass
  authentication:
    superuser:
      username: postgres
    replication:
      username: postgres
  parameters:
    unix_socket_directories: $D/$1
tags:
  nofailover: false
YML
    chown "$PG_OSUSER": "$D/$1.yml"
}
P1=$(ks_free_port); R1=$(ks_free_port); P2=$(ks_free_port); R2=$(ks_free_port)
node_conf n1 "$P1" "$R1"; node_conf n2 "$P2" "$R2"
role_of() { # RESTPORT: primary, replica or nothing (Patroni 3.0 says master)
    python3 -c "import json, sys, urllib.request
try: r = json.load(urllib.request.urlopen('http://127.0.0.1:$1/patroni', timeout=1)).get('role', '')
except Exception: r = ''
print('primary' if r in ('master', 'primary') else r)"
}
ks_as_pg patroni "$D/n1.yml" >"$D/n1/patroni.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do [ "$(role_of "$R1")" = primary ] && break; sleep 0.2; done
ks_as_pg patroni "$D/n2.yml" >"$D/n2/patroni.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do [ "$(role_of "$R2")" = replica ] && break; sleep 0.2; done
[ "$(role_of "$R1")" = primary ] && [ "$(role_of "$R2")" = replica ]
ks_check $? "etcd and two Patroni nodes on loopback: n1 leads, n2 replicates"

q1() { psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$D/n1" -p "$P1" -U postgres -d postgres "$@"; }
q2() { psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$D/n2" -p "$P2" -U postgres -d postgres "$@"; }
q1 >/dev/null <<'SQL'
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('pk');
CREATE TABLE pt AS SELECT i AS id, keysmith.encrypt_value('pk', 'v' || i, i::text) AS c FROM generate_series(1, 100) i;
CREATE ROLE p_rw NOLOGIN;
SELECT keysmith.create_role_template('p', ARRAY['p_rw'], '1 minute', '1 hour');
CREATE ROLE papp LOGIN;
SELECT keysmith.create_secret('db/papp', 'pk', 'postgres_role', '{"role": "papp"}');
SQL
for _ in $(seq 1 100); do [ "$(q2 -c "SELECT count(*) FROM keysmith.secret" 2>/dev/null)" = 1 ] && break; sleep 0.1; done
n=$(q2 -c "SELECT count(*) FROM pt WHERE keysmith.decrypt_value(c, id::text) = 'v' || id")
[ "$n" = 100 ]
ks_check $? "keysmith on the leader; the replica decrypts all 100 values with the shared master key file"

old=$(q1 -c "SELECT keysmith.get_secret('db/papp')")
v_before=$(q1 -c "SELECT current_version FROM keysmith.keys WHERE name = 'pk'")
tok=$(PGHOST=$D/n1 PGPORT=$P1 PGUSER=postgres ks_rotate_paused db/papp set)
paused=$?
lease=$(q1 -c "SELECT lease_id FROM keysmith.issue_role('p', '4 seconds')")
user=$(q1 -c "SELECT username FROM keysmith.leases WHERE lease_id = '$lease'")
for _ in $(seq 1 100); do [ "$(q2 -c "SELECT count(*) FROM keysmith.lease WHERE lease_id = '$lease'" 2>/dev/null)" = 1 ] && break; sleep 0.1; done
pm=$(head -1 "$D/n1/data/postmaster.pid")
kill -KILL $(ours n1.yml) "$pm"
t_kill=$(date +%s.%N)
for _ in $(seq 1 100); do ks_pid_alive "$pm" || break; sleep 0.1; done
[ $paused = 0 ]
ks_check $? "a rotation paused after set and a lease about to expire; the leader's patroni and postgres get SIGKILL"

for _ in $(seq 1 300); do [ "$(role_of "$R2")" = primary ] && break; sleep 0.2; done
t_up=$(date +%s.%N)
[ "$(role_of "$R2")" = primary ]
ks_check $? "Patroni promotes n2"
failover=$(awk -v a="$t_kill" -v b="$t_up" 'BEGIN {printf "%.1f", b - a}')

for _ in $(seq 1 150); do
    st=$(q2 -c "SELECT state FROM keysmith.leases WHERE lease_id = '$lease'" 2>/dev/null)
    [ "$st" = revoked ] && break
    sleep 0.2
done
lag=$(q2 -c "SELECT round(extract(epoch FROM revoked_at - expires)::numeric, 2) FROM keysmith.leases WHERE lease_id = '$lease'")
[ "$st" = revoked ] && [ "$(q2 -c "SELECT count(*) FROM pg_roles WHERE rolname = '$user'")" = 0 ]
ks_check $? "the lease that expired during the failover is revoked by the new primary and its role dropped"
echo "# Patroni failover (SIGKILL to promoted) took $failover s; the lease was revoked $lag s after it expired"

st=$(PGHOST=$D/n2 PGPORT=$P2 PGUSER=postgres ks_wait_rotation "$tok")
n=$(q2 -c "SELECT count(*) FROM keysmith.rotation WHERE secret_name = 'db/papp'")
ev=$(q2 -c "SELECT string_agg(event, ',' ORDER BY event_id) FROM keysmith.rotation_event WHERE token = '$tok'")
why=$(q2 -c "SELECT last_error FROM keysmith.rotations WHERE token = '$tok'")
[ "$st" = finished ] && [ "$n" = 1 ]
ks_check_out $? "$st $n $ev: $why" "the rotation in flight finishes exactly once on the new primary ($ev)"
cur=$(q2 -c "SELECT keysmith.get_secret('db/papp')")
PGPORT=$P2 login papp "$(field "$cur" password)" && [ "$cur" != "$old" ]
ks_check $? "and its current credential logs in"

c=$(q2 -c "SELECT keysmith.encrypt_value('pk', 'after')")
v_after=$(q2 -c "SELECT key_version FROM keysmith.ciphertext_info('$c')")
n=$(q2 -c "SELECT count(*) FROM pt WHERE keysmith.decrypt_value(c, id::text) = 'v' || id")
[ "$v_after" -gt "$v_before" ] && [ "$n" = 100 ] && [ "$(q2 -c "SELECT keysmith.decrypt_value('$c')")" = after ]
ks_check $? "the first encryption on the new primary uses a new DEK version ($v_before -> $v_after); no value is lost"
