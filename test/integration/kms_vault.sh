#!/usr/bin/env bash
# test/integration/kms_vault.sh
#
# The vault_transit provider against test/kms/vault_server.py, a test
# server that imitates Vault's Transit API over HTTPS (no Vault can be
# installed here; the server's header says so), on loopback with a CA made
# here by openssl.  Keys wrap, unwrap and rotate their KEK through it; the
# token file is rotated on disk; a wrong token and a wrong namespace are
# denied; and each fault gets its SQLSTATE with nothing lost: 429 then
# success (retried), 500 to the end, a redirect (not followed: the target
# sees nothing), an oversized body, malformed JSON, latency past the
# timeout, a query cancel during a hung call, a certificate for another
# name, and connection refused (create_key and rotate_kek leave nothing
# half-done): kms_fault_suite of test/kms/lib.sh.  Every value still
# decrypts at the end.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 29

V=$KS_WORK/vault
rm -rf "$V"; mkdir -p "$V"
pids=()

. "$ROOT/test/kms/lib.sh"
kms_ca "$V"
token=$(kms_vault_tokens "$V")

start_server() { # PORT CERT
    kms_start "$V/server.log" vault_server.py "$1" "$2" --tokens "$V/server.tokens" --namespace team
}
P1=$(ks_free_port); start_server "$P1" good
P2=$(ks_free_port); start_server "$P2" good
P3=$(ks_free_port); start_server "$P3" wrong
ctl() { # PORT METHOD PATH [BODY]
    KMS_CTL_HEADERS="{\"X-Vault-Token\": \"$(cat "$V/server.tokens")\", \"X-Vault-Namespace\": \"team\"}" kms_ctl "$@"
}

dir=$KS_WORK/extra-kms-vault
ks_cluster_init "$dir"
ks_cluster_start "$dir"
. "$dir/env"
opts() { # TIMEOUT_MS [PORT] [NAMESPACE]
    printf '{"url": "https://127.0.0.1:%s", "token_file": "%s", "ca_file": "%s", "namespace": "%s", "timeout_ms": "%s"}' \
        "${2:-$P1}" "$V/vault.token" "$V/ca-for-keysmith.pem" "${3:-team}" "$1"
}
decrypt_all() { q -c "$KMS_FRESH" -c "SELECT count(*) FROM vt WHERE keysmith.decrypt_value(c, id::text) = 'v' || id"; }

ctl "$P1" POST /v1/transit/keys/app '{}' >/dev/null
q -c "CREATE EXTENSION keysmith" -c "SELECT keysmith.create_kms_provider('vault1', 'vault_transit', '$(opts 1500)')" >/dev/null
ks_check $? "three test servers with a CA made here; a vault_transit provider naming a token file, a CA file, a namespace"

out=$(qv -c "SELECT keysmith.create_key('vk0', 'vault1')")
ks_sqlstate 22023 'a key of KMS type vault_transit needs kms_key*' "$out"
ks_check $? "a key under vault_transit needs its Transit key's name (22023)"
q -c "SELECT keysmith.create_key('vk', 'vault1', 'app')" \
  -c "CREATE TABLE vt AS SELECT i AS id, keysmith.encrypt_value('vk', 'v' || i, i::text) AS c FROM generate_series(1, 100) i" >/dev/null
kv=$(q -c "SELECT kek_version FROM keysmith.key_versions WHERE key_name = 'vk'")
[ "$kv" = 1 ] && [ "$(decrypt_all)" = 100 ]
ks_check $? "a key wraps its DEK through Transit (KEK version $kv), and 100 values round-trip"
wrapped=$(q -c "SELECT convert_from(wrapped_dek, 'UTF8') FROM keysmith.key_version v JOIN keysmith.key k USING (key_id) WHERE k.name = 'vk'")
[[ $wrapped == vault:v1:* ]]
ks_check $? "the wrapped DEK is Transit's ciphertext, vault:v1:..."

