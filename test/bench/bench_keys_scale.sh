#!/usr/bin/env bash
# test/bench/bench_keys_scale.sh
#
# The scale figures of issue 22 ("Done when"), on one throwaway cluster, in
# one run, each against the same work under one key where there is a peer:
#
#   - create_key: KEYS plain keys (default 100,000) in batches of BATCH per
#     transaction, as keys per second, overall and for the first and the
#     last batch (the peer of the last batch is the first: creating a key
#     must not slow down as keys accumulate);
#   - encrypt_value and decrypt_value over ROWS rows (default 1,000,000) of
#     32-byte text spread round robin over the KEYS keys, against the same
#     rows under one key: warm (one backend, best of RUNS passes after a
#     warm-up pass; goal: ratio <= 1.5) and cold (a fresh backend per pass,
#     best of RUNS, which loads every version again; goal: ratio <= 3);
#   - the first encryption under each of FRESH fresh key versions (default
#     10,000), in a fresh backend: one row per version, against the same
#     rows under one key, in microseconds per version (goal <= 50).  Also
#     the same rows again in another fresh backend, once the versions have
#     been used: the difference is what being first costs over a cold load.
#     Run 1 uses the versions create_key made, each later run those of a
#     rotate_dek of the FRESH keys (made untimed);
#   - the backend's memory (VmRSS, VmHWM, RssAnon of /proc/self/status)
#     after the warm passes over the KEYS keys, against the backend of the
#     warm passes under one key, and keysmith's shared memory
#     (pg_shmem_allocations).  The counter index's entries are shared
#     memory without a name there, so the bytes per counter slot are
#     measured by restarting the cluster, at the end, with the smallest
#     keysmith.counter_slots (64) and comparing.
#
#   - key families: CHILDREN members (default 100,000) of one family made
#     by create_keys in batches of BATCH, as keys per second, against
#     create_key of plain keys (goal >= 20,000 /s);
#   - KMS calls: CHILDREN members of a family under vault_transit (against
#     test/kms/vault_server.py, a test server imitating Vault's Transit API:
#     no Vault can be installed here), ROWS rows encrypted over them, then
#     the server restarted (empty shared DEK cache) and every row decrypted
#     in one backend: the Transit decrypt calls it took, against the family's
#     versions (goal: 1 per family version);
#   - administration at ADMIN_KEYS keys (default 1,000,000; members are
#     added by create_keys to reach it, after the timed work): count(*) of
#     the keys view, one key by name, a key's audit trail in key_event, and
#     pg_dump of the database (its keysmith tables hold every key), against
#     the same at the start of the run (one key).
#
# keysmith.dek_cache_size and keysmith.counter_slots are set as a DBA would
# for KEYS keys (docs/configuration.md): a cache of 2 x KEYS versions (room
# for a rotation in flight) and counter slots the next power of two at or
# above 2 x KEYS.  A rollover during the run (an evicted counter, say)
# would flush every backend's DEK cache and spoil the warm figures: the run
# counts them in key_event and fails if there was any.
#
# Parallel query is off (one core); nothing is asserted about time.
#
# Run as root (or with sudo) after `make install`:
#   bash test/bench/bench_keys_scale.sh [rows [keys]]   (FRESH=10000 RUNS=3 BATCH=10000 CHILDREN=100000)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" -eq 0 ] || exec sudo -E bash "$0" "$@"
. "$ROOT/test/lib.sh"
ROWS=${1:-1000000}
KEYS=${2:-100000}
FRESH=${FRESH:-10000}
RUNS=${RUNS:-3}
BATCH=${BATCH:-10000}
CHILDREN=${CHILDREN:-100000}
ADMIN_KEYS=${ADMIN_KEYS:-1000000}
DEK_CACHE=${DEK_CACHE:-$((2 * KEYS))}
slots=64
while [ "$slots" -lt $((2 * (KEYS + 2 * CHILDREN))) ]; do slots=$((slots * 2)); done
COUNTER_SLOTS=${COUNTER_SLOTS:-$slots}
[ "$ROWS" -ge "$KEYS" ] || { echo "rows ($ROWS) must be at least keys ($KEYS)" >&2; exit 2; }
[ "$ROWS" -ge "$FRESH" ] || { echo "rows ($ROWS) must be at least FRESH ($FRESH)" >&2; exit 2; }
# every version the run makes must keep its counter: KEYS, FRESH per run,
# 'one', and the members of two families with theirs
if [ $((KEYS + RUNS * FRESH + 1 + 2 * CHILDREN + 2)) -gt "$COUNTER_SLOTS" ]; then
    echo "COUNTER_SLOTS ($COUNTER_SLOTS) is below the $((KEYS + RUNS * FRESH + 1 + 2 * CHILDREN + 2)) versions this run makes" >&2
    exit 2
