#!/usr/bin/env bash
# test/integration/schedule_rights.sh
#
# Every kind of schedule run checks its creator's privileges as they are
# at that run (issue 20, finding 12), on a real server with the rotation
# worker.  Each attack is performed first while the privilege is held:
#   * shredding (destroy_previous_after): sam's schedule erases a previous
#     version while sam holds admin on the secret; once sam lost admin
#     (rotate alone is not enough), the next previous version survives
#     every round, and rotation_schedules.shred_error says why; with admin
#     back, the shredding resumes and the error clears;
#   * a key schedule: kim's runs call rotate_dek while kim holds admin on
#     the key; once it is revoked, each run is recorded as refused and the
#     key keeps its version.
# (A secret's rotation run that lost rotate, and a registrant that lost
# UPDATE, are in test/integration/schedules.sh.)
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 8

dir=$KS_WORK/extra-schedule-rights
ks_cluster_init "$dir"
echo "keysmith.rotation_naptime = '200ms'" >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
# wait_for SQL: until SQL returns t (every 0.1 s, 30 s at most)
wait_for() {
    for _ in $(seq 1 300); do
        [ "$(q -c "$1" 2>/dev/null)" = t ] && return 0
        sleep 0.1
    done
    return 1
}
shredded() { q -c "SELECT count(*) FROM keysmith.rotation_event WHERE secret_name = 'sh/app' AND event = 'previous_destroyed'"; }
rotate() { ks_wait_rotation "$(q -c "SELECT keysmith.rotate_secret('sh/app')")"; }
# rounds N: until N more runs of the ticker, a key schedule due every
# second: a round commits its runs and its shredding together, so N >= 2
# means a whole round began after the call
ticks() { q -c "SELECT count(*) FROM keysmith.schedule_run WHERE target = 'tick'"; }
rounds() { local t; t=$(ticks); wait_for "SELECT count(*) >= $t + $1 FROM keysmith.schedule_run WHERE target = 'tick'"; }

q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('creds');
SELECT keysmith.create_key('kk');
SELECT keysmith.create_key('tick');
SELECT keysmith.schedule_key_rotation('tick', '1 second', false);
CREATE ROLE t1 LOGIN;
CREATE ROLE sam NOLOGIN IN ROLE keysmith_user;
GRANT t1 TO sam WITH ADMIN OPTION;
CREATE ROLE kim NOLOGIN IN ROLE keysmith_user;
GRANT EXECUTE ON FUNCTION keysmith.rotate_dek(text) TO kim;
SELECT keysmith.grant_key('kk', 'kim', 'admin');
SET ROLE sam;
SELECT keysmith.create_secret('sh/app', 'creds', 'postgres_role', '{"role": "t1"}');
-- no rotation run is due for a day; shredding is due as soon as a version is previous
SELECT keysmith.schedule_rotation('sh/app', '1 day', NULL, now() + interval '1 day',
                                  '{"destroy_previous_after": "0 seconds"}');
SQL
ks_check $? "setup: sam's secret, scheduled with destroy_previous_after by sam"

# --- shredding while sam holds admin: the attack works
st=$(rotate)
wait_for "SELECT count(*) = 1 FROM keysmith.rotation_event WHERE secret_name = 'sh/app' AND event = 'previous_destroyed'"
prev=$(q -c "SELECT coalesce(keysmith.get_secret('sh/app', 'previous'), 'none')")
by=$(q -c "SELECT acting_role FROM keysmith.rotation_event WHERE secret_name = 'sh/app' AND event = 'previous_destroyed'")
[ "$st" = finished ] && [ "$prev" = none ] && [ "$by" = sam ]
ks_check $? "while sam holds admin, the schedule shreds the previous version, recorded as sam ($st, $prev, $by)"

# --- sam loses admin (keeps rotate): the next previous version must survive
q -c "SELECT keysmith.revoke_secret('sh/app', 'sam', 'admin')" >/dev/null
before=$(q -c "SELECT keysmith.get_secret('sh/app')")
st=$(rotate)
# the worker records the refusal; under 0.9 it shredded instead
wait_for "SELECT coalesce((SELECT shred_error IS NOT NULL FROM keysmith.rotation_schedules WHERE target = 'sh/app'), false)
              OR $(shredded) < (SELECT count(*) FROM keysmith.rotation_event
                                 WHERE secret_name = 'sh/app' AND event = 'previous_destroyed')"
# and it stays refused: two more worker rounds (the ticker's runs) later
rounds 2
prev=$(q -c "SELECT keysmith.get_secret('sh/app', 'previous')")
[ "$st" = finished ] && [ "$prev" = "$before" ] && [ "$(shredded)" = 1 ]
ks_check $? "sam lost admin: the previous version survives ($st, $(shredded) shredding(s) in all)"
err=$(q -c "SELECT shred_error FROM keysmith.rotation_schedules WHERE target = 'sh/app'")
[ "$err" = "refused: role sam no longer holds admin on this secret; the previous version is kept" ]
ks_check_out $? "$err" "rotation_schedules.shred_error says why"

# --- admin back: the shredding resumes, the error clears
q -c "SELECT keysmith.grant_secret('sh/app', 'sam', 'admin')" >/dev/null
wait_for "SELECT count(*) = 2 FROM keysmith.rotation_event WHERE secret_name = 'sh/app' AND event = 'previous_destroyed'"
prev=$(q -c "SELECT coalesce(keysmith.get_secret('sh/app', 'previous'), 'none')")
err=$(q -c "SELECT coalesce(shred_error, 'none') FROM keysmith.rotation_schedules WHERE target = 'sh/app'")
[ "$prev" = none ] && [ "$err" = none ]
ks_check $? "admin granted again: checked at the next round, the previous version is shredded, the error is cleared ($prev, $err)"

# --- a key schedule: kim's runs rotate the DEK while kim holds admin
q -c "SET ROLE kim" -c "SELECT keysmith.schedule_key_rotation('kk', '1 second', false)" >/dev/null
wait_for "SELECT current_version >= 2 FROM keysmith.keys WHERE name = 'kk'"
res=$(q -c "SELECT last_result FROM keysmith.rotation_schedules WHERE target = 'kk'")
[[ $res == "rotated the DEK to version "* ]]
ks_check_out $? "$res" "while kim holds admin on the key, its schedule rotates the DEK every second"

q -c "SELECT keysmith.revoke_key('kk', 'kim', 'admin')" >/dev/null
wait_for "SELECT last_result LIKE 'refused:%' FROM keysmith.rotation_schedules WHERE target = 'kk'"
v=$(q -c "SELECT current_version FROM keysmith.keys WHERE name = 'kk'")
runs=$(q -c "SELECT count(*) FROM keysmith.schedule_run WHERE target = 'kk'")
wait_for "SELECT count(*) > $runs FROM keysmith.schedule_run WHERE target = 'kk'"
res=$(q -c "SELECT last_result FROM keysmith.rotation_schedules WHERE target = 'kk'")
[ "$res" = "refused: role kim no longer holds admin on this key" ] &&
    [ "$(q -c "SELECT current_version FROM keysmith.keys WHERE name = 'kk'")" = "$v" ]
ks_check_out $? "$res" "kim lost admin: every later run is refused and the key keeps version $v"
n=$(q -c "SELECT count(*) FROM keysmith.schedule_run WHERE target = 'kk' AND result LIKE 'refused:%'")
[ "$n" -ge 2 ]
ks_check $? "keysmith.schedule_run keeps each refused run ($n)"

ks_cluster_stop "$dir"
