#!/usr/bin/env bash
# test/integration/schedules.sh
#
# Schedules on a real server, run by the rotation worker:
#   * a secret scheduled by a non-superuser rotates once for its period,
#     requested by that role, and its current credential logs in;
#   * a schedule whose role lost rotate on the secret is refused, nothing
#     rotates;
#   * a key schedule rotates the DEK and re-encrypts a registered column
#     as the role that registered it: every row on the new version;
#   * attacks: a registrant that lost UPDATE, and a context expression
#     that tries ALTER ROLE ... SUPERUSER, both fail as that role (the
#     worker's superuser rights are never lent), and the rows stay as
#     they were; granted again, the re-encryption finishes;
#   * SIGKILL of every server process mid-rotation and mid-re-encryption:
#     each period is served once (one rotation, one DEK version), the
#     work finishes after the restart;
#   * a server down over three periods serves only the latest, once, and
#     then keeps its period;
#   * destroy_previous_after shreds the previous version of a role pair,
#     and the previous role's password with it.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 16

dir=$KS_WORK/extra-schedules
ks_cluster_init "$dir"
{
    echo "keysmith.rotation_naptime = '200ms'"
    echo "synchronous_commit = on"
} >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
# wait_for SQL [TRIES]: until SQL returns t (every 0.1 s, 30 s by default)
wait_for() {
    for _ in $(seq 1 "${2:-300}"); do
        [ "$(q -c "$1" 2>/dev/null)" = t ] && return 0
        sleep 0.1
    done
    return 1
}
# wait_column TABLE: until the scheduled re-encryption of TABLE.c is done
wait_column() {
    wait_for "SELECT NOT reencrypt_pending AND last_done_at IS NOT NULL FROM keysmith.encrypted_columns
               WHERE tbl = '$1'::regclass" "${2:-300}"
}
# on_version TABLE KEY VERSION: are all rows of TABLE.c under KEY's VERSION?
on_version() {
    [ "$(q -c "SELECT string_agg(key_version || ':' || rows, ',') FROM keysmith.key_version_usage('$1', 'c')")" = "$3:$4" ]
}

q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('sk');
CREATE ROLE sch_admin NOLOGIN IN ROLE keysmith_user;
CREATE ROLE app_role LOGIN;
GRANT app_role TO sch_admin WITH ADMIN OPTION;
CREATE ROLE key_admin NOLOGIN IN ROLE keysmith_admin;
CREATE ROLE col_owner NOLOGIN IN ROLE keysmith_user;
CREATE ROLE col_owner2 NOLOGIN IN ROLE keysmith_user;
CREATE ROLE col_owner3 NOLOGIN IN ROLE keysmith_user;
SQL
ks_check $? "setup"

# --- a secret scheduled by a non-superuser
q <<'SQL' >/dev/null
SET ROLE sch_admin;
SELECT keysmith.create_secret('sched/app', 'sk', 'postgres_role', '{"role": "app_role"}');
SELECT keysmith.schedule_rotation('sched/app', '1 day', NULL, now() - interval '1 day 10 minutes');
SQL
wait_for "SELECT last_state = 'finished' FROM keysmith.rotation_schedules WHERE target = 'sched/app'"
runs=$(q -c "SELECT count(*) || ' ' || string_agg(result, ',') FROM keysmith.schedule_run WHERE target = 'sched/app'")
by=$(q -c "SELECT string_agg(requested_by || ' ' || state, ',') FROM keysmith.rotations WHERE secret = 'sched/app'")
cur=$(q -c "SELECT keysmith.get_secret('sched/app')")
[ "$runs" = "1 started" ] && [ "$by" = "sch_admin finished" ] && login app_role "$(field "$cur" password)"
ks_check $? "a due secret schedule rotates once, requested by the role that set it, and current logs in ($runs; $by)"
due=$(q -c "SELECT next_due > now() + interval '23 hours' AND last_result = 'started' FROM keysmith.rotation_schedules WHERE target = 'sched/app'")
[ "$due" = t ]
ks_check $? "rotation_schedules: the next run is a period later, the last result is shown"

