#!/usr/bin/env bash
# test/integration/role_targets.sh
#
# Finding 6 of issue 20: whose password a secret's owner may have keysmith
# set, per role attribute (the rule: docs/security.md, "Role targets").
# `delegate` is no superuser and holds ADMIN OPTION on a role of each kind.
# REPLICATION is performed first: PostgreSQL's own ALTER ROLE refuses
# delegate, membership gives no replication login, and the password of a
# REPLICATION role (from a superuser's secret) takes a pg_basebackup of the
# whole cluster.  delegate's create_secret for it is refused (42501), and
# so are put_secret_value, the create step of a rotation when the role
# gains REPLICATION after the request, and the set step when it gains it
# after create.  BYPASSRLS, CREATEROLE and CREATEDB: delegate already
# reaches each through SET ROLE (performed), so its secret for such a role
# is allowed and its password logs in: keysmith gives nothing new.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 10
cleanup() { [ -n "${dir:-}" ] && ks_cluster_stop "$dir"; }

dir=$KS_WORK/extra-role-targets
ks_cluster_init "$dir"
{
    echo "keysmith.rotation_naptime = '200ms'"
    echo "keysmith.rotation_lock_timeout = '300ms'"
    echo "keysmith.rotation_max_attempts = 5"
} >>"$dir/data/postgresql.conf"
echo "host replication all 127.0.0.1/32 scram-sha-256" >>"$dir/data/pg_hba.conf"
ks_cluster_start "$dir"
. "$dir/env"
pw() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])["password"])' "$1"; }
as_delegate() { qv -c "SET ROLE delegate" "$@"; }
q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('k');
CREATE ROLE delegate LOGIN PASSWORD 'delegate-pw' IN ROLE keysmith_user;
CREATE ROLE repl LOGIN REPLICATION;
CREATE ROLE plain LOGIN;
CREATE ROLE plain2 LOGIN;
CREATE ROLE rls LOGIN BYPASSRLS;
CREATE ROLE crole LOGIN CREATEROLE;
CREATE ROLE cdb LOGIN CREATEDB;
GRANT repl, plain, plain2, rls, crole, cdb TO delegate WITH ADMIN OPTION;
CREATE TABLE guarded (v int);
INSERT INTO guarded VALUES (1), (2);
ALTER TABLE guarded ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON guarded TO PUBLIC;
SQL

# REPLICATION, the attack first
out=$(as_delegate -c "ALTER ROLE repl PASSWORD 'mine'")
o2=$(as_delegate -c "GRANT repl TO delegate" -c "SET ROLE repl" -c "SELECT 1")
o3=$(PGPASSWORD=delegate-pw psql -X -h 127.0.0.1 -U delegate "dbname=postgres replication=database" -c "IDENTIFY_SYSTEM" 2>&1)
[[ $out == *"ERROR:  42501: must be superuser to alter replication roles"* ]] && [[ $o2 != *ERROR* ]] &&
    [[ $o3 == *"must be superuser or replication role"* ]]
ks_check_out $? "$out $o2 $o3" "PostgreSQL's own rule: delegate may not ALTER ROLE repl PASSWORD, and SET ROLE repl gives it no replication login"
q -c "SELECT keysmith.create_secret('su/repl', 'k', 'postgres_role', '{\"role\": \"repl\"}')" >/dev/null
c=$(q -c "SELECT keysmith.get_secret('su/repl')")
PGPASSWORD=$(pw "$c") "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PGPORT" -U repl -D "$KS_WORK/basebackup" -X none -c fast >/dev/null 2>&1 &&
    [ -f "$KS_WORK/basebackup/global/pg_control" ]
