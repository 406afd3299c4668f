#!/usr/bin/env bash
# test/integration/leases_crash.sh
#
# The reaper across crashes, on a cluster of its own.  Every server process
# is killed with SIGKILL (1) while a revocation is in progress, held up by a
# lock in a second database, and (2) just as 300 leases expire together;
# and (3) leases expire while the server is down.  After each restart every
# lease ends revoked, each with exactly one 'revoked' event, and no leased
# role or keysmith label is left behind.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 11

dir=$KS_WORK/extra-leases-crash
ks_cluster_init "$dir"
{
    echo "keysmith.reaper_naptime = '200ms'"
    echo "keysmith.reaper_lock_timeout = '10min'"
    echo "max_connections = 100"
} >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"

wait_revoked() {   # wait_revoked SECONDS: until no lease is unrevoked
    local left
    for _ in $(seq 1 $(( $1 * 5 ))); do
        left=$(q -c "SELECT count(*) FROM keysmith.lease WHERE state <> 'revoked'" 2>/dev/null)
        [ "$left" = 0 ] && return 0
        sleep 0.2
    done
    return 1
}
all_clean() {      # every lease revoked exactly once, nothing left behind
    q -c "SELECT (SELECT count(*) FROM keysmith.lease WHERE state <> 'revoked')
               + (SELECT count(*) FROM (SELECT lease_id FROM keysmith.lease_event WHERE event = 'revoked'
                                        GROUP BY lease_id HAVING count(*) <> 1) x)
               + (SELECT count(*) FROM keysmith.lease l WHERE NOT EXISTS
                    (SELECT 1 FROM keysmith.lease_event e WHERE e.lease_id = l.lease_id AND e.event = 'revoked'))
               + (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'ks_crash_%')
               + (SELECT count(*) FROM pg_shseclabel WHERE provider = 'keysmith')"
}

q <<'SQL'
CREATE EXTENSION keysmith;
CREATE ROLE crash_rw NOLOGIN;
CREATE ROLE crash_owner NOLOGIN;
CREATE DATABASE otherdb;
SELECT keysmith.create_role_template('crash', ARRAY['crash_rw', 'crash_owner'], '1 minute', '1 hour',
    '{"owner_role": "crash_owner"}');
SQL
ks_check $? "a cluster with a template and a second database"
psql -X -q -d otherdb -c "GRANT CREATE ON SCHEMA public TO crash_rw" >/dev/null

# (1) killed during a revocation
row=$(q -F ' ' -c "SELECT username, password, lease_id FROM keysmith.issue_role('crash', '3 seconds')")
read -r U P L <<<"$row"
PGPASSWORD=$P psql -X -q -h 127.0.0.1 -p "$PGPORT" -U "$U" -d otherdb -c "CREATE TABLE held (a int)" >/dev/null
psql -X -q -d otherdb -c "BEGIN; LOCK held IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600)" >/dev/null 2>&1 &
for _ in $(seq 1 50); do
    w=$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'keysmith lease revocation helper' AND wait_event_type = 'Lock'")
    [ "$w" = 1 ] && break
    sleep 0.2
done
s=$(q -c "SELECT state FROM keysmith.lease WHERE lease_id = '$L'")
[ "$w" = 1 ] && [ "$s" = revoking ]; ks_check $? "the revocation is under way: NOLOGIN committed, the helper waits for a lock in otherdb"
ks_cluster_kill9 "$dir"
ks_cluster_start "$dir"; ks_check $? "the server restarts after SIGKILL of every process"
wait_revoked 10; ks_check $? "the interrupted revocation resumes and completes"
o=$(psql -X -q -t -A -d otherdb -c "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'held'")
[ "$o" = crash_owner ]; ks_check $? "the role's table in otherdb went to crash_owner ($o)"

# (2) killed while 300 leases expire together.  One more lease with the
# same expiry owns a table in otherdb that another session holds locked, so
# its helper waits: then all are locked out and none is dropped yet, and the
# kill lands mid-revocation for certain.
# one transaction: one issue time, so one expiry, so one batch of the reaper
out=$(q -F ' ' -c "BEGIN" \
        -c "CREATE TEMP TABLE blocker AS SELECT username, password, lease_id FROM keysmith.issue_role('crash', '8 seconds')" \
        -c "SELECT count(*) FROM (SELECT keysmith.issue_role('crash', '8 seconds') FROM generate_series(1, 300)) x" \
        -c "SELECT username, password, lease_id FROM blocker" -c "COMMIT")
n=$(sed -n 1p <<<"$out")
read -r U P L <<<"$(sed -n 2p <<<"$out")"
PGPASSWORD=$P psql -X -q -h 127.0.0.1 -p "$PGPORT" -U "$U" -d otherdb -c "CREATE TABLE held2 (a int)" >/dev/null
psql -X -q -d otherdb -c "BEGIN; LOCK held2 IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600)" >/dev/null 2>&1 &
a=$(q -c "SELECT count(*) FROM keysmith.lease WHERE state = 'active'")
[ "$n" = 300 ] && [ "$a" = 301 ]; ks_check $? "300 leases and one held up in otherdb, issued with one expiry ($n + 1 issued, $a active)"
for _ in $(seq 1 150); do
    w=$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'keysmith lease revocation helper' AND wait_event_type = 'Lock'")
    [ "$w" = 1 ] && break
    sleep 0.2
done
busy=$(q -c "SELECT count(*) FROM keysmith.lease WHERE state = 'revoking'")
done_at_kill=$(q -c "SELECT count(*) FROM keysmith.lease WHERE state = 'revoked'")
ks_cluster_kill9 "$dir"
[ "$w" = 1 ] && [ "$busy" = 301 ] && [ "$done_at_kill" = 1 ]
ks_check $? "the SIGKILL landed mid-revocation: $busy leases locked out and $done_at_kill of 302 revoked when it did"
ks_cluster_start "$dir"
wait_revoked 30; ks_check $? "after the restart all 302 are revoked"
r=$(all_clean)
[ "$r" = 0 ]; ks_check $? "each lease revoked exactly once, no role or label left ($r problems)"

# (3) leases that expire while the server is down.  Their TTL leaves room
# for a slow machine (a sanitized build, two suites at once) to issue all
# 50 and stop the server before the reaper could revoke one.
n=$(q -c "SELECT count(*) FROM (SELECT keysmith.issue_role('crash', '10 seconds') FROM generate_series(1, 50)) x")
a=$(q -c "SELECT count(*) FROM keysmith.lease WHERE state = 'active'")
ks_cluster_stop "$dir"
sleep 11
t0=$(date +%s.%N)
ks_cluster_start "$dir"
wait_revoked 10; rc=$?
t1=$(date +%s.%N)
el=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
[ $rc = 0 ] && [ "$n" = 50 ] && [ "$a" = 50 ]
ks_check $? "$a active leases that expired during the downtime are revoked ${el}s after the start began"
r=$(all_clean)
[ "$r" = 0 ]; ks_check $? "every lease revoked exactly once overall ($r problems)"

ks_cluster_stop "$dir" immediate
