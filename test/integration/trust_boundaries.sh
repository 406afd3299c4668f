#!/usr/bin/env bash
# test/integration/trust_boundaries.sh
#
# The attacks of docs/security.md that need a cluster of their own or more
# than one session, each performed first, then shown refused or harmless:
#   1  a database owner plants look-alike keysmith.lease tables where the
#      reaper works, naming a superuser and another role, and look-alike
#      secret and rotation tables that would have the rotation worker set
#      the superuser's password;
#   2  CREATE EXTENSION into a schema another role owns, or where another
#      role may create objects;
#   6  revoke_lease whose cleanup fails: the lockout must stand;
#   7  two concurrent issue_role calls against max_leases 1;
#   10 a lease whose objects sit in a database that refuses connections.
set -uo pipefail
shopt -s extglob
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 31

dir=$KS_WORK/extra-trust
ks_cluster_init "$dir"
{
    echo "keysmith.database_name = 'victimdb'"
    echo "keysmith.reaper_naptime = '200ms'"
} >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
KS_VERBOSITY=verbose    # of q (test/lib.sh), called as q -d DB ...
tcp() { local u=$1 p=$2 db=$3; shift 3
        PGPASSWORD=$p psql -X -q -t -A -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -h 127.0.0.1 -p "$PGPORT" -U "$u" -d "$db" "$@"; }
# wait_for DB SQL SECONDS: poll until SQL returns t
wait_for() {
    local i
    for i in $(seq 1 $(( $3 * 5 ))); do
        [ "$(q -d "$1" -c "$2" 2>/dev/null)" = t ] && return 0
        sleep 0.2
    done
    return 1
}

# --- finding 1: look-alike tables in the reaper's database --------------------
q -d postgres <<'SQL'
CREATE ROLE dbowner LOGIN PASSWORD 'dbowner-pw';
CREATE ROLE victim LOGIN PASSWORD 'victim-pw';
CREATE DATABASE victimdb OWNER dbowner;
CREATE DATABASE otherdb;
SQL
ks_check $? "setup: a non-superuser owns victimdb, the reaper's database, where keysmith is not installed"
# the reaper retries its connection every 5 s until victimdb exists
wait_for postgres "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'keysmith lease reaper' AND datname = 'victimdb')" 20
q -d otherdb -c "GRANT CREATE ON SCHEMA public TO victim" >/dev/null
tcp victim victim-pw otherdb -c "CREATE TABLE victim_tab (a int)" >/dev/null
ks_check $? "setup: role victim owns a table in otherdb"

tcp dbowner dbowner-pw victimdb <<'SQL'
CREATE SCHEMA keysmith;
CREATE TABLE keysmith.role_template (name text);
CREATE TABLE keysmith.lease (lease_id uuid, role_oid oid, owner_role oid, state text, expires_at timestamptz,
    next_attempt_at timestamptz DEFAULT '-infinity', attempts int DEFAULT 0, last_error text,
    last_attempt_at timestamptz, revoke_reason text, revoked_at timestamptz);
CREATE TABLE keysmith.lease_event (lease_id uuid, event text, acting_role name, detail text);
INSERT INTO keysmith.lease (lease_id, role_oid, owner_role, state, expires_at)
SELECT gen_random_uuid(), oid, (SELECT oid FROM pg_roles WHERE rolname = 'dbowner'), 'active', now() - interval '1 hour'
  FROM pg_roles WHERE rolname IN ('victim', 'postgres');
CREATE TABLE keysmith.secret (name text, key_name text, strategy text, options jsonb, owner_role oid);
CREATE TABLE keysmith.secret_version (version_id uuid, secret_name text, ciphertext bytea, stage text, username name);
CREATE TABLE keysmith.secret_acl (secret_name text, grantee oid, privilege text);
CREATE TABLE keysmith.rotation_event (secret_name text, token uuid, event text, acting_role name, detail text);
CREATE TABLE keysmith.rotation (token uuid, secret_name text, state text, target_role name, pending_version uuid,
    pending_verifier text, attempts int DEFAULT 0, last_error text, next_attempt_at timestamptz DEFAULT '-infinity',
    started_at timestamptz DEFAULT now(), finished_at timestamptz);
