#!/usr/bin/env bash
# test/integration/upgrade.sh
#
# The upgrade chain with data in place: a database created at 0.1, with a
# key and encrypted rows, is updated to 0.2, given a template, a lease and
# a finished reencrypt job there, then updated to 0.3, 0.4, 0.5, 0.6, 0.7,
# 0.8, 0.9 and so on up to the current version (keysmith.control).
# Its extension objects must be exactly those of
# test/integration/catalog-<version>.txt at each version from 0.3 on, and
# of extension/scripts/catalog.txt at the current one,
# reviewed descriptions checked in beside this script (a fresh install must
# match 0.9 too: comparing the two builds with each other would prove
# nothing, they come from the same SQL).  The 0.1 data, the 0.2 lease and
# the 0.2 job must work under 0.9, and a secret rotates there, by hand and
# on a schedule.  And an install that 0.2 allowed into a schema
# another role owns is refused the update.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
# the current version and the released ones after 0.7 that lead to it
CURRENT=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$ROOT/keysmith.control")
RELEASED=$(ls "$ROOT"/extension/scripts/keysmith--*--*.sql | sed 's/.*--\(.*\)\.sql$/\1/' | sort -V |
           grep -v -x -e "$CURRENT" -e 0.2 -e 0.3 -e 0.4 -e 0.5 -e 0.6 -e 0.7)
ks_plan $((28 + 2 * $(echo $RELEASED | wc -w)))

dir=$KS_WORK/extra-upgrade
ks_cluster_init "$dir"
ks_cluster_start "$dir"
. "$dir/env"

q -d postgres <<'SQL'
CREATE EXTENSION keysmith VERSION '0.1';
SELECT keysmith.create_key('up');
CREATE TABLE t AS SELECT i, keysmith.encrypt_value('up', 'v' || i) AS c FROM generate_series(1, 100) i;
SQL
ks_check $? "0.1 installed with a key and 100 encrypted rows"
v=$(q -d postgres -c "ALTER EXTENSION keysmith UPDATE TO '0.2'" -c "SELECT extversion FROM pg_extension WHERE extname = 'keysmith'")
[ "$v" = 0.2 ]; ks_check $? "ALTER EXTENSION keysmith UPDATE TO '0.2' ($v)"
# the installed keysmith.so is 0.3, whose issue_role needs the 0.3 catalog
# (it says so); the template and the lease are written as 0.2 wrote them
out=$(psql -X -q -v VERBOSITY=verbose -d postgres -c "SELECT * FROM keysmith.issue_role('x')" 2>&1)
ks_sqlstate 55000 'this needs keysmith 0.3, but the extension in this database is at 0.2' "$out"
ks_check $? "the 0.3 library asks for the update before issuing from a 0.2 catalog"
q -d postgres <<'SQL' >/dev/null
CREATE ROLE up_rw;
CREATE ROLE ks_up_from02 LOGIN IN ROLE up_rw;
INSERT INTO keysmith.role_template (name, member_of, default_ttl, max_ttl, username_prefix, created_by)
VALUES ('up', '{up_rw}', '1 hour', '2 hours', 'ks_up_', 'postgres');
INSERT INTO keysmith.lease (lease_id, template, username, role_oid, requested_by, requester_oid, issued_at,
                            expires_at, max_expires_at, default_ttl)
SELECT gen_random_uuid(), 'up', 'ks_up_from02', 'ks_up_from02'::regrole, 'postgres', 10, now(),
       now() + interval '1 hour', now() + interval '2 hours', '1 hour';
INSERT INTO keysmith.lease_event (lease_id, event, acting_role) SELECT lease_id, 'issued', 'postgres' FROM keysmith.lease;
CREATE TABLE lease02 AS SELECT lease_id FROM keysmith.lease;
SELECT keysmith.rotate_dek('up');
CALL keysmith.reencrypt('t', 'c', 30);
SQL
j=$(q -d postgres -c "SELECT state || ',' || rows_done FROM keysmith.reencrypt_job")
[ "$j" = done,100 ]; ks_check $? "at 0.2: a template, a lease, and a finished reencrypt job ($j)"
v=$(q -d postgres -c "ALTER EXTENSION keysmith UPDATE TO '0.3'" -c "SELECT extversion FROM pg_extension WHERE extname = 'keysmith'")
[ "$v" = 0.3 ]; ks_check $? "ALTER EXTENSION keysmith UPDATE TO '0.3' ($v)"

