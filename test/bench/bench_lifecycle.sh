#!/usr/bin/env bash
# test/bench/bench_lifecycle.sh
#
# Key lifecycle costs, measured in one run on one throwaway cluster:
#  - keysmith.reencrypt throughput (rows/s) on 1,000,000 rows, and its time
#    against one UPDATE t SET c = keysmith.rewrap_value(c) over a copy of
#    the same rows (goal: <= 1.3);
#  - the same re-encryption run by a key schedule (rotate_dek, then the
#    rotation worker's slices of a registered column), against the CALL:
#    what scheduling costs (no goal; the worker yields every 2 s);
#  - rotate_kek with 1,000 and with 1,000,000 encrypted rows in the table
#    (goal: the same within noise: it touches keys, never rows);
#  - decrypt_value throughput with 1 and with 50 key versions in use
#    (goal: within 10% of each other).
# Run as root (or with sudo) after `make install`: bash test/bench/bench_lifecycle.sh [rows]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" -eq 0 ] || exec sudo -E bash "$0" "$@"
. "$ROOT/test/lib.sh"
ROWS=${1:-1000000}
DIR=$(mktemp -d /tmp/keysmith-bench.XXXXXX)
trap 'ks_cluster_stop "$DIR/c" immediate; rm -rf "$DIR"' EXIT
chmod 755 "$DIR"
ks_cluster_init "$DIR/c"
{
    echo "shared_buffers = '1GB'"
    echo "max_parallel_workers_per_gather = 0"
    echo "jit = off"
    echo "max_wal_size = '4GB'"
    # no autovacuum of the tables the first runs left full of dead rows
    # while the later runs are timed
    echo "autovacuum = off"
} >>"$DIR/c/data/postgresql.conf"
ks_cluster_start "$DIR/c"
. "$DIR/c/env"
KEYFILE=$DIR/c/data/keysmith_master.key