INSERT INTO keysmith.secret VALUES ('pg', 'k', 'postgres_role', '{"role": "postgres"}', 10);
INSERT INTO keysmith.rotation (token, secret_name, state, target_role, pending_version, pending_verifier)
VALUES (gen_random_uuid(), 'pg', 'set', 'postgres', gen_random_uuid(),
        'SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$c3RvcmVka2V5c3RvcmVka2V5c3RvcmVka2V5c3Q=:c2VydmVya2V5c2VydmVya2V5c2VydmVya2V5c2U=');
SQL
ks_check $? "attack: dbowner plants keysmith.lease rows naming postgres and victim, expired an hour ago, and a rotation of postgres's password at step set"
pw_before=$(q -d postgres -c "SELECT md5(coalesce(rolpassword, '')) FROM pg_authid WHERE rolname = 'postgres'")
sleep 3    # fifteen reaper rounds at 200 ms
r=$(q -d postgres -c "SELECT string_agg(rolname || ':' || rolcanlogin, ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('victim', 'postgres')")
[ "$r" = "postgres:true,victim:true" ]; ks_check $? "both roles still exist and log in ($r)"
r=$(q -d otherdb -c "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'victim_tab'")
[ "$r" = victim ]; ks_check $? "victim's table in otherdb still belongs to victim ($r)"
n=$(grep -c 'keysmith lease reaper is idle: extension keysmith is not installed in database "victimdb"' "$dir/server.log")
a=$(q -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'keysmith lease reaper' AND datname = 'victimdb'")
[ "$n" = 1 ] && [ "$a" = 1 ]; ks_check $? "the reaper, running there all along ($a), says once that it idles ($n times in the log)"
n=$(q -d victimdb -c "SELECT count(*) FROM keysmith.lease_event")
[ "$n" = 0 ]; ks_check $? "and wrote nothing into the look-alike tables"
pw_after=$(q -d postgres -c "SELECT md5(coalesce(rolpassword, '')) FROM pg_authid WHERE rolname = 'postgres'")
r=$(q -d victimdb -c "SELECT state || ',' || attempts FROM keysmith.rotation")
[ "$pw_before" = "$pw_after" ] && [ "$r" = "set,0" ]
ks_check $? "the rotation worker left postgres's password alone and did not touch the planted rotation ($r)"
n=$(grep -c 'keysmith rotation worker is idle: extension keysmith is not installed in database "victimdb"' "$dir/server.log")
[ "$n" = 1 ]; ks_check $? "the rotation worker says once that it idles ($n times in the log)"

# --- finding 2: installing into a schema someone else owns ---------------------
out=$(q -d victimdb -c "CREATE EXTENSION keysmith" 2>&1)
ks_sqlstate 42501 'keysmith refuses to install into schema "keysmith", which is owned by role "dbowner"' "$out"
ks_check $? "CREATE EXTENSION into dbowner's schema keysmith is refused: ${out%%$'\n'*}"
n=$(q -d victimdb -c "SELECT count(*) FROM pg_extension WHERE extname = 'keysmith'")
[ "$n" = 0 ]; ks_check $? "nothing was installed"
q -d victimdb -c "DROP SCHEMA keysmith CASCADE" -c "CREATE SCHEMA keysmith" -c "GRANT CREATE ON SCHEMA keysmith TO PUBLIC" >/dev/null
out=$(q -d victimdb -c "CREATE EXTENSION keysmith" 2>&1)
ks_sqlstate 42501 'keysmith refuses to install into schema "keysmith", where PUBLIC may create objects' "$out"
ks_check $? "a superuser's schema where PUBLIC may create objects is refused too"
q -d victimdb -c "DROP SCHEMA keysmith" -c "CREATE EXTENSION keysmith" >/dev/null
ks_check $? "into a schema of its own, keysmith installs"
out=$(tcp dbowner dbowner-pw victimdb -c "ALTER SCHEMA keysmith RENAME TO keysmith_old" 2>&1)
ks_sqlstate 42501 'must be owner of schema keysmith' "$out"; ks_check $? "the database owner cannot rename keysmith's schema"
out=$(tcp dbowner dbowner-pw victimdb -c "CREATE TABLE keysmith.lease2 (a int)" 2>&1)
ks_sqlstate 42501 'permission denied for schema keysmith' "$out"; ks_check $? "nor create anything in it"
# a superuser's mistake: CREATE on keysmith's schema granted away
q -d victimdb -c "GRANT CREATE ON SCHEMA keysmith TO dbowner" >/dev/null
out=$(q -d victimdb -c "SELECT keysmith.create_key('k')" 2>&1)
ks_sqlstate KS013 "keysmith refuses to use its catalog in this database" "$out"
ks_check $? "with CREATE on its schema granted to dbowner, keysmith refuses its catalog (KS013)"
wait_for postgres "SELECT pg_read_file('$dir/server.log') LIKE '%refuses to act on keysmith''s catalog in database \"victimdb\"%role dbowner may create objects%'" 5
ks_check $? "and the reaper idles, saying why"
q -d victimdb -c "REVOKE CREATE ON SCHEMA keysmith FROM dbowner" >/dev/null
wait_for postgres "SELECT pg_read_file('$dir/server.log') LIKE '%found keysmith installed in database \"victimdb\" and is revoking leases%'" 5
ks_check $? "once revoked, the reaper goes back to work"

# --- finding 6: revoke_lease whose cleanup fails --------------------------------
q -d victimdb <<'SQL' >/dev/null
CREATE ROLE app_rw NOLOGIN;
CREATE ROLE issuer LOGIN IN ROLE keysmith_user;
CREATE ROLE viewer NOLOGIN;
GRANT CREATE ON SCHEMA public TO app_rw, viewer;
SELECT keysmith.create_role_template('plain', ARRAY['app_rw'], '1 hour', '2 hours', '{"issuers": ["issuer"]}');
SELECT keysmith.create_role_template('one', ARRAY['app_rw'], '1 hour', '2 hours', '{"issuers": ["issuer"], "max_leases": 1}');
SQL
read -r U P L <<<"$(q -d victimdb -F ' ' -c "SET ROLE issuer" -c "SELECT username, password, lease_id FROM keysmith.issue_role('plain')")"
tcp "$U" "$P" victimdb -c "CREATE FUNCTION public.lease_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'" >/dev/null
q -d victimdb -c "SET ROLE viewer" -c "CREATE VIEW public.viewer_v AS SELECT public.lease_fn()" >/dev/null
ks_check $? "setup: the lease made a function, and viewer's view depends on it"
out=$(q -d victimdb -c "SET ROLE issuer" -c "SELECT keysmith.revoke_lease('$L')" 2>&1)
rc=$?
[ $rc = 0 ] && [[ $out == *"is locked out, but its role could not be dropped yet"* ]]
ks_check $? "revoke_lease succeeds with a warning when the cleanup cannot finish"
r=$(q -d victimdb -c "SELECT l.state || ',' || (l.last_error LIKE '%depend%') || ',' || r.rolcanlogin
                     FROM keysmith.leases l JOIN pg_roles r ON r.rolname = l.username WHERE l.lease_id = '$L'")
[ "$r" = "revoking,true,false" ]; ks_check $? "the lockout committed: revoking, NOLOGIN, the error in keysmith.leases ($r)"
out=$(tcp "$U" "$P" victimdb -c "SELECT 1" 2>&1)
[[ $out == *"FATAL:  "@("role \"$U\" is not permitted to log in"|"password authentication failed for user \"$U\""|"lease of role \"$U\" has expired")* ]]
ks_check $? "the role can no longer log in: ${out##*FATAL:  }"
q -d victimdb -c "DROP VIEW public.viewer_v" >/dev/null
wait_for victimdb "SELECT state = 'revoked' FROM keysmith.lease WHERE lease_id = '$L'" 20
ks_check $? "once the view is gone, the reaper finishes the revocation"

# a login that slipped in between revoke_lease's termination of the
# sessions and its commit outlives the DROP ROLE; that outcome, made by
# hand here, is ended by the reaper's next round
read -r U P L <<<"$(q -d victimdb -F ' ' -c "SET ROLE issuer" -c "SELECT username, password, lease_id FROM keysmith.issue_role('plain')")"
PGPASSWORD=$P psql -X -h 127.0.0.1 -p "$PGPORT" -U "$U" -d victimdb -c "SELECT pg_sleep(30)" >"$dir/orphan.out" 2>&1 &
orphan=$!
wait_for postgres "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE usename = '$U' AND query = 'SELECT pg_sleep(30)')" 10
alive=$?
q -d victimdb -c "BEGIN" -c "UPDATE keysmith.lease SET state = 'revoked', revoked_at = now(), revoke_reason = 'revoked' WHERE lease_id = '$L'" \
    -c "DROP ROLE \"$U\"" -c "COMMIT" >/dev/null
dropped=$?
[ $alive = 0 ] && [ $dropped = 0 ]; ks_check $? "setup: the leased role's session is running, and its role is dropped under it"
wait $orphan
grep -q "terminating connection due to administrator command" "$dir/orphan.out" &&
    grep -q "terminated 1 session(s) of leased roles that were already dropped" "$dir/server.log"
ks_check $? "the reaper terminates that session at its next round"

# --- finding 7: max_leases under concurrency ------------------------------------
q -d victimdb -c "SET ROLE issuer" -c "BEGIN" -c "SELECT lease_id FROM keysmith.issue_role('one')" \
    -c "SELECT pg_sleep(4)" -c "COMMIT" >"$dir/first.out" 2>&1 &
first=$!
wait_for postgres "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(4)')" 10
q -d victimdb -c "SET ROLE issuer" -c "SELECT lease_id FROM keysmith.issue_role('one')" >"$dir/second.out" 2>&1 &
second=$!
wait_for postgres "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%issue_role(''one'')%' AND wait_event_type = 'Lock')" 10
ks_check $? "the second issue_role waits for the first one's lock"
wait $first; wait $second
grep -q "ERROR:  53400: template \"one\" already has its maximum of 1 leases" "$dir/second.out"
ks_check $? "and then is refused with 53400: $(grep ERROR "$dir/second.out")"
n=$(q -d victimdb -c "SELECT count(*) FROM keysmith.lease WHERE template = 'one' AND state <> 'revoked'")
[ "$n" = 1 ]; ks_check $? "one lease exists, not two ($n)"

# --- finding 10: a database that refuses connections -----------------------------
q -d postgres -c "CREATE DATABASE closeddb" >/dev/null
q -d closeddb -c "GRANT CREATE ON SCHEMA public TO app_rw" >/dev/null
read -r U P L <<<"$(q -d victimdb -F ' ' -c "SET ROLE issuer" -c "SELECT username, password, lease_id FROM keysmith.issue_role('plain')")"
tcp "$U" "$P" closeddb -c "CREATE TABLE closed_tab (a int)" >/dev/null
q -d postgres -c "ALTER DATABASE closeddb ALLOW_CONNECTIONS false" >/dev/null
ks_check $? "setup: the lease owns a table in closeddb, which then refuses connections"
q -d victimdb -c "SELECT keysmith.revoke_lease('$L')" >/dev/null
wait_for victimdb "SELECT last_error LIKE '%database \"closeddb\" does not allow connections (datallowconn is false)%' FROM keysmith.leases WHERE lease_id = '$L'" 10
ks_check $? "keysmith.leases says why the lease waits: $(q -d victimdb -c "SELECT last_error FROM keysmith.leases WHERE lease_id = '$L'")"
q -d postgres -c "ALTER DATABASE closeddb ALLOW_CONNECTIONS true" >/dev/null
wait_for victimdb "SELECT state = 'revoked' FROM keysmith.lease WHERE lease_id = '$L'" 30
ks_check $? "once it allows connections again, the revocation finishes"

ks_cluster_stop "$dir"