ctl "$P1" POST /v1/transit/keys/app/rotate '{}' >/dev/null
n1=$(q -c "SELECT keysmith.rotate_kek('vk')"); n2=$(q -c "SELECT keysmith.rotate_kek('vk')")
kv=$(q -c "SELECT kek_version FROM keysmith.key_versions WHERE key_name = 'vk'")
[ "$n1" = 1 ] && [ "$n2" = 0 ] && [ "$kv" = 2 ] && [ "$(decrypt_all)" = 100 ]
ks_check $? "Transit key rotated: rotate_kek re-wraps once (decrypt, then encrypt: Transit's rewrap drops associated data), then has nothing to do; KEK version $kv; all values decrypt"

new=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
echo "$new" >"$V/server.tokens"; echo "$new" >"$V/vault.token"; token=$new
[ "$(decrypt_all)" = 100 ]
ks_check $? "the token is rotated on disk (as Vault Agent does): the next call reads the new one"

echo "not-the-token" >"$V/server.tokens"
out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
echo "$token" >"$V/server.tokens"
ks_sqlstate KS016 'KMS provider "vault1" denied the request (HTTP 403): permission denied' "$out"
ks_check $? "a token Vault no longer accepts: denied (KS016)"
q -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 1500 "$P1" other)')" >/dev/null
out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
q -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 1500)')" >/dev/null
ks_sqlstate KS016 '*denied*' "$out"
ks_check $? "the wrong namespace: denied (KS016)"

# a key family under Transit: its 200 members cost one Transit call per family version
ctl "$P1" POST /v1/transit/keys/fam '{}' >/dev/null
q -c "SELECT keysmith.create_key_family('vfam', 'vault1', 'fam')" \
  -c "SELECT keysmith.create_keys('vfam', array(SELECT 'vm' || i FROM generate_series(1, 200) i))" \
  -c "CREATE TABLE vft AS SELECT i AS id, keysmith.encrypt_value('vm' || (i % 200 + 1), 'f' || i) AS c FROM generate_series(1, 1000) i" >/dev/null
before=$(kms_requests "$P1" /v1/transit/decrypt/fam)
r=$(q -c "$KMS_FRESH" -c "SELECT keysmith.flush_dek_cache() >= 0" -c "SELECT count(*) FROM vft WHERE keysmith.decrypt_value(c) = 'f' || id")
after=$(kms_requests "$P1" /v1/transit/decrypt/fam)
[ "$r" = "t
1000" ] && [ $((after - before)) = 1 ]
ks_check_out $? "$r, $((after - before)) calls" "a family under Transit: 1,000 values over 200 members decrypt in a fresh cache with one Transit decrypt call ($((after - before)))"

PROV=vault1 KMS_KEY=app
kek_upstream() { ctl "$P1" POST /v1/transit/keys/app/rotate '{}' >/dev/null; }
kms_fault_suite vault_transit

# The mistake of issue 23: the provider pointed at a fresh Vault that has
# Transit keys of the same names, with other key material.  No write may go
# through: a new key under that Transit key or under another one (a wrong
# server answers for all its keys alike), a new DEK version.  The caches
# are warm first (every value decrypted), as on a live server: a DEK
# cached before the switch must not vouch for the new server.
ctl "$P2" POST /v1/transit/keys/app '{}' >/dev/null
ctl "$P2" POST /v1/transit/keys/app5 '{}' >/dev/null
nv=$(q -c "SELECT count(*) FROM keysmith.key_version")
out=$(qv -c "SELECT count(*) FROM vt WHERE keysmith.decrypt_value(c, id::text) = 'v' || id" \
         -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 1500 "$P2")')" \
         -c "SELECT keysmith.create_key('vk-fresh', 'vault1', 'app')" \
         -c "SELECT keysmith.create_key('vk-fresh5', 'vault1', 'app5')" \
         -c "SELECT keysmith.rotate_dek('vk')")
nv2=$(q -c "SELECT count(*) FROM keysmith.key_version")
nk=$(q -c "SELECT count(*) FROM keysmith.key WHERE name LIKE 'vk-fresh%'")
vf=$(q -F '|' -c "SELECT readable, sqlstate FROM keysmith.verify_keys('vk')")
q -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 1500)')" >/dev/null
[ "$(grep -c 'ERROR:  KS019: KMS provider "vault1" holds other key material than the one this database' <<<"$out")" = 2 ] &&
    [[ $out == *'ERROR:  KS019: key "vk" gets no new version'* ]] && [ "$(head -1 <<<"$out")" = 100 ] &&
    [ "$nv" = "$nv2" ] && [ "$nk" = 0 ] && [ "$vf" = "f|KS017" ] && [ "$(decrypt_all)" = 100 ]