psql -X -q -v ON_ERROR_STOP=1 -v rows="$ROWS" -d postgres <<'SQL'
CREATE EXTENSION keysmith;
CREATE FUNCTION bench(q text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE best float8 := 'infinity'; t0 timestamptz;
BEGIN
    EXECUTE q;
    FOR i IN 1..3 LOOP
        t0 := clock_timestamp(); EXECUTE q;
        best := least(best, extract(epoch FROM clock_timestamp() - t0));
    END LOOP;
    RETURN best;
END $$;
CREATE TABLE results (what text, value float8, unit text);

-- rotate_kek with 1,000 rows
SELECT keysmith.create_key('small');
CREATE TABLE small AS SELECT i AS id, keysmith.encrypt_value('small', md5(i::text)) AS c FROM generate_series(1, 1000) i;
SELECT keysmith.rotate_dek('small') FROM generate_series(1, 9);
-- rotate_kek with :rows rows (same number of key versions)
SELECT keysmith.create_key('big');
CREATE TABLE big AS SELECT i AS id, keysmith.encrypt_value('big', md5(i::text)) AS c FROM generate_series(1, :rows) i;
SELECT keysmith.rotate_dek('big') FROM generate_series(1, 9);
VACUUM ANALYZE small; VACUUM ANALYZE big;
SQL

# each rotate_kek re-wraps 10 versions; alternate the newest master key so
# every timed call has work to do
for i in $(seq 2 8); do
    ks_as_pg sh -c "printf '$i:%s\n' \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') >> '$KEYFILE'"
    psql -X -q -t -A -d postgres -c "INSERT INTO results SELECT 'rotate_kek, 1,000 rows (ms)', bench_once, 'ms' FROM (SELECT extract(epoch FROM (SELECT clock_timestamp() FROM (SELECT keysmith.rotate_kek('small')) s) - now()) * 1000 AS bench_once) x" >/dev/null
    psql -X -q -t -A -d postgres -c "INSERT INTO results SELECT 'rotate_kek, $ROWS rows (ms)', bench_once, 'ms' FROM (SELECT extract(epoch FROM (SELECT clock_timestamp() FROM (SELECT keysmith.rotate_kek('big')) s) - now()) * 1000 AS bench_once) x" >/dev/null
done

psql -X -q -v ON_ERROR_STOP=1 -v rows="$ROWS" -d postgres <<'SQL'
-- decrypt with 1 version in use vs 50 versions in use (same row count)
SELECT keysmith.create_key('one');
SELECT keysmith.create_key('fifty');
CREATE TABLE d1 AS SELECT i AS id, keysmith.encrypt_value('one', md5(i::text)) AS c FROM generate_series(1, :rows) i;
CREATE TABLE d50 (id int, c bytea);
SELECT set_config('bench.rows', :'rows', false);
DO $$
DECLARE chunk int := current_setting('bench.rows')::int / 50;
BEGIN
    FOR v IN 1..50 LOOP
        INSERT INTO d50 SELECT i, keysmith.encrypt_value('fifty', md5(i::text))
          FROM generate_series((v - 1) * chunk + 1, v * chunk) i;
        IF v < 50 THEN PERFORM keysmith.rotate_dek('fifty'); END IF;
    END LOOP;
END $$;
-- interleave versions row by row so the cache is exercised, not the memo
CREATE TABLE d50s AS SELECT * FROM d50 ORDER BY md5(id::text || 'x');
CREATE TABLE d1u AS SELECT * FROM d1;
CREATE TABLE d1s AS SELECT * FROM d1;
VACUUM ANALYZE d1; VACUUM ANALYZE d1u; VACUUM ANALYZE d50s; VACUUM ANALYZE d1s;
INSERT INTO results VALUES
  ('decrypt, 1 version (s)', bench('SELECT sum(octet_length(keysmith.decrypt_value(c))) FROM d1'), 's'),
  ('decrypt, 50 versions interleaved (s)', bench('SELECT sum(octet_length(keysmith.decrypt_value(c))) FROM d50s'), 's');

-- reencrypt throughput: everything in d1 is moved to version 2, which the
-- scheduled run below creates
SQL
# first the scheduled run, which gives key one its version 2 (rotate_dek)
# and moves d1s there; then the peer and the CALL move d1u and d1 to it.
# (Here the scheduled run measures 1.3-1.35x the CALL, first or last; the
# same comparison on a plain test cluster, 1,000,000 short values, gives
# 1.05-1.09x.  Why this table widens the gap is not known yet.)
psql -X -q -d postgres -c "SELECT keysmith.register_column('d1s', 'c', 'one')" >/dev/null
start=$(date +%s.%N)
psql -X -q -d postgres -c "SELECT keysmith.schedule_key_rotation('one', '1 day', true, NULL, now() - interval '1 day')" >/dev/null
until [ "$(psql -X -q -t -A -d postgres -c "SELECT last_done_at IS NOT NULL FROM keysmith.encrypted_columns WHERE tbl = 'd1s'::regclass")" = t ]; do
    sleep 0.1
done
end=$(date +%s.%N)
psql -X -q -d postgres -c "INSERT INTO results VALUES ('scheduled rotate_dek + re-encryption, end to end (s)', $end - $start, 's')"
# the peer first: one UPDATE over a copy of the same rows
start=$(date +%s.%N)
psql -X -q -d postgres -c "UPDATE d1u SET c = keysmith.rewrap_value(c)"
end=$(date +%s.%N)
psql -X -q -d postgres -c "INSERT INTO results VALUES ('UPDATE ... rewrap_value, one statement (s)', $end - $start, 's')"
start=$(date +%s.%N)
psql -X -q -d postgres -c "CALL keysmith.reencrypt('d1', 'c', 10000)"
end=$(date +%s.%N)
psql -X -q -d postgres -c "INSERT INTO results VALUES ('reencrypt throughput (rows/s)', $ROWS / ($end - $start), 'rows/s')"
psql -X -q -d postgres -c "INSERT INTO results VALUES ('reencrypt, batches of 10,000 (s)', $end - $start, 's')"
# the re-encryption alone, as both recorded it, from its first batch to done
psql -X -q -d postgres <<'SQL'
INSERT INTO results
SELECT CASE WHEN table_name = 'd1'::regclass THEN 'reencrypt by CALL, as recorded (s)'
            ELSE 'reencrypt by the schedule, as recorded (s)' END,
       extract(epoch FROM finished_at - started_at), 's'
  FROM keysmith.reencrypt_progress WHERE table_name IN ('d1'::regclass, 'd1s'::regclass);
SQL

psql -X -q -d postgres <<'SQL'
\echo
\echo keysmith lifecycle benchmark
SELECT what, round(avg(value)::numeric, 2) AS mean, round(min(value)::numeric, 2) AS best, count(*) AS runs
  FROM results GROUP BY what ORDER BY what;
SELECT 'rotate_kek big/small' AS ratio,
       round((SELECT avg(value) FROM results WHERE what LIKE 'rotate_kek, 1,000,%' OR (what LIKE 'rotate_kek,%' AND what NOT LIKE '%1,000 rows%'))::numeric
           / (SELECT avg(value) FROM results WHERE what = 'rotate_kek, 1,000 rows (ms)')::numeric, 3) AS value,
       'about 1' AS goal
UNION ALL
SELECT 'reencrypt / one UPDATE',
       round(((SELECT value FROM results WHERE what LIKE 'reencrypt, batches%') / (SELECT value FROM results WHERE what LIKE 'UPDATE ... rewrap_value%'))::numeric, 3),
       '<= 1.30'
UNION ALL
SELECT 'scheduled re-encryption / CALL reencrypt (as recorded)',
       round(((SELECT value FROM results WHERE what LIKE 'reencrypt by the schedule%') / (SELECT value FROM results WHERE what LIKE 'reencrypt by CALL%'))::numeric, 3),
       'about 1'
UNION ALL
SELECT 'scheduled end to end / CALL reencrypt',
       round(((SELECT value FROM results WHERE what LIKE 'scheduled%') / (SELECT value FROM results WHERE what LIKE 'reencrypt, batches%'))::numeric, 3),
       'none'
UNION ALL
SELECT 'decrypt 50 versions / 1 version',
       round(((SELECT value FROM results WHERE what LIKE 'decrypt, 50%') / (SELECT value FROM results WHERE what = 'decrypt, 1 version (s)'))::numeric, 3),
       '<= 1.10';
SELECT (SELECT string_agg(key_version::text, ',') FROM keysmith.key_version_usage('d1', 'c')) AS d1_versions_after_reencrypt,
       (SELECT string_agg(key_version::text || (CASE WHEN is_current THEN ' (current)' ELSE '' END), ',')
          FROM keysmith.key_version_usage('d1s', 'c')) AS d1s_versions_after_schedule;
SQL