# everything that belongs to the extension, described so the two can be diffed
describe='
SELECT pg_describe_object(d.classid, d.objid, 0) || coalesce(
         (SELECT E"\n  " || string_agg(a.attname || " " || format_type(a.atttypid, a.atttypmod)
                   || CASE WHEN a.attnotnull THEN " not null" ELSE "" END
                   || coalesce(" default " || pg_get_expr(ad.adbin, ad.adrelid), ""), E"\n  " ORDER BY a.attnum)
            FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
           WHERE d.classid = $$pg_class$$::regclass AND a.attrelid = d.objid AND a.attnum > 0 AND NOT a.attisdropped), "")
       || coalesce((SELECT E"\n" || pg_get_functiondef(d.objid) WHERE d.classid = $$pg_proc$$::regclass
                      AND (SELECT prokind FROM pg_proc WHERE oid = d.objid) <> $$a$$), "")
       || coalesce((SELECT E"\n" || pg_get_viewdef(d.objid) WHERE d.classid = $$pg_class$$::regclass
                      AND (SELECT relkind FROM pg_class WHERE oid = d.objid) = $$v$$), "")
  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
 WHERE d.refclassid = $$pg_extension$$::regclass AND e.extname = $$keysmith$$ AND d.deptype = $$e$$
 ORDER BY 1'
