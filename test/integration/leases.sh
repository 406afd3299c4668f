#!/usr/bin/env bash
# test/integration/leases.sh
#
# Leased roles end to end on a cluster of its own, with real logins over
# TCP: SCRAM with the issued password, and trust (pg_hba.conf trusts the
# members of lease_trusted) to prove the authentication hook.  Covers
# privileges through membership only, session termination, objects in two
# databases, revoke_lease, and that no issued password reaches the server
# log with log_statement = 'all'.  Crashes are in leases_crash.sh.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 36

dir=$KS_WORK/extra-leases
ks_cluster_init "$dir"
{
    echo "keysmith.reaper_naptime = '500ms'"
    echo "log_statement = 'all'"
    echo "log_min_duration_statement = 0"
    echo "log_connections = on"
} >>"$dir/data/postgresql.conf"
# trust for members of lease_trusted, before the scram line
sed -i '/scram-sha-256/i host    all   +lease_trusted  127.0.0.1/32  trust' "$dir/data/pg_hba.conf"
ks_cluster_start "$dir"
. "$dir/env"
# tcp USER PASSWORD [DB] -- psql over TCP as USER with PASSWORD
tcp() { local u=$1 p=$2 db=$3; shift 3
        PGPASSWORD=$p psql -X -q -t -A -h 127.0.0.1 -p "$PGPORT" -U "$u" -d "$db" "$@"; }
PASSWORDS=()
# wait_revoked LEASE SECONDS: poll (every 0.25 s) until the lease is
# revoked; its last state is left in $s
wait_revoked() {
    local i
    for i in $(seq 1 $(( $2 * 4 ))); do
        s=$(q -c "SELECT state FROM keysmith.lease WHERE lease_id = '$1'")
        [ "$s" = revoked ] && return 0
        sleep 0.25
    done
    return 1
}

q <<'SQL'
CREATE EXTENSION keysmith;
CREATE ROLE app_rw NOLOGIN;
CREATE ROLE lease_trusted NOLOGIN;
CREATE ROLE app_owner NOLOGIN;
CREATE ROLE issuer LOGIN;
CREATE ROLE stranger LOGIN;
GRANT keysmith_user TO issuer, stranger;
CREATE TABLE items (id int);
CREATE TABLE secrets (id int);
GRANT SELECT, INSERT ON items TO app_rw, lease_trusted;
GRANT CREATE ON SCHEMA public TO app_rw, lease_trusted;
CREATE DATABASE otherdb;
SELECT keysmith.create_role_template('app', ARRAY['app_rw', 'app_owner'], '3 seconds', '1 hour',
    '{"owner_role": "app_owner", "issuers": ["issuer"], "connection_limit": 4}');
SELECT keysmith.create_role_template('trusted', ARRAY['lease_trusted'], '3 seconds', '1 hour',
    '{"issuers": ["issuer"]}');
SQL
ks_check $? "roles, tables, a second database and two templates"
psql -X -q -d otherdb -c "GRANT CREATE ON SCHEMA public TO app_rw" >/dev/null

# issue ROLE-TEMPLATE TTL -> sets U, P, L
issue() {
    local row
    row=$(q -F ' ' -c "SET ROLE issuer" -c "SELECT username, password, lease_id FROM keysmith.issue_role('$1', '$2')")
    read -r U P L <<<"$row"
    PASSWORDS+=("$P")
}