ks_check $? "what the password is worth: a superuser's secret for repl (allowed) gives a pg_basebackup of the whole cluster"
rm -rf "$KS_WORK/basebackup"
q -c "SELECT keysmith.drop_secret('su/repl')" >/dev/null
v0=$(q -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'repl'")
out=$(as_delegate -c "SELECT keysmith.create_secret('d/repl', 'k', 'postgres_role', '{\"role\": \"repl\"}')")
ks_sqlstate 42501 'role "repl" has the REPLICATION attribute' "$out" &&
    [ "$(q -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'repl'")" = "$v0" ]
ks_check_out $? "$out" "attack: delegate's create_secret for repl is refused (42501) and repl's password is unchanged"

# the attribute arrives later: put_secret_value, the create step, the set step
as_delegate -c "SELECT keysmith.create_secret('d/plain', 'k', 'postgres_role', '{\"role\": \"plain\"}')" \
    -c "SELECT keysmith.create_secret('d/plain2', 'k', 'postgres_role', '{\"role\": \"plain2\"}')" >/dev/null
q -c "ALTER ROLE plain REPLICATION" >/dev/null
out=$(as_delegate -c "SELECT keysmith.put_secret_value('d/plain', '{\"username\": \"plain\", \"password\": \"chosen-by-delegate-1\"}')")
ks_sqlstate 42501 'role "plain" has the REPLICATION attribute' "$out"
ks_check_out $? "$out" "put_secret_value for a role that became REPLICATION is refused (42501)"
q -c "ALTER ROLE plain NOREPLICATION" >/dev/null
tok=$(psql -X -q -t -A -d postgres -c "BEGIN" -c "SET LOCAL ROLE delegate" -c "SELECT keysmith.rotate_secret('d/plain')" \
      -c "RESET ROLE" -c "ALTER ROLE plain REPLICATION" -c "COMMIT" | head -1)
for _ in $(seq 1 100); do
    r=$(q -c "SELECT state || ':' || coalesce(last_error, '') FROM keysmith.rotations WHERE token = '$tok'")
    [[ $r == *REPLICATION* ]] && break
    sleep 0.1
done
[[ $r == 'create:role "plain" has the REPLICATION attribute' ]]
ks_check_out $? "$r" "the create step refuses a target that gained REPLICATION after rotate_secret ($r)"
q -c "SELECT keysmith.cancel_rotation('d/plain')" >/dev/null
# set: a session holds plain2's pg_authid row, so the set step times out
# and retries; meanwhile the role gains REPLICATION
psql -X -q -d postgres -c "BEGIN" -c "ALTER ROLE plain2 CONNECTION LIMIT 50" -c "SELECT pg_sleep(1.5)" \
    -c "ALTER ROLE plain2 REPLICATION" -c "COMMIT" >/dev/null 2>&1 &
blocker=$!
sleep 0.3
tok=$(q -c "SET ROLE delegate" -c "SELECT keysmith.rotate_secret('d/plain2')")
wait $blocker
for _ in $(seq 1 150); do
    r=$(q -c "SELECT state || ':' || coalesce(last_error, '') FROM keysmith.rotations WHERE token = '$tok'")
    [[ $r == *REPLICATION* ]] && break
    sleep 0.1
done
ev=$(q -c "SELECT string_agg(event, ',' ORDER BY event_id) FROM keysmith.rotation_event WHERE token = '$tok'")
[[ $r == 'set:role "plain2" has the REPLICATION attribute' ]] && [[ $ev == requested,created,step_failed,step_failed* ]] &&
    [ "$(q -c "SELECT rolpassword IS NULL OR rolpassword NOT LIKE 'SCRAM%' FROM pg_authid WHERE rolname = 'plain2'")" = f ]
ks_check_out $? "$r $ev" "the set step refuses it too after create ran ($ev)"
q -c "SELECT keysmith.cancel_rotation('d/plain2')" >/dev/null

# the attributes membership confers: delegate reaches each by SET ROLE,
# so keysmith may hand it the password
as_delegate -c "GRANT rls, crole, cdb TO delegate" >/dev/null
o1=$(as_delegate -c "SELECT count(*) FROM guarded")
o2=$(as_delegate -c "SET ROLE rls" -c "SELECT count(*) FROM guarded")
[ "$o1" = 0 ] && [ "$o2" = 2 ] &&
    out=$(as_delegate -c "SELECT keysmith.create_secret('d/rls', 'k', 'postgres_role', '{\"role\": \"rls\"}')") &&
    [ "$(login rls "$(pw "$(q -c "SELECT keysmith.get_secret('d/rls')")")" "SELECT count(*) FROM guarded")" = 2 ]
ks_check_out $? "$o1 $o2 $out" "BYPASSRLS: delegate bypasses row security by SET ROLE rls already ($o1 rows, then $o2), so its secret for rls is allowed and logs in"
o1=$(as_delegate -c "SET ROLE crole" -c "CREATE ROLE made_by_delegate" -c "DROP ROLE made_by_delegate")
[[ $o1 != *ERROR* ]] &&
    out=$(as_delegate -c "SELECT keysmith.create_secret('d/crole', 'k', 'postgres_role', '{\"role\": \"crole\"}')") &&
    [ "$(login crole "$(pw "$(q -c "SELECT keysmith.get_secret('d/crole')")")" "SELECT 1")" = 1 ]
ks_check_out $? "$o1 $out" "CREATEROLE: delegate creates a role by SET ROLE crole already, so its secret for crole is allowed and logs in"
o1=$(as_delegate -c "SET ROLE cdb" -c "CREATE DATABASE made_by_delegate" -c "DROP DATABASE made_by_delegate")
[[ $o1 != *ERROR* ]] &&
    out=$(as_delegate -c "SELECT keysmith.create_secret('d/cdb', 'k', 'postgres_role', '{\"role\": \"cdb\"}')") &&
    [ "$(login cdb "$(pw "$(q -c "SELECT keysmith.get_secret('d/cdb')")")" "SELECT 1")" = 1 ]
ks_check_out $? "$o1 $out" "CREATEDB: delegate creates a database by SET ROLE cdb already, so its secret for cdb is allowed and logs in"
q -c "CREATE ROLE su LOGIN SUPERUSER" -c "GRANT su TO delegate WITH ADMIN OPTION" >/dev/null
out=$(as_delegate -c "SELECT keysmith.create_secret('d/su', 'k', 'postgres_role', '{\"role\": \"su\"}')")
ks_sqlstate 42501 'role "su" is a superuser' "$out"
ks_check_out $? "$out" "SUPERUSER: delegate's secret for a superuser it holds ADMIN OPTION on is refused (42501)"