fi
DIR=$(mktemp -d /tmp/keysmith-bench.XXXXXX)
pids=()
trap 'ks_cluster_stop "$DIR/c" immediate; for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null; done; rm -rf "$DIR"' EXIT
chmod 755 "$DIR"
ks_cluster_init "$DIR/c"
{
    echo "shared_buffers = '512MB'"
    echo "max_parallel_workers_per_gather = 0"
    echo "jit = off"
    echo "keysmith.dek_cache_size = $DEK_CACHE"
    echo "keysmith.counter_slots = $COUNTER_SLOTS"
} >>"$DIR/c/data/postgresql.conf"
ks_cluster_start "$DIR/c"
. "$DIR/c/env"

# psql in a fresh backend
P() { psql -X -q -At -v ON_ERROR_STOP=1 -d postgres "$@"; }

P -v rows="$ROWS" -v keys="$KEYS" -v fresh="$FRESH" <<'SQL'
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('one') \gset
CREATE TABLE r (what text PRIMARY KEY, seconds float8);
CREATE TABLE batches (what text, first int, n int, seconds float8);
CREATE TABLE mem (backend text, field text, bytes bigint, PRIMARY KEY (backend, field));
CREATE FUNCTION now_s() RETURNS float8 LANGUAGE sql AS $$ SELECT extract(epoch FROM clock_timestamp())::float8 $$;
-- one execution of q, in seconds
CREATE FUNCTION once(q text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t0 float8 := now_s();
BEGIN
    EXECUTE q;
    RETURN now_s() - t0;
END $$;
-- best of n executions after a warm-up
CREATE FUNCTION warm(q text, n int) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE best float8 := 'infinity';
BEGIN
    PERFORM once(q);
    FOR i IN 1..n LOOP
        best := least(best, once(q));
    END LOOP;
    RETURN best;
END $$;
-- median of 5 executions (ms), for the administration figures
CREATE FUNCTION admin_ms(q text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t float8[] := '{}';
BEGIN
    FOR i IN 1..5 LOOP
        t := t || once(q) * 1000;
    END LOOP;
    RETURN (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM unnest(t) x);
END $$;
CREATE TABLE adm (at text, what text, ms float8, PRIMARY KEY (at, what));
CREATE PROCEDURE admin_figures(at text) LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO adm VALUES
      (at, 'count(*) of keysmith.keys', admin_ms('SELECT count(*) FROM keysmith.keys')),
      (at, 'one key of keysmith.keys by name', admin_ms('SELECT * FROM keysmith.keys WHERE name = ''one''')),
      (at, 'key_event of one key', admin_ms('SELECT * FROM keysmith.key_event WHERE key_name = ''one''')),
      (at, 'key_versions of one key', admin_ms('SELECT * FROM keysmith.key_versions WHERE key_name = ''one'''));
END $$;
CALL admin_figures('start');
-- a field of this backend's /proc/self/status, in bytes
CREATE FUNCTION proc_status(field text) RETURNS bigint LANGUAGE sql AS $$
    SELECT (regexp_match(pg_read_file('/proc/self/status'), field || ':\s+(\d+) kB'))[1]::bigint * 1024 $$;
-- create_keys under family fam for prefix || 0 .. prefix || total - 1, a transaction per batch
CREATE PROCEDURE make_members(fam text, prefix text, total int, batch int) LANGUAGE plpgsql AS $$
DECLARE t0 float8; b int := 0;
BEGIN
    WHILE b < total LOOP
        t0 := now_s();
        PERFORM keysmith.create_keys(fam, array(SELECT prefix || i FROM generate_series(b, least(b + batch, total) - 1) i));
        INSERT INTO batches VALUES (prefix, b, least(batch, total - b), now_s() - t0);
        COMMIT;
        b := b + batch;
    END LOOP;
END $$;
-- create_key for prefix || 0 .. prefix || total - 1, a transaction per batch
CREATE PROCEDURE make_keys(prefix text, total int, batch int) LANGUAGE plpgsql AS $$
DECLARE t0 float8; b int := 0;
BEGIN
    WHILE b < total LOOP
        t0 := now_s();
        PERFORM keysmith.create_key(prefix || i) FROM generate_series(b, least(b + batch, total) - 1) i;
        INSERT INTO batches VALUES (prefix, b, least(batch, total - b), now_s() - t0);
        COMMIT;
        b := b + batch;
    END LOOP;
END $$;
SQL

P -v keys="$KEYS" -v batch="$BATCH" -v fresh="$FRESH" -v children="$CHILDREN" <<'SQL'
CALL make_keys('k', :keys, :batch);
CALL make_keys('f', :fresh, :batch);
SELECT keysmith.create_key_family('fam');
CALL make_members('fam', 'c', :children, :batch);
SQL

P -v rows="$ROWS" -v keys="$KEYS" -v fresh="$FRESH" <<'SQL'
CREATE TABLE t AS
SELECT id, v, kn, keysmith.encrypt_value('one', v) AS ks_one, keysmith.encrypt_value(kn, v) AS ks_many
  FROM (SELECT i AS id, substr(md5(i::text), 1, 32) AS v, 'k' || (i % :keys) AS kn
          FROM generate_series(1, :rows) i) s;
CREATE TABLE tf AS
SELECT i AS id, substr(md5(i::text), 1, 32) AS v, 'f' || (i - 1) AS kn FROM generate_series(1, :fresh) i;
VACUUM ANALYZE t;
VACUUM ANALYZE tf;
CREATE TABLE q (what text PRIMARY KEY, sql text);
INSERT INTO q VALUES
 ('encrypt, one key',   'SELECT sum(octet_length(keysmith.encrypt_value(''one'', v))) FROM t'),
 ('encrypt, many keys', 'SELECT sum(octet_length(keysmith.encrypt_value(kn, v))) FROM t'),
 ('decrypt, one key',   'SELECT sum(octet_length(keysmith.decrypt_value(ks_one))) FROM t'),
 ('decrypt, many keys', 'SELECT sum(octet_length(keysmith.decrypt_value(ks_many))) FROM t'),
 ('fresh versions',     'SELECT sum(octet_length(keysmith.encrypt_value(kn, v))) FROM tf'),
 ('fresh rows, one key', 'SELECT sum(octet_length(keysmith.encrypt_value(''one'', v))) FROM tf');
SQL

# warm BACKEND WHAT...: best of RUNS after a warm-up, all in one backend,
# then that backend's memory
warm() {
    local backend=$1 w
    shift
    {
        for w in "$@"; do
            printf "INSERT INTO r SELECT 'warm: ' || what, warm(sql, %d) FROM q WHERE what = '%s';\n" "$RUNS" "$w"
        done
        printf "INSERT INTO mem SELECT '%s', f, proc_status(f) FROM unnest(ARRAY['VmRSS', 'VmHWM', 'RssAnon', 'RssShmem']) f;\n" "$backend"
    } | P
}
# lesser A B: the smaller of two times, B empty for none yet
lesser() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a < b) ? a : b }'; }
# once WHAT: one execution in a fresh backend (seconds)
once() { P -v w="$1" <<<"SELECT once(sql) FROM q WHERE what = :'w'"; }
# best WHAT: best of RUNS, each in a fresh backend (seconds)
best() {
    local b='' _
    for _ in $(seq 1 "$RUNS"); do
        b=$(lesser "$(once "$1")" "$b")
    done
    echo "$b"
}
record() { P -v w="$1" -v s="$2" <<<"INSERT INTO r VALUES (:'w', :s)"; }

