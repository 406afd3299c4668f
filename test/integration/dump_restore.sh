#!/usr/bin/env bash
# test/integration/dump_restore.sh
#
# pg_dump a database with encrypted rows (two keys, per-row contexts),
# restore it into a new database of the same cluster, and decrypt every row
# there.  Proves the key tables travel with pg_dump and key ids survive.
# Needs the suite's cluster: KS_CLUSTER and PGHOST/PGPORT from run_suites.sh.
set -euo pipefail
. "$KS_CLUSTER/env"
n=0
t() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi; }
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }

q -d postgres -c 'DROP DATABASE IF EXISTS ks_dump_src' -c 'DROP DATABASE IF EXISTS ks_dump_dst' -c 'CREATE DATABASE ks_dump_src'
q -d ks_dump_src <<'SQL'
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('dump_a');
SELECT keysmith.create_key('dump_b');
CREATE TABLE t (id int PRIMARY KEY, plain text, ct bytea, ct_bin bytea);
INSERT INTO t
SELECT i, 'row ' || i || ' ' || md5(i::text),
       keysmith.encrypt_value(CASE WHEN i % 2 = 0 THEN 'dump_a' ELSE 'dump_b' END,
                              'row ' || i || ' ' || md5(i::text), 'id:' || i),
       keysmith.encrypt_value('dump_a', decode(md5(i::text), 'hex'))
  FROM generate_series(1, 2000) i;
SQL

dump=$KS_WORK/ks_dump_src.sql
pg_dump -d ks_dump_src -f "$dump"
t $? "pg_dump succeeds"
grep -q 'COPY keysmith.key_version' "$dump"; t $? "the dump contains the wrapped keys"
grep -q 'COPY keysmith.key ' "$dump"; t $? "the dump contains the key table"

q -d postgres -c 'CREATE DATABASE ks_dump_dst'
psql -X -q -v ON_ERROR_STOP=1 -d ks_dump_dst -f "$dump" >"$KS_WORK/restore.log" 2>&1
t $? "the dump restores into a new database"

bad=$(q -d ks_dump_dst -c "SELECT count(*) FROM t WHERE keysmith.decrypt_value(ct, 'id:' || id) IS DISTINCT FROM plain
                              OR keysmith.decrypt_value_bytea(ct_bin) IS DISTINCT FROM decode(md5(id::text), 'hex')")
total=$(q -d ks_dump_dst -c "SELECT count(*) FROM t")
[ "$bad" = 0 ] && [ "$total" = 2000 ]; t $? "every restored row decrypts ($total rows, $bad wrong)"

keys=$(q -d ks_dump_dst -c "SELECT string_agg(name || ':' || key_id, ',' ORDER BY key_id) FROM keysmith.key")
src_keys=$(q -d ks_dump_src -c "SELECT string_agg(name || ':' || key_id, ',' ORDER BY key_id) FROM keysmith.key")
[ "$keys" = "$src_keys" ]; t $? "key ids are preserved ($keys)"

# the sequence came along: a new key does not reuse an id
q -d ks_dump_dst -c "SELECT keysmith.create_key('dump_c')" >/dev/null
newid=$(q -d ks_dump_dst -c "SELECT key_id FROM keysmith.key WHERE name = 'dump_c'")
[ "$newid" -gt 2 ]; t $? "a key created after restore gets a fresh id ($newid)"
new_ok=$(q -d ks_dump_dst -c "SELECT keysmith.decrypt_value(keysmith.encrypt_value('dump_c', 'fresh'))")
[ "$new_ok" = fresh ]; t $? "the restored database encrypts with new keys"

q -d postgres -c 'DROP DATABASE ks_dump_src' -c 'DROP DATABASE ks_dump_dst'
echo "1..$n"
