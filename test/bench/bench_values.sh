#!/usr/bin/env bash
# test/bench/bench_values.sh
#
# Throughput of keysmith.encrypt_value / decrypt_value against pgcrypto,
# measured in one run on one throwaway cluster, single core (no parallel
# query).  1,000,000 rows of 32-byte text.  Prints each time and the
# keysmith/pgcrypto ratios.  Goal (issue 3): both ratios against pgcrypto's
# raw AES at most 0.5.
#
# Run as root (or with sudo) after `make install`: bash test/bench/bench_values.sh [rows]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" -eq 0 ] || exec sudo -E bash "$0" "$@"
. "$ROOT/test/lib.sh"
ROWS=${1:-1000000}
PGP_ROWS=${PGP_ROWS:-20000}
DIR=$(mktemp -d /tmp/keysmith-bench.XXXXXX)
trap 'ks_cluster_stop "$DIR/c" immediate; rm -rf "$DIR"' EXIT
chmod 755 "$DIR"
ks_cluster_init "$DIR/c"
echo "shared_buffers = '512MB'" >>"$DIR/c/data/postgresql.conf"
echo "max_parallel_workers_per_gather = 0" >>"$DIR/c/data/postgresql.conf"
echo "jit = off" >>"$DIR/c/data/postgresql.conf"
ks_cluster_start "$DIR/c"
. "$DIR/c/env"

psql -X -q -v ON_ERROR_STOP=1 -v rows="$ROWS" -v pgp_rows="$PGP_ROWS" -d postgres <<'SQL'
CREATE EXTENSION keysmith;
CREATE EXTENSION pgcrypto;
SELECT keysmith.create_key('bench');
CREATE TABLE k AS SELECT gen_random_bytes(32) AS key;
CREATE TABLE t AS
SELECT i AS id, substr(md5(i::text), 1, 32) AS v
  FROM generate_series(1, :rows) i;
ALTER TABLE t ADD COLUMN ks bytea, ADD COLUMN raw bytea, ADD COLUMN pgp bytea;
UPDATE t SET ks = keysmith.encrypt_value('bench', v),
             raw = encrypt(convert_to(v, 'UTF8'), (SELECT key FROM k), 'aes');
UPDATE t SET pgp = pgp_sym_encrypt(v, 'bench passphrase') WHERE id <= :pgp_rows;
VACUUM ANALYZE t;

-- best of three runs of a query, in seconds
CREATE FUNCTION bench(q text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
    best float8 := 'infinity';
    t0 timestamptz;
BEGIN
    EXECUTE q;                      -- warm-up: caches, DEK unwrap
    FOR i IN 1..3 LOOP
        t0 := clock_timestamp();
        EXECUTE q;
        best := least(best, extract(epoch FROM clock_timestamp() - t0));
    END LOOP;
    RETURN best;
END $$;

CREATE TEMP TABLE r (what text, seconds float8);
INSERT INTO r VALUES
 ('read column',                 bench('SELECT sum(octet_length(v)) FROM t')),
 ('keysmith decrypt_value',      bench('SELECT sum(octet_length(keysmith.decrypt_value(ks))) FROM t')),
 ('pgcrypto decrypt aes-256',    bench('SELECT sum(octet_length(decrypt(raw, (SELECT key FROM k), ''aes''))) FROM t')),
 ('pgcrypto pgp_sym_decrypt',    bench(format('SELECT sum(octet_length(pgp_sym_decrypt(pgp, ''bench passphrase''))) FROM t WHERE id <= %s', :pgp_rows))
                                   * (:rows::float8 / :pgp_rows)),
 ('keysmith encrypt_value',      bench('SELECT sum(octet_length(keysmith.encrypt_value(''bench'', v))) FROM t')),
 ('pgcrypto encrypt aes-256',    bench('SELECT sum(octet_length(encrypt(convert_to(v, ''UTF8''), (SELECT key FROM k), ''aes''))) FROM t')),
 ('pgcrypto pgp_sym_encrypt',    bench(format('SELECT sum(octet_length(pgp_sym_encrypt(v, ''bench passphrase''))) FROM t WHERE id <= %s', :pgp_rows))
                                   * (:rows::float8 / :pgp_rows));

\echo
\echo keysmith value benchmark, :rows rows of 32-byte text, one core
\echo (pgp_sym_* timed on :pgp_rows rows and scaled to :rows)
SELECT what, round(seconds::numeric, 3) AS seconds FROM r;
SELECT 'decrypt_value / pgcrypto decrypt' AS ratio,
       round(((SELECT seconds FROM r WHERE what = 'keysmith decrypt_value') /
              (SELECT seconds FROM r WHERE what = 'pgcrypto decrypt aes-256'))::numeric, 3) AS value,
       '<= 0.5' AS goal
UNION ALL
SELECT 'encrypt_value / pgcrypto encrypt',
       round(((SELECT seconds FROM r WHERE what = 'keysmith encrypt_value') /
              (SELECT seconds FROM r WHERE what = 'pgcrypto encrypt aes-256'))::numeric, 3), '<= 0.5'
UNION ALL
SELECT 'decrypt_value / pgp_sym_decrypt',
       round(((SELECT seconds FROM r WHERE what = 'keysmith decrypt_value') /
              (SELECT seconds FROM r WHERE what = 'pgcrypto pgp_sym_decrypt'))::numeric, 4), ''
UNION ALL
SELECT 'encrypt_value / pgp_sym_encrypt',
       round(((SELECT seconds FROM r WHERE what = 'keysmith encrypt_value') /
              (SELECT seconds FROM r WHERE what = 'pgcrypto pgp_sym_encrypt'))::numeric, 4), '';
SQL