# --- login with the password, exactly the template's privileges
issue app '6 seconds'
[ ${#P} -ge 32 ] && [[ $U == ks_app_* ]]; ks_check $? "issue_role returns a ks_app_ username and a ${#P}-character password"
who=$(tcp "$U" "$P" postgres -c "SELECT current_user")
[ "$who" = "$U" ]; ks_check $? "SCRAM login over TCP with the issued password"
tcp "$U" "wrong-$P" postgres -c "SELECT 1" >/dev/null 2>&1; [ $? -ne 0 ]; ks_check $? "a wrong password is refused"
r=$(tcp "$U" "$P" postgres -c "SELECT count(*) FROM items")
[ "$r" = 0 ]; ks_check $? "the role reads what app_rw may read"
tcp "$U" "$P" postgres -c "SELECT count(*) FROM secrets" >/dev/null 2>&1; [ $? -ne 0 ]; ks_check $? "and nothing else"
m=$(q -c "SELECT string_agg(b.rolname, ',' ORDER BY b.rolname) FROM pg_auth_members a JOIN pg_roles b ON b.oid = a.roleid JOIN pg_roles u ON u.oid = a.member WHERE u.rolname = '$U'")
[ "$m" = app_owner,app_rw ]; ks_check $? "its only memberships are the template's member_of roles ($m)"
attrs=$(q -c "SELECT rolsuper::int::text || rolcreaterole::int || rolcreatedb::int || rolreplication::int || rolbypassrls::int || ',' || rolconnlimit FROM pg_roles WHERE rolname = '$U'")
[ "$attrs" = "00000,4" ]; ks_check $? "no attributes beyond LOGIN; connection limit 4 ($attrs)"

# objects here and in otherdb; an open session
tcp "$U" "$P" postgres -c "CREATE TABLE lease_tab (a int); CREATE SEQUENCE lease_seq; INSERT INTO items VALUES (1)" >/dev/null
tcp "$U" "$P" otherdb -c "CREATE TABLE far_tab (a int)" >/dev/null
ks_check $? "the role creates a table and a sequence here and a table in otherdb"
PGPASSWORD=$P psql -X -h 127.0.0.1 -p "$PGPORT" -U "$U" -d postgres -c "SELECT pg_sleep(60)" >"$dir/session.out" 2>&1 &
spid=$!
sleep 1
n=$(q -c "SELECT open_sessions FROM keysmith.leases WHERE lease_id = '$L'")
[ "$n" = 1 ]; ks_check $? "keysmith.leases shows the open session ($n)"

# --- expiry
exp=$(q -c "SELECT extract(epoch FROM expires_at) FROM keysmith.lease WHERE lease_id = '$L'")
wait_revoked "$L" 20
[ "$s" = revoked ]; ks_check $? "the lease is revoked after expiry"
lag=$(q -c "SELECT extract(epoch FROM revoked_at) - $exp FROM keysmith.lease WHERE lease_id = '$L'")
# no timed assertion (the machines are noisy): not before expiry; the lag is printed
awk -v l="$lag" 'BEGIN { exit !(l >= 0) }'; ks_check $? "revoked after expiry, not before (${lag}s after)"
wait $spid; src=$?
[ $src -ne 0 ] && grep -q "terminating connection" "$dir/session.out"; ks_check $? "the open session was terminated"
r=$(q -c "SELECT count(*) FROM pg_roles WHERE rolname = '$U'")
[ "$r" = 0 ]; ks_check $? "the role is gone"
tcp "$U" "$P" postgres -c "SELECT 1" >/dev/null 2>&1; [ $? -ne 0 ]; ks_check $? "the password no longer logs in"
o=$(q -c "SELECT string_agg(c.relname || ':' || pg_get_userbyid(c.relowner), ',' ORDER BY c.relname) FROM pg_class c WHERE c.relname IN ('lease_tab', 'lease_seq')")
[ "$o" = "lease_seq:app_owner,lease_tab:app_owner" ]; ks_check $? "its table and sequence now belong to app_owner ($o)"
o=$(psql -X -q -t -A -d otherdb -c "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'far_tab'")
[ "$o" = app_owner ]; ks_check $? "and so does its table in otherdb ($o)"
r=$(q -c "SELECT count(*) FROM items")
[ "$r" = 1 ]; ks_check $? "rows it wrote stay"
ev=$(q -c "SELECT string_agg(event, ',' ORDER BY event_id) FROM keysmith.lease_event WHERE lease_id = '$L'")
[ "$ev" = "issued,nologin,revoked" ]; ks_check $? "lease events: $ev"

# --- the hook: trust login refused after expiry, before the reaper acts
q -c "ALTER SYSTEM SET keysmith.reaper_naptime = '1h'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
issue trusted '3 seconds'
who=$(psql -X -q -t -A -h 127.0.0.1 -p "$PGPORT" -U "$U" -d postgres -c "SELECT current_user" 2>&1)
[ "$who" = "$U" ]; ks_check $? "pg_hba.conf trusts the lease_trusted role: login without a password"
sleep 3.5
err=$(psql -X -q -t -A -h 127.0.0.1 -p "$PGPORT" -U "$U" -d postgres -c "SELECT current_user" 2>&1)
[[ $err == *"lease of role \"$U\" has expired"* ]]; ks_check $? "after expiry the trusted login is refused by the hook: ${err##*FATAL:  }"
s=$(q -c "SELECT state FROM keysmith.leases WHERE lease_id = '$L'")
[ "$s" = expired ]; ks_check $? "the reaper has not run yet: the lease shows as $s"
q -c "ALTER SYSTEM RESET keysmith.reaper_naptime" -c "SELECT pg_reload_conf()" >/dev/null
wait_revoked "$L" 10
[ "$s" = revoked ]; ks_check $? "after the reload the reaper revokes it"

# --- revoke_lease: now, by the requester; never by another role
issue trusted '1 hour'
PGPASSWORD=x psql -X -h 127.0.0.1 -p "$PGPORT" -U "$U" -d postgres -c "SELECT pg_sleep(60)" >"$dir/session2.out" 2>&1 &
spid=$!
sleep 1
err=$(q -c "SET ROLE stranger" -c "SELECT keysmith.revoke_lease('$L')" 2>&1)
[[ $err == *"permission denied to revoke lease"* ]]; ks_check $? "another role may not revoke the lease"
q -c "SET ROLE issuer" -c "SELECT keysmith.revoke_lease('$L')" >/dev/null
ks_check $? "the requester revokes it"
r=$(q -c "SELECT state || ',' || revoke_reason || ',' || (SELECT count(*) FROM pg_roles WHERE rolname = '$U') FROM keysmith.lease WHERE lease_id = '$L'")
[ "$r" = "revoked,revoked,0" ]; ks_check $? "at once: revoked, role dropped ($r)"
wait $spid; src=$?
[ $src -ne 0 ] && grep -q "terminating connection" "$dir/session2.out"; ks_check $? "its session was terminated"
q -c "SET ROLE issuer" -c "SELECT keysmith.revoke_lease('$L')" >/dev/null
ks_check $? "revoking again is a no-op"

# --- a template without owner_role: the role's objects are dropped
q -c "SELECT keysmith.create_role_template('scratch', ARRAY['app_rw'], '3 seconds', '1 hour', '{\"issuers\": [\"issuer\"]}')" >/dev/null
issue scratch '1 hour'
tcp "$U" "$P" postgres -c "CREATE TABLE scratch_tab (a int)" >/dev/null
tcp "$U" "$P" otherdb -c "CREATE TABLE scratch_far (a int)" >/dev/null
r=$(q -c "SELECT to_regclass('scratch_tab') IS NOT NULL")
r2=$(psql -X -q -t -A -d otherdb -c "SELECT to_regclass('scratch_far') IS NOT NULL")
[ "$r$r2" = tt ]; ks_check $? "setup: the scratch lease owns a table here and one in otherdb"
q -c "SELECT keysmith.revoke_lease('$L')" >/dev/null
wait_revoked "$L" 5
ev=$(q -c "SELECT string_agg(event || ':' || coalesce(detail, ''), ',' ORDER BY event_id) FROM keysmith.lease_event WHERE lease_id = '$L'")
[[ $ev == *"nologin:revoke_lease; objects in other databases left to the reaper,revoked:reaper" ]]
ks_check $? "revoke_lease leaves objects in another database to the reaper"
[ "$s" = revoked ]; ks_check $? "the reaper, woken at commit, finishes it"
r=$(q -c "SELECT to_regclass('scratch_tab') IS NULL")
r2=$(psql -X -q -t -A -d otherdb -c "SELECT to_regclass('scratch_far') IS NULL")
[ "$r$r2" = tt ]; ks_check $? "without owner_role its objects are dropped in both databases"

# --- failures are retried with backoff and visible
issue app '2 seconds'
tcp "$U" "$P" otherdb -c "CREATE TABLE blocked_tab (a int)" >/dev/null
psql -X -q -d otherdb -c "BEGIN; LOCK blocked_tab IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT" >/dev/null 2>&1 &
lpid=$!
q -c "ALTER SYSTEM SET keysmith.reaper_lock_timeout = '500ms'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 5
r=$(q -c "SELECT state || ',' || (attempts > 0) || ',' || (last_error LIKE '%lock%') FROM keysmith.leases WHERE lease_id = '$L'")
[ "$r" = "revoking,true,true" ]; ks_check $? "a blocked revocation is retried, its error visible in keysmith.leases ($r)"
wait $lpid
q -c "ALTER SYSTEM RESET keysmith.reaper_lock_timeout" -c "SELECT pg_reload_conf()" >/dev/null
wait_revoked "$L" 20
[ "$s" = revoked ]; ks_check $? "once the lock is gone the retry succeeds"

# --- no password in the log
leaked=0
for p in "${PASSWORDS[@]}"; do
    grep -qF "$p" "$dir/server.log" && leaked=$((leaked + 1))
done
n=$(grep -c "issue_role" "$dir/server.log")
[ $leaked = 0 ] && [ "$n" -gt 0 ]; ks_check $? "none of ${#PASSWORDS[@]} issued passwords is in the server log ($n logged issue_role statements)"
grep -q "SCRAM-SHA-256" "$dir/server.log"; [ $? -ne 0 ]; ks_check $? "nor any SCRAM verifier"

ks_cluster_stop "$dir"
