#!/usr/bin/env bash
# test/bench/bench_rotation.sh
#
# Credential rotation, measured in one run on one throwaway cluster:
#  - throughput: N postgres_role secrets rotated end to end by the rotation
#    worker (create, set, the real test login over TCP, finish), all
#    requested in one transaction; against the same work done by hand in
#    one session, N x (ALTER ROLE ... PASSWORD + one login that used the
#    password), by test/bench/rotation_peer.c.  Best of 2, alternating.
#    Goal: keysmith / by hand <= 1.5.
#  - latency: the time from rotate_secret's commit to finish, median and
#    p99, for single rotations requested one after another and for the
#    batch, with keysmith.rotation_naptime at its default.
# Run as root (or with sudo) after `make install`: bash test/bench/bench_rotation.sh [N]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" -eq 0 ] || exec sudo -E bash "$0" "$@"
. "$ROOT/test/lib.sh"
N=${1:-500}
DIR=$(mktemp -d /tmp/keysmith-bench.XXXXXX)
trap 'ks_cluster_stop "$DIR/c" immediate; rm -rf "$DIR"' EXIT
chmod 755 "$DIR"
gcc -O2 -o "$DIR/rotation_peer" "$ROOT/test/bench/rotation_peer.c" -I"$(pg_config --includedir)" -lpq
ks_cluster_init "$DIR/c"
echo "max_connections = 100" >>"$DIR/c/data/postgresql.conf"
ks_cluster_start "$DIR/c"
. "$DIR/c/env"

q <<SQL >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('bench');
DO \$\$ BEGIN FOR i IN 1..$N LOOP
  EXECUTE format('CREATE ROLE bench_r%s LOGIN', i);
  EXECUTE format('CREATE ROLE bench_p%s LOGIN', i);
  PERFORM keysmith.create_secret('bench/' || i, 'bench', 'postgres_role', jsonb_build_object('role', 'bench_r' || i));
END LOOP; END \$\$;
SQL
echo "== $N rotations end to end (rotation_naptime $(q -c 'SHOW keysmith.rotation_naptime'))"

rotate_all() {   # prints seconds from the request's commit until all finished
    local t0 t1 left
    t0=$(date +%s.%N)
    # one session requests and then waits, polling from the server: a psql
    # started every few ms would take CPU from the worker and skew the figure
    q -c "SELECT count(keysmith.rotate_secret('bench/' || i)) FROM generate_series(1, $N) i" \
      -c "DO \$\$ BEGIN FOR i IN 1..30000 LOOP
            EXIT WHEN NOT EXISTS (SELECT 1 FROM keysmith.rotation WHERE state IN ('create', 'set', 'test', 'finish'));
            PERFORM pg_sleep(0.01); END LOOP; END \$\$" >/dev/null
    t1=$(date +%s.%N)
    left=$(q -c "SELECT count(*) FROM keysmith.rotation WHERE state IN ('create', 'set', 'test', 'finish')")
    bad=$(q -c "SELECT count(*) FROM keysmith.rotation WHERE state <> 'finished'")
    [ "$left" = 0 ] && [ "$bad" = 0 ] || { echo "  unfinished: $left in flight, $bad not finished" >&2; exit 1; }
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
best_ks=999999; best_hand=999999
for round in 1 2; do
    t=$("$DIR/rotation_peer" "host=$PGHOST port=$PGPORT dbname=postgres user=postgres" \
                             "host=127.0.0.1 port=$PGPORT dbname=postgres" bench_p "$N")
    echo "  by hand (ALTER ROLE PASSWORD + login), round $round: ${t} s"
    best_hand=$(awk -v a="$best_hand" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
    t=$(rotate_all)
    echo "  keysmith rotate_secret, round $round: ${t} s"
    best_ks=$(awk -v a="$best_ks" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
done
awk -v k="$best_ks" -v h="$best_hand" -v n="$N" 'BEGIN {
    printf "  keysmith: %.1f rotations/s (%.2f ms each)   by hand: %.1f/s (%.2f ms each)   ratio keysmith/by hand: %.2f (goal <= 1.5)\n",
           n / k, 1000 * k / n, n / h, 1000 * h / n, k / h }'
q -c "SELECT '  batch latency, rotate_secret to finish: median ' ||
             round(1000 * extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY finished_at - started_at)))::text ||
             ' ms, p99 ' ||
             round(1000 * extract(epoch FROM percentile_cont(0.99) WITHIN GROUP (ORDER BY finished_at - started_at)))::text || ' ms'
        FROM keysmith.rotation WHERE started_at > now() - interval '10 minutes'
         AND started_at = (SELECT max(started_at) FROM keysmith.rotation)"

echo "== latency of single rotations, one after another (100)"
q -c "TRUNCATE keysmith.rotation CASCADE" >/dev/null
q -c "DO \$\$ DECLARE t uuid; BEGIN FOR i IN 1..100 LOOP
        t := keysmith.rotate_secret('bench/' || i);
        COMMIT;
        FOR j IN 1..5000 LOOP
            EXIT WHEN (SELECT state FROM keysmith.rotation WHERE token = t) = 'finished';
            PERFORM pg_sleep(0.001);
        END LOOP;
      END LOOP; END \$\$" >/dev/null
q -c "SELECT '  rotate_secret to finish: median ' ||
             round(1000 * extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY finished_at - started_at)))::text ||
             ' ms, p99 ' ||
             round(1000 * extract(epoch FROM percentile_cont(0.99) WITHIN GROUP (ORDER BY finished_at - started_at)))::text ||
             ' ms (' || count(*) FILTER (WHERE state = 'finished') || ' of ' || count(*) || ' finished)'
        FROM keysmith.rotation"
