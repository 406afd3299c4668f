#!/usr/bin/env bash
# test/integration/dump_cluster.sh
#
# A whole keysmith installation moved by pg_dumpall --globals-only plus
# pg_dump into a fresh cluster (keysmith preloaded, the same master key
# file), as a DBA moves a server: keys and values, leased roles with their
# security labels and passwords, secrets (versions and stages, a role
# credential), and schedules.  In the fresh cluster:
#  - every value decrypts, and the first encryption rolls to a new DEK
#    version (the fresh cluster is another server history);
#  - a restored lease logs in with its password; one that expires there is
#    revoked by that cluster's reaper and its role dropped, while the
#    unrelated role that now has its old OID is left alone (the attack is
#    set up first: keysmith.lease keeps OIDs, which pg_dump copies as
#    numbers);
#  - secrets read back with their stages; the restored role credential
#    logs in, and a rotation there finishes with a new one that logs in;
#  - schedules come back with the same next due time.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 13

A=$KS_WORK/extra-dump-from
B=$KS_WORK/extra-dump-to
rm -rf "$A" "$B"
ks_cluster_init "$A"
# A's reaper rounds once at start and then sleeps: the short lease below
# must still be unrevoked when it is dumped
echo "keysmith.reaper_naptime = '1h'" >>"$A/data/postgresql.conf"
ks_cluster_start "$A"
. "$A/env"
qa() { q -d postgres "$@"; }

qa >/dev/null <<'SQL'
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('dk');
CREATE TABLE public.dv AS
  SELECT i AS id, keysmith.encrypt_value('dk', 'v' || i, i::text) AS c FROM generate_series(1, 50) i;
CREATE ROLE d_rw NOLOGIN;
GRANT SELECT ON public.dv TO d_rw;
SELECT keysmith.create_role_template('dt', ARRAY['d_rw'], '1 hour', '2 hours');
CREATE ROLE d_app LOGIN;
SELECT keysmith.create_secret('d/static', 'dk', 'none', '{}', 'static-v1');
SELECT keysmith.put_secret_value('d/static', 'static-v2');
SELECT keysmith.create_secret('d/app', 'dk', 'postgres_role', '{"role": "d_app"}');
SELECT keysmith.schedule_rotation('d/app', '1 day', NULL, now() + interval '1 day');
SELECT keysmith.schedule_key_rotation('dk', '30 days', false, NULL, now() + interval '30 days');
SQL
ks_check $? "the source cluster: a key, 50 values, a lease template, two secrets, two schedules"

read -r l1_user l1_pw <<<"$(qa -c "SELECT username || ' ' || password FROM keysmith.issue_role('dt')")"
read -r l2_user l2_id <<<"$(qa -c "SELECT username || ' ' || lease_id FROM keysmith.issue_role('dt', '3 seconds')")"
l2_issued=$SECONDS
app_cred=$(qa -c "SELECT keysmith.get_secret('d/app')")
qa -F ' ' -c "SELECT username, role_oid FROM keysmith.lease" >"$KS_WORK/lease-oids"
due_a=$(qa -c "SELECT string_agg(kind || ' ' || target || ' ' || next_due, ',' ORDER BY target) FROM keysmith.rotation_schedules")

# the move: roles (with passwords and security labels) and the database
ks_as_pg "$PG_BIN/pg_dumpall" -h "$A" -p "$PGPORT" -U postgres --globals-only >"$KS_WORK/dump-globals.sql" 2>"$KS_WORK/dump.err" &&
    ks_as_pg "$PG_BIN/pg_dump" -h "$A" -p "$PGPORT" -U postgres -Fc -d postgres >"$KS_WORK/dump-postgres.dump" 2>>"$KS_WORK/dump.err"
rc=$?
grep -q "SECURITY LABEL FOR keysmith ON ROLE $l2_user IS 'lease:$l2_id'" "$KS_WORK/dump-globals.sql"
ks_check_out $((rc + $?)) "$(cat "$KS_WORK/dump.err")" "pg_dumpall --globals-only and pg_dump succeed; the globals carry the leases' security labels"
ks_cluster_stop "$A"