ks_check_out $? "$out; verify: $vf" "attack: a fresh Vault with Transit keys of the same names, caches warm: create_key under app and under app5, and rotate_dek, refused (KS019); verify_keys asks the KMS, not the cache; nothing written; back on the right Vault every value decrypts"

# second review, finding 5: a wrong Vault that answers nothing in time
# decides nothing, and nothing is wrapped there either (fail closed)
kms_ctl "$P2" POST /test/fault '{"mode": "latency", "count": -1, "delay": 2}' >/dev/null
out=$(qv -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 1500 "$P2")')" -c "$KMS_FRESH" \
         -c "SELECT keysmith.create_key('vk-slow', 'vault1', 'app')")
kms_ctl "$P2" POST /test/fault '{"mode": "none"}' >/dev/null
q -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 1500)')" >/dev/null
ks_sqlstate KS015 'nothing was wrapped under KMS provider "vault1": the data keys already under it could not be opened*' "$out" &&
    [ "$(q -c "SELECT count(*) FROM keysmith.key WHERE name = 'vk-slow'")" = 0 ]
ks_check_out $? "$out" "attack: a wrong Vault that does not answer in time: no check decides, and nothing is wrapped (KS015, fail closed)"

# a cancel while verify_keys waits on the KMS: the session goes on
kms_ctl "$P1" POST /test/fault '{"mode": "latency", "count": -1, "delay": 1.2}' >/dev/null
out=$(qv -c "SET statement_timeout = '300ms'" -c "SELECT * FROM keysmith.verify_keys()" -c "RESET statement_timeout" \
         -c "BEGIN" -c "SELECT 'after the cancel'" -c "COMMIT")
kms_ctl "$P1" POST /test/fault '{"mode": "none"}' >/dev/null
ks_sqlstate 57014 'canceling statement due to statement timeout' "$out" && [[ $out == *"after the cancel"* ]] &&
    [[ $out != *25P02* ]] && [[ $out != *FATAL* ]]
ks_check_out $? "$out" "attack: a statement timeout while verify_keys waits on the KMS cancels it cleanly: the session's next transaction works"

out=$(qv -c "SELECT keysmith.alter_kms_provider('vault1', '{\"url\": \"http://127.0.0.1:$P1\", \"token_file\": \"/x\"}')")
ks_sqlstate 22023 'vault_transit needs option url, an https:// URL' "$out"
ks_check $? "plain http is refused (22023)"
out=$(qv -c "SELECT keysmith.create_kms_provider('vault2', 'vault_transit', '{\"url\": \"https://127.0.0.1:$P1\"}')")
ks_sqlstate 22023 'vault_transit needs option token_file*' "$out"
ks_check $? "a provider without a token file is refused (22023)"
out=$(qv -c "SELECT keysmith.create_kms_provider('vault2', 'vault_transit', '{\"url\": \"https://127.0.0.1:$P1\", \"token_file\": \"/t\", \"token\": \"s.abc\"}')")
ks_sqlstate 22023 'unknown option "token" for KMS type vault_transit' "$out"
ks_check $? "a token in the options is refused: options hold references only (22023)"

control=$(cat "$V/control")
n=$(grep -c -F -e "$token" -e "$control" "$dir/server.log")
[ "$n" = 0 ]
ks_check $? "no token in the server log ($n)"
ks_cluster_stop "$dir"
