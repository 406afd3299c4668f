#!/usr/bin/env bash
# test/integration/redteam.sh
#
# The red team's review of keysmith 0.10 (issue 20's second round): each
# check performs one attack that worked on a running cluster, and passes
# only when keysmith holds.  Every check asserts that the attack really ran
# (the tarpit got its connection, the squatter holds its lock, a reader
# hears the rotation, the statement ran) so that none can pass by default.
#   1. an owner job whose code waits where no interrupt is checked (a
#      dblink connection to a host that never answers) outlives
#      keysmith.rotation_step_timeout and pg_terminate_backend;
#   2. such jobs keep their worker slots, so after a few rotations of one
#      keysmith_user's secret every other owner's job fails to start;
#   3. any login role holding pg_advisory_lock(19283, <table oid>) stopped
#      scheduled re-encryption of another role's table (0.10 takes a lock
#      tag no SQL function can ask for);
#   7. a job that waits with connect_timeout=0 (no deadline can end it):
#      its role gets no second job while it lives, others still run;
#   4. a role that lost read on a secret (membership revoked) still hears
#      its rotations, name and version included, on the channel it learned;
#   5. with standard_conforming_strings = off, 'a\' plaintext ' is logged
#      with the plaintext outside the redacted constants;
#   6. an ERROR about a literal given to encrypt_value (a date of birth
#      that does not exist) quotes it.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"

dir=$KS_WORK/extra-redteam
tarpit_pid=
squatter_pid=
cleanup() {
    # the stuck jobs end only when their connection does: close it first,
    # or the cluster cannot stop
    [ -n "$tarpit_pid" ] && kill "$tarpit_pid" 2>/dev/null
    [ -n "$squatter_pid" ] && kill "$squatter_pid" 2>/dev/null
    sleep 1
    ks_cluster_stop "$dir"
}
ks_plan 7

ks_cluster_init "$dir"
{
    echo "keysmith.rotation_naptime = '200ms'"
    echo "keysmith.reaper_naptime = '200ms'"
    echo "keysmith.rotation_step_timeout = '2s'"
    echo "keysmith.rotation_max_attempts = 1"
    # the lease reaper, the rotation worker and the logical replication
    # launcher take 3; 3 are left for owner jobs
    echo "max_worker_processes = 6"
} >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
log=$dir/server.log
rotate() { q -c "SET ROLE $1" -c "SELECT keysmith.rotate_secret('$2')"; }
last_error() { q -c "SELECT last_error FROM keysmith.rotations WHERE token = '$1'"; }
jobs_running() { q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'keysmith owner job'"; }

# start_tarpit: a host on $tarpit_port that accepts connections and never
# answers; it counts them in tarpit.count (sets tarpit_pid)
start_tarpit() {
    python3 - "$tarpit_port" "$dir/tarpit.count" <<'PY' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1])))
s.listen(64)
held = []
while True:
    c, _ = s.accept()
    held.append(c)
    with open(sys.argv[2], 'w') as f:
        f.write(str(len(held)))
PY
    tarpit_pid=$!
}
# stop_tarpit: close it (and so every connection it held), then wait
# for the owner jobs stuck on it to exit
stop_tarpit() {
    kill "$tarpit_pid" 2>/dev/null
    wait "$tarpit_pid" 2>/dev/null
    tarpit_pid=
    ks_wait_for "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'keysmith owner job'" 100 ||
        echo "# owner jobs still running after the tarpit closed"
}
tarpit_port=$(ks_free_port)
start_tarpit
for _ in $(seq 1 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $tarpit_port), 1).close()" 2>/dev/null && break
    sleep 0.1
done
sleep 0.5
probes=$(cat "$dir/tarpit.count" 2>/dev/null || echo 0)

q <<SQL >/dev/null
CREATE EXTENSION keysmith;
CREATE EXTENSION dblink;
SELECT keysmith.create_key('rt');
CREATE ROLE mallory LOGIN IN ROLE keysmith_user;
CREATE ROLE victim LOGIN IN ROLE keysmith_user;
CREATE ROLE readers NOLOGIN;
CREATE ROLE bob LOGIN IN ROLE keysmith_user, readers;
CREATE ROLE nobody LOGIN;
CREATE SCHEMA app;
GRANT USAGE, CREATE ON SCHEMA app TO mallory, victim;
SELECT keysmith.grant_key('rt', r, p)
  FROM unnest(ARRAY['mallory', 'victim']) r, unnest(ARRAY['encrypt', 'decrypt']) p;
