#!/usr/bin/env bash
# test/integration/rotation_remote.sh
#
# The postgres_remote strategy against a second local cluster that asks
# for SCRAM over TCP on loopback.  The remote's admin login is itself a
# keysmith secret.  A secret is created (its first password generated and
# set on the remote), rotated (the new password logs in there, the old one
# is refused), refused with a password in its conninfo, refused for a
# remote superuser when its owner is none, and refused to an owner that may
# not read the admin secret.  Then the remote is stopped mid-rotation: the
# rotation retries with backoff, current stays as it was, and once the
# remote is back the rotation finishes.  Last, this server is killed with
# SIGKILL after set changed the remote's password and before set's state
# committed: after the restart the rotation finishes once.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 16

rdir=$KS_WORK/extra-remote
ks_cluster_init "$rdir" no
echo "log_statement = 'all'" >>"$rdir/data/postgresql.conf"
ks_cluster_password "$rdir" "$KS_WORK/remote.pgpass" root
ks_cluster_start "$rdir"
rport=$(sed -n "s/^export PGPORT=//p" "$rdir/env")
rpw=$(cut -d: -f5 "$KS_WORK/remote.pgpass")
PGHOST=$rdir PGPORT=$rport psql -X -q -U postgres -d postgres -c "CREATE ROLE rapp LOGIN" -c "CREATE ROLE rsuper LOGIN SUPERUSER" >/dev/null
ks_check $? "a remote cluster that asks every TCP login for its SCRAM password, with roles rapp and rsuper"

dir=$KS_WORK/extra-rotation-remote
ks_cluster_init "$dir"
{
    echo "keysmith.rotation_naptime = '200ms'"
    echo "keysmith.rotation_max_attempts = 20"
    echo "log_statement = 'all'"
    echo "synchronous_commit = on"
} >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
rlogin() { PGPASSWORD=$2 psql -X -q -t -A -h 127.0.0.1 -p "$rport" -U "$1" -d postgres -c 'SELECT 1' >/dev/null 2>&1; }
pw() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])["password"])' "$1"; }
conninfo="host=127.0.0.1 port=$rport dbname=postgres connect_timeout=3"

q -v admin="{\"username\": \"postgres\", \"password\": \"$rpw\"}" <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('remote');
SELECT keysmith.create_secret('remote/admin', 'remote', 'none', '{}', :'admin');
CREATE ROLE lowly LOGIN IN ROLE keysmith_user;
SQL
q -c "SELECT keysmith.create_secret('remote/app', 'remote', 'postgres_remote',
        jsonb_build_object('conninfo', '$conninfo', 'role', 'rapp', 'admin_secret', 'remote/admin'))" >/dev/null
c1=$(q -c "SELECT keysmith.get_secret('remote/app')")
rlogin rapp "$(pw "$c1")"
ks_check $? "create_secret generated a password and set it on the remote: it logs in there"

out=$(qv -c "SELECT keysmith.create_secret('remote/bad', 'remote', 'postgres_remote',
        jsonb_build_object('conninfo', '$conninfo password=x', 'role', 'rapp', 'admin_secret', 'remote/admin'))")
ks_sqlstate 22023 'option conninfo must not hold a password' "$out"
ks_check $? "a conninfo with a password is refused (22023)"
out=$(qv -c "SET ROLE lowly" -c "SELECT keysmith.create_secret('remote/x', 'remote', 'postgres_remote',
        jsonb_build_object('conninfo', '$conninfo', 'role', 'rsuper', 'admin_secret', 'remote/admin'))")
ks_sqlstate 42501 'permission denied for admin secret "remote/admin"' "$out"
ks_check $? "an owner that may not read the admin secret is refused (42501)"
q -c "SELECT keysmith.grant_secret('remote/admin', 'lowly', 'read')" >/dev/null
out=$(qv -c "SET ROLE lowly" -c "SELECT keysmith.create_secret('remote/x', 'remote', 'postgres_remote',
        jsonb_build_object('conninfo', '$conninfo', 'role', 'rsuper', 'admin_secret', 'remote/admin'))")
ks_sqlstate 42501 'role "rsuper" is a superuser on the remote server' "$out"
ks_check $? "attack: a non-superuser's secret may not rotate a remote superuser (42501)"

# attack: a non-superuser points a secret at this very server's socket,
# where pg_hba.conf trusts local logins, with an "admin" secret of its own
q -c "CREATE ROLE victim LOGIN" >/dev/null
out=$(qv -c "SET ROLE lowly" -c "SELECT keysmith.create_secret('lowly/admin', 'remote', 'none', '{}', '{\"username\": \"postgres\", \"password\": \"guess\"}')" \
         -c "SELECT keysmith.create_secret('lowly/victim', 'remote', 'postgres_remote',
               jsonb_build_object('conninfo', 'host=$dir port=$PGPORT dbname=postgres', 'role', 'victim', 'admin_secret', 'lowly/admin'))")
