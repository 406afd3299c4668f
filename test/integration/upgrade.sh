#!/usr/bin/env bash
# test/integration/upgrade.sh
#
# The upgrade chain: a database created at 0.1, with a key and data, is
# updated to 0.2 with ALTER EXTENSION; its extension objects must then be
# exactly those of a fresh 0.2 install, its data must still decrypt, and
# leases must work in it.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 7

dir=$KS_WORK/extra-upgrade
ks_cluster_init "$dir"
ks_cluster_start "$dir"
. "$dir/env"
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }

q -d postgres <<'SQL'
CREATE EXTENSION keysmith VERSION '0.1';
SELECT keysmith.create_key('up');
CREATE TABLE t AS SELECT i, keysmith.encrypt_value('up', 'v' || i) AS c FROM generate_series(1, 100) i;
SQL
ks_check $? "0.1 installed with a key and 100 encrypted rows"
v=$(q -d postgres -c "ALTER EXTENSION keysmith UPDATE TO '0.2'" -c "SELECT extversion FROM pg_extension WHERE extname = 'keysmith'")
[ "$v" = 0.2 ]; ks_check $? "ALTER EXTENSION keysmith UPDATE TO '0.2' ($v)"
q -d postgres -c "CREATE DATABASE fresh" && q -d fresh -c "CREATE EXTENSION keysmith"
ks_check $? "a fresh 0.2 install in another database"

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
q -d postgres -c "$describe" >"$dir/upgraded.txt"
q -d fresh -c "$describe" >"$dir/fresh.txt"
n=$(wc -l <"$dir/fresh.txt")
diff -u "$dir/fresh.txt" "$dir/upgraded.txt" >"$dir/upgrade.diff"
ks_check $? "the upgraded extension has exactly the fresh install's objects ($n lines compared)"
[ -s "$dir/upgrade.diff" ] && head -40 "$dir/upgrade.diff"
c=$(q -d postgres -c "SELECT count(*) FROM pg_constraint WHERE connamespace = 'keysmith'::regnamespace")
c2=$(q -d fresh -c "SELECT count(*) FROM pg_constraint WHERE connamespace = 'keysmith'::regnamespace")
[ "$c" = "$c2" ]; ks_check $? "and the same constraints ($c)"
bad=$(q -d postgres -c "SELECT count(*) FROM t WHERE keysmith.decrypt_value(c) <> 'v' || i")
[ "$bad" = 0 ]; ks_check $? "the 0.1 data still decrypts after the update"
q -d postgres -c "CREATE ROLE up_rw" -c "SELECT keysmith.create_role_template('up', ARRAY['up_rw'])" \
  -c "SELECT count(*) FROM keysmith.issue_role('up')" >/dev/null
ks_check $? "leases work in the upgraded database"

ks_cluster_stop "$dir"
