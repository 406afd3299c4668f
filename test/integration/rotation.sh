#!/usr/bin/env bash
# test/integration/rotation.sh
#
# Credential rotation on a real server, end to end: a postgres_role secret
# rotates (the new password logs in over TCP, the old one stops at set,
# NOTIFY on the secret's own channel says it rotated, naming nothing, and
# the channel moves); a pair rotates 50 times while a client reads
# current and logs in, with no failed login; a pg_hba.conf trust line
# makes the test step fail (PQconnectionUsedPassword), the rotation ends
# 'failed' and current still logs in; the target role dropped
# mid-rotation; two rotate_secret calls at once; a standby refuses
# rotate_secret (25006) and its rotation worker idles; and with
# log_statement = 'all', no password keysmith handled is in the server log.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 33

dir=$KS_WORK/extra-rotation
ks_cluster_init "$dir"
{
    echo "keysmith.rotation_naptime = '200ms'"
    echo "keysmith.rotation_max_attempts = 2"
    echo "keysmith.rotation_lock_timeout = '300ms'"
    echo "log_statement = 'all'"
    echo "log_min_error_statement = error"
    echo "log_parameter_max_length = -1"
    echo "wal_level = replica"
    echo "max_wal_senders = 4"
} >>"$dir/data/postgresql.conf"
echo "host replication postgres 127.0.0.1/32 trust" >>"$dir/data/pg_hba.conf"
ks_cluster_start "$dir"
. "$dir/env"
log=$dir/server.log
passwords=$KS_WORK/rotation-passwords.txt
: >"$passwords"

cred() { q -c "SELECT keysmith.get_secret('$1', '${2:-current}')"; }
# field (test/lib.sh) parses credentials here, not the server: a SELECT of
# the JSON would put the password in the very log this test searches
remember() { field "$1" password >>"$passwords"; }
# put_hba: stdin becomes pg_hba.conf, renamed into place whole, so that a
# reload in progress never reads a half-written file
put_hba() {
    cat >"$dir/data/pg_hba.conf.new"
    chown "$PG_OSUSER": "$dir/data/pg_hba.conf.new"
    mv "$dir/data/pg_hba.conf.new" "$dir/data/pg_hba.conf"
}

q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('creds');
CREATE ROLE app LOGIN;
CREATE ROLE app_a LOGIN;
CREATE ROLE app_b LOGIN;
CREATE ROLE app_owner NOLOGIN;
GRANT app_owner TO app_a, app_b;
CREATE ROLE fragile LOGIN;
SQL
ks_check $? "setup: a key, a role, a pair with its NOLOGIN owner role"

