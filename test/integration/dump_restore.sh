#!/usr/bin/env bash
# test/integration/dump_restore.sh
#
# pg_dump a database with encrypted rows (two keys, per-row contexts),
# restore it into a new database of the same cluster, and decrypt every row
# there.  Proves the key tables travel with pg_dump and key ids survive.
# Needs the suite's cluster: KS_CLUSTER and PGHOST/PGPORT from run_suites.sh.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
ks_plan 13
. "$KS_CLUSTER/env"

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
-- several rotations, values under each version
SELECT keysmith.rotate_dek('dump_a');
INSERT INTO t SELECT i, 'r2 ' || i, keysmith.encrypt_value('dump_a', 'r2 ' || i, 'id:' || i), NULL
  FROM generate_series(2001, 2100) i;
SELECT keysmith.rotate_dek('dump_a');
INSERT INTO t SELECT i, 'r3 ' || i, keysmith.encrypt_value('dump_a', 'r3 ' || i, 'id:' || i), NULL
  FROM generate_series(2101, 2200) i;
SELECT keysmith.rotate_dek('dump_b');
-- a key with a destroyed version
SELECT keysmith.create_key('dump_d');
CREATE TABLE shredded (id int, c bytea);
INSERT INTO shredded SELECT i, keysmith.encrypt_value('dump_d', 'gone ' || i) FROM generate_series(1, 10) i;
SELECT keysmith.rotate_dek('dump_d');
INSERT INTO shredded SELECT i, keysmith.encrypt_value('dump_d', 'kept ' || i) FROM generate_series(11, 20) i;
SELECT keysmith.destroy_key_version('dump_d', 1);
SQL

dump=$KS_WORK/ks_dump_src.sql
pg_dump -d ks_dump_src -f "$dump"
ks_check $? "pg_dump succeeds"
grep -q 'COPY keysmith.key_version' "$dump"; ks_check $? "the dump contains the wrapped keys"
grep -q 'COPY keysmith.key ' "$dump"; ks_check $? "the dump contains the key table"

q -d postgres -c 'CREATE DATABASE ks_dump_dst'
psql -X -q -v ON_ERROR_STOP=1 -d ks_dump_dst -f "$dump" >"$KS_WORK/restore.log" 2>&1
ks_check $? "the dump restores into a new database"

bad=$(q -d ks_dump_dst -c "SELECT count(*) FROM t WHERE keysmith.decrypt_value(ct, 'id:' || id) IS DISTINCT FROM plain
                              OR (ct_bin IS NOT NULL AND keysmith.decrypt_value_bytea(ct_bin) IS DISTINCT FROM decode(md5(id::text), 'hex'))")
total=$(q -d ks_dump_dst -c "SELECT count(*) FROM t")
[ "$bad" = 0 ] && [ "$total" = 2200 ]; ks_check $? "every restored row decrypts, under every version ($total rows, $bad wrong)"
vers=$(q -d ks_dump_dst -c "SELECT string_agg(DISTINCT (keysmith.ciphertext_info(ct)).key_version::text, ',') FROM t WHERE id > 1990")
[ "$vers" = "1,2,3" ]; ks_check $? "rows under versions 1, 2 and 3 were checked ($vers)"
kept=$(q -d ks_dump_dst -c "SELECT count(*) FROM shredded WHERE id > 10 AND keysmith.decrypt_value(c) = 'kept ' || id")
[ "$kept" = 10 ]; ks_check $? "values under the surviving version of a shredded key decrypt"
err=$(psql -X -q -t -A -d ks_dump_dst -v VERBOSITY=verbose -c "SELECT keysmith.decrypt_value(c) FROM shredded WHERE id = 1" 2>&1 || true)
grep -q 'KS010' <<<"$err"; ks_check $? "values under the destroyed version stay unrecoverable after restore"
st=$(q -d ks_dump_dst -c "SELECT string_agg(name || ':' || current_version || ':' || destroyed_versions, ',' ORDER BY name) FROM keysmith.keys")
[ "$st" = "dump_a:3:0,dump_b:2:0,dump_d:2:1" ]; ks_check $? "key versions and states survive ($st)"
ev=$(q -d ks_dump_dst -c "SELECT count(*) FROM keysmith.key_event")
[ "$ev" = 8 ]; ks_check $? "the audit trail comes along (8 events: 3 create, 4 rotate_dek, 1 destroy; got $ev)"

keys=$(q -d ks_dump_dst -c "SELECT string_agg(name || ':' || key_id, ',' ORDER BY key_id) FROM keysmith.key")
src_keys=$(q -d ks_dump_src -c "SELECT string_agg(name || ':' || key_id, ',' ORDER BY key_id) FROM keysmith.key")
[ "$keys" = "$src_keys" ]; ks_check $? "key ids are preserved ($keys)"

# the sequence came along: a new key does not reuse an id
q -d ks_dump_dst -c "SELECT keysmith.create_key('dump_c')" >/dev/null
newid=$(q -d ks_dump_dst -c "SELECT key_id FROM keysmith.key WHERE name = 'dump_c'")
[ "$newid" -gt 3 ]; ks_check $? "a key created after restore gets a fresh id ($newid)"
new_ok=$(q -d ks_dump_dst -c "SELECT keysmith.decrypt_value(keysmith.encrypt_value('dump_c', 'fresh'))")
[ "$new_ok" = fresh ]; ks_check $? "the restored database encrypts with new keys"

q -d postgres -c 'DROP DATABASE ks_dump_src' -c 'DROP DATABASE ks_dump_dst'
