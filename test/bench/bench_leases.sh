#!/usr/bin/env bash
# test/bench/bench_leases.sh
#
# Leased roles, measured in one run on one throwaway cluster:
#  - issue rate: N keysmith.issue_role calls from one session, against N
#    plain CREATE ROLE ... LOGIN PASSWORD ... VALID UNTIL ... IN ROLE ...
#    statements from one session (each statement its own transaction, both
#    sent by psql from a file).  SCRAM hashing bounds both.
#    Goal: issue_role <= 1.25x the plain statement.
#  - mass expiry: N leases that expire at the same moment; the time until
#    the reaper has revoked them all, and the p99 lag past expiry.
#    Goal: all revoked within 10 s.
# Run as root (or with sudo) after `make install`: bash test/bench/bench_leases.sh [N]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" -eq 0 ] || exec sudo -E bash "$0" "$@"
. "$ROOT/test/lib.sh"
N=${1:-2000}
DIR=$(mktemp -d /tmp/keysmith-bench.XXXXXX)
trap 'ks_cluster_stop "$DIR/c" immediate; rm -rf "$DIR"' EXIT
chmod 755 "$DIR"
ks_cluster_init "$DIR/c"
echo "max_connections = 100" >>"$DIR/c/data/postgresql.conf"
ks_cluster_start "$DIR/c"
. "$DIR/c/env"

q <<'SQL'
CREATE EXTENSION keysmith;
CREATE ROLE bench_rw NOLOGIN;
SELECT keysmith.create_role_template('bench', ARRAY['bench_rw'], '1 hour', '24 hours');
SQL

# the two workloads as files of N statements
plain=$DIR/plain.sql
issue=$DIR/issue.sql
until=$(q -c "SELECT now() + interval '1 hour'")
for i in $(seq 1 "$N"); do
    pw=$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')
    echo "CREATE ROLE plain_$i LOGIN PASSWORD '$pw' VALID UNTIL '$until' IN ROLE bench_rw;"
done >"$plain"
for _ in $(seq 1 "$N"); do
    echo "SELECT * FROM keysmith.issue_role('bench', '1 hour');"
done >"$issue"
chmod 644 "$plain" "$issue"

run() { local t0 t1; t0=$(date +%s.%N); psql -X -q -o /dev/null -v ON_ERROR_STOP=1 -d postgres -f "$1"; t1=$(date +%s.%N)
        awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'; }
cleanup_roles() {
    q -c "DO \$\$ DECLARE r record; BEGIN FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 'plain\\_%' LOOP
          EXECUTE format('DROP ROLE %I', r.rolname); END LOOP; END \$\$" >/dev/null
}

echo "== issue rate, $N roles per run from one session (best of 2, alternating)"
best_plain=999999; best_issue=999999
for round in 1 2; do
    t=$(run "$plain"); echo "  plain CREATE ROLE, round $round: ${t} s"
    best_plain=$(awk -v a="$best_plain" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
    cleanup_roles
    t=$(run "$issue"); echo "  keysmith.issue_role, round $round: ${t} s"
    best_issue=$(awk -v a="$best_issue" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
    q -c "SELECT count(keysmith.revoke_lease(lease_id)) FROM keysmith.lease WHERE state <> 'revoked'" >/dev/null
done
awk -v p="$best_plain" -v i="$best_issue" -v n="$N" 'BEGIN {
    printf "  plain: %.2f ms/role   issue_role: %.2f ms/role   ratio issue_role/plain: %.2f (goal <= 1.25)\n",
           1000 * p / n, 1000 * i / n, i / p }'

echo "== mass expiry: $N leases with one expiry (reaper_naptime $(q -c 'SHOW keysmith.reaper_naptime'))"
q -c "SELECT count(*) FROM (SELECT keysmith.issue_role('bench', '20 seconds') FROM generate_series(1, $N)) x" >/dev/null
exp=$(q -c "SELECT extract(epoch FROM max(expires_at)) FROM keysmith.lease WHERE state = 'active'")
while awk -v e="$exp" -v n="$(date +%s.%N)" 'BEGIN { exit !(n < e) }'; do sleep 0.1; done
left=-1
for _ in $(seq 1 600); do
    left=$(q -c "SELECT count(*) FROM keysmith.lease WHERE state <> 'revoked'")
    [ "$left" = 0 ] && break
    sleep 0.1
done
# only leases whose role is really gone count; unfinished work is no figure
gone=$(q -c "SELECT count(*) FROM keysmith.lease l WHERE l.revoke_reason = 'expired' AND l.state = 'revoked'
               AND NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = l.role_oid)")
r=$(q -c "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'ks\\_bench\\_%'")
if [ "$left" != 0 ] || [ "$gone" != "$N" ] || [ "$r" != 0 ]; then
    echo "  FAILED: after 60 s, $left leases unrevoked, $gone of $N expired leases have their role gone, $r leased roles left"
    echo "  (no figure is printed for work that did not finish)"
    exit 1
fi
q -F ' ' -c "SELECT count(*), extract(epoch FROM max(l.revoked_at - l.expires_at)),
                    extract(epoch FROM percentile_cont(0.99) WITHIN GROUP (ORDER BY l.revoked_at - l.expires_at)),
                    extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY l.revoked_at - l.expires_at))
               FROM keysmith.lease l WHERE l.revoke_reason = 'expired'
                AND NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = l.role_oid)" |
  while read -r n all p99 p50; do
      printf "  %d leases revoked, each role gone; all within %.2f s of expiry (goal <= 10 s); p99 lag %.2f s, median %.2f s\n" "$n" "$all" "$p99" "$p50"
  done