# 1. postgres_role, end to end
v1=$(q -c "SELECT keysmith.create_secret('db/app', 'creds', 'postgres_role', '{\"role\": \"app\", \"password_length\": 40}')")
c1=$(cred db/app); remember "$c1"
p1=$(field "$c1" password)
[ "$(field "$c1" username)" = app ] && [ ${#p1} = 40 ] && login app "$p1"
ks_check $? "create_secret generates a 40-character password, installs it, and it logs in"

listen_out=$KS_WORK/rotation-listen.out
channel=$(q -c "SELECT keysmith.secret_channel('db/app')")
psql -X -q -d postgres -c "LISTEN $channel" -c "SELECT pg_sleep(2)" >"$listen_out" 2>&1 &
listener=$!
sleep 0.5
tok=$(q -c "SELECT keysmith.rotate_secret('db/app')")
st=$(ks_wait_rotation "$tok")
[ "$st" = finished ]; ks_check $? "rotate_secret runs create, set, test and finish ($st)"
c2=$(cred db/app); remember "$c2"
p2=$(field "$c2" password)
login app "$p2" && ! login app "$p1"
ks_check $? "the new current password logs in; the old one stopped working at set"
[ "$(cred db/app previous)" = "$c1" ] && [ -z "$(cred db/app pending)" ]
ks_check $? "previous is the old credential; no version is pending"
v2=$(q -c "SELECT current_version FROM keysmith.secrets WHERE name = 'db/app'")
wait $listener
channel2=$(q -c "SELECT keysmith.secret_channel('db/app')")
grep -qF "\"$channel\" with payload \"{\"event\": \"rotated\"}\"" "$listen_out" &&
    ! grep -qF -e db/app -e "$v2" "$listen_out" && [ "$channel2" != "$channel" ]
ks_check $? "finish sent NOTIFY {\"event\": \"rotated\"} on the secret's channel, naming neither secret nor version, and moved the secret to a new channel"
n=$(q -c "SELECT string_agg(event, ',' ORDER BY event_id) FROM keysmith.rotation_event WHERE token = '$tok'")
[ "$n" = "requested,created,set,tested,finished" ]; ks_check $? "the audit trail has each step once ($n)"
[ "$(q -c "SELECT rotate_secret FROM keysmith.rotate_secret('db/app', '$tok')")" = "$tok" ] &&
    [ "$(q -c "SELECT count(*) FROM keysmith.rotation WHERE secret_name = 'db/app'")" = 1 ] &&
    [ "$(cred db/app)" = "$c2" ]
ks_check $? "the same token again returns the same rotation and does nothing"

# 2. the pair: 50 rotations, a client reading current and logging in throughout
q -c "SELECT keysmith.create_secret('db/pair', 'creds', 'postgres_role_pair', '{\"roles\": [\"app_a\", \"app_b\"], \"owner_role\": \"app_owner\"}')" >/dev/null
stop_flag=$KS_WORK/rotation-pair.stop
client_log=$KS_WORK/rotation-pair.client
rm -f "$stop_flag"; : >"$client_log"
(
    while [ ! -e "$stop_flag" ]; do
        # one read of current, as an application reloading it would do
        IFS='|' read -r u p < <(q -F '|' -c "SELECT c->>'username', c->>'password'
                                            FROM (SELECT keysmith.get_secret('db/pair')::jsonb AS c) s")
        if login "$u" "$p"; then echo ok >>"$client_log"; else echo "FAIL $u" >>"$client_log"; fi
    done
) &
client=$!
# the driver rotates 50 times, waiting for each to finish, keeping each
# current credential (in a table: a SELECT of it would not reach the log
# either, but a statement holding it would), and then waiting until the
# client has logged in once more, so that it logs in at least once per
# rotation however loaded the machine is
q -c "CREATE TABLE pair_seen (i int, cred text)" >/dev/null
for i in $(seq 1 50); do
    q -v i="$i" >/dev/null <<'SQL'
SELECT set_config('pair.i', :'i', false);
DO $$
DECLARE t uuid := keysmith.rotate_secret('db/pair');
BEGIN
    COMMIT;
    FOR j IN 1..3000 LOOP
        EXIT WHEN (SELECT state FROM keysmith.rotation WHERE token = t) IN ('finished', 'failed', 'cancelled');
        PERFORM pg_sleep(0.01);
    END LOOP;
    INSERT INTO pair_seen SELECT current_setting('pair.i')::int, keysmith.get_secret('db/pair');
END $$;
SQL
    n0=$(wc -l <"$client_log")
    for _ in $(seq 1 400); do
        [ "$(wc -l <"$client_log")" -ge $((n0 + 1)) ] && break
        sleep 0.05
    done
done
rot_ok=$(q -c "SELECT count(*) FROM keysmith.rotation WHERE secret_name = 'db/pair' AND state = 'finished'")
q -c "SELECT cred::jsonb->>'password' FROM pair_seen" >>"$passwords"
touch "$stop_flag"; wait $client
fails=$(grep -c FAIL "$client_log"); logins=$(grep -c ok "$client_log")
[ "$rot_ok" = 50 ]; ks_check $? "50 pair rotations finished ($rot_ok)"
[ "$fails" = 0 ] && [ "$logins" -ge 50 ]; ks_check $? "the client logged in $logins times with current (at least once per rotation), 0 failed ($fails)"
v=$(q -c "SELECT count(*) FILTER (WHERE stage IS NULL) || ',' || count(*) FROM keysmith.secret_version WHERE secret_name = 'db/pair'")
[ "$v" = "5,7" ]; ks_check $? "unlabelled versions beyond keep_versions (5) were erased: current, previous and 5 kept ($v)"
cu=$(field "$(cred db/pair)" username); pu=$(field "$(cred db/pair previous)" username)
login "$pu" "$(field "$(cred db/pair previous)" password)" && [ "$cu" != "$pu" ]
ks_check $? "previous (role $pu) still logs in beside current (role $cu)"
q -c "CREATE SCHEMA pair_app AUTHORIZATION app_owner" >/dev/null
q -c "SET ROLE app_a; CREATE TABLE pair_app.pair_obj(i int); RESET ROLE;" >/dev/null
o=$(q -c "SELECT tableowner FROM pg_tables WHERE tablename = 'pair_obj'")
# (the docs' advice: DDL as the owner role keeps ownership stable)
q -c "SET ROLE app_a; SET ROLE app_owner; CREATE TABLE pair_app.pair_obj2(i int); RESET ROLE;" >/dev/null
o2=$(q -c "SELECT tableowner FROM pg_tables WHERE tablename = 'pair_obj2'")
[ "$o" = app_a ] && [ "$o2" = app_owner ]
ks_check $? "DDL after SET ROLE app_owner gives objects the owner role, whichever role is current"

# 3. a trust line: the test login proves nothing, the rotation fails, current still works
c_before=$(cred db/app)
cp "$dir/data/pg_hba.conf" "$KS_WORK/rotation-hba.saved"
{ echo "host all app 127.0.0.1/32 trust"; cat "$KS_WORK/rotation-hba.saved"; } | put_hba
q -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3
tok=$(q -c "SELECT keysmith.rotate_secret('db/app')")
st=$(ks_wait_rotation "$tok")
err=$(q -c "SELECT last_error FROM keysmith.rotations WHERE token = '$tok'")
[ "$st" = failed ] && [[ $err == *"without using the password"* ]]
ks_check $? "with a trust line the test step fails and the rotation ends failed ($st: $err)"
put_hba <"$KS_WORK/rotation-hba.saved"
q -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3
[ "$(cred db/app)" = "$c_before" ] && [ -z "$(cred db/app pending)" ] && login app "$(field "$c_before" password)"
ks_check $? "after the failure current is untouched, nothing is pending, and current logs in again"
n=$(q -c "SELECT count(*) FROM keysmith.rotation_event WHERE token = '$tok' AND event IN ('step_failed', 'restored', 'failed')")
[ "$n" = 4 ]; ks_check $? "the trail shows two failed attempts, the restore and the end ($n events)"

# 3b. cancel_rotation after set changed the role: the role gets current back
q -c "ALTER SYSTEM SET keysmith.rotation_max_attempts = 10" -c "SELECT pg_reload_conf()" >/dev/null
{ echo "host all app 127.0.0.1/32 trust"; cat "$KS_WORK/rotation-hba.saved"; } | put_hba
q -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3
c_before=$(cred db/app)
tok=$(q -c "SELECT keysmith.rotate_secret('db/app')")
for _ in $(seq 1 100); do
    [ "$(q -c "SELECT state || attempts FROM keysmith.rotation WHERE token = '$tok'")" = test1 ] && break
    sleep 0.05
done
q -c "SELECT keysmith.cancel_rotation('db/app')" >/dev/null
st=$(q -c "SELECT state FROM keysmith.rotation WHERE token = '$tok'")
put_hba <"$KS_WORK/rotation-hba.saved"
q -c "ALTER SYSTEM RESET keysmith.rotation_max_attempts" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3
[ "$st" = cancelled ] && [ -z "$(cred db/app pending)" ] && [ "$(cred db/app)" = "$c_before" ] &&
    login app "$(field "$c_before" password)"
ks_check $? "cancel_rotation after set: cancelled, pending erased, and the role logs in with current again ($st)"
n=$(q -c "SELECT string_agg(event, ',' ORDER BY event_id) FROM keysmith.rotation_event WHERE token = '$tok'")
[[ $n == *restored,cancelled ]]; ks_check $? "the trail ends restored, cancelled ($n)"

# 3c. bounded lock waits: a session holds app's pg_authid row; the set step
# gives up after keysmith.rotation_lock_timeout and succeeds on its retry
psql -X -q -d postgres -c "BEGIN" -c "ALTER ROLE app CONNECTION LIMIT 50" -c "SELECT pg_sleep(0.8)" -c "COMMIT" >/dev/null 2>&1 &
blocker=$!
sleep 0.2
tok=$(q -c "SELECT keysmith.rotate_secret('db/app')")
st=$(ks_wait_rotation "$tok"); wait $blocker
r=$(q -c "SELECT attempts || ':' || coalesce(last_error, '') FROM keysmith.rotations WHERE token = '$tok'")
e=$(q -c "SELECT detail FROM keysmith.rotation_event WHERE token = '$tok' AND event = 'step_failed'")
[ "$st" = finished ] && [ "$r" = "1:" ] && [[ $e == "set (attempt 1 of 2): canceling statement due to lock timeout"* ]]
ks_check $? "a set step blocked by another session's lock fails after the lock timeout and finishes on retry ($st, $e)"
remember "$(cred db/app)"
login app "$(field "$(cred db/app)" password)"; ks_check $? "and the rotated password logs in"

# 4. the target role dropped mid-rotation
q -c "SELECT keysmith.create_secret('db/fragile', 'creds', 'postgres_role', '{\"role\": \"fragile\"}')" >/dev/null
c_frag=$(cred db/fragile)
tok=$(q -c "BEGIN; SELECT keysmith.rotate_secret('db/fragile'); DROP ROLE fragile; COMMIT;" | head -1)
st=$(ks_wait_rotation "$tok")
err=$(q -c "SELECT last_error FROM keysmith.rotations WHERE token = '$tok'")
[ "$st" = failed ] && [ "$err" = 'role "fragile" does not exist' ]
ks_check $? "a dropped target role fails the rotation clearly ($st: $err)"
[ "$(cred db/fragile)" = "$c_frag" ]; ks_check $? "current is untouched by the failed rotation"

# 5. two rotate_secret calls at once: one rotation, the other caller told its token
out1=$KS_WORK/rotation-c1.out; out2=$KS_WORK/rotation-c2.out
since=$(q -c "SELECT now()")
psql -X -q -t -A -d postgres -c "BEGIN" -c "SELECT keysmith.rotate_secret('db/app')" -c "SELECT pg_sleep(1)" -c "COMMIT" >"$out1" 2>&1 &
c1p=$!
sleep 0.3
psql -X -q -t -A -v VERBOSITY=verbose -d postgres -c "SELECT keysmith.rotate_secret('db/app')" >"$out2" 2>&1
wait $c1p
tok=$(grep -E '^[0-9a-f-]{36}$' "$out1" | head -1)
grep -q "ERROR:  KS014: a rotation of secret \"db/app\" is already in flight" "$out2" && grep -q "Its token is $tok" "$out2"
ks_check $? "the second concurrent caller waited, then was refused with KS014 naming the first token"
st=$(ks_wait_rotation "$tok"); remember "$(cred db/app)"
[ "$st" = finished ] && [ "$(q -c "SELECT count(*) FROM keysmith.rotation WHERE secret_name = 'db/app' AND started_at >= '$since'")" = 1 ]
ks_check $? "exactly one rotation ran ($st)"

# 6. cancel: the pending version goes, current stays
q -c "SELECT keysmith.create_secret('api/token', 'creds', 'none', '{}', 'MARK-none-1')" >/dev/null
q -c "SELECT keysmith.put_secret_value('api/token', 'MARK-none-2')" >/dev/null
[ "$(cred api/token)" = MARK-none-2 ] && [ "$(cred api/token previous)" = MARK-none-1 ]
ks_check $? "put_secret_value makes a new current and moves the old one to previous"
echo MARK-none-1 >>"$passwords"; echo MARK-none-2 >>"$passwords"

# 7. a standby: reads work, writes are refused, the worker idles
sb=$KS_WORK/extra-rotation-standby
mkdir -p "$sb"; chown "$PG_OSUSER": "$sb"; chmod 700 "$sb"
ks_as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PGPORT" -U postgres -D "$sb/data" -R -X stream -c fast >/dev/null 2>&1
sbport=$(ks_free_port)
{
    echo "port = $sbport"
    echo "unix_socket_directories = '$sb'"
    echo "log_statement = 'none'"
} >>"$sb/data/postgresql.conf"
ks_cluster_start "$sb"
ks_check $? "a streaming standby of the cluster starts"
sleep 1
[ "$(psql -X -q -t -A -h "$sb" -p "$sbport" -d postgres -c "SELECT keysmith.get_secret('api/token')")" = MARK-none-2 ]
ks_check $? "get_secret works on the standby"
out=$(psql -X -q -t -A -v VERBOSITY=verbose -h "$sb" -p "$sbport" -d postgres -c "SELECT keysmith.rotate_secret('db/app')" 2>&1)
ks_sqlstate 25006 'cannot rotate a secret on a standby' "$out"; ks_check $? "rotate_secret on the standby is refused with 25006"
out=$(psql -X -q -t -A -v VERBOSITY=verbose -h "$sb" -p "$sbport" -d postgres -c "SELECT keysmith.put_secret_value('api/token', 'x')" 2>&1)
ks_sqlstate 25006 'cannot store a secret value on a standby' "$out"; ks_check $? "put_secret_value on the standby is refused with 25006"
grep -q "keysmith rotation worker is idle while the server is in recovery" "$sb/server.log"
ks_check $? "the standby's rotation worker says it idles in recovery"
ks_cluster_stop "$sb"

# 8. the log: no password keysmith generated, stored or rotated is in it
sleep 0.5
n=$(sort -u "$passwords" | grep -c .)
found=$(sort -u "$passwords" | grep . | grep -c -F -f - "$log")
[ "$n" -gt 50 ] && [ "$found" = 0 ]
ks_check $? "none of the $n passwords and values is in the log_statement = 'all' server log ($found found)"
grep -qF "SELECT keysmith.put_secret_value('***', '***')" "$log"
ks_check $? "the put_secret_value statement is logged redacted"
grep -c "keysmith.get_secret" "$log" >/dev/null; ks_check $? "the log does record the statements (the search looked at a real log)"

ks_cluster_stop "$dir"