ks_cluster_init "$B"
echo "keysmith.reaper_naptime = '200ms'" >>"$B/data/postgresql.conf"
echo "keysmith.rotation_naptime = '200ms'" >>"$B/data/postgresql.conf"
cp "$A/data/keysmith_master.key" "$B/data/keysmith_master.key"
ks_cluster_start "$B"
. "$B/env"
qb() { q -h "$B" -p "$PGPORT" -d postgres "$@"; }
# The attack, first: in the fresh cluster an unrelated login role gets the
# OID the short lease's role had at the source.  keysmith.lease carries
# that number; acting on it would lock out and drop this role.
l2_oid=$(awk -v u="$l2_user" '$1 == u {print $2}' "$KS_WORK/lease-oids")
qb >/dev/null <<SQL
DO \$\$
DECLARE o oid;
BEGIN
    LOOP
        CREATE ROLE ks_filler;
        SELECT oid INTO o FROM pg_catalog.pg_roles WHERE rolname = 'ks_filler';
        DROP ROLE ks_filler;
        EXIT WHEN o >= $l2_oid - 1;
    END LOOP;
END
\$\$;
CREATE ROLE bystander LOGIN PASSWORD 'bystander-pw';
SQL
by_oid=$(qb -c "SELECT oid FROM pg_catalog.pg_roles WHERE rolname = 'bystander'")
# the globals re-create postgres, which exists: that one error is expected
psql -X -q -h "$B" -p "$PGPORT" -d postgres -f "$KS_WORK/dump-globals.sql" >"$KS_WORK/restore.log" 2>&1
while [ $((SECONDS - l2_issued)) -le 3 ]; do sleep 0.2; done
# The restore in two parts, paused where pg_restore has committed the COPY
# of keysmith.lease and not yet that of keysmith.lease_event (pg_restore
# commits each table on its own and sets the sequences last).  The short
# lease has expired by then: a reaper acting now would take event ids the
# second part brings (a duplicate key there), and act on the OID the lease
# row carries.  The workers must wait for the restore to end.
"$PG_BIN/pg_restore" -l "$KS_WORK/dump-postgres.dump" >"$KS_WORK/restore.list"
cut=$(grep -n 'TABLE DATA keysmith lease_event ' "$KS_WORK/restore.list" | cut -d: -f1)
head -n $((cut - 1)) "$KS_WORK/restore.list" >"$KS_WORK/restore-1.list"
tail -n +"$cut" "$KS_WORK/restore.list" >"$KS_WORK/restore-2.list"
chmod 644 "$KS_WORK"/restore-*.list
ks_as_pg "$PG_BIN/pg_restore" -h "$B" -p "$PGPORT" -U postgres -d postgres -L "$KS_WORK/restore-1.list" \
    "$KS_WORK/dump-postgres.dump" >>"$KS_WORK/restore.log" 2>&1
rc1=$?
waited=1
for _ in $(seq 1 100); do
    grep -q "keysmith lease reaper waits: keysmith's catalog in database \"postgres\" is being restored" "$B/server.log" &&
        { waited=0; break; }
    sleep 0.1
done
sleep 1 # several reaper rounds (200 ms) in the gap
ks_as_pg "$PG_BIN/pg_restore" -h "$B" -p "$PGPORT" -U postgres -d postgres -L "$KS_WORK/restore-2.list" \
    "$KS_WORK/dump-postgres.dump" >>"$KS_WORK/restore.log" 2>&1
rc=$((rc1 + $?))
errs=$(grep -E 'ERROR|error' "$KS_WORK/restore.log" | grep -v 'role "postgres" already exists')
[ -n "$cut" ] && [ $rc = 0 ] && [ -z "$errs" ] && [ $waited = 0 ]
ks_check_out $? "pg_restore exit $rc; $errs; reaper waited: $waited (0 = yes)" \
    "attack: the reaper runs while pg_restore is between keysmith.lease and lease_event; it waits (WARNING), and the restore finishes without error"

n=$(qb -c "SELECT count(*) FROM public.dv WHERE keysmith.decrypt_value(c, id::text) = 'v' || id" 2>&1)
v=$(qb -c "SELECT key_version FROM keysmith.ciphertext_info(keysmith.encrypt_value('dk', 'new'))" 2>&1)
[ "$n" = 50 ] && [ "$v" = 2 ]
ks_check_out $? "decrypted $n, new version $v" "all 50 values decrypt there; its first encryption rolls to DEK version 2 (another server history)"

