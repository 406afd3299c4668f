#!/usr/bin/env bash
# test/integration/counters_copies.sh
#
# Encryption counters against copies of DEKs, on a cluster of its own
# (extension/keys/counters.c, docs/format.md "Encryption counts").  A
# counter is keyed by (database OID, key id, version), so a database copied
# from another (CREATE DATABASE ... TEMPLATE) starts with no counts and rolls
# its keys over before it encrypts.  Two ways around that, each performed:
#   - a database owner with CREATEDB drops a database after it made counters
#     and creates a copy of its keysmith database under the same OID
#     (CREATE DATABASE ... OID, PostgreSQL 15): the dropped database's
#     counters then passed for the copy's, whose DEKs are the source's, and
#     the copy encrypted under the source's current DEK past the limit
#     (before the fix: 9 values under a version with a limit of 5);
#   - a base backup that holds a counter file (0.10 kept one in the data
#     directory while running) started without recovery.signal, to make a
#     clone: the clone took the file's counts for its own and encrypted
#     under DEKs its source also encrypts under.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 4

dir=$KS_WORK/extra-counters-copies
clone=$KS_WORK/extra-counters-copies-clone
cleanup() {
    ks_cluster_stop "$clone"
    ks_cluster_stop "$dir"
}
ks_cluster_init "$dir"
printf "keysmith.max_encryptions_per_dek = 5\nsynchronous_commit = on\n" >>"$dir/data/postgresql.conf"
echo "local   replication   postgres   trust" >>"$dir/data/pg_hba.conf"
ks_cluster_start "$dir"
. "$dir/env"

q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
CREATE ROLE mallory LOGIN CREATEDB;
GRANT keysmith_user TO mallory;
CREATE DATABASE prod OWNER mallory;
SQL
KS_DB=prod q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('k');
SELECT keysmith.grant_key('k', 'mallory', 'encrypt');
CREATE TABLE app (c bytea);
CREATE TABLE stolen (h text);
-- true when this database opens c (its DEK version is one of this database's)
CREATE FUNCTION opens(c bytea) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM keysmith.decrypt_value(c);
    RETURN true;
EXCEPTION WHEN others THEN
    RETURN false;
END $$;
SQL
app() { KS_DB=prod q -c "INSERT INTO app SELECT keysmith.encrypt_value('k', 'app') FROM generate_series(1, $1)" >/dev/null; }

# --- the dropped database's counters and a copy under its OID ---
app 2                                       # prod: version 1 holds 2
PGUSER=mallory q -c "CREATE DATABASE fresh OID 70000 TEMPLATE prod" >/dev/null
# fresh does not know version 1's count: it rolls to 2 (5 values), then 3 (1 value)
PGUSER=mallory KS_DB=fresh q -c "SELECT count(keysmith.encrypt_value('k', 'x')) FROM generate_series(1, 6)" >/dev/null
PGUSER=mallory q -c "DROP DATABASE fresh" >/dev/null
app 9                                       # prod: versions 1, 2 full, version 3 holds 1
PGUSER=mallory q -c "CREATE DATABASE copy OID 70000 TEMPLATE prod" >/dev/null
known=$(KS_DB=copy q -c "SELECT coalesce(current_version_encryptions::text, 'unknown') FROM keysmith.keys WHERE name = 'k'")
[ "$known" = unknown ]
ks_check $? "a copy made under a dropped database's OID does not take that database's counters: its version 3 (the source's DEK) is unknown there ($known)"
PGUSER=mallory KS_DB=copy q -c "SELECT encode(keysmith.encrypt_value('k', 'copy'), 'hex') FROM generate_series(1, 4)" >"$KS_WORK/stolen.hex"
KS_DB=prod q -c "\\copy stolen FROM '$KS_WORK/stolen.hex'" >/dev/null
app 4                                       # prod fills version 3
r=$(KS_DB=prod q -c "SELECT string_agg(v || ':' || n, ',' ORDER BY v) FROM (
        SELECT (keysmith.ciphertext_info(c)).key_version v, count(*) n
          FROM (SELECT c FROM app UNION ALL SELECT decode(h, 'hex') FROM stolen) s
         WHERE opens(c) GROUP BY 1) s")
s=$(KS_DB=prod q -c "SELECT count(*) FROM stolen")
[ "$s" = 4 ] && [ "$r" = "1:5,2:5,3:5" ]
ks_check $? "no DEK version of prod seals more than 5 values, counting the copy's 4 that prod can open (version:values $r)"

# --- a base backup holding a counter file, started as a clone ---
q -c "SELECT keysmith.create_key('b')" -c "SELECT keysmith.encrypt_value('b', 'x')" >/dev/null
dbid=$(q -c "SELECT oid FROM pg_database WHERE datname = 'postgres'")
kid=$(q -c "SELECT key_id FROM keysmith.key WHERE name = 'b'")
mkdir -p "$clone"; chown "$PG_OSUSER": "$clone"; chmod 700 "$clone"
ks_as_pg "$PG_BIN/pg_basebackup" -h "$dir" -p "$PGPORT" -U postgres -D "$clone/data" -X stream -c fast >/dev/null 2>&1
# what a base backup of a 0.10 server holds: its counter file, here with a
# reservation of 2 for b's version 1 (which its source keeps using)
/usr/bin/python3 - "$clone/data/keysmith_counters" "$dbid" "$kid" <<'PY'
import struct, sys
path, dbid, kid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, 'wb') as f:
    f.write(struct.pack('<II', 0x4B53434E, 1))
    f.write(struct.pack('<IiiIQ', dbid, kid, 1, 0, 2))
PY
chown "$PG_OSUSER": "$clone/data/keysmith_counters"
port2=$(ks_free_port)
echo "port = $port2" >>"$clone/data/postgresql.conf"
[ -f "$clone/data/backup_label" ] && ks_cluster_start "$clone"
ks_check $? "a base backup (backup_label) with a counter file starts as a clone, without recovery.signal"
c=$(PGPORT=$port2 q -c "SELECT coalesce(current_version_encryptions::text, 'unknown') FROM keysmith.keys WHERE name = 'b'")
v=$(PGPORT=$port2 q -c "SELECT (keysmith.ciphertext_info(keysmith.encrypt_value('b', 'clone'))).key_version")
[ "$c" = unknown ] && [ "$v" = 2 ] && [ ! -e "$clone/data/keysmith_counters" ]
ks_check $? "the clone takes no counts from the backup's file: b's version 1 is unknown there ($c) and it encrypts under a new version ($v)"