warm 'one key' 'encrypt, one key' 'decrypt, one key'
warm 'many keys' 'encrypt, many keys' 'decrypt, many keys'
for w in 'encrypt, one key' 'encrypt, many keys' 'decrypt, one key' 'decrypt, many keys'; do
    record "cold: $w" "$(best "$w")"
done

# the first encryption under FRESH versions no backend has used, then the
# same rows under those versions once used (cold), then under one key
first='' used='' one=''
for run in $(seq 1 "$RUNS"); do
    if [ "$run" -gt 1 ]; then
        P <<<"SELECT count(keysmith.rotate_dek(kn)) FROM tf" >/dev/null
    fi
    first=$(lesser "$(once 'fresh versions')" "$first")
    used=$(lesser "$(once 'fresh versions')" "$used")
    one=$(lesser "$(once 'fresh rows, one key')" "$one")
done
record 'first: fresh versions' "$first"
record 'first: the same versions, used' "$used"
record 'first: one key' "$one"

# the work was done: every key was used, values decrypt, the fresh keys
# are at version RUNS with two encryptions each, and nothing rolled over
bad=$(P -v rows="$ROWS" -v keys="$KEYS" -v fresh="$FRESH" -v runs="$RUNS" <<'SQL'
SELECT concat_ws('; ',
    CASE WHEN (SELECT count(DISTINCT kn) FROM t) <> :keys THEN 'not every key has rows' END,
    CASE WHEN (SELECT count(*) FROM t WHERE id % 997 = 0 AND
                      (keysmith.decrypt_value(ks_many) IS DISTINCT FROM v OR
                       keysmith.decrypt_value(ks_one) IS DISTINCT FROM v)) <> 0
         THEN 'values do not decrypt' END,
    CASE WHEN (SELECT count(*) FROM keysmith.keys
                WHERE name LIKE 'f%' AND current_version = :runs AND current_version_encryptions = 2) <> :fresh
         THEN 'the fresh keys were not each encrypted under twice at version ' || :runs END,
    (SELECT count(*) || ' rollovers in key_event (a counter evicted?): the warm figures include reloads'
       FROM keysmith.key_event WHERE event = 'rollover' HAVING count(*) > 0))
SQL
)