describe=${describe//\"/\'}
# matches DB VERSION WHAT: DB's keysmith objects against catalog-VERSION.txt
matches() {
    local out=$dir/$1-$2.txt n
    q -d "$1" -c "$describe" >"$out"
    local want=$ROOT/test/integration/catalog-$2.txt
    [ "$2" = "$CURRENT" ] && want=$ROOT/extension/scripts/catalog.txt
    n=$(wc -l <"$want")
    diff -u "$want" "$out" >"$out.diff"
    ks_check $? "$3 ($n lines compared)"
    [ -s "$out.diff" ] && head -60 "$out.diff"
}
matches postgres 0.3 "at 0.3 the upgraded extension has exactly the reviewed 0.3 objects"

v=$(q -d postgres -c "ALTER EXTENSION keysmith UPDATE TO '0.4'" -c "SELECT extversion FROM pg_extension WHERE extname = 'keysmith'")
[ "$v" = 0.4 ]; ks_check $? "ALTER EXTENSION keysmith UPDATE TO '0.4' ($v)"
matches postgres 0.4 "at 0.4 the upgraded extension has exactly the reviewed 0.4 objects"

v=$(q -d postgres -c "ALTER EXTENSION keysmith UPDATE TO '0.5'" -c "SELECT extversion FROM pg_extension WHERE extname = 'keysmith'")
[ "$v" = 0.5 ]; ks_check $? "ALTER EXTENSION keysmith UPDATE TO '0.5' ($v)"
matches postgres 0.5 "at 0.5 the upgraded extension has exactly the reviewed 0.5 objects"

v=$(q -d postgres -c "ALTER EXTENSION keysmith UPDATE TO '0.6'" -c "SELECT extversion FROM pg_extension WHERE extname = 'keysmith'")
[ "$v" = 0.6 ]; ks_check $? "ALTER EXTENSION keysmith UPDATE TO '0.6' ($v)"
matches postgres 0.6 "at 0.6 the upgraded extension has exactly the reviewed 0.6 objects"

v=$(q -d postgres -c "ALTER EXTENSION keysmith UPDATE TO '0.7'" -c "SELECT extversion FROM pg_extension WHERE extname = 'keysmith'")
[ "$v" = 0.7 ]; ks_check $? "ALTER EXTENSION keysmith UPDATE TO '0.7' ($v)"
matches postgres 0.7 "at 0.7 the upgraded extension has exactly the reviewed 0.7 objects"

# From 0.8 on, every released version the upgrade scripts reach, then the
# current one (keysmith.control), whose reviewed snapshot is
# extension/scripts/catalog.txt; at a version bump the old snapshot moves
# here as catalog-<old version>.txt.
for r in $RELEASED; do
    v=$(q -d postgres -c "ALTER EXTENSION keysmith UPDATE TO '$r'" -c "SELECT extversion FROM pg_extension WHERE extname = 'keysmith'")
    [ "$v" = "$r" ]; ks_check $? "ALTER EXTENSION keysmith UPDATE TO '$r' ($v)"
    matches postgres "$r" "at $r the upgraded extension has exactly the reviewed $r objects"
done

v=$(q -d postgres -c "ALTER EXTENSION keysmith UPDATE" -c "SELECT extversion FROM pg_extension WHERE extname = 'keysmith'")
[ "$v" = "$CURRENT" ]; ks_check $? "ALTER EXTENSION keysmith UPDATE goes on to the default version ($v)"
q -d postgres -c "CREATE DATABASE fresh" && q -d fresh -c "CREATE EXTENSION keysmith"
ks_check $? "a fresh $CURRENT install in another database"
matches postgres "$CURRENT" "the upgraded extension has exactly the reviewed $CURRENT objects"
matches fresh "$CURRENT" "and so has a fresh install"
kv=$(q -d postgres -c "SELECT string_agg(DISTINCT kms || ':' || kek_version, ',') FROM keysmith.key_versions v
                         JOIN keysmith.keys k ON k.name = v.key_name WHERE v.state <> 'destroyed'")
[ "$kv" = "local:1" ]; ks_check $? "the keys from 0.1 use the built-in provider local, their KEK versions as text ($kv)"
c=$(q -d postgres -c "SELECT count(*) FROM pg_constraint WHERE connamespace = 'keysmith'::regnamespace")
c2=$(q -d fresh -c "SELECT count(*) FROM pg_constraint WHERE connamespace = 'keysmith'::regnamespace")
[ "$c" = "$c2" ]; ks_check $? "and the same constraints ($c)"
bad=$(q -d postgres -c "SELECT count(*) FROM t WHERE keysmith.decrypt_value(c) <> 'v' || i")
[ "$bad" = 0 ]; ks_check $? "the 0.1 data still decrypts after the update"
v=$(q -d postgres -c "SELECT key_version FROM keysmith.ciphertext_info(keysmith.encrypt_value('up', 'x'))" \
      -c "SELECT key_version FROM keysmith.ciphertext_info(keysmith.encrypt_value('up', 'y'))" \
      -c "SELECT count(*) FROM keysmith.key_event WHERE key_name = 'up' AND event = 'rollover'" | tr '\n' ' ')
[ "$v" = "3 3 1 " ]; ks_check $? "the first encryption after the update rolls a key made before 0.9 over, once: its versions record no server history ($v)"
r=$(q -d postgres -c "SELECT keysmith.revoke_lease(lease_id) FROM lease02" \
      -c "SELECT l.state || ',' || t.allow_role_attributes FROM keysmith.lease l JOIN lease02 USING (lease_id)
            JOIN keysmith.role_templates t ON t.name = l.template" | tail -1)
[ "$r" = "revoked,false" ]; ks_check $? "the 0.2 lease revokes under 0.9, its template without the opt-in ($(echo $r))"
n=$(q -d postgres -c "SELECT count(*) FROM keysmith.issue_role('up')")
[ "$n" = 1 ]; ks_check $? "the 0.2 template issues under 0.9"
r=$(q -d postgres -c "SELECT keysmith.rotate_dek('up')" -c "CALL keysmith.reencrypt('t', 'c', 30)" \
      -c "SELECT state || ',' || rows_done FROM keysmith.reencrypt_job" \
      -c "SELECT count(*) FROM t WHERE keysmith.ciphertext_needs_reencrypt(c)" | tr '\n' ' ')
[ "$r" = "4 done,100 0 " ]; ks_check $? "reencrypt under 0.9 takes over the 0.2 job row ($r)"

q -d postgres -c "CREATE ROLE up_app LOGIN" -c "SELECT keysmith.create_secret('up/app', 'up', 'postgres_role', '{\"role\": \"up_app\"}')" >/dev/null
t=$(q -d postgres -c "SELECT keysmith.rotate_secret('up/app')")
st=$(ks_wait_rotation "$t")
[ "$st" = finished ]; ks_check $? "a secret under the key from 0.1 rotates in the upgraded database ($st)"
q -d postgres -c "SELECT keysmith.schedule_rotation('up/app', '1 day', NULL, now() - interval '1 day 1 minute')" >/dev/null
for _ in $(seq 1 100); do
    st=$(q -d postgres -c "SELECT last_state FROM keysmith.rotation_schedules WHERE target = 'up/app'")
    [ "$st" = finished ] && break
    sleep 0.1
done
[ "$st" = finished ] && ! grep -q "waits: keysmith's catalog in database" "$dir/server.log"
ks_check $? "and rotates on a schedule there ($st), and no worker took the updated catalog for one being restored"

# 0.2 installed into a schema another role owns: the update is refused
q -d postgres <<'SQL' >/dev/null
CREATE ROLE up_evil;
CREATE DATABASE owned;
SQL
q -d owned -c "CREATE SCHEMA keysmith AUTHORIZATION up_evil" -c "CREATE EXTENSION keysmith VERSION '0.2'" >/dev/null
out=$(psql -X -q -v VERBOSITY=verbose -d owned -c "ALTER EXTENSION keysmith UPDATE" 2>&1)
v=$(q -d owned -c "SELECT extversion FROM pg_extension WHERE extname = 'keysmith'")
ks_sqlstate 42501 'keysmith refuses to install into schema "keysmith", which is owned by role "up_evil"' "$out" && [ "$v" = 0.2 ]
ks_check $? "an 0.2 install in up_evil's schema is refused the update and stays 0.2 ($v)"

ks_cluster_stop "$dir"