label=$(qb -c "SELECT s.label FROM pg_catalog.pg_shseclabel s JOIN pg_catalog.pg_authid a ON a.oid = s.objoid
                WHERE s.provider = 'keysmith' AND a.rolname = '$l1_user'")
lp=$(PGPASSWORD=$l1_pw psql -X -q -t -A -h 127.0.0.1 -p "$PGPORT" -U "$l1_user" -d postgres -c 'SELECT count(*) FROM public.dv' 2>&1)
[[ $label == lease:* ]] && [ "$lp" = 50 ]
ks_check_out $? "label $label; login: $lp" "a restored lease keeps its security label and logs in over TCP with its password"

st=
for _ in $(seq 1 100); do
    st=$(qb -c "SELECT state FROM keysmith.leases WHERE lease_id = '$l2_id'")
    [ "$st" = revoked ] && break
    sleep 0.1
done
gone=$(qb -c "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = '$l2_user'")
[ "$st" = revoked ] && [ "$gone" = 0 ] &&
    grep -q "keysmith lease reaper goes on: keysmith's catalog in database \"postgres\" is no longer being restored" "$B/server.log"
ks_check_out $? "state $st, role left $gone" "a restored lease that expires is revoked by the fresh cluster's reaper once the restore has ended (logged), its role dropped"
bl=$(PGPASSWORD=bystander-pw psql -X -q -t -A -h 127.0.0.1 -p "$PGPORT" -U bystander -d postgres -c 'SELECT current_user' 2>&1)
[ "$by_oid" = "$l2_oid" ] && [ "$bl" = bystander ] &&
    grep -q "keysmith: lease $l2_id was bound to role OID $l2_oid, which does not carry its security label; bound again" "$B/server.log"
ks_check_out $? "bystander OID $by_oid (lease's old OID $l2_oid); login: $bl" \
    "attack: the role that now has the lease's old OID is left alone (the lease is bound again by its security label, and logged)"

s=$(qb -c "SELECT keysmith.get_secret('d/static') || ' ' || keysmith.get_secret('d/static', 'previous')")
[ "$s" = "static-v2 static-v1" ]
ks_check_out $? "$s" "a restored secret reads back with its stages (current, previous)"
cred=$(qb -c "SELECT keysmith.get_secret('d/app')")
lg=$(PGPASSWORD=$(field "$cred" password) psql -X -q -t -A -h 127.0.0.1 -p "$PGPORT" -U d_app -d postgres -c 'SELECT current_user' 2>&1)
[ "$cred" = "$app_cred" ] && [ "$lg" = d_app ]
ks_check_out $? "$lg" "the restored role credential is the same and logs in"

tok=$(qb -c "SELECT keysmith.rotate_secret('d/app')")
st=$(ks_wait_rotation "$tok")
cred2=$(qb -c "SELECT keysmith.get_secret('d/app')")
lg=$(PGPASSWORD=$(field "$cred2" password) psql -X -q -t -A -h 127.0.0.1 -p "$PGPORT" -U d_app -d postgres -c 'SELECT current_user' 2>&1)
[ "$st" = finished ] && [ "$cred2" != "$app_cred" ] && [ "$lg" = d_app ]
ks_check_out $? "$st; $lg" "a rotation in the fresh cluster finishes, and its new credential logs in"

due_b=$(qb -c "SELECT string_agg(kind || ' ' || target || ' ' || next_due, ',' ORDER BY target) FROM keysmith.rotation_schedules")
[ -n "$due_a" ] && [ "$due_b" = "$due_a" ]
ks_check_out $? "$due_a | $due_b" "the schedules come back with the same next due times"

# the moved cluster also takes new leases
lu=$(qb -c "SELECT username FROM keysmith.issue_role('dt', '1 minute')")
[ -n "$lu" ] && [ "$(qb -c "SELECT count(*) FROM keysmith.leases WHERE state = 'active'")" = 2 ]
ks_check $? "new leases can be issued there"

ks_cluster_stop "$B"
ks_check $? "both clusters stopped"