# KMS calls: a family under vault_transit, decrypted from a fresh server
V=$DIR/vault
mkdir -p "$V"
. "$ROOT/test/kms/lib.sh"
kms_ca "$V"
kms_vault_tokens "$V" >/dev/null
VP=$(ks_free_port)
kms_start "$V/server.log" vault_server.py "$VP" good --tokens "$V/server.tokens"
kms_vault_key "$VP" fam
P -v children="$CHILDREN" -v batch="$BATCH" -v rows="$ROWS" \
  -v opts="{\"url\": \"https://127.0.0.1:$VP\", \"token_file\": \"$V/vault.token\", \"ca_file\": \"$V/ca-for-keysmith.pem\"}" <<'SQL'
SELECT keysmith.create_kms_provider('vault1', 'vault_transit', :'opts');
SELECT keysmith.create_key_family('vfam', 'vault1', 'fam');
CALL make_members('vfam', 'v', :children, :batch);
CREATE TABLE tv AS
SELECT i AS id, substr(md5(i::text), 1, 32) AS v, keysmith.encrypt_value('v' || (i % :children), substr(md5(i::text), 1, 32)) AS c
  FROM generate_series(1, :rows) i;
SQL
ks_cluster_stop "$DIR/c"
ks_cluster_start "$DIR/c"
kms_before=$(kms_requests "$VP" /v1/transit/decrypt/fam)
vrows=$(P <<<"SELECT count(*) FROM tv WHERE keysmith.decrypt_value(c) = v")
kms_after=$(kms_requests "$VP" /v1/transit/decrypt/fam)
P -v calls="$((kms_after - kms_before))" -v vrows="$vrows" <<'SQL'
CREATE TABLE kmscalls AS
SELECT :calls::int AS calls, :vrows::bigint AS decrypted,
       (SELECT count(*) FROM keysmith.key_versions WHERE key_name = 'vfam' AND state <> 'destroyed') AS family_versions;
SQL
[ "$vrows" = "$ROWS" ] || bad="${bad:+$bad; }only $vrows of $ROWS rows under the Vault family decrypt"