SET ROLE mallory;
-- dblink's connect (libpq's PQconnectdb) checks no interrupt while it waits
CREATE FUNCTION app.hang(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM public.dblink_connect('host=127.0.0.1 port=$tarpit_port user=x dbname=x password=x');
END \$\$;
SELECT keysmith.create_secret('m/hang', 'rt', 'sql', '{"function": "app.hang"}', 'v0');
SET ROLE victim;
CREATE FUNCTION app.ok(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE sql AS \$\$ SELECT NULL::void \$\$;
SELECT keysmith.create_secret('v/ok', 'rt', 'sql', '{"function": "app.ok"}', 'v0');
SELECT keysmith.grant_secret('v/ok', 'readers', 'read');
CREATE TABLE app.vt (id int PRIMARY KEY, c bytea);
INSERT INTO app.vt SELECT i, keysmith.encrypt_value('rt', 'v' || i) FROM generate_series(1, 20) i;
SELECT keysmith.register_column('app.vt', 'c', 'rt');
SQL
[ $? = 0 ] || echo "# setup failed"

# --- 1. a job that waits without interrupt checks outlives its deadline
tok=$(rotate mallory m/hang)
st=$(ks_wait_rotation "$tok")
e=$(last_error "$tok")
hits=$(( $(cat "$dir/tarpit.count" 2>/dev/null || echo 0) - probes ))
gone=1
for _ in $(seq 1 100); do
    [ "$(jobs_running)" = 0 ] && { gone=0; break; }
    sleep 0.1
done
left=$(jobs_running)
q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'keysmith owner job'" >/dev/null
sleep 1
after_term=$(jobs_running)
echo "# after the rotation failed: $left job(s) still running 10 s later, $after_term after pg_terminate_backend"
# keysmith's deadline, or libpq's own connect_timeout, which keysmith
# defaults to the deadline in owner jobs (PGCONNECT_TIMEOUT)
[ "$st" = failed ] && [[ $e == *"did not finish within keysmith.rotation_step_timeout"* || $e == *"could not establish connection"* ]] &&
    [ "$hits" -ge 1 ] && [ $gone = 0 ]
ks_check $? "an owner job stuck where no interrupt is checked (dblink to a tarpit) is gone once its rotation failed at the deadline ($st, tarpit connections $hits, jobs left $left)"

# --- 2. stuck jobs keep their worker slots: another owner's job cannot start
for _ in 1 2 3 4; do
    tok=$(rotate mallory m/hang)
    ks_wait_rotation "$tok" >/dev/null
    e=$(last_error "$tok")
    [[ $e == *"could not start a worker"* ]] && break
done
stuck=$(jobs_running)
tok=$(rotate victim v/ok)
vst=$(ks_wait_rotation "$tok")
ve=$(last_error "$tok")
hits=$(( $(cat "$dir/tarpit.count" 2>/dev/null || echo 0) - probes ))
[ "$hits" -ge 2 ] && [ "$vst" = finished ]
ks_check $? "another owner's rotation finishes after mallory's stuck jobs ($stuck of them running; victim: $vst ${ve:+- $ve})"
# end the stuck jobs: close the tarpit's connections
stop_tarpit

# --- 7. connect_timeout=0: nothing ends the job; its role gets no other job meanwhile
start_tarpit
sleep 1
rm -f "$dir/tarpit.count"
q <<SQL >/dev/null
SET ROLE mallory;
CREATE FUNCTION app.hang0(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM public.dblink_connect('host=127.0.0.1 port=$tarpit_port user=x dbname=x password=x connect_timeout=0');
END \$\$;
SELECT keysmith.create_secret('m/hang0', 'rt', 'sql', '{"function": "app.hang0"}', 'v0');
SELECT keysmith.create_secret('m/hang1', 'rt', 'sql', '{"function": "app.hang0"}', 'v0');
SQL
tok=$(rotate mallory m/hang0)
st=$(ks_wait_rotation "$tok")
ks_wait_for "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'keysmith owner job'" 100
stuck=$?
tok1=$(rotate mallory m/hang1)
sleep 3
w=$(q -c "SELECT state || ':' || attempts || ':' || coalesce(last_error, '') FROM keysmith.rotations WHERE token = '$tok1'")
tv=$(rotate victim v/ok)
vs=$(ks_wait_rotation "$tv")
hits=$(cat "$dir/tarpit.count" 2>/dev/null || echo 0)
echo "# connect_timeout=0: first rotation $st, one job stuck ($stuck), second rotation $w, victim $vs, tarpit connections $hits"
[ "$st" = failed ] && [ $stuck = 0 ] && [[ $w == create:0:waiting:* ]] && [ "$vs" = finished ] && [ "$hits" = 1 ] &&
    [ "$(jobs_running)" = 1 ]
ks_check $? "a job no deadline can end (dblink with connect_timeout=0) keeps one worker slot: its role's next job waits, another role's rotation finishes"
stop_tarpit

# --- 3. any login role squats re-encryption's advisory lock on another role's table
oid=$(q -c "SELECT 'app.vt'::regclass::oid")
psql -X -q -d postgres -U nobody -c "SELECT pg_advisory_lock(19283, $oid)" -c "SELECT pg_sleep(120)" \
    >/dev/null 2>&1 &
squatter_pid=$!
ks_wait_for "SELECT count(*) = 1 FROM pg_locks l JOIN pg_roles r ON r.rolname = 'nobody'
          JOIN pg_stat_activity a ON a.pid = l.pid AND a.usesysid = r.oid
          WHERE l.locktype = 'advisory' AND l.classid = 19283 AND l.objid = $oid AND l.granted" 50
held=$?
q -c "SELECT keysmith.schedule_key_rotation('rt', '30 days', true, NULL, now() - interval '30 days 1 minute')" >/dev/null
ks_wait_for "SELECT NOT reencrypt_pending AND last_done_at IS NOT NULL FROM keysmith.encrypted_columns
          WHERE tbl = 'app.vt'::regclass" 200
done=$?
e=$(q -c "SELECT last_error FROM keysmith.encrypted_columns WHERE tbl = 'app.vt'::regclass")
[ $held = 0 ] && [ $done = 0 ]
ks_check $? "a login role with no privilege holding pg_advisory_lock(19283, oid) does not stop scheduled re-encryption of victim's table (lock held: $held; ${e:-no error})"
q -c "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a WHERE a.usename = 'nobody'" >/dev/null
wait "$squatter_pid" 2>/dev/null
squatter_pid=

# --- 4. a role that lost read keeps hearing the secret's rotations
ch=$(psql -X -q -t -A -d postgres -U bob -c "SELECT keysmith.secret_channel('v/ok')")
q -c "REVOKE readers FROM bob" >/dev/null
denied=$(psql -X -q -t -A -d postgres -U bob -c "SELECT keysmith.get_secret('v/ok')" 2>&1)
psql -X -t -A -d postgres -U bob -c "LISTEN \"$ch\"" -c "SELECT pg_sleep(6)" -c "SELECT 1" \
    >"$dir/listen.out" 2>&1 &
lpid=$!
sleep 1
t1=$(rotate victim v/ok)
s1=$(ks_wait_rotation "$t1")
t2=$(rotate victim v/ok)
s2=$(ks_wait_rotation "$t2")
wait "$lpid"
heard=$(grep -c 'v/ok' "$dir/listen.out")
[[ $ch == keysmith_rotation_* ]] && [[ $denied == *"permission denied"* ]] &&
    [ "$s1" = finished ] && [ "$s2" = finished ] && [ "$heard" = 0 ]
ks_check_out $? "channel $ch; $denied; rotations $s1 $s2" "a role whose read on a secret was revoked (membership) hears none of its next rotations ($heard notifications naming it)"

# --- 5 and 6. the server log
q -c "ALTER SYSTEM SET log_statement = 'all'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
out=$(psql -X -q -t -A -d postgres -U victim \
    -c "SET standard_conforming_strings = off" -c "SET escape_string_warning = off" \
    -c "SELECT keysmith.encrypt_value('rt', 'a\\' MARK-SCS-plaintext ') IS NOT NULL" 2>&1)
sleep 0.5
n=$(grep -c 'MARK-SCS-plaintext' "$log")
[ "$out" = t ] && [ "$n" = 0 ]
ks_check $? "with standard_conforming_strings off, a backslash-quoted literal given to encrypt_value is redacted ($n log lines hold it)"

out=$(psql -X -q -t -A -d postgres -U victim \
    -c "SELECT keysmith.encrypt_value('rt', '1937-02-30'::date::text)" 2>&1)
sleep 0.5
n=$(grep -c '1937-02-30' "$log")
[[ $out == *"date/time field value out of range"* ]] && [ "$n" = 0 ]
ks_check_out $? "$out" "an ERROR about a bad literal given to encrypt_value does not quote it in the log ($n log lines hold it)"
