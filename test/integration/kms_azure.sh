#!/usr/bin/env bash
# test/integration/kms_azure.sh
#
# The azure_keyvault provider against test/kms/azure_server.py, a test
# server that imitates Azure Key Vault and its token endpoint over HTTPS
# (no Azure service can be reached here; the server's header says so).
# Client-credentials tokens are fetched once per backend and renewed when
# Key Vault stops accepting them; the client secret is read from its file
# (rotated on disk, or wrong: KS016); keys wrap with RSA-OAEP-256 (Key
# Vault) and A256KW (Managed HSM) with keysmith's binding digest, which
# refuses a wrapped DEK moved to another key; a new key version is a KEK
# rotation, a pinned version is not; RBAC denial is KS016; then
# kms_fault_suite (test/kms/lib.sh).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
. "$ROOT/test/kms/lib.sh"
ks_plan $((16 + $(kms_fault_checks azure_keyvault)))

Z=$KS_WORK/azure
rm -rf "$Z"; mkdir -p "$Z"
pids=()
kms_ca "$Z"
rnd() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
tenant=$(rnd 8)-tenant; client=$(rnd 8)-client; secret="s3cr+t/$(rnd 16)&="
echo "$client $secret" >"$Z/server.clients"
install -m 600 -o "$PG_OSUSER" /dev/null "$Z/client.secret"
echo "$secret" >"$Z/client.secret"
start_server() { # PORT CERT
    kms_start "$Z/server.log" azure_server.py "$1" "$2" --clients "$Z/server.clients" --tenant "$tenant"
}
P1=$(ks_free_port); start_server "$P1" good
P2=$(ks_free_port); start_server "$P2" good
P3=$(ks_free_port); start_server "$P3" wrong
v1=$(kms_ctl "$P1" POST /test/keys '{"name": "app"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')