# administration at ADMIN_KEYS keys: members added untimed to reach it
dump_s() { # seconds of a pg_dump -Fc of the database; its size in $DIR/dump.size
    local t0 t1
    t0=$(date +%s.%N)
    ks_as_pg "$PG_BIN/pg_dump" -h "$PGHOST" -p "$PGPORT" -Fc -f "$DIR/c/bench.dump" postgres 2>/dev/null
    t1=$(date +%s.%N)
    stat -c %s "$DIR/c/bench.dump" >"$DIR/dump.size"
    rm -f "$DIR/c/bench.dump"
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
have=$(P <<<"SELECT count(*) FROM keysmith.key")
if [ "$ADMIN_KEYS" -gt "$have" ]; then
    P -v more="$((ADMIN_KEYS - have))" <<<"SELECT keysmith.create_key_family('adm'); CALL make_members('adm', 'a', :more, 50000);" >/dev/null
fi
P <<<"VACUUM ANALYZE keysmith.key; VACUUM ANALYZE keysmith.key_version; VACUUM ANALYZE keysmith.key_event; CALL admin_figures('many');"
dump_secs=$(dump_s)
P -v s="$dump_secs" -v b="$(cat "$DIR/dump.size")" <<<"INSERT INTO adm VALUES ('many', 'pg_dump -Fc of the database', :s * 1000), ('many', 'dump size (bytes)', :b)"

# shared memory at KEYS hot keys, then per counter slot: the same server
# restarted with 64 slots
P <<'SQL'
CREATE TABLE shm AS
SELECT 'hot' AS at, coalesce(name, '<free>') AS name, allocated_size FROM pg_shmem_allocations
 WHERE name LIKE 'keysmith%' OR name = '<anonymous>';
SQL
ks_cluster_stop "$DIR/c"
sed -i "s/^keysmith.counter_slots = .*/keysmith.counter_slots = 64/" "$DIR/c/data/postgresql.conf"
ks_cluster_start "$DIR/c"
P <<'SQL'
INSERT INTO shm
SELECT 'small', name, allocated_size FROM pg_shmem_allocations
 WHERE name LIKE 'keysmith%' OR name = '<anonymous>';
SQL

P -v rows="$ROWS" -v keys="$KEYS" -v fresh="$FRESH" -v runs="$RUNS" -v batch="$BATCH" \
  -v cache="$DEK_CACHE" -v slots="$COUNTER_SLOTS" -v children="$CHILDREN" <<'SQL'
\echo
\echo keysmith scale benchmark: :rows rows of 32-byte text round robin over :keys keys, one core (best of :runs)
\echo settings as for :keys keys: keysmith.dek_cache_size = :cache, keysmith.counter_slots = :slots; dek_cache_ttl default (300 s), shared_buffers 512MB
\echo
\pset format aligned
\pset tuples_only off
CREATE FUNCTION pg_temp.sec(w text) RETURNS float8 LANGUAGE sql AS $$ SELECT seconds FROM r WHERE what = w $$;
CREATE FUNCTION pg_temp.mem(b text, f text) RETURNS bigint LANGUAGE sql AS $$ SELECT bytes FROM mem WHERE backend = b AND field = f $$;
CREATE FUNCTION pg_temp.shm(a text, n text) RETURNS bigint LANGUAGE sql AS $$ SELECT sum(allocated_size)::bigint FROM shm WHERE at = a AND name LIKE n $$;
CREATE FUNCTION pg_temp.mb(b bigint) RETURNS text LANGUAGE sql AS $$ SELECT round(b / 1048576.0, 1) || ' MB' $$;
WITH c AS (
    SELECT sum(n) AS n, sum(seconds) AS s,
           (array_agg(n / seconds ORDER BY first))[1] AS first_rate,
           (array_agg(n / seconds ORDER BY first DESC))[1] AS last_rate
      FROM batches WHERE what = 'k'
), ratio(n, what, many, one, goal) AS (VALUES
    (2, 'warm encrypt, ' || :rows || ' rows over ' || :keys || ' keys', pg_temp.sec('warm: encrypt, many keys'), pg_temp.sec('warm: encrypt, one key'), '<= 1.5'),
    (3, 'warm decrypt, ' || :rows || ' rows over ' || :keys || ' keys', pg_temp.sec('warm: decrypt, many keys'), pg_temp.sec('warm: decrypt, one key'), '<= 1.5'),
    (4, 'cold encrypt (fresh backend), ' || :rows || ' rows over ' || :keys || ' keys', pg_temp.sec('cold: encrypt, many keys'), pg_temp.sec('cold: encrypt, one key'), '<= 3'),
    (5, 'cold decrypt (fresh backend), ' || :rows || ' rows over ' || :keys || ' keys', pg_temp.sec('cold: decrypt, many keys'), pg_temp.sec('cold: decrypt, one key'), '<= 3')
), fig(n, figure, value, peer, ratio, goal) AS (
    SELECT 1, 'create_key, ' || n || ' plain keys (' || :batch || ' a transaction)',
           round(n / s) || ' /s (' || round(s::numeric, 1) || ' s)',
           'first ' || :batch || ': ' || round(first_rate) || ' /s, last: ' || round(last_rate) || ' /s',
           round((first_rate / last_rate)::numeric, 2)::text, ''
      FROM c
    UNION ALL
    SELECT n, what, round(many::numeric, 3) || ' s', round(one::numeric, 3) || ' s', round((many / one)::numeric, 2)::text, goal FROM ratio
    UNION ALL
    SELECT 6, 'first encryption under each of ' || :fresh || ' fresh versions (fresh backend)',
           round(((pg_temp.sec('first: fresh versions') - pg_temp.sec('first: one key')) / :fresh * 1e6)::numeric, 1) || ' us each',
           round(pg_temp.sec('first: fresh versions')::numeric, 3) || ' s against ' || round(pg_temp.sec('first: one key')::numeric, 3) || ' s under one key',
           '', '<= 50 us'
    UNION ALL
    SELECT 7, 'the same versions once used (cold load only)',
           round(((pg_temp.sec('first: the same versions, used') - pg_temp.sec('first: one key')) / :fresh * 1e6)::numeric, 1) || ' us each',
           'being first costs ' || round(((pg_temp.sec('first: fresh versions') - pg_temp.sec('first: the same versions, used')) / :fresh * 1e6)::numeric, 1) || ' us more',
           '', ''
    UNION ALL
    SELECT 8 + o / 10.0, 'backend at ' || :keys || ' hot keys (warm passes): ' || f,
           pg_temp.mb(pg_temp.mem('many keys', f)), pg_temp.mb(pg_temp.mem('one key', f)) || ' under one key',
           CASE WHEN f = 'RssAnon' THEN round((pg_temp.mem('many keys', f) - pg_temp.mem('one key', f))::numeric / :keys) || ' B per hot key' ELSE '' END, ''
      FROM unnest(ARRAY['VmRSS', 'VmHWM', 'RssAnon', 'RssShmem']) WITH ORDINALITY AS u(f, o)
    UNION ALL
    SELECT 9, 'shared: ' || name, round(allocated_size / 1024.0) || ' kB', '', '', ''
      FROM shm WHERE at = 'hot' AND name LIKE 'keysmith%'
    UNION ALL
    SELECT 10, 'shared: keysmith counters + counter index (named and unnamed), per slot',
           round(((pg_temp.shm('hot', 'keysmith count%') + pg_temp.shm('hot', '<anonymous>'))
                - (pg_temp.shm('small', 'keysmith count%') + pg_temp.shm('small', '<anonymous>')))::numeric
                 / (:slots - 64), 1) || ' B',
           'restarted with 64 slots: ' || (pg_temp.shm('hot', '<anonymous>') - pg_temp.shm('small', '<anonymous>')) || ' B less unnamed',
           '', ''
    UNION ALL
    SELECT 11, 'shared: all of keysmith''s at ' || :slots || ' slots',
           pg_temp.mb(pg_temp.shm('hot', 'keysmith%') + pg_temp.shm('hot', '<anonymous>') - pg_temp.shm('small', '<anonymous>')),
           'whatever the number of keys', '', ''
    UNION ALL
    SELECT 12, 'create_keys, ' || n || ' members of one family (' || :batch || ' a call and transaction)',
           round(n / s) || ' /s (' || round(s::numeric, 1) || ' s)',
           'create_key of plain keys: ' || (SELECT round(sum(n) / sum(seconds)) FROM batches WHERE what = 'k') || ' /s',
           round(((SELECT sum(n) / sum(seconds) FROM batches WHERE what = 'c') / (SELECT sum(n) / sum(seconds) FROM batches WHERE what = 'k'))::numeric, 1)::text,
           '>= 20,000 /s'
      FROM (SELECT sum(n) AS n, sum(seconds) AS s FROM batches WHERE what = 'c') c
    UNION ALL
    SELECT 14 + row_number() OVER (ORDER BY a.what) / 100.0,
           'at ' || (SELECT count(*) FROM keysmith.key) || ' keys: ' || a.what,
           CASE WHEN a.what LIKE 'dump size%' THEN pg_temp.mb(a.ms::bigint) ELSE round(a.ms::numeric, 2) || ' ms' END,
           CASE WHEN s.ms IS NULL THEN '' ELSE round(s.ms::numeric, 2) || ' ms at the start (one key)' END, '', 'fast'
      FROM adm a LEFT JOIN adm s ON s.at = 'start' AND s.what = a.what WHERE a.at = 'many'
    UNION ALL
    SELECT 13, 'KMS decrypt calls for ' || decrypted || ' rows over ' || :children || ' members of a Vault-backed family, fresh server',
           calls || ' call(s)', family_versions || ' family version(s)', round(calls::numeric / family_versions, 2)::text || ' per version', '1 per family version'
      FROM kmscalls
)
SELECT figure, value, peer, ratio, goal FROM fig ORDER BY n, figure;
\echo ratio: time under many keys to time under one key; for create_key, time of the last batch to time of the first
\echo RssAnon is the private memory of the backend (where its DEK cache lives); VmRSS also counts the shared buffers it touched (RssShmem)
SQL

if [ -n "$bad" ]; then
    echo "work not done as planned: $bad" >&2
    exit 1
fi
