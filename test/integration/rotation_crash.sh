#!/usr/bin/env bash
# test/integration/rotation_crash.sh
#
# Rotations across crashes.  For each step (create, set, test, finish) the
# rotation worker is stopped right after the step's effect and before its
# state is committed (keysmith.rotation_pause_at), and then every server
# process is killed with SIGKILL.  After the restart the rotation must end
# in exactly one finished rotation: each step's event once, a current
# credential that logs in, the old one refused, nothing pending.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 13

dir=$KS_WORK/extra-rotation-crash
ks_cluster_init "$dir"
# the test clusters commit asynchronously; here a commit must survive the
# kill that follows it (the workers always commit synchronously)
{
    echo "keysmith.rotation_naptime = '200ms'"
    echo "synchronous_commit = on"
} >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"

q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('crash');
SQL
ks_check $? "setup"

for step in create set test finish; do
    role=crash_$step
    q -c "CREATE ROLE $role LOGIN" \
      -c "SELECT keysmith.create_secret('crash/$step', 'crash', 'postgres_role', '{\"role\": \"$role\"}')" >/dev/null
    old=$(q -c "SELECT keysmith.get_secret('crash/$step')")
    tok=$(ks_rotate_paused "crash/$step" "$step")
    paused=$?
    ks_cluster_kill9 "$dir"
    sed -i '/rotation_pause_at/d' "$dir/data/postgresql.auto.conf"
    ks_cluster_start "$dir"
    st=$(ks_wait_rotation "$tok")
    ev=$(q -c "SELECT string_agg(event, ',' ORDER BY event_id) FROM keysmith.rotation_event WHERE token = '$tok'")
    n=$(q -c "SELECT count(*) FROM keysmith.rotation WHERE secret_name = 'crash/$step'")
    [ $paused = 0 ] && [ "$st" = finished ] && [ "$n" = 1 ] && [ "$ev" = requested,created,set,tested,finished ]
    ks_check $? "killed after $step's effect: one rotation, finished, each step once ($st; $ev)"
    cur=$(q -c "SELECT keysmith.get_secret('crash/$step')")
    login "$role" "$(field "$cur" password)" && ! login "$role" "$(field "$old" password)" && [ "$cur" != "$old" ]
    ks_check $? "killed after $step: current logs in, the old password does not"
    s=$(q -c "SELECT string_agg(coalesce(stage, '-'), ',' ORDER BY stage) FROM keysmith.secret_version WHERE secret_name = 'crash/$step'")
    [ "$s" = current,previous ] && [ "$(q -c "SELECT keysmith.get_secret('crash/$step', 'previous')")" = "$old" ]
    ks_check $? "killed after $step: versions current and previous, nothing pending ($s)"
done

ks_cluster_stop "$dir"