dir=$KS_WORK/extra-kms-azure
ks_cluster_init "$dir"
ks_cluster_start "$dir"
. "$dir/env"
opts() { # TIMEOUT_MS [PORT] [ALGORITHM]
    printf '{"vault_url": "https://127.0.0.1:%s", "authority_url": "https://127.0.0.1:%s", "tenant_id": "%s", "client_id": "%s", "client_secret_file": "%s", "ca_file": "%s", "algorithm": "%s", "timeout_ms": "%s"}' \
        "${2:-$P1}" "${2:-$P1}" "$tenant" "$client" "$Z/client.secret" "$Z/ca-for-keysmith.pem" "${3:-RSA-OAEP-256}" "$1"
}
setopts() { q -c "SELECT keysmith.alter_kms_provider('az1', '$(opts "$@")')" >/dev/null; }
decrypt_all() { q -c "$KMS_FRESH" -c "SELECT count(*) FROM vt WHERE keysmith.decrypt_value(c, id::text) = 'v' || id"; }
count() { q -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt"; }

q -c "CREATE EXTENSION keysmith" -c "SELECT keysmith.create_kms_provider('az1', 'azure_keyvault', '$(opts 1500)')" >/dev/null
ks_check $? "three test servers; an azure_keyvault provider with a tenant, a client, a client secret file and a CA file"

out=$(qv -c "SELECT keysmith.create_key('vk0', 'az1')")
ks_sqlstate 22023 'a key of KMS type azure_keyvault needs kms_key*' "$out"
ks_check_out $? "$out" "a key under azure_keyvault needs its Key Vault key's name (22023)"
q -c "SELECT keysmith.create_key('vk', 'az1', 'app')" \
  -c "CREATE TABLE vt AS SELECT i AS id, keysmith.encrypt_value('vk', 'v' || i, i::text) AS c FROM generate_series(1, 100) i" >/dev/null
kv=$(q -c "SELECT kek_version FROM keysmith.key_versions WHERE key_name = 'vk'")
[ "$kv" = "$v1" ] && [ "$(decrypt_all)" = 100 ]
ks_check $? "a key wraps its DEK with Key Vault's wrapkey (RSA-OAEP-256); its KEK version is the key version; 100 values round-trip"

t0=$(kms_requests "$P1" token)
q -c "SELECT keysmith.rotate_dek('vk')" -c "SELECT keysmith.rotate_dek('vk')" >/dev/null
q -c "$KMS_FRESH" -c "SELECT keysmith.flush_dek_cache()" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt" \
  -c "SELECT keysmith.encrypt_value('vk', 'x')" >/dev/null
t1=$(kms_requests "$P1" token)
[ $((t1 - t0)) = 2 ]
ks_check $? "a backend asks for its token once and keeps it: two sessions, three wraps and an unwrap, $((t1 - t0)) token requests"

q -c "SELECT keysmith.create_key('vk2', 'az1', 'app')" -c "SELECT keysmith.encrypt_value('vk2', 'x')" >/dev/null
orig=$(q -c "SELECT encode(wrapped_dek, 'hex') FROM keysmith.key_version WHERE key_id = (SELECT key_id FROM keysmith.key WHERE name = 'vk') AND version = 1")
q -c "UPDATE keysmith.key_version SET wrapped_dek = (SELECT wrapped_dek FROM keysmith.key_version v JOIN keysmith.key k USING (key_id) WHERE k.name = 'vk2') WHERE key_id = (SELECT key_id FROM keysmith.key WHERE name = 'vk') AND version = 1" >/dev/null
out=$(qv -c "$KMS_FRESH" -c "SELECT keysmith.decrypt_value(c, id::text) FROM vt WHERE id = 1")
q -c "UPDATE keysmith.key_version SET wrapped_dek = decode('$orig', 'hex') WHERE key_id = (SELECT key_id FROM keysmith.key WHERE name = 'vk') AND version = 1" >/dev/null
ks_sqlstate KS008 'KMS provider "az1": the wrapped data key is bound to another key or version' "$out"
ks_check_out $? "$out" "attack: vk2's wrapped DEK copied into vk unwraps in Key Vault but fails keysmith's binding digest (KS008)"

cat >"$Z/revoke.sh" <<EOF
. "$ROOT/test/kms/lib.sh"; export KMS_CA=$KMS_CA KMS_CTL=$KMS_CTL; kms_ctl $P1 POST /test/revoke '{}' >/dev/null
EOF
t0=$(kms_requests "$P1" token)
out=$(psql -X -q -t -A -d postgres 2>&1 <<SQL
$KMS_FRESH;
SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt;
\\! bash $Z/revoke.sh
$KMS_FRESH;
SELECT keysmith.flush_dek_cache() >= 0;
SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt;
SQL
)
t1=$(kms_requests "$P1" token)
[ "$(echo $out)" = "100 t 100" ] && [ $((t1 - t0)) = 2 ]
ks_check_out $? "$out" "the directory revokes the backend's token: Key Vault's 401 fetches a new one once, and the query goes on"

secret2="n3w+$(rnd 16)"
echo "$client $secret2" >"$Z/server.clients"; echo "$secret2" >"$Z/client.secret"
[ "$(decrypt_all)" = 100 ]
ks_check $? "the client secret rotated on disk: the next token request reads the new one"
echo "wrong-$(rnd 8)" >"$Z/client.secret"
out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
echo "$secret2" >"$Z/client.secret"
ks_sqlstate KS016 'KMS provider "az1": the token endpoint refused the credentials (HTTP 401, invalid_client)' "$out"
ks_check_out $? "$out" "a wrong client secret: the token endpoint refuses, denied (KS016)"
rm -f "$Z/client.secret"
out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
install -m 600 -o "$PG_OSUSER" /dev/null "$Z/client.secret"; echo "$secret2" >"$Z/client.secret"
ks_sqlstate KS016 "KMS provider \"az1\": could not read client_secret_file \"$Z/client.secret\"*" "$out"
ks_check_out $? "$out" "a missing client secret file: denied (KS016), naming the file"

kms_ctl "$P1" POST /test/deny '{"ops": ["unwrapkey"]}' >/dev/null
out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
kms_ctl "$P1" POST /test/deny '{"ops": []}' >/dev/null
ks_sqlstate KS016 'KMS provider "az1" denied the request (HTTP 403, Forbidden)*' "$out"
ks_check_out $? "$out" "an RBAC role without unwrapKey: denied (KS016)"

v2=$(kms_ctl "$P1" POST /test/keys '{"name": "app"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
n1=$(q -c "SELECT keysmith.rotate_kek('vk')"); n2=$(q -c "SELECT keysmith.rotate_kek('vk')")
kv=$(q -c "SELECT string_agg(DISTINCT kek_version, ',') FROM keysmith.key_versions WHERE key_name = 'vk'")
[ "$n1" = 3 ] && [ "$n2" = 0 ] && [ "$kv" = "$v2" ] && [ "$(decrypt_all)" = 100 ]
ks_check $? "a new Key Vault key version: rotate_kek unwraps and wraps each of 3 DEK versions under it, then has nothing to do"

q -c "SELECT keysmith.create_key('vpin', 'az1', 'app/$v1')" >/dev/null
kms_ctl "$P1" POST /test/keys '{"name": "app"}' >/dev/null
n=$(q -c "SELECT keysmith.rotate_kek('vpin')"); kv=$(q -c "SELECT kek_version FROM keysmith.key_versions WHERE key_name = 'vpin'")
[ "$n" = 0 ] && [ "$kv" = "$v1" ]
ks_check $? "a kms_key pinned to a key version stays on it when Key Vault gains another"

q -c "SELECT keysmith.create_kms_provider('hsm1', 'azure_keyvault', '$(opts 1500 "$P1" A256KW)')" \
  -c "SELECT keysmith.create_key('hk', 'hsm1', 'app')" >/dev/null
out=$(q -c "$KMS_FRESH" -c "SELECT keysmith.decrypt_value(keysmith.encrypt_value('hk', 'hsm'))" 2>&1)
[ "$out" = hsm ]
ks_check_out $? "$out" "algorithm A256KW (Managed HSM AES keys): a key round-trips"

PROV=az1 KMS_KEY=app
kek_upstream() { kms_ctl "$P1" POST /test/keys '{"name": "app"}' >/dev/null; }
kms_fault_suite azure_keyvault

out=$(qv -c "SELECT keysmith.create_kms_provider('az2', 'azure_keyvault', '{\"vault_url\": \"https://127.0.0.1:$P1\", \"client_id\": \"c\", \"client_secret_file\": \"/x\"}')")
ks_sqlstate 22023 'azure_keyvault needs option tenant_id*' "$out"
ks_check_out $? "$out" "a provider without a tenant is refused (22023)"
out=$(qv -c "SELECT keysmith.create_kms_provider('az2', 'azure_keyvault', '{\"vault_url\": \"https://127.0.0.1:$P1\", \"tenant_id\": \"t\", \"client_id\": \"c\", \"client_secret\": \"$secret2\"}')")
ks_sqlstate 22023 'unknown option "client_secret" for KMS type azure_keyvault' "$out" && [[ $out != *"$secret2"* ]]
ks_check_out $? "$out" "a client secret in the options is refused, and not echoed (22023)"

n=$(cat "$dir/server.log" | grep -c -F -e "$secret" -e "$secret2")
[ "$n" = 0 ]
ks_check $? "no client secret in the server log ($n)"
ks_cluster_stop "$dir"