# --- the scheduling role loses rotate: the run is refused
q <<'SQL' >/dev/null
CREATE ROLE rev_role LOGIN;
GRANT rev_role TO sch_admin WITH ADMIN OPTION;
SELECT keysmith.create_secret('sched/rev', 'sk', 'postgres_role', '{"role": "rev_role"}');
SELECT keysmith.grant_secret('sched/rev', 'sch_admin', 'rotate');
SET ROLE sch_admin;
SELECT keysmith.schedule_rotation('sched/rev', '1 day', NULL, now() + interval '2 seconds');
RESET ROLE;
SELECT keysmith.revoke_secret('sched/rev', 'sch_admin', 'rotate');
SQL
wait_for "SELECT last_result IS NOT NULL FROM keysmith.rotation_schedules WHERE target = 'sched/rev'" 100
res=$(q -c "SELECT last_result FROM keysmith.rotation_schedules WHERE target = 'sched/rev'")
n=$(q -c "SELECT count(*) FROM keysmith.rotation WHERE secret_name = 'sched/rev'")
[ "$res" = "refused: role sch_admin no longer holds rotate on this secret" ] && [ "$n" = 0 ]
ks_check $? "a schedule acts with its role's privileges at every run: refused once rotate is revoked ($res; $n rotations)"

# --- a key schedule re-encrypts a registered column as its registrant
q <<'SQL' >/dev/null
SELECT keysmith.create_key('ck');
SELECT keysmith.grant_key('ck', 'key_admin', 'admin');
CREATE TABLE public.t1 (id int PRIMARY KEY, c bytea);
ALTER TABLE public.t1 OWNER TO col_owner;
INSERT INTO public.t1 SELECT i, keysmith.encrypt_value('ck', 'v' || i, i::text) FROM generate_series(1, 20000) i;
SET ROLE col_owner;
SELECT keysmith.register_column('public.t1', 'c', 'ck', 'id::text');
SET ROLE key_admin;
SELECT keysmith.schedule_key_rotation('ck', '30 days', true, NULL, now() - interval '30 days 1 minute');
SQL
wait_column t1
v=$(q -c "SELECT current_version FROM keysmith.keys WHERE name = 'ck'")
ok=$(q -c "SELECT count(*) FROM public.t1 WHERE keysmith.decrypt_value(c, id::text) = 'v' || id")
[ "$v" = 2 ] && on_version t1 ck 2 20000 && [ "$ok" = 20000 ]
ks_check $? "a key schedule: rotate_dek once, the registered column re-encrypted to version 2, every value intact ($v; $ok)"

# --- attack: the registrant lost UPDATE; the worker must not lend its rights
q <<'SQL' >/dev/null
SELECT keysmith.create_key('ck2');
CREATE TABLE public.t2 (id int PRIMARY KEY, c bytea);
INSERT INTO public.t2 SELECT i, keysmith.encrypt_value('ck2', 'v' || i, NULL) FROM generate_series(1, 2000) i;
GRANT SELECT, UPDATE ON public.t2 TO col_owner2;
SET ROLE col_owner2;
SELECT keysmith.register_column('public.t2', 'c', 'ck2');
RESET ROLE;
REVOKE UPDATE ON public.t2 FROM col_owner2;
SELECT keysmith.schedule_key_rotation('ck2', '30 days', true, NULL, now() - interval '30 days 1 minute');
SQL
wait_for "SELECT last_error IS NOT NULL FROM keysmith.encrypted_columns WHERE tbl = 'public.t2'::regclass"
err=$(q -c "SELECT last_error FROM keysmith.encrypted_columns WHERE tbl = 'public.t2'::regclass")
[[ $err == *"permission denied for table t2"* ]] && on_version t2 ck2 1 2000
ks_check $? "a registrant without UPDATE: re-encryption refused as that role, rows untouched ($err)"
q -c "GRANT UPDATE ON public.t2 TO col_owner2" >/dev/null
wait_column t2
on_version t2 ck2 2 2000
ks_check $? "granted again, the retry finishes the re-encryption"

# --- attack: a context expression that tries to make its author superuser
q <<'SQL' >/dev/null
SELECT keysmith.create_key('ck3');
CREATE TABLE public.t3 (id int PRIMARY KEY, c bytea);
ALTER TABLE public.t3 OWNER TO col_owner3;
GRANT CREATE ON SCHEMA public TO col_owner3;
INSERT INTO public.t3 SELECT i, keysmith.encrypt_value('ck3', 'v' || i, i::text) FROM generate_series(1, 100) i;
SET ROLE col_owner3;
CREATE FUNCTION public.esc(i int) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE 'ALTER ROLE col_owner3 SUPERUSER';
    RETURN i::text;
