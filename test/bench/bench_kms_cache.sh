#!/usr/bin/env bash
# test/bench/bench_kms_cache.sh
#
# KMS calls made by fresh connections, with and without the shared DEK
# cache, measured in one run against test/kms/vault_server.py (a test
# server imitating Vault Transit over HTTPS; its header says so), which
# counts the decrypt calls it serves:
#  - N fresh connections (default 200), 10 at a time, each decrypting one
#    value under one key version;
#  - the same cluster restarted with keysmith.dek_cache_shared_size = 0
#    (each backend unwraps for itself, as before 0.8), then with the
#    default cache.
# Goal: 1 KMS call with the cache, against N without.  Also prints the
# wall time of both runs and their ratio.
# Run as root (or with sudo) after `make install`: bash test/bench/bench_kms_cache.sh [connections]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" -eq 0 ] || exec sudo -E bash "$0" "$@"
. "$ROOT/test/lib.sh"
. "$ROOT/test/kms/lib.sh"
N=${1:-200}
DIR=$(mktemp -d /tmp/keysmith-bench.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; ks_cluster_stop "$DIR/c" immediate; rm -rf "$DIR"' EXIT
chmod 755 "$DIR"
mkdir "$DIR/v"
kms_ca "$DIR/v"
kms_vault_tokens "$DIR/v" >/dev/null
P=$(ks_free_port)
kms_start "$DIR/v/server.log" vault_server.py "$P" good --tokens "$DIR/v/server.tokens"
kms_vault_key "$P" app

ks_cluster_init "$DIR/c"
ks_cluster_start "$DIR/c"
. "$DIR/c/env"
psql -X -q -v ON_ERROR_STOP=1 -d postgres >/dev/null <<SQL
CREATE EXTENSION keysmith;
SELECT keysmith.create_kms_provider('vault1', 'vault_transit',
  '{"url": "https://127.0.0.1:$P", "token_file": "$DIR/v/vault.token", "ca_file": "$DIR/v/ca-for-keysmith.pem"}');
SELECT keysmith.create_key('vk', 'vault1', 'app');
CREATE TABLE vt AS SELECT i AS id, keysmith.encrypt_value('vk', 'v' || i, i::text) AS c FROM generate_series(1, 100) i;
SQL

run() { # -> "calls seconds"
    local d0 d1 t0 t1 ok
    d0=$(kms_requests "$P" /v1/transit/decrypt/app)
    t0=$(date +%s%N)
    ok=$(seq 1 "$N" | xargs -P 10 -I{} psql -X -q -t -A -d postgres \
        -c "SELECT keysmith.decrypt_value(c, id::text) = 'v' || id FROM vt WHERE id = 1 + {} % 100" | grep -c '^t$')
    t1=$(date +%s%N)
    d1=$(kms_requests "$P" /v1/transit/decrypt/app)
    [ "$ok" = "$N" ] || { echo "only $ok of $N decrypted" >&2; exit 1; }
    echo "$((d1 - d0)) $(( (t1 - t0) / 1000000 ))"
}

echo "keysmith.dek_cache_shared_size = 0" >>"$DIR/c/data/postgresql.conf"
ks_cluster_stop "$DIR/c" fast; ks_cluster_start "$DIR/c"
read -r peer_calls peer_ms < <(run)
sed -i '/dek_cache_shared_size/d' "$DIR/c/data/postgresql.conf"
ks_cluster_stop "$DIR/c" fast; ks_cluster_start "$DIR/c"
read -r calls ms < <(run)

echo "$N fresh connections, each decrypting one value under one key version (Vault test server, 10 at a time):"
awk -v c="$calls" -v pc="$peer_calls" -v m="$ms" -v pm="$peer_ms" 'BEGIN {
    printf "  KMS calls: %d with the shared DEK cache, %d without (ratio %.3f; goal: 1 call)\n", c, pc, c / pc
    printf "  wall time: %d ms with, %d ms without (ratio %.2f)\n", m, pm, m / pm
}'