ks_sqlstate 28000 'the admin login to the remote server did not use its password' "$out"
ks_check $? "attack: an admin login let in by a trust line (this server's own socket) is refused (28000)"
[ "$(q -c "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'victim'")" = t ]
ks_check $? "and the victim role's password was not set"
out=$(qv -c "SET ROLE lowly" -c "SELECT keysmith.create_secret('lowly/x', 'remote', 'postgres_remote',
        jsonb_build_object('conninfo', '$conninfo sslkey=/etc/ssl/private/ssl-cert-snakeoil.key', 'role', 'rapp', 'admin_secret', 'remote/admin'))")
ks_sqlstate 42501 "only a superuser's secret may name sslkey in its conninfo" "$out"
ks_check $? "attack: a non-superuser's conninfo may not make the server read its own key files (42501)"

tok=$(q -c "SELECT keysmith.rotate_secret('remote/app')")
st=$(ks_wait_rotation "$tok")
c2=$(q -c "SELECT keysmith.get_secret('remote/app')")
[ "$st" = finished ] && rlogin rapp "$(pw "$c2")" && ! rlogin rapp "$(pw "$c1")"
ks_check $? "a rotation sets the new password on the remote; it logs in there and the old one does not ($st)"
ev=$(q -c "SELECT string_agg(event, ',' ORDER BY event_id) FROM keysmith.rotation_event WHERE token = '$tok'")
[ "$ev" = requested,created,set,tested,finished ]; ks_check $? "each step once ($ev)"

# the remote goes down before the rotation reaches set
ks_cluster_stop "$rdir"
tok=$(q -c "SELECT keysmith.rotate_secret('remote/app')")
for _ in $(seq 1 100); do
    [ "$(q -c "SELECT attempts >= 2 FROM keysmith.rotation WHERE token = '$tok'")" = t ] && break
    sleep 0.1
done
r=$(q -c "SELECT state || ':' || attempts || ':' || (last_error LIKE 'could not reach the remote server as its admin:%') FROM keysmith.rotations WHERE token = '$tok'")
[[ $r == set:*:true ]] && [ "$(q -c "SELECT keysmith.get_secret('remote/app')")" = "$c2" ]
ks_check $? "with the remote down the set step fails and retries, and current stays ($r)"
ks_cluster_start "$rdir"
st=$(ks_wait_rotation "$tok")
for _ in $(seq 1 300); do
    st=$(q -c "SELECT state FROM keysmith.rotations WHERE token = '$tok'")
    [ "$st" = finished ] && break
    sleep 0.1
done
c3=$(q -c "SELECT keysmith.get_secret('remote/app')")
[ "$st" = finished ] && [ "$c3" != "$c2" ] && rlogin rapp "$(pw "$c3")"
ks_check $? "once the remote is back the rotation finishes and the new password logs in ($st)"

# this server is killed (SIGKILL, every process) after set changed the
# remote's password and before set's state was committed
q -c "ALTER SYSTEM SET keysmith.rotation_pause_at = 'set:after'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
tok=$(q -c "SELECT keysmith.rotate_secret('remote/app')")
paused=1
for _ in $(seq 1 100); do
    [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE query = 'keysmith rotation paused at set:after'")" = 1 ] && { paused=0; break; }
    sleep 0.1
done
ks_cluster_kill9 "$dir"
sed -i '/rotation_pause_at/d' "$dir/data/postgresql.auto.conf"
ks_cluster_start "$dir"
st=$(ks_wait_rotation "$tok")
c4=$(q -c "SELECT keysmith.get_secret('remote/app')")
ev=$(q -c "SELECT string_agg(event, ',' ORDER BY event_id) FROM keysmith.rotation_event WHERE token = '$tok'")
[ $paused = 0 ] && [ "$st" = finished ] && [ "$ev" = requested,created,set,tested,finished ]
ks_check $? "SIGKILL after set reached the remote: after the restart the rotation finishes once ($st; $ev)"
rlogin rapp "$(pw "$c4")" && ! rlogin rapp "$(pw "$c3")" && [ "$c4" != "$c3" ]
ks_check $? "and the remote takes the new password, not the old"

n=$(sort -u <(pw "$c1") <(pw "$c2") <(pw "$c3") <(pw "$c4") <(echo "$rpw") | grep -c -F -f - "$rdir/server.log" "$dir/server.log" | awk -F: '{s += $2} END {print s}')
[ "$n" = 0 ]; ks_check $? "no password is in either server's log, both logging every statement ($n)"
n=$(grep -c "execute <unnamed>: ALTER ROLE rapp PASSWORD 'SCRAM-SHA-256\$4096:" "$rdir/server.log")
[ "$n" -ge 3 ]; ks_check $? "the remote received SCRAM verifiers computed here, never a password ($n ALTER ROLE statements)"

ks_cluster_stop "$dir"
ks_cluster_stop "$rdir"
