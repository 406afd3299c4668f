#!/usr/bin/env bash
# test/integration/keys_cold.sh
#
# The DEK cache's cold path reads key versions by index, not through SPI
# (extension/keys/key_scan.c).  What it must keep from the SQL it
# replaced, each in a fresh backend so that every lookup is cold:
#
#   - the index's collation: in a database whose default collation is ICU
#     en-US, keys whose names sort differently there and in "C" (mixed
#     case, digits, punctuation) are all found by name, for encryption and
#     decryption (a scan key with the "C" collation misses some: checked
#     with a build that used it);
#   - SPI's snapshot: in REPEATABLE READ a key rotated by another session
#     after the transaction's snapshot is not seen (the transaction's
#     snapshot, not the latest one: GetLatestSnapshot fails this); in READ
#     COMMITTED it is;
#   - parallel mode: a parallel worker decrypts with the query's snapshot
#     (advancing the command counter there is an error);
#   - a changed catalog: with key_version's primary key dropped by a
#     superuser while a backend holds the tables' shape (the index's OID),
#     the next cold loads in that backend read the versions by heap scan.
#
# Catalogs of older versions (before 0.7, before 0.9) are read by
# upgrade.sh, which decrypts at every version.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 8

dir=$KS_WORK/extra-keys-cold
cleanup() {
    ks_cluster_stop "$dir" immediate >/dev/null 2>&1
}
ks_cluster_init "$dir"
ks_cluster_start "$dir"
. "$dir/env"

# names that order differently under ICU en-US and under "C"
names="alpha Alpha ALPHA beta Beta b-2 b_2 b.2 B2 b2 zeta Zeta z:1 Z@1 a/b A/B 0x 0X 9 _u -m .p"
q -c "CREATE DATABASE icu TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'" >/dev/null
KS_DB=icu q -c "CREATE EXTENSION keysmith" \
    -c "SELECT count(keysmith.create_key(n)) FROM unnest(string_to_array('$names', ' ')) n" \
    -c "SELECT count(keysmith.create_key('k' || i || CASE WHEN i % 2 = 0 THEN 'X' ELSE 'x' END))
          FROM generate_series(1, 300) i" >/dev/null
out=$(KS_DB=icu q -c "SELECT datlocprovider FROM pg_database WHERE datname = 'icu'" \
                 -c "SELECT 'B2' < 'b2', 'B2' COLLATE \"C\" < 'b2'")
[ "$out" = $'i\nf|t' ]
ks_check_out $? "$out" "setup: a database whose default collation (ICU en-US) orders key names unlike \"C\""

out=$(KS_DB=icu q -c "CREATE TABLE v AS SELECT n, keysmith.encrypt_value(n, 'value of ' || n) AS c
                        FROM (SELECT unnest(string_to_array('$names', ' ')) UNION ALL
                              SELECT 'k' || i || CASE WHEN i % 2 = 0 THEN 'X' ELSE 'x' END
                                FROM generate_series(1, 300) i) s(n)" \
                 -c "SELECT count(*) FROM v WHERE (keysmith.ciphertext_info(c)).key_name = n" 2>&1)
[ "$out" = 322 ]
ks_check_out $? "$out" "encrypt_value finds each of 322 keys by name in a fresh backend (ICU collation)"
out=$(KS_DB=icu q -c "SELECT count(*) FROM v WHERE keysmith.decrypt_value(c) = 'value of ' || n" 2>&1)
[ "$out" = 322 ]
ks_check_out $? "$out" "decrypt_value finds each key by id in a fresh backend"

# REPEATABLE READ: the transaction's snapshot, as SPI used
q -c "CREATE EXTENSION keysmith" -c "SELECT keysmith.create_key('rr')" -c "SELECT keysmith.create_key('rc')" >/dev/null
out=$(q 2>&1 <<SQL
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT 1;
\! psql -X -q -d postgres -c "SELECT keysmith.rotate_dek('rr')" >/dev/null
SELECT (keysmith.ciphertext_info(keysmith.encrypt_value('rr', 'x'))).key_version;
COMMIT;
SQL
)
out="$out
$(q -c "SELECT (keysmith.ciphertext_info(keysmith.encrypt_value('rr', 'x'))).key_version" 2>&1)"
[ "$out" = $'1\n1\n2' ]
ks_check_out $? "$out" "REPEATABLE READ: a rotation committed after the snapshot is not seen (as through SPI); a new session sees it"
out=$(q 2>&1 <<SQL
BEGIN;
SELECT 1;
\! psql -X -q -d postgres -c "SELECT keysmith.rotate_dek('rc')" >/dev/null
SELECT (keysmith.ciphertext_info(keysmith.encrypt_value('rc', 'x'))).key_version;
COMMIT;
SQL
)
[ "$out" = $'1\n2' ]
ks_check_out $? "$out" "READ COMMITTED: a rotation committed by another session is seen by the next statement"

# parallel mode: the workers read with the query's snapshot
q -c "CREATE TABLE pv AS SELECT i, keysmith.encrypt_value('rc', 'p' || i) AS c FROM generate_series(1, 1000) i" \
  -c "ANALYZE pv" >/dev/null
out=$(q -c "SET force_parallel_mode = on" -c "SET parallel_setup_cost = 0" -c "SET parallel_tuple_cost = 0" \
        -c "SET min_parallel_table_scan_size = 0" \
        -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
            SELECT count(*) FROM pv WHERE keysmith.decrypt_value(c) = 'p' || i" \
        -c "SELECT count(*) FROM pv WHERE keysmith.decrypt_value(c) = 'p' || i" 2>&1)
grep -q "Workers Launched: [1-9]" <<<"$out" && [ "$(tail -1 <<<"$out")" = 1000 ]
ks_check_out $? "$out" "a parallel worker decrypts 1000 values, loading the key cold with the query's snapshot"

# the shape changes under a backend that holds it
out=$(q 2>&1 <<SQL
SELECT (keysmith.ciphertext_info(keysmith.encrypt_value('rr', 'x'))).key_name;
\! psql -X -q -d postgres -c "ALTER TABLE keysmith.key_version DROP CONSTRAINT key_version_pkey" -c "SELECT keysmith.create_key('after')" >/dev/null
SELECT count(*) FROM pg_index WHERE indrelid = 'keysmith.key_version'::regclass;
SELECT keysmith.flush_dek_cache() >= 0;
SELECT (keysmith.ciphertext_info(keysmith.encrypt_value('after', 'x'))).key_name;
SELECT keysmith.decrypt_value(keysmith.encrypt_value('rc', 'y'));
SQL
)
[ "$out" = $'rr\n0\nt\nafter\ny' ]
ks_check_out $? "$out" "with key_version's primary key dropped under a running backend, its next cold loads read the versions by heap scan"
out=$(q -c "SELECT keysmith.encrypt_value('no-such-key', 'x')" 2>&1)
[[ $out == *'key "no-such-key" does not exist'* ]]
ks_check_out $? "$out" "and an unknown name is still unknown (42704's message)"