END $$;
SELECT keysmith.register_column('public.t3', 'c', 'ck3', 'public.esc(id)');
RESET ROLE;
SELECT keysmith.schedule_key_rotation('ck3', '30 days', true, NULL, now() - interval '30 days 1 minute');
SQL
wait_for "SELECT last_error IS NOT NULL FROM keysmith.encrypted_columns WHERE tbl = 'public.t3'::regclass"
err=$(q -c "SELECT last_error FROM keysmith.encrypted_columns WHERE tbl = 'public.t3'::regclass")
su=$(q -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'col_owner3'")
[ "$su" = f ] && [[ $err == *"must be superuser to alter superuser roles"* ]] && on_version t3 ck3 1 100
ks_check $? "a context expression doing ALTER ROLE ... SUPERUSER runs as its author and fails ($su; $err)"

# --- SIGKILL mid-rotation of a scheduled rotation
q <<'SQL' >/dev/null
CREATE ROLE crash_role LOGIN;
SELECT keysmith.create_secret('sched/crash', 'sk', 'postgres_role', '{"role": "crash_role"}');
ALTER SYSTEM SET keysmith.rotation_pause_at = 'set:after';
SELECT pg_reload_conf();
SQL
sleep 0.5
q -c "SELECT keysmith.schedule_rotation('sched/crash', '1 day', NULL, now() - interval '1 day 1 minute')" >/dev/null
wait_for "SELECT count(*) = 1 FROM pg_stat_activity WHERE query = 'keysmith rotation paused at set:after'" 100
paused=$?
ks_cluster_kill9 "$dir"
sed -i '/rotation_pause_at/d' "$dir/data/postgresql.auto.conf"
ks_cluster_start "$dir"
wait_for "SELECT last_state = 'finished' FROM keysmith.rotation_schedules WHERE target = 'sched/crash'"
n=$(q -c "SELECT (SELECT count(*) FROM keysmith.rotation WHERE secret_name = 'sched/crash') || ' '
              || (SELECT count(*) FROM keysmith.schedule_run WHERE target = 'sched/crash')")
cur=$(q -c "SELECT keysmith.get_secret('sched/crash')")
[ $paused = 0 ] && [ "$n" = "1 1" ] && login crash_role "$(field "$cur" password)"
ks_check $? "SIGKILL mid-rotation: the period is served once (rotations, runs: $n), the rotation finishes, current logs in"

# --- SIGKILL mid-re-encryption
q <<'SQL' >/dev/null
SELECT keysmith.create_key('ck4');
CREATE TABLE public.t4 (id int PRIMARY KEY, c bytea);
INSERT INTO public.t4 SELECT i, keysmith.encrypt_value('ck4', 'v' || i, NULL) FROM generate_series(1, 200000) i;
ANALYZE public.t4;
SELECT keysmith.register_column('public.t4', 'c', 'ck4');
SELECT keysmith.schedule_key_rotation('ck4', '30 days', true, NULL, now() - interval '30 days 1 minute');
SQL
wait_for "SELECT rows_done > 0 AND state = 'running' FROM keysmith.reencrypt_progress WHERE table_name = 'public.t4'::regclass" 600
mid=$?
ks_cluster_kill9 "$dir"
ks_cluster_start "$dir"
wait_column t4 600
v=$(q -c "SELECT current_version || ' ' || (SELECT count(*) FROM keysmith.schedule_run WHERE target = 'ck4') FROM keysmith.keys WHERE name = 'ck4'")
ev=$(q -c "SELECT string_agg(detail, ';') FROM keysmith.key_event WHERE key_name = 'ck4' AND event = 'rollover'")
# the crash lost version 2's count: the first encryption after it rolls to 3
# (extension/keys/counters.c), and the resumed job moves every row there
[ $mid = 0 ] && [ "$v" = "3 1" ] && on_version t4 ck4 3 200000 &&
    [ "$ev" = "this server does not know how often version 2 was used" ]
ks_check_out $? "$ev" "SIGKILL mid-re-encryption: one scheduled DEK rotation, one run, one rollover for the count the crash lost ($v); after the restart every row is on version 3"
ok=$(q -c "SELECT count(*) FROM public.t4 WHERE keysmith.decrypt_value(c) = 'v' || id")
[ "$ok" = 200000 ]
ks_check $? "every value decrypts to what it was ($ok)"

# --- missed periods: down over three, the latest served once
q <<'SQL' >/dev/null
CREATE ROLE miss_role LOGIN;
SELECT keysmith.create_secret('sched/miss', 'sk', 'postgres_role', '{"role": "miss_role"}');
SQL
start=$(q -c "SELECT extract(epoch FROM now() + interval '4 seconds')")
q -c "SELECT keysmith.schedule_rotation('sched/miss', '6 seconds', NULL, to_timestamp($start))" >/dev/null
ks_cluster_stop "$dir"
# down until half a second after period 2 is due (periods 0, 1, 2 missed)
python3 -c "import time; time.sleep(max(0, $start + 12.5 - time.time()))"
ks_cluster_start "$dir"
python3 -c "import time; time.sleep(max(0, $start + 16.5 - time.time()))"
runs=$(q -c "SELECT string_agg(period || ':' || result, ',' ORDER BY period) FROM keysmith.schedule_run WHERE target = 'sched/miss'")
[ "$runs" = "2:started (2 earlier period(s) missed while nothing ran)" ]
ks_check $? "down over three periods: only the latest is served, once ($runs)"
python3 -c "import time; time.sleep(max(0, $start + 19.5 - time.time()))"
runs=$(q -c "SELECT string_agg(period::text, ',' ORDER BY period) FROM keysmith.schedule_run WHERE target = 'sched/miss'")
late=$(q -c "SELECT count(*) FROM keysmith.schedule_run WHERE target = 'sched/miss'
               AND ran_at >= period_start + interval '6 seconds'")
[ "$runs" = 2,3 ] && [ "$late" = 0 ]
ks_check $? "then the schedule keeps its period, and no run served a period already over ($runs; $late late)"
q -c "SELECT keysmith.unschedule_rotation('sched/miss')" >/dev/null

# --- shredding the previous version of a role pair
q <<'SQL' >/dev/null
CREATE ROLE pair_owner NOLOGIN;
CREATE ROLE pair_a LOGIN IN ROLE pair_owner;
CREATE ROLE pair_b LOGIN IN ROLE pair_owner;
SELECT keysmith.create_secret('sched/pair', 'sk', 'postgres_role_pair',
                              '{"roles": ["pair_a", "pair_b"], "owner_role": "pair_owner"}');
SQL
first=$(q -c "SELECT keysmith.get_secret('sched/pair')")
q -c "SELECT keysmith.schedule_rotation('sched/pair', '1 day', NULL, now() - interval '1 day 1 minute',
                                        '{\"destroy_previous_after\": \"2 seconds\"}')" >/dev/null
wait_for "SELECT count(*) = 1 FROM keysmith.rotation_event WHERE secret_name = 'sched/pair' AND event = 'previous_destroyed'"
cur=$(q -c "SELECT keysmith.get_secret('sched/pair')")
prev=$(q -c "SELECT coalesce(keysmith.get_secret('sched/pair', 'previous'), 'none')")
pw=$(q -c "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = '$(field "$first" username)'")
[ "$prev" = none ] && [ "$pw" = t ] && ! login "$(field "$first" username)" "$(field "$first" password)" &&
    login "$(field "$cur" username)" "$(field "$cur" password)" && [ "$(field "$cur" username)" != "$(field "$first" username)" ]
ks_check $? "destroy_previous_after: the previous version is shredded and its role's password removed; current logs in"
ev=$(q -c "SELECT detail FROM keysmith.rotation_event WHERE secret_name = 'sched/pair' AND event = 'previous_destroyed'")
[[ $ev == *"no longer has a password"* ]]
ks_check $? "the audit trail says what was shredded ($ev)"

# --- nothing leaked into the log
! grep -q "$(field "$cur" password)" "$dir/server.log"
ks_check $? "no password in the server log"
ks_cluster_stop "$dir"
