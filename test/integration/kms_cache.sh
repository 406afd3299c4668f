#!/usr/bin/env bash
# test/integration/kms_cache.sh
#
# The shared DEK cache (extension/keys/dek_shared.c), counted on the KMS's side:
# test/kms/vault_server.py (a test server imitating Vault Transit; its
# header says so) counts the decrypt calls.
#  - 200 fresh connections decrypting under one key version: one KMS call;
#  - 20 connections arriving while the first unwrap hangs: still one call,
#    the others wait for it; a query cancel stops a waiting backend;
#  - the cache's pages are kept out of core dumps;
#  - rotate_dek, destroy and flush_shared_dek_cache wipe the key's entries;
#  - the KMS down: a DEK past its TTL keeps working for
#    keysmith.dek_cache_stale_grace, logged, then fails with KS015; a KMS
#    that denies the key (KS016) gets no grace;
#  - dek_cache_stats is keysmith_admin's, and every value still decrypts.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
. "$ROOT/test/kms/lib.sh"
ks_plan 13

V=$KS_WORK/vault-cache
rm -rf "$V"; mkdir -p "$V"
pids=()
kms_ca "$V"
token=$(kms_vault_tokens "$V")
P1=$(ks_free_port)
kms_start "$V/server.log" vault_server.py "$P1" good --tokens "$V/server.tokens"
fault() { kms_ctl "$P1" POST /test/fault "$1" >/dev/null; }
kms_vault_key "$P1" app

dir=$KS_WORK/extra-kms-cache
ks_cluster_init "$dir"
echo "keysmith.dek_cache_stale_grace = '6s'" >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
decrypts() { kms_requests "$P1" /v1/transit/decrypt/app; }
opts() { # TIMEOUT_MS
    printf '{"url": "https://127.0.0.1:%s", "token_file": "%s", "ca_file": "%s", "timeout_ms": "%s"}' \
        "$P1" "$V/vault.token" "$V/ca-for-keysmith.pem" "$1"
}
q -c "CREATE EXTENSION keysmith" -c "SELECT keysmith.create_kms_provider('vault1', 'vault_transit', '$(opts 5000)')" \
  -c "SELECT keysmith.create_key('vk', 'vault1', 'app')" \
  -c "CREATE TABLE vt AS SELECT i AS id, keysmith.encrypt_value('vk', 'v' || i, i::text) AS c FROM generate_series(1, 100) i" \
  -c "CREATE ROLE app LOGIN" -c "GRANT keysmith_user TO app" -c "GRANT SELECT ON vt TO app" >/dev/null
q -c "$KMS_FRESH" >/dev/null
ks_check $? "a vault_transit key, 100 values, and an application role"

# 200 fresh connections, 10 at a time, each decrypting one value
many() { # N PARALLEL
    seq 1 "$1" | xargs -P "$2" -I{} psql -X -q -t -A -U app -d postgres \
        -c "SELECT keysmith.decrypt_value(c, id::text) = 'v' || id FROM vt WHERE id = 1 + {} % 100" |
        grep -c '^t$'
}
d0=$(decrypts)
s0=$(q -c "SELECT unwraps, hits FROM keysmith.dek_cache_stats()")
ok=$(many 200 10)
d1=$(decrypts)
[ "$ok" = 200 ] && [ $((d1 - d0)) = 1 ]
ks_check $? "200 fresh connections decrypt under one key version: $((d1 - d0)) KMS call (each backend used to make its own)"
stats=$(q -c "SELECT used, unwraps - ${s0%|*}, hits - ${s0#*|} >= 199 FROM keysmith.dek_cache_stats()")
[ "$stats" = "1|1|t" ]
ks_check $? "dek_cache_stats: one slot in use, one unwrap, the other connections hits ($stats)"

q -c "$KMS_FRESH" >/dev/null
fault '{"mode": "latency", "count": 1, "delay": 2}'
d0=$(decrypts)
ok=$(many 20 20)
d1=$(decrypts)
w=$(q -c "SELECT waits > 0 FROM keysmith.dek_cache_stats()")
[ "$ok" = 20 ] && [ $((d1 - d0)) = 1 ] && [ "$w" = t ]
ks_check $? "20 connections arrive while the first unwrap hangs 2 s: still $((d1 - d0)) call; the others waited for it"

q -c "$KMS_FRESH" >/dev/null
fault '{"mode": "latency", "count": 1, "delay": 6}'
q -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 30000)')" >/dev/null
psql -X -q -t -A -d postgres -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt" >"$V/loader.out" 2>&1 &
loader=$!
sleep 1
t0=$(date +%s%N)
out=$(PGOPTIONS='-c statement_timeout=1s' qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
ks_sqlstate 57014 'canceling statement due to statement timeout' "$out" && [ "$ms" -lt 5000 ]
ks_check_out $? "$out" "a query cancel stops a backend waiting for another's unwrap (57014 after $ms ms, not 6 s)"
wait "$loader"
q -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 5000)')" >/dev/null

# ks_dontdump_count reads smaps as root, or as the server's OS user where
# root may not (an unprivileged container); skipped, saying why, only
# where the flags cannot be seen at all (test/integration/smaps_dontdump.sh
# tests that detection)
pm=$(head -1 "$dir/data/postmaster.pid")
dd=$(ks_dontdump_count "$pm"); rc=$?
if [ $rc = 2 ]; then
    ks_skip "the shared cache's mapping is marked do-not-dump (VmFlags dd) in the postmaster" "$dd"
else
    [ $rc = 0 ] && [ "$dd" -ge 1 ]
    ks_check_out $? "$dd" "the shared cache's mapping is marked do-not-dump (VmFlags dd) in the postmaster"
fi

q -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt" >/dev/null
u0=$(q -c "SELECT used FROM keysmith.dek_cache_stats()")
q -c "SELECT keysmith.rotate_dek('vk')" >/dev/null
u1=$(q -c "SELECT used FROM keysmith.dek_cache_stats()")
q -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt" >/dev/null
u2=$(q -c "SELECT used FROM keysmith.dek_cache_stats()")
q -c "SELECT keysmith.flush_shared_dek_cache()" >/dev/null
u3=$(q -c "SELECT used FROM keysmith.dek_cache_stats()")
[ "$u0" = 1 ] && [ "$u1" = 0 ] && [ "$u2" = 1 ] && [ "$u3" = 0 ]
ks_check $? "rotate_dek and flush_shared_dek_cache wipe the key's shared entries ($u0 $u1 $u2 $u3)"

# the KMS goes down: a DEK past its TTL (1 s here) serves the grace (6 s)
q -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 1000)')" >/dev/null
ttl() { PGOPTIONS='-c keysmith.dek_cache_ttl=1' "$@"; }
ttl q -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt" >/dev/null
fault '{"mode": "500", "count": -1}'
sleep 2
d0=$(kms_requests "$P1")
out=$(ttl qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
d1=$(kms_requests "$P1")
[ "$out" = 100 ] && [ "$d1" -gt "$d0" ]
ks_check_out $? "$out" "the KMS down, the DEK past its TTL: it still decrypts within keysmith.dek_cache_stale_grace, after trying the KMS"
grep -q 'keysmith uses a cached data key of key id [0-9]* past its TTL' "$dir/server.log"
ks_check $? "and the server log says a stale key was used, and why"
sleep 5
out=$(ttl qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
ks_sqlstate KS015 'KMS provider "vault1"*' "$out"
ks_check_out $? "$out" "past the grace, the KMS still down: unavailable (KS015)"
fault '{"mode": "none"}'

ttl q -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt" >/dev/null
echo "not-the-token" >"$V/server.tokens"
sleep 2
out=$(ttl qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
echo "$token" >"$V/server.tokens"
ks_sqlstate KS016 '*denied*' "$out"
ks_check_out $? "$out" "a KMS that denies the key gets no grace: past the TTL it is refused at once (KS016)"

out=$(psql -X -q -t -A -U app -d postgres -c "SELECT * FROM keysmith.dek_cache_stats()" 2>&1)
[[ $out == *"permission denied for function dek_cache_stats"* ]]
ks_check_out $? "$out" "dek_cache_stats and flush_shared_dek_cache are keysmith_admin's, not an application's"

n=$(q -c "$KMS_FRESH" -c "SELECT count(*) FROM vt WHERE keysmith.decrypt_value(c, id::text) = 'v' || id")
[ "$n" = 100 ]
ks_check $? "every value still decrypts"
ks_cluster_stop "$dir"
